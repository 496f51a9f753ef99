"""smtpd_sasl_type = dovecot against a hostile auth server (modules/sasl/dovecot_proto.c): a
Python server on loopback that does a correct auth-client handshake and then answers AUTH
with a bad line: request ids with a sign, a leading space, a leading zero or past 2^32; a NUL
in the line; a user name with a control character; a CONT whose challenge is not base64; a
FAIL whose reason holds an escaped LF; and handshakes with a bad SPID, CUID, VERSION or
mechanism name. Each gets an exact reply to the SMTP client (454 4.7.0 or 535 5.7.8) and, for
a malformed line, the module's log line naming what was wrong; a good OK still logs in."""
import re
import socket
import threading

from harness import Petrel, Tap, wait_for
from modlib import bundled_module_dir
from sasllib import b64
from serverlib import LoopbackServer

t = Tap(timeout=300)

GOOD_HANDSHAKE = ["VERSION\t1\t2", "MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext", "SPID\t4242",
                  "CUID\t7", "COOKIE\t0123456789abcdef0123456789abcdef", "DONE"]


class HostileAuth(LoopbackServer):
    """Speaks auth-client 1.2; self.handshake are the lines sent after our VERSION/CPID and
    self.answer(id) the bytes sent for an AUTH request."""

    def __init__(self):
        self.handshake = GOOD_HANDSHAKE
        self.answer = lambda i: b"OK\t%d\tuser=alice\n" % i
        self.conns = []
        self.live = 0                     # sessions whose client has not closed yet
        self.cond = threading.Condition()
        super().__init__()

    def accepted(self, conn):
        with self.cond:
            self.conns.append(conn)
            self.live += 1

    def hang_up(self):
        """Closes every connection and waits until petreld has closed its end too (the session
        thread then reads the end of the stream), so that the next AUTH does a new handshake
        rather than write on a connection petreld has not yet seen go (a fixed pause was not
        always enough on a loaded machine)."""
        with self.cond:
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_WR)   # petreld reads the end and closes
                except OSError:
                    pass
            self.conns = []
            self.cond.wait_for(lambda: self.live == 0, timeout=30)

    def session(self, conn):
        try:
            conn.sendall("".join(l + "\n" for l in self.handshake).encode())
            f = conn.makefile("rb")
            for line in f:
                fields = line.rstrip(b"\n").split(b"\t")
                if fields[0] == b"AUTH":
                    conn.sendall(self.answer(int(fields[1])))
        except OSError:
            pass
        finally:
            conn.close()
            with self.cond:
                self.live -= 1
                self.cond.notify_all()


srv = HostileAuth()
conf = {"modules": "sasl", "module_directory": bundled_module_dir("sasl"), "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot", "smtpd_sasl_path": "inet:127.0.0.1:%d" % srv.port,
        "mynetworks": "192.0.2.0/24", "smtpd_sasl_failure_delay": "0s", "sasl_hook_timeout": "5s"}
LOST = "454 4.7.0 Temporary authentication failure: Connection lost to authentication server"
NO_SERVER = "454 4.7.0 Temporary authentication failure: Can't connect to authentication server"
MALFORMED = r"warning: module sasl: SASL: Dovecot auth server sent a malformed line: "


def logged_anew(p, pattern, before):
    """Whether the log holds more than before lines matching pattern, within 30 s:
    several cases log the same words, so each waits for a line of its own."""
    return wait_for(lambda: len(re.findall(pattern, p.log())) > before, timeout=30)


def auth(p):
    c = p.connect()
    c.ehlo()
    offered = any(l.startswith("250-AUTH ") or l.startswith("250 AUTH ") for l in c.lines)
    try:
        r = c.cmd("AUTH PLAIN " + b64("\0alice\0secret"))
    except (ConnectionError, OSError) as e:
        r = "(%s)" % e
    c.close()
    return offered, r


# One worker: a worker that has never done a good handshake does not offer AUTH at all (as
# Postfix's smtpd with no mechanism list), and with two the kernel may give the handshake cases
# to the one that has not yet had a connection.
with Petrel(t, main_cf=conf, workers=1) as p:
    offered, r = auth(p)
    t.ok(offered, "the hostile server's good handshake: EHLO offers AUTH")
    t.like(r, r"^235 2\.7\.0 ", "and a good OK line logs in")
    cases = (
        ("a request id with a sign", lambda i: b"OK\t+%d\tuser=alice\n" % i, LOST,
         "a request id that is not a plain decimal number"),
        ("a request id after a space", lambda i: b"OK\t %d\tuser=alice\n" % i, LOST,
         "a request id that is not a plain decimal number"),
        ("a request id with a leading zero", lambda i: b"OK\t0%d\tuser=alice\n" % i, LOST,
         "a request id that is not a plain decimal number"),
        ("a request id past 2^32 (the same id modulo 2^32)", lambda i: b"OK\t%d\tuser=alice\n" % (i + 2 ** 32),
         LOST, "a request id that is not a plain decimal number"),
        ("a NUL byte in an OK line", lambda i: b"OK\t%d\tuser=alice\0root\n" % i, LOST, "a NUL byte in a line"),
        ("a control character in the user name", lambda i: b"OK\t%d\tuser=al\x01nice\n" % i, LOST,
         "a user name with a control character"),
        ("a CONT that is not base64", lambda i: b"CONT\t%d\t!!!\n" % i,
         "454 4.7.0 Temporary authentication failure: Authentication backend error", None),
        ("a FAIL whose reason holds an escaped LF", lambda i: b"FAIL\t%d\treason=no\x01n250 ok\tuser=alice\n" % i,
         "535 5.7.8 Error: authentication failed: no?250 ok", None),
    )
    for name, answer, want, logged in cases:
        srv.answer = answer
        before = len(re.findall(MALFORMED + re.escape(logged), p.log())) if logged else 0
        offered, r = auth(p)
        t.is_(r, want, "%s: exact reply" % name)
        if logged:
            t.ok(logged_anew(p, MALFORMED + re.escape(logged), before), "%s: logged: %s" % (name, logged))
    srv.answer = lambda i: b"OK\t%d\tuser=alice\n" % i
    # a bad handshake: the mechanisms learnt before are still offered; AUTH fails temporarily
    for name, lines, logged in (
            ("an SPID with a sign", ["VERSION\t1\t2", "MECH\tPLAIN", "SPID\t-1", "DONE"],
             "an SPID line whose pid is not a plain decimal number"),
            ("a CUID past 2^32", ["VERSION\t1\t2", "MECH\tPLAIN", "SPID\t1", "CUID\t4294967296", "DONE"],
             "a CUID line whose id is not a plain decimal number"),
            ("a VERSION of \"1x\"", ["VERSION\t1x\t2", "MECH\tPLAIN", "DONE"],
             "a VERSION line that is not two plain decimal numbers"),
            ("a mechanism name with a CR", ["VERSION\t1\t2", "MECH\tPLAIN\r", "DONE"],
             "a MECH line whose name is not an RFC 4422 mechanism name")):
        before = len(re.findall(MALFORMED + re.escape(logged), p.log()))
        srv.handshake = lines
        srv.hang_up()
        offered, r = auth(p)
        t.ok(offered, "%s in the handshake: EHLO still offers AUTH (the mechanisms learnt before)" % name)
        t.is_(r, NO_SERVER, "%s in the handshake: exact reply" % name)
        t.ok(logged_anew(p, MALFORMED + re.escape(logged), before), "%s: logged: %s" % (name, logged))
    srv.handshake = GOOD_HANDSHAKE
    srv.hang_up()
    offered, r = auth(p)
    t.like(r, r"^235 2\.7\.0 ", "a good server again: logs in")
srv.sock.close()
t.done()
