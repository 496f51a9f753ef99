"""HAProxy's PROXY protocol in front of postscreen
(postscreen_upstream_proxy_protocol = haproxy) and in front of a plain smtpd
listener (smtpd_upstream_proxy_protocol = haproxy), with a client written
here that speaks versions 1 (text) and 2 (binary) as a load balancer would:
the logged and tested address is the proxied one, bad headers are refused
with Postfix's warnings and replies, a slow header times out, and the
server keeps serving."""
import socket
import struct
import time

from harness import Petrel, Tap, free_port
from psclib import BANNER, PASSED_BANNER, postscreen


def queued_content(p, qid):
    """The queue file of qid, wherever the queue manager has moved it
    meanwhile (it may move between listing and reading)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        for f in p.queue_files():
            if f.endswith("/" + qid):
                try:
                    with open(f, "rb") as fh:
                        return fh.read()
                except FileNotFoundError:
                    break
        time.sleep(0.05)
    return b""


t = Tap()

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(client, client_port, server="127.0.0.1", server_port=25, proto="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (proto, client, server, client_port, server_port)).encode()


def v2(client, client_port, server="127.0.0.1", server_port=25, command=0x21, tlvs=b""):
    if ":" in client:
        body = socket.inet_pton(socket.AF_INET6, client) + socket.inet_pton(socket.AF_INET6, server) + \
            struct.pack(">HH", client_port, server_port)
        fam = 0x21
    else:
        body = socket.inet_aton(client) + socket.inet_aton(server) + struct.pack(">HH", client_port, server_port)
        fam = 0x11
    body += tlvs
    return V2_SIGNATURE + bytes([command, fam]) + struct.pack(">H", len(body)) + body


def v2_local():
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack(">H", 0)


class ProxiedClient:
    """An SMTP client behind a load balancer: the header first, then SMTP."""

    def __init__(self, port, header, split=False, timeout=15):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if split:
            # A slow proxy: the header in pieces.
            for i in range(len(header)):
                self.sock.sendall(header[i:i + 1])
                time.sleep(0.005)
        else:
            self.sock.sendall(header)
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode()

    def reply(self):
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()[-1]

    def closed(self, wait=5):
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    return True
                self.buf += data
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()


# --- in front of postscreen ---
with postscreen(t, main_cf={"postscreen_upstream_proxy_protocol": "haproxy", "postscreen_upstream_proxy_timeout": "2s",
                            "postscreen_access_list": "permit_mynetworks, cidr:" + "/dev/null"}, start=False) as p:
    acl = p.write_file("access.cidr", "198.51.100.66 reject\n")
    p.settings["postscreen_access_list"] = "permit_mynetworks, cidr:" + acl
    p.settings["postscreen_denylist_action"] = "drop"
    p.write_main_cf(p.settings)
    p.start()

    c = ProxiedClient(p.port, v1("203.0.113.9", 4711, server_port=25))
    t.is_(c.reply(), ["220-" + BANNER, "220 " + PASSED_BANNER], "v1: screened, then smtpd")
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: CONNECT from \[203\.0\.113\.9\]:4711 to \[127\.0\.0\.1\]:25\n")
         is not None, "CONNECT logs the proxied client and server endpoints")
    t.ok(p.wait_log(r"PASS NEW \[203\.0\.113\.9\]:4711\n") is not None, "PASS NEW for the proxied address")
    t.ok(p.wait_log(r"petrel/smtpd\[\d+\]: connect from unknown\[203\.0\.113\.9\]\n") is not None,
         "the smtpd session that follows has the proxied address")
    c.cmd("EHLO proxied.example")
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<user@petrel.test>")
    c.cmd("DATA")
    c.sock.sendall(b"Subject: via haproxy\r\n\r\nhi\r\n.\r\n")
    r = c.reply()[-1]
    t.like(r, r"^250 2\.0\.0 Ok: queued as \S+$", "mail flows")
    t.ok(b"(unknown [203.0.113.9])" in queued_content(p, r.split()[-1]),
         "and its Received: header names the proxied client")
    c.close()

    c = ProxiedClient(p.port, v2("198.51.100.7", 5555, server_port=25, tlvs=b"\x04\x00\x03abc"))
    t.is_(c.reply(), ["220-" + BANNER, "220 " + PASSED_BANNER], "v2 (binary, with a TLV): screened, then smtpd")
    t.ok(p.wait_log(r"CONNECT from \[198\.51\.100\.7\]:5555 to \[127\.0\.0\.1\]:25\n") is not None,
         "v2 endpoints logged")
    c.close()

    c = ProxiedClient(p.port, v2("2001:db8::5", 6666, server="2001:db8::25", server_port=25))
    t.is_(c.reply()[-1], "220 " + PASSED_BANNER, "v2 TCP6")
    t.ok(p.wait_log(r"CONNECT from \[2001:db8::5\]:6666 to \[2001:db8::25\]:25\n") is not None, "IPv6 endpoints")
    c.close()

    c = ProxiedClient(p.port, v1("198.51.100.66", 7777))
    t.is_(c.reply(), ["521 5.3.2 Service currently unavailable"],
          "the access list judges the proxied address, not the proxy's")
    t.ok(p.wait_log(r"DENYLISTED \[198\.51\.100\.66\]:7777\n") is not None, "DENYLISTED [proxied]:port")
    c.close()

    c = ProxiedClient(p.port, v1("203.0.113.10", 4712), split=True)
    t.is_(c.reply()[0], "220-" + BANNER, "a header that arrives a byte at a time is read whole")
    c.close()

    c = ProxiedClient(p.port, v2_local())
    t.is_(c.reply()[0], "220-" + BANNER, "v2 LOCAL (a health check): the connection's own addresses")
    t.ok(p.wait_log(r"CONNECT from \[127\.0\.0\.1\]:\d+ to \[127\.0\.0\.1\]:%d\n" % p.port) is not None,
         "logged with the real endpoints")
    c.close()

    for header, why in [
        (b"PROXY UNKNOWN\r\n", r"bad or missing protocol type: PROXY UNKNOWN\\r\\n"),
        (b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 25\r\n",
         r"bad or missing client port: PROXY TCP4 203\.0\.113\.9 127\.0\.0\.1 99999 25\\r\\n"),
        (b"EHLO no.proxy.example\r\n", r"unrecognized protocol header: EHLO no\.proxy\.example\\r\\n"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", r"short version 2 protocol header: \\r\\n\\r\\n\\000\\r\\nQUIT\\n!"
                                             r"\\021\\377\\377"),
    ]:
        c = ProxiedClient(p.port, header)
        t.is_(c.reply(), ["421 4.3.2 No system resources"], "bad header %r: 421 4.3.2, as Postfix" % header[:20])
        t.ok(c.closed(), "and closed")
        t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: warning: haproxy read: %s\n" % why) is not None,
             "warning: haproxy read: the reason and the escaped bytes")
        c.close()

    c = ProxiedClient(p.port, b"PROXY TCP4 203.0.113.9")
    t.is_(c.reply(), ["421 4.3.2 No system resources"], "a header that never ends: 421 after the timeout")
    t.ok(p.wait_log(r"warning: haproxy read: time limit exceeded\n") is not None, "time limit exceeded")
    c.close()

    c = ProxiedClient(p.port, v1("203.0.113.9", 4713))
    t.is_(c.reply(), ["220 " + PASSED_BANNER], "the server keeps serving (and remembers 203.0.113.9: PASS OLD)")
    c.close()

# --- in front of a plain smtpd listener ---
port = free_port()
with Petrel(t, master_cf="127.0.0.1:%d inet n - n - - smtpd\n  -o smtpd_upstream_proxy_protocol=haproxy\n"
                         "  -o smtpd_upstream_proxy_timeout=2s\n" % port, start=False,
            main_cf={"mynetworks": "127.0.0.0/8"}) as p:
    p.port = port
    p.start()
    c = ProxiedClient(port, v1("203.0.113.20", 4800))
    t.is_(c.reply(), ["220 mx.petrel.test ESMTP Petrel"], "smtpd_upstream_proxy_protocol: v1, then the greeting")
    t.ok(p.wait_log(r"petrel/smtpd\[\d+\]: connect from unknown\[203\.0\.113\.20\]\n") is not None,
         "smtpd logs the proxied client")
    t.is_(c.cmd("EHLO x.example"), "250 CHUNKING", "and talks SMTP behind the header")
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<someone@elsewhere.example>"), "454 4.7.1 <someone@elsewhere.example>: Relay access denied",
          "restrictions see the proxied client: the proxy (127.0.0.1) is in mynetworks, the client is not")
    c.close()
    c = ProxiedClient(port, v2("198.51.100.30", 4801))
    t.is_(c.reply(), ["220 mx.petrel.test ESMTP Petrel"], "v2 works for smtpd too")
    t.ok(p.wait_log(r"connect from unknown\[198\.51\.100\.30\]\n") is not None, "with the proxied address")
    c.close()
    c = ProxiedClient(port, b"GET / HTTP/1.0\r\n")
    t.is_(c.reply(), ["421 4.3.0 mx.petrel.test Server local error"],
          "a bad header: Postfix smtpd's 421 4.3.0 Server local error")
    t.ok(c.closed(), "and closed")
    t.ok(p.wait_log(r"petrel/smtpd\[\d+\]: warning: haproxy read: unrecognized protocol header: GET / HTTP/1\.0"
                    r"\\r\\n\n") is not None, "warning: haproxy read: ...")
    t.ok(p.wait_log(r"connect from unknown\[unknown\]\n") is not None, "and the unknown client is logged")
    c.close()
    c = ProxiedClient(port, b"PROXY TCP4 ")
    t.is_(c.reply(), ["421 4.3.0 mx.petrel.test Server local error"], "a header cut short: 421 after the timeout")
    t.ok(p.wait_log(r"smtpd\[\d+\]: warning: haproxy read: timeout error\n") is not None,
         "warning: haproxy read: timeout error")
    c.close()
    c = ProxiedClient(port, v1("203.0.113.21", 4802))
    t.is_(c.reply(), ["220 mx.petrel.test ESMTP Petrel"], "the server keeps serving")
    c.close()

t.done()
