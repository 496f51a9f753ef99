"""A private PostgreSQL cluster for the pgsql: table tests: initdb and pg_ctl run as the
unprivileged test user in a temporary directory, the server listens on 127.0.0.1 on a free
port and on a socket in that directory, and is stopped (fast) by stop(). The superuser
"admin" connects over the socket without a password; TCP connections need a password
(scram-sha-256), as a production pgsql_table(5) file would give."""
import atexit
import glob
import os
import signal
import subprocess
import tempfile

from harness import CLEANUP_DIRS, free_port, run_as_user


def pg_bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class PgCluster:
    def __init__(self, extra_opts="", hba=None):
        """extra_opts: more postgres -c options (e.g. ssl=on ...); hba: the
        pg_hba.conf to write before the first start, instead of initdb's."""
        self.extra_opts = extra_opts
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL's server binaries are not installed (Debian: postgresql)")
        self.dir = tempfile.mkdtemp(prefix="petrel-pg-")
        os.chmod(self.dir, 0o755)
        CLEANUP_DIRS.append(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.prefix, self.pw = run_as_user()
        if self.pw:
            os.chown(self.dir, self.pw.pw_uid, self.pw.pw_gid)
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write("adminpw\n")
        if self.pw:
            os.chown(pwfile, self.pw.pw_uid, self.pw.pw_gid)
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "admin", "--auth-local=trust",
                   "--auth-host=scram-sha-256", "--pwfile=" + pwfile, "-E", "UTF8", "--locale=C"])
        if hba is not None:
            with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
                f.write(hba)
        self.started = False
        self.start()
        atexit.register(self._kill)   # a test that dies half-way leaves no server behind

    def _run(self, args, **kw):
        r = subprocess.run(self.prefix + args, capture_output=True, text=True, timeout=120, **kw)
        if r.returncode != 0:
            raise RuntimeError("%s: exit %d: %s" % (" ".join(args[:2]), r.returncode, r.stderr))
        return r

    def start(self):
        opts = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off %s" % (self.port, self.dir, self.extra_opts)
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"),
                   "-o", opts, "-w", "start"])
        self.started = True

    def stop(self):
        if self.started:
            self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"])
            self.started = False

    def _kill(self):
        if not self.started:
            return
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                os.kill(int(f.readline()), signal.SIGQUIT)
        except (OSError, ValueError):
            pass

    def psql(self, sql, db="postgres"):
        return self._run(["psql", "-h", self.dir, "-p", str(self.port), "-U", "admin", "-d", db, "-v",
                          "ON_ERROR_STOP=1", "-q", "-A", "-t", "-c", sql]).stdout
