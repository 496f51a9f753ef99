#!/usr/bin/env python3
"""Queue manager and local delivery parameters from the long tail of real
Postfix configurations: recipient_bcc_maps, virtual_mailbox_limit and
mailbox_size_limit (a delivery that would make the file bigger bounces
5.2.2, the file is left as it was; both checked against
message_size_limit at load), notify_classes with bounce_notice_recipient
and delay_notice_recipient (the postmaster's copies)."""
import os
import subprocess

from harness import PETRELD, Petrel, Tap, refused_port, maildir_messages as maildir, wait_for

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"


def setup(p, extra):
    conf = {"minimal_backoff_time": "1s", "maximal_backoff_time": "1s", "queue_run_delay": "1s"}
    conf.update(extra)
    boxes = p.virtual_mailboxes({"a@vmail.test": "a/", "s@vmail.test": "s/", "pm@vmail.test": "pm/",
                                 "bcc@vmail.test": "bcc/", "m@vmail.test": "m.mbox"}, conf)
    p.start()
    return boxes


def check(p, settings):
    conf = dict(p.settings)
    conf.update(settings)
    p.write_main_cf(conf)
    return subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)


# ---- recipient_bcc_maps ----
with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"recipient_bcc_maps": "inline:{ {a@vmail.test = bcc@vmail.test} }"})
    c = p.connect()
    t.like(c.send_message("x@example.org", ["s@vmail.test"], "Subject: one\r\n\r\nx\r\n"), OK_RE, "queued")
    t.like(c.send_message("x@example.org", ["a@vmail.test"], "Subject: two\r\n\r\nx\r\n", ehlo=False), OK_RE, "queued")
    t.ok(wait_for(lambda: maildir(os.path.join(boxes, "a"))), "the recipient gets its message")
    got = wait_for(lambda: maildir(os.path.join(boxes, "bcc")))
    t.ok(got and len(got) == 1 and b"Subject: two" in got[0],
         "recipient_bcc_maps: a copy for that recipient's message only", got)
    t.ok(got and b"bcc@vmail.test" not in got[0].split(b"\r\n\r\n")[0].replace(b"Delivered-To: bcc@vmail.test", b""),
         "not announced in the headers")
    c.close()

# ---- a BCC map that cannot answer: not accepted, never accepted without the copy ----
for param in ("sender_bcc_maps", "recipient_bcc_maps"):
    with Petrel(t, extra_services=QMGR, start=False) as p:
        boxes = setup(p, {param: "fail:down"})
        c = p.connect()
        reply = c.send_message("x@example.org", ["a@vmail.test"], "Subject: bcc down\r\n\r\nx\r\n")
        t.ok(reply.startswith("451 4.3.0 "), "%s failing: the message is not accepted (4xx)" % param, reply)
        t.ok(p.wait_log(r"warning: \w+: %s map lookup problem -- message not accepted, try again later" % param),
             "%s: Postfix's warning" % param, p.log()[-1500:])
        c.close()

# ---- virtual_mailbox_limit ----
with Petrel(t, extra_services=QMGR, start=False) as p:
    # Postfix's limit holds for every file virtual(8) writes, bounces too:
    # room for a bounce of one message, not for two messages
    boxes = setup(p, {"message_size_limit": "10000", "virtual_mailbox_limit": "11000"})
    c = p.connect()
    body = "Subject: %s\r\n\r\n" + ("y" * 70 + "\r\n") * 85   # ~6 KB
    t.like(c.send_message("s@vmail.test", ["m@vmail.test"], body % "first"), OK_RE, "first message queued")
    mbox = os.path.join(boxes, "m.mbox")
    t.ok(wait_for(lambda: os.path.exists(mbox) and b"Subject: first" in open(mbox, "rb").read()),
         "it is delivered to the mbox file")
    size = os.path.getsize(mbox)
    t.like(c.send_message("s@vmail.test", ["m@vmail.test"], body % "second", ehlo=False), OK_RE, "second queued")
    t.ok(wait_for(lambda: maildir(os.path.join(boxes, "s"))), "the sender gets a bounce")
    bounce = (maildir(os.path.join(boxes, "s")) or [b""])[0]
    t.ok(b"Status: 5.2.2" in bounce, "virtual_mailbox_limit: the mbox would pass it: 5.2.2 (mailbox full)",
         bounce[:2000])
    t.is_(os.path.getsize(mbox), size, "the mbox file is as it was")
    t.ok(p.wait_log(r"to=<m@vmail\.test>.*status=bounced \(.*File too large") is not None, "logged")
    c.close()
with Petrel(t, start=False) as p:
    r = check(p, {"message_size_limit": "2000", "virtual_mailbox_limit": "1000"})
    t.ok(r.returncode != 0 and "virtual_mailbox_limit: configuration error: virtual_mailbox_limit is smaller than "
         "message_size_limit" in r.stderr, "virtual_mailbox_limit below message_size_limit is refused", r.stderr)
    r = check(p, {"message_size_limit": "0", "mailbox_size_limit": "1000"})
    t.ok(r.returncode != 0 and "mailbox_size_limit: configuration error: mailbox_size_limit is limited but "
         "message_size_limit is unlimited" in r.stderr, "a mailbox limit with unlimited messages is refused", r.stderr)
    r = check(p, {"message_size_limit": "0", "mailbox_size_limit": "0", "virtual_mailbox_limit": "0"})
    t.ok(r.returncode == 0 and "limit" not in r.stderr, "both unlimited: accepted", r.stderr)

# ---- mailbox_size_limit (local: an alias's /file, through the privileged helper) ----
if os.geteuid() == 0:
    class RootPetrel(Petrel):
        def command(self, *args, user=True):
            return list(args)
    with RootPetrel(t, extra_services=QMGR, start=False) as p:
        out = os.path.join(p.dir, "aliasout")
        os.mkdir(out)
        os.chmod(out, 0o777)
        archive = os.path.join(out, "archive")
        boxes = setup(p, {"message_size_limit": "10000", "mailbox_size_limit": "11000",
                          "alias_maps": "inline:{ {archive = %s} }" % archive})
        c = p.connect()
        t.like(c.send_message("s@vmail.test", ["archive@petrel.test"], body % "first"), OK_RE, "queued")
        t.ok(wait_for(lambda: os.path.exists(archive) and b"Subject: first" in open(archive, "rb").read()),
             "an alias's /file gets the first message")
        size = os.path.getsize(archive)
        c.send_message("s@vmail.test", ["archive@petrel.test"], body % "second", ehlo=False)
        t.ok(wait_for(lambda: maildir(os.path.join(boxes, "s"))), "the sender gets a bounce")
        bounce = (maildir(os.path.join(boxes, "s")) or [b""])[0]
        t.ok(b"Status: 5.2.2" in bounce, "mailbox_size_limit: the file would pass it: 5.2.2", bounce[:2000])
        t.is_(os.path.getsize(archive), size, "the file is as it was")
        c.close()
else:
    t.ok(False, "the mailbox_size_limit test needs root (CI and scripts/test.sh run as root)")

# ---- notify_classes: the postmaster's copies ----
dead = refused_port()
with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"notify_classes": "bounce, delay", "bounce_notice_recipient": "pm@vmail.test",
                      "delay_notice_recipient": "pm@vmail.test", "delay_warning_time": "1s",
                      "relay_domains": "dead.test",
                      "transport_maps": "inline:{ {dead.test = smtp:[127.0.0.1]:%d} }" % dead})
    c = p.connect()
    reply = c.send_message("s@vmail.test", ["x@dead.test"], "Subject: slow\r\n\r\nslow body\r\n")
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"%s: postmaster delay notification: \w+" % qid) is not None,
         "notify_classes delay: the postmaster gets a copy of the delay warning")
    notes = wait_for(lambda: maildir(os.path.join(boxes, "pm")))
    t.ok(notes and b"Subject: Postmaster Warning: Delayed Mail" in notes[0] and b"Action: delayed" in notes[0],
         "Postfix's subject, the delay report", (notes or [b""])[0][:1500])
    t.ok(notes and b"slow body" not in notes[0], "the original's headers only")
    t.ok(wait_for(lambda: maildir(os.path.join(boxes, "s"))), "the sender gets its own warning")
    c.close()
with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"notify_classes": "bounce", "bounce_notice_recipient": "pm@vmail.test",
                      "message_size_limit": "10000", "virtual_mailbox_limit": "11000"})
    c = p.connect()
    body = "Subject: %s\r\n\r\n" + ("z" * 70 + "\r\n") * 85
    c.send_message("s@vmail.test", ["m@vmail.test"], body % "first")
    c.send_message("s@vmail.test", ["m@vmail.test"], body % "second", ehlo=False)
    notes = wait_for(lambda: maildir(os.path.join(boxes, "pm")))
    t.ok(notes and b"Subject: Postmaster Copy: Undelivered Mail" in notes[0] and b"Status: 5.2.2" in notes[0],
         "notify_classes bounce: bounce_notice_recipient gets a copy of the bounce", (notes or [b""])[0][:1500])
    t.ok(notes and b"zzzz" not in notes[0], "with the original's headers only")
    t.ok(wait_for(lambda: maildir(os.path.join(boxes, "s"))), "the sender gets the bounce too")
    c.close()
with Petrel(t, start=False) as p:
    r = check(p, {"notify_classes": "bounce, nosuch"})
    t.ok(r.returncode != 0 and 'notify_classes: unknown class "nosuch"' in r.stderr,
         "an unknown notify_classes word is refused, named", r.stderr)
    r = check(p, {"notify_classes": "bounce, policy, protocol"})
    t.ok(r.returncode == 0 and "warning: notify_classes: policy, protocol: not implemented: the postmaster "
         "(error_notice_recipient) will NOT get these session transcripts" in r.stderr,
         "the transcript classes are warned about by name", r.stderr)
    r = check(p, {"notify_classes": "bounce, delay, 2bounce"})
    t.ok(r.returncode == 0 and "notify_classes" not in r.stderr, "the classes Petrel sends: no warning", r.stderr)

t.done()
