"""Routing, the queue manager and delivery, end to end: virtual Maildir, relay over SMTP to a
real next hop (Postfix's smtp-sink), deferral and retry with petrelctl queue flush, bounces
(multipart/report) to the sender, never to <>, expiry, aliases, and pflogsumm on the log."""
import email
import os
import re
import subprocess

from harness import Petrel, Tap, refused_port, revive_port, maildir_messages, wait_for
from serverlib import Sink

t = Tap(timeout=400)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
sink = Sink(options=("-c",))
dead_port = refused_port()
base_conf = {
    "virtual_mailbox_domains": "vmail.test",
    "virtual_alias_maps": "inline:{ {alias@vmail.test = u@vmail.test, r@remote.test}, {loop1@vmail.test = loop2@vmail.test}, {loop2@vmail.test = loop1@vmail.test} }",
    "transport_maps": "inline:{ {remote.test = smtp:[127.0.0.1]:%d}, {dead.test = smtp:[127.0.0.1]:%d} }" % (sink.port, dead_port),
    "relay_domains": "remote.test dead.test",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "queue_run_delay": "1s",
}

with Petrel(t, main_cf=dict(base_conf), extra_services=QMGR, start=False) as p:
    mail = p.make_dir()
    conf = dict(p.settings)
    conf["virtual_mailbox_base"] = mail
    conf["virtual_mailbox_maps"] = "inline:{ {u@vmail.test = vmail.test/u/}, {v@vmail.test = vmail.test/v/} }"
    # Bounces (4 and 5) need an unknown user past smtpd, as with Postfix's
    # check turned off; test_recipient_validation.py tests the check itself.
    conf["smtpd_reject_unlisted_recipient"] = "no"
    conf["maillog_file"] = p.log_path
    p.write_main_cf(conf)
    p.start()
    status = p.petrelctl("status")
    t.like(status.stdout, r"queue manager pid \d+", "the master runs the queue manager from master.cf's qmgr line")

    # 1. Virtual Maildir delivery.
    c = p.connect()
    reply = c.send_message("sender@example.org", ["u@vmail.test"], "Subject: to maildir\r\n\r\nhello maildir\r\n")
    qid = reply.split()[-1]
    msgs = wait_for(lambda: maildir_messages(os.path.join(mail, "vmail.test/u")))
    t.is_(len(msgs), 1, "a message for a virtual mailbox lands in its Maildir (new/)")
    m = msgs[0] if msgs else b""
    t.ok(m.startswith(b"Return-Path: <sender@example.org>\n"), "with Return-Path first")
    t.ok(b"Delivered-To: u@vmail.test\n" in m, "and Delivered-To")
    t.ok(b"\r\n" not in m and b"hello maildir\n" in m, "stored with LF line ends")
    t.ok(wait_for(lambda: p.wait_log(r"%s: removed" % qid, timeout=0.1)) is not None, "the queue file is removed after delivery")
    t.like(p.log(), r"petrel/qmgr\[\d+\]: %s: from=<sender@example\.org>, size=\d+, nrcpt=1 \(queue active\)" % qid,
           "qmgr logs from=, size=, nrcpt= (queue active)")
    t.like(p.log(), r"petrel/virtual\[\d+\]: %s: to=<u@vmail\.test>, relay=virtual, delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, status=sent \(delivered to maildir\)" % qid,
           "the delivery is logged in Postfix's shape")

    # 2. Relay over SMTP to a real next hop.
    reply = c.send_message("sender@example.org", ["r@remote.test"], "Subject: remote\r\n\r\nover smtp\r\n", ehlo=False)
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"petrel/smtp\[\d+\]: %s: to=<r@remote\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent \(250 " % (qid, sink.port)) is not None,
         "a relayed message is sent to the next hop (smtp-sink) and logged")
    t.ok(p.wait_log(r"%s: removed" % qid) is not None, "and removed from the queue")

    # 3. Deferral, retry, flush.
    reply = c.send_message("sender@example.org", ["d@dead.test"], "Subject: later\r\n\r\nretry me\r\n", ehlo=False)
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"%s: to=<d@dead\.test>, .*status=deferred \(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: Connection refused\)" % (qid, dead_port)) is not None,
         "a refused connection defers, with Postfix's reason")
    t.ok(wait_for(lambda: any(f.endswith("/" + qid) for f in p.queue_files("deferred"))), "the message waits in deferred/")
    listing = p.petrelctl("queue", "list").stdout
    t.like(listing, r"\(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: Connection refused\)" % dead_port,
           "petrelctl queue list shows the deferral reason")
    revive_port(dead_port)
    late_sink = Sink(dead_port, options=("-c",))
    r = p.petrelctl("queue", "flush")
    t.is_(r.returncode, 0, "petrelctl queue flush")
    t.ok(p.wait_log(r"%s: to=<d@dead\.test>, .*status=sent" % qid) is not None,
         "after the next hop comes back, the flushed message is delivered")
    late_sink.stop()

    # 4. Bounce to the sender (a local virtual mailbox), multipart/report.
    reply = c.send_message("v@vmail.test", ["nobody@vmail.test"], "Subject: bounce me\r\n\r\nno such user\r\n", ehlo=False)
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"%s: to=<nobody@vmail\.test>, relay=none, .*dsn=5\.1\.1, status=bounced \(<nobody@vmail\.test>: User unknown in virtual mailbox table\)" % qid) is not None,
         "an unknown virtual user bounces 5.1.1")
    t.ok(p.wait_log(r"%s: sender non-delivery notification: \w+" % qid) is not None, "a non-delivery notification is queued")
    dsns = wait_for(lambda: maildir_messages(os.path.join(mail, "vmail.test/v")))
    t.is_(len(dsns), 1, "the sender receives the bounce")
    if dsns:
        parsed = email.message_from_bytes(dsns[0])
        t.is_(parsed.get_content_type(), "multipart/report", "the bounce is multipart/report")
        t.is_(parsed.get_param("report-type"), "delivery-status", "report-type=delivery-status")
        parts = [x.get_content_type() for x in parsed.walk()]
        t.ok("message/delivery-status" in parts, "with a message/delivery-status part")
        t.like(dsns[0].decode("utf-8", "replace"), r"Final-Recipient: rfc822; ?nobody@vmail\.test", "naming the failed recipient")
        t.like(dsns[0].decode("utf-8", "replace"), r"Status: 5\.1\.1", "and its status")
        t.like(dsns[0].decode(), r"Return-Path: <>", "sent with the null sender")

    # 5. A bounce with a null sender is never returned to <>; with Postfix's
    # default notify_classes (no 2bounce) nobody else hears of it either
    # (test_expiry.py and test_faults_notices.py send it to the postmaster).
    reply = c.send_message("", ["nobody2@vmail.test"], "Subject: null sender\r\n\r\nx\r\n", ehlo=False)
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"%s: undeliverable bounce discarded \(notify_classes has neither 2bounce nor bounce\)" % qid)
         is not None, "a failed message from <> is not returned to <>; without 2bounce it is discarded, as Postfix does")

    # 6. Alias expansion and loops.
    reply = c.send_message("sender@example.org", ["alias@vmail.test"], "Subject: alias\r\n\r\nfan out\r\n", ehlo=False)
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, orig_to=<alias@vmail\.test>, relay=virtual" % qid) is not None,
         "a virtual alias expands to a mailbox (orig_to logged)")
    t.ok(p.wait_log(r"%s: to=<r@remote\.test>, orig_to=<alias@vmail\.test>, relay=127" % qid) is not None,
         "and to a remote address")
    reply = c.send_message("sender@example.org", ["loop1@vmail.test"], "Subject: loop\r\n\r\nx\r\n", ehlo=False)
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"%s: to=<loop1@vmail\.test>.*status=(bounced|sent)" % qid) is not None, "an alias loop ends (no endless expansion)")
    c.close()

    # 7. pflogsumm reads the log. Deliveries may still be logged meanwhile (the
    # bounces, the remote copies): it reads the very text the counts below are
    # taken from, not the file a moment earlier or later.
    log = p.log()
    log = log[:log.rfind("\n") + 1]   # whole lines only
    out = subprocess.run(["pflogsumm", "--syslog-name=petrel"], input=log, capture_output=True, text=True).stdout
    received = int(re.search(r"^\s*(\d+)\s+received", out, re.M).group(1))
    delivered = int(re.search(r"^\s*(\d+)\s+delivered", out, re.M).group(1))
    bounced = int(re.search(r"^\s*(\d+)\s+bounced", out, re.M).group(1))
    deferred = int(re.search(r"^\s*(\d+)\s+deferred", out, re.M).group(1))
    t.is_(received, len(re.findall(r"petrel/smtpd\[\d+\]: \w+: client=", log)), "pflogsumm: received = messages accepted by smtpd")
    t.is_(delivered, len(re.findall(r"status=sent", log)), "pflogsumm: delivered = status=sent lines")
    t.is_(bounced, len(re.findall(r"status=bounced", log)), "pflogsumm: bounced = status=bounced lines")
    t.ok(deferred >= 1, "pflogsumm: the deferral is counted")

sink.stop()
t.done()
