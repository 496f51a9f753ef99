#!/usr/bin/env python3
"""The SMTP/LMTP client (core/deliver/smtp_client.c) through t/tools/smtp-deliver.

Next hops: Postfix's smtp-sink, and a scripted server written here that can
misbehave at every stage (refuse, greet 421, 4xx/5xx at each command, close
mid-DATA, stall, offer or hide PIPELINING/8BITMIME/SIZE/STARTTLS/DSN, break
the TLS handshake) and records exactly what it received. DNS comes from a
private dnsmasq. Each run of smtp-deliver prints "RCPT status dsn relay text".
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import free_port, make_cert, Dnsmasq, wait_for  # noqa: E402
from scripted_smtp import Env, T, ME, hop, unstuff  # noqa: E402
from serverlib import Sink  # noqa: E402


BODY = (b"From: a@src.test\r\nTo: b@dst.test\r\nSubject: test\r\n\r\n"
        b".leading dot\r\n..two dots\r\nmiddle . dot\r\n.\r\nlast line\r\n")


def main():
    t = T(timeout=85)
    e = Env()
    q1 = e.qfile(["a@dst.test", "b@dst.test"], BODY)

    # ---- smtp-sink ----
    sink = Sink(keep=True)
    sink_port = sink.port
    sink_soft = Sink(options=("-r", "RCPT"))
    soft = sink_soft.port
    sink_hard = Sink(options=("-f", "MAIL"))
    hard = sink_hard.port
    try:
        res, _, _ = e.deliver(q1, "[127.0.0.1]:%d" % sink_port)
        t.is_([res.get(r, {}).get("status") for r in ("a@dst.test", "b@dst.test")], ["sent", "sent"],
              "smtp-sink: both recipients sent", e.last_out)
        t.is_(res["a@dst.test"]["relay"], "127.0.0.1[127.0.0.1]:%d" % sink_port, "relay in Postfix's form")
        t.like(res["a@dst.test"]["text"], r"^250 2\.0\.0 Ok", "text is the server's reply")
        dumps = sink.files()
        body = open(dumps[0], "rb").read() if dumps else b""
        t.ok(b".leading dot\n..two dots\n" in body.replace(b"\r\n", b"\n") and b"X-Rcpt-Args: <b@dst.test>" in body,
             "smtp-sink got the message (unstuffed) and both recipients", body[-300:])
        res, _, _ = e.deliver(q1, "[127.0.0.1]:%d" % soft)
        t.ok(res["a@dst.test"]["status"] == "deferred" and res["a@dst.test"]["dsn"].startswith("4.")
             and res["a@dst.test"]["text"].endswith("(in reply to RCPT TO command)"),
             "smtp-sink -r RCPT: deferred, in reply to RCPT TO", res)
        res, _, _ = e.deliver(q1, "[127.0.0.1]:%d" % hard)
        t.ok(res["b@dst.test"]["status"] == "bounced" and res["b@dst.test"]["dsn"].startswith("5.")
             and "(in reply to MAIL FROM command)" in res["b@dst.test"]["text"],
             "smtp-sink -f MAIL: bounced, in reply to MAIL FROM", res)
    finally:
        for one in (sink, sink_soft, sink_hard):
            one.stop()

    # ---- protocol details against the scripted server ----
    s = e.server()
    q2 = e.qfile(["x@dst.test", "y@dst.test"], BODY, opts=["--8bitmime", "--envid", "ID+1=", "--ret", "hdrs",
                                                          "--notify", "SUCCESS,FAILURE", "--orcpt"])
    res, _, _ = e.deliver(q2, hop(s))
    t.is_(res.get("x@dst.test", {}).get("text"), "250 2.0.0 Ok: queued as SCRIPT1", "delivered to scripted server")
    sess = s.sessions[0]
    mail_chunk = [c for c in sess["chunks"] if b"MAIL FROM" in c]
    t.ok(mail_chunk and b"RCPT TO:<x@dst.test>" in mail_chunk[0] and b"RCPT TO:<y@dst.test>" in mail_chunk[0]
         and b"DATA\r\n" in mail_chunk[0], "PIPELINING: MAIL, RCPTs and DATA in one write", sess["chunks"][:4])
    mail = [c for c in sess["cmds"] if c.startswith("MAIL")][0]
    t.is_(mail, "MAIL FROM:<sender@src.test> SIZE=%d BODY=8BITMIME RET=HDRS ENVID=ID+2B1+3D" % len(BODY),
          "MAIL parameters: SIZE, BODY=8BITMIME, RET, ENVID (xtext)")
    rcpt = [c for c in sess["cmds"] if c.startswith("RCPT")][0]
    t.is_(rcpt, "RCPT TO:<x@dst.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@dst.test", "RCPT DSN parameters")
    t.ok(sess["data"] and b"\r\n..leading dot\r\n...two dots\r\n" in sess["data"][0]
         and b"\r\n..\r\nlast line\r\n" in sess["data"][0], "dot-stuffing on the wire", sess["data"][:1])
    t.is_(unstuff(sess["data"][0]) if sess["data"] else None, BODY, "content arrives byte-exact")
    # smtp-deliver waits about 2 s for QUIT's reply, then exits anyway; the
    # server's thread marks the session when it reads the QUIT, which a busy
    # machine may schedule later than that: wait for the mark
    t.ok(wait_for(lambda: sess["quit"], timeout=30), "QUIT at the end without caching")

    s = e.server(caps=["SIZE 1000000"])
    res, _, _ = e.deliver(q1, hop(s))
    sess = s.sessions[0]
    mail_chunk = [c for c in sess["chunks"] if b"MAIL FROM" in c]
    t.ok(res["a@dst.test"]["status"] == "sent" and mail_chunk and b"RCPT" not in mail_chunk[0],
         "no PIPELINING: one command per write", sess["chunks"][:5])
    t.ok("DSN" not in " ".join(sess["cmds"]) and "BODY=" not in " ".join(sess["cmds"]),
         "no DSN or BODY parameters when not offered", sess["cmds"])

    # ---- failures at each stage ----
    closed = free_port()
    res, _, _ = e.deliver(q1, "[127.0.0.1]:%d" % closed)
    t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"], res["a@dst.test"]["text"]),
          ("deferred", "4.4.1", "connect to 127.0.0.1[127.0.0.1]:%d: Connection refused" % closed),
          "connection refused: deferred with Postfix's text")

    s = e.server(greeting="421 4.3.2 busy, try later")
    res, _, _ = e.deliver(q1, hop(s))
    t.ok(res["a@dst.test"]["status"] == "deferred" and
         res["a@dst.test"]["text"] == "host 127.0.0.1[127.0.0.1] refused to talk to me: 421 4.3.2 busy, try later",
         "421 greeting: deferred", res)

    s = e.server(ehlo="502 5.5.2 no EHLO here")
    res, _, _ = e.deliver(q1, hop(s))
    t.ok(res["a@dst.test"]["status"] == "sent" and any(c.startswith("HELO ") for c in s.sessions[0]["cmds"]),
         "EHLO 5xx: HELO fallback", s.sessions[0]["cmds"])

    s = e.server(mail="451 4.3.0 try again")
    res, _, _ = e.deliver(q1, hop(s))
    t.is_([res[r]["status"] for r in ("a@dst.test", "b@dst.test")], ["deferred", "deferred"], "MAIL 4xx: all deferred")
    s = e.server(mail="553 5.7.1 <sender@src.test>: Sender address rejected")
    res, _, _ = e.deliver(q1, hop(s))
    t.is_((res["b@dst.test"]["status"], res["b@dst.test"]["dsn"], res["b@dst.test"]["text"]),
          ("bounced", "5.7.1", "host 127.0.0.1[127.0.0.1] said: 553 5.7.1 <sender@src.test>: Sender address "
           "rejected (in reply to MAIL FROM command)"), "MAIL 5xx: all bounced with the reply")

    s = e.server(rcpt=lambda a: "550 5.1.1 <%s>: Recipient address rejected" % a if a.startswith("a") else "250 Ok")
    res, _, _ = e.deliver(q1, hop(s))
    t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"], res["a@dst.test"]["text"]),
          ("bounced", "5.1.1", "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <a@dst.test>: Recipient address rejected "
           "(in reply to RCPT TO command)"), "RCPT 5xx: that recipient bounced")
    t.is_(res["b@dst.test"]["status"], "sent", "the other recipient is sent")
    s = e.server(rcpt="450 4.2.0 greylisted")
    res, _, _ = e.deliver(q1, hop(s))
    # the pipelined DATA got 354 anyway: the client ends it with an empty "."
    t.ok(res["a@dst.test"]["status"] == "deferred" and res["a@dst.test"]["dsn"] == "4.2.0"
         and not any(s.sessions[0]["data"]), "RCPT 4xx: deferred, no content sent", res)

    s = e.server(data="554 5.5.1 no valid recipients")
    res, _, _ = e.deliver(q1, hop(s))
    t.ok(res["a@dst.test"]["status"] == "bounced" and res["a@dst.test"]["text"].endswith("(in reply to DATA command)"),
         "DATA 5xx: bounced", res)
    s = e.server(dot="451-4.3.0 queue problem\r\n451 4.3.0 second line")
    res, _, _ = e.deliver(q1, hop(s))
    t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"], res["a@dst.test"]["text"]),
          ("deferred", "4.3.0", "host 127.0.0.1[127.0.0.1] said: 451 4.3.0 queue problem second line "
           "(in reply to end of DATA command)"), "end-of-data 4xx: deferred, multi-line reply joined")
    s = e.server(dot="554 5.7.1 spam")
    res, _, _ = e.deliver(q1, hop(s))
    t.is_(res["b@dst.test"]["status"], "bounced", "end-of-data 5xx: bounced")

    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 6000
    qbig = e.qfile(["big@dst.test"], big)
    s = e.server(close_in_data=100000)
    res, _, _ = e.deliver(qbig, hop(s))
    t.is_((res["big@dst.test"]["status"], res["big@dst.test"]["text"]),
          ("deferred", "lost connection with 127.0.0.1[127.0.0.1] while sending message body"),
          "connection closed mid-DATA: deferred")
    s = e.server()
    res, _, _ = e.deliver(qbig, hop(s))
    t.ok(res["big@dst.test"]["status"] == "sent" and s.sessions[0]["data"]
         and unstuff(s.sessions[0]["data"][0]) == big, "a 6 MB message streams byte-exact")

    s = e.server(stall="RCPT", caps=["8BITMIME"])
    t0 = time.time()
    res, _, _ = e.deliver(q1, hop(s), "--timeout", "2")
    t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["text"]),
          ("deferred", "conversation with 127.0.0.1[127.0.0.1] timed out while sending RCPT TO"),
          "stall at RCPT: timed out, deferred")
    t.ok(time.time() - t0 < 30, "the timeout is honoured (2 s, not the default 300 s; a bound a loaded machine keeps)")
    s = e.server(stall="EHLO")
    res, _, _ = e.deliver(q1, hop(s), "--timeout", "1")
    t.like(res["a@dst.test"]["text"], "timed out while performing the EHLO handshake$", "stall at EHLO")

    # ---- 8BITMIME / SMTPUTF8 / SIZE ----
    q8 = e.qfile(["u@dst.test"], b"Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve\r\n", opts=["--8bitmime"])
    s = e.server(caps=["PIPELINING"])
    res, _, _ = e.deliver(q8, hop(s))
    t.is_((res["u@dst.test"]["status"], res["u@dst.test"]["dsn"], res["u@dst.test"]["text"]),
          ("bounced", "5.6.3", "Message has 8-bit content but the remote server does not support 8BITMIME"),
          "8-bit content, no 8BITMIME: bounced 5.6.3")
    qu = e.qfile(["u@dst.test"], BODY, opts=["--smtputf8"], sender="s\xc3\xa9@src.test".encode("latin-1").decode())
    s = e.server(caps=["PIPELINING", "8BITMIME"])
    res, _, _ = e.deliver(qu, hop(s))
    t.is_((res["u@dst.test"]["status"], res["u@dst.test"]["dsn"]), ("bounced", "5.6.7"),
          "SMTPUTF8 needed, not offered: bounced 5.6.7")
    s = e.server()
    res, _, _ = e.deliver(qu, hop(s))
    t.ok(res["u@dst.test"]["status"] == "sent" and " SMTPUTF8" in [c for c in s.sessions[0]["cmds"]
                                                                   if c.startswith("MAIL")][0],
         "SMTPUTF8 passed on when offered")
    s = e.server(caps=["PIPELINING", "8BITMIME", "SIZE 100"])
    res, _, _ = e.deliver(q1, hop(s))
    t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"]), ("bounced", "5.3.4"),
          "message larger than the server's SIZE: bounced 5.3.4")

    # ---- STARTTLS ----
    certdir = os.path.join(e.dir, "certs")
    os.mkdir(certdir)
    cert, key = make_cert(certdir, "mx.tls.test")
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), "--tls", "may")
    t.ok(res["a@dst.test"]["status"] == "sent" and s.sessions[0]["tls"] and s.sessions[0]["data"],
         "tls may: STARTTLS used, delivered over TLS", e.last_out)
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), "--tls", "may")
    t.is_(res["a@dst.test"]["status"], "sent", "tls may, STARTTLS not offered: plaintext")
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), "--tls", "encrypt")
    t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"], res["a@dst.test"]["text"]),
          ("deferred", "4.7.4", "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"),
          "tls encrypt, STARTTLS not offered: deferred")
    s = e.server(tls_broken=True)
    res, _, _ = e.deliver(q1, hop(s), "--tls", "may")
    t.ok(res["a@dst.test"]["status"] == "sent" and len(s.sessions) == 2 and not s.sessions[1]["tls"]
         and not any(c.startswith("STARTTLS") for c in s.sessions[1]["cmds"]),
         "tls may, handshake fails: retried in plaintext", e.last_out)
    s = e.server(tls_broken=True)
    res, _, _ = e.deliver(q1, hop(s), "--tls", "encrypt")
    t.ok(res["a@dst.test"]["status"] == "deferred" and res["a@dst.test"]["dsn"] == "4.7.5",
         "tls encrypt, handshake fails: deferred 4.7.5", res)

    # ---- DNS ----
    port = free_port()
    dns = Dnsmasq(["--local=/test/",
                   "--mx-host=d.test,mx1.d.test,10", "--mx-host=d.test,mx2.d.test,20",
                   "--address=/mx1.d.test/127.0.0.2", "--address=/mx2.d.test/127.0.0.1",
                   "--mx-host=o.test,mxa.o.test,10", "--mx-host=o.test,mxb.o.test,20",
                   "--address=/mxa.o.test/127.0.0.1", "--address=/mxb.o.test/127.0.0.1",
                   "--host-record=a.test,127.0.0.1",
                   "--mx-host=null.test,.,0",
                   "--mx-host=loop.test," + ME + ",10", "--host-record=" + ME + ",127.0.0.1",
                   "--mx-host=tls.test,mx.tls.test,10", "--host-record=mx.tls.test,127.0.0.1",
                   "--mx-host=badtls.test,mx.badtls.test,10", "--host-record=mx.badtls.test,127.0.0.1"])
    try:
        s = e.server(port=port)
        d = ["--dns", dns.server]
        res, _, _ = e.deliver(q1, "d.test:%d" % port, *d)
        t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["relay"]), ("sent", "mx2.d.test[127.0.0.1]:%d" % port),
              "MX: first (preferred) host refuses, the next one takes the mail", e.last_out)
        res, _, _ = e.deliver(q1, "o.test:%d" % port, *d)
        t.is_(res["a@dst.test"]["relay"], "mxa.o.test[127.0.0.1]:%d" % port, "MX: preference order", e.last_out)
        res, _, _ = e.deliver(q1, "a.test:%d" % port, *d)
        t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["relay"]), ("sent", "a.test[127.0.0.1]:%d" % port),
              "no MX: A record fallback", e.last_out)
        res, _, _ = e.deliver(q1, "[a.test]:%d" % port, *d)
        t.is_(res["a@dst.test"]["relay"], "a.test[127.0.0.1]:%d" % port, "[host]: no MX lookup", e.last_out)
        res, _, _ = e.deliver(q1, "null.test:%d" % port, *d)
        t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"]), ("bounced", "5.1.10"),
              "null MX: bounced 5.1.10", e.last_out)
        res, _, _ = e.deliver(q1, "nx.test:%d" % port, *d)
        t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"]), ("bounced", "5.4.4"),
              "NXDOMAIN: bounced 5.4.4", e.last_out)
        t.like(res["a@dst.test"]["text"], "^Host or domain name not found", "NXDOMAIN text")
        res, _, _ = e.deliver(q1, "elsewhere.example:%d" % port, *d)
        t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"]), ("deferred", "4.4.3"),
              "SERVFAIL/REFUSED: deferred 4.4.3", e.last_out)
        res, _, _ = e.deliver(q1, "loop.test:%d" % port, *d)
        t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"], res["a@dst.test"]["text"]),
              ("bounced", "5.4.6", "mail for loop.test loops back to myself"), "MX pointing at myhostname: 5.4.6")
        s.stop()
        sl = e.server(port=free_port(), greeting="220 %s ESMTP" % ME)
        res, _, _ = e.deliver(q1, hop(sl))
        t.is_((res["a@dst.test"]["status"], res["a@dst.test"]["dsn"]), ("bounced", "5.4.6"),
              "server greeting with our own name: 5.4.6")

        # TLS verification against the MX name
        ca = cert
        st = e.server(port=free_port(), tls=(cert, key))
        res, _, _ = e.deliver(q1, "tls.test:%d" % st.port, *d, "--tls", "verify", "--cafile", ca)
        t.ok(res["a@dst.test"]["status"] == "sent" and st.sessions[-1]["tls"],
             "tls verify: right CA and MX name: delivered", e.last_out)
        res, _, _ = e.deliver(q1, "badtls.test:%d" % st.port, *d, "--tls", "verify", "--cafile", ca)
        t.ok(res["a@dst.test"]["status"] == "deferred" and res["a@dst.test"]["dsn"] == "4.7.5"
             and "not verified" in res["a@dst.test"]["text"], "tls verify: wrong hostname: deferred 4.7.5",
             e.last_out)
        other_dir = os.path.join(e.dir, "other")
        os.mkdir(other_dir)
        other_ca, _ = make_cert(other_dir, "mx.tls.test")
        res, _, _ = e.deliver(q1, "tls.test:%d" % st.port, *d, "--tls", "verify", "--cafile", other_ca)
        t.is_(res["a@dst.test"]["status"], "deferred", "tls verify: untrusted CA: deferred")
        res, _, _ = e.deliver(q1, "tls.test:%d" % st.port, *d, "--tls", "secure", "--cafile", ca)
        t.is_(res["a@dst.test"]["status"], "sent", "tls secure: mx.tls.test matches dot-nexthop .tls.test",
              e.last_out)
        res, _, _ = e.deliver(q1, "badtls.test:%d" % st.port, *d, "--tls", "secure", "--cafile", ca)
        t.is_(res["a@dst.test"]["status"], "deferred",
              "tls secure: certificate for mx.tls.test does not match nexthop badtls.test: deferred")
    finally:
        dns.stop()

    # ---- LMTP over a unix socket ----
    sock = os.path.join(e.dir, "lmtp.sock")
    lm = e.server(unix=sock, lmtp=True, rcpt=lambda a: "550 5.1.1 unknown user" if a.startswith("c") else "250 Ok",
                dot=["250 2.0.0 <a@dst.test> saved", "452 4.2.2 <b@dst.test> mailbox full"])
    q3 = e.qfile(["a@dst.test", "b@dst.test", "c@dst.test"], BODY)
    res, _, _ = e.deliver(q3, "unix:" + sock, "--lmtp")
    t.is_([(res[r]["status"], res[r]["dsn"]) for r in ("a@dst.test", "b@dst.test", "c@dst.test")],
          [("sent", "2.0.0"), ("deferred", "4.2.2"), ("bounced", "5.1.1")],
          "LMTP: one reply per accepted recipient after DATA", e.last_out)
    t.ok(lm.sessions and lm.sessions[0]["cmds"][0].startswith("LHLO "), "LMTP greets with LHLO")
    t.like(res["a@dst.test"]["relay"], re.escape("[%s]" % sock) + "$", "LMTP relay names the socket")
    res, _, _ = e.deliver(q3, "unix:" + os.path.join(e.dir, "missing.sock"), "--lmtp")
    t.like(res["a@dst.test"]["text"], "^connect to .*missing.sock: No such file or directory$",
           "LMTP: missing socket deferred")

    # ---- connection cache ----
    s = e.server()
    res, stats, allres = e.deliver(q1, hop(s), "--repeat", "3", "--cache-time", "1", "--linger")
    t.is_([r["status"] for r in allres.get("a@dst.test", [])], ["sent"] * 3, "three jobs delivered", e.last_out)
    t.is_(len(s.sessions), 1, "three jobs to one next hop share one connection")
    t.like(stats, r"connections=1 reused=2", "client counts 2 reuses")
    t.ok(s.sessions and "RSET" in s.sessions[0]["cmds"] and wait_for(lambda: s.sessions[0]["quit"], timeout=30),
         "RSET between jobs, QUIT when the cache time is over", s.sessions[0]["cmds"] if s.sessions else None)
    s = e.server(mail_421_after=1)
    res, stats, allres = e.deliver(q1, hop(s), "--repeat", "2", "--cache-time", "2")
    t.is_([r["status"] for r in allres.get("a@dst.test", [])], ["sent"] * 2,
          "a cached connection that fails at MAIL: the job goes to a new connection", e.last_out)
    t.is_(len(s.sessions), 2, "two connections were used")

    e.finish(t)


if __name__ == "__main__":
    main()
