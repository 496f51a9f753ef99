"""modules/dnsbl against a private dnsmasq serving test DNS lists: Postfix's
reject_rbl_client family with its replies, filters, IPv6 nibble queries, a list
that never answers, the per-session cache, and postscreen-style weighted scores."""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from harness import PETRELD, Dnsmasq, Petrel, Tap, free_port
from modlib import UdpBlackhole, bundled_module_dir, rcpt_reply, smtp_from
from socketmaplib import SocketmapServer, netstring

t = Tap()
mods = bundled_module_dir("dnsbl", "socketmap")

# Clients come from 127.0.0.2 (listed everywhere), 127.0.0.3 (listed with
# 127.0.0.10 only), 127.0.0.4 (clean); mynetworks is elsewhere so that
# permit_mynetworks does not hide them.
def rev(ip):
    return ".".join(reversed(ip.split(".")))


NIBBLES_V6_LOOPBACK = ".".join("1" + "0" * 31)   # ::1 -> 1.0.0.0...0 (32 nibbles)
blackhole = UdpBlackhole()
records = [
    "--local=/bl.test/", "--local=/f.test/", "--local=/wl.test/", "--local=/rhs.test/", "--local=/w1.test/",
    "--local=/w2.test/", "--local=/w3.test/", "--local=/bl6.test/", "--local=/example/",
    "--host-record=%s.bl.test,127.0.0.2" % rev("127.0.0.2"),
    "--txt-record=%s.bl.test,Listed; see http://bl.test/q?127.0.0.2" % rev("127.0.0.2"),
    "--host-record=%s.bl.test,127.0.0.10" % rev("127.0.0.3"),
    "--host-record=%s.f.test,127.0.0.10" % rev("127.0.0.2"),
    "--host-record=%s.wl.test,127.0.10.2" % rev("127.0.0.2"),
    "--host-record=spam.example.rhs.test,127.0.0.2",
    "--host-record=bad-helo.example.rhs.test,127.0.0.2",
    "--host-record=petrel.test.rhs.test,127.0.0.2",
    "--host-record=ptr-listed.example.rhs.test,127.0.0.2",
    "--ptr-record=%s.in-addr.arpa,ptr-listed.example" % rev("127.0.0.3"),
    "--host-record=%s.w1.test,127.0.0.2" % rev("127.0.0.2"),
    "--host-record=%s.w2.test,127.0.0.4" % rev("127.0.0.2"),
    "--host-record=%s.w2.test,127.0.0.9" % rev("127.0.0.3"),
    "--host-record=%s.w3.test,127.0.2.1" % rev("127.0.0.3"),
    "--host-record=%s.bl6.test,127.0.0.2" % NIBBLES_V6_LOOPBACK,
    "--server=/dead.test/127.0.0.1#%d" % blackhole.port,
]
MYNETS = "192.0.2.0/24"
table_dir = tempfile.mkdtemp(prefix="petrel-dnsbl-")
os.chmod(table_dir, 0o755)
reply_table = os.path.join(table_dir, "rbl_reply")


def conf(dns, **extra):
    c = {"modules": "dnsbl", "module_directory": mods, "dns_resolver": dns.server, "mynetworks": MYNETS,
         "dnsbl_timeout": "2s"}
    c.update(extra)
    return c


def from_(p, src, port=None, **kw):
    c = smtp_from(port or p.port, src=src)
    r = rcpt_reply(c, **kw)
    c.close()
    return r


def queries(dns, name):
    with open(dns.log_path) as f:
        return len(re.findall(r"query\[A\] %s from" % re.escape(name), f.read()))


with Dnsmasq(records) as dns:
    # --- reject_rbl_client: Postfix's default reply, the TXT reason, filters ---
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions=
                                "permit_mynetworks, reject_rbl_client bl.test, reject_unauth_destination")) as p:
        t.is_(from_(p, "127.0.0.2"),
              "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; "
              "Listed; see http://bl.test/q?127.0.0.2",
              "a listed client gets Postfix's default reply with the list's TXT reason")
        t.ok(p.wait_log(r"NOQUEUE: reject: RCPT from \S+\[127\.0\.0\.2\]: 554 5\.7\.1 Service unavailable; "
                        r"Client host \[127\.0\.0\.2\] blocked using bl\.test") is not None,
             "and the rejection is logged as Postfix logs it")
        t.is_(from_(p, "127.0.0.3"), "554 5.7.1 Service unavailable; Client host [127.0.0.3] blocked using bl.test",
              "listed without TXT: no reason part")
        t.is_(from_(p, "127.0.0.4"), "250 2.1.5 Ok", "a client that is not listed passes")
        c = smtp_from(p.port, src="127.0.0.2")
        c.cmd("EHLO x.example")
        t.is_(c.code, 250, "the server keeps serving")
        c.close()

    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions=
                                "reject_rbl_client f.test=127.0.0.[2..9], "
                                "reject_rbl_client bl.test=127.0.0.[2..9;11;20]")) as p:
        t.is_(from_(p, "127.0.0.2"), "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; "
              "Listed; see http://bl.test/q?127.0.0.2",
              "a filter that does not match the answer (127.0.0.10 vs [2..9]) does not list; one that does lists")
        t.is_(from_(p, "127.0.0.3"), "250 2.1.5 Ok", "127.0.0.10 matches neither filter")
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client f.test=127.0.0.10")) as p:
        t.like(from_(p, "127.0.0.2"), r"^554 5\.7\.1 .*blocked using f\.test$", "an exact filter d.d.d.d lists")

    # --- default_rbl_reply and maps_rbl_reject_code, as in Postfix ---
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client bl.test",
                                maps_rbl_reject_code="521",
                                default_rbl_reply="$rbl_code 5.7.9 Go away [$rbl_what] ($rbl_class, $rbl_domain)"
                                                  "${rbl_reason?: $rbl_reason} to <$recipient>")) as p:
        t.is_(from_(p, "127.0.0.3"), "521 5.7.9 Go away [127.0.0.3] (Client host, bl.test) to <user@petrel.test>",
              "default_rbl_reply's names expand per reply, with maps_rbl_reject_code and the enhanced code given")
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client bl.test",
                                default_rbl_reply="$rbl_code Service unavailable; try later",
                                maps_rbl_reject_code="450")) as p:
        t.is_(from_(p, "127.0.0.3"), "450 4.7.1 Service unavailable; try later",
              "a 4xx template defers, with class 4 enhanced code")
    with Petrel(t, start=False, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client bl.test",
                                             default_rbl_reply="$rbl_code blocked by $rbl_nonsense")) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        t.ok(r.returncode != 0 and "default_rbl_reply: unknown name \"$rbl_nonsense\"" in r.stderr,
             "petreld -n refuses a template with an unknown name", r.stderr)
    # --- rbl_reply_maps: per-list templates, looked up as Postfix does (the argument as
    # written, then its bare domain), default_rbl_reply when no entry matches ---
    with open(reply_table, "w") as f:
        f.write("bl.test $rbl_code 5.7.1 bl.test refuses [$client_address] ($rbl_class $rbl_what)${rbl_txt?: $rbl_txt}\n"
                "f.test=127.0.0.10 451 4.7.1 f.test with its filter says later to $client_address\n"
                "rhs.test $rbl_code 5.7.1 broken template $rbl_nonsense\n")
    os.chmod(reply_table, 0o644)
    with Petrel(t, main_cf=conf(dns, rbl_reply_maps="texthash:" + reply_table,
                                smtpd_recipient_restrictions="reject_rbl_client f.test=127.0.0.10, "
                                "reject_rbl_client bl.test=127.0.0.[10;11], reject_rhsbl_sender rhs.test")) as p:
        t.is_(from_(p, "127.0.0.2"), "451 4.7.1 f.test with its filter says later to 127.0.0.2",
              "rbl_reply_maps: the entry keyed by the argument as written (with =filter) gives the reply")
        t.is_(from_(p, "127.0.0.3"),
              "554 5.7.1 bl.test refuses [127.0.0.3] (Client host 127.0.0.3)",
              "without an entry for bl.test=filter, the bare domain's entry applies (Postfix 3.10), $names expanded")
        t.is_(from_(p, "127.0.0.4", sender="x@spam.example"),
              "554 5.7.1 Service unavailable; Sender address [x@spam.example] blocked using rhs.test",
              "a bad template in the table is warned about and default_rbl_reply answers")
        t.ok(p.wait_log(r"warning: .*bad rbl reply template for domain rhs\.test") is not None,
             "  the warning names the list", p.log())
        t.is_(from_(p, "127.0.0.4"), "250 2.1.5 Ok", "a client that is not listed passes")
    with Petrel(t, main_cf=conf(dns, rbl_reply_maps="texthash:" + reply_table,
                                smtpd_recipient_restrictions="reject_rbl_client w1.test, reject_rbl_client bl.test")) as p:
        t.is_(from_(p, "127.0.0.2"), "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using w1.test",
              "a list without an entry gets default_rbl_reply")
        t.is_(from_(p, "127.0.0.3"), "554 5.7.1 bl.test refuses [127.0.0.3] (Client host 127.0.0.3)",
              "  while the next list's entry applies in the same process")
    # A remote table (socketmap): asynchronous lookups; a table that fails defers (451 4.3.5).
    sm = SocketmapServer({"rbl": {b"bl.test": b"$rbl_code 5.7.1 Remote text for $rbl_domain: $rbl_reason"}})
    sm.special[b"w1.test"] = (b"rbl", netstring(b"TEMP resting"))
    with Petrel(t, main_cf=conf(dns, modules="dnsbl socketmap", rbl_reply_maps="socketmap:inet:127.0.0.1:%d:rbl" % sm.port,
                                smtpd_recipient_restrictions="reject_rbl_client bl.test")) as p:
        t.is_(from_(p, "127.0.0.2"), "554 5.7.1 Remote text for bl.test: Listed; see http://bl.test/q?127.0.0.2",
              "rbl_reply_maps in a socketmap table: the remote entry gives the reply")
        t.ok(b"bl.test" in sm.seen("rbl"), "  asked by the bare domain", sm.requests)
    with Petrel(t, main_cf=conf(dns, modules="dnsbl socketmap", rbl_reply_maps="socketmap:inet:127.0.0.1:%d:rbl" % sm.port,
                                smtpd_recipient_restrictions="reject_rbl_client w1.test")) as p:
        t.is_(from_(p, "127.0.0.2"), "451 4.3.5 Server configuration error",
              "a table that cannot answer defers, as Postfix's reject_server_error")
        t.ok(p.wait_log(r"warning: .*rbl_reply_maps: lookup error for \"w1\.test\"") is not None,
             "  and the failure is logged", p.log())
        c = smtp_from(p.port, src="127.0.0.4")
        c.cmd("EHLO x.example")
        t.is_(c.code, 250, "  the server keeps serving")
        c.close()
    sm.stop()
    svc_port = free_port()
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client bl.test"),
                extra_services="127.0.0.1:%d inet n - n - - smtpd -o rbl_reply_maps=texthash:%s\n"
                % (svc_port, reply_table)) as p:
        t.is_(from_(p, "127.0.0.3"), "554 5.7.1 Service unavailable; Client host [127.0.0.3] blocked using bl.test",
              "rbl_reply_maps per service: main.cf's service has none")
        t.is_(from_(p, "127.0.0.3", port=svc_port), "554 5.7.1 bl.test refuses [127.0.0.3] (Client host 127.0.0.3)",
              "  the service with -o rbl_reply_maps uses its table")
    with Petrel(t, start=False, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client bl.test",
                                             rbl_reply_maps="hash:/nonexistent/rbl_reply")) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        t.ok(r.returncode != 0 and re.search(r"main\.cf:\d+: rbl_reply_maps: .*/nonexistent/rbl_reply", r.stderr),
             "petreld -n refuses an rbl_reply_maps table that does not open, naming the parameter", r.stderr)
    for bad, why in [("bl.test=127.0.0.[2..]", "bad range"), ("bl.test=127.0.0", "four fields"),
                     ("bl.test=127.0.0.256", "a number from 0 to 255"), ("bad_zone..test", "bad DNS list domain")]:
        with Petrel(t, start=False, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client " + bad)) as p:
            r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
            t.ok(r.returncode != 0 and "restriction reject_rbl_client (module dnsbl)" in r.stderr and why in r.stderr,
                 "petreld -n refuses reject_rbl_client %s (%s)" % (bad, why), r.stderr)

    # --- permit_dnswl_client, the rhsbl family ---
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions=
                                "permit_dnswl_client wl.test=127.0.[0..255].[1..3], reject_rbl_client bl.test")) as p:
        t.is_(from_(p, "127.0.0.2"), "250 2.1.5 Ok", "permit_dnswl_client permits a listed client before the block list")
        t.is_(from_(p, "127.0.0.3")[:3], "554", "a client the allowlist does not list is still blocked")
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions=
                                "reject_rhsbl_sender rhs.test, reject_rhsbl_helo rhs.test, "
                                "reject_rhsbl_reverse_client rhs.test")) as p:
        t.is_(from_(p, "127.0.0.4", sender="x@spam.example"),
              "554 5.7.1 Service unavailable; Sender address [x@spam.example] blocked using rhs.test",
              "reject_rhsbl_sender looks up the sender's domain")
        t.is_(from_(p, "127.0.0.4", sender="x@ok.example"), "250 2.1.5 Ok", "a sender domain that is not listed")
        t.is_(from_(p, "127.0.0.4", sender=""), "250 2.1.5 Ok", "the null sender is not looked up")
        t.is_(from_(p, "127.0.0.4", helo="bad-helo.example"),
              "554 5.7.1 Service unavailable; Helo command [bad-helo.example] blocked using rhs.test",
              "reject_rhsbl_helo looks up the HELO name")
        t.is_(from_(p, "127.0.0.3"),
              "554 5.7.1 Service unavailable; Unverified Client host [ptr-listed.example] blocked using rhs.test",
              "reject_rhsbl_reverse_client looks up the client's PTR name")
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rhsbl_recipient rhs.test")) as p:
        t.is_(from_(p, "127.0.0.4"),
              "554 5.7.1 Service unavailable; Recipient address [user@petrel.test] blocked using rhs.test",
              "reject_rhsbl_recipient looks up the recipient's domain")

    # --- a list that never answers counts as not listed and is logged ---
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions=
                                "reject_rbl_client dead.test, reject_rbl_client bl.test")) as p:
        t.is_(from_(p, "127.0.0.4"), "250 2.1.5 Ok", "a list that does not answer counts as not listed")
        t.ok(p.wait_log(r"warning: .*4\.0\.0\.127\.dead\.test: A lookup timed out after 2000 ms: counted as not listed")
             is not None, "and the time-out is logged with the query")
        t.like(from_(p, "127.0.0.2"), r"^554 .*blocked using bl\.test", "the lists after it still decide")

    # --- lookups start at connect, and each is asked once per session ---
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions=
                                "reject_rbl_client bl.test=127.0.0.[99], reject_rbl_client bl.test, "
                                "reject_rbl_client f.test")) as p:
        before = queries(dns, "4.0.0.127.f.test")
        before_bl = queries(dns, "4.0.0.127.bl.test")
        c = smtp_from(p.port, src="127.0.0.4")
        started = False
        deadline = time.time() + 30
        while time.time() < deadline and not started:
            started = queries(dns, "4.0.0.127.f.test") > before
            time.sleep(0.05)
        t.ok(started, "every client list is queried at connect, before the client says anything")
        r = rcpt_reply(c)
        c.close()
        t.is_(r, "250 2.1.5 Ok", "a clean client passes three restrictions")
        t.is_(queries(dns, "4.0.0.127.bl.test") - before_bl, 1,
              "two restrictions on one list ask it once in the session")

    # --- IPv6 clients are looked up in nibble form ---
    port6 = free_port("::1")
    with Petrel(t, start=False, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client bl6.test",
                                             inet_interfaces="::1"),
                master_cf="[::1]:%d inet n - n - - smtpd\n" % port6) as p:
        p.start(wait=False)
        deadline = time.time() + 30   # at once, unless the machine is loaded
        while time.time() < deadline:
            try:
                socket.create_connection(("::1", port6), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        if not t.ok(p.proc.poll() is None, "petreld listens on [::1]", p.log()):
            p.stop()        # t.done() exits at once: stop petreld first
            t.done()
        c = smtp_from(port6, host="::1")
        t.is_(rcpt_reply(c), "554 5.7.1 Service unavailable; Client host [::1] blocked using bl6.test",
              "an IPv6 client is looked up with its 32 nibbles reversed (RFC 5782)")
        c.close()

    # --- weighted scores (postscreen's dnsbl_sites) ---
    sites = "w1.test*2, w2.test=127.0.0.[3..5]*3, w2.test=127.0.0.9, w3.test=127.0.[0..255].[1..3]*-4"
    with Petrel(t, main_cf=conf(dns, dnsbl_sites=sites, dnsbl_threshold="4", dnsbl_whitelist_threshold="-2",
                                smtpd_recipient_restrictions="check_dnsbl_score, reject_rbl_client bl.test")) as p:
        t.is_(from_(p, "127.0.0.2"), "550 5.7.1 Service unavailable; client [127.0.0.2] blocked using w2.test",
              "2 + 3 = 5 crosses the threshold 4; the reply names the heaviest list, as postscreen's")
        t.ok(p.wait_log(r"DNSBL rank 5 for \[127\.0\.0\.2\]") is not None, "the rank is logged as postscreen logs it")
        t.is_(from_(p, "127.0.0.3"), "250 2.1.5 Ok",
              "1 - 4 = -3 is at or below the allowlist threshold: permitted (bl.test is not asked)")
        t.is_(from_(p, "127.0.0.4"), "250 2.1.5 Ok", "0: neither")
    with Petrel(t, main_cf=conf(dns, dnsbl_sites=sites, dnsbl_threshold="6",
                                smtpd_recipient_restrictions="check_dnsbl_score")) as p:
        t.is_(from_(p, "127.0.0.2"), "250 2.1.5 Ok", "5 does not reach the threshold 6")

    # --- per master.cf service: the thresholds, and Postfix's maps_rbl_reject_code and
    # default_rbl_reply (read per service by Postfix too) ---
    svc = {name: free_port() for name in ("code", "reply", "threshold")}
    with Petrel(t, main_cf=conf(dns, dnsbl_sites=sites, dnsbl_threshold="4",
                                smtpd_recipient_restrictions="check_dnsbl_score, reject_rbl_client bl.test"),
                extra_services="".join("127.0.0.1:%d inet n - n - - smtpd %s\n" % (svc[name], opts) for name, opts in (
                    ("code", "-o maps_rbl_reject_code=450"),
                    ("reply", "-o { default_rbl_reply = $rbl_code Blocked by $rbl_domain }"),
                    ("threshold", "-o dnsbl_threshold=6")))) as p:
        t.is_(from_(p, "127.0.0.3"), "554 5.7.1 Service unavailable; Client host [127.0.0.3] blocked using bl.test",
              "main.cf's service: 554")
        t.is_(from_(p, "127.0.0.3", port=svc["code"]),
              "450 4.7.1 Service unavailable; Client host [127.0.0.3] blocked using bl.test",
              "-o maps_rbl_reject_code=450 on a service: 450 there (it was main.cf's 554)")
        t.is_(from_(p, "127.0.0.3", port=svc["reply"]), "554 5.7.1 Blocked by bl.test",
              "-o default_rbl_reply on a service: that service's text")
        t.is_(from_(p, "127.0.0.2", port=svc["threshold"]), "554 5.7.1 Service unavailable; Client host "
              "[127.0.0.2] blocked using bl.test; Listed; see http://bl.test/q?127.0.0.2",
              "-o dnsbl_threshold=6 on a service: the score 5 does not reject there (bl.test does)")
        t.is_(from_(p, "127.0.0.2"), "550 5.7.1 Service unavailable; client [127.0.0.2] blocked using w2.test",
              "  while main.cf's threshold 4 rejects on the other")
    with Petrel(t, start=False, main_cf=conf(dns, smtpd_recipient_restrictions="check_dnsbl_score")) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        t.ok(r.returncode != 0 and "dnsbl_sites is empty" in r.stderr, "check_dnsbl_score without dnsbl_sites is refused",
             r.stderr)
    with Petrel(t, start=False, main_cf=conf(dns, dnsbl_sites="w1.test*x", smtpd_recipient_restrictions="check_dnsbl_score")) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        t.ok(r.returncode != 0 and "bad weight \"x\"" in r.stderr, "a bad weight is refused", r.stderr)

# --- answers kept across sessions for their DNS TTL (petrel_dns_answer_ttl) ---
# The lists above are served with TTL 0 (dnsmasq's default for its own
# records): nothing is kept, every session asks. Here they carry 300 s.
with Dnsmasq(records + ["--local-ttl=300"]) as dns:
    # 127.0.0.3: its PTR name is not under bl.test, so smtpd's own lookups do not count here
    listed = "%s.bl.test" % rev("127.0.0.3")
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client bl.test"), workers=1) as p:
        first = from_(p, "127.0.0.3")
        t.is_(first, "554 5.7.1 Service unavailable; Client host [127.0.0.3] blocked using bl.test",
              "TTL 300: the first session asks and is rejected")
        asked = queries(dns, listed)
        t.is_(asked, 1, "one query")
        t.is_(from_(p, "127.0.0.3"), first, "a second session gets the same answer")
        t.is_(queries(dns, listed), asked, "from the cache: no new query within the TTL")
with Dnsmasq(records) as dns:
    listed = "%s.bl.test" % rev("127.0.0.3")
    with Petrel(t, main_cf=conf(dns, smtpd_recipient_restrictions="reject_rbl_client bl.test"), workers=1) as p:
        from_(p, "127.0.0.3")
        from_(p, "127.0.0.3")
        t.is_(queries(dns, listed), 2, "TTL 0: nothing is kept, each session asks")

# --- without the module: the error names it ---
with Petrel(t, start=False, main_cf={"smtpd_recipient_restrictions": "check_dnsbl_score"}) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.like(r.stderr, r"restriction check_dnsbl_score is provided by module dnsbl, which is not loaded",
           "naming a dnsbl restriction without the module names the module")
blackhole.close()
shutil.rmtree(table_dir, ignore_errors=True)
t.done()
