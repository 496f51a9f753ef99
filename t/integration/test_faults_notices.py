"""Notifications that cannot be queued (issue 8, finding 6): a bounce, a postmaster
notification or a delay warning whose queue file cannot be created (incoming/ refuses
it) or committed (its fsync fails) never takes the original message with it: the
original stays queued with a clear log line, and the notification is queued at a
later attempt. Before, the original was removed whatever happened to the bounce, and
before the bounce's commit had finished. Faults come from the faultfs LD_PRELOAD shim
(t/tools/faultfs.c), and (as root) from a queue on a small tmpfs that fills up."""

import os

from harness import Petrel, Tap, refused_port, maildir_messages, wait_for
from faultlib import QMGR, Faults, fill, mail, need_root, qmgr_idle, queue_names, small_tmpfs
from modlib import module_dir

t = Tap(timeout=400)
mods = module_dir("testmod")
dead_port = refused_port()


def held_bounce(p, c, sender="v@vmail.test", rcpt="hold-x@vmail.test"):
    """A message on hold (testmod holds it) whose one recipient is unknown: released,
    it bounces to the sender (to the postmaster when the sender is <>)."""
    reply = mail(c, sender, rcpt, b"Subject: held\r\n\r\nbounce me later\r\n")
    qid = reply.split()[-1]
    t.ok(wait_for(lambda: qid in queue_names(p, "hold"), timeout=30), "a message for an unknown user waits on hold")
    return qid


with Petrel(t, extra_services=QMGR, workers=1, start=False) as p:
    boxes = p.virtual_mailboxes({"v@vmail.test": "v/", "pm@vmail.test": "pm/"}, {
        "smtpd_timeout": "300s",   # one session spans every scenario, however slow the machine
        # The bounces need an unknown user past smtpd (as with Postfix's check
        # turned off); test_recipient_validation.py tests the check itself.
        "smtpd_reject_unlisted_recipient": "no",
        "modules": "testmod", "module_directory": mods,
        "2bounce_notice_recipient": "pm@vmail.test",
        "notify_classes": "2bounce",   # Postfix discards double bounces without 2bounce
        "relay_domains": "dead.test",
        "transport_maps": "inline:{ {dead.test = smtp:[127.0.0.1]:%d} }" % dead_port,
        "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s",
        "delay_warning_time": "1s",
    })
    faults = Faults(p)
    faults.start()
    inbox = {name: os.path.join(boxes, name) for name in ("v", "pm")}

    c = p.connect()
    c.ehlo()
    qmgr_idle(t, p, "at rest")

    # --- finding 6, as reported: hold, make incoming/ unwritable, release -------
    qid = held_bounce(p, c)
    incoming = os.path.join(p.queue, "incoming")
    os.chmod(incoming, 0o500)
    p.petrelctl("queue", "release", qid)
    t.ok(p.wait_log(r"%s: to=<hold-x@vmail\.test>, relay=none, .*dsn=5\.1\.1, status=bounced" % qid) is not None,
         "released, the message bounces (unknown user)")
    line = p.wait_log(r"warning: %s: cannot queue the sender non-delivery notification: cannot create its queue file: "
                      r"Permission denied; the message stays queued and its 1 recipient is tried again later" % qid)
    t.ok(line is not None, "the notification cannot be created: a warning says so and what happens next")
    t.ok(wait_for(lambda: qid in queue_names(p, "deferred"), timeout=30), "the original stays queued (deferred/)")
    t.ok("%s: removed" % qid not in p.log(), "and is not removed")
    listing = p.petrelctl("queue", "list").stdout
    t.like(listing, r"cannot queue the non-delivery notification \(cannot create its queue file: Permission denied\)",
           "petrelctl queue list shows why it waits")
    qmgr_idle(t, p, "with incoming/ refusing files")
    os.chmod(incoming, 0o700)
    p.petrelctl("queue", "flush")
    m = p.wait_log(r"%s: sender non-delivery notification: (\w+)" % qid)
    t.ok(m is not None, "once incoming/ takes files again, the next attempt queues the bounce")
    t.ok(p.wait_log(r"%s: removed" % qid) is not None, "and only then is the original removed")
    bounce = wait_for(lambda: [x for x in maildir_messages(inbox["v"]) if b"hold-x@vmail.test" in x])
    t.ok(bounce and b"Status: 5.1.1" in bounce[0], "the sender gets the bounce, with the real reason (5.1.1)")

    # --- finding 6: the bounce's fsync fails (EIO) --------------------------------
    qid = held_bounce(p, c)
    faults.set("op=fsync path=/incoming/ errno=EIO")
    faults.reset_log()
    p.petrelctl("queue", "release", qid)
    line = p.wait_log(r"warning: %s: cannot queue the sender non-delivery notification: cannot commit it to disk: "
                      r"Input/output error; the message stays queued" % qid)
    t.ok(line is not None, "EIO on the bounce's fsync: the warning names the failed commit")
    t.ok(faults.fired("fsync", "/incoming/"), "(the fault hit the bounce's file)")
    t.ok(wait_for(lambda: qid in queue_names(p, "deferred"), timeout=30), "the original stays queued")
    # The queue manager retries every second with the fault still set: a retry's bounce file
    # may be there for a moment (created, its fsync fails, unlinked); one left behind stays.
    t.ok(wait_for(lambda: queue_names(p, "incoming") == [], timeout=30), "the uncommitted bounce is not left behind",
         queue_names(p, "incoming"))
    faults.clear()
    p.petrelctl("queue", "flush")
    t.ok(p.wait_log(r"%s: sender non-delivery notification: \w+" % qid) is not None,
         "the next attempt queues the bounce")
    t.ok(p.wait_log(r"%s: removed" % qid) is not None, "then the original goes")
    t.ok(wait_for(lambda: len([x for x in maildir_messages(inbox["v"]) if b"hold-x@vmail.test" in x]) == 2),
         "the sender has both bounces")

    # --- a postmaster notification (mail from <>) that cannot be queued -----------
    qid = held_bounce(p, c, sender="", rcpt="hold-y@vmail.test")
    faults.set("op=create path=/incoming/ errno=ENOSPC")
    p.petrelctl("queue", "release", qid)
    t.ok(p.wait_log(r"warning: %s: cannot queue the postmaster non-delivery notification: cannot create its queue file: "
                    r"No space left on device" % qid) is not None, "a double bounce that cannot be queued is logged")
    t.ok(wait_for(lambda: qid in queue_names(p, "deferred"), timeout=30), "and its original is kept")
    faults.clear()
    p.petrelctl("queue", "flush")
    t.ok(p.wait_log(r"%s: postmaster non-delivery notification: \w+" % qid) is not None,
         "later the postmaster notification is queued")
    t.ok(wait_for(lambda: [x for x in maildir_messages(inbox["pm"]) if b"hold-y@vmail.test" in x]),
         "and reaches the postmaster (2bounce_notice_recipient)")

    # --- a delay warning whose commit fails is tried again -----------------------
    reply = mail(c, "v@vmail.test", "d@dead.test", b"Subject: slow destination\r\n\r\nx\r\n")
    qid = reply.split()[-1]
    marker = os.path.join(p.queue, "defer", qid + ".warned")
    faults.set("op=fsync path=/incoming/ errno=EIO")
    line = p.wait_log(r"warning: %s: cannot queue the sender delay notification: cannot commit it to disk: "
                      r"Input/output error; it is tried again at the next deferral" % qid, timeout=20)
    t.ok(line is not None, "a delay warning that cannot be committed is logged")
    t.ok(not os.path.exists(marker), "and not remembered as sent")
    faults.clear()
    t.ok(p.wait_log(r"%s: sender delay notification: \w+" % qid, timeout=20) is not None,
         "a later deferral queues the warning")
    t.ok(wait_for(lambda: os.path.exists(marker), timeout=30), "and only then remembers it")
    t.ok(wait_for(lambda: [x for x in maildir_messages(inbox["v"]) if b"Delayed Mail" in x]),
         "the sender gets the warning")
    p.petrelctl("queue", "delete", qid)

    c.close()

    p.stop()
    t.ok("did not stop within" not in p.log(), "petreld stops cleanly")

# --- a real full disk: the queue on a small tmpfs --------------------------------
if need_root(t, "the full-queue bounce test"):
    with Petrel(t, extra_services=QMGR, workers=1, start=False) as p, small_tmpfs("2m", where=p.dir + "/queue"):
        boxes = p.virtual_mailboxes({"v@vmail.test": "v/"}, {
            "smtpd_timeout": "300s", "smtpd_reject_unlisted_recipient": "no",
            "modules": "testmod", "module_directory": mods,
            "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s",
            # smtpd checks for 1.5 x message_size_limit of free space at MAIL
            "queue_minfree": "1", "message_size_limit": "100000"})
        p.start()
        c = p.connect()
        c.ehlo()
        qid = held_bounce(p, c)
        filler = fill(p.queue)
        p.petrelctl("queue", "release", qid)
        line = p.wait_log(r"warning: %s: cannot queue the sender non-delivery notification: cannot (write|commit) it[^:]*: "
                          r"No space left on device; the message stays queued" % qid)
        t.ok(line is not None, "full queue file system: the bounce cannot be written, and the log says so")
        t.ok(wait_for(lambda: qid in queue_names(p, "deferred"), timeout=30), "the original stays queued")
        # a retry's partial bounce may be there for a moment (the disk is still full); a left one stays
        t.ok(wait_for(lambda: queue_names(p, "incoming") == [], timeout=30), "no partial bounce is left",
             queue_names(p, "incoming"))
        qmgr_idle(t, p, "with a full queue file system")
        os.unlink(filler)
        p.petrelctl("queue", "flush")
        t.ok(p.wait_log(r"%s: sender non-delivery notification: \w+" % qid) is not None,
             "space again: the bounce is queued")
        t.ok(p.wait_log(r"%s: removed" % qid) is not None, "then the original is removed")
        t.ok(wait_for(lambda: [x for x in maildir_messages(os.path.join(boxes, "v")) if b"hold-x@vmail.test" in x]),
             "and the sender gets the bounce")
        c.close()
        p.stop()

t.done()
