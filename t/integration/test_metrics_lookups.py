"""DNS, lookup table and SMTP client TLS metrics, each moved by the exact
amount: petrel_dns_queries_total{type,result} and its latency histogram
(against a private dnsmasq: an A record found, a name that does not exist),
petrel_table_lookups_total{type,table,result} and its histogram (an access
table searched with Postfix's key order; an inline: table labelled by a
digest, never its content), and petrel_smtp_tls_handshakes_total
{transport,result,version} (a session at level may, a broken handshake, a
certificate refused at level verify) against scripted SMTP servers."""
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dnsmasq, Petrel, Tap, free_port, make_cert  # noqa: E402
from metricslib import http_get, parse_metrics, wait_http, wait_value  # noqa: E402
from modlib import module_dir  # noqa: E402
from scripted_smtp import Server  # noqa: E402

t = Tap(timeout=300)
mods = module_dir("testmod")
mport = free_port()
QMGR = "qmgr unix n - n 300 1 qmgr\nverifytls unix - - n - - smtp -o smtp_tls_security_level=verify\n"


def values():
    return parse_metrics(http_get(mport, "/metrics")[2])


def moved(before, after, prefix):
    return {k: after[k] - before.get(k, 0) for k in after
            if k.startswith(prefix) and after[k] != before.get(k, 0)}


records = ["--local=/a.test/", "--address=/a.test/127.0.0.5", "--local=/nx.test/"]
certdir = os.path.join("/tmp", "petrel-metrics-tls-%d" % os.getpid())
os.makedirs(certdir, exist_ok=True)
cert, key = make_cert(certdir, "tls.test")
good = Server(tls=(cert, key))
broken = Server(tls=(cert, key), tls_broken=True)
with Dnsmasq(records) as dns, Petrel(t, start=False, extra_services=QMGR) as p:
    senders = p.write_file("senders", "found@a.test DUNNO\n")
    conf = dict(p.settings)
    conf.update({
        "maillog_file": p.log_path,
        "metrics_listen": "127.0.0.1:%d" % mport,
        "dns_resolver": dns.server,
        "modules": "testmod", "module_directory": mods,
        "smtpd_delay_reject": "no",
        "smtpd_sender_restrictions": "check_sender_access texthash:%s, check_testmod dnsa" % senders,
        "relay_domains": "ok.test broken.test verify.test",
        "transport_maps": "inline:{ {ok.test = smtp:[127.0.0.1]:%d}, {broken.test = smtp:[127.0.0.1]:%d}, "
                          "{verify.test = verifytls:[127.0.0.1]:%d} }" % (good.port, broken.port, good.port),
        "smtp_tls_security_level": "may",
        "smtp_tls_CAfile": cert,
    })
    p.write_main_cf(conf)
    p.start()
    t.ok(wait_http(mport), "the metrics endpoint answers")
    table = 'type="texthash",table="texthash:%s"' % senders

    # DNS and the access table, one MAIL each (smtpd_delay_reject = no: the
    # sender's checks run at MAIL).
    ptr = 'petrel_dns_queries_total{type="ptr",result="refused"}'
    t.is_(wait_value(mport, ptr, 1.0), 1.0, "the harness's readiness probe made smtpd ask its PTR (refused)")
    v0 = values()
    c = p.connect()
    c.ehlo()
    t.like(c.cmd("MAIL FROM:<found@a.test>"), r"^250 ", "a sender the table knows (DUNNO), its domain has an A record")
    v1 = values()
    t.is_(moved(v0, v1, "petrel_table_lookups_total{" + table),
          {"petrel_table_lookups_total{%s,result=\"found\"}" % table: 1.0},
          "one lookup of the access table, found at the first key (the whole address)")
    # smtpd asks the client's name at connect (PTR): dnsmasq serves no
    # reverse zone and has no upstream, so it refuses.
    t.is_(moved(v0, v1, "petrel_dns_queries_total"), {'petrel_dns_queries_total{type="a",result="ok"}': 1.0,
                                                      'petrel_dns_queries_total{type="ptr",result="refused"}': 1.0},
          "two DNS queries: the client's PTR, refused; the sender domain's A, answered")
    t.is_(moved(v0, v1, "petrel_dns_query_duration_seconds_count"),
          {'petrel_dns_query_duration_seconds_count{type="a"}': 1.0,
           'petrel_dns_query_duration_seconds_count{type="ptr"}': 1.0}, "and their latency observed")
    t.like(c.cmd("RSET"), r"^250 ", "RSET")
    t.like(c.cmd("MAIL FROM:<x@nx.test>"), r"^250 ", "a sender the table does not know, its domain does not exist")
    v2 = values()
    # Postfix's order for an address: user@domain, domain, .parent (parent_domain_matches_subdomains), user@
    t.is_(moved(v1, v2, "petrel_table_lookups_total{" + table),
          {"petrel_table_lookups_total{%s,result=\"notfound\"}" % table: 4.0},
          "four keys tried, none found: x@nx.test, nx.test, .test, x@")
    t.is_(moved(v1, v2, "petrel_dns_queries_total"), {'petrel_dns_queries_total{type="a",result="nxdomain"}': 1.0},
          "one DNS query: A, no such name")
    t.is_(v2.get("petrel_table_lookup_duration_seconds_count{%s}" % table), 5.0,
          "every table lookup's latency observed (5)")
    t.like(c.cmd("QUIT"), r"^221 ", "QUIT")
    c.close()

    # The SMTP client's TLS: a session, a broken handshake, an unverified certificate.
    tls = 'petrel_smtp_tls_handshakes_total{transport="%s",result="%s",version="%s"}'
    c = p.connect()
    t.like(c.send_message("s@petrel.test", ["u@ok.test"], "Subject: tls\r\n\r\nx\r\n"), r"^250 ", "mail for ok.test")
    t.like(c.send_message("s@petrel.test", ["u@broken.test"], "Subject: tls\r\n\r\nx\r\n", ehlo=False), r"^250 ",
           "mail for broken.test")
    t.like(c.send_message("s@petrel.test", ["u@verify.test"], "Subject: tls\r\n\r\nx\r\n", ehlo=False), r"^250 ",
           "mail for verify.test")
    c.close()
    # three deliveries through the queue manager, two TLS handshakes: a deadline for a loaded machine
    t.is_(wait_value(mport, 'petrel_deliveries_total{transport="smtp",status="sent"}', 2.0, timeout=60), 2.0,
          "ok.test's and broken.test's mail are sent (broken.test's in plaintext after the failed handshake)")
    t.is_(wait_value(mport, 'petrel_deliveries_total{transport="verifytls",status="deferred"}', 1.0, timeout=60), 1.0,
          "verify.test's is deferred: the certificate does not verify")
    v3 = values()
    versions = [s.get("tls_version") for s in good.sessions if s.get("tls")]
    t.ok(len(versions) >= 1, "the good server saw a TLS session (%s)" % versions)
    version = versions[0] if versions else "?"
    t.is_({k: v for k, v in v3.items() if k.startswith("petrel_smtp_tls_handshakes_total")},
          {tls % ("smtp", "ok", version): 1.0, tls % ("smtp", "failed", "none"): 1.0,
           tls % ("verifytls", "not_verified", version): 1.0},
          "one handshake each: ok and failed on smtp, not_verified on verifytls, with the protocol version")
    t.ok(p.wait_log(r"TLS handshake with 127\.0\.0\.1\[127\.0\.0\.1\]:%d failed" % broken.port) is not None or
         p.wait_log(r"TLS handshake with .* failed") is not None, "the failed handshake was logged")

    # An inline: table is labelled by a digest, never by its content.
    body = http_get(mport, "/metrics")[2]
    inline = re.findall(r'petrel_table_lookups_total\{type="inline",table="([^"]*)"', body)
    t.ok(inline and all(re.fullmatch(r"inline:\{[0-9a-f]{8}\}", x) for x in inline),
         "the transport_maps inline: table is labelled inline:{digest}", inline)
    t.ok("ok.test" not in body and "127.0.0.5" not in body, "no table content and no DNS data in any label")
good.stop()
broken.stop()
shutil.rmtree(certdir, ignore_errors=True)
t.done()
