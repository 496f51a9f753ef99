"""A scripted SMTP/LMTP server that can misbehave at every stage, and the
smtp-deliver driver of the SMTP/LMTP client, shared by the client's tests
(test_smtp_client.py, test_smtp_client_params.py, test_smtp_client_tls.py)."""
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from harness import Tap, free_port, TOP_BUILDDIR

TOOL = os.path.join(TOP_BUILDDIR, "t", "tools", "smtp-deliver")
ME = "petrel-client.test"


class Server(threading.Thread):
    """A scripted SMTP/LMTP server. Options (keyword arguments):
    greeting, caps (EHLO keywords), ehlo (reply to EHLO/LHLO instead of
    250 + caps), mail, rcpt (reply or function of the address), data, dot
    (reply, or a list of replies for LMTP), stall (command whose reply never
    comes), close_in_data (bytes of body to read before closing), tls
    ((cert, key) to offer STARTTLS), tls_broken (answer 220 to STARTTLS, then
    garbage), mail_421_after (transactions per connection before MAIL gets
    421 and the connection closes), lmtp, unix (socket path), host.
    Also: stall="GREETING" (no greeting at all) or "DOT" (no reply to the
    end of data), stop_reading_body (stop reading after 354, with a small
    receive buffer, so the client cannot send), dot_delay (seconds before the
    end-of-data reply), tls_max / tls_min (ssl.TLSVersion), tls_ciphers
    (OpenSSL cipher list for TLS 1.2), client_ca (ask for a client
    certificate, verified against this CA file), tls_tickets (False: no
    session tickets), tls_ctx (a ready context, to share sessions between
    servers). Each session records peer (the client's address), tls,
    tls_version, cipher, reused, client_cn."""

    def __init__(self, **opt):
        super().__init__(daemon=True)
        self.opt = opt
        self.sessions = []
        self.lock = threading.Lock()
        if opt.get("unix"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(opt["unix"])
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.port = opt.get("port") or free_port()
            self.sock.bind((opt.get("host", "127.0.0.1"), self.port))
        if opt.get("stop_reading_body"):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.listen(16)
        self.tls_ctx = opt.get("tls_ctx")
        if self.tls_ctx is None and opt.get("tls"):
            self.tls_ctx = self.make_tls_ctx()
        self.start()

    def make_tls_ctx(self):
        o = self.opt
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*o["tls"])
        if o.get("tls_max"):
            ctx.maximum_version = o["tls_max"]
        if o.get("tls_min"):
            ctx.minimum_version = o["tls_min"]
        if o.get("tls_ciphers"):
            ctx.set_ciphers(o["tls_ciphers"])
        if o.get("client_ca"):
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(o["client_ca"])
        if o.get("tls_tickets") is False:
            ctx.options |= ssl.OP_NO_TICKET
        return ctx

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(c,), daemon=True).start()

    def stop(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- one connection --
    def session(self, c):
        o = self.opt
        s = {"chunks": [], "cmds": [], "data": [], "tls": False, "quit": False, "peer": None}
        try:
            s["peer"] = c.getpeername()[0] if not o.get("unix") else "unix"
        except OSError:
            pass
        with self.lock:
            self.sessions.append(s)
        self.c = None
        st = {"c": c, "buf": b""}
        c.settimeout(30)

        def send(line):
            st["c"].sendall((line + "\r\n").encode())

        def recv():
            try:
                d = st["c"].recv(65536)
            except (OSError, ssl.SSLError):
                return b""
            if d:
                s["chunks"].append(d)
            return d

        def readline():
            while b"\n" not in st["buf"]:
                d = recv()
                if not d:
                    return None
                st["buf"] += d
            line, st["buf"] = st["buf"].split(b"\n", 1)
            return line.rstrip(b"\r").decode("utf-8", "replace")

        def stall():
            while recv():
                pass

        try:
            if o.get("stall") == "GREETING":
                stall()
                return
            send(o.get("greeting", "220 scripted.test ESMTP"))
            if not o.get("greeting", "220").startswith("220"):
                readline()
                return
            txns = 0
            rcpts = []
            while True:
                line = readline()
                if line is None:
                    return
                s["cmds"].append(line)
                verb = line.split(" ")[0].upper()
                if verb == o.get("stall"):
                    stall()
                    return
                if verb in ("EHLO", "LHLO"):
                    if o.get("ehlo"):
                        send(o["ehlo"])
                        continue
                    caps = list(o.get("caps", ["PIPELINING", "8BITMIME", "SIZE 10240000", "DSN", "SMTPUTF8"]))
                    if (o.get("tls") or o.get("tls_broken")) and not s["tls"]:
                        caps.append("STARTTLS")
                    lines = ["scripted.test hello"] + caps
                    for i, l in enumerate(lines):
                        send("250%s%s" % ("-" if i < len(lines) - 1 else " ", l))
                elif verb == "HELO":
                    send(o.get("helo", "250 scripted.test"))
                elif verb == "STARTTLS":
                    send("220 2.0.0 Ready to start TLS")
                    if o.get("tls_broken"):
                        st["c"].sendall(b"this is not TLS\r\n" * 20)
                        st["c"].close()
                        return
                    try:
                        st["c"] = self.tls_ctx.wrap_socket(st["c"], server_side=True)
                    except (OSError, ssl.SSLError) as e:
                        s["tls_error"] = str(e)
                        return
                    st["buf"] = b""
                    s["tls"] = True
                    s["tls_version"] = st["c"].version()
                    s["cipher"] = st["c"].cipher()[0]
                    s["reused"] = st["c"].session_reused
                    peer = st["c"].getpeercert()
                    s["client_cn"] = None
                    if peer:
                        for rdn in peer.get("subject", ()):
                            for k, v in rdn:
                                if k == "commonName":
                                    s["client_cn"] = v
                    elif st["c"].getpeercert(binary_form=True):
                        s["client_cn"] = "(unverified)"
                elif verb == "MAIL":
                    rcpts = []
                    txns += 1
                    if o.get("mail_421_after") and txns > o["mail_421_after"]:
                        send("421 4.4.2 closing, too many transactions")
                        return
                    send(o.get("mail", "250 2.1.0 Ok"))
                elif verb == "RCPT":
                    m = re.search(r"<([^>]*)>", line)
                    r = o.get("rcpt", "250 2.1.5 Ok")
                    r = r(m.group(1)) if callable(r) else r
                    if r.startswith("2"):
                        rcpts.append(m.group(1))
                    send(r)
                elif verb == "DATA":
                    r = o.get("data", "354 End data with <CR><LF>.<CR><LF>")
                    send(r)
                    if not r.startswith("354"):
                        continue
                    raw = st["buf"]
                    st["buf"] = b""
                    if o.get("stop_reading_body"):
                        time.sleep(60)
                        return
                    if o.get("close_in_data") is not None:
                        while len(raw) < o["close_in_data"]:
                            d = recv()
                            if not d:
                                break
                            raw += d
                        st["c"].close()
                        return
                    while not (b"\r\n" + raw).endswith(b"\r\n.\r\n"):
                        d = recv()
                        if not d:
                            return
                        raw += d
                    s["data"].append(raw[:-3])
                    if o.get("stall") == "DOT":
                        stall()
                        return
                    if o.get("dot_delay"):
                        time.sleep(o["dot_delay"])
                    dot = o.get("dot", "250 2.0.0 Ok: queued as SCRIPT%d" % txns)
                    if o.get("lmtp"):
                        for i, _ in enumerate(rcpts):
                            send(dot[i] if isinstance(dot, list) else dot)
                    else:
                        send(dot[0] if isinstance(dot, list) else dot)
                elif verb == "RSET":
                    send("250 2.0.0 Ok")
                elif verb == "QUIT":
                    s["quit"] = True
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 Error: command not recognized")
        except (OSError, ssl.SSLError):
            return
        finally:
            try:
                st["c"].close()
            except OSError:
                pass


def unstuff(raw):
    lines = raw.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


def hop(s):
    """The next hop that names scripted server s."""
    return "[127.0.0.1]:%d" % s.port


def one(res):
    """Env.deliver()'s result for a@dst.test ({} when there is none)."""
    return res.get("a@dst.test", {})


class Env:
    """A test's directory, its queue files, the scripted servers it started, and smtp-deliver."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="petrel-smtpc-")
        self.queue = os.path.join(self.dir, "queue")
        self.bad_exits = []
        self.servers = []
        self.confs = 0

    def server(self, **kw):
        """A scripted Server(**kw), stopped by finish()."""
        s = Server(**kw)
        self.servers.append(s)
        return s

    def conf(self, **params):
        """smtp-deliver's options for a new configuration directory whose main.cf holds params."""
        self.confs += 1
        d = os.path.join(self.dir, "conf%d" % self.confs)
        os.mkdir(d)
        with open(os.path.join(d, "main.cf"), "w") as f:
            for k, v in params.items():
                f.write("%s = %s\n" % (k, v))
        return ["--config", d]

    def finish(self, t):
        """Checks that smtp-deliver never failed, stops the servers, removes the directory and
        ends t."""
        t.is_(self.bad_exits, [], "smtp-deliver exited 0 every time")
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        t.done()

    def qfile(self, rcpts, body, sender="sender@src.test", opts=()):
        path = os.path.join(self.dir, "msg%d" % time.monotonic_ns())
        with open(path, "wb") as f:
            f.write(body)
        r = subprocess.run([TOOL, "--make-queue-file", self.queue] + list(opts) + [sender, path] + list(rcpts),
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return r.stdout.strip()

    def deliver(self, qfile, nexthop, *opts, timeout=60):
        r = subprocess.run([TOOL, "--myhostname", ME] + list(opts) + [qfile, nexthop], capture_output=True,
                           timeout=timeout)
        out = r.stdout.decode("utf-8", "replace")
        res = {}
        stats = ""
        for line in out.splitlines():
            if line.startswith("STATS "):
                stats = line
                continue
            parts = line.split(" ", 4)
            if len(parts) == 5:
                res.setdefault(parts[0], []).append({"status": parts[1], "dsn": parts[2], "relay": parts[3],
                                                     "text": parts[4]})
        self.last_out = out + r.stderr.decode("utf-8", "replace")
        if r.returncode != 0:   # a crash, or a sanitizer's report in a sanitizer build
            self.bad_exits.append(self.last_out[-2000:])
        return {k: v[-1] for k, v in res.items()}, stats, res


class T(Tap):
    def is_(self, got, want, desc, diag=None):
        return self.ok(got == want, desc, "got:  %r\nwant: %r%s" % (got, want, "\n" + str(diag) if diag else ""))


