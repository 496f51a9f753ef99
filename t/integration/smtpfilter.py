"""A small SMTP content filter of our own, for the protocol edges of content filters.

It listens on a free loopback port and speaks enough ESMTP for an MTA in front of it
(EHLO, XFORWARD, MAIL, RCPT, DATA, RSET, NOOP, QUIT). What it does with a message:

- by default it hands it on, with an "X-Filtered-By: smtpfilter" header on top, to
  127.0.0.1:reinject_port over SMTP (the way amavisd-new sends mail back into Postfix),
  and answers the final "." with the reinjection's own reply, as a before-queue proxy
  filter must;
- replies={"mail": "550 5.7.1 nope", "dot": "451 4.7.1 later", ...} answers a stage
  (connect, ehlo, xforward, mail, rcpt, data, dot) with that line instead;
- hang="rcpt" (or any stage) reads the command and never answers: a filter that hangs;
- sessions records what each connection saw (helo, xforward, mail, rcpts, data);
- lmtp=True: it speaks LMTP (LHLO; one reply per recipient to the final "."), as a
  next hop that keeps what it gets (no reinjection).

Runs in threads of the test process; stop() closes it (and every connection).
"""
import smtplib
import socket
import threading
import time

from harness import free_port

STAGES = ("connect", "ehlo", "xforward", "mail", "rcpt", "data", "dot")


class SmtpFilter:
    def __init__(self, reinject_port=None, replies=None, hang=None, header=b"X-Filtered-By: smtpfilter\r\n",
                 ehlo_keywords=("PIPELINING", "8BITMIME", "XFORWARD NAME ADDR PROTO HELO", "ENHANCEDSTATUSCODES"),
                 port=None, lmtp=False):
        self.port = port or free_port()
        self.lmtp = lmtp
        self.reinject_port = reinject_port
        self.replies = dict(replies or {})
        self.hang = hang
        self.header = header
        self.ehlo_keywords = list(ehlo_keywords)
        self.sessions = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conns = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- one connection -------------------------------------------------------

    def _serve(self, conn):
        session = {"helo": None, "xforward": [], "transactions": []}
        with self.lock:
            self.sessions.append(session)
        f = conn.makefile("rb")
        try:
            self._dialogue(conn, f, session)
        except (OSError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _send(self, conn, line):
        conn.sendall(line.encode() + b"\r\n")

    def _stage(self, conn, stage, default):
        """Answers stage: hangs, sends the configured reply, or the default. Returns the reply."""
        if self.hang == stage:
            while not self.stopping.is_set():
                time.sleep(0.1)
            raise OSError("stopping")
        reply = self.replies.get(stage, default)
        self._send(conn, reply)
        return reply

    def _dialogue(self, conn, f, session):
        self._stage(conn, "connect", "220 filter.test %s smtpfilter" % ("LMTP" if self.lmtp else "ESMTP"))
        tx = None
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO", "LHLO"):
                session["helo"] = cmd[5:]
                reply = self.replies.get("ehlo")
                if self.hang == "ehlo":
                    self._stage(conn, "ehlo", "")
                if reply:
                    self._send(conn, reply)
                elif verb == "HELO":
                    self._send(conn, "250 filter.test")
                else:
                    lines = ["filter.test"] + self.ehlo_keywords
                    for i, text in enumerate(lines):
                        self._send(conn, "250%s%s" % (" " if i == len(lines) - 1 else "-", text))
            elif verb == "XFORWARD":
                session["xforward"].append(cmd[9:])
                self._stage(conn, "xforward", "250 2.0.0 Ok")
            elif verb == "MAIL":
                tx = {"mail": cmd, "rcpts": [], "data": None, "reply": None}
                session["transactions"].append(tx)
                if not self._stage(conn, "mail", "250 2.1.0 Ok").startswith("2"):
                    tx = None
            elif verb == "RCPT":
                reply = self._stage(conn, "rcpt", "250 2.1.5 Ok")
                if tx is not None and reply.startswith("2"):
                    tx["rcpts"].append(cmd)
            elif verb == "DATA":
                reply = self._stage(conn, "data", "354 End data with <CR><LF>.<CR><LF>")
                if not reply.startswith("354"):
                    continue
                data = self._read_data(f)
                if tx is None:
                    self._send(conn, "503 5.5.1 no transaction")
                    continue
                tx["data"] = data
                if self.lmtp:
                    for _ in tx["rcpts"]:
                        self._send(conn, "250 2.0.0 Ok: kept")
                    tx["reply"] = "250 2.0.0 Ok: kept"
                    tx = None
                    continue
                tx["reply"] = self._finish(conn, tx)
                tx = None
            elif verb == "RSET":
                tx = None
                self._send(conn, "250 2.0.0 Ok")
            elif verb == "NOOP":
                self._send(conn, "250 2.0.0 Ok")
            elif verb == "QUIT":
                self._send(conn, "221 2.0.0 Bye")
                return
            else:
                self._send(conn, "502 5.5.2 Error: command not recognized")

    @staticmethod
    def _read_data(f):
        lines = []
        while True:
            line = f.readline()
            if not line:
                raise OSError("connection closed in DATA")
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            if line.startswith(b"."):
                line = line[1:]
            lines.append(line)

    def _finish(self, conn, tx):
        if self.hang == "dot" or "dot" in self.replies or self.reinject_port is None:
            return self._stage(conn, "dot", "250 2.0.0 Ok: filtered and dropped (no reinjection port)")
        sender = _path(tx["mail"][len("MAIL FROM:"):])
        rcpts = [_path(r[len("RCPT TO:"):]) for r in tx["rcpts"]]
        try:
            with smtplib.SMTP("127.0.0.1", self.reinject_port, timeout=30) as s:
                s.ehlo("filter.test")
                s.mail(sender)
                for r in rcpts:
                    s.rcpt(r)
                code, text = s.data(self.header + tx["data"])
            reply = "%d %s" % (code, text.decode("utf-8", "replace"))
        except smtplib.SMTPResponseException as e:
            reply = "%d %s" % (e.smtp_code, e.smtp_error.decode("utf-8", "replace"))
        except (OSError, smtplib.SMTPException) as e:
            reply = "451 4.3.0 reinjection failed: %s" % e
        self._send(conn, reply)
        return reply

    def transactions(self):
        with self.lock:
            return [tx for s in self.sessions for tx in s["transactions"]]


def _path(arg):
    arg = arg.strip()
    if arg.startswith("<"):
        return arg[1:arg.index(">")]
    return arg.split(" ")[0]
