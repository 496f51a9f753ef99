"""Durability, part 2 (issue 3): proof of fsync, from the daemon's system calls.

petreld runs under `strace -f -yy` (every thread of the master and the workers;
-yy prints the path or socket behind every descriptor) while concurrent clients
send messages. For every "250 2.0.0 Ok: queued as ID" written to a TCP socket the
trace must show, before that write: the O_CREAT of incoming/ID, every write of
it followed by a successful fdatasync/fsync of it, and a successful fsync of the
incoming/ directory that started after the file was created (the group commit
may run it on another thread). Ordering comes from the trace: a tracee stays
stopped until strace has printed its event, so a call whose exit is printed
before another call's entry finished before that call began.

Simulated power cut: another run is SIGKILLed in the middle of its traffic; from
its trace, every queue file is cut back to what was synced at the kill (deleted
when its directory entry was never fsynced, else truncated to the bytes its
last completed fdatasync covered), the daemon restarts (recovery) and part 1's
checker runs on what survived: every message that got a 250 must be there,
intact, exactly once.

The checker has teeth: t/tools/petreld-nofsync (PETREL_TEST_NO_FSYNC) must fail
both checks, for every accepted message.
"""
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402
from harness import Petrel, Smtp, Tap, sanitizer_env  # noqa: E402
import qcheck  # noqa: E402

CLIENTS = 4
PER_CLIENT = 15
t = Tap(timeout=400)   # four runs under strace, on a machine that may be loaded


def send_batch(port, first, count, sent, accepted, lock, stop=None):
    c = Smtp(port, timeout=60)
    c.ehlo()
    try:
        for seq in range(first, first + count):
            if stop is not None and stop.is_set():
                break
            message = qcheck.make_message(seq, big_every=5)
            with lock:
                sent[seq] = message
            reply = qcheck.smtp_send(c, seq, message)
            if c.code == 250 and "queued as " in reply:
                with lock:
                    accepted[seq] = reply.split("queued as ", 1)[1].strip()
    except (OSError, ConnectionError):
        pass
    finally:
        c.close()


class Traced:
    """petreld (binary) under strace in a fresh Petrel directory."""

    def __init__(self, binary):
        self.p = Petrel(t, workers=2, start=False)
        self.trace = os.path.join(self.p.dir, "strace.out")
        self.p.logf = open(self.p.log_path, "ab")
        # strace runs as root and execs setpriv, which drops to the test user.
        env = dict(os.environ)
        env.update(sanitizer_env(traced=True))
        env.update(self.p.name_service_env())
        self.p.proc = subprocess.Popen(qcheck.strace_command(self.trace) + self.p.command(binary, "-c", self.p.conf),
                                       stdout=self.p.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env)
        self.p.wait_listening(timeout=60)
        self.sent, self.accepted, self.lock = {}, {}, threading.Lock()

    def master(self):
        kids = qcheck.descendants(self.p.proc.pid)
        return kids[0] if kids else None

    def traffic(self, stop=None, per_client=PER_CLIENT):
        threads = [threading.Thread(target=send_batch, daemon=True,
                                    args=(self.p.port, 1 + i * 10000, per_client, self.sent, self.accepted,
                                          self.lock, stop))
                   for i in range(CLIENTS)]
        for th in threads:
            th.start()
        return threads

    def stop(self):
        """A clean stop (strace blocks SIGTERM for itself: signal the master)."""
        master = self.master()
        if master:
            os.kill(master, signal.SIGTERM)
        try:
            self.p.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            qcheck.kill_tree(self.p.proc)

    def crash(self):
        """SIGKILL of the master and every worker (strace then exits)."""
        master = self.master()
        if master:
            qcheck.kill_pid_tree(master)
        self.p.proc.wait(timeout=30)

    def close(self):
        self.p.logf.close()
        self.p.__exit__(None, None, None)


def fsync_order_run(binary):
    """Sends CLIENTS x PER_CLIENT messages; returns (accepted, QueueTrace)."""
    d = Traced(binary)
    try:
        for th in d.traffic():
            th.join(timeout=60)
        d.stop()
        return d.accepted, qcheck.QueueTrace(qcheck.strace_events(d.trace))
    finally:
        d.close()


def power_cut_run(binary):
    """Traffic, SIGKILL mid-way, every file cut back to its synced state,
    restart, then part 1's checker. Returns (accepted, problems, summary, cut)."""
    d = Traced(binary)
    try:
        stop = threading.Event()
        threads = d.traffic(stop=stop, per_client=1000)
        deadline = time.time() + 60   # at the rate of the machine: at once when it is quiet
        while time.time() < deadline and len(d.accepted) < 40:
            time.sleep(0.05)
        d.crash()
        stop.set()
        for th in threads:
            th.join(timeout=20)
        qt = qcheck.QueueTrace(qcheck.strace_events(d.trace))
        cut = {"deleted": 0, "truncated": 0, "kept": 0}
        incoming = os.path.join(d.p.queue, "incoming")
        for name in os.listdir(incoming):
            path = os.path.join(incoming, name)
            durable = qt.durable_state(name)
            if durable is None:
                os.unlink(path)
                cut["deleted"] += 1
            elif durable < os.path.getsize(path):
                os.truncate(path, durable)
                cut["truncated"] += 1
            else:
                cut["kept"] += 1
        d.p.start()   # without strace: the recovery scan, then a clean stop
        d.p.stop()
        problems, summary = qcheck.analyse(d.p.queue, d.sent, dict(d.accepted))
        return dict(d.accepted), problems, summary, cut
    finally:
        d.close()


full_build_no_fsync = qcheck.build_has_no_fsync()
nofsync = harness._runnable_copy(qcheck.PETRELD_NOFSYNC)
n = CLIENTS * PER_CLIENT

# --- the real daemon: every 250 after fsync of the file and of incoming/ ---
if full_build_no_fsync:
    for _ in range(5):
        t.ok(True, "# SKIP configured with --enable-test-no-fsync: petreld itself does not fsync")
else:
    t0 = time.time()
    accepted, qt = fsync_order_run(harness.PETRELD)
    t.is_(len(accepted), n, "petreld: all %d messages accepted under strace" % n)
    replies = sorted(qid for _, qid, _ in qt.replies)
    t.is_(replies, sorted(accepted.values()), "the trace shows one '250 ... queued as ID' socket write per message")
    bad = qt.violations()
    t.ok(not bad, "petreld: every 250 was written after fdatasync of its file and an fsync of incoming/ "
         "that began after the file's creation", "\n".join("%s: %s" % kv for kv in sorted(bad.items())[:20]))
    t.diag("petreld: %d messages, %d fsyncs of incoming/ (group commit), %.1f s"
           % (len(replies), len(qt.dir_syncs), time.time() - t0))
    accepted, problems, summary, cut = power_cut_run(harness.PETRELD)
    t.diag("petreld power cut: %s; queue %s" % (cut, summary))
    t.ok(len(accepted) >= 40, "petreld power cut: messages were accepted before the kill (%d)" % len(accepted))
    t.ok(not problems, "petreld power cut: dropping every unsynced write loses no accepted message",
         "\n".join(problems[:20]))

# --- the checker has teeth: the same checks fail without fsync ---
accepted, qt = fsync_order_run(nofsync)
t.is_(len(accepted), n, "petreld-nofsync: all %d messages accepted under strace" % n)
bad = qt.violations()
t.is_(sorted(bad), sorted(accepted.values()), "petreld-nofsync: the fsync checker flags every accepted message")
t.ok(not qt.dir_syncs and not any(qt.syncs.values()), "petreld-nofsync: the trace holds no queue fsync at all")
accepted, problems, summary, cut = power_cut_run(nofsync)
t.diag("petreld-nofsync power cut: %s; queue %s" % (cut, summary))
lost = [x for x in problems if "but not in the queue" in x]
t.ok(len(accepted) >= 40 and len(lost) == len(accepted),
     "petreld-nofsync power cut: the checker reports every accepted message lost (%d of %d)"
     % (len(lost), len(accepted)))
t.done()
