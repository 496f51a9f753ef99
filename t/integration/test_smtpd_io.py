"""The plain-TCP session's own socket I/O (core/smtpd/session_io.c): the
replies to a pipelined group still leave in one write (one TCP segment,
RFC 2920), replies far larger than the socket buffers reach a client that
reads slowly whole and in order, and large content arrives intact through
the reads of our own. The server's end of every connection has TCP_NODELAY
(inherited from the listening socket, where the master sets it)."""
import ctypes
import os
import socket
import struct
import threading
import time

from harness import Petrel, Smtp, Tap

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"
MAIN_CF = {"local_recipient_maps": "", "smtpd_forbid_unauth_pipelining": "no",
           "smtpd_junk_command_limit": "100000"}


def data_segments_in(sock):
    """Linux's tcpi_data_segs_in: the segments with data this socket received."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 152)[0]


def server_socket(p, client):
    """A duplicate of the server's end of client's connection, taken from the
    smtpd worker that holds it (pidfd_getfd(2), Linux 5.6; root)."""
    inode = None
    want = "%08X:%04X" % (0x0100007F, client.getsockname()[1])   # 127.0.0.1:port, /proc/net/tcp's form
    for _ in range(100):
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[2] == want and int(fields[1].split(":")[1], 16) == p.port:
                    inode = fields[9]
        if inode and inode != "0":
            break
        time.sleep(0.05)
    libc = ctypes.CDLL(None, use_errno=True)
    for pid in p.worker_pids(at_least=1):
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target == "socket:[%s]" % inode:
                pidfd = os.pidfd_open(pid)
                try:
                    dup = libc.syscall(438, pidfd, int(fd), 0)   # SYS_pidfd_getfd
                finally:
                    os.close(pidfd)
                if dup >= 0:
                    return socket.socket(fileno=dup)
    return None


with Petrel(t, main_cf=MAIN_CF) as p:
    # TCP_NODELAY on the server's end: the first connection of a listener
    # (where smtpd checks that its sockets inherit it) and a later one.
    for which in ("first", "second"):
        c = p.connect()
        t.is_(c.ehlo(), "250 CHUNKING", "EHLO (%s connection)" % which)
        theirs = server_socket(p, c.sock)
        t.ok(theirs is not None, "the server's end of the %s connection found" % which)
        if theirs is not None:
            t.is_(theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1,
                  "... has TCP_NODELAY")
            theirs.close()
        c.sock.close()

    # The server sets TCP_NODELAY: each write it makes is a segment of its own.
    c = p.connect()
    t.is_(c.ehlo(), "250 CHUNKING", "EHLO")
    before = data_segments_in(c.sock)
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<u1@petrel.test>\r\nRCPT TO:<u2@petrel.test>\r\nDATA\r\n")
    replies = [c.read_reply() for _ in range(4)]
    t.is_(replies, ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"],
          "pipelined MAIL, RCPT, RCPT, DATA: the four replies in order")
    t.is_(data_segments_in(c.sock) - before, 1, "... in one TCP segment (one write)")
    before = data_segments_in(c.sock)
    c.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    replies = [c.read_reply() for _ in range(4)]
    t.like(replies[0], OK_RE, "the message and the commands after it: queued")
    t.is_(replies[1:], ["250 2.0.0 Ok", "250 2.0.0 Ok", "221 2.0.0 Bye"], "then RSET, NOOP and QUIT answered in order")
    t.is_(data_segments_in(c.sock) - before, 1, "the four replies in one write (the 250 waits for the fsync)")
    c.sock.close()

    # A client with a 4 KiB receive buffer pipelines 3,000 EHLOs (about
    # 600 KB of replies, past the 256 KiB the server lets wait) and reads
    # only after a pause, slowly: every reply arrives, whole and in order.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", p.port))
    c = Smtp(sock=sock, read_greeting=False)
    t.like(c.read_reply(), r"^220 ", "slow reader: greeting")
    COUNT = 3000
    sender = threading.Thread(target=lambda: sock.sendall(b"EHLO slow.example.org\r\n" * COUNT + b"QUIT\r\n"))
    sender.start()
    time.sleep(1.5)
    whole, total = 0, 0
    for i in range(COUNT):
        r = c.read_reply()
        total += 1
        if r == "250 CHUNKING" and c.lines[0] == "250-mx.petrel.test" and len(c.lines) > 5:
            whole += 1
        if i % 500 == 0:
            time.sleep(0.05)   # a reader slower than the server
    t.is_(total, COUNT, "slow reader: %d EHLO replies" % COUNT)
    t.is_(whole, COUNT, "each one whole (first line our name, last CHUNKING)")
    t.is_(c.read_reply(), "221 2.0.0 Bye", "and then QUIT's reply, last")
    sender.join(10)
    sock.close()

    # Content larger than one read, in one send: stored intact.
    c = p.connect()
    body = "".join("line %06d %s\r\n" % (i, "x" * 60) for i in range(20000))
    r = c.send_message("a@example.org", ["u@petrel.test"], "Subject: big\r\n\r\n" + body)
    t.like(r, OK_RE, "a 1.4 MB message in one go: queued")
    c.sock.close()
    found = [f for f in p.queue_files() if open(f, "rb").read().find(b"line 019999 " + b"x" * 60) >= 0]
    t.is_(len(found), 1, "its last line is in the queue file")

    c = p.connect()
    t.like(c.send_message("a@example.org", ["u@petrel.test"], "Subject: after\r\n\r\nok\r\n"), OK_RE,
           "the server still serves")
    c.sock.close()

t.done()
