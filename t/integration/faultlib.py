"""Fault injection for the integration tests (issue 8): petreld under the faultfs
LD_PRELOAD shim (t/tools/faultfs.c) with rules switched at run time, small tmpfs
mounts for real ENOSPC, and the CPU share of a process (a busy loop shows as ~100%).

    faults = Faults(p)            # a rules file in the test directory
    faults.start()                # p.start() with the shim preloaded
    faults.set("op=fsync path=/incoming/ errno=EIO")
    ... faults.fired("fsync") ...
    faults.clear()
"""
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time

import harness
from harness import TOP_BUILDDIR, run_as_user

FAULTFS = os.path.join(TOP_BUILDDIR, "t", "tools", ".libs", "faultfs.so")
QMGR = "qmgr unix n - n 300 1 qmgr\n"


def _sanitizer_runtime():
    """When petreld uses a shared ASan runtime (gcc's libasan.so), it must come
    first in LD_PRELOAD. clang links its runtime into the program: nothing to
    preload then (preloading gcc's would crash it)."""
    out = subprocess.run(["ldd", harness.PETRELD], capture_output=True, text=True).stdout
    m = re.search(r"^\s*libasan\.so\S*\s+=>\s+(\S+)", out, re.M)
    return m.group(1) if m else None


class Faults:
    """The shim's rules file and fault log for one Petrel instance."""

    def __init__(self, p):
        self.p = p
        self.rules = os.path.join(p.dir, "faults.rules")
        self.log = os.path.join(p.dir, "faults.log")
        self.clear()
        with open(self.log, "w"):
            pass
        os.chmod(self.log, 0o666)

    def env(self):
        shim = harness._runnable_copy(FAULTFS)
        pre = _sanitizer_runtime()
        return {"LD_PRELOAD": (pre + " " if pre else "") + shim,
                "PETREL_FAULTS_FILE": self.rules, "PETREL_FAULTS_LOG": self.log}

    def start(self):
        """Starts petreld (harness.Petrel.start) with the shim preloaded."""
        saved = dict(os.environ)
        os.environ.update(self.env())
        try:
            self.p.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def set(self, *rules):
        tmp = self.rules + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(rules) + "\n")
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.rules)

    def clear(self):
        self.set()

    def fired(self, op=None, path=None):
        """The faults injected so far: [(pid, op, path, errno name or 'short')]."""
        out = []
        with open(self.log) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4 and (op is None or parts[1] == op) and (path is None or path in parts[2]):
                    out.append((int(parts[0]), parts[1], parts[2], parts[3]))
        return out

    def reset_log(self):
        with open(self.log, "w"):
            pass


def cpu_share(pid, seconds=1.0):
    """The share of one CPU that pid used over `seconds` (utime + stime from
    /proc/PID/stat): about 0 for an idle process, about 1.0 for a busy loop."""
    def ticks():
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    hz = os.sysconf("SC_CLK_TCK")
    a, t0 = ticks(), time.time()
    time.sleep(seconds)
    b, t1 = ticks(), time.time()
    return (b - a) / hz / (t1 - t0)


def qmgr_pid(p):
    """The running queue manager's PID, from its log lines (it logs at start), else
    from `petrelctl status`."""
    for pid in reversed(re.findall(r"petrel/qmgr\[(\d+)\]", p.log())):
        if alive(int(pid)):
            return int(pid)
    m = re.search(r"queue manager pid (\d+)", p.petrelctl("status").stdout)
    return int(m.group(1)) if m else None


def qmgr_idle(t, p, what):
    """A check that p's queue manager uses under 30% of a CPU over a second (a busy loop
    shows as ~100%)."""
    pid = qmgr_pid(p)
    share = cpu_share(pid, 1.0) if pid else 1.0
    t.ok(share < 0.3, "%s: the queue manager is idle (CPU %.0f%% over 1 s)" % (what, 100 * share))


def mail(c, sender, rcpt, body):
    """MAIL, RCPT and DATA on session c whatever MAIL and RCPT answer (a fault may strike
    at either), then body (ending in CRLF) and the end of data: the reply to that, or
    to DATA when it did not answer 354."""
    c.cmd("MAIL FROM:<%s>" % sender)
    c.cmd("RCPT TO:<%s>" % rcpt)
    r = c.cmd("DATA")
    if c.code != 354:
        return r
    c.send(body + b".\r\n")
    return c.read_reply()


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def queue_names(p, d):
    path = os.path.join(p.queue, d)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def maildir_files(path):
    """Every file in a Maildir's tmp/ and new/ (to check that nothing half-written is left)."""
    out = {}
    for sub in ("tmp", "new"):
        d = os.path.join(path, sub)
        out[sub] = sorted(os.listdir(d)) if os.path.isdir(d) else []
    return out


def need_root(t, what):
    """Mounting needs root (CI runs the suite as root); elsewhere the test says why it skips."""
    if os.geteuid() == 0:
        return True
    t.ok(True, "# SKIP %s needs root to mount a small tmpfs (the suite runs as root in CI)" % what)
    return False


@contextlib.contextmanager
def small_tmpfs(size="1m", where=None):
    """A tmpfs of `size` mounted at `where` (default: a new temporary directory),
    owned by the test user, unmounted afterwards."""
    mnt = where or tempfile.mkdtemp(prefix="petrel-smallfs-")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", mnt], check=True)
    try:
        _, pw = run_as_user()
        if pw:
            os.chown(mnt, pw.pw_uid, pw.pw_gid)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt])
        if where is None:
            shutil.rmtree(mnt, ignore_errors=True)


def fill(mnt, leave=0):
    """Fills the file system at mnt (a root-owned file), leaving about `leave` bytes."""
    path = os.path.join(mnt, ".filler")
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize - leave
    with open(path, "wb") as f:
        chunk = b"\0" * 65536
        while free > 0:
            try:
                f.write(chunk[:min(free, len(chunk))])
                f.flush()
            except OSError:
                break
            free -= len(chunk)
    return path
