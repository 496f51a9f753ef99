#!/usr/bin/env python3
"""smtpd parameters from the long tail of real Postfix configurations, on
the wire: smtpd_command_filter, smtpd_discard_ehlo_keywords and
smtpd_discard_ehlo_keyword_address_maps (and what the discarded keywords
then refuse), smtpd_per_record_deadline, smtpd_client_message_rate_limit,
smtpd_client_recipient_rate_limit, soft_bounce, and header_size_limit (what
is past it is body: header rewriting stops there). Each bad-input session is
followed by a normal message on a fresh connection."""
import os
import socket
import time

from harness import Petrel, Tap, make_cert, maildir_messages, wait_for

t = Tap(timeout=200)
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"
QMGR = "qmgr unix n - n 300 1 qmgr\n"


def still_serves(p, what):
    c = p.connect()
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: after %s\r\n\r\nstill serving\r\n" % what)
    t.like(r, OK_RE, "%s: a fresh connection still gets its message queued" % what)
    c.cmd("QUIT")
    c.close()


def keywords(c):
    """The EHLO keywords of the last reply (without the greeting line)."""
    return [line[4:].split()[0] for line in c.lines[1:]]


# ---- smtpd_command_filter ----
with Petrel(t, start=False) as p:
    table = p.write_file("command_filter", "/^(RCPT\\s+TO:\\s*<[^>]*>).*$/ $1\n/^XYZZY$/ NOOP\n")
    conf = dict(p.settings)
    conf["smtpd_command_filter"] = "regexp:" + table
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("XYZZY"), "250 2.0.0 Ok", "smtpd_command_filter: a command the table names is replaced (XYZZY -> NOOP)")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test> XBOGUS=1"), "250 2.1.5 Ok",
          "smtpd_command_filter: Postfix's example strips RCPT TO parameters")
    t.ok(p.wait_log(r'replacing command "RCPT TO:<user@petrel.test> XBOGUS=1" with "RCPT TO:<user@petrel.test>"')
         is not None, "the replacement is logged")
    t.is_(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>", "DATA")
    c.send("Subject: filtered\r\n\r\nx\r\n.\r\n")
    t.like(c.read_reply(), OK_RE, "and the message is queued")
    t.is_(c.cmd("NOOP XYZZY"), "250 2.0.0 Ok", "a line the table does not name is left as it is")
    c.close()
    still_serves(p, "command filter")
with Petrel(t) as p:
    c = p.connect()
    c.ehlo()
    t.like(c.cmd("XYZZY"), r"^502 5\.5\.2 ", "without smtpd_command_filter: XYZZY is not a command")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.like(c.cmd("RCPT TO:<user@petrel.test> XBOGUS=1"), r"^555 5\.5\.4 ", "and RCPT TO parameters are checked")
    c.close()

# ---- smtpd_discard_ehlo_keywords ----
with Petrel(t, main_cf={"smtpd_discard_ehlo_keywords": "pipelining, dsn, chunking, etrn, nosuchword",
                        "smtpd_discard_ehlo_keyword_address_maps":
                            "inline:{ {127.0.0.2 = size, vrfy}, {127.0.0.3 = silent-discard, 8bitmime} }"}) as p:
    c = p.connect()
    c.ehlo()
    t.is_(c.code, 250, "EHLO is answered")
    words = keywords(c)
    t.ok("PIPELINING" not in words and "DSN" not in words and "CHUNKING" not in words and "ETRN" not in words,
         "smtpd_discard_ehlo_keywords: PIPELINING, DSN, CHUNKING and ETRN are not announced", words)
    t.ok("SIZE" in words and "8BITMIME" in words and "ENHANCEDSTATUSCODES" in words,
         "the others still are (an unknown word is ignored, as in Postfix)", words)
    t.ok(p.wait_log(r"discarding EHLO keywords: ETRN PIPELINING DSN CHUNKING") is not None,
         "logged with Postfix's words")
    t.is_(c.cmd("MAIL FROM:<sender@example.org> RET=HDRS"), "501 5.7.1 DSN support is disabled",
          "MAIL FROM with RET=: 501 5.7.1, as Postfix answers once DSN is discarded")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test> NOTIFY=NEVER"), "501 5.7.1 DSN support is disabled",
          "RCPT TO with NOTIFY=: the same")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "250 2.1.5 Ok", "a plain RCPT TO is accepted")
    t.is_(c.cmd("BDAT 5 LAST"), "521 5.5.1 Error: command not implemented",
          "BDAT without CHUNKING: 521, the session ends (what follows would be content)")
    t.ok(c.closed(), "and the server hangs up")
    c.close()
    still_serves(p, "discarded BDAT")
    c = p.connect(source="127.0.0.2")
    c.ehlo()
    words = keywords(c)
    t.ok("SIZE" not in words and "VRFY" not in words and "PIPELINING" in words and "DSN" in words,
         "smtpd_discard_ehlo_keyword_address_maps: this client's entry replaces the list", words)
    t.ok(p.wait_log(r"discarding EHLO keywords: SIZE VRFY") is not None, "logged")
    c.close()
    c = p.connect(source="127.0.0.3")
    c.ehlo()
    words = keywords(c)
    t.ok("8BITMIME" not in words and "PIPELINING" in words, "silent-discard: discarded", words)
    c.cmd("QUIT")
    c.close()
    # the session's last line: every line of its EHLO would be before it
    p.wait_log(r"disconnect from \S+\[127\.0\.0\.3\]")
    t.ok("discarding EHLO keywords: 8BITMIME" not in p.log(), "silent-discard: not logged")

with Petrel(t, start=False) as p:
    cert, key = make_cert(p.dir)
    os.chmod(key, 0o644)
    conf = dict(p.settings)
    conf.update({"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key,
                 "smtpd_discard_ehlo_keywords": "starttls"})
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    c.ehlo()
    t.ok("STARTTLS" not in keywords(c), "STARTTLS discarded: not announced", keywords(c))
    t.is_(c.cmd("STARTTLS"), "502 5.5.1 Error: command not implemented", "and refused as Postfix refuses it")
    c.close()
    still_serves(p, "discarded STARTTLS")

# ---- smtpd_per_record_deadline ----
for deadline in ("yes", "no"):
    # smtpd_timeout 5 s, a byte every half second: ten times the gap, so a
    # loaded machine's pause between two bytes does not end the "no" case,
    # while the whole line (12 s) still takes longer than it for "yes"
    with Petrel(t, main_cf={"smtpd_timeout": "5s", "smtpd_per_record_deadline": deadline}) as p:
        c = p.connect()
        c.ehlo()
        # a command that trickles in a byte every half second: each read is within
        # smtpd_timeout, the whole line is not
        reply = None
        c.sock.settimeout(0.1)
        for ch in "NOOP trickling in slowly":
            c.send(ch)
            time.sleep(0.4)
            try:
                data = c.sock.recv(4096)
                if data:
                    reply = data.decode().strip()
                    break
            except (socket.timeout, TimeoutError):
                pass
        if deadline == "yes":
            t.is_(reply, "421 4.4.2 mx.petrel.test Error: timeout exceeded",
                  "smtpd_per_record_deadline = yes: a command that trickles in for longer than smtpd_timeout: 421")
            t.ok(p.wait_log(r"timeout after EHLO from unknown\[127\.0\.0\.1\]") is not None, "logged as a timeout")
            still_serves(p, "per-record deadline")
        else:
            c.sock.settimeout(10)
            c.send("\r\n")
            t.is_((reply, c.read_reply()), (None, "250 2.0.0 Ok"),
                  "smtpd_per_record_deadline = no: each read restarts smtpd_timeout")
        c.close()

# ---- smtpd_client_message_rate_limit, smtpd_client_recipient_rate_limit ----
with Petrel(t, main_cf={"smtpd_client_message_rate_limit": "2", "smtpd_client_recipient_rate_limit": "3",
                        "smtpd_client_event_limit_exceptions": ""}) as p:
    c = p.connect()
    c.ehlo()
    replies = []
    for i in range(3):
        replies.append(c.cmd("MAIL FROM:<sender@example.org>"))
        c.cmd("RSET")
    t.is_(replies, ["250 2.1.0 Ok", "250 2.1.0 Ok", "450 4.7.1 Error: too much mail from 127.0.0.1"],
          "smtpd_client_message_rate_limit 2: the third MAIL FROM in the time unit gets Postfix's 450 4.7.1")
    t.ok(p.wait_log(r"warning: Message delivery request rate limit exceeded: 3 from unknown\[127\.0\.0\.1\] "
                    r"for service ") is not None, "logged as Postfix logs it")
    c.close()
with Petrel(t, main_cf={"smtpd_client_recipient_rate_limit": "3", "smtpd_client_event_limit_exceptions": ""}) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<sender@example.org>")
    replies = [c.cmd("RCPT TO:<user%s@petrel.test>" % n) for n in ("", "2", "3", "")]
    t.is_(replies, ["250 2.1.5 Ok"] * 3 + ["450 4.7.1 Error: too many recipients from 127.0.0.1"],
          "smtpd_client_recipient_rate_limit 3: the fourth RCPT TO gets 450 4.7.1")
    t.ok(p.wait_log(r"warning: Recipient address rate limit exceeded: 4 from unknown\[127\.0\.0\.1\]") is not None,
         "logged")
    c.close()
with Petrel(t, main_cf={"smtpd_client_message_rate_limit": "1"}) as p:
    c = p.connect()
    c.ehlo()
    replies = []
    for i in range(3):
        replies.append(c.cmd("MAIL FROM:<sender@example.org>"))
        c.cmd("RSET")
    t.is_(replies, ["250 2.1.0 Ok"] * 3, "clients in smtpd_client_event_limit_exceptions ($mynetworks) are not limited")
    c.close()

# ---- soft_bounce ----
for soft, want in (("yes", "450 4.1.1 <nobody-here@petrel.test>: Recipient address rejected: User unknown in local "
                           "recipient table"),
                   ("no", "550 5.1.1 <nobody-here@petrel.test>: Recipient address rejected: User unknown in local "
                          "recipient table")):
    with Petrel(t, main_cf={"soft_bounce": soft}) as p:
        c = p.connect()
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.org>")
        t.is_(c.cmd("RCPT TO:<nobody-here@petrel.test>"), want, "soft_bounce = %s: %s" % (soft, want[:9]))
        c.close()
        still_serves(p, "soft_bounce = " + soft)

# ---- header_size_limit ----
for limit, rewritten in (("2048", False), ("102400", True)):
    with Petrel(t, extra_services=QMGR, start=False) as p:
        boxes = p.virtual_mailboxes({"a@vmail.test": "a/"}, {
            "sender_canonical_maps": "inline:{ {old@example.org = new@example.org} }", "header_size_limit": limit})
        p.start()
        c = p.connect()
        pad = "X-Pad: " + "\r\n ".join(["p" * 70] * 40) + "\r\n"   # ~2.9 KB of header before From:
        r = c.send_message("old@example.org", ["a@vmail.test"], pad + "From: <old@example.org>\r\nSubject: big\r\n\r\nx\r\n")
        t.like(r, OK_RE, "header_size_limit %s: queued" % limit)
        msgs = wait_for(lambda: maildir_messages(os.path.join(boxes, "a")), timeout=60)
        body = msgs[0] if msgs else b""
        if rewritten:
            t.ok(b"From: <new@example.org>" in body, "header_size_limit %s: From: is a header, rewritten" % limit)
        else:
            t.ok(b"From: <old@example.org>" in body and b"From: <new@example.org>" not in body,
                 "header_size_limit %s: From: past the limit is body, not rewritten (as Postfix)" % limit)
        c.close()

t.done()
