"""Modules' blocking work has threads of its own (module_thread_limit).

blockmod's check_blockmod starts petrel_run_blocking jobs that each hold a
thread until this script closes their connection. With every module thread
held (and one more job queued behind them), a message is still committed
and answered 250: the queue's fsync threads never wait behind module work
(they did when petrel_run_blocking shared the smtpd worker's four commit
threads). Released, every job completes on the loop. Held again, a stop
does not wait for them: petreld is gone without the master's kill, the
worker logs that it abandoned the work and skipped the module's fini."""
import os
import socket
import tempfile
import time

from harness import CLEANUP_DIRS, Petrel, Smtp, Tap, run_as_user
from modlib import module_dir

t = Tap()
THREADS = 4


class Holder:
    """The unix socket blockmod's jobs connect to; holds each connection open."""

    def __init__(self):
        d = tempfile.mkdtemp(prefix="petrel-blockmod-")
        os.chmod(d, 0o755)
        CLEANUP_DIRS.append(d)
        self.path = os.path.join(d, "hold.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)
        self.sock.listen(64)
        self.held = []

    def accept(self, n, timeout=10):
        """Waits until n more jobs are connected (each is then on a thread)."""
        self.sock.settimeout(timeout)
        want = len(self.held) + n
        try:
            while len(self.held) < want:
                self.held.append(self.sock.accept()[0])
        except socket.timeout:
            pass
        return len(self.held)

    def release(self):
        self.sock.settimeout(5)
        for c in self.held:
            c.close()
        self.held = []
        # the queued job connects once a thread is free: release it too
        try:
            while True:
                self.sock.accept()[0].close()
        except socket.timeout:
            pass


h = Holder()
mods = module_dir("blockmod")
main_cf = {"modules": "blockmod", "module_directory": mods, "blockmod_socket": h.path,
           "blockmod_jobs": str(THREADS + 1), "module_thread_limit": str(THREADS),
           "smtpd_recipient_restrictions": "check_blockmod, permit_mynetworks, reject"}
with Petrel(t, main_cf=main_cf, workers=1) as p:
    c = Smtp(p.port, timeout=20)
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok", "MAIL")
    t.is_(c.cmd("RCPT TO:<u@petrel.test>"), "250 2.1.5 Ok", "RCPT: check_blockmod started its jobs and answered")
    t.is_(h.accept(THREADS), THREADS, "every module thread holds a job (one more is queued)")
    t.is_(c.cmd("DATA")[:3], "354", "DATA")
    c.send(b"Subject: commit behind module work\r\n\r\nbody\r\n.\r\n")
    try:
        reply = c.read_reply()
    except OSError as e:
        reply = "no reply: %s" % e
    t.like(reply, r"^250 2\.0\.0 Ok: queued as \w+$", "the message is committed while module work holds every thread")
    t.is_(len(h.held), THREADS, "and the module's jobs are still held")
    c.cmd("QUIT")
    c.close()
    h.release()
    t.ok(p.wait_log(r"blockmod: job done, 0 still out") is not None, "released, every job completes on the loop")

    # --- a stop does not wait for module work that does not end ---------------
    c = Smtp(p.port, timeout=20)
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<u@petrel.test>"), "250 2.1.5 Ok", "RCPT starts jobs again")
    t.is_(h.accept(THREADS), THREADS, "every module thread holds a job again")
    c.close()
    start = time.time()
    p.stop()
    took = time.time() - start
    log = p.log()
    t.ok("workers did not stop" not in log, "petreld stopped without the master killing a worker",
         "took %.1fs" % took)
    t.ok("module blockmod: %d blocking calls still running 1000 ms after the stop began: abandoned, and the "
         "module's fini is skipped" % (THREADS + 1) in log, "the abandoned work is logged", log[-2000:])
    t.ok("blockmod: fini with %d jobs out" % (THREADS + 1) not in log,
         "its fini did not run under the work still on the threads")
    h.release()
t.done()
