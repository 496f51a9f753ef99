"""A policy server of our own for the tests of check_policy_service: it
speaks Postfix's policy delegation protocol (SMTPD_POLICY_README) on a TCP
port or a UNIX socket, records every request (with the connection it came
on) and answers what the test's `decide(request)` returns.

decide returns one of:
  "ACTION text"        -> "action=ACTION text\\n\\n"
  ("raw", bytes)       -> those bytes, as they are (garbage, half replies, ...)
  ("sleep", seconds, reply) -> waits, then answers reply (a slow server)
  ("close",)           -> closes the connection without answering
"""
import os
import socket
import threading
import time


class PolicyServer:
    def __init__(self, decide, unix_path=None):
        self.decide = decide
        self.requests = []          # (connection number, dict of attributes)
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = False
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            self.sock.bind(unix_path)
            os.chmod(unix_path, 0o666)
            self.endpoint = "unix:" + unix_path
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.endpoint = "inet:127.0.0.1:%d" % self.port
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn, number):
        conn.settimeout(60)
        buf = b""
        try:
            while not self.stopping:
                while b"\n\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                raw, buf = buf.split(b"\n\n", 1)
                attrs = {}
                for line in raw.decode("utf-8", "replace").split("\n"):
                    name, _, value = line.partition("=")
                    attrs.setdefault(name, value)
                attrs["_raw"] = raw
                with self.lock:
                    self.requests.append((number, attrs))
                answer = self.decide(attrs)
                if isinstance(answer, tuple) and answer[0] == "sleep":
                    time.sleep(answer[1])
                    answer = answer[2]
                if isinstance(answer, tuple) and answer[0] == "close":
                    return
                if isinstance(answer, tuple) and answer[0] == "raw":
                    conn.sendall(answer[1])
                    continue
                conn.sendall(("action=%s\n\n" % answer).encode())
        except OSError:
            return
        finally:
            conn.close()

    def states(self):
        with self.lock:
            return [r["protocol_state"] for _, r in self.requests]

    def last(self, state=None):
        with self.lock:
            for _, r in reversed(self.requests):
                if state is None or r.get("protocol_state") == state:
                    return r
        return None

    def clear(self):
        with self.lock:
            self.requests = []

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def wait_until(cond, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    return cond()
