"""Fault injection in Maildir and mbox delivery (issue 8): EIO, ENOSPC and short writes
(faultfs LD_PRELOAD shim, t/tools/faultfs.c), an unwritable Maildir, a failed fsync of a
new mailbox's parent directory, and a real full file system (a small tmpfs, as root).
Every failure defers (4.x.x) with Postfix's wording, keeps the message queued, leaves
nothing half-written in the mailbox (no file in tmp/ or new/, an mbox truncated back to
its old size), and the queue manager stays idle; once the fault is gone the message is
delivered exactly once."""
import os

from harness import Petrel, Tap, maildir_messages, wait_for
from faultlib import QMGR, Faults, cpu_share, fill, maildir_files, need_root, qmgr_pid, queue_names, small_tmpfs

t = Tap(timeout=400)
BIG = b"Subject: big\r\n\r\n" + (b"b" * 998 + b"\r\n") * 200   # 200 KB: several writes


def mail(c, rcpt, body):
    return c.send_message("a@example.org", [rcpt], body, ehlo=False)


def deferred(p, qid, rcpt, reason):
    """Waits for `rcpt` of qid to be deferred with reason (a regex); True when it was."""
    line = p.wait_log(r"%s: to=<%s>, relay=virtual, .*dsn=4\.\d\.\d, status=deferred \(%s" % (qid, rcpt, reason),
                      timeout=60)
    if line is None:
        t.diag("\n".join(x for x in p.log().splitlines() if qid in x))
    return line is not None


def whole(msgs):
    """How many of the Maildir messages are a complete copy of BIG (LF line ends)."""
    body = b"Subject: big\n\n" + (b"b" * 998 + b"\n") * 200
    return sum(1 for m in msgs if body in m and m.count(b"b" * 998) == 200)


def idle(p, what):
    share = cpu_share(qmgr_pid(p), 1.0)
    t.ok(share < 0.3, "%s: the queue manager is idle (CPU %.0f%%)" % (what, 100 * share))


def retry(p, faults, qid, rcpt):
    """Clears the faults, flushes, and waits for the delivery. The deferral is
    logged before the message is back in deferred/, and a flush before then
    would find nothing to do: wait for it there first."""
    wait_for(lambda: qid in queue_names(p, "deferred"), timeout=30)
    faults.clear()
    p.petrelctl("queue", "flush")
    return p.wait_log(r"%s: to=<%s>, relay=virtual, .*status=sent" % (qid, rcpt), timeout=60) is not None


with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = p.virtual_mailboxes({"u@vmail.test": "u/", "m@vmail.test": "m", "n@vmail.test": "new/deep/n/",
                                 "f@vmail.test": "full/f/", "fm@vmail.test": "full/fm"},
                                {"minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "300s"})
    faults = Faults(p)
    faults.start()
    u = os.path.join(boxes, "u")
    mbox = os.path.join(boxes, "m")
    c = p.connect()
    c.ehlo()

    # Mailboxes that exist before the faults.
    qid = mail(c, "u@vmail.test", "Subject: first\r\n\r\nx\r\n").split()[-1]
    qid2 = mail(c, "m@vmail.test", "Subject: first\r\n\r\nx\r\n").split()[-1]
    t.ok(p.wait_log(r"%s: removed" % qid, timeout=60) and p.wait_log(r"%s: removed" % qid2, timeout=60),
         "Maildir and mbox delivery work under the shim")

    def maildir_case(rule, reason, what):
        before = maildir_files(u)
        before_msgs = maildir_messages(u)
        faults.set(rule)
        faults.reset_log()
        qid = mail(c, "u@vmail.test", BIG).split()[-1]
        t.ok(deferred(p, qid, "u@vmail.test", reason), "%s: the delivery is deferred, with the reason" % what)
        t.ok(faults.fired(), "%s: (the fault fired)" % what)
        t.ok(wait_for(lambda: qid in queue_names(p, "deferred"), timeout=30), "%s: the message stays queued" % what)
        t.is_(maildir_files(u), before, "%s: nothing is left in the Maildir's tmp/ or new/" % what)
        t.ok(retry(p, faults, qid, "u@vmail.test"), "%s: with the fault gone, the retry delivers it" % what)
        msgs = maildir_messages(u)
        t.is_(len(msgs), len(before["new"]) + 1, "%s: exactly once" % what)
        t.is_(whole(msgs), whole(before_msgs) + 1, "%s: whole" % what)

    maildir_case("op=write path=/u/tmp/ errno=ENOSPC after=1",
                 r"maildir delivery failed: write maildir file .*/u/tmp/\S+: No space left on device\)", "ENOSPC mid-write")
    maildir_case("op=fsync path=/u/tmp/ errno=EIO",
                 r"maildir delivery failed: write maildir file .*: Input/output error\)", "EIO on the file's fsync")
    maildir_case("op=link path=/u/new/ errno=EIO",
                 r"maildir delivery failed: link to .*/u/new/\S+: Input/output error\)", "EIO on tmp/ -> new/")
    maildir_case("op=fsync path=/u/new$ errno=EIO",
                 r"maildir delivery failed: fsync .*/u/new: Input/output error\)", "EIO on the fsync of new/")
    idle(p, "after the Maildir faults")

    # Short writes: the agent loops; the message arrives whole at the first attempt.
    faults.set("op=write path=/u/tmp/ short")
    faults.reset_log()
    n = len(maildir_messages(u))
    whole_before = whole(maildir_messages(u))
    qid = mail(c, "u@vmail.test", BIG).split()[-1]
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, relay=virtual, .*status=sent" % qid, timeout=60) is not None,
         "short writes: delivered")
    t.ok(len(faults.fired("write")) >= 2, "after short writes (%d)" % len(faults.fired("write")))
    msgs = maildir_messages(u)
    t.ok(len(msgs) == n + 1 and whole(msgs) == whole_before + 1, "and whole")
    faults.clear()

    # A new Maildir whose parent directory cannot be made durable (finding 15).
    faults.set("op=fsync path=%s$ errno=EIO" % boxes)
    faults.reset_log()
    qid = mail(c, "n@vmail.test", "Subject: new mailbox\r\n\r\nx\r\n").split()[-1]
    t.ok(deferred(p, qid, "n@vmail.test", r"maildir delivery failed: fsync a new parent directory: Input/output error\)"),
         "a new mailbox directory whose creation cannot be made durable: deferred")
    t.ok(faults.fired("fsync", boxes), "(the fsync of virtual_mailbox_base after creating new/ failed)")
    t.ok(retry(p, faults, qid, "n@vmail.test"), "later it is delivered")
    t.is_(len(maildir_messages(os.path.join(boxes, "new", "deep", "n"))), 1, "once")

    # An unwritable Maildir (real permissions).
    os.chmod(os.path.join(u, "tmp"), 0o500)
    qid = mail(c, "u@vmail.test", "Subject: unwritable\r\n\r\nx\r\n").split()[-1]
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, relay=virtual, .*dsn=4\.2\.0, status=deferred \(maildir delivery failed: "
                    r"create maildir file .*: Permission denied\)" % qid, timeout=60) is not None,
         "an unwritable Maildir defers 4.2.0 (Permission denied)")
    os.chmod(os.path.join(u, "tmp"), 0o700)
    t.ok(retry(p, faults, qid, "u@vmail.test"), "made writable again, it is delivered")

    # mbox: a failed append is taken back.
    def mbox_case(rule, reason, what):
        size = os.path.getsize(mbox)
        faults.set(rule)
        faults.reset_log()
        qid = mail(c, "m@vmail.test", BIG).split()[-1]
        t.ok(deferred(p, qid, "m@vmail.test", reason), "mbox, %s: deferred with the reason" % what)
        t.ok(faults.fired(), "mbox, %s: (the fault fired)" % what)
        t.is_(os.path.getsize(mbox), size, "mbox, %s: truncated back to its old size" % what)
        t.ok(not os.path.exists(mbox + ".lock"), "mbox, %s: the lock is released" % what)
        t.ok(retry(p, faults, qid, "m@vmail.test"), "mbox, %s: the retry delivers it" % what)
        with open(mbox, "rb") as f:
            data = f.read()
        t.is_(data.count(b"\nSubject: big\n"), 1 + mbox_case.done, "mbox, %s: exactly once" % what)
        mbox_case.done += 1
    mbox_case.done = 0

    mbox_case("op=write path=/mail/m errno=ENOSPC after=1",
              r"cannot update mailbox .*/m: error writing message: No space left on device\)", "ENOSPC mid-append")
    mbox_case("op=fsync path=/mail/m errno=EIO",
              r"cannot update mailbox .*/m: error writing message: Input/output error\)", "EIO on fsync")
    idle(p, "after the mbox faults")

    # A really full file system (a small tmpfs mounted inside virtual_mailbox_base).
    if need_root(t, "the full-disk delivery test"):
        full = os.path.join(boxes, "full")
        os.mkdir(full)
        with small_tmpfs("1m", where=full):
            if True:
                filler = fill(full, leave=16384)
                qid = mail(c, "f@vmail.test", BIG).split()[-1]
                line = p.wait_log(r"%s: to=<f@vmail\.test>, relay=virtual, .*dsn=4\.3\.0, status=deferred \(maildir delivery "
                                  r"failed: write maildir file .*: No space left on device\)" % qid, timeout=60)
                t.ok(line is not None, "full disk, Maildir: deferred 4.3.0 (No space left on device)")
                t.is_(maildir_files(os.path.join(full, "f")), {"tmp": [], "new": []}, "full disk: nothing half-written is left")
                qid2 = mail(c, "fm@vmail.test", BIG).split()[-1]
                line = p.wait_log(r"%s: to=<fm@vmail\.test>, relay=virtual, .*dsn=4\.3\.0, status=deferred \(cannot update "
                                  r"mailbox .*: error writing message: No space left on device\)" % qid2, timeout=60)
                t.ok(line is not None, "full disk, mbox: deferred 4.3.0")
                t.is_(os.path.getsize(os.path.join(full, "fm")), 0, "full disk: the new mbox holds no partial message")
                # logged as each delivery ends; moved to deferred/ when the message is done
                t.ok(wait_for(lambda: qid in queue_names(p, "deferred") and qid2 in queue_names(p, "deferred"),
                              timeout=30), "both messages stay queued")
                idle(p, "with a full mailbox file system")
                os.unlink(filler)
                p.petrelctl("queue", "flush")
                t.ok(wait_for(lambda: maildir_messages(os.path.join(full, "f")), timeout=60),
                     "space again: the Maildir gets it")
                t.ok(wait_for(lambda: os.path.getsize(os.path.join(full, "fm")) > 200000, timeout=60), "and the mbox")
                t.ok(p.wait_log(r"%s: removed" % qid2, timeout=60) is not None, "and both leave the queue")
    c.close()

t.done()
