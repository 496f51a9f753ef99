"""Integration-test harness: starts petreld on free loopback ports and talks SMTP to it.

Every test script prints TAP (read by automake's TAP driver). A test:

    from harness import Tap, Petrel, Smtp
    t = Tap()
    with Petrel(t, main_cf={"smtpd_timeout": "5s"}) as p:
        c = p.connect()
        t.is_(c.code, 220, "greeting")
    t.done()

Rules kept here so no test forgets them: every daemon runs under a timeout and
is stopped by PID; ports are picked free on 127.0.0.1 and reserved for the
test process's life (free_port); when the suite runs as
root, petreld runs as the unprivileged user `petrel` (single-user mode), as
users run it in development.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

from portlib import free_port, refused_dns_port, refused_port, revive_port  # noqa: F401 (tests import them from here)

TOP_BUILDDIR = os.environ.get("top_builddir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEST_USER = os.environ.get("PETREL_TEST_USER", "petrel")
CLEANUP_DIRS = []


def _runnable_copy(path):
    """When tests run as root, petreld runs as TEST_USER, who may not be able
    to reach a build tree under a private home directory: run copies of the
    binaries from a world-readable temporary directory instead."""
    if os.geteuid() != 0:
        return path
    bindir = os.path.join(tempfile.gettempdir(), "petrel-test-bin-%d" % os.getpid())
    os.makedirs(bindir, mode=0o755, exist_ok=True)
    os.chmod(bindir, 0o755)
    target = os.path.join(bindir, os.path.basename(path))
    shutil.copy2(path, target)
    os.chmod(target, 0o755)
    if bindir not in CLEANUP_DIRS:
        CLEANUP_DIRS.append(bindir)
    return target


# --- sanitizer builds (configure --enable-sanitizers) --------------------------
# Every process a test starts (petreld and its roles, petrelctl,
# petrel-sendmail, the test tools) inherits ASAN_OPTIONS / UBSAN_OPTIONS that
# send its reports to files in one directory per test script, so a report
# cannot hide in a log nobody reads or in a captured stderr. Tap.done() fails
# the script for every report found there or in a petreld log, naming it.
# UBSan halts at its first report (with a stack), like ASan. LeakSanitizer
# runs in processes that exit normally (the tools, the master); the roles
# leave with _exit(), so their leaks are not checked here (see doc/testing.md).
SANITIZED = "-fsanitize" in os.environ.get("PETREL_SAN_CFLAGS", "")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
                     "WARNING: AddressSanitizer", "ERROR: UndefinedBehaviorSanitizer")
SANITIZER_DIR = tempfile.mkdtemp(prefix="petrel-san-")
os.chmod(SANITIZER_DIR, 0o1777)   # petreld's roles write here as the test user
if not os.environ.get("PETREL_KEEP_TEST_DIRS"):
    CLEANUP_DIRS.append(SANITIZER_DIR)
SANITIZER_LOGS = []               # petreld logs scanned by Tap.done()
SANITIZER_FOUND = []              # (where, report text) seen in logs already removed


def _base_sanitizer_options():
    """The options every process of a test script starts with; the caller's
    own ASAN_OPTIONS / UBSAN_OPTIONS come after them, so they win."""
    # One runtime serves both in a clang build and reads both variables (the
    # later wins for shared flags such as log_path): same path in both.
    # gcc's separate libubsan ignores log_path (its reports go to stderr,
    # where the harness reads petreld's): CI builds with clang.
    log_path = "log_path=%s/report" % SANITIZER_DIR
    asan = [log_path, "detect_leaks=1", "strict_string_checks=1", "detect_stack_use_after_return=1"]
    ubsan = [log_path, "print_stacktrace=1", "halt_on_error=1"]
    for var, opts in (("ASAN_OPTIONS", asan), ("UBSAN_OPTIONS", ubsan)):
        os.environ[var] = ":".join(x for x in (":".join(opts), os.environ.get(var)) if x)


_base_sanitizer_options()


def sanitizer_env(crash_test=False, traced=False):
    """Environment changes for one child process, on top of os.environ.
    crash_test: the test kills a role with a fatal signal on purpose, so ASan
    leaves SIGSEGV & co. to petreld's own handlers, as in production.
    traced: the process runs under strace, where LeakSanitizer cannot work."""
    extra = []
    if crash_test:
        extra += ["handle_segv=0", "handle_sigbus=0", "handle_sigfpe=0", "handle_sigill=0", "handle_abort=0"]
    if traced:
        extra += ["detect_leaks=0"]
    return {"ASAN_OPTIONS": ":".join(x for x in [os.environ.get("ASAN_OPTIONS")] + extra if x)}


def sanitizer_reports():
    """[(where, text)] for every sanitizer report written so far."""
    found = list(SANITIZER_FOUND)
    for name in sorted(os.listdir(SANITIZER_DIR)):
        path = os.path.join(SANITIZER_DIR, name)
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if text.strip():
            found.append((name, text))
    for path in SANITIZER_LOGS:
        found.extend(_scan_log(path))
    return found


def _scan_log(path):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            return [(path, "\n".join(lines[max(0, i - 2):i + 60]))]
    return []


def _report_summary(text):
    """The lines that name a report: its ERROR / runtime error / SUMMARY lines
    and the first frames of its stack."""
    lines = text.splitlines()
    keep = [l for l in lines if any(m in l for m in SANITIZER_MARKERS) or l.startswith("SUMMARY:")]
    frames = [l for l in lines if l.strip().startswith("#")][:12]
    return "\n".join(keep[:6] + frames) or "\n".join(lines[:10])


PETRELD = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "master", "petreld"))
PETRELCTL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrelctl"))
SCRIPT_TIMEOUT = int(os.environ.get("PETREL_TEST_TIMEOUT", "300"))


class Tap:
    """A minimal TAP producer with a watchdog that fails the script if it hangs."""

    def __init__(self, timeout=SCRIPT_TIMEOUT):
        self.count = 0
        self.failed = 0
        signal.signal(signal.SIGALRM, self._timeout)
        signal.alarm(timeout)

    def _timeout(self, signum, frame):
        self.ok(False, "test script timed out")
        self.done()

    def ok(self, cond, desc, diag=None):
        self.count += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.count, desc))
        if not cond:
            self.failed += 1
            if diag:
                for line in str(diag).splitlines():
                    print("#   " + line)
        sys.stdout.flush()
        return cond

    def skip(self, desc, reason):
        """A check that cannot mean anything in this build (e.g. a memory
        bound under AddressSanitizer, whose shadow memory and quarantine
        dwarf what is measured): TAP's SKIP, with the reason."""
        self.count += 1
        print("ok %d - %s # SKIP %s" % (self.count, desc, reason))
        sys.stdout.flush()

    def is_(self, got, want, desc):
        return self.ok(got == want, desc, "got:  %r\nwant: %r" % (got, want))

    def like(self, got, pattern, desc):
        return self.ok(got is not None and re.search(pattern, got) is not None, desc,
                       "got:  %r\nwant match: %r" % (got, pattern))

    def diag(self, text):
        for line in str(text).splitlines():
            print("# " + line)

    def done(self):
        reports = sanitizer_reports()
        if reports or SANITIZED:
            where = ", ".join(sorted(set(w for w, _ in reports)))
            self.ok(not reports, "no sanitizer report from any process of this test" +
                    (" (found: %s)" % where if reports else ""),
                    "\n\n".join("%s:\n%s" % (w, _report_summary(t)) for w, t in reports))
        print("1..%d" % self.count)
        sys.stdout.flush()
        for d in CLEANUP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
        # _exit: a watchdog may call this from a signal handler mid-test.
        os._exit(1 if self.failed else 0)


def _queue_file_parts(path):
    """(envelope records that count, content) of a queue file, as its
    readers see them (doc/queue-format.md): in a version 2 file (edited at
    end of message) the envelope after the data and the content map's
    ranges; in version 1 the one envelope and the bytes after it. Raises
    ValueError on a file that is not a complete queue file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 16 or data[:8] != b"PETRELQ1":
        raise ValueError("%s: not a queue file" % path)
    if data[8] == 2:
        end = data[-49:]
        data_off, data_len, env_off = struct.unpack(">QQQ", end[5:29])
        envelope = data[env_off:len(data) - 49]
        region = data[data_off:data_off + data_len]
        pos, ranges = 0, None
        while pos + 5 <= len(envelope):
            kind, length = envelope[pos], struct.unpack(">I", envelope[pos + 1:pos + 5])[0]
            if kind == ord("C"):
                payload = envelope[pos + 5:pos + 5 + length]
                ranges = [struct.unpack(">QQ", payload[i:i + 16]) for i in range(0, length, 16)]
            pos += 5 + length
        content = region if ranges is None else b"".join(region[o:o + n] for o, n in ranges)
        return data[:16] + envelope, content
    content_off = struct.unpack(">Q", data[-36:-28])[0]
    return data[:content_off], data[content_off:len(data) - 41]


def queue_file_bytes(path):
    """A queue file's envelope and content as its readers see them (an
    edited file holds superseded bytes too), for substring checks; a file
    that is not a complete queue file as it is."""
    try:
        envelope, content = _queue_file_parts(path)
    except (ValueError, struct.error):
        with open(path, "rb") as f:
            return f.read()
    return envelope + content


def queue_file_content(path):
    """The message content of a queue file, the content map followed."""
    return _queue_file_parts(path)[1]


QUEUED_OK = r"^250 2\.0\.0 Ok: queued as (\S+)"      # Petrel's own acceptance, as Postfix words it
QUEUED = r"queued as (\S+)"                          # anywhere in the reply (a next hop's words too)


def queue_id(reply, pattern=QUEUED_OK):
    """The queue ID that pattern's group finds in reply (the reply to the end of data; None when
    there was none), or None."""
    m = re.search(pattern, reply or "")
    return m.group(1) if m else None


def run_as_user():
    """The command prefix that drops root to the test user (single-user mode)."""
    if os.geteuid() != 0:
        return [], None
    pw = pwd.getpwnam(TEST_USER)
    return ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups"], pw


class Smtp:
    """A raw SMTP client that shows exactly what the server answers."""

    def __init__(self, port=None, host="127.0.0.1", timeout=10, read_greeting=True, source=None, sock=None):
        """A connection to host:port, from the loopback address source when given
        (any 127.0.0.0/8 address works on Linux: a client the server sees as
        another host), or the client on sock, a socket the test connected itself
        (TLS-wrapped, small buffers...)."""
        if sock is None:
            sock = socket.create_connection((host, port), timeout=timeout,
                                            source_address=(source, 0) if source else None)
        self.sock = sock
        self.buf = b""
        self.code = None
        self.lines = []
        if read_greeting:
            self.read_reply()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _read_line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def read_reply(self):
        """Reads one (possibly multi-line) reply; returns 'CODE text' of its last line."""
        lines = []
        while True:
            line = self._read_line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        self.lines = lines
        self.code = int(lines[-1][:3]) if lines[-1][:3].isdigit() else None
        return lines[-1]

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.read_reply()

    def ehlo(self, name="client.example.org"):
        return self.cmd("EHLO " + name)

    def send_message(self, sender, rcpts, body, ehlo=True):
        """A whole transaction; returns the final reply line (250 ... queued as ID)."""
        if ehlo:
            self.ehlo()
        r = self.cmd("MAIL FROM:<%s>" % sender)
        if self.code != 250:
            return r
        for rcpt in rcpts:
            r = self.cmd("RCPT TO:<%s>" % rcpt)
        r = self.cmd("DATA")
        if self.code != 354:
            return r
        if isinstance(body, str):
            body = body.encode()
        self.send(body + b"\r\n.\r\n")
        return self.read_reply()

    def closed(self, wait=30.0):
        """True when the server closed the connection (EOF) within wait seconds: it
        returns at the EOF, so the default is generous (a loaded machine, the
        sanitizer build); a check that the server does NOT close gives its own,
        shorter wait."""
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True

    def starttls(self, cafile=None):
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
        if not cafile:
            ctx.check_hostname = False
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        return self.sock

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


DEFAULT_MAIN_CF = {
    "myhostname": "mx.petrel.test",
    "mydomain": "petrel.test",
    "mydestination": "petrel.test, $myhostname, localhost",
    "mynetworks": "127.0.0.0/8",
    "inet_interfaces": "127.0.0.1",
    "smtpd_workers": "2",
    "smtpd_error_sleep_time": "0s",
    "smtpd_timeout": "30s",
    # Tests never query the host's resolvers: a test that needs DNS starts its own
    # dnsmasq and overrides this; anything else gets a refused query on loopback.
    "dns_resolver": "127.0.0.1:9",
    # Postfix's default alias_maps is hash:/etc/aliases: a test instance must
    # not depend on the host's aliases file (tests that need aliases set
    # their own table).
    "alias_maps": "",
    "alias_database": "",
}


# The fictional local mailboxes the suite's messages go to. Petrel refuses
# unknown local recipients at RCPT as Postfix does (smtpd_reject_unlisted_recipient
# with local_recipient_maps = the system's users and $alias_maps), so every
# instance gets them in a table next to the system's users; a test may add
# names (local_users=) or set local_recipient_maps itself.
TEST_LOCAL_USERS = [
    "user", "user2", "user3", "u", "b", "rcpt", "address", "other", "victim", "first-rcpt",
    "second-rcpt", "added-rcpt", "rg", "rgen", "datareject", "reject-u", "blocked", "later", "deferred",
    "inline", "jürgen",
]


class Petrel:
    """One petreld instance in its own temporary directory."""

    def __init__(self, tap, main_cf=None, master_cf=None, extra_services="", start=True, workers=None,
                 local_users=(), crash_test=False, hosts="", nsswitch="hosts: files dns\n"):
        self.tap = tap
        self.crash_test = crash_test
        self.dir = tempfile.mkdtemp(prefix="petrel-test-")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "conf")
        self.queue = os.path.join(self.dir, "queue")
        self.log_path = os.path.join(self.dir, "petreld.log")
        SANITIZER_LOGS.append(self.log_path)
        os.mkdir(self.conf)
        self.port = free_port()
        self.probe_port = None   # wait_listening's connection (a client of the server under test)
        settings = dict(DEFAULT_MAIN_CF)
        settings["queue_directory"] = self.queue
        users_table = os.path.join(self.conf, "local_users")
        with open(users_table, "w") as f:
            f.writelines("%s OK\n" % name for name in TEST_LOCAL_USERS + list(local_users))
        settings["local_recipient_maps"] = "proxy:unix:passwd.byname $alias_maps texthash:" + users_table
        if workers:
            settings["smtpd_workers"] = str(workers)
        settings.update(main_cf or {})
        self.write_main_cf(settings)
        self.master_cf = master_cf if master_cf is not None else "127.0.0.1:%d inet n - n - - smtpd\n" % self.port
        self.master_cf += extra_services
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(self.master_cf)
        # smtpd names clients from the hosts file first, as glibc's "files dns"
        # does for Postfix: an instance has its own (empty unless the test says),
        # never the host's /etc/hosts or nsswitch.conf (doc/testing.md).
        self.hosts_path = os.path.join(self.dir, "hosts")
        self.nsswitch_path = os.path.join(self.dir, "nsswitch.conf")
        with open(self.hosts_path, "w") as f:
            f.write(hosts)
        with open(self.nsswitch_path, "w") as f:
            f.write(nsswitch)
        self.prefix, self.pw = run_as_user()
        self._chown()
        self.proc = None
        if start:
            self.start()

    def _chown(self):
        if self.pw:
            for root, dirs, files in os.walk(self.dir):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), self.pw.pw_uid, self.pw.pw_gid)
            os.chown(self.dir, self.pw.pw_uid, self.pw.pw_gid)

    def write_main_cf(self, settings, raw_extra=""):
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            for k, v in settings.items():
                f.write("%s = %s\n" % (k, v))
            f.write(raw_extra)
        self.settings = settings

    def write_file(self, name, text, mode=0o644):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        if self.pw:
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)
        return path

    def make_dir(self, name="mail"):
        """A new directory name in the test's own (mailboxes, a pipe's output), owned by the user
        petreld runs as, who writes there; its path."""
        path = os.path.join(self.dir, name)
        os.mkdir(path)
        if self.pw:
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)
        return path

    def virtual_mailboxes(self, mailboxes, settings=None):
        """Delivery by virtual(8) into a new directory of the test's (make_dir("mail")): main.cf
        written again with virtual_mailbox_maps from mailboxes ({address: its mailbox under the
        directory, "u/" a Maildir}), their domains as virtual_mailbox_domains, and settings.
        Before start(); the directory's path, also in p.boxes."""
        self.boxes = self.make_dir()
        domains = []
        for address in mailboxes:
            domain = address.rsplit("@", 1)[1]
            if domain not in domains:
                domains.append(domain)
        conf = dict(self.settings)
        conf.update({"virtual_mailbox_domains": ", ".join(domains), "virtual_mailbox_base": self.boxes,
                     "virtual_mailbox_maps": "inline:{ %s }" % ", ".join("{%s = %s}" % m for m in mailboxes.items())})
        conf.update(settings or {})
        self.write_main_cf(conf)
        return self.boxes

    def command(self, *args, user=True):
        return (self.prefix if user else []) + list(args)

    def name_service_env(self):
        """The environment that points petreld at this instance's hosts file and
        nsswitch.conf (for a test that starts petreld itself)."""
        return {"PETREL_HOSTS_FILE": self.hosts_path, "PETREL_NSSWITCH_FILE": self.nsswitch_path}

    def start(self, wait=True):
        self.logf = open(self.log_path, "ab")
        if self.pw:
            # petreld may reopen the same file as maillog_file
            os.chown(self.log_path, self.pw.pw_uid, self.pw.pw_gid)
        env = dict(os.environ)
        env.update(sanitizer_env(self.crash_test))
        env.update(self.name_service_env())
        self.proc = subprocess.Popen(self.command(PETRELD, "-c", self.conf), stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if wait:
            self.wait_listening()
        return self.proc

    def wait_listening(self, port=None, timeout=30.0):
        """Waits until port (the SMTP port by default) accepts a connection: at
        once when it does, so the deadline is for a loaded machine and the
        sanitizer build, where a start with modules takes seconds."""
        port = port or self.port
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("petreld exited with %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                # The probe is a client like any other and the server handles it
                # later, whenever a worker gets to it: a test for which another
                # client matters (postscreen's one-slot tests) waits until it is
                # gone, by its port (psclib.postscreen).
                self.probe_port = s.getsockname()[1]
                s.close()
                return True
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("petreld did not listen on %d:\n%s" % (port, self.log()))

    def connect(self, **kw):
        return Smtp(self.port, **kw)

    def send_message(self, sender, rcpts, body, quit=False, port=None, **connect_kw):
        """Smtp.send_message (EHLO first) on a new connection to port (the SMTP port by
        default), closed after it, with QUIT first when quit: the reply to the end of data,
        or the first refusal on the way."""
        c = Smtp(port or self.port, **connect_kw)
        try:
            r = c.send_message(sender, rcpts, body)
            if quit:
                c.cmd("QUIT")
        finally:
            c.close()
        return r

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=30.0):
        """The first match of pattern in the log, waiting for it up to timeout
        seconds: generous, since a line that comes returns at once, and the
        sanitizer build on a loaded machine is several times slower. A check
        that a line does NOT come gives its own, shorter timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.05)
        return None

    def wait_closed(self, client_ports, port=None, timeout=30.0):
        """Waits until petreld has closed its end (at port, self.port unless
        given) of the connections from these client ports. A session gives
        its client count and service slot back (anvil_disconnect,
        anvil_service_release) before it closes its socket
        (smtpd_session_free), so a client's own close() is not that: after
        this, they are back. Raises when it does not happen in time."""
        port = port or self.port
        if wait_for(lambda: not tcp_open_ends(port, set(client_ports)), timeout=timeout) is False:
            raise RuntimeError("petreld did not close its end of the connections from ports %s within %d s:\n%s"
                               % (sorted(tcp_open_ends(port, set(client_ports))), timeout, self.log()[-3000:]))

    def petrelctl(self, *args, user=True, timeout=30):
        return subprocess.run(self.command(PETRELCTL, "-c", self.conf, *args, user=user),
                              capture_output=True, text=True, timeout=timeout)

    def worker_pids(self, at_least=0, timeout=30.0):
        """The master's children. The master listens before it forks them, so
        a test that needs at_least of them waits until they exist."""
        deadline = time.time() + timeout
        while True:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
            # With setpriv in front, the master is setpriv's exec'd image: same PID.
            pids = [int(x) for x in out.split()]
            if len(pids) >= at_least or time.time() >= deadline:
                return pids
            time.sleep(0.05)

    def queue_files(self, *dirs):
        dirs = dirs or ("incoming", "active", "deferred", "hold")
        found = []
        for d in dirs:
            path = os.path.join(self.queue, d)
            if os.path.isdir(path):
                for root, _, files in os.walk(path):
                    found.extend(os.path.join(root, f) for f in files)
        return found

    def queued_bytes(self, qid, *dirs):
        """What queue_file_bytes() reads of queue ID qid's file in dirs (queue_files()'s), for
        substring checks; b"" when there is none (or qid is None)."""
        if qid is None:
            return b""
        return b"".join(queue_file_bytes(f) for f in self.queue_files(*dirs) if f.endswith("/" + qid))

    def queued_message(self, reply, *dirs):
        """queued_bytes() of the message that reply (to the end of data) says Petrel queued;
        None when it is not Petrel's "250 2.0.0 Ok: queued as ID"."""
        qid = queue_id(reply)
        return None if qid is None else self.queued_bytes(qid, *dirs)

    def queued_content(self, qid):
        """The message content of queue ID qid's file (the content map followed) from the first
        Received: header on, the one Petrel added; b"" when there is no such file."""
        for path in self.queue_files():
            if os.path.basename(path) == qid:
                data = queue_file_content(path)
                return data[data.find(b"Received: "):]
        return b""

    def stop(self, sig=signal.SIGTERM, timeout=45):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in self._leftover_children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.logf.close()
        return self.proc.returncode

    def _leftover_children(self):
        out = subprocess.run(["pgrep", "-f", "petreld -c " + self.conf], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if os.environ.get("PETREL_KEEP_TEST_DIRS"):
            return False
        # The log goes with the directory: keep what a sanitizer wrote in it.
        SANITIZER_FOUND.extend(_scan_log(self.log_path))
        SANITIZER_LOGS.remove(self.log_path)
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def make_cert(directory, name="localhost"):
    """A self-signed certificate and key (PEM) for TLS tests."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=" + name, "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


class Dnsmasq:
    """A private dnsmasq on a free loopback port serving test records only
    (no upstream, no /etc/hosts). records: dnsmasq options such as
    "--address=/listed.test/127.0.0.2" or "--mx-host=mx.test,mail.mx.test,10"."""

    def __init__(self, records):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="petrel-dns-")
        self.log_path = os.path.join(self.dir, "dnsmasq.log")
        cmd = ["dnsmasq", "--keep-in-foreground", "--no-daemon", "--port=%d" % self.port,
               "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
               "--no-poll", "--pid-file=", "--user=root", "--log-queries",
               "--log-facility=" + self.log_path] + list(records)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Until it says it started (at once on a quiet machine; a deadline for a loaded one):
        # a test whose dnsmasq does not answer yet gets "try again" where it expects records.
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited with %s" % self.proc.returncode)
            if os.path.exists(self.log_path) and "started" in open(self.log_path).read():
                break
            if time.time() >= deadline:
                self.stop()
                raise RuntimeError("dnsmasq did not start within 30 s")
            time.sleep(0.05)
        self.server = "127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def maildir_messages(path):
    """The messages in a Maildir's new/, oldest name first (bytes each)."""
    new = os.path.join(path, "new")
    if not os.path.isdir(new):
        return []
    out = []
    for name in sorted(os.listdir(new)):
        with open(os.path.join(new, name), "rb") as f:
            out.append(f.read())
    return out


def _tcp_rows():
    """The fields of each row of the kernel's TCP tables (/proc/net/tcp and
    tcp6): local and remote address:port (hex) in 1 and 2, state in 3,
    queues in 4, inode in 9."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            yield row.split()


def tcp_open_ends(local_port, remote_ports=None):
    """The remote ports of the loopback TCP connections whose end at
    local_port is still open, per the kernel's tables: that end is
    ESTABLISHED (01), SYN_RECV (03), or CLOSE_WAIT (08, the other end
    closed first), also while it waits in a listen backlog. Once its
    process closes it, it is gone, LAST_ACK, FIN_WAIT or TIME_WAIT. With
    remote_ports, only those connections. A test waits on it for a
    server's close: petreld's after a session gave its slot back, a
    milter's after its xxfi_close."""
    found = set()
    for fields in _tcp_rows():
        local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
        if local == local_port and fields[3] in ("01", "03", "08") \
                and (remote_ports is None or remote in remote_ports):
            found.add(remote)
    return found


def on_worker(workers, run_pid, fn):
    """fn() (which opens a connection) while every one of workers (PIDs) but run_pid is
    stopped, so that run_pid accepts the connection; fn's value."""
    for pid in workers:
        if pid != run_pid:
            os.kill(pid, signal.SIGSTOP)
    try:
        return fn()
    finally:
        for pid in workers:
            if pid != run_pid:
                os.kill(pid, signal.SIGCONT)


def holds_listener(pid, port):
    """Whether process pid still has a listening TCP socket of port among its
    descriptors: an smtpd worker closes its copy when it takes its drain
    signal (a reload's SIGUSR1), so a test waits for that, not a second."""
    inodes = set()
    for fields in _tcp_rows():
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            inodes.add("socket:[%s]" % fields[9])
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes:
                return True
        except OSError:
            continue
    return False


def unread_at(local_port):
    """Whether an established loopback TCP connection whose end at
    local_port holds bytes its process has not read yet (the kernel's
    rx_queue): a request sent to a server that is stopped or busy, which a
    test waits for before counting on the request being there."""
    for fields in _tcp_rows():
        if int(fields[1].rsplit(":", 1)[1], 16) == local_port and fields[3] == "01" \
                and int(fields[4].split(":")[1], 16) > 0:
            return True
    return False


def wait_for(cond, timeout=15.0):
    """Polls cond() until it returns something true or timeout passes; returns its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    return cond()
