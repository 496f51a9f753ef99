"""The before-queue content filter (smtpd_proxy_filter, Postfix's SMTPD_PROXY_README) against an
SMTP filter of our own (t/integration/smtpfilter.py) that answers each stage as told: the normal
path (the filter's reply to "." is the client's, the message delivered once, XFORWARD with the
client's identity, the filter connected only for a recipient our checks accept), a filter that
refuses at each stage (its reply passed on as it is), one that is down, one that hangs
(smtpd_proxy_timeout), one that answers 2xx where a refusal belongs or sends garbage (451 4.3.0,
never its text), speed_adjust (nothing reaches the filter before "."), a big message through the
filter (back pressure), and a server that keeps serving after each failure."""
import os
import re
import time

from harness import Petrel, Smtp, Tap, free_port, refused_port, maildir_messages, unread_at, wait_for
from smtpfilter import SmtpFilter

t = Tap(timeout=400)

QMGR = "qmgr unix n - n 300 1 qmgr\n"
ret_port = free_port()
good = SmtpFilter(reinject_port=ret_port)
speedy = SmtpFilter(reinject_port=ret_port)
dead_port = refused_port()
stages = {
    "greeting": SmtpFilter(replies={"connect": "554 5.3.2 filter closed"}),
    "ehlo": SmtpFilter(replies={"ehlo": "502 5.5.1 no EHLO"}),
    "mail": SmtpFilter(replies={"mail": "550 5.7.1 Sender refused by the filter"}),
    "rcpt": SmtpFilter(replies={"rcpt": "550 5.1.1 Recipient refused by the filter"}),
    "data": SmtpFilter(replies={"data": "554 5.7.0 No data today"}),
    "dot": SmtpFilter(replies={"dot": "550 5.7.1 Message refused by the filter"}),
    "dot4": SmtpFilter(replies={"dot": "451 4.7.1 Filter says later"}),
    "rcpt2xx": SmtpFilter(replies={"data": "250 2.0.0 data is fine"}),
    "garbage": SmtpFilter(replies={"rcpt": "2x0 what"}),
    "hang": SmtpFilter(hang="dot"),
    "speedrej": SmtpFilter(replies={"rcpt": "550 5.1.1 Nobody here"}),
}
ports = {name: free_port() for name in list(stages) + ["dead", "speed", "actions"]}

with Petrel(t, main_cf={}, start=False) as p:
    mail = p.virtual_mailboxes({"u@vmail.test": "vmail.test/u/"}, {
        "smtpd_proxy_timeout": "3s",
        "maillog_file": p.log_path,
    })

    def listener(port, *opts):
        return "127.0.0.1:%d inet n - n - - smtpd\n" % port + "".join("  -o %s\n" % o for o in opts)

    master = listener(p.port, "smtpd_proxy_filter=127.0.0.1:%d" % good.port, "smtpd_proxy_ehlo=before.filter.test")
    for name, f in stages.items():
        opts = ["smtpd_proxy_filter=127.0.0.1:%d" % f.port]
        if name == "speedrej":
            opts.append("smtpd_proxy_options=speed_adjust")
        master += listener(ports[name], *opts)
    master += listener(ports["dead"], "smtpd_proxy_filter=127.0.0.1:%d" % dead_port)
    master += listener(ports["speed"], "smtpd_proxy_filter=inet:127.0.0.1:%d" % speedy.port,
                       "smtpd_proxy_options=speed_adjust")
    master += listener(ret_port, "smtpd_recipient_restrictions=permit_mynetworks,reject", "mynetworks=127.0.0.0/8")
    # Access actions that need a queue file: unavailable before a proxy filter (Postfix's warning).
    acts = p.write_file("proxy_actions", "/^u@vmail\\.test$/ REDIRECT nobody@vmail.test\n")
    hold = p.write_file("proxy_hold", "/^sender@example\\.org$/ HOLD\n")
    master += listener(ports["actions"], "smtpd_proxy_filter=127.0.0.1:%d" % good.port,
                       "smtpd_sender_restrictions=check_sender_access,regexp:%s" % hold,
                       "smtpd_recipient_restrictions=check_recipient_access,regexp:%s,permit_mynetworks,reject" % acts)
    master += QMGR
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(master)
    p._chown()
    p.start()

    def inbox():
        return maildir_messages(os.path.join(mail, "vmail.test", "u"))

    def transaction(port, body="Subject: proxied\r\n\r\nbody", rcpts=("u@vmail.test",)):
        """The replies of one transaction: [MAIL, RCPT..., DATA, end of data] (shorter when one fails)."""
        c = Smtp(port, timeout=30)
        c.ehlo()
        replies = [c.cmd("MAIL FROM:<sender@example.org>")]
        for r in rcpts:
            replies.append(c.cmd("RCPT TO:<%s>" % r))
        replies.append(c.cmd("DATA"))
        if c.code == 354:
            c.send(body.encode() + b"\r\n.\r\n")
            replies.append(c.read_reply())
        c.close()
        return replies

    # 1. The normal path.
    rep = transaction(p.port, "Subject: normal\r\n\r\nbody normal proxied",
                      rcpts=("nobody@vmail.test", "u@vmail.test"))
    t.is_(rep[:4], ["250 2.1.0 Ok", "550 5.1.1 <nobody@vmail.test>: Recipient address rejected: User unknown in "
                                    "virtual mailbox table", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"],
          "MAIL, RCPT (refused by our own checks, then accepted by both) and DATA")
    t.like(rep[4], r"^250 2\.0\.0 Ok: queued as \w+$", "the reply to \".\" is the filter's (its reinjection's)")
    after_id = rep[4].split()[-1]
    got = wait_for(lambda: [m for m in inbox() if b"body normal proxied" in m], timeout=60)
    t.is_(len(got), 1, "the message is delivered once")
    m = got[0] if got else b""
    t.ok(b"X-Filtered-By: smtpfilter\n" in m and re.search(rb"Received: from client\.example\.org \(unknown "
                                                          rb"\[127\.0\.0\.1\]\)\n\tby mx\.petrel\.test \(Petrel\) with "
                                                          rb"ESMTP\n\tfor", m),
         "it went through the filter with our Received header (no queue ID: nothing was queued here)", m[:500])
    sess = [s for s in good.sessions if any(tx["data"] and b"body normal proxied" in tx["data"]
                                            for tx in s["transactions"])]
    t.ok(sess and sess[0]["helo"] == "before.filter.test", "EHLO says smtpd_proxy_ehlo")
    t.ok(sess and sess[0]["xforward"] == ["NAME=unknown ADDR=127.0.0.1 PROTO=ESMTP HELO=client.example.org"],
         "XFORWARD tells the filter who the client is", sess and sess[0]["xforward"])
    t.ok(sess and sess[0]["transactions"][0]["rcpts"] == ["RCPT TO:<u@vmail.test>"],
         "only the recipient our checks accepted reached the filter")
    t.ok(p.wait_log(r"proxy-accept: END-OF-MESSAGE: 250 2\.0\.0 Ok: queued as %s; from=<sender@example\.org> "
                    r"to=<u@vmail\.test> proto=ESMTP helo=<client\.example\.org>" % after_id) is not None,
         "logged as Postfix logs it (proxy-accept)")
    before = len(good.sessions)
    rep = transaction(p.port, rcpts=("nobody@vmail.test",))
    t.is_(rep[-1], "554 5.5.1 Error: no valid recipients", "no accepted recipient, no DATA")
    t.is_(len(good.sessions), before, "and the filter was never connected")

    # 2. A filter that refuses, stage by stage.
    def at(name, want, desc, index=None):
        rep = transaction(ports[name])
        got = rep[index] if index is not None else rep[-1]
        t.is_(got, want, desc)

    at("mail", "550 5.7.1 Sender refused by the filter", "the filter's MAIL refusal is the reply to RCPT", 1)
    at("rcpt", "550 5.1.1 Recipient refused by the filter", "its RCPT refusal is passed on", 1)
    at("data", "554 5.7.0 No data today", "its DATA refusal too")
    at("dot", "550 5.7.1 Message refused by the filter", "its refusal of the message too")
    t.ok(p.wait_log(r"proxy-reject: END-OF-MESSAGE: 550 5\.7\.1 Message refused by the filter; "
                    r"from=<sender@example\.org>") is not None, "logged as proxy-reject")
    at("dot4", "451 4.7.1 Filter says later", "a 4xx at the end of data too")

    # 3. Failures are 451 4.3.0, with a warning that says what happened.
    err = "451 4.3.0 Error: queue file write error"
    at("greeting", err, "a greeting refusal: 451 4.3.0", 1)
    t.ok(p.wait_log(r'warning: proxy 127\.0\.0\.1:%d rejected "connection request": "554 5\.3\.2 filter closed"'
                    % stages["greeting"].port) is not None, "with the filter's words in the log")
    at("ehlo", err, "an EHLO refusal: 451 4.3.0", 1)
    at("dead", err, "a filter that is down: 451 4.3.0", 1)
    t.ok(p.wait_log(r"warning: connect to proxy filter 127\.0\.0\.1:%d: Connection refused" % dead_port) is not None,
         "connect failure logged")
    at("rcpt2xx", err, "a 2xx where DATA needs 354: 451 4.3.0, not the filter's text")
    at("garbage", err, "garbage: 451 4.3.0", 1)
    t.ok(p.wait_log(r"warning: received garbage from proxy 127\.0\.0\.1:%d: 2x0 what" % stages["garbage"].port)
         is not None, "garbage is logged")
    began = time.monotonic()
    at("hang", err, "a filter that never answers \".\": 451 4.3.0 after smtpd_proxy_timeout")
    t.ok(time.monotonic() - began < 25, "(it did not wait for ever)")
    t.ok(p.wait_log(r"warning: timeout talking to proxy 127\.0\.0\.1:%d" % stages["hang"].port) is not None,
         "the timeout is logged")
    c = Smtp(ports["hang"])
    t.like(c.ehlo(), r"^250 ", "the server keeps serving after every failure")
    c.close()

    # 4. speed_adjust: the filter hears nothing before ".".
    c = Smtp(ports["speed"], timeout=30)
    c.ehlo()
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<u@vmail.test>"), "250 2.1.5 Ok", "speed_adjust: RCPT answered by us")
    t.is_(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>", "DATA too")
    c.send(b"Subject: speed\r\n\r\n")
    # smtpd has read those bytes (a filter connection would start as it does), then a moment to see none
    wait_for(lambda: not unread_at(ports["speed"]), timeout=15)
    time.sleep(0.3)
    t.is_(len(speedy.sessions), 0, "and the filter has not been connected yet")
    c.send(b"body speed adjusted\r\n.\r\n")
    r = c.read_reply()
    c.close()
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+$", "at \".\" the whole transaction is replayed; its reply is ours")
    t.ok(wait_for(lambda: [m for m in inbox() if b"body speed adjusted" in m], timeout=60),
         "and the message is delivered")
    rep = transaction(ports["speedrej"])
    t.is_(rep[1:], ["250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>", "550 5.1.1 Nobody here"],
          "speed_adjust: a recipient the filter refuses makes the reply to \".\"")

    # 5. A big message through the filter (read as it arrives, with back pressure).
    big = "Subject: big\r\n\r\n" + ("%s\r\n" % ("0123456789" * 7)) * 70000 + "end of the big message"
    rep = transaction(p.port, big)
    t.like(rep[-1], r"^250 2\.0\.0 Ok: queued as \w+$", "a 5 MB message goes through the filter")
    got = wait_for(lambda: [m for m in inbox() if b"end of the big message" in m], timeout=60)
    t.ok(got and got[0].count(b"0123456789" * 7) == 70000, "and arrives whole")

    # 6. HOLD and REDIRECT from access maps are unavailable before a proxy filter.
    rep = transaction(ports["actions"], "Subject: actions\r\n\r\nbody proxy actions")
    t.like(rep[-1], r"^250 2\.0\.0 Ok: queued as \w+$", "access actions before a proxy filter: the filter decides")
    t.ok(p.wait_log(r"warning: access table regexp:\S+proxy_actions: with smtpd_proxy_filter specified, action "
                    r"REDIRECT is unavailable") is not None, "REDIRECT is unavailable, with Postfix's warning")
    t.ok(p.wait_log(r"warning: access table regexp:\S+proxy_hold: with smtpd_proxy_filter specified, action "
                    r"HOLD is unavailable") is not None, "so is HOLD")
    got = wait_for(lambda: [m for m in inbox() if b"body proxy actions" in m], timeout=60)
    t.is_(len(got), 1, "the message reaches its own recipient through the filter, once (not held, not redirected)")

for f in [good, speedy] + list(stages.values()):
    f.stop()
t.done()
