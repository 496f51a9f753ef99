"""Memory per SMTP session is bounded whatever the client sends (issue 8,
findings 3 and 10). One session floods the server with each command in turn
(EHLO, HELO, NOOP, RSET, HELP, VRFY, unknown commands, AUTH commands and
response lines, overlong lines), in plaintext and again after STARTTLS, with
the junk and error limits lifted so the flood is not cut short; the smtpd
worker's resident memory (VmRSS in /proc/PID/status) is read before and after
and must grow by less than FLOOD_BOUND. Before the fix, 10,000 EHLO with a
1,000-byte name added about 10 MiB each time: every command line was
allocated for the life of the session.

Then a client keeps sending while its session waits (a tarpit delay) and
while it reads none of the replies: the worker may only buffer up to its
watermarks (before the fix, input decrypted after STARTTLS piled up unread).

The bounds are generous (a worker starts at about 12 MiB; the fixed server
stays within 1-2 MiB of where it started) so that the test is not flaky,
and tight enough to fail on the unbounded code."""
import os
import socket
import ssl
import threading
import time

from harness import Petrel, Tap, make_cert
from modlib import module_dir

t = Tap(timeout=600)
# Under AddressSanitizer freed memory waits in a quarantine and would count as
# growth (doc/testing.md); no effect on normal builds.
os.environ["ASAN_OPTIONS"] = ":".join(x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=0") if x)
MIB = 1024 * 1024
FLOOD_BOUND = 8 * MIB          # growth allowed over one session of floods (all kinds together)
PER_FLOOD_BOUND = 4 * MIB      # growth allowed over one flood of one command
PILEUP_BOUND = 16 * MIB        # growth allowed while a client sends 64 MiB that is not read
COUNT = 42 * 240               # commands per flood (10,080)
BATCH = 240                    # pipelined commands per write (whole cycles of 1 or 3 lines)
PAD = "x" * 1000               # argument of each flooding command


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def serving_pid(p, sock):
    """The smtpd worker that holds the server end of this client's connection."""
    client_port = sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":%04X" % p.port) and fields[2].endswith(":%04X" % client_port):
                inode = fields[9]
    for _ in range(50):
        for pid in p.worker_pids():
            try:
                for fd in os.listdir("/proc/%d/fd" % pid):
                    if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "socket:[%s]" % inode:
                        return pid
            except OSError:
                continue
        time.sleep(0.1)
    raise RuntimeError("no worker holds the connection")


class Client:
    """A pipelining client that counts replies (multi-line ones as one)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.replies = []
        self.read(1)

    def read(self, n):
        got = []
        while len(got) < n:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("closed by the server after %d replies: %r" % (len(got), got[-3:]))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode("utf-8", "replace")
            if len(line) >= 4 and line[3] == "-":
                continue
            got.append(line)
        self.replies = got
        return got

    def flood(self, lines, replies_per_line=1):
        """Sends the lines COUNT times over, BATCH at a time; returns the set of distinct replies."""
        seen = set()
        sent = 0
        while sent < COUNT:
            group = [lines[i % len(lines)] for i in range(sent, sent + BATCH)]
            self.sock.sendall("".join(x + "\r\n" for x in group).encode())
            seen.update(self.read(len(group) * replies_per_line))
            sent += BATCH
        return seen

    def cmd(self, line):
        self.sock.sendall((line + "\r\n").encode())
        return self.read(1)[0]


FLOODS = [
    ("EHLO", ["EHLO h" + PAD + ".example.org"], {"250 CHUNKING"}),
    ("HELO", ["HELO h" + PAD + ".example.org"], {"250 mx.petrel.test"}),
    ("NOOP", ["NOOP " + PAD], {"250 2.0.0 Ok"}),
    ("RSET", ["RSET"], {"250 2.0.0 Ok"}),
    ("HELP", ["HELP " + PAD], {"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS"}),
    ("VRFY", ["VRFY u" + PAD + "@petrel.test"], {"252 2.0.0 Send some mail, I'll try my best"}),
    ("unknown commands", ["XYZZY " + PAD], {"502 5.5.2 Error: command not recognized"}),
    ("AUTH PLAIN with bad data", ["AUTH PLAIN " + "A" * 1000], {"501 5.5.2 Invalid authentication data"}),
    ("AUTH LOGIN exchanges", ["AUTH LOGIN", "QUJD" * 250, "*"],
     {"334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "501 5.7.0 Authentication aborted"}),
    ("overlong lines", ["NOOP " + "y" * 5000], {"500 5.5.2 Error: line too long"}),
]


def floods(p, c, pid, where):
    c.cmd("EHLO warmup.example.org")
    for name, lines, want in FLOODS[:3]:       # warm up the allocator and the buffers
        c.flood(lines)
    start = rss(pid)
    for name, lines, want in FLOODS:
        before = rss(pid)
        seen = c.flood(lines)
        t.is_(seen, want, "%s: %d %s in one session, each answered" % (where, COUNT, name))
        grew = rss(pid) - before
        t.ok(grew < PER_FLOOD_BOUND, "%s: %s flood: the worker grew by less than %d MiB"
             % (where, name, PER_FLOOD_BOUND // MIB), "grew by %.1f MiB" % (grew / MIB))
    grown = rss(pid) - start
    t.ok(grown < FLOOD_BOUND, "%s: the worker grew by less than %d MiB over %d floods of %d commands"
         % (where, FLOOD_BOUND // MIB, len(FLOODS), COUNT), "grew by %.1f MiB" % (grown / MIB))
    t.is_(c.cmd("EHLO after.example.org"), "250 CHUNKING", "%s: the session still works" % where)


MODS = module_dir("testmod")
LIFTED = {"smtpd_junk_command_limit": "1000000000", "smtpd_hard_error_limit": "1000000000",
          "smtpd_soft_error_limit": "1000000000", "smtpd_forbid_unauth_pipelining": "no",
          "modules": "testmod", "module_directory": MODS, "smtpd_sasl_auth_enable": "yes",
          "smtpd_sasl_type": "testmod", "smtpd_tls_security_level": "may"}

with Petrel(t, workers=1, start=False, main_cf=LIFTED) as p:
    cert, key = make_cert(p.dir)
    conf = dict(p.settings, smtpd_tls_cert_file=cert, smtpd_tls_key_file=key)
    p.write_main_cf(conf)
    p._chown()
    p.start()

    c = Client(p.port)
    pid = serving_pid(p, c.sock)
    t.diag("worker %d starts at %.1f MiB" % (pid, rss(pid) / MIB))
    try:
        floods(p, c, pid, "plaintext")
        t.is_(c.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS", "STARTTLS")
        ctx = ssl._create_unverified_context()
        c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
        floods(p, c, pid, "TLS")
    except (OSError, ValueError) as e:
        t.ok(False, "the flooded session broke off", repr(e))
    c.sock.close()

    # A client that sends while its session waits (a tarpit delay) must not
    # grow the worker beyond the read watermark, with or without TLS.
    conf.update({"smtpd_soft_error_limit": "1", "smtpd_error_sleep_time": "10s"})
    p.stop()
    p.write_main_cf(conf)
    p.start()
    for tls in (False, True):
        where = "TLS" if tls else "plaintext"
        c = Client(p.port)
        pid = serving_pid(p, c.sock)
        c.cmd("EHLO pileup.example.org")
        if tls:
            c.cmd("STARTTLS")
            c.sock = ssl._create_unverified_context().wrap_socket(c.sock, server_hostname="localhost")
            c.cmd("EHLO pileup.example.org")
        before = rss(pid)
        t.is_(c.cmd("XYZZY"), "502 5.5.2 Error: command not recognized", "%s: an error: the session waits 10 s" % where)
        sent = [0]

        def blast():
            chunk = b"z" * 65536
            c.sock.settimeout(3)
            try:
                while sent[0] < 64 * MIB:
                    c.sock.sendall(chunk)
                    sent[0] += len(chunk)
            except (OSError, ValueError):
                pass

        th = threading.Thread(target=blast)
        th.start()
        th.join(8)
        peak = rss(pid) - before
        t.diag("%s: the client sent %.1f MiB while the session waited; VmRSS %+.1f MiB"
               % (where, sent[0] / MIB, peak / MIB))
        t.ok(peak < PILEUP_BOUND, "%s: input sent while the session waits is not buffered beyond the watermark" % where,
             "grew by %.1f MiB" % (peak / MIB))
        t.ok(sent[0] < 64 * MIB, "%s: the client is held back (it could not send all 64 MiB)" % where,
             "sent %.1f MiB" % (sent[0] / MIB))
        c.sock.close()
        th.join(10)

    # A client that pipelines short commands with long replies and never
    # reads them: the worker stops reading its commands instead of queueing
    # the replies without end.
    c = Client(p.port)
    pid = serving_pid(p, c.sock)
    before = rss(pid)
    sent = [0]

    def unread():
        line = b"EHLO a\r\n" * 8192
        c.sock.settimeout(3)
        try:
            while sent[0] < 64 * MIB:
                c.sock.sendall(line)
                sent[0] += len(line)
        except (OSError, ValueError):
            pass

    th = threading.Thread(target=unread)
    th.start()
    th.join(10)
    grown = rss(pid) - before
    t.diag("unread replies: the client sent %.1f MiB of EHLO; VmRSS %+.1f MiB" % (sent[0] / MIB, grown / MIB))
    t.ok(grown < PILEUP_BOUND, "a client that reads no replies does not grow the worker", "grew by %.1f MiB" % (grown / MIB))
    c.sock.close()
    th.join(10)

    c = Client(p.port)
    t.is_(c.cmd("EHLO still.example.org"), "250 CHUNKING", "the server still serves")
    c.sock.close()

t.done()
