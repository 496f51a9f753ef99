"""Shared code of the durability tests (t/integration/test_durability.py,
t/integration/test_fsync_order.py): deterministic test messages, the queue
checker (t/tools/queue-check validates every file with the daemon's own reader;
this module reads the content through the offsets it prints and matches it
against what the clients sent), process-tree kills and a strace parser."""
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time

TOP_BUILDDIR = os.environ.get("top_builddir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QUEUE_CHECK = os.path.join(TOP_BUILDDIR, "t", "tools", "queue-check")
PETRELD_NOFSYNC = os.path.join(TOP_BUILDDIR, "t", "tools", "petreld-nofsync")
QUEUE_DIRS = ("incoming", "active", "deferred", "hold")


def build_has_no_fsync():
    """True when the whole build was configured with --enable-test-no-fsync."""
    try:
        with open(os.path.join(TOP_BUILDDIR, "config.h")) as f:
            return re.search(r"^#define PETREL_TEST_NO_FSYNC\b", f.read(), re.M) is not None
    except OSError:
        return False


# ---- messages ----

def make_message(seq, big_every=10):
    """The exact bytes (CRLF lines, ending in CRLF, no line starting with a dot)
    of message number seq; deterministic, so a checker can rebuild it. Every
    big_every-th message is 70-200 KiB, so the writer flushes its 64 KiB buffer
    several times before the commit; the others are 0.2-3 KiB."""
    rng = random.Random(seq * 7919 + 17)
    size = rng.randint(70000, 200000) if big_every and seq % big_every == 3 else rng.randint(200, 3000)
    lines = []
    total = 0
    while total < size:
        line = "%x" % rng.getrandbits(300)
        lines.append(line)
        total += len(line) + 2
    body = ("\r\n".join(lines) + "\r\n").encode()
    headers = ("From: <sender%d@example.org>\r\nTo: <rcpt@petrel.test>\r\nSubject: durability %d\r\n"
               "X-Seq: %d\r\nX-Body-SHA256: %s\r\n\r\n" % (seq, seq, seq, hashlib.sha256(body).hexdigest()))
    return headers.encode() + body


def smtp_send(c, seq, message, sender=None):
    """One transaction on an open harness.Smtp after EHLO. Returns the final
    reply line; raises OSError/ConnectionError when the connection breaks."""
    r = c.cmd("MAIL FROM:<%s>" % (sender or "sender%d@example.org" % seq))
    if c.code != 250:
        return r
    r = c.cmd("RCPT TO:<rcpt@petrel.test>")
    if c.code != 250:
        return r
    r = c.cmd("DATA")
    if c.code != 354:
        return r
    c.send(message + b".\r\n")
    return c.read_reply()


# ---- the queue checker ----

def queue_check(queue_dir, dirs=None):
    """Runs t/tools/queue-check: one dict per file of the queue directories."""
    r = subprocess.run([QUEUE_CHECK, queue_dir] + list(dirs or []), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("queue-check failed (%d): %s" % (r.returncode, r.stderr))
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def read_content(queue_dir, rec):
    with open(os.path.join(queue_dir, rec["dir"], rec["id"]), "rb") as f:
        f.seek(rec["content_offset"])
        return f.read(rec["content_length"])


def check_content(content, message):
    """'' when content is a Received header block followed by exactly the
    message the client sent (whose X-Body-SHA256 matches its body), else a
    reason."""
    if message is None:
        return "no such message was ever sent"
    if not content.endswith(message):
        return "content differs from what was sent (%d bytes stored, %d sent)" % (len(content), len(message))
    prefix = content[:len(content) - len(message)]
    if not re.match(rb"^Received: [^\r\n]*\r\n([ \t][^\r\n]*\r\n)*$", prefix):
        return "unexpected bytes before the message: %r" % prefix[:200]
    head, body = message.split(b"\r\n\r\n", 1)
    m = re.search(rb"\r\nX-Body-SHA256: ([0-9a-f]{64})\r", head + b"\r")
    if not m or hashlib.sha256(body).hexdigest().encode() != m.group(1):
        return "body checksum mismatch"
    return ""


def x_seq(content):
    head = content.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"(?:^|\r\n)X-Seq: (\d+)\r\n", head + b"\r\n")
    return int(m.group(1)) if m else None


class SentMessages:
    """seq -> make_message(seq, big_every) for a set of seqs, without keeping
    the bytes in memory (a long run sends tens of thousands)."""

    def __init__(self, big_every=10):
        self.big_every = big_every
        self.seqs = set()

    def add(self, seq):
        self.seqs.add(seq)

    def get(self, seq, default=None):
        return make_message(seq, self.big_every) if seq in self.seqs else default

    def __contains__(self, seq):
        return seq in self.seqs

    def __iter__(self):
        return iter(self.seqs)

    def __len__(self):
        return len(self.seqs)


def analyse(queue_dir, sent, accepted, allow_incoming=False):
    """Checks a stopped daemon's queue. sent: seq -> message bytes (or a
    a SentMessages) for every message a client started; accepted: seq -> queue ID from its 250 reply.
    Returns (problems, summary): every accepted message exactly once, under its
    ID, intact; nothing never sent; every other message present at most once
    and intact; nothing but complete queue files (incoming/ must be empty after
    a recovery unless allow_incoming)."""
    problems = []
    found = {}   # seq -> [(dir, id)]
    files = queue_check(queue_dir, list(QUEUE_DIRS) + ["corrupt"])
    for rec in files:
        where = "%s/%s" % (rec["dir"], rec["id"])
        if rec["result"] != "ok":
            problems.append("%s: %s %s" % (where, rec["result"], rec.get("error", "")))
            continue
        if rec["dir"] == "corrupt":
            problems.append("%s: a valid file in corrupt/" % where)
        if rec["dir"] == "incoming" and not allow_incoming:
            problems.append("%s: left in incoming/ after recovery" % where)
        content = read_content(queue_dir, rec)
        seq = x_seq(content)
        if seq is None:
            problems.append("%s: no X-Seq header (never sent by this test)" % where)
            continue
        why = check_content(content, sent.get(seq))
        if why:
            problems.append("%s: X-Seq %d: %s" % (where, seq, why))
        found.setdefault(seq, []).append((rec["dir"], rec["id"]))
    for seq, qid in sorted(accepted.items()):
        places = found.get(seq, [])
        if not places:
            problems.append("X-Seq %d: accepted as %s but not in the queue" % (seq, qid))
        elif len(places) > 1:
            problems.append("X-Seq %d: accepted as %s but queued %d times: %s" % (seq, qid, len(places), places))
        elif places[0][1] != qid:
            problems.append("X-Seq %d: accepted as %s but queued as %s" % (seq, qid, places[0][1]))
    for seq, places in sorted(found.items()):
        if seq not in accepted and len(places) > 1:
            problems.append("X-Seq %d (not accepted): queued %d times: %s" % (seq, len(places), places))
    summary = {
        "files": len(files),
        "accepted": len(accepted),
        "sent": len(sent),
        "unacknowledged_present": sum(1 for s in found if s not in accepted),
        "unacknowledged_absent": sum(1 for s in sent if s not in accepted and s not in found),
    }
    return problems, summary


# ---- killing a daemon's whole process tree ----

def descendants(pid):
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid):
    """Whether any thread of process pid still runs. A zombie whose parent
    never reaps it counts as gone, but only once its last thread has left:
    the thread-group leader shows "Z" as soon as it exits itself, while the
    process's other threads (a commit pool in a write or an fsync) still
    run and still hold its descriptors - the listening socket, whose backlog
    then answers a new daemon's readiness probe, and the pid-file lock."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                return True
        return len(os.listdir("/proc/%d/task" % pid)) > 1
    except OSError:
        return False


def kill_tree(proc, timeout=10.0):
    """SIGKILLs a daemon and every process under it, as a power cut would stop
    them: the master is stopped first so it cannot fork replacements. Waits
    until none of them is alive. Returns the PIDs killed."""
    pids = kill_pid_tree(proc.pid, timeout)
    proc.wait(timeout=timeout)
    return pids


def kill_pid_tree(pid, timeout=10.0):
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    pids = descendants(pid)
    for p in pids + [pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids + [pid]):
        time.sleep(0.01)
    left = [p for p in pids + [pid] if alive(p)]
    if left:
        raise RuntimeError("processes %s survived SIGKILL" % left)
    return [pid] + pids


# ---- strace -f -tt -yy traces ----

STRACE_SYSCALLS = "openat,write,writev,pwrite64,pwritev,sendto,sendmsg,fsync,fdatasync,rename,renameat,renameat2,unlinkat,close"
_LINE = re.compile(r"^(\d+)\s+(\d\d:\d\d:\d\d\.\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)(?:<(.*?)>)?(.*)$", re.S)
_PATH_FD = re.compile(r"^(\d+)<(/[^>]*)>")


def strace_command(out):
    return ["strace", "-f", "-tt", "-yy", "-s", "512", "-e", "trace=" + STRACE_SYSCALLS, "-o", out]


def strace_events(path):
    """The system calls of a trace: dicts with pid, name, args, ret (int), rpath
    (the path strace printed for a returned fd), entry and exit (positions in
    the trace: strace prints events in the order it sees the tracees stop, and a
    tracee stays stopped until strace has printed, so a call whose exit comes
    before another's entry finished first). Calls never finished are dropped."""
    events, pending = [], {}
    with open(path, errors="replace") as f:
        for idx, line in enumerate(f):
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            pid, rest = int(m.group(1)), m.group(3)
            if rest.startswith("---") or rest.startswith("+++"):
                continue
            r = _RESUMED.match(rest)
            if r:
                if pid not in pending:
                    continue
                entry, text = pending.pop(pid)
                text, exit_ = text + r.group(2), idx
            elif rest.endswith("<unfinished ...>"):
                pending[pid] = (idx, rest[:-len("<unfinished ...>")].rstrip())
                continue
            else:
                entry, exit_, text = idx, idx, rest
            c = _CALL.match(text)
            if not c:
                continue
            events.append({"pid": pid, "name": c.group(1), "args": c.group(2), "ret": int(c.group(3)),
                           "rpath": c.group(4), "entry": entry, "exit": exit_})
    return events


def fd_path(args):
    m = _PATH_FD.match(args)
    return m.group(2) if m else None


class QueueTrace:
    """What a trace says about each queue file of incoming/ and each reply."""

    def __init__(self, events):
        self.created = {}      # id -> exit position of its O_CREAT openat
        self.writes = {}       # id -> [(entry, exit, bytes)]
        self.syncs = {}        # id -> [(entry, exit, name, ret)]
        self.dir_syncs = []    # [(entry, exit, ret)] of fsync(incoming/)
        self.replies = []      # [(entry, id, pid)] of "250 ... queued as ID" written to a TCP socket
        for e in events:
            name, args = e["name"], e["args"]
            if name == "openat" and "O_CREAT" in args and e["ret"] >= 0 and e["rpath"]:
                m = re.search(r"/incoming/([0-9A-Z]+)$", e["rpath"])
                if m:
                    self.created[m.group(1)] = e["exit"]
                continue
            path = fd_path(args)
            if name in ("write", "writev", "pwrite64", "pwritev", "sendto", "sendmsg"):
                if re.match(r"^\d+<TCP:", args):
                    for qid in re.findall(r"250 2\.0\.0 Ok: queued as ([0-9A-Z]+)", args):
                        self.replies.append((e["entry"], qid, e["pid"]))
                elif path and "/incoming/" in path and e["ret"] >= 0:
                    self.writes.setdefault(path.rsplit("/", 1)[1], []).append((e["entry"], e["exit"], e["ret"]))
            elif name in ("fsync", "fdatasync") and path:
                if path.endswith("/incoming"):
                    self.dir_syncs.append((e["entry"], e["exit"], e["ret"]))
                elif "/incoming/" in path:
                    self.syncs.setdefault(path.rsplit("/", 1)[1], []).append((e["entry"], e["exit"], name, e["ret"]))

    def violations(self):
        """For every 250 reply: the file was created, every write to it was
        followed by a successful fsync/fdatasync of it, and a successful fsync
        of incoming/ started after its creation; both finished before the
        reply was written. Returns {id: reason}."""
        bad = {}
        for reply_at, qid, pid in self.replies:
            created = self.created.get(qid)
            if created is None:
                bad[qid] = "no O_CREAT openat of incoming/%s in the trace" % qid
                continue
            writes = [w for w in self.writes.get(qid, []) if w[1] < reply_at]
            last_write = max([w[1] for w in writes], default=created)
            if not writes:
                bad[qid] = "no write to the file before the reply"
                continue
            if not any(s[0] > last_write and s[1] < reply_at and s[3] == 0 for s in self.syncs.get(qid, [])):
                bad[qid] = "file not fsynced/fdatasynced after its last write and before the 250 (trace line %d)" \
                    % (reply_at + 1)
                continue
            if not any(d[0] > created and d[1] < reply_at and d[2] == 0 for d in self.dir_syncs):
                bad[qid] = "no fsync of incoming/ between the file's creation and the 250 (trace line %d)" \
                    % (reply_at + 1)
        return bad

    def durable_state(self, qid, end=None):
        """After a crash at trace position end (default: the end of the
        trace), what survives of incoming/qid if the kernel kept only what was
        synced: None (the directory entry was never made durable) or the
        number of bytes made durable by the last completed file sync."""
        end = float("inf") if end is None else end
        created = self.created.get(qid)
        if created is None or not any(d[0] > created and d[1] < end and d[2] == 0 for d in self.dir_syncs):
            return None
        size = 0
        for s in self.syncs.get(qid, []):
            if s[1] < end and s[3] == 0:
                size = max(size, sum(w[2] for w in self.writes.get(qid, []) if w[1] < s[0]))
        return size
