"""smtp_header_checks, smtp_mime_header_checks, smtp_nested_header_checks and smtp_body_checks:
the SMTP client changes what it sends, as Postfix's smtp(8) does, with its restricted actions
(WARN, INFO, REPLACE, PREPEND, STRIP, IGNORE, DUNNO/OK; anything else is logged as unsupported and
the line goes out unchanged), per transport (a master.cf smtp service's -o overrides), MIME-aware
(a part's headers, an attached message's headers), with the queue file itself left as it was; the
classic use: removing the Received header a submission client left. A table that fails defers
the delivery."""
import os

from harness import Petrel, Tap, wait_for
from smtpfilter import SmtpFilter

t = Tap(timeout=300)

SMTP_HEADER_CHECKS = r"""
/^Received: from submission-client/   IGNORE
/^X-Strip:/                           STRIP stripped on the way out
/^X-Replace: (.*)/                    REPLACE X-Replaced: $1
/^Subject: (.*)prepend/               PREPEND X-Prepended: $1
/^Subject: warn/                      WARN looked
/^Subject: reject/                    REJECT not for the client
/^X-Pass:/                            PASS trusted
/^Content-Type:.*name="secret/        REPLACE Content-Type: application/octet-stream; name="redacted"
"""

SMTP_NESTED_CHECKS = r"""
/^X-Inner-Secret:/   IGNORE
"""

SMTP_BODY_CHECKS = r"""
/^password: (.*)$/    REPLACE password: [removed]
/^drop this line$/    IGNORE
/^hold$/              HOLD
"""

ALT_CHECKS = r"""
/^X-Alt:/   IGNORE
"""

LMTP_CHECKS = r"""
/^X-Lmtp-Secret:/   IGNORE
/^Subject: (.*)/    REPLACE Subject: [lmtp] $1
"""

SLOW = r"""
/^Subject: (a+)+$/   IGNORE
"""

QMGR = "qmgr unix n - n 300 1 qmgr\n"
sink = SmtpFilter()          # a next hop that keeps what it gets
lmtp_sink = SmtpFilter(lmtp=True)
with Petrel(t, main_cf={}, start=False) as p:
    hc = p.write_file("smtp_header_checks", SMTP_HEADER_CHECKS)
    nc = p.write_file("smtp_nested_checks", SMTP_NESTED_CHECKS)
    bc = p.write_file("smtp_body_checks", SMTP_BODY_CHECKS)
    alt = p.write_file("alt_checks", ALT_CHECKS)
    slow = p.write_file("slow.pcre", SLOW)
    lc = p.write_file("lmtp_checks", LMTP_CHECKS)
    conf = dict(p.settings)
    conf.update({
        "relay_domains": "remote.test alt.test slow.test lmtp.test",
        "transport_maps": "inline:{ {remote.test = smtp:[127.0.0.1]:%d}, {alt.test = alt:[127.0.0.1]:%d}, "
                          "{slow.test = slow:[127.0.0.1]:%d}, {lmtp.test = lmtp:inet:127.0.0.1:%d} }"
                          % (sink.port, sink.port, sink.port, lmtp_sink.port),
        "lmtp_header_checks": "regexp:" + lc,
        "smtp_header_checks": "regexp:" + hc,
        "smtp_nested_header_checks": "regexp:" + nc,
        # Postfix's default for it is empty: MIME headers are then checked by nothing.
        "smtp_mime_header_checks": "$smtp_header_checks",
        "smtp_body_checks": "regexp:" + bc,
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "maillog_file": p.log_path,
    })
    p.write_main_cf(conf)
    master = p.master_cf + "smtp unix - - n - - smtp\n" + "lmtp unix - - n - - lmtp\n"
    master += ("alt unix - - n - - smtp\n  -o smtp_header_checks=regexp:%s\n  -o smtp_body_checks=\n"
               "  -o smtp_mime_header_checks=\n" % alt)
    master += "slow unix - - n - - smtp\n  -o smtp_header_checks=pcre:%s\n" % slow
    master += QMGR
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(master)
    p._chown()
    p.start()

    def relay(body, rcpt="r@remote.test", ehlo="client.example.org"):
        from harness import Smtp
        c = Smtp(p.port)
        c.ehlo(ehlo)
        c.cmd("MAIL FROM:<sender@example.org>")
        c.cmd("RCPT TO:<%s>" % rcpt)
        c.cmd("DATA")
        c.send(body.encode() + b"\r\n.\r\n")
        reply = c.read_reply()
        c.close()
        return reply.split()[-1]

    def sent(tag):
        from harness import wait_for
        got = wait_for(lambda: [tx["data"] for tx in sink.transactions() if tx["data"] and tag.encode() in tx["data"]],
                       timeout=60)
        return got[0] if got else b""

    qid = relay("Subject: do prepend\r\nX-Strip: a\r\nX-Replace: b\r\nX-Keep: c\r\n\r\npassword: hunter2\r\n"
                "drop this line\r\nkept line\r\nbody client edits\r\n", ehlo="submission-client.example")
    data = sent("body client edits")
    t.ok(data != b"", "the message reaches the next hop")
    t.ok(b"Received: from submission-client" not in data, "IGNORE: the submission client's Received header is gone",
         data[:300])
    t.ok(b"X-Prepended: do \r\nSubject: do prepend\r\n" in data, "PREPEND")
    t.ok(b"X-Strip" not in data and b"X-Replaced: b\r\n" in data and b"X-Keep: c\r\n" in data, "STRIP, REPLACE")
    t.ok(b"password: [removed]\r\n" in data and b"hunter2" not in data and b"drop this line" not in data and
         b"kept line\r\n" in data, "body REPLACE and IGNORE")
    t.ok(p.wait_log(r"%s: strip: header X-Strip: a: stripped on the way out" % qid) is not None,
         "logged as Postfix's smtp logs it (queue ID, action, line, text)")
    t.ok(p.wait_log(r"%s: replace: body password: hunter2: password: \[removed\]" % qid) is not None,
         "body actions too")
    def holds_secret():
        for f in p.queue_files():
            try:
                if b"hunter2" in open(f, "rb").read():
                    return True
            except FileNotFoundError:
                pass   # removed while we looked
        return False
    # The queue file goes once the delivery is recorded, a moment after the
    # peer has the message.
    t.ok(wait_for(lambda: not holds_secret(), timeout=30), "(the queue file is gone after delivery)")

    qid = relay("Subject: warn me\r\n\r\nhold\r\nbody warn")
    data = sent("body warn")
    t.ok(b"Subject: warn me\r\n" in data and b"\r\nhold\r\n" in data, "WARN and an unsupported action leave the line")
    t.ok(p.wait_log(r"%s: warning: header Subject: warn me: looked" % qid) is not None, "WARN is logged")
    t.ok(p.wait_log(r"warning: unsupported command in smtp_body_checks map: HOLD") is not None,
         "HOLD is unsupported in smtp_body_checks: warned, line sent")
    qid = relay("Subject: reject me\r\n\r\nbody reject")
    data = sent("body reject")
    t.ok(b"Subject: reject me\r\n" in data, "REJECT is unsupported in the SMTP client: the message goes out")
    t.ok(p.wait_log(r"%s: to=<r@remote\.test>, .*status=sent" % qid) is not None, "and is delivered")
    t.ok(p.wait_log(r"warning: unsupported command in smtp_header_checks map: REJECT not for the client") is not None,
         "with Postfix's warning")
    # PASS ends cleanup's checks (and the milters), not the client's: Postfix's
    # smtp(8) does not know it (hbc_action), so the checks go on after it.
    qid = relay("Subject: pass case\r\nX-Pass: yes\r\nX-Strip: after pass\r\n\r\nbody pass")
    data = sent("body pass")
    t.ok(b"X-Pass: yes\r\n" in data and b"X-Strip" not in data,
         "PASS is unsupported in the SMTP client: its line goes out and a later header is still checked", data[:300])
    t.ok(p.wait_log(r"warning: unsupported command in smtp_header_checks map: PASS trusted") is not None,
         "  with Postfix's warning")

    mime = ("Subject: parts\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n--p\r\n"
            "Content-Type: application/pdf; name=\"secret-plan.pdf\"\r\n\r\nJVBERi0=\r\n--p\r\n"
            "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nX-Inner-Secret: 42\r\n\r\ninner body\r\n--p--\r\n"
            "body mime client\r\n")
    relay(mime)
    data = sent("body mime client")
    t.ok(b'Content-Type: application/octet-stream; name="redacted"\r\n' in data and b"secret-plan" not in data,
         "smtp_mime_header_checks see a part's Content-Type", data)
    t.ok(b"X-Inner-Secret" not in data and b"Subject: inner\r\n" in data,
         "smtp_nested_header_checks see an attached message's headers", data)

    qid = relay("Subject: plain\r\nContent-Type: text/plain; name=\"secret.txt\"\r\n\r\nbody no mime checks",
                rcpt="r@alt.test")
    data = sent("body no mime checks")
    t.ok(b'name="secret.txt"' in data, "with smtp_mime_header_checks empty (the alt transport) MIME headers are "
         "checked by nothing, as in Postfix", data)

    relay("Subject: alt\r\nX-Alt: 1\r\nX-Strip: 2\r\n\r\npassword: p\r\nbody alt transport", rcpt="r@alt.test")
    data = sent("body alt transport")
    t.ok(b"X-Alt" not in data and b"X-Strip: 2\r\n" in data and b"password: p\r\n" in data,
         "a master.cf smtp service reads its own -o smtp_header_checks and smtp_body_checks")

    relay("Subject: to lmtp\r\nX-Lmtp-Secret: 1\r\nX-Strip: 2\r\n\r\npassword: p\r\nbody lmtp", rcpt="r@lmtp.test")
    from harness import wait_for
    got = wait_for(lambda: [tx["data"] for tx in lmtp_sink.transactions() if tx["data"] and b"body lmtp" in tx["data"]],
                   timeout=60)
    data = got[0] if got else b""
    t.ok(b"Subject: [lmtp] to lmtp\r\n" in data and b"X-Lmtp-Secret" not in data, "the LMTP client applies "
         "lmtp_header_checks", data)
    t.ok(b"X-Strip: 2\r\n" in data and b"password: p\r\n" in data,
         "and not smtp_header_checks or smtp_body_checks (Postfix's lmtp_* names)", data)

    qid = relay("Subject: " + "a" * 40 + "b\r\n\r\nbody slow", rcpt="r@slow.test")
    t.ok(p.wait_log(r"warning: %s: smtp header checks lookup error" % qid) is not None,
         "a table that fails is logged")
    t.ok(p.wait_log(r"%s: to=<r@slow\.test>, .*status=deferred \(local data error while talking to "
                    r"127\.0\.0\.1\[127\.0\.0\.1\]\)" % qid) is not None, "and defers the delivery (nothing is sent)")
    t.ok(not [tx for tx in sink.transactions() if tx["data"] and b"body slow" in tx["data"]],
         "the next hop got nothing")
sink.stop()
lmtp_sink.stop()
t.done()
