"""The harness's port reservations (portlib.py, doc/testing.md): a port one test
process was given is given to no other test process running at the same time,
also while nothing listens on it (a server stopped for a restart, a refused_port()
revived for a server started later), and it lies where the kernel never picks a
port by itself. Two other test processes (children importing portlib) reserve
ports while this one holds its own, one of them stopped: a socketmap server."""
import fcntl
import glob
import json
import os
import re
import socket
import subprocess
import sys

import portlib
from harness import TOP_SRCDIR, Tap, free_port, refused_port, revive_port
from socketmaplib import SocketmapServer, netstring

t = Tap()

# A test process of its own: reserves N ports, tries to lock each of the ports
# named on its command line (another process's reservations), reports both and
# holds its reservations until its standard input closes.
CHILD = r"""
import fcntl, json, sys
import portlib
n, others = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
ports = [portlib.free_port() for _ in range(n)]
fd = portlib._port_lock_fd()
taken = []
for p in others:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, p)
        taken.append(p)
    except OSError:
        pass
print(json.dumps({"ports": ports, "taken": taken}), flush=True)
sys.stdin.read()
"""


def bindable(port, listen=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        if listen:
            s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


mine = [free_port() for _ in range(20)]
window = portlib._PORTS["window"]
t.is_(len(set(mine)), len(mine), "free_port() never gives this process the same port twice")
t.ok(all(bindable(p) for p in mine), "each is free when given (TCP, without SO_REUSEADDR)")
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    low, high = (int(x) for x in f.read().split())
if window:
    t.ok(all(window[0] <= p < window[1] for p in mine) and (window[1] <= low or window[0] > high),
         "they lie outside the kernel's ephemeral range %d-%d (in %d-%d), where no bind to port 0 nor "
         "outgoing connection lands" % (low, high, window[0], window[1] - 1), str(sorted(mine)))
else:
    t.skip("ports outside the ephemeral range", "the range %d-%d leaves no window of 4096 ports" % (low, high))

dead = refused_port()
try:
    socket.create_connection(("127.0.0.1", dead), timeout=5).close()
    refused = False
except ConnectionRefusedError:
    refused = True
t.ok(refused, "a refused_port() refuses connections")
t.ok(not bindable(dead), "and nobody can bind it: the test keeps it bound")

server = SocketmapServer({"m": {b"k": b"v"}})
server.stop()   # down: its port is free in the kernel's view, but stays reserved
revive_port(dead)
held = mine + [dead, server.port]

env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
children = [subprocess.Popen([sys.executable, "-c", CHILD, "1500"] + [str(p) for p in held],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
reports = []
for c in children:
    line = c.stdout.readline()
    reports.append(json.loads(line) if line else {"ports": [], "taken": held})
t.ok(all(len(r["ports"]) == 1500 and len(set(r["ports"])) == 1500 for r in reports),
     "two other test processes reserve 1500 ports each at the same time")
a, b = (set(r["ports"]) for r in reports)
t.is_(sorted(a & b), [], "no port is given to both")
t.is_(sorted((a | b) & set(held)), [],
      "none of this process's ports, among them a revived refused_port() and a stopped server's")
t.is_([r["taken"] for r in reports], [[], []], "neither can lock any of them")
for c in children:
    c.stdin.close()
    c.wait(timeout=60)

server.restart()
with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
    s.sendall(netstring(b"m k"))
    reply = s.recv(100)
t.is_(reply, netstring(b"OK v"), "the stopped server listens again on its port and answers")
server.stop()
t.ok(bindable(dead, listen=True), "a server binds the revived refused_port() and listens there")

# The reservations are fcntl record locks: held while the process lives, gone when it ends.
fd = portlib._port_lock_fd()
released = []
for p in a:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, p)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, p)
        released.append(p)
    except OSError:     # another test process may have reserved it since
        pass
t.ok(len(released) >= 1400, "an ended process's reservations are released (%d of 1500 free again)" % len(released))

# The benchmarks start their servers and peers on fixed ports (bench/*.sh, their
# defaults): none lies in the window, or a test running alongside a benchmark
# could reserve one and start its server there (or the benchmark's dead
# destination would be a test's server).
bench_ports = {}
for script in sorted(glob.glob(os.path.join(TOP_SRCDIR, "bench", "*.sh"))):
    text = open(script).read()
    name = os.path.basename(script)
    for m in re.finditer(r'^PORTS="([0-9 ]+)"', text, re.M):
        bench_ports.update((int(x), name) for x in m.group(1).split())
    for m in re.finditer(r"^PORTS_BASE=\$\{PORTS_BASE:-([0-9]+)\}", text, re.M):
        # servers BASE, BASE+1, peers BASE+10.., its dnsmasq BASE+1001 (filters.sh)
        bench_ports.update((int(m.group(1)) + i, name) for i in range(1002))
if window:
    inside = sorted("%s %d" % (name, port) for port, name in bench_ports.items() if window[0] <= port < window[1])
    t.ok(bench_ports and not inside, "the benchmarks' fixed ports (%d) lie outside the window" % len(bench_ports),
         ", ".join(inside[:10]))
else:
    t.skip("the benchmarks' ports outside the window", "no window here")
t.done()
