"""A private MariaDB server for the mysql: table tests: mariadb-install-db and mariadbd run
as the unprivileged test user in a temporary directory, listening on 127.0.0.1 on a free port
and on a socket in that directory; stop() ends it (SIGTERM, waited for). root connects over the
socket without a password; the tables' user needs its password over TCP."""
import atexit
import os
import signal
import subprocess
import tempfile
import time

from harness import CLEANUP_DIRS, free_port, run_as_user


class MariaDB:
    def __init__(self, extra_args=()):
        self.extra_args = list(extra_args)   # e.g. --ssl-cert=... --require-secure-transport=ON
        self.dir = tempfile.mkdtemp(prefix="petrel-mariadb-")
        os.chmod(self.dir, 0o755)
        CLEANUP_DIRS.append(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.port = free_port()
        self.prefix, self.pw = run_as_user()
        if self.pw:
            os.chown(self.dir, self.pw.pw_uid, self.pw.pw_gid)
        r = subprocess.run(self.prefix + ["mariadb-install-db", "--no-defaults", "--datadir=" + self.data,
                                          "--auth-root-authentication-method=normal", "--skip-test-db"],
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError("mariadb-install-db: %s%s" % (r.stdout, r.stderr))
        self.proc = None
        self.start()
        atexit.register(self.stop)

    def start(self):
        self.proc = subprocess.Popen(self.prefix + [
            "mariadbd", "--no-defaults", "--datadir=" + self.data, "--socket=" + self.sock,
            "--port=%d" % self.port, "--bind-address=127.0.0.1", "--pid-file=" + os.path.join(self.dir, "pid"),
            "--log-error=" + os.path.join(self.dir, "err"), "--skip-log-bin", "--innodb-buffer-pool-size=16M",
            "--skip-name-resolve"] + self.extra_args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mariadbd exited: %s" % open(os.path.join(self.dir, "err")).read()[-2000:])
            r = subprocess.run(self.prefix + ["mariadb-admin", "--no-defaults", "-S", self.sock, "-u", "root",
                                              "ping"], capture_output=True, text=True)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("mariadbd did not answer within 60 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def sql(self, statements, db=""):
        r = subprocess.run(self.prefix + ["mariadb", "--no-defaults", "-S", self.sock, "-u", "root", "-N", "-B",
                                          "-e", statements] + ([db] if db else []),
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("mariadb: %s" % r.stderr)
        return r.stdout
