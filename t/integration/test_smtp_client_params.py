#!/usr/bin/env python3
"""The SMTP/LMTP client's main.cf parameters, each against a real peer
(the scripted server of scripted_smtp.py, a private dnsmasq), through
t/tools/smtp-deliver --config DIR, which binds DIR/main.cf exactly as the
queue manager does: smtp_helo_name, smtp_bind_address(6) and _enforce,
every smtp_*_timeout (the deferral names the stage as Postfix does),
smtp_connection_cache_time_limit and _reuse_time_limit,
smtp_skip_5xx_greeting, smtp_always_send_ehlo, smtp_never_send_ehlo,
smtp_line_length_limit, smtp_mx_address_limit, smtp_mx_session_limit,
smtp_dns_support_level, disable_dns_lookups, smtp_host_lookup, and their
lmtp_* twins."""
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import free_port, Dnsmasq  # noqa: E402
from scripted_smtp import Env, T, hop, one  # noqa: E402

BODY = b"From: a@src.test\r\nTo: b@dst.test\r\nSubject: params\r\n\r\nhello\r\n"


def main():
    t = T(timeout=250)
    e = Env()
    q1 = e.qfile(["a@dst.test"], BODY)

    # ---- smtp_helo_name / lmtp_lhlo_name ----
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_helo_name="helo.client.example"))
    t.is_((one(res).get("status"), s.sessions[0]["cmds"][0]), ("sent", "EHLO helo.client.example"),
          "smtp_helo_name: EHLO names it (not myhostname)", e.last_out)
    s = e.server(ehlo="502 5.5.2 no EHLO")
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_helo_name="helo.client.example"))
    t.ok("HELO helo.client.example" in s.sessions[0]["cmds"], "smtp_helo_name: the HELO fallback names it too",
         s.sessions[0]["cmds"])
    lsock = os.path.join(e.dir, "lmtp.sock")
    lm = e.server(unix=lsock, lmtp=True)
    res, _, _ = e.deliver(q1, "unix:" + lsock, "--lmtp", *e.conf(lmtp_lhlo_name="lhlo.client.example",
                                                             smtp_helo_name="not.for.lmtp"))
    t.is_(lm.sessions[0]["cmds"][0], "LHLO lhlo.client.example", "lmtp_lhlo_name: LHLO names it")

    # ---- smtp_bind_address, smtp_bind_address6, _enforce ----
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_bind_address="127.0.0.2"))
    t.is_((one(res).get("status"), s.sessions[0]["peer"]), ("sent", "127.0.0.2"),
          "smtp_bind_address: the server sees the connection from 127.0.0.2", e.last_out)
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_bind_address="[127.0.0.3]"))
    t.is_(s.sessions[0]["peer"], "127.0.0.3", "smtp_bind_address in [ ]")
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s))
    t.is_(s.sessions[0]["peer"], "127.0.0.1", "without smtp_bind_address: the kernel's choice")
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_bind_address6="::1"))
    t.is_(s.sessions[0]["peer"], "127.0.0.1", "smtp_bind_address6 does not touch IPv4 connections")
    lm2 = e.server(host="127.0.0.1")
    res, _, _ = e.deliver(q1, "inet:127.0.0.1:%d" % lm2.port, "--lmtp",
                          *e.conf(lmtp_bind_address="127.0.0.4", smtp_bind_address="127.0.0.2"))
    t.is_(lm2.sessions[0]["peer"], "127.0.0.4", "lmtp_bind_address for LMTP (not smtp_bind_address)")
    # an address that is not ours: a warning and the kernel's choice, or a deferral with _enforce
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_bind_address="192.0.2.77"))
    t.ok(one(res).get("status") == "sent" and s.sessions[0]["peer"] == "127.0.0.1"
         and "bind 192.0.2.77: Cannot assign requested address" in e.last_out,
         "smtp_bind_address not local: warning, sent from the kernel's choice", e.last_out)
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_bind_address="192.0.2.77", smtp_bind_address_enforce="yes"))
    t.is_((one(res).get("status"), one(res).get("dsn"), one(res).get("text")),
          ("deferred", "4.4.0", "server configuration error"),
          "smtp_bind_address_enforce: deferred 4.4.0 server configuration error")
    t.is_(len(s.sessions), 0, "and nothing was sent")
    r = __import__("subprocess").run([__import__("scripted_smtp").TOOL] + e.conf(smtp_bind_address="not-an-ip") +
                                     [q1, hop(s)], capture_output=True, text=True, timeout=30)
    t.like(r.stderr, r'smtp_bind_address: "not-an-ip" is not an IPv4 address',
           "a malformed smtp_bind_address is refused, naming the parameter")

    # ---- timeouts: each stage, with Postfix's words ----
    def stage(param, text, stall, **more):
        kw = {param: "1s"}
        kw.update(more.pop("params", {}))
        sv = e.server(stall=stall, **more)
        res, _, _ = e.deliver(q1, hop(sv), *e.conf(**kw))
        t.is_((one(res).get("status"), one(res).get("dsn"), one(res).get("text")),
              ("deferred", "4.4.2", "conversation with 127.0.0.1[127.0.0.1] timed out while " + text),
              "%s: %s" % (param, text), e.last_out)

    stage("smtp_helo_timeout", "receiving the initial server greeting", "GREETING")
    stage("smtp_helo_timeout", "performing the EHLO handshake", "EHLO")
    stage("smtp_helo_timeout", "performing the HELO handshake", "HELO", params={"smtp_never_send_ehlo": "yes"})
    stage("smtp_mail_timeout", "sending MAIL FROM", "MAIL")
    stage("smtp_rcpt_timeout", "sending RCPT TO", "RCPT")
    stage("smtp_data_init_timeout", "sending DATA command", "DATA")
    stage("smtp_data_done_timeout", "sending end of data -- message may be sent more than once", "DOT")
    stage("smtp_starttls_timeout", "receiving the STARTTLS response", "STARTTLS",
          params={"smtp_tls_security_level": "encrypt"}, tls=("/nonexistent", "/nonexistent"),
          tls_ctx=False)
    # the other stages' timeouts do not apply to a stage
    sv = e.server(stall="MAIL")
    res, _, _ = e.deliver(q1, hop(sv), *e.conf(smtp_rcpt_timeout="1s", smtp_data_init_timeout="1s",
                                             smtp_mail_timeout="3s"))
    t.is_(one(res).get("text"), "conversation with 127.0.0.1[127.0.0.1] timed out while sending MAIL FROM",
          "smtp_mail_timeout, not the RCPT or DATA timeouts, bounds the MAIL reply")
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 30000
    qbig = e.qfile(["a@dst.test"], big)
    sv = e.server(stop_reading_body=True, caps=["PIPELINING", "8BITMIME"])
    res, _, _ = e.deliver(qbig, hop(sv), *e.conf(smtp_data_xfer_timeout="1s"))
    t.is_((one(res).get("status"), one(res).get("text")),
          ("deferred", "conversation with 127.0.0.1[127.0.0.1] timed out while sending message body"),
          "smtp_data_xfer_timeout: a server that stops reading the content", e.last_out)
    lst = e.server(unix=os.path.join(e.dir, "stall.sock"), lmtp=True, stall="LHLO")
    res, _, _ = e.deliver(q1, "unix:" + os.path.join(e.dir, "stall.sock"), "--lmtp",
                          *e.conf(lmtp_lhlo_timeout="1s", smtp_helo_timeout="300s"))
    t.is_(one(res).get("text"), "conversation with %s[%s] timed out while performing the LHLO handshake"
          % ("petrel-client.test", os.path.join(e.dir, "stall.sock")), "lmtp_lhlo_timeout", e.last_out)
    # connect: a listener whose backlog is full never completes the handshake
    full = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fport = full.getsockname()[1]
    fillers = []
    for _ in range(4):
        f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", fport))
        except BlockingIOError:
            pass
        fillers.append(f)
    res, _, _ = e.deliver(q1, "[127.0.0.1]:%d" % fport, *e.conf(smtp_connect_timeout="1s"))
    t.is_((one(res).get("status"), one(res).get("dsn"), one(res).get("text")),
          ("deferred", "4.4.1", "connect to 127.0.0.1[127.0.0.1]:%d: Connection timed out" % fport),
          "smtp_connect_timeout: connect to ...: Connection timed out", e.last_out)
    for f in fillers:
        f.close()
    full.close()
    # RSET before a cached connection is used again; QUIT when it is given up
    sv = e.server(stall="RSET")
    res, stats, allres = e.deliver(q1, hop(sv), "--repeat", "2",
                                   *e.conf(smtp_rset_timeout="1s", smtp_connection_cache_time_limit="5s"))
    t.ok([r["status"] for r in allres.get("a@dst.test", [])] == ["sent", "sent"] and len(sv.sessions) == 2
         and "timed out while sending final RSET); retrying on a new connection" in e.last_out,
         "smtp_rset_timeout: a cached connection whose RSET stalls is given up, the job goes to a new one",
         e.last_out)
    sv = e.server(stall="QUIT")
    res, stats, _ = e.deliver(q1, hop(sv), "--cache-time", "0", *e.conf(smtp_quit_timeout="1s"))
    t.like(e.last_out, r"CLOSED open=0", "smtp_quit_timeout: a stalled QUIT is given up after it")
    sv = e.server(stall="QUIT")
    res, stats, _ = e.deliver(q1, hop(sv), "--cache-time", "0")
    t.like(e.last_out, r"CLOSED open=1", "(the default smtp_quit_timeout waits longer than the tool)")

    # ---- connection cache and reuse limits ----
    sv = e.server()
    res, stats, _ = e.deliver(q1, hop(sv), "--repeat", "2", *e.conf(smtp_connection_cache_time_limit="5s"))
    t.like(stats, r"connections=1 reused=1", "smtp_connection_cache_time_limit: the second job reuses the connection")
    sv = e.server(dot_delay=1.5)
    res, stats, _ = e.deliver(q1, hop(sv), "--repeat", "2",
                              *e.conf(smtp_connection_cache_time_limit="5s", smtp_connection_reuse_time_limit="1s"))
    t.like(stats, r"connections=2 reused=0",
           "smtp_connection_reuse_time_limit: a connection older than it is not parked again")
    sv = e.server(dot_delay=1.5)
    res, stats, _ = e.deliver(q1, hop(sv), "--repeat", "2", *e.conf(smtp_connection_cache_time_limit="5s"))
    t.like(stats, r"connections=1 reused=1", "(with the default 300s it is)")

    # ---- greeting, EHLO or HELO ----
    sv = e.server(greeting="554 5.7.1 go away")
    res, _, _ = e.deliver(q1, hop(sv))
    t.is_((one(res).get("status"), one(res).get("dsn")), ("deferred", "4.7.1"),
          "smtp_skip_5xx_greeting = yes: a 5xx greeting defers (4.7.1)")
    sv = e.server(greeting="554 5.7.1 go away")
    res, _, _ = e.deliver(q1, hop(sv), *e.conf(smtp_skip_5xx_greeting="no"))
    t.is_((one(res).get("status"), one(res).get("dsn"), one(res).get("text")),
          ("bounced", "5.7.1", "host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 go away"),
          "smtp_skip_5xx_greeting = no: a 5xx greeting bounces")
    sv = e.server(greeting="220 scripted.test Service ready")
    res, _, _ = e.deliver(q1, hop(sv), *e.conf(smtp_always_send_ehlo="no"))
    t.ok(sv.sessions[0]["cmds"][0].startswith("HELO "), "smtp_always_send_ehlo = no: no ESMTP in the greeting: HELO",
         sv.sessions[0]["cmds"])
    sv = e.server(greeting="220 scripted.test ESMTP Service ready")
    res, _, _ = e.deliver(q1, hop(sv), *e.conf(smtp_always_send_ehlo="no"))
    t.ok(sv.sessions[0]["cmds"][0].startswith("EHLO "), "smtp_always_send_ehlo = no: ESMTP in the greeting: EHLO",
         sv.sessions[0]["cmds"])
    sv = e.server(greeting="220 scripted.test Service ready")
    res, _, _ = e.deliver(q1, hop(sv))
    t.ok(sv.sessions[0]["cmds"][0].startswith("EHLO "), "smtp_always_send_ehlo = yes (default): EHLO anyway")
    sv = e.server()
    res, _, _ = e.deliver(q1, hop(sv), *e.conf(smtp_never_send_ehlo="yes"))
    t.ok(one(res).get("status") == "sent" and sv.sessions[0]["cmds"][0].startswith("HELO ")
         and not any(c.startswith("EHLO") for c in sv.sessions[0]["cmds"]), "smtp_never_send_ehlo: HELO only",
         sv.sessions[0]["cmds"])

    # ---- smtp_line_length_limit ----
    long_body = b"Subject: long\r\n\r\n" + b"x" * 2100 + b"\r\n.dot\r\n" + b"z" * 998 + b"\r\n"
    ql = e.qfile(["a@dst.test"], long_body)
    sv = e.server()
    res, _, _ = e.deliver(ql, hop(sv))
    data = sv.sessions[0]["data"][0]
    t.ok(data == (b"Subject: long\r\n\r\n" + b"x" * 998 + b"\r\n " + b"x" * 997 + b"\r\n " + b"x" * 105
                  + b"\r\n..dot\r\n" + b"z" * 998 + b"\r\n"),
         "smtp_line_length_limit 998: a 2100-byte line broken with CRLF SPACE, a 998-byte one kept", data[:80])
    t.like(e.last_out, r"breaking line > 998 bytes with <CR><LF>SPACE", "and the break is logged")
    sv = e.server()
    res, _, _ = e.deliver(ql, hop(sv), *e.conf(smtp_line_length_limit="0"))
    t.ok(sv.sessions[0]["data"][0] == b"Subject: long\r\n\r\n" + b"x" * 2100 + b"\r\n..dot\r\n" + b"z" * 998 + b"\r\n",
         "smtp_line_length_limit 0: lines go as they are")
    sv = e.server()
    res, _, _ = e.deliver(ql, hop(sv), *e.conf(smtp_line_length_limit="1000"))
    t.ok(sv.sessions[0]["data"][0].startswith(b"Subject: long\r\n\r\n" + b"x" * 1000 + b"\r\n " + b"x" * 999 + b"\r\n "),
         "smtp_line_length_limit 1000")

    # ---- MX limits and DNS ----
    dport = free_port()
    dns = Dnsmasq(["--local=/test/", "--local=/localhost/", "--local=/invalid/",
                   "--mx-host=three.test,mx1.three.test,10", "--mx-host=three.test,mx2.three.test,10",
                   "--mx-host=three.test,mx3.three.test,10",
                   "--host-record=mx1.three.test,127.0.0.2", "--host-record=mx2.three.test,127.0.0.3",
                   "--host-record=mx3.three.test,127.0.0.4"])
    try:
        d = ["--dns", dns.server]
        busy = [e.server(host="127.0.0.%d" % i, port=dport, greeting="421 4.3.2 busy") for i in (2, 3, 4)]
        res, _, _ = e.deliver(q1, "three.test:%d" % dport, *d, *e.conf(smtp_mx_address_limit="2"))
        t.is_(sum(len(b.sessions) for b in busy), 2, "smtp_mx_address_limit 2: two of three MX addresses are tried",
              e.last_out)
        res, _, _ = e.deliver(q1, "three.test:%d" % dport, *d, *e.conf(smtp_mx_address_limit="0"))
        t.is_(sum(len(b.sessions) for b in busy), 5, "smtp_mx_address_limit 0: all three are tried")
        for b in busy:
            b.stop()
        dport = free_port()
        soft = [e.server(host="127.0.0.%d" % i, port=dport, mail="451 4.3.0 try later") for i in (2, 3, 4)]
        res, _, _ = e.deliver(q1, "three.test:%d" % dport, *d, *e.conf(smtp_mx_session_limit="1"))
        t.is_(sum(len(b.sessions) for b in soft), 1, "smtp_mx_session_limit 1: one session, then the job ends",
              e.last_out)
        res, _, _ = e.deliver(q1, "three.test:%d" % dport, *d)
        t.is_(sum(len(b.sessions) for b in soft), 3, "smtp_mx_session_limit 2 (default): two sessions")
        for b in soft:
            b.stop()
        # greetings that fail do not count as sessions
        dport = free_port()
        mixed = [e.server(host="127.0.0.2", port=dport, greeting="421 4.3.2 busy"),
                 e.server(host="127.0.0.3", port=dport, greeting="421 4.3.2 busy"),
                 e.server(host="127.0.0.4", port=dport)]
        res, _, _ = e.deliver(q1, "three.test:%d" % dport, *d, *e.conf(smtp_mx_session_limit="1"))
        t.is_(one(res).get("status"), "sent", "sessions that fail at the greeting do not count against the limit",
              e.last_out)

        # DNS support level and host lookups: "localhost" is in /etc/hosts, not in this DNS
        sv = e.server()
        res, _, _ = e.deliver(q1, "localhost:%d" % sv.port, *d)
        t.ok(one(res).get("status") == "bounced" and len(sv.sessions) == 0,
             "DNS enabled: localhost is looked up as MX in DNS (NXDOMAIN here)", e.last_out)
        res, _, _ = e.deliver(q1, "localhost:%d" % sv.port, *d, *e.conf(smtp_dns_support_level="disabled"))
        t.ok(one(res).get("status") == "sent" and one(res).get("relay").startswith("localhost[")
             and len(sv.sessions) == 1,
             "smtp_dns_support_level = disabled: no MX lookup, /etc/hosts finds localhost", e.last_out)
        res, _, _ = e.deliver(q1, "localhost:%d" % sv.port, *d, *e.conf(disable_dns_lookups="yes"))
        t.is_(one(res).get("status"), "sent", "disable_dns_lookups = yes: the same")
        res, _, _ = e.deliver(q1, "localhost:%d" % sv.port, *d,
                              *e.conf(disable_dns_lookups="yes", smtp_dns_support_level="enabled"))
        t.is_(one(res).get("status"), "bounced", "smtp_dns_support_level = enabled wins over disable_dns_lookups")
        res, _, _ = e.deliver(q1, "[localhost]:%d" % sv.port, *d)
        t.is_(one(res).get("status"), "bounced", "smtp_host_lookup = dns: [localhost] is not in DNS")
        res, _, _ = e.deliver(q1, "[localhost]:%d" % sv.port, *d, *e.conf(smtp_host_lookup="native"))
        t.is_(one(res).get("status"), "sent", "smtp_host_lookup = native: [localhost] from /etc/hosts", e.last_out)
        res, _, _ = e.deliver(q1, "[localhost]:%d" % sv.port, *d, *e.conf(smtp_host_lookup="dns, native"))
        t.is_(one(res).get("status"), "sent", "smtp_host_lookup = dns, native: native after DNS found nothing")
        res, _, _ = e.deliver(q1, "[nosuchhost.invalid]:%d" % sv.port, *d, *e.conf(smtp_host_lookup="native"))
        t.like(one(res).get("text", ""), r"^unable to look up host nosuchhost\.invalid: ",
               "smtp_host_lookup = native: Postfix's text for an unknown host")
        r = __import__("subprocess").run([__import__("scripted_smtp").TOOL] + e.conf(smtp_host_lookup="nis") +
                                         [q1, hop(sv)], capture_output=True, text=True, timeout=30)
        t.like(r.stderr, r'smtp_host_lookup: unknown method "nis"', "an unknown smtp_host_lookup method is refused")
    finally:
        dns.stop()

    e.finish(t)


if __name__ == "__main__":
    main()
