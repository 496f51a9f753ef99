"""Fault injection on the receiving side (issue 8): smtpd's commit under EIO, ENOSPC,
short writes and an unwritable incoming/. A failed commit is answered 451 4.3.0 (never
250), leaves nothing half-committed in the queue, says why in the log, and the
session and the worker go on serving without spinning. The faults come from the
faultfs LD_PRELOAD shim (t/tools/faultfs.c); ENOSPC on a real small file system is in
test_queue_space.py."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from harness import Petrel, Tap  # noqa: E402
from faultlib import Faults, cpu_share, mail, queue_names  # noqa: E402
import qcheck  # noqa: E402

t = Tap(timeout=200)


def send(c, body):
    return mail(c, "a@example.org", "u@petrel.test", body)


def queued(p):
    return sum(len(queue_names(p, d)) for d in ("incoming", "active", "deferred", "hold"))


def workers_idle(p):
    shares = [cpu_share(pid, 1.0) for pid in p.worker_pids()]
    return max(shares) < 0.3, shares


SMALL = b"Subject: fault test\r\n\r\nhello\r\n"
BIG = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 200   # 200 KB: several buffer flushes

with Petrel(t, workers=1, start=False) as p:
    faults = Faults(p)
    faults.start()
    c = p.connect()
    c.ehlo()

    # The shim loaded but idle changes nothing.
    t.like(send(c, SMALL), r"^250 2\.0\.0 Ok: queued as ", "with the shim loaded and no rule, mail is accepted")
    base = queued(p)
    t.is_(base, 1, "and queued")

    # 1. fdatasync of the queue file fails (EIO).
    faults.set("op=fsync path=/incoming/ errno=EIO")
    reply = send(c, SMALL)
    t.is_(reply, "451 4.3.0 Error: queue file write error", "EIO on the queue file's fdatasync: 451 4.3.0, not 250")
    t.ok(faults.fired("fsync", "/incoming/"), "the fault really hit the queue file's sync")
    t.ok(p.wait_log(r"\w+: queue file commit failed: Input/output error") is not None, "the log says the commit failed and why")
    t.is_(queued(p), base, "nothing half-committed is left in the queue")

    # 2. The group-committed fsync of incoming/ fails.
    faults.set("op=fsync path=/incoming$ errno=EIO")
    faults.reset_log()
    reply = send(c, SMALL)
    t.is_(reply, "451 4.3.0 Error: queue file write error", "EIO on the fsync of incoming/: 451 4.3.0")
    t.ok(faults.fired("fsync"), "the fault hit the directory's fsync")
    t.is_(queued(p), base, "and the file is gone again")

    # 3. The disk fills up in the middle of a message (ENOSPC on the second write).
    faults.set("op=write path=/incoming/ errno=ENOSPC after=1")
    faults.reset_log()
    reply = send(c, BIG)
    t.is_(reply, "451 4.3.0 Error: queue file write error", "ENOSPC mid-message: 451 4.3.0")
    t.ok(p.wait_log(r"\w+: queue file write error: No space left on device") is not None, "the log names ENOSPC")
    t.is_(queued(p), base, "no partial file is left")

    # 4. EIO on the very first write: the end record never reaches the disk.
    faults.set("op=write path=/incoming/ errno=EIO")
    reply = send(c, SMALL)
    t.is_(reply, "451 4.3.0 Error: queue file write error", "EIO on the only write of a small message: 451 4.3.0")
    t.is_(queued(p), base, "nothing left")

    # 5. incoming/ refuses new files (a read-only or full directory).
    faults.set("op=create path=/incoming/ errno=EACCES")
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok", "MAIL is still accepted")
    c.cmd("RCPT TO:<u@petrel.test>")
    t.is_(c.cmd("DATA"), "451 4.3.0 Error: queue file write error",
          "a queue file that cannot be created: DATA gets 451 4.3.0 (no 354)")
    t.ok(p.wait_log(r"cannot create queue file: Permission denied") is not None, "the log says why")

    # 6. Short writes everywhere: the writer loops and the message is intact.
    faults.set("op=write path=/incoming/ short")
    faults.reset_log()
    reply = send(c, BIG)
    t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "short writes: the message is still accepted")
    t.ok(len(faults.fired("write")) >= 2, "after several short writes (%d)" % len(faults.fired("write")))
    qid = reply.split()[-1]
    recs = {r["id"]: r for r in qcheck.queue_check(p.queue, ["incoming"])}
    rec = recs.get(qid, {})
    t.is_(rec.get("result"), "ok", "the queue file is valid (%s)" % rec.get("error", ""))
    if rec.get("result") == "ok":
        content = qcheck.read_content(p.queue, rec)
        t.ok(content.endswith(BIG), "and holds every byte of the message")
    else:
        t.ok(False, "and holds every byte of the message")

    # The same session goes on once the disk is healthy again; the worker never spun.
    faults.clear()
    t.like(send(c, SMALL), r"^250 2\.0\.0 Ok: queued as ", "with the faults gone the same session delivers again")
    t.is_(queued(p), base + 2, "exactly the two accepted messages were added")
    idle, shares = workers_idle(p)
    t.ok(idle, "the smtpd worker is idle afterwards (CPU %s)" % ["%.0f%%" % (100 * s) for s in shares])
    c.cmd("QUIT")
    c.close()

t.done()
