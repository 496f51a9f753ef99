"""Incomplete queue files and the queue manager's intake under faults (issue 8,
finding 7).

- A writer that dies mid-message (a module crashing at end of message) leaves an
  incomplete file in incoming/: the queue manager removes it with a log line, stays
  idle (it used to re-read its own close event forever at 100% CPU) and answers
  SIGTERM. A file whose writer is still at work is left alone, however old it looks.
- A rename of incoming/ID into active/ that fails leaves the message in incoming/,
  taken by a later scan; no busy loop.
Faults come from the faultfs LD_PRELOAD shim (t/tools/faultfs.c)."""

import os
import re
import time

from harness import Petrel, Tap, maildir_messages, wait_for
from faultlib import QMGR, Faults, alive, mail, qmgr_idle, qmgr_pid, queue_names
from modlib import module_dir

t = Tap(timeout=300)
mods = module_dir("testmod")


with Petrel(t, extra_services=QMGR, workers=1, start=False) as p:
    boxes = p.virtual_mailboxes({"u@vmail.test": "u/"}, {
        "smtpd_timeout": "300s",   # one session spans every scenario, however slow the machine
        "modules": "testmod", "module_directory": mods,
    })
    faults = Faults(p)
    faults.start()
    inbox = {"u": os.path.join(boxes, "u")}

    # --- finding 7: a writer that crashes leaves an incomplete file --------------
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<u@vmail.test>")
    c.cmd("DATA")
    c.send(b"Subject: crash\r\nX-Testmod-Crash: yes\r\n\r\nbody\r\n.\r\n")
    t.ok(c.closed(), "a module crashing at end of message drops the connection (no 250)")
    c.close()
    # At once from the close event, or from the next scan of incoming/ if the
    # kernel had not dropped the dead writer's lock yet when the event came.
    m = p.wait_log(r"(\w+): removed incomplete queue file \(its writer is gone\)", timeout=30)
    t.ok(m is not None, "the queue manager removes the crashed writer's incomplete file, with a log line")
    t.is_(queue_names(p, "incoming"), [], "incoming/ is empty")
    t.ok(m is not None and "%s: moving damaged" % m.group(1) not in p.log(), "the file is not called damaged")
    qmgr_idle(t, p, "after the crash")

    # --- a file whose writer is alive is never taken, however old it looks -----
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<u@vmail.test>")
    c.cmd("DATA")
    part = b"Subject: slow writer\r\n\r\n" + (b"s" * 998 + b"\r\n") * 100   # 100 KB: 64 KiB reach the disk
    c.send(part)
    slow = wait_for(lambda: [n for n in queue_names(p, "incoming")
                             if os.path.getsize(os.path.join(p.queue, "incoming", n)) > 0], timeout=30)
    t.ok(slow, "the half-written message is in incoming/")
    slow = slow[0] if slow else "none"
    old = time.time() - 3600
    os.utime(os.path.join(p.queue, "incoming", slow), (old, old))
    p.petrelctl("queue", "flush")   # the queue manager scans incoming/ now
    t.ok(p.wait_log(r"flush requested") is not None, "a scan of incoming/ ran")
    # The scan comes after that line, on the same loop: a second flush's line
    # comes after the first scan is over.
    p.petrelctl("queue", "flush")
    wait_for(lambda: p.log().count("flush requested") >= 2, timeout=30)
    t.is_(queue_names(p, "incoming"), [slow], "an hour-old file whose writer is still at work is left to its writer")
    t.ok(slow not in p.log().split("flush requested", 1)[-1], "and the queue manager says nothing about it")
    qmgr_idle(t, p, "with a live writer in incoming/")
    c.send(b"end\r\n.\r\n")
    reply = c.read_reply()
    t.is_(reply, "250 2.0.0 Ok: queued as %s" % slow, "the writer finishes: 250")
    got = wait_for(lambda: [x for x in maildir_messages(inbox["u"]) if b"slow writer" in x])
    t.ok(got and got[0].endswith(b"s" * 998 + b"\nend\n"), "and the message is delivered whole")
    c.close()

    c = p.connect()
    c.ehlo()

    # --- incoming/ -> active/ fails: the message waits in incoming/ --------------
    faults.set("op=rename path=/active/ errno=EIO")
    reply = mail(c, "a@example.org", "u@vmail.test", b"Subject: rename fails\r\n\r\nx\r\n")
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"warning: %s: cannot move to the active queue: Input/output error" % qid) is not None,
         "a failed move into active/ is logged")
    t.is_(queue_names(p, "incoming"), [qid], "the message stays in incoming/")
    qmgr_idle(t, p, "after a failed move")
    faults.clear()
    old = time.time() - 3600
    os.utime(os.path.join(p.queue, "incoming", qid), (old, old))
    p.petrelctl("queue", "flush")
    t.ok(wait_for(lambda: [x for x in maildir_messages(inbox["u"]) if b"rename fails" in x]),
         "with the disk healthy, the next scan delivers it")
    c.close()

    # --- SIGTERM is answered ----------------------------------------------------
    pid = qmgr_pid(p)
    p.stop()
    t.ok(pid is not None and not alive(pid), "petreld stops, queue manager included")
    # Once in a loaded CI run the master had to: an smtpd worker hung in the
    # faultfs shim (a signal handler's write waited for the lock its own
    # thread held; the shim now blocks signals meanwhile). Should it happen
    # again, the description names what it killed, from the master's log.
    log = p.log()
    killed = ["%s, its last line: %s" % (k, ([x for x in log.splitlines() if "[%s]: " % pid in x and "killing" not in x]
                                             or ["none"])[-1])
              for k, pid in re.findall(r"warning: (killing .* pid (\d+) .*)", log)]
    t.ok("did not stop within" not in log, "without the master having to kill anything%s"
         % (" (it killed: %s)" % "; ".join(killed) if killed else ""))

t.done()
