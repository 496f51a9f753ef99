"""The SMTP client's XFORWARD (smtp_send_xforward_command, Postfix's XFORWARD_README): a content
filter that announces XFORWARD is told the message's original client before MAIL FROM, in
Postfix's two commands (NAME ADDR PORT, then PROTO HELO IDENT SOURCE), only the attributes it
announces, xtext-encoded. Shown with petreld as its own filter (the return listener authorized by
smtpd_authorized_xforward_hosts names the original client in Received: and in its log line, with
orig_queue_id), and with a recording filter of our own: the exact commands, nothing without
smtp_send_xforward_command or without the EHLO keyword, a partial keyword list without
PIPELINING, a refused XFORWARD (logged, the mail goes on), and a local submission (SOURCE=LOCAL
only, as Postfix's pickup mail)."""
import os
import re
import subprocess

from harness import TOP_BUILDDIR, Petrel, Smtp, Tap, _runnable_copy, free_port, maildir_messages, wait_for
from smtpfilter import SmtpFilter

t = Tap(timeout=300)

SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
ALL = ("PIPELINING", "8BITMIME", "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE", "ENHANCEDSTATUSCODES")
ret_port = free_port()
full = SmtpFilter(ehlo_keywords=ALL)
partial = SmtpFilter(ehlo_keywords=("8BITMIME", "XFORWARD NAME ADDR PROTO HELO"))
plain = SmtpFilter(ehlo_keywords=("PIPELINING", "8BITMIME"))
refusing = SmtpFilter(ehlo_keywords=ALL, replies={"xforward": "550 5.7.0 Error: insufficient authorization"})
off = SmtpFilter(ehlo_keywords=ALL)
local = SmtpFilter(ehlo_keywords=ALL)
chained = SmtpFilter(ehlo_keywords=ALL)
ports = {name: free_port() for name in ("full", "partial", "plain", "refusing", "off", "chain")}

with Petrel(t, main_cf={}, start=False) as p:
    mail = p.virtual_mailboxes({"u@vmail.test": "vmail.test/u/"}, {
        "maillog_file": p.log_path,
        "command_directory": os.path.dirname(POSTDROP),
    })

    def listener(port, *opts):
        return "127.0.0.1:%d inet n - n - - smtpd\n" % port + "".join("  -o %s\n" % o for o in opts)

    # Petrel as its own content filter: out through xscan, back on ret_port.
    master = listener(p.port, "content_filter=xscan:[127.0.0.1]:%d" % ret_port)
    for name in ("full", "partial", "plain", "refusing"):
        master += listener(ports[name], "content_filter=xscan:[127.0.0.1]:%d" % globals()[name].port)
    master += listener(ports["off"], "content_filter=noxf:[127.0.0.1]:%d" % off.port)
    master += listener(ports["chain"], "content_filter=xscan:[127.0.0.1]:%d" % chained.port,
                       "smtpd_authorized_xforward_hosts=127.0.0.0/8")
    master += listener(ret_port, "content_filter=", "smtpd_recipient_restrictions=permit_mynetworks,reject",
                       "mynetworks=127.0.0.0/8", "smtpd_authorized_xforward_hosts=127.0.0.0/8",
                       "myhostname=filter.petrel.test")   # else the client sees a loop (5.4.6)
    master += "xscan unix - - n - 10 smtp\n  -o smtp_send_xforward_command=yes\n"
    master += "noxf unix - - n - 10 smtp\n"
    master += "pickup unix n - n 1 1 pickup\n  -o content_filter=xscan:[127.0.0.1]:%d\n" % local.port
    master += "qmgr unix n - n 300 1 qmgr\n"
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(master)
    p._chown()
    p.start()

    def send(port, helo, subject):
        c = Smtp(port)
        c.ehlo(helo)
        r = c.send_message("sender@example.org", ["u@vmail.test"], "Subject: %s\r\n\r\nbody %s" % (subject, subject),
                           ehlo=False)
        port_used = c.sock.getsockname()[1]
        c.close()
        m = re.match(r"250 2\.0\.0 Ok: queued as (\S+)", r)
        return (m.group(1) if m else None), port_used

    def inbox():
        return maildir_messages(os.path.join(mail, "vmail.test", "u"))

    def session_of(filt):
        got = wait_for(lambda: [s for s in filt.sessions if s["transactions"]], timeout=30)
        return got[0] if got else {"xforward": [], "transactions": []}

    # 1. Petrel -> Petrel: the return listener names the original client.
    qid, cport = send(p.port, "mx.origin.example", "loop")
    t.ok(qid is not None, "a message for the filter is queued")
    got = wait_for(lambda: [m for m in inbox() if b"body loop" in m], timeout=30)
    t.ok(len(got) == 1, "it comes back from the filter listener and is delivered once", p.log()[-3000:])
    m = got[0] if got else b""
    t.ok(m.count(b"Received: from mx.origin.example (unknown [127.0.0.1])") == 2,
         "both Received: headers name the original client's HELO: XFORWARD reached the return listener", m[:900])
    line = p.wait_log(r"(\w+): client=unknown\[127\.0\.0\.1\], orig_queue_id=%s, "
                      r"orig_client=unknown\[127\.0\.0\.1\]:%d" % (qid, cport))
    t.ok(line is not None, "its log line has orig_queue_id= (the first queue ID) and orig_client= with the port",
         p.log()[-3000:])

    # 2. The exact commands, as Postfix sends them.
    qid, cport = send(ports["full"], "mx.origin.example", "full")
    s = session_of(full)
    # no NAME: the test client has no name ("unknown" is not forwarded, as in Postfix)
    t.is_(s["xforward"], ["ADDR=127.0.0.1 PORT=%d" % cport,
                          "PROTO=ESMTP HELO=mx.origin.example IDENT=%s SOURCE=REMOTE" % qid],
          "a filter announcing every attribute gets two XFORWARD commands before MAIL FROM")
    t.is_(len(s["transactions"]), 1, "  and the transaction follows")

    # xtext: a HELO with '+' and '=' is encoded
    qid, cport = send(ports["partial"], "odd+name=x", "partial")
    s = session_of(partial)
    t.is_(s["xforward"], ["ADDR=127.0.0.1", "PROTO=ESMTP HELO=odd+2Bname+3Dx"],
          "without PIPELINING and with a partial keyword list: only the announced attributes, xtext-encoded")
    t.is_(len(s["transactions"]), 1, "  and the transaction follows")

    qid, cport = send(ports["plain"], "mx.origin.example", "plain")
    s = session_of(plain)
    t.is_(s["xforward"], [], "a server that does not announce XFORWARD gets none")

    qid, cport = send(ports["off"], "mx.origin.example", "off")
    s = session_of(off)
    t.is_(s["xforward"], [], "without smtp_send_xforward_command (the default) nothing is sent")

    # 3. A refused XFORWARD: a warning, and the message goes on (Postfix).
    qid, cport = send(ports["refusing"], "mx.origin.example", "refusing")
    s = session_of(refusing)
    t.is_(len(s["xforward"]), 2, "both XFORWARD commands are sent to the refusing filter")
    t.ok(p.wait_log(r"warning: host 127\.0\.0\.1\[127\.0\.0\.1\]:%d said: 550 5\.7\.0 Error: insufficient "
                    r"authorization \(in reply to XFORWARD name/address command\)" % refusing.port) is not None,
         "a refused XFORWARD is a warning naming the command, as in Postfix", p.log()[-2000:])
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent" %
                    (qid, refusing.port)) is not None, "  and the message is delivered to the filter all the same")

    # 3b. A chain of filters: the original queue ID a filter forwarded is
    # kept with the message and forwarded again (Postfix's log_ident).
    c = Smtp(ports["chain"])
    c.ehlo("filter.example")
    t.like(c.cmd("XFORWARD NAME=mx.origin.example ADDR=192.0.2.7 PORT=4242"), r"^250 ", "a filter's XFORWARD")
    t.like(c.cmd("XFORWARD PROTO=ESMTP HELO=helo.origin.example IDENT=ORIGQID123 SOURCE=REMOTE"), r"^250 ",
           "  with IDENT")
    c.send_message("sender@example.org", ["u@vmail.test"], "Subject: chain\r\n\r\nbody chain", ehlo=False)
    c.close()
    s = session_of(chained)
    t.is_(s["xforward"], ["NAME=mx.origin.example ADDR=192.0.2.7 PORT=4242",
                          "PROTO=ESMTP HELO=helo.origin.example IDENT=ORIGQID123 SOURCE=REMOTE"],
          "the next filter gets the original client and the original queue ID, not ours")

    # 4. Local submission: no client to forward (Postfix's pickup mail), only SOURCE=LOCAL.
    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-f", "sender@vmail.test", "u@vmail.test"),
                       input=b"Subject: local\n\nbody local\n", capture_output=True, timeout=30)
    t.ok(r.returncode == 0, "petrel-sendmail submits a message", r.stderr)
    s = session_of(local)
    t.is_(s["xforward"], ["SOURCE=LOCAL"], "a local submission forwards only SOURCE=LOCAL")

    full.stop()
    partial.stop()
    plain.stop()
    refusing.stop()
    off.stop()
    local.stop()
    chained.stop()
t.done()
