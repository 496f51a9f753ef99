"""Private instances of the content-scanning peers, for the milter, spamassassin
and clamav tests (and the modules' tests once they exist).

Each peer runs from a temporary directory with a configuration of our own,
listens on a free port of 127.0.0.1 only, reaches nothing outside this machine,
and is stopped by PID. Debian's packages are installed with their services
masked; what each program would do by default was checked, and overridden:

- spamd: listens only where --listen says (127.0.0.1:PORT); -L (local tests
  only) and a private site configuration that loads only local plugins
  (no Razor, Pyzor, DCC, URIBL, SPF, DKIM lookups), with dns_available no,
  skip_rbl_checks 1 and no Bayes; rules from /usr/share/spamassassin (the
  package's, read only); -x (no per-user files), --helper-home-dir in the
  temporary directory. Started as root it forks its children as the test user.
- spamass-milter: -p inet:PORT@127.0.0.1, and spamc told -d 127.0.0.1 -p PORT.
- clamd: TCPSocket with TCPAddr 127.0.0.1 (without TCPAddr it binds every
  interface), no LocalSocket, DatabaseDirectory of our own with a tiny .ndb
  and .hdb (EICAR, a test signature, a test attachment hash): there is no
  internet, freshclam never runs. SelfCheck 0, Bytecode no.
- clamav-milter: MilterSocket inet:PORT@127.0.0.1, ClamdSocket tcp:127.0.0.1:PORT.
- OpenDKIM: Socket inet:PORT@127.0.0.1, keys from TestPublicKeys (no DNS),
  Nameservers 127.0.0.1 in case anything else is looked up, Syslog no,
  RequireSafeKeys false (the key lives under /tmp).

Slow peers (spamd, clamd) are meant to start once per test script: use
shared(Spamd) / shared(Clamd), which stop them when the script exits. Every
peer records how long it took to be ready in .start_seconds.

    from peers import TestFilter, shared, Spamd, scan_drive
    with TestFilter(options="nr_hdr,skip") as f:
        lines = scan_drive("milter", f.endpoint, message_path)
"""
import atexit
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from harness import CLEANUP_DIRS, TOP_BUILDDIR, TEST_USER, free_port, tcp_open_ends

SCAN_DRIVE = os.path.join(TOP_BUILDDIR, "t", "tools", "scan-drive")
TEST_FILTER = os.path.join(TOP_BUILDDIR, "modules", "milter", "t", "milter-testfilter")

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
OWN_SIGNATURE = "PETREL-CLAMAV-TEST-SIGNATURE-7f3a"        # matched by our .ndb
OWN_ATTACHMENT = b"petrel test attachment payload\n"        # matched by our .hdb (MD5)


class PeerError(RuntimeError):
    pass


def _die_with_parent():
    """In the child before exec: SIGTERM when the test script ends, however
    it ends (Tap.done() leaves with os._exit, which runs no atexit handler;
    a watchdog or a crash the same), so no peer outlives its test."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _user():
    """(uid, gid) of the test user when we run as root, else None."""
    if os.geteuid() != 0:
        return None
    import pwd
    pw = pwd.getpwnam(TEST_USER)
    return pw.pw_uid, pw.pw_gid


def tcp_ready(port, host="127.0.0.1"):
    try:
        s = socket.create_connection((host, port), timeout=0.5)
        s.close()
        return True
    except OSError:
        return False


class Peer:
    """One daemon in its own temporary directory, stopped by PID."""

    name = "peer"
    start_timeout = 60.0

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="petrel-%s-" % self.name)
        os.chmod(self.dir, 0o755)
        if not os.environ.get("PETREL_KEEP_TEST_DIRS"):
            CLEANUP_DIRS.append(self.dir)
        self.out_path = os.path.join(self.dir, "%s.out" % self.name)
        self.proc = None
        self.start_seconds = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def command(self):
        raise NotImplementedError

    def ready(self):
        raise NotImplementedError

    def start(self):
        began = time.monotonic()
        self.out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir, preexec_fn=_die_with_parent)
        deadline = began + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerError("%s exited with %s:\n%s" % (self.name, self.proc.returncode, self.output()))
            if self.ready():
                self.start_seconds = time.monotonic() - began
                return self
            time.sleep(0.05)
        self.stop()
        raise PeerError("%s not ready after %.0f s:\n%s" % (self.name, self.start_timeout, self.output()))

    def output(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def pids(self):
        return [self.proc.pid] if self.proc else []

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.out.close()
        self.proc = None
        if not os.environ.get("PETREL_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()
        return False


_shared = {}


def stop_all():
    """Stops the shared peers now (call before Tap.done(), which exits at once)."""
    for peer in list(_shared.values()):
        peer.stop()
    _shared.clear()


def shared(cls, *args, **kw):
    """One instance of a slow peer per test script (same class and arguments),
    started on first use and stopped when the script exits (by atexit on a
    normal exit, by its parent-death signal when Tap.done() or a watchdog
    ends the script)."""
    key = (cls, args, tuple(sorted(kw.items())))
    if key not in _shared:
        peer = cls(*args, **kw)
        peer.start()
        _shared[key] = peer
        atexit.register(peer.stop)
    return _shared[key]


# ---------------------------------------------------------------------------
# our libmilter test filter

class TestFilter(Peer):
    """modules/milter/t/milter-testfilter: every reply, modification and option
    libmilter has (see the file's header for the knobs)."""

    name = "testfilter"
    start_timeout = 15.0

    def __init__(self, options="", verdicts=None, unix=False):
        super().__init__()
        self.options = options
        self.verdicts = verdicts or {}
        self.log_path = self.path("filter.log")
        if unix:
            self.socket = self.path("milter.sock")
            self.spec = self.socket
            self.endpoint = "unix:" + self.socket
        else:
            self.port = free_port()
            self.spec = "inet:%d@127.0.0.1" % self.port
            self.endpoint = "inet:127.0.0.1:%d" % self.port

    def command(self):
        if not os.path.exists(TEST_FILTER):
            raise PeerError("%s was not built: install libmilter-dev (scripts/install-deps.sh) and reconfigure"
                            % TEST_FILTER)
        cmd = [TEST_FILTER, "-p", self.spec, "-l", self.log_path]
        if self.options:
            cmd += ["-n", self.options]
        for stage, verdict in self.verdicts.items():
            cmd += ["-A", "%s=%s" % (stage, verdict)]
        return cmd

    def ready(self):
        return os.path.exists(self.log_path) and "ready" in open(self.log_path).read()

    def start(self):
        super().start()
        if hasattr(self, "socket"):
            # libmilter made it under our umask; petreld's smtpd runs as the
            # unprivileged test user and needs write permission to connect
            os.chmod(self.socket, 0o666)
        return self

    def stop(self):
        # libmilter answers SIGTERM only when its idle worker wakes up (up to
        # 5 s later); our filter flushes every log line, so SIGKILL loses nothing.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        super().stop()

    def idle(self):
        """True when no connection to the filter is open (an inet one): libmilter
        runs xxfi_close before it closes its end, so every conversation's
        "close" is in the log by then."""
        return not tcp_open_ends(self.port)

    def log(self, until=None, timeout=30.0):
        """The filter's log lines. A callback the milter runs before it
        replies is logged by the time its reply arrives, but what comes after
        the session (SMFIC_ABORT, which has no reply, and the close) may be
        logged later: a test that checks those passes until, a test on the
        lines, and gets them once it holds (or, after timeout, as they are)."""
        deadline = time.time() + timeout
        if until is None:
            time.sleep(0.05)
        while True:
            with open(self.log_path) as f:
                lines = [line.rstrip("\n") for line in f]
            if until is None or until(lines) or time.time() >= deadline:
                return lines
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# SpamAssassin

SPAMD_PRE = """\
# Local-only plugins: nothing here looks anything up on the network.
loadplugin Mail::SpamAssassin::Plugin::Check
loadplugin Mail::SpamAssassin::Plugin::HeaderEval
loadplugin Mail::SpamAssassin::Plugin::BodyEval
loadplugin Mail::SpamAssassin::Plugin::MIMEEval
loadplugin Mail::SpamAssassin::Plugin::MIMEHeader
loadplugin Mail::SpamAssassin::Plugin::RelayEval
loadplugin Mail::SpamAssassin::Plugin::URIEval
loadplugin Mail::SpamAssassin::Plugin::HTMLEval
loadplugin Mail::SpamAssassin::Plugin::WLBLEval
loadplugin Mail::SpamAssassin::Plugin::ReplaceTags
"""

SPAMD_CF = """\
use_bayes 0
bayes_auto_learn 0
dns_available no
skip_rbl_checks 1
required_score 5.0
"""


class Spamd(Peer):
    """A private spamd on 127.0.0.1:PORT (SPAMC/SPAMD protocol)."""

    name = "spamd"
    start_timeout = 90.0

    def __init__(self):
        super().__init__()
        self.port = free_port()
        self.endpoint = "127.0.0.1:%d" % self.port
        site = self.path("site")
        os.mkdir(site)
        with open(os.path.join(site, "init.pre"), "w") as f:
            f.write(SPAMD_PRE)
        with open(os.path.join(site, "local.cf"), "w") as f:
            f.write(SPAMD_CF)
        os.mkdir(self.path("home"))
        user = _user()
        if user:
            for root, dirs, files in os.walk(self.dir):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), *user)
            os.chown(self.dir, *user)

    def command(self):
        cmd = ["spamd", "--listen=127.0.0.1:%d" % self.port, "--allowed-ips=127.0.0.1",
               "-C", "/usr/share/spamassassin", "--siteconfigpath=" + self.path("site"),
               "-L", "-x", "--helper-home-dir=" + self.path("home"), "--pidfile=" + self.path("spamd.pid"),
               "--syslog=" + self.path("spamd.log"), "--min-children=1", "--max-children=2"]
        user = _user()
        if user:
            # Run it as the test user from the start: a root spamd changes its
            # credentials, which clears the parent-death signal; setpriv sets
            # it again after its own change.
            cmd = ["setpriv", "--reuid=%d" % user[0], "--regid=%d" % user[1], "--clear-groups",
                   "--pdeathsig", "TERM"] + cmd
        return cmd

    def ready(self):
        # The port is bound before the rules are compiled: only a PONG means ready.
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            s.settimeout(5)
            s.sendall(b"PING SPAMC/1.5\r\n\r\n")
            data = s.recv(100)
            s.close()
            return b"PONG" in data
        except OSError:
            return False

    def stop(self):
        # spamd's children exit with their parent (SIGTERM to the parent).
        super().stop()


class SpamassMilter(Peer):
    """spamass-milter in front of a Spamd; reject=True is its -r -1 (reject
    what SpamAssassin calls spam), without it spam is only tagged."""

    name = "spamass-milter"
    start_timeout = 15.0

    def __init__(self, spamd, reject=False):
        super().__init__()
        self.spamd = spamd
        self.reject = reject
        self.port = free_port()
        self.endpoint = "inet:127.0.0.1:%d" % self.port

    def command(self):
        cmd = ["spamass-milter", "-p", "inet:%d@127.0.0.1" % self.port, "-P", self.path("spamass-milter.pid")]
        if self.reject:
            cmd += ["-r", "-1"]
        return cmd + ["--", "-d", "127.0.0.1", "-p", str(self.spamd.port)]

    def ready(self):
        return tcp_ready(self.port)


# ---------------------------------------------------------------------------
# ClamAV

def clamav_database(directory):
    """Our signatures: EICAR and a test string (.ndb body signatures, any file
    type), and the MD5 of a test attachment (.hdb)."""
    import hashlib
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "petrel.ndb"), "w") as f:
        f.write("Eicar-Signature:0:*:%s\n" % b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".hex())
        f.write("Petrel.Test.Signature:0:*:%s\n" % OWN_SIGNATURE.encode().hex())
    with open(os.path.join(directory, "petrel.hdb"), "w") as f:
        f.write("%s:%d:Petrel.Test.Attachment\n" % (hashlib.md5(OWN_ATTACHMENT).hexdigest(), len(OWN_ATTACHMENT)))


class Clamd(Peer):
    """A private clamd on 127.0.0.1:PORT with our tiny database."""

    name = "clamd"
    start_timeout = 60.0

    def __init__(self, stream_max="1M"):
        super().__init__()
        self.port = free_port()
        self.endpoint = "127.0.0.1:%d" % self.port
        self.stream_max = stream_max
        clamav_database(self.path("db"))
        with open(self.path("clamd.conf"), "w") as f:
            f.write("""\
DatabaseDirectory {db}
TCPSocket {port}
TCPAddr 127.0.0.1
Foreground yes
PidFile {dir}/clamd.pid
LogFile {dir}/clamd.log
LogTime yes
StreamMaxLength {stream_max}
MaxThreads 4
SelfCheck 0
Bytecode no
""".format(db=self.path("db"), port=self.port, dir=self.dir, stream_max=stream_max))

    def command(self):
        return ["clamd", "-c", self.path("clamd.conf")]

    def ready(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            s.settimeout(5)
            s.sendall(b"zPING\0")
            data = s.recv(100)
            s.close()
            return data == b"PONG\0"
        except OSError:
            return False


class ClamavMilter(Peer):
    """clamav-milter in front of a Clamd. on_infected: Reject, Quarantine,
    Blackhole or Accept (clamav-milter's words)."""

    name = "clamav-milter"
    start_timeout = 30.0

    def __init__(self, clamd, on_infected="Reject"):
        super().__init__()
        self.clamd = clamd
        self.port = free_port()
        self.endpoint = "inet:127.0.0.1:%d" % self.port
        with open(self.path("clamav-milter.conf"), "w") as f:
            f.write("""\
MilterSocket inet:{port}@127.0.0.1
ClamdSocket tcp:127.0.0.1:{clamd_port}
Foreground yes
PidFile {dir}/clamav-milter.pid
LogFile {dir}/clamav-milter.log
LogInfected Basic
OnInfected {on_infected}
OnFail Defer
AddHeader Replace
ReportHostname petrel.test
MaxFileSize 1M
ReadTimeout 30
""".format(port=self.port, clamd_port=clamd.port, dir=self.dir, on_infected=on_infected))

    def command(self):
        return ["clamav-milter", "-c", self.path("clamav-milter.conf")]

    def ready(self):
        # Listening is not enough: under load the first scan after start-up
        # was answered with OnFail's tempfail (clamd not yet usable to it).
        # Ready means a clean message goes through a whole scan.
        if not tcp_ready(self.port):
            return False
        probe = write_message(self.dir, "ready-probe.eml", [("Subject", "ready probe")], "ready probe\r\n",
                              eol="\r\n")
        rc, lines = scan_drive("milter", self.endpoint, probe, timeout=30)
        return rc == 0 and ("eom: accept" in lines or "eom: continue" in lines)


# ---------------------------------------------------------------------------
# OpenDKIM

class OpenDKIM(Peer):
    """OpenDKIM signing for DOMAIN (mail from 127.0.0.1, its InternalHosts
    default) and verifying the rest, with a key of its own in TestPublicKeys."""

    name = "opendkim"
    start_timeout = 15.0

    def __init__(self, domain="example.com", selector="test", authserv_id="petrel.test"):
        super().__init__()
        self.port = free_port()
        self.endpoint = "inet:127.0.0.1:%d" % self.port
        self.domain = domain
        subprocess.run(["opendkim-genkey", "-b", "1024", "-D", self.dir, "-d", domain, "-s", selector],
                       check=True, capture_output=True)
        with open(self.path(selector + ".txt")) as f:
            record = "".join(re.findall(r'"([^"]*)"', f.read()))
        with open(self.path("keys"), "w") as f:
            f.write("%s._domainkey.%s %s\n" % (selector, domain, record))
        with open(self.path("opendkim.conf"), "w") as f:
            f.write("""\
Syslog no
Background no
Socket inet:{port}@127.0.0.1
PidFile {dir}/opendkim.pid
Mode sv
Domain {domain}
Selector {selector}
KeyFile {dir}/{selector}.private
TestPublicKeys {dir}/keys
RequireSafeKeys false
Nameservers 127.0.0.1
DNSTimeout 1
AlwaysAddARHeader yes
AuthservID {authserv_id}
""".format(port=self.port, dir=self.dir, domain=domain, selector=selector, authserv_id=authserv_id))

    def command(self):
        return ["opendkim", "-x", self.path("opendkim.conf"), "-f"]

    def ready(self):
        return tcp_ready(self.port)


# ---------------------------------------------------------------------------
# the driver

def scan_drive(*args, timeout=120):
    """Runs t/tools/scan-drive; returns (exit status, output lines)."""
    p = subprocess.run([SCAN_DRIVE] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    lines = p.stdout.splitlines()
    if p.stderr:
        lines += ["stderr: " + line for line in p.stderr.splitlines()]
    return p.returncode, lines


def write_message(directory, name, headers, body, eol="\n"):
    """A message file: headers as (name, value) pairs, then the body."""
    path = os.path.join(directory, name)
    with open(path, "w", newline="") as f:
        for k, v in headers:
            f.write("%s: %s%s" % (k, v, eol))
        f.write(eol)
        f.write(body)
    return path


def fnv1a64(data):
    h = 1469598103934665603
    for b in data:
        h ^= b
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def milter_packet(cmd, payload=b""):
    """One milter packet (for scripted milters in the tests)."""
    if isinstance(cmd, str):
        cmd = cmd.encode()
    return struct.pack(">I", len(payload) + 1) + cmd + payload


# ---------------------------------------------------------------------------
# a scripted milter, for what libmilter never sends

NR_FLAG = {"C": 0x1000, "H": 0x2000, "M": 0x4000, "R": 0x8000, "T": 0x10000, "U": 0x20000, "L": 0x80,
           "N": 0x40000, "B": 0x80000}


class ScriptedMilter:
    """A milter in a thread of the test, answering from a script: malformed,
    hostile, slow or dying replies that no libmilter filter would send.

    optneg: the raw OPTNEG reply payload (default: version 6, all actions,
    steps). replies: for an MTA command letter ("C", "H", "M", "R", "T", "L",
    "N", "B", "E", "U"), what to do when it arrives: bytes to send (use
    milter_packet), a list of those (one per occurrence, then CONTINUE),
    "close" (close the connection), "hang" (never answer). Commands with no
    reply due (MACRO, ABORT, QUIT, QUIT_NC, or an NR_* step) get none unless
    the script says so. self.received lists (command, payload) pairs."""

    def __init__(self, optneg=None, replies=None, version=6, actions=0x1ff, steps=0):
        self.optneg = optneg if optneg is not None else struct.pack(">III", version, actions, steps)
        self.replies = dict(replies or {})
        self.steps = steps
        self.received = []
        self.connections = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.endpoint = "inet:127.0.0.1:%d" % self.port
        self.stopping = False
        import threading
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                self._session(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def _session(self, conn):
        counts = {}
        while True:
            head = self._read(conn, 5)
            if head is None:
                return
            length, cmd = struct.unpack(">I", head[:4])[0], chr(head[4])
            payload = self._read(conn, length - 1) if length > 1 else b""
            if payload is None:
                return
            self.received.append((cmd, payload))
            if cmd == "O":
                conn.sendall(self.replies.get("O") or milter_packet("O", self.optneg))
                continue
            if cmd in ("D", "A", "Q", "K"):
                if cmd == "Q":
                    return
                continue
            action = self.replies.get(cmd)
            if isinstance(action, list):
                n = counts.get(cmd, 0)
                counts[cmd] = n + 1
                action = action[n] if n < len(action) else None
            if action is None:
                if self.steps & NR_FLAG.get(cmd, 0):
                    continue
                action = milter_packet("c")
            if action == "close":
                return
            if action == "hang":
                while not self.stopping:
                    time.sleep(0.1)
                return
            conn.sendall(action)

    def events(self):
        return [cmd for cmd, _ in self.received if cmd not in ("D", "O")]

    def stop(self):
        # shutdown() wakes the thread blocked in accept(); a bare close() would
        # leave the socket listening until then.
        self.stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# ---------------------------------------------------------------------------
# amavisd-new

AMAVISD_CONF = """\
use strict;
# A private amavisd-new for the content filter tests: its own directories,
# loopback only, no SpamAssassin, no DKIM, no DNS, no quarantine, no
# notifications; viruses are looked for by our private clamd when one is given.
$MYHOME = '{home}';
$TEMPBASE = "$MYHOME/tmp";
$db_home = "$MYHOME/db";
$pid_file = "$MYHOME/amavisd.pid";
$lock_file = "$MYHOME/amavisd.lock";
$QUARANTINEDIR = undef;
$virus_quarantine_to = undef; $banned_quarantine_to = undef; $spam_quarantine_to = undef;
$bad_header_quarantine_to = undef;
$virus_admin = undef; $spam_admin = undef; $banned_admin = undef; $bad_header_admin = undef;
$warnvirussender = 0; $warnbannedsender = 0; $warnbadhsender = 0;
$daemon_user = undef; $daemon_group = undef;
$myhostname = 'amavis.test';
$mydomain = 'petrel.test';
$max_servers = 2;
$child_timeout = 120;
$inet_socket_bind = '127.0.0.1';
$inet_socket_port = [{port}];
@inet_acl = qw(127.0.0.1);
$forward_method = 'smtp:[127.0.0.1]:{reinject}';
$notify_method = $forward_method;
$do_syslog = 0;
$LOGFILE = "$MYHOME/amavis.log";
$log_level = 2;
@local_domains_maps = (['.']);
@mynetworks = qw(127.0.0.0/8);
@bypass_spam_checks_maps = (1);
$enable_dkim_verification = 0; $enable_dkim_signing = 0;
$enable_db = 0; $enable_zmq = 0;
$final_virus_destiny = D_DISCARD;
$final_banned_destiny = D_PASS;
$final_bad_header_destiny = D_PASS;
@av_scanners_backup = ();
{scanners}
1;
"""

AMAVISD_CLAMD = """\
@bypass_virus_checks_maps = (0);
@av_scanners = (
  ['ClamAV-clamd', \\&ask_daemon, ["CONTSCAN {{}}\\n", "127.0.0.1:{clamd}"],
   qr/\\bOK$/m, qr/\\bFOUND$/m, qr/^.*?: (?!Infected Archive)(.*) FOUND$/m ],
);
"""

AMAVISD_NO_AV = """\
@bypass_virus_checks_maps = (1);
@av_scanners = ();
"""


class Amavisd(Peer):
    """A private amavisd-new (Debian's package, its service masked) on
    127.0.0.1:PORT that sends mail back to 127.0.0.1:reinject_port, as
    Postfix's FILTER_README and amavis' own docs set it up. amavisd refuses to
    run as root and to read a configuration its user could change, so the
    configuration sits in a directory of its own that the amavis user cannot
    write (root's when the suite runs as root, mode 0555 otherwise) and the
    working directory belongs to the test user."""

    name = "amavisd"
    start_timeout = 60.0

    def __init__(self, reinject_port, clamd=None):
        super().__init__()
        self.port = free_port()
        self.home = self.path("home")
        for d in ("", "tmp", "db"):
            os.makedirs(os.path.join(self.home, d), exist_ok=True)
        conf_dir = self.path("conf")
        os.mkdir(conf_dir)
        self.conf = os.path.join(conf_dir, "amavisd.conf")
        scanners = AMAVISD_CLAMD.format(clamd=clamd.port) if clamd else AMAVISD_NO_AV
        with open(self.conf, "w") as f:
            f.write(AMAVISD_CONF.format(home=self.home, port=self.port, reinject=reinject_port, scanners=scanners))
        os.chmod(self.conf, 0o444)
        user = _user()
        if user:
            for root, dirs, files in os.walk(self.home):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), *user)
            os.chown(self.home, *user)
        else:
            os.chmod(conf_dir, 0o555)

    def command(self):
        cmd = ["amavisd", "-c", self.conf, "foreground"]
        user = _user()
        if user:
            cmd = ["setpriv", "--reuid=%d" % user[0], "--regid=%d" % user[1], "--clear-groups",
                   "--pdeathsig", "TERM"] + cmd
        return cmd

    def ready(self):
        if not tcp_ready(self.port):
            return False
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.settimeout(10)
            greeting = s.recv(512)
            s.sendall(b"QUIT\r\n")
            s.close()
            return greeting.startswith(b"220")
        except OSError:
            return False

    def pids(self):
        """The master and its children (stopped with it)."""
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [self.proc.pid] + [int(x) for x in out.split()]

    def log(self):
        try:
            with open(os.path.join(self.home, "amavis.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        conf_dir = os.path.dirname(self.conf)
        if os.path.isdir(conf_dir):
            os.chmod(conf_dir, 0o755)   # so the temporary directory can be removed
        super().stop()
