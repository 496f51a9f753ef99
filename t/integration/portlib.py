"""Ports for the integration tests: free_port(), refused_port(),
refused_dns_port() and revive_port() (harness.py re-exports them; the rule is
in doc/testing.md, "Tests that run side by side")."""
import fcntl
import os
import random
import socket
import sys
import threading

# --- ports ---------------------------------------------------------------------
# Tests run side by side (make -j2 check, other worktrees, CI), so a port a
# test names must stay its own from the moment it is picked until the test
# process exits, also while nothing listens on it (a server not started yet,
# stopped for a restart, a dead destination). Two things keep it so:
# - a reservation every test process honours: a write lock (fcntl, POSIX record
#   lock) on byte PORT of one shared file, held until the process exits (the
#   kernel drops it however the process ends, so nothing is left to clean up);
# - a window of ports below the kernel's ephemeral range
#   (net.ipv4.ip_local_port_range), which the kernel never hands out by itself:
#   no bind to port 0 (a peer's, a refused_port() of old) and no outgoing
#   connection's source port lands there between the pick and the bind.
# A candidate is taken when its lock is free and it binds now on the host over
# TCP and UDP (without SO_REUSEADDR, so a port with connections in TIME_WAIT is
# passed over too).
PORT_LOCK_FILE = "/tmp/petrel-test-ports.lock"   # fixed, not $TMPDIR: every test on the machine shares it
_PORT_WINDOW_LOW = 20000    # above the fixed ports of the peers' system services (amavisd's 10024...)
_GIVEN_PORTS = set()        # this process's reservations, never given out twice
_PORTS = {}                 # "fd": the lock file, "window": (low, high) or None
_PORTS_MUTEX = threading.Lock()
_RANDOM = random.SystemRandom()


def _port_window():
    """The ports below (or above) the kernel's ephemeral range a test may
    reserve, or None when that range leaves too few (then the kernel picks)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    if low - _PORT_WINDOW_LOW >= 4096:
        return (_PORT_WINDOW_LOW, low)
    if 65535 - high >= 4096:
        return (high + 1, 65536)
    return None


def _create_lock_file(path):
    """A descriptor of path, made mode 0666 whatever the umask before it
    appears under that name: made under a name of its own and linked into
    place, so another user's test never finds it with the umask's mode (0644:
    not writable for it) between its creation and its chmod. The other
    process's file when it got there first."""
    tmp = "%s.%d.new" % (path, os.getpid())
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o666)
        os.link(tmp, path)
    except FileExistsError:
        os.close(fd)
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    finally:
        os.unlink(tmp)
    return fd


def _port_lock_fd():
    """The shared lock file, opened once for the process's life: closing any
    descriptor of it would drop every lock the process holds on it. Mode 0666
    so tests run as root (CI) and as a user share it; opened without O_CREAT
    when it exists (fs.protected_regular refuses O_CREAT on another user's
    file in sticky /tmp, even to root)."""
    if "fd" not in _PORTS:
        path = PORT_LOCK_FILE
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = _create_lock_file(path)
        except OSError as e:   # another user's file we may not write: coordinate with our own user's tests at least
            path = "/tmp/petrel-test-ports-%d.lock" % os.geteuid()
            sys.stderr.write("harness: %s: %s; port reservations in %s\n" % (PORT_LOCK_FILE, e, path))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        _PORTS["fd"] = fd
        _PORTS["window"] = _port_window()
    return _PORTS["fd"]


def _bound(host, port, kind):
    """A socket of kind bound to host:port (no SO_REUSEADDR), or None."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        return None
    return s


def _reserve_port(host):
    """(port, a TCP socket bound to host:port): a port reserved for this
    process's life (see above), free over TCP and UDP on host right now."""
    with _PORTS_MUTEX:
        fd = _port_lock_fd()
        window = _PORTS["window"]
        for _ in range(1000):
            if window:
                port = _RANDOM.randrange(*window)
            else:
                probe = _bound(host, 0, socket.SOCK_STREAM)
                if probe is None:      # no such address here (IPv6 off): say so below
                    break
                port = probe.getsockname()[1]
                probe.close()
            if port in _GIVEN_PORTS:   # ours already: relocking would succeed, unlocking would drop it
                continue
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
            except OSError:            # another test process holds it
                continue
            tcp = _bound(host, port, socket.SOCK_STREAM)
            udp = tcp and _bound(host, port, socket.SOCK_DGRAM)
            if udp:
                udp.close()
                _GIVEN_PORTS.add(port)
                return port, tcp
            if tcp:
                tcp.close()
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, port)   # in use by something that takes no reservation
    raise RuntimeError("no port free to reserve on %s in %s" % (host, window or "the ephemeral range"))


def free_port(host="127.0.0.1"):
    """A port free on host (TCP and UDP) and reserved for this test process
    until it exits: no other test's free_port() or refused_port() returns
    it meanwhile, and the kernel gives it to no one else, so a server the
    test starts on it later, stops and starts again, finds it free. A
    reserved port nothing listens on refuses connections, but for a
    destination that must be dead use refused_port(), which also keeps
    processes that take no reservation off it."""
    port, s = _reserve_port(host)
    s.close()
    return port


_DEAD_PORTS = {}


def refused_port():
    """A loopback port that refuses every connection for as long as the test
    runs: a dead destination. Its port is reserved as a free_port()'s is,
    and it stays bound: were anything (a process that takes no reservation)
    to bind it, mail meant for the dead destination would reach that server,
    not be refused, and its owner would meet a client it never made. A bound
    socket that never listens refuses connections and, without SO_REUSEADDR,
    keeps everyone else from binding the port."""
    port, s = _reserve_port("127.0.0.1")
    _DEAD_PORTS[port] = s
    return port


def refused_dns_port():
    """A loopback port whose DNS server refuses at once, over UDP and TCP, for
    as long as the test runs: a DNS that is down. Like refused_port(), but a
    free_port() as the dead DNS server may be bound a moment later by another
    test's dnsmasq, whose answers (NXDOMAIN for its test domains) then turn
    "try again" into "not found". A UDP socket bound to the port and connected
    elsewhere matches no datagram from anyone else, so the kernel answers
    ICMP port unreachable (ECONNREFUSED for the resolver), and it keeps
    everyone else from binding the port."""
    for _ in range(100):
        port = refused_port()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:   # someone has the UDP port: another one (this one stays refused, unused)
            u.close()
            continue
        u.connect(("127.0.0.1", 9))
        _DEAD_PORTS[("udp", port)] = u
        return port
    raise RuntimeError("no loopback port free for both TCP and UDP")


def revive_port(port):
    """Frees a refused_port() for a server the test starts on it (it stays
    reserved for this process, so no other test takes it meanwhile)."""
    s = _DEAD_PORTS.pop(port, None)
    if s is not None:
        s.close()
