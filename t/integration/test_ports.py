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
import shutil
import socket
import subprocess
import sys
import tempfile

import portlib
from harness import TOP_SRCDIR, Tap, free_port, refused_port, revive_port, run_as_user
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

# The lock file is made by whichever test comes first, root's (CI) or a
# user's, and must be writable for every other user's from the moment it
# exists: a test that finds it with the umask's mode (0644) cannot lock in it
# and reserves in a file of its own, beside every other user's tests. Here the
# first process is this one (root) with another lock file of its own, made in
# a directory like /tmp; while it makes the file, a test process of the
# unprivileged user opens it.
if os.geteuid() == 0:
    prefix, _ = run_as_user()
    shared = tempfile.mkdtemp(prefix="petrel-test-portlock-")
    os.chmod(shared, 0o1777)
    shutil.copy(portlib.__file__, shared)
    lock = os.path.join(shared, "ports.lock")
    OPENER = ("import os, portlib; portlib.PORT_LOCK_FILE = %r; "
              "st = os.fstat(portlib._port_lock_fd()); print(st.st_dev, st.st_ino)" % lock)
    opened = []
    real_fchmod, real_lock_file, real_fd = os.fchmod, portlib.PORT_LOCK_FILE, portlib._PORTS.pop("fd")

    def fchmod_while_a_user_opens(fd, mode):
        r = subprocess.run(prefix + [sys.executable, "-c", OPENER], capture_output=True, text=True, timeout=60,
                           cwd=shared, env=dict(os.environ, PYTHONPATH=shared, PYTHONDONTWRITEBYTECODE="1"))
        opened.append(r.stdout.strip() or r.stderr.strip())
        real_fchmod(fd, mode)
    os.fchmod, portlib.PORT_LOCK_FILE = fchmod_while_a_user_opens, lock
    try:
        first_fd = portlib._port_lock_fd()
    finally:
        os.fchmod, portlib.PORT_LOCK_FILE = real_fchmod, real_lock_file
        portlib._PORTS["fd"] = real_fd
    st, fst = os.stat(lock), os.fstat(first_fd)
    t.ok(opened == ["%d %d" % (st.st_dev, st.st_ino)] and (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino),
         "a user's test that opens the lock file while root's makes it shares it with root's (mode 0%o)"
         % (st.st_mode & 0o777), "the user's: %s; root's: %d %d; the file: %d %d"
         % (opened, fst.st_dev, fst.st_ino, st.st_dev, st.st_ino))
    os.close(first_fd)
    t.is_(sorted(os.listdir(shared)), ["portlib.py", "ports.lock"], "nothing else is left beside it")
    shutil.rmtree(shared)
else:
    t.skip("the lock file made by root, opened meanwhile by a user", "needs root (CI and scripts/test.sh run as root)")

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
