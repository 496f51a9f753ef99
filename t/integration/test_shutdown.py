"""SIGTERM with sessions in flight (issue 8, finding 17): Postfix stops at
once; so does Petrel, without losing anything it accepted.

Five sessions are open when the master gets SIGTERM: one idle after EHLO,
one in a transaction after RCPT, one in the middle of DATA, one in the
middle of BDAT, and one whose message is being committed (fdatasync made
slow by an LD_PRELOAD shim, t/tools/slow_fsync.c, so the commit is surely
under way). Expected:

  - the idle, transaction, DATA and BDAT sessions get
    `421 4.3.2 host Service shutting down` at once; the incomplete queue
    files of DATA and BDAT are removed;
  - the committing session gets its `250 2.0.0 Ok: queued as ID` first
    (the message is in the queue), then 421;
  - petreld is gone within a few seconds (the test waits at most 20 s: the
    old behaviour waited out a 30 s grace period).
"""
import os
import signal
import time

from faultlib import _sanitizer_runtime
from harness import TOP_BUILDDIR, Petrel, Tap, _runnable_copy, wait_for

t = Tap()
SHUTDOWN = "421 4.3.2 mx.petrel.test Service shutting down"
SHIM = _runnable_copy(os.path.join(TOP_BUILDDIR, "t", "tools", ".libs", "slow_fsync.so"))


def incoming(p):
    return sorted(os.path.basename(f) for f in p.queue_files("incoming"))


def reply_or_eof(c, timeout=20):
    c.sock.settimeout(timeout)
    try:
        return c.read_reply()
    except (OSError, ConnectionError) as e:
        return "no reply: %r" % e


with Petrel(t, start=False) as p:
    mark = os.path.join(p.dir, "fdatasync.mark")
    saved = dict(os.environ)
    asan = _sanitizer_runtime()   # under ASan its runtime must come first
    os.environ["LD_PRELOAD"] = (asan + " " if asan else "") + SHIM
    os.environ["PETREL_TEST_FDATASYNC_DELAY_MS"] = "3000"
    os.environ["PETREL_TEST_FDATASYNC_MARK"] = mark
    try:
        p.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)

    idle = p.connect()
    idle.ehlo()
    tx = p.connect()
    tx.ehlo()
    tx.cmd("MAIL FROM:<a@example.org>")
    t.like(tx.cmd("RCPT TO:<u@petrel.test>"), r"^250 ", "a session in a transaction")
    data = p.connect()
    data.ehlo()
    data.cmd("MAIL FROM:<a@example.org>")
    data.cmd("RCPT TO:<u@petrel.test>")
    t.like(data.cmd("DATA"), r"^354 ", "a session in DATA")
    data.send("Subject: cut by the shutdown\r\n\r\nthe first half\r\n")
    bdat = p.connect()
    bdat.ehlo()
    bdat.cmd("MAIL FROM:<a@example.org>")
    bdat.cmd("RCPT TO:<u@petrel.test>")
    bdat.send("BDAT 1000\r\nSubject: a chunk that never ends\r\n\r\n")
    partial = wait_for(lambda: len(incoming(p)) == 2 and incoming(p), timeout=30)
    t.ok(partial, "the DATA and BDAT sessions each have an incomplete file in incoming/", incoming(p))

    commit = p.connect()
    commit.ehlo()
    commit.cmd("MAIL FROM:<a@example.org>")
    commit.cmd("RCPT TO:<u@petrel.test>")
    commit.cmd("DATA")
    commit.send("Subject: committed during the shutdown\r\n\r\nkept\r\n.\r\n")
    started = wait_for(lambda: os.path.exists(mark), timeout=30)
    t.ok(started, "the last message's commit (fdatasync) is under way")

    begin = time.time()
    p.proc.send_signal(signal.SIGTERM)
    t.is_(reply_or_eof(idle), SHUTDOWN, "idle session: 421 at once")
    t.is_(reply_or_eof(tx), SHUTDOWN, "session in a transaction: 421 at once (nothing was accepted)")
    t.is_(reply_or_eof(data), SHUTDOWN, "session in DATA: cut with 421")
    t.is_(reply_or_eof(bdat), SHUTDOWN, "session in BDAT: cut with 421")
    answered = reply_or_eof(commit)
    t.like(answered, r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$", "the commit under way finishes and is answered first")
    t.is_(reply_or_eof(commit), SHUTDOWN, "then that session gets 421 too")
    try:
        p.proc.wait(timeout=20)
        gone = True
    except Exception:
        gone = False
    t.ok(gone, "petreld is gone within seconds (bounded wait: 20 s; it used to wait out a 30 s grace period)",
         "still running after %.1f s" % (time.time() - begin))
    t.is_(p.proc.returncode, 0, "and exits 0")
    queued = answered.split()[-1]
    t.is_(incoming(p), [queued], "the accepted message is in the queue; the cut DATA and BDAT files are removed")
    t.ok(p.wait_log(r"in progress from unknown\[127\.0\.0\.1\] abandoned at shutdown; nothing was accepted")
         is not None, "the log names the abandoned transactions")
    t.ok(p.wait_log(r"master\[\d+\]: stopped") is not None, "the master logged its stop")
    for c in (idle, tx, data, bdat, commit):
        c.close()

t.done()
