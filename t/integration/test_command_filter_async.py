"""smtpd_command_filter with a remote table (socketmap:, against a real socketmap server on
loopback): the session whose command line waits for the server holds up nobody else on the
same (only) worker; the answer replaces the command as Postfix does; a table that cannot answer
ends the session with Postfix's 421 4.3.0; a client that leaves while its lookup waits leaves
the worker serving. The order is decided by the test (the server holds the answer until the
test lets it go), not by timing."""
import socket
import threading

from harness import Petrel, Tap, wait_for
from socketmaplib import SocketmapServer, netstring
from tablelib import bundled_module_dir

t = Tap(timeout=200)
MODULES = bundled_module_dir("socketmap")

# socketmap: is a pattern type (Postfix's DICT_FLAG_PATTERN): the server gets the line as sent.
server = SocketmapServer({"cmd": {b"NOOP gated": b"NOOP", b"NOOP gone": b"NOOP", b"XYZZY": b"NOOP"}})
gate, gone = threading.Event(), threading.Event()
server.slow[b"NOOP gated"] = gate
server.slow[b"NOOP gone"] = gone
server.special[b"NOOP temp"] = (b"cmd", netstring(b"TEMP resting"))

with Petrel(t, start=False, workers=1) as p:
    conf = dict(p.settings)
    conf.update({"modules": "socketmap", "module_directory": MODULES,
                 "smtpd_command_filter": "socketmap:inet:127.0.0.1:%d:cmd" % server.port})
    p.write_main_cf(conf)
    p.start()

    c = p.connect()
    t.like(c.ehlo("client.test"), r"^250", "every command line is looked up in the remote filter")
    t.is_(c.cmd("XYZZY"), "250 2.0.0 Ok", "a line the table has is replaced (XYZZY -> NOOP)")

    c.send(b"NOOP gated\r\n")
    t.ok(wait_for(lambda: b"NOOP gated" in server.seen("cmd"), timeout=30), "a lookup waits at the server")
    other = p.connect()   # the same (only) worker: its greeting, then commands
    t.like(other.ehlo("other.test"), r"^250", "another session of the worker is greeted and served meanwhile")
    t.is_(other.cmd("NOOP"), "250 2.0.0 Ok", "(and its own lookups answered)")
    t.ok(not gate.is_set(), "while the first one's lookup still waits")
    other.close()
    gate.set()
    t.is_(c.read_reply(), "250 2.0.0 Ok", "then the first session's command runs, as the table rewrote it")
    t.ok(p.wait_log(r"replacing command \"NOOP gated\" with \"NOOP\""), "logged as Postfix does")

    # Pipelined commands behind a waiting one keep their order.
    server.slow[b"RSET"] = 0.5
    c.send(b"RSET\r\nMAIL FROM:<a@example.org>\r\nNOOP\r\n")
    t.is_(c.read_reply(), "250 2.0.0 Ok", "pipelined: RSET answered after its lookup")
    t.is_(c.read_reply(), "250 2.1.0 Ok", "then MAIL")
    t.is_(c.read_reply(), "250 2.0.0 Ok", "then NOOP")
    c.close()

    c = p.connect()
    c.ehlo("client.test")
    t.is_(c.cmd("NOOP temp"), "421 4.3.0 mx.petrel.test Server local data error",
          "the table cannot answer: 421 4.3.0, as Postfix")
    t.ok(c.closed(), "and the session ends")

    # A client that leaves while its lookup waits.
    mark = len(p.log())
    c = p.connect()
    c.ehlo("client.test")
    c.send(b"NOOP gone\r\n")
    t.ok(wait_for(lambda: b"NOOP gone" in server.seen("cmd"), timeout=30), "a lookup waits")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    gone.set()
    c = p.connect()
    t.like(c.ehlo("client.test"), r"^250", "after a client left while its lookup waited, the worker serves on")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "(and answers)")
    c.close()
    # both sessions' ends are logged: the left one's maybe only once the late answer came
    wait_for(lambda: p.log()[mark:].count("disconnect from") >= 2, timeout=30)
    t.ok("panic" not in p.log() and "fatal" not in p.log(), "nothing went wrong in the worker", p.log()[-2000:])

server.stop()
t.done()
