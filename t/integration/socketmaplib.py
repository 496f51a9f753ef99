"""A real socketmap server (the netstring protocol of Sendmail's and Postfix's socketmap
tables) for the socketmap: table tests, on a loopback port. It serves named maps from
dicts, records every request exactly as received (bytes), and can be told to answer some
keys late, with TEMP, PERM, garbage or an oversized reply. Each connection is served in
its own thread, so one slow request does not hold up another connection's."""
import socket
import threading
import time

from harness import free_port


def netstring(payload):
    return b"%d:%s," % (len(payload), payload)


class SocketmapServer:
    def __init__(self, maps, port=None):
        self.maps = maps                    # {"virtual": {b"key": b"value"}}
        self.port = port or free_port()
        self.requests = []                  # raw payloads received
        self.slow = {}                      # key -> seconds to wait before answering, or an Event to wait for
        self.special = {}                   # key -> (map name or None, raw reply bytes): TEMP, PERM, garbage
        self.lock = threading.Lock()
        self.conns = []
        self._start()

    def _start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_netstring(self, conn, buf):
        while b":" not in buf:
            data = conn.recv(4096)
            if not data:
                return None, buf
            buf += data
        head, rest = buf.split(b":", 1)
        n = int(head)
        while len(rest) < n + 1:
            data = conn.recv(4096)
            if not data:
                return None, b""
            rest += data
        if rest[n:n + 1] != b",":
            return None, b""
        return rest[:n], rest[n + 1:]

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                payload, buf = self._read_netstring(conn, buf)
                if payload is None:
                    return
                with self.lock:
                    self.requests.append(payload)
                name, _, key = payload.partition(b" ")
                if key in self.slow:
                    hold = self.slow[key]
                    if isinstance(hold, threading.Event):
                        hold.wait(60)   # until the test lets it answer
                    else:
                        time.sleep(hold)
                special = self.special.get(key)
                if special is not None and special[0] in (None, name):
                    conn.sendall(special[1])            # raw bytes: a netstring or garbage
                    continue
                table = self.maps.get(name.decode("latin-1"), {})
                if key in table:
                    conn.sendall(netstring(b"OK " + table[key]))
                else:
                    conn.sendall(netstring(b"NOTFOUND "))
        except OSError:
            return
        finally:
            conn.close()

    def seen(self, mapname):
        with self.lock:
            return [p.partition(b" ")[2] for p in self.requests if p.partition(b" ")[0] == mapname.encode()]

    def stop(self):
        self.running = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []
        self.thread.join(5)

    def restart(self):
        """Listens again on the same port: it stayed reserved for this test
        process (portlib.free_port) while the server was down, so no other
        test has taken it meanwhile."""
        self._start()
