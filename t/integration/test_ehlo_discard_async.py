"""smtpd_discard_ehlo_keyword_address_maps with a remote table (socketmap:, against a real
socketmap server on loopback): decided at connect, as Postfix does, so the greeting of the
client whose address is being looked up waits, and nobody else on the same (only) worker does;
the answer takes the keywords away from EHLO; a table that cannot answer makes EHLO answer
Postfix's 421 4.3.0, never "nothing to discard"; a client that leaves while its lookup waits
leaves the worker serving. Clients connect from different loopback addresses (the table's
keys). The order is decided by the test (the server holds the answer until the test lets it
go), not by timing."""
import socket
import threading

from harness import Petrel, Tap, wait_for
from socketmaplib import SocketmapServer, netstring
from tablelib import bundled_module_dir

t = Tap(timeout=200)
MODULES = bundled_module_dir("socketmap")

server = SocketmapServer({"ehlo": {b"127.0.0.2": b"dsn, pipelining", b"127.0.0.5": b"8bitmime"}})
gate, gone = threading.Event(), threading.Event()
server.slow[b"127.0.0.2"] = gate
server.slow[b"127.0.0.4"] = gone
server.special[b"127.0.0.3"] = (b"ehlo", netstring(b"TEMP resting"))


def keywords(c):
    return [line[4:].split(" ")[0].upper() for line in c.lines[1:]]


with Petrel(t, start=False, workers=1) as p:
    conf = dict(p.settings)
    conf.update({"modules": "socketmap", "module_directory": MODULES,
                 "smtpd_peername_lookup": "no",
                 "smtpd_discard_ehlo_keyword_address_maps": "socketmap:inet:127.0.0.1:%d:ehlo" % server.port})
    p.write_main_cf(conf)
    p.start()

    c = p.connect(source="127.0.0.2", read_greeting=False)
    t.ok(wait_for(lambda: b"127.0.0.2" in server.seen("ehlo"), timeout=30),
         "the client's address is asked at connect, and the answer waits at the server")
    other = p.connect(source="127.0.0.1")   # the same (only) worker
    t.like(other.ehlo("other.test"), r"^250", "another session of the worker is greeted and served meanwhile")
    t.ok("DSN" in keywords(other) and "PIPELINING" in keywords(other), "(its address is not listed: all keywords)")
    t.ok(not gate.is_set(), "while the first one's lookup still waits")
    other.close()
    gate.set()
    t.like(c.read_reply(), r"^220 ", "then the first session is greeted")
    t.like(c.ehlo("client.test"), r"^250", "and answered at EHLO")
    t.ok("DSN" not in keywords(c) and "PIPELINING" not in keywords(c) and "8BITMIME" in keywords(c),
         "without the keywords the table names", c.lines)
    t.is_(c.cmd("MAIL FROM:<a@example.org> RET=HDRS"), "501 5.7.1 DSN support is disabled",
          "DSN is really gone")
    c.close()

    c = p.connect(source="127.0.0.5")
    c.ehlo("client.test")
    t.ok("8BITMIME" not in keywords(c) and "DSN" in keywords(c), "an answer that comes at once works too", c.lines)
    c.close()

    c = p.connect(source="127.0.0.3")
    t.is_(c.ehlo("client.test"), "421 4.3.0 mx.petrel.test Server local data error",
          "the table cannot answer: EHLO gets 421 4.3.0, as Postfix")
    t.ok(c.closed(), "and the session ends")
    t.ok(p.wait_log(r"smtpd_discard_ehlo_keyword_address_maps lookup error for 127\.0\.0\.3"), "logged")

    # A client that leaves while its lookup waits.
    mark = len(p.log())
    c = p.connect(source="127.0.0.4", read_greeting=False)
    t.ok(wait_for(lambda: b"127.0.0.4" in server.seen("ehlo"), timeout=30), "a lookup waits")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    gone.set()
    c = p.connect(source="127.0.0.1")
    t.like(c.ehlo("client.test"), r"^250", "after a client left while its lookup waited, the worker serves on")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "(and answers)")
    c.close()
    # both sessions' ends are logged: the left one's maybe only once the late answer came
    wait_for(lambda: p.log()[mark:].count("disconnect from") >= 2, timeout=30)
    t.ok("panic" not in p.log() and "fatal" not in p.log(), "nothing went wrong in the worker", p.log()[-2000:])

server.stop()
t.done()
