"""XFORWARD (Postfix's XFORWARD_README): a content filter in
smtpd_authorized_xforward_hosts names the original client; the Received:
header and the "client=" log line say so for the next transaction only.
Every bad attribute gets Postfix's exact reply, and the session goes on."""
import os
import re
import subprocess

from harness import PETRELD, Dnsmasq, Petrel, Smtp, Tap, free_port
from modlib import smtp_from

t = Tap()


def transaction(c, tag):
    c.cmd("MAIL FROM:<sender@example.com>")
    c.cmd("RCPT TO:<user@localhost>")
    c.cmd("DATA")
    c.send(("Subject: %s\r\n\r\nbody\r\n.\r\n" % tag).encode())
    return c.read_reply()


closed_port = free_port()
with Petrel(t, main_cf={"smtpd_authorized_xforward_hosts": "127.0.0.0/8, [::1]/128", "mydestination": "localhost"},
            extra_services="127.0.0.1:%d inet n - n - - smtpd -o smtpd_authorized_xforward_hosts=\n"
            % closed_port) as p:
    p.wait_listening(closed_port)
    c = p.connect()
    r = c.ehlo("filter.example.org")
    t.ok("250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT" in c.lines or
         "250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT" in c.lines,
         "EHLO offers XFORWARD to an authorized client", "\n".join(c.lines))
    t.like(c.cmd("XFORWARD NAME=mail.example.net ADDR=192.0.2.7 PORT=4242 PROTO=ESMTP HELO=mx.example.net"),
           r"^250 2\.0\.0 Ok$", "XFORWARD with five attributes: 250")
    t.like(c.cmd("XFORWARD IDENT=4XyZ12abc SOURCE=REMOTE"), r"^250 2\.0\.0 Ok$", "  and two more in a second command")
    r = transaction(c, "forwarded")
    data = p.queued_message(r) or b""
    t.ok(b"Received: from mx.example.net (mail.example.net [192.0.2.7])\r\n" in data,
         "Received: names the forwarded HELO, name and address", data[:600].decode(errors="replace"))
    t.ok(re.search(rb"\tby \S+ \(\S+\) with ESMTP id ", data) is not None, "  and the forwarded protocol",
         data[:600].decode(errors="replace"))
    qid = re.match(r"250 2\.0\.0 Ok: queued as (\S+)", r).group(1)
    line = p.wait_log(r"%s: client=\S+, orig_queue_id=4XyZ12abc, orig_client=mail\.example\.net\[192\.0\.2\.7\]:4242"
                      % qid)
    t.ok(line is not None, "the log line names the connected client, then orig_queue_id and orig_client (Postfix's)",
         p.log()[-2000:])
    r = transaction(c, "second")
    data = p.queued_message(r) or b""
    t.ok(b"Received: from filter.example.org (unknown [127.0.0.1])\r\n" in data,
         "the next transaction is the connected client's again: the values last one transaction",
         data[:600].decode(errors="replace"))

    # xtext, UNAVAILABLE, IPv6 and neutering
    t.like(c.cmd("XFORWARD NAME=mail+2Eexample.org ADDR=IPv6:2001:DB8::1 HELO=bad<helo>(x) PROTO=[UNAVAILABLE]"),
           r"^250 2\.0\.0 Ok$", "xtext, an IPv6: address, special characters and [UNAVAILABLE] are taken")
    data = p.queued_message(transaction(c, "xtext")) or b""
    t.ok(b"Received: from bad?helo??x? (mail.example.org [2001:db8::1])\r\n" in data and b" with unknown id " in data,
         "  decoded, normalized, neutered as Postfix does", data[:600].decode(errors="replace"))

    # bad input: Postfix's replies, word for word; nothing changes
    bad = [
        ("XFORWARD", r"^501 5\.5\.4 Syntax: XFORWARD attribute=value\.\.\.$", "no attribute"),
        ("XFORWARD NAME", r"^501 5\.5\.4 Error: attribute=value expected$", "no '='"),
        ("XFORWARD NAME=", r"^501 5\.5\.4 Error: attribute=value expected$", "an empty value"),
        ("XFORWARD NAME=" + "a" * 256, r"^501 5\.5\.4 Error: attribute value too long$", "a value of 256 bytes"),
        ("XFORWARD NAME=bad_host!", r"^501 5\.5\.4 Bad NAME syntax: bad_host!$", "NAME that is no host name"),
        ("XFORWARD NAME=a..b", r"^501 5\.5\.4 Bad NAME syntax: a\.\.b$", "NAME with an empty label"),
        ("XFORWARD ADDR=999.1.1.1", r"^501 5\.5\.4 Bad ADDR syntax: 999\.1\.1\.1$", "ADDR that is no address"),
        ("XFORWARD ADDR=mail.example.net", r"^501 5\.5\.4 Bad ADDR syntax: mail\.example\.net$", "ADDR as a name"),
        ("XFORWARD PORT=70000", r"^501 5\.5\.4 Bad PORT syntax: 70000$", "PORT above 65535"),
        ("XFORWARD PORT=25a", r"^501 5\.5\.4 Bad PORT syntax: 25a$", "PORT not a number"),
        ("XFORWARD PROTO=" + "P" * 65, r"^501 5\.5\.4 Bad PROTO syntax: P{65}$", "PROTO of 65 bytes"),
        ("XFORWARD SOURCE=ELSEWHERE", r"^501 5\.5\.4 Bad SOURCE syntax: ELSEWHERE$", "SOURCE neither LOCAL nor REMOTE"),
        ("XFORWARD COLOUR=red", r"^501 5\.5\.4 Bad XFORWARD attribute name: COLOUR$", "an unknown attribute"),
        ("XFORWARD NAME=ok.example ADDR=1.2.3", r"^501 5\.5\.4 Bad ADDR syntax: 1\.2\.3$",
         "a bad attribute after a good one"),
        ("XFORWARD HELO=a\x01b\x7fc NAME=x+5Fy", r"^501 5\.5\.4 Bad NAME syntax: x_y$",
         "control bytes and an xtext-encoded bad name"),
    ]
    for line, pattern, desc in bad:
        t.like(c.cmd(line), pattern, "bad input: %s" % desc)
    t.like(c.cmd("NOOP"), r"^250 2\.0\.0 Ok$", "  and the session goes on")
    data = p.queued_message(transaction(c, "after bad")) or b""
    t.ok(b"Received: from filter.example.org (unknown [127.0.0.1])\r\n" in data,
         "  and none of them changed what the next Received: says", data[:600].decode(errors="replace"))

    c.cmd("MAIL FROM:<sender@example.com>")
    t.like(c.cmd("XFORWARD NAME=mail.example.net"), r"^503 5\.5\.1 Error: MAIL transaction in progress$",
           "XFORWARD inside a transaction: 503")
    t.like(c.cmd("RSET"), r"^250", "RSET")
    t.like(c.cmd("XFORWARD NAME=mail.example.net"), r"^250 2\.0\.0 Ok$", "XFORWARD again")
    c.cmd("RSET")
    data = p.queued_message(transaction(c, "after rset")) or b""
    t.ok(b"(unknown [127.0.0.1])" in data, "RSET forgets XFORWARD's values, as Postfix's does",
         data[:600].decode(errors="replace"))
    c.close()

    # A listener whose -o empties the list: not offered, and refused.
    c = Smtp(closed_port)
    c.ehlo("filter.example.org")
    t.ok(not any("XFORWARD" in line for line in c.lines), "EHLO does not offer XFORWARD to a client not authorized",
         "\n".join(c.lines))
    t.like(c.cmd("XFORWARD NAME=mail.example.net ADDR=192.0.2.7"),
           r"^550 5\.7\.0 Error: insufficient authorization$", "XFORWARD from it: 550 5.7.0")
    data = p.queued_message(transaction(c, "unauthorized")) or b""
    t.ok(b"Received: from filter.example.org (unknown [127.0.0.1])\r\n" in data,
         "  and its mail names the connected client", data[:600].decode(errors="replace"))
    c.cmd("QUIT")
    c.close()

# smtpd_authorized_xforward_hosts is a name and address list, as Postfix's
# namadr_list: host names (of the verified client name), .domains, networks,
# type:table items and !exclusions; a bad item is refused at petreld -n, and a
# table that fails ends the session with Postfix's 421.
with Dnsmasq(["--ptr-record=2.0.0.127.in-addr.arpa,filter.xf.test", "--host-record=filter.xf.test,127.0.0.2"]) as dns:
    ports = {name: free_port() for name in ("host", "domain", "other", "table", "cidr", "negated", "failing")}
    with Petrel(t, start=False, main_cf={"dns_resolver": dns.server, "mydestination": "localhost"}) as p:
        byaddr = p.write_file("xf_addrs", "127.0.0.2 OK\n")
        nets = p.write_file("xf_cidr", "127.0.0.0/30 OK\n")
        opts = {"host": "filter.xf.test", "domain": ".xf.test", "other": "other.xf.test,.example.org",
                "table": "texthash:" + byaddr, "cidr": "cidr:" + nets, "negated": "!filter.xf.test,127.0.0.0/8",
                "failing": "fail:down"}
        with open(os.path.join(p.conf, "master.cf"), "a") as f:
            for name, port in ports.items():
                f.write("127.0.0.1:%d inet n - n - - smtpd -o smtpd_authorized_xforward_hosts=%s\n"
                        % (port, opts[name]))
        p._chown()
        p.start()

        def attempt(name):
            p.wait_listening(ports[name])
            c = smtp_from(ports[name], src="127.0.0.2")
            c.ehlo("filter.xf.test")
            offered = any(line.startswith("250-XFORWARD") or line.startswith("250 XFORWARD") for line in c.lines)
            r = c.cmd("XFORWARD ADDR=192.0.2.9")
            c.close()
            return offered, r
        for name, want in (("host", "a host name matches the verified client name"),
                           ("domain", ".xf.test matches the names below xf.test"),
                           ("table", "a texthash: table keyed by the client address"),
                           ("cidr", "a cidr: table")):
            offered, r = attempt(name)
            t.ok(offered and r == "250 2.0.0 Ok", "smtpd_authorized_xforward_hosts = %s: %s" % (opts[name], want),
                 (offered, r))
        for name, want in (("other", "names that are not the client's do not match"),
                           ("negated", "!filter.xf.test before 127.0.0.0/8: the exclusion decides")):
            offered, r = attempt(name)
            t.ok(not offered and r == "550 5.7.0 Error: insufficient authorization",
                 "smtpd_authorized_xforward_hosts = %s: %s (550 5.7.0)" % (opts[name], want), (offered, r))
        p.wait_listening(ports["failing"])
        c = smtp_from(ports["failing"], src="127.0.0.2")
        t.like(c.ehlo(), r"^421 4\.3\.0 \S+ Server local data error$",
               "a table that fails: EHLO is answered 421 4.3.0 (Postfix ends the session too)")
        t.ok(p.wait_log(r"warning: don't know if EHLO feature XFORWARD should be announced to "
                        r"filter\.xf\.test\[127\.0\.0\.2\]") is not None, "  with Postfix's warning")
        c.close()

for value, want in (("300.1.2.3", r"smtpd_authorized_xforward_hosts: "),
                    ("filter.example.org/24", r"smtpd_authorized_xforward_hosts: \"filter\.example\.org/24\" is neither a "
                                              r"network, a host or domain name, nor a type:table"),
                    ("nosuchtype:/x", r"smtpd_authorized_xforward_hosts: .*nosuchtype")):
    with Petrel(t, start=False, main_cf={"smtpd_authorized_xforward_hosts": value}) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
        t.ok(r.returncode != 0 and re.search(want, r.stderr),
             "smtpd_authorized_xforward_hosts = %s is an error naming the parameter" % value, r.stderr)
t.done()
