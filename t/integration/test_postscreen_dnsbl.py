"""postscreen's DNSBL test against a private dnsmasq: weights over and under
postscreen_dnsbl_threshold, the actions (enforce, drop, ignore), an
allowlist (negative weight) that lets a client skip the other tests,
postscreen_dnsbl_reply_map, a list that never answers (the score is
partial when postscreen_greet_wait ends), and the TTL of a passed test
taken from the answers (postscreen_dnsbl_min_ttl / _max_ttl). No module is
loaded: Postfix's postscreen needs none, and neither does Petrel's."""
import time

from harness import Dnsmasq, Tap
from modlib import UdpBlackhole
from psclib import BANNER, PASSED_BANNER, client_port, connect, postscreen

t = Tap()


def rev(ip):
    return ".".join(reversed(ip.split(".")))


blackhole = UdpBlackhole()
# 127.0.0.2: bl.test (127.0.0.2) and b2.test  -> 2 + 1 = 3
# 127.0.0.3: b2.test only                     -> 1
# 127.0.0.4: wl.test (127.0.5.1)              -> -3 (allowlisted)
# 127.0.0.5: bl.test with 127.0.0.99, outside the filter -> 0
# 127.0.0.6: bl.test, and a list that never answers
records = [
    "--local=/bl.test/", "--local=/b2.test/", "--local=/wl.test/",
    "--host-record=%s.bl.test,127.0.0.2" % rev("127.0.0.2"),
    "--host-record=%s.b2.test,127.0.0.2" % rev("127.0.0.2"),
    "--host-record=%s.b2.test,127.0.0.2" % rev("127.0.0.3"),
    "--host-record=%s.wl.test,127.0.5.1" % rev("127.0.0.4"),
    "--host-record=%s.bl.test,127.0.0.99" % rev("127.0.0.5"),
    "--host-record=%s.bl.test,127.0.0.2" % rev("127.0.0.6"),
    "--server=/dead.test/127.0.0.1#%d" % blackhole.port,
    "--local-ttl=600",
]
SITES = "bl.test=127.0.0.[2..11]*2, b2.test, wl.test=127.0.[0..255].[1..3]*-3"

with Dnsmasq(records) as dns:
    def conf(**extra):
        c = {"dns_resolver": dns.server, "postscreen_dnsbl_sites": SITES, "postscreen_dnsbl_threshold": "3",
             "postscreen_dnsbl_action": "enforce", "postscreen_greet_wait": "2s"}
        c.update(extra)
        return c

    with postscreen(t, main_cf=conf(postscreen_dnsbl_allowlist_threshold="-1")) as p:
        c = connect(p.port, "127.0.0.2")
        t.is_(c.lines, ["220-" + BANNER, "220 " + BANNER], "a listed client meets postscreen's engine, not smtpd")
        cp = client_port(c)
        t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: DNSBL rank 3 for \[127\.0\.0\.2\]:%d\n" % cp) is not None,
             "weights 2 + 1 reach the threshold 3: DNSBL rank 3 for [addr]:port")
        t.ok(p.wait_log(r"petrel/dnsblog\[\d+\]: addr 127\.0\.0\.2 listed by domain bl\.test as 127\.0\.0\.2\n")
             is not None, "and each listing is logged as dnsblog logs it")
        c.ehlo("listed.example")
        c.cmd("MAIL FROM:<a@example.com>")
        t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
              "550 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test",
              "enforce: RCPT gets 550 5.7.1 naming the heaviest list")
        t.ok(p.wait_log(r"NOQUEUE: reject: RCPT from \[127\.0\.0\.2\]:%d: 550 5\.7\.1 Service unavailable; client "
                        r"\[127\.0\.0\.2\] blocked using bl\.test; from=<a@example\.com>, to=<user@petrel\.test>, "
                        r"proto=ESMTP, helo=<listed\.example>\n" % cp) is not None, "logged for fail2ban")
        c.close()

        c = connect(p.port, "127.0.0.3")
        t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "a score under the threshold passes to smtpd")
        t.ok(p.wait_log(r"PASS NEW \[127\.0\.0\.3\]:%d\n" % client_port(c)) is not None, "PASS NEW")
        t.ok(p.wait_log(r"DNSBL rank \d+ for \[127\.0\.0\.3\]", timeout=10) is None, "no DNSBL rank line under the threshold")
        c.close()

        c = connect(p.port, "127.0.0.5")
        t.is_(c.lines[-1], "220 " + PASSED_BANNER, "an answer outside the filter does not count")
        c.close()

        # The TTL: dnsmasq answers with 600 s, inside [60 s, 1 h]: the passed test holds.
        c = connect(p.port, "127.0.0.3")
        t.is_(c.lines, ["220 " + PASSED_BANNER], "a client under the threshold is PASS OLD next time")
        c.close()

    # The allowlist: the DNS answer ends the wait and the other tests are
    # skipped. The greet wait (120 s) is far beyond the client's timeout
    # (20 s): a client that gets smtpd's greeting did not sit it out.
    with postscreen(t, main_cf=conf(postscreen_dnsbl_allowlist_threshold="-1", postscreen_greet_wait="120s")) as p:
        c = connect(p.port, "127.0.0.4")
        t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER],
              "a DNS-allowlisted client (score -3 <= -1) goes to smtpd without sitting out the greet wait")
        t.ok(p.wait_log(r"PASS NEW \[127\.0\.0\.4\]:%d\n" % client_port(c)) is not None, "PASS NEW")
        c.close()
        c = connect(p.port, "127.0.0.4")
        t.is_(c.lines, ["220 " + PASSED_BANNER], "and PASS OLD next time: the skipped tests count as passed")
        c.close()

    with postscreen(t, main_cf=conf(postscreen_dnsbl_action="drop")) as p:
        c = connect(p.port, "127.0.0.2")
        t.is_(c.lines, ["220-" + BANNER, "521 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test"],
              "drop: 521 5.7.1 after the wait")
        t.ok(c.closed(), "and the connection is closed")

    with postscreen(t, main_cf=conf(postscreen_dnsbl_action="ignore")) as p:
        c = connect(p.port, "127.0.0.2")
        t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "ignore: logged, and handed to smtpd")
        t.ok(p.wait_log(r"DNSBL rank 3 for \[127\.0\.0\.2\]:%d\n" % client_port(c)) is not None, "the rank is logged")
        c.close()
        c = connect(p.port, "127.0.0.2")
        t.is_(c.lines, ["220 " + PASSED_BANNER], "next time: no teaser (the pregreet test was passed and cached)")
        t.ok(p.wait_log(r"DNSBL rank 3 for \[127\.0\.0\.2\]:%d\n" % client_port(c)) is not None,
             "but ignore does not pass the DNSBL test: the lists are asked again")
        c.close()

    with postscreen(t, start=False, main_cf=conf()) as p:
        reply_map = p.write_file("dnsbl_reply", "bl.test public-list.example\n")
        p.settings["postscreen_dnsbl_reply_map"] = "texthash:" + reply_map
        p.write_main_cf(p.settings)
        p.start()
        c = connect(p.port, "127.0.0.2")
        c.ehlo("x.example")
        c.cmd("MAIL FROM:<a@example.com>")
        t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
              "550 5.7.1 Service unavailable; client [127.0.0.2] blocked using public-list.example",
              "postscreen_dnsbl_reply_map: the reply shows the public name")
        c.close()

    # A list that never answers: the wait ends, the others' score stands.
    # Its timeout (120 s) is far beyond the client's (20 s): a client that
    # gets its greeting at all was judged when postscreen_greet_wait ended.
    with postscreen(t, main_cf=conf(postscreen_dnsbl_sites="bl.test*3, dead.test*3",
                                    postscreen_dnsbl_timeout="120s", postscreen_greet_wait="2s")) as p:
        c = connect(p.port, "127.0.0.6")
        t.is_(c.lines, ["220-" + BANNER, "220 " + BANNER],
              "a listed client is caught at the end of the greet wait, though another list is dead")
        t.ok(p.wait_log(r"DNSBL rank 3 for \[127\.0\.0\.6\]:%d\n" % client_port(c)) is not None,
             "the partial score: rank 3")
        c.close()
        c = connect(p.port, "127.0.0.3")
        t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "an unlisted client passes despite the dead list")
        c.close()
    # A list slower than postscreen_dnsbl_timeout, within the greet wait: said.
    with postscreen(t, main_cf=conf(postscreen_dnsbl_sites="bl.test*3, dead.test*3", postscreen_dnsbl_timeout="1s",
                                    postscreen_greet_wait="3s")) as p:
        c = connect(p.port, "127.0.0.3")
        t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "an unlisted client passes")
        c.close()
        t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: warning: dnsblog reply timeout 1s for dead\.test\n")
             is not None, "warning: dnsblog reply timeout 1s for LIST, as Postfix logs it")

    # postscreen_dnsbl_max_ttl caps the answers' 600 s (at 4 s: the second
    # client must come within it on a loaded machine, in whole seconds).
    with postscreen(t, main_cf=conf(postscreen_dnsbl_min_ttl="1s", postscreen_dnsbl_max_ttl="4s",
                                    postscreen_greet_banner="")) as p:
        c = connect(p.port, "127.0.0.3")
        t.is_(c.lines, ["220 " + PASSED_BANNER], "without a greet banner: no teaser, only the DNS wait")
        c.close()
        c = connect(p.port, "127.0.0.3")
        cp = client_port(c)
        c.close()
        t.ok(p.wait_log(r"PASS OLD \[127\.0\.0\.3\]:%d\n" % cp) is not None, "within the TTL: PASS OLD")
        time.sleep(5)
        c = connect(p.port, "127.0.0.3")
        cp = client_port(c)
        c.close()
        t.ok(p.wait_log(r"PASS OLD \[127\.0\.0\.3\]:%d\n" % cp, timeout=30) is not None and
             len(p.log().split("addr 127.0.0.3 listed by domain b2.test")) == 3,
             "after postscreen_dnsbl_max_ttl the lists are asked again")

blackhole.close()
t.done()
