"""A private Dovecot for the tests: its own configuration, base_dir, state_dir, log and users
in a temp dir (never the system instance), run in the foreground (dovecot -F) and stopped
by PID. The SASL tests use it as an auth service (sasllib.DovecotAuth), the LMTP test as an
LMTP server (test_lmtp_dovecot.py): a subclass writes its dovecot.conf and says how to tell
that its socket is ready (probe)."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def require_dovecot(t):
    """Ends the test (a failure naming what is missing) unless it runs as root with
    dovecot installed and its system users present: the private instances need them."""
    import pwd
    if os.geteuid() != 0 or not os.access(DOVECOT, os.X_OK):
        t.ok(False, "needs root and dovecot (dovecot-core: PETREL_WITH_TESTS=1 scripts/install-deps.sh)")
        t.done()
    try:
        pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError as e:
        t.ok(False, "missing system user: %s" % e)
        t.done()

class Dovecot:
    """The common part: the directories, the users file, starting, stopping and the logs.
    self.socket is the unix socket probe() talks to; self.port a free loopback port for an
    inet listener."""

    what = "socket"   # in the error when it does not come up: "auth socket", "LMTP socket"

    def __init__(self, prefix, socket_name):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.dir, 0o755)
        self.base = os.path.join(self.dir, "run")
        self.state = os.path.join(self.dir, "state")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.out_path = os.path.join(self.dir, "dovecot.out")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.socket = os.path.join(self.base, socket_name)
        self.port = free_port()
        os.mkdir(self.state, 0o750)
        self.proc = None

    def write_users(self, users):
        """A passwd-file of name -> password ({PLAIN}); returns its path."""
        path = os.path.join(self.dir, "users")
        with open(path, "w") as f:
            for name, password in users.items():
                f.write("%s:{PLAIN}%s::::::\n" % (name, password))
        os.chmod(path, 0o644)
        return path

    def write_conf(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def probe(self, sock):
        """Talks to the connected unix socket; returns what start() returns when the service
        is ready, or None (then the reason is in self.last)."""
        raise NotImplementedError

    def start(self, timeout=15.0):
        self.out = open(self.out_path, "ab")
        self.proc = subprocess.Popen([DOVECOT, "-c", self.conf, "-F"], stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        self.last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dovecot exited with %s:\n%s" % (self.proc.returncode, self.logs()))
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(2)
                try:
                    s.connect(self.socket)
                    ready = self.probe(s)
                finally:
                    s.close()
                if ready is not None:
                    return ready
            except OSError as e:
                self.last = e
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("dovecot %s not ready (%s):\n%s" % (self.what, self.last, self.logs()))

    def stop(self, timeout=15.0):
        """Stops the master by PID (SIGTERM; SIGKILL to it and its children if it hangs)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.out.close()

    def logs(self):
        text = ""
        for path in (self.out_path, self.log_path):
            try:
                with open(path, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                pass
        return text

    def cleanup(self):
        self.stop()
        if not os.environ.get("PETREL_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
