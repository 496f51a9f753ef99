"""Durable mailbox creation (issue 8, finding 15), proved from the daemon's system calls
as test_fsync_order.py proves the queue's: petreld runs under `strace -f -yy` while it
delivers into mailboxes that do not exist yet - a virtual Maildir two directory levels
below virtual_mailbox_base (created as virtual(8) creates them, then tmp/ new/ cur/) and
a new mbox file. For every directory and mailbox file the delivery created, the trace
must show a successful fsync of the directory holding the new entry, after the entry
was made and before the queue manager removed the queue file (the point after which
only the mailbox holds the message). The message file itself must be fsynced and its
name in new/ made durable too (fsync of new/)."""
import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402
from harness import Petrel, Tap, maildir_messages  # noqa: E402
from faultlib import QMGR  # noqa: E402
import qcheck  # noqa: E402

t = Tap(timeout=200)
SYSCALLS = "mkdir,mkdirat,openat,fsync,fdatasync,unlinkat,link,linkat,rename,renameat,renameat2"
_MKDIR = re.compile(r'^(?:(-?\d+|AT_FDCWD)(?:<([^>]*)>)?, )?"([^"]*)"')


def at_path(args):
    """The path a *at() call or a plain path call names: (dirfd path or None) + name."""
    m = _MKDIR.match(args)
    if not m:
        return None
    name = m.group(3)
    if name.startswith("/") or m.group(1) in (None, "AT_FDCWD"):
        return name
    return os.path.join(m.group(2) or "?", name)


p = Petrel(t, extra_services=QMGR, start=False)
try:
    boxes = p.virtual_mailboxes({"u@vmail.test": "vmail.test/deep/u/", "m@vmail.test": "vmail.test/m"})
    trace = os.path.join(p.dir, "strace.out")
    p.logf = open(p.log_path, "ab")
    cmd = ["strace", "-f", "-tt", "-yy", "-s", "512", "-e", "trace=" + SYSCALLS, "-o", trace]
    env = dict(os.environ)
    env.update(harness.sanitizer_env(traced=True))   # LeakSanitizer cannot run under strace
    env.update(p.name_service_env())
    p.proc = subprocess.Popen(cmd + p.command(harness.PETRELD, "-c", p.conf), stdout=p.logf,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    p.wait_listening(timeout=60)   # under strace: slow on a loaded machine
    c = p.connect()
    # One after the other: the mbox lands in the directory the Maildir delivery made.
    ids = []
    for rcpt, subject in (("u@vmail.test", "new maildir"), ("m@vmail.test", "new mbox")):
        reply = c.send_message("a@example.org", [rcpt], "Subject: %s\r\n\r\nfirst\r\n" % subject, ehlo=not ids)
        ids.append(reply.split()[-1])
        t.ok(p.wait_log(r"%s: removed" % ids[-1], timeout=60) is not None, "%s: delivered, and removed from the queue" % rcpt)
    c.close()
    t.ok(maildir_messages(os.path.join(boxes, "vmail.test", "deep", "u")), "the Maildir was created and holds the message")
    t.ok(os.path.getsize(os.path.join(boxes, "vmail.test", "m")) > 0, "the mbox file was created and holds the message")
    master = qcheck.descendants(p.proc.pid)
    if master:
        os.kill(master[0], signal.SIGTERM)
    p.proc.wait(timeout=60)

    events = qcheck.strace_events(trace)
    removed = {}      # queue ID -> trace position of the unlink of active/ID
    created = []      # (exit position, path) of directories and mailbox files the delivery made
    syncs = []        # (entry, exit, path) of successful fsyncs of directories/files
    for e in events:
        name, args = e["name"], e["args"]
        if name == "unlinkat" and e["ret"] == 0:
            m = re.match(r'^\d+<([^>]*)/active>, "(\w+)"', args)
            if m:
                removed[m.group(2)] = e["entry"]
        elif name in ("mkdir", "mkdirat") and e["ret"] == 0:
            path = at_path(args)
            if path and path.startswith(boxes + "/"):
                created.append((e["exit"], path.rstrip("/")))
        elif name == "openat" and e["ret"] >= 0 and "O_CREAT" in args and "O_EXCL" in args and e["rpath"]:
            path = e["rpath"]
            inside = path[len(boxes):]
            if path.startswith(boxes + "/") and not inside.endswith(".lock") and "/tmp/" not in inside:
                created.append((e["exit"], path))
        elif name in ("fsync", "fdatasync") and e["ret"] == 0:
            path = qcheck.fd_path(args)
            if path:
                syncs.append((e["entry"], e["exit"], path))
    t.ok(all(qid in removed for qid in ids), "the trace shows both queue files removed")
    ends = sorted(removed.get(qid, -1) for qid in ids)
    deadline_of = lambda made: min([e for e in ends if e > made] or [-1])  # noqa: E731
    want = [os.path.join(boxes, "vmail.test"), os.path.join(boxes, "vmail.test", "deep"),
            os.path.join(boxes, "vmail.test", "deep", "u")] + \
        [os.path.join(boxes, "vmail.test", "deep", "u", s) for s in ("tmp", "new", "cur")] + \
        [os.path.join(boxes, "vmail.test", "m")]
    t.is_(sorted(path for _, path in created), sorted(want),
          "the trace shows every directory and the mailbox file the deliveries created")
    bad = []
    for made, path in created:
        parent = os.path.dirname(path)
        if not any(s[0] > made and s[1] < deadline_of(made) and s[2] == parent for s in syncs):
            bad.append("%s: no fsync of %s after it was created and before the queue file was removed" % (path, parent))
    t.ok(not bad, "every new directory entry was fsynced in its directory before the queue file went", "\n".join(bad))
    new_dir = os.path.join(boxes, "vmail.test", "deep", "u", "new")
    t.ok(any(s[2] == new_dir and s[1] < ends[0] for s in syncs), "the message's name in new/ was made durable (fsync of new/)")
    mbox = os.path.join(boxes, "vmail.test", "m")
    t.ok(any(s[2] == mbox and ends[0] < s[1] < ends[1] for s in syncs), "the mbox data was fsynced")
finally:
    if p.proc and p.proc.poll() is None:
        qcheck.kill_tree(p.proc)
    p.logf.close()
    p.__exit__(None, None, None)
t.done()
