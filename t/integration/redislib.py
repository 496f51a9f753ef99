"""Private Redis peers for the greylist and ratelimit tests: redis-server and
redis-sentinel on free loopback ports, in the foreground, without persistence,
stopped by PID; and a TCP server that accepts and never answers."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import free_port


def redis_cli(port, *args):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + list(args),
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


class RedisServer:
    def __init__(self, port=None, extra=(), start=True):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="petrel-redis-")
        self.extra = list(extra)
        self.proc = None
        if start:
            self.start()

    def start(self):
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--dir", self.dir,
               "--logfile", os.path.join(self.dir, "redis.log")] + self.extra
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % self.proc.returncode)
            if redis_cli(self.port, "PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer on %d" % self.port)

    def cli(self, *args):
        return redis_cli(self.port, *args)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class RedisSentinel:
    def __init__(self, master_port, name="mymaster"):
        self.port = free_port()
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="petrel-sentinel-")
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\nlogfile %s\n"
                    "sentinel monitor %s 127.0.0.1 %d 1\n"
                    "sentinel down-after-milliseconds %s 1000\n"
                    "sentinel failover-timeout %s 5000\n"
                    "sentinel parallel-syncs %s 1\n"
                    % (self.port, self.dir, os.path.join(self.dir, "sentinel.log"), name, master_port,
                       name, name, name))
        self.proc = subprocess.Popen(["redis-sentinel", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-sentinel exited with %s" % self.proc.returncode)
            if redis_cli(self.port, "PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-sentinel did not answer")

    def master_port(self):
        out = redis_cli(self.port, "SENTINEL", "get-master-addr-by-name", self.name).split()
        return int(out[1]) if len(out) == 2 else None

    def replicas(self):
        return redis_cli(self.port, "SENTINEL", "replicas", self.name)

    def log(self):
        try:
            with open(os.path.join(self.dir, "sentinel.log")) as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SilentServer:
    """Accepts TCP connections on a free loopback port and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()
