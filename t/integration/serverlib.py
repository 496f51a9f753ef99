"""Servers the integration tests deliver to or talk to that are not Petrel: Postfix's smtp-sink
as a next hop (Sink: accepts everything, optionally keeping each transaction in a file), and the
base of the tests' own scripted servers (LoopbackServer: a free loopback port, a thread a
connection), and on it Blackhole, a peer that hangs; pump, one direction of the tests' TCP
relays. One copy each, so a fix to how they start, wait or stop reaches every test."""
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from harness import free_port


class Sink:
    """Postfix's smtp-sink on 127.0.0.1:port (a free port unless given), listening once this
    returns (it waits up to 30 s: at once on a quiet machine). options are more smtp-sink flags: "-a" announces no AUTH,
    "-c" counts sessions on its (discarded) output, "-r RCPT" defers each RCPT... With keep,
    each transaction is kept in a file of self.dir (messages()); backlog is its listen queue.
    As root it is told to run as nobody (-u), which it insists on then and refuses otherwise."""

    def __init__(self, port=None, options=(), keep=False, backlog=100):
        self.port = port or free_port()
        self.dir = None
        args = ["smtp-sink"] + (["-u", "nobody"] if os.geteuid() == 0 else []) + list(options)
        if keep:
            self.dir = tempfile.mkdtemp(prefix="petrel-sink-")
            os.chmod(self.dir, 0o777)   # smtp-sink writes as nobody
            args += ["-d", os.path.join(self.dir, "%M.")]
        self.proc = subprocess.Popen(args + ["127.0.0.1:%d" % self.port, str(backlog)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while not self.listening():
            if self.proc.poll() is not None or time.time() >= deadline:
                self.stop()
                raise RuntimeError("smtp-sink did not listen on 127.0.0.1:%d (exit status %s)"
                                   % (self.port, self.proc.returncode))
            time.sleep(0.05)

    def listening(self):
        """Whether a connection to the sink's port succeeds now."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def files(self):
        """With keep: the paths of the transactions received so far."""
        return [os.path.join(self.dir, name) for name in os.listdir(self.dir)]

    def messages(self):
        """With keep: the text of each transaction received so far (the envelope as headers
        smtp-sink adds, then the message)."""
        out = []
        for path in self.files():
            with open(path, errors="replace") as f:
                out.append(f.read())
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def pump(src, dst):
    """Copies what src receives to dst until src ends or either fails, then shuts both down
    (so the other direction's pump ends too): one direction of a TCP relay, on a thread."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class LoopbackServer:
    """A TCP server on a free loopback port (self.port) that runs the subclass's
    self.session(conn) on a thread of its own for each connection, until self.sock is closed;
    self.accepted(conn) runs first, on the accepting thread. A subclass sets what its sessions
    use before calling this __init__, which starts accepting; backlog is its listen queue."""

    def __init__(self, backlog=5):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(backlog)
        threading.Thread(target=self.serve, daemon=True).start()

    def accepted(self, conn):
        pass

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted(conn)
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()


class Blackhole(LoopbackServer):
    """Accepts connections (self.conns, in the order they came) and never says a word: a next
    hop or a milter host that hangs. close() stops accepting and closes them."""

    def __init__(self, backlog=16):
        self.conns = []
        super().__init__(backlog)

    def accepted(self, conn):
        self.conns.append(conn)

    def session(self, conn):
        pass

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()
