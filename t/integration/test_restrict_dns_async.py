"""check_*_{a,mx,ns}_access with a remote table (socketmap:, against a real socketmap server on
loopback, and a private dnsmasq for the MX and A records): the session whose server walk waits
for the table holds up nobody else on the same (only) worker; the first match in Postfix's order
(the servers by preference, each name before its addresses) decides even when a later server's
answer comes first; a table that cannot answer gives Postfix's 451 4.3.5 "Server configuration
error", never "not found"; a client that leaves while its lookup waits leaves the worker serving.
The order is decided by the test (the server holds an answer until the test lets it go), not by
timing."""
import socket
import threading

from harness import Dnsmasq, Petrel, Tap, wait_for
from socketmaplib import SocketmapServer, netstring
from tablelib import bundled_module_dir

t = Tap(timeout=200)
MODULES = bundled_module_dir("socketmap")

RECORDS = [
    "--local=/petrel-test/",
    "--mx-host=held.petrel-test,mxheld.petrel-test,10", "--host-record=mxheld.petrel-test,127.0.0.13",
    "--mx-host=other.petrel-test,mx1.petrel-test,10", "--host-record=mx1.petrel-test,127.0.0.10",
    "--host-record=aonly.petrel-test,127.0.0.20",
    # two servers: the first (preference 10) is answered last, the second at once
    "--mx-host=order.petrel-test,mxa.petrel-test,10", "--mx-host=order.petrel-test,mxb.petrel-test,20",
    "--host-record=mxa.petrel-test,127.0.0.21", "--host-record=mxb.petrel-test,127.0.0.22",
    "--mx-host=temp.petrel-test,mxtemp.petrel-test,10", "--host-record=mxtemp.petrel-test,127.0.0.23",
    "--mx-host=gone.petrel-test,mxgone.petrel-test,10", "--host-record=mxgone.petrel-test,127.0.0.24",
]

# socketmap: is a pattern type: the names and addresses are asked as they are, with no parents.
server = SocketmapServer({"srv": {
    b"mxheld.petrel-test": b"REJECT Mail exchanger mxheld is not welcome",
    b"127.0.0.20": b"REJECT Server address 127.0.0.20 is not welcome",
    b"127.0.0.21": b"REJECT The first server mxa is not welcome",
    b"mxb.petrel-test": b"REJECT The second server mxb is not welcome",
}})
gate, gone, first = threading.Event(), threading.Event(), threading.Event()
server.slow[b"mxheld.petrel-test"] = gate
server.slow[b"mxgone.petrel-test"] = gone
server.slow[b"127.0.0.21"] = first
server.special[b"mxtemp.petrel-test"] = (b"srv", netstring(b"TEMP resting"))

with Dnsmasq(RECORDS) as dns, Petrel(t, start=False, workers=1) as p:
    conf = dict(p.settings)
    conf.update({"modules": "socketmap", "module_directory": MODULES,
                 "dns_resolver": dns.server,
                 "smtpd_delay_reject": "no",
                 "smtpd_sender_restrictions":
                     "check_sender_mx_access socketmap:inet:127.0.0.1:%d:srv" % server.port})
    p.write_main_cf(conf)
    p.start()

    c = p.connect()
    c.ehlo("client.test")
    c.send(b"MAIL FROM:<a@held.petrel-test>\r\n")
    t.ok(wait_for(lambda: b"mxheld.petrel-test" in server.seen("srv"), timeout=30),
         "the MX host's name is asked, and its answer waits at the server")
    other = p.connect()   # the same (only) worker
    t.like(other.ehlo("other.test"), r"^250", "another session of the worker is greeted and served meanwhile")
    t.is_(other.cmd("MAIL FROM:<b@other.petrel-test>"), "250 2.1.0 Ok",
          "(and its own server walk asks the table: not listed)")
    t.ok(b"127.0.0.10" in server.seen("srv"), "(its server's address was asked too)")
    t.ok(not gate.is_set(), "while the first one's lookup still waits")
    other.close()
    gate.set()
    t.is_(c.read_reply(), "554 5.7.1 <a@held.petrel-test>: Sender address rejected: Mail exchanger mxheld is not welcome",
          "then the first session gets the table's answer")
    t.is_(c.cmd("MAIL FROM:<a@aonly.petrel-test>"),
          "554 5.7.1 <a@aonly.petrel-test>: Sender address rejected: Server address 127.0.0.20 is not welcome",
          "a domain without MX is its own server: its address matches after its name did not")

    # Postfix's order: mxa (preference 10) is walked first, name then address. mxb's name is
    # answered at once, mxa's address only when the test lets it: the first match still wins.
    c.send(b"MAIL FROM:<a@order.petrel-test>\r\n")
    t.ok(wait_for(lambda: b"127.0.0.21" in server.seen("srv"), timeout=30), "the first server's address is asked")
    first.set()
    t.is_(c.read_reply(), "554 5.7.1 <a@order.petrel-test>: Sender address rejected: The first server mxa is not welcome",
          "the first match in Postfix's order decides, whichever answer came first")

    t.is_(c.cmd("MAIL FROM:<a@temp.petrel-test>"),
          "451 4.3.5 <a@temp.petrel-test>: Sender address rejected: Server configuration error",
          "the table cannot answer: 451 4.3.5, as Postfix, never 'not found'")
    t.ok(p.wait_log(r"check_sender_mx_access: table lookup error"), "and the error is logged")
    t.is_(c.cmd("MAIL FROM:<b@other.petrel-test>"), "250 2.1.0 Ok", "the session goes on")
    c.close()

    # A client that leaves while its lookup waits.
    mark = len(p.log())
    c = p.connect()
    c.ehlo("client.test")
    c.send(b"MAIL FROM:<a@gone.petrel-test>\r\n")
    t.ok(wait_for(lambda: b"mxgone.petrel-test" in server.seen("srv"), timeout=30), "a lookup waits")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    gone.set()
    c = p.connect()
    t.like(c.ehlo("client.test"), r"^250", "after a client left while its lookup waited, the worker serves on")
    t.is_(c.cmd("MAIL FROM:<b@other.petrel-test>"), "250 2.1.0 Ok", "(and answers)")
    c.close()
    # both sessions' ends are logged: the left one's maybe only once the late answer came
    wait_for(lambda: p.log()[mark:].count("disconnect from") >= 2, timeout=30)
    t.ok("panic" not in p.log() and "fatal" not in p.log(), "nothing went wrong in the worker", p.log()[-2000:])

server.stop()
t.done()
