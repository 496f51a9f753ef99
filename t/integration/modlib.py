"""Helpers for module tests: a module directory with the test modules in it."""
import os
import shutil
import tempfile

from harness import TOP_BUILDDIR, CLEANUP_DIRS


def module_dir(*names, mode=0o644, built_in="."):
    """A fresh directory (0755) holding copies of the named test modules (NAME.so), as
    built in t/modules/BUILT_IN (e.g. "abi10" for those built against the ABI 1.0 headers)."""
    d = tempfile.mkdtemp(prefix="petrel-modules-")
    os.chmod(d, 0o755)
    CLEANUP_DIRS.append(d)
    for name in names:
        src = os.path.join(TOP_BUILDDIR, "t", "modules", built_in, ".libs", name + ".so")
        dst = os.path.join(d, name + ".so")
        shutil.copyfile(src, dst)
        os.chmod(dst, mode)
    return d


def bundled_module_dir(*names, mode=0o644):
    """A fresh directory (0755) holding copies of the named bundled modules
    (modules/NAME/NAME.so of the build), as make install lays them out."""
    d = tempfile.mkdtemp(prefix="petrel-modules-")
    os.chmod(d, 0o755)
    CLEANUP_DIRS.append(d)
    for name in names:
        src = os.path.join(TOP_BUILDDIR, "modules", name, ".libs", name + ".so")
        dst = os.path.join(d, name + ".so")
        shutil.copyfile(src, dst)
        os.chmod(dst, mode)
    return d


class UdpBlackhole:
    """A UDP socket on a free loopback port that reads nothing and answers
    nothing: a DNS server that never replies (dnsmasq cannot delay)."""

    def __init__(self):
        import socket
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def smtp_from(port, src="127.0.0.1", host="127.0.0.1", timeout=30):
    """An Smtp client whose connection comes from the loopback address src
    (any 127.0.0.0/8 address works on Linux), greeting read."""
    from harness import Smtp
    return Smtp(port, host=host, timeout=timeout, source=None if ":" in host else src)


def rcpt_reply(c, sender="someone@sender.example", rcpt="user@petrel.test", helo="client.example.org"):
    """EHLO, MAIL and RCPT on an open connection; the last reply line."""
    c.ehlo(helo)
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if c.code != 250:
        return r
    return c.cmd("RCPT TO:<%s>" % rcpt)


def smtpd_worker_pids(p):
    """The master's children that hold p's listening socket: its smtpd workers
    (the queue manager and other roles do not)."""
    port_hex = "%04X" % p.port
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":" + port_hex) and fields[3] == "0A":
                inodes.add("socket:[%s]" % fields[9])
    pids = []
    for pid in p.worker_pids(at_least=2):
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
            if any(os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes for fd in fds):
                pids.append(pid)
        except OSError:
            pass
    return pids
