"""header_checks and body_checks in a remote table (socketmap:, against a real socketmap server
on loopback): a header or body line whose lookup waits for the server stops only its own
session (it reads no further content until the answer comes, then goes on in order), while
another session of the same (only) worker completes whole transactions; REJECT, found and
not found as with a local table; a table that cannot answer defers the message as Postfix's
cleanup does (451 4.3.0, "map lookup problem"), nothing queued; BDAT chunks; a client that
leaves while its lookup waits; a multi-MiB message whose every header and body line is asked
of the server. The order is decided by the test (the server holds an answer until the test
lets it go), not by timing."""
import socket
import threading
import time

from harness import Petrel, Tap, queue_id, wait_for
from socketmaplib import SocketmapServer, netstring
from tablelib import bundled_module_dir

t = Tap(timeout=300)
MODULES = bundled_module_dir("socketmap")

# socketmap: is a pattern type: the server gets the header ("Name: value") or line as it is.
server = SocketmapServer({
    "hdr": {b"Subject: reject me": b"REJECT 5.7.1 no thanks",
            b"Subject: prepend me": b"PREPEND X-Remote-Seen: yes",
            b"Subject: gated": b"DUNNO", b"Subject: gated bdat": b"DUNNO"},
    "body": {b"reject this line": b"REJECT 5.7.2 bad body line",
             b"gated line": b"REPLACE replaced by the remote table"},
})
gates = {k: threading.Event() for k in (b"Subject: gated", b"gated line", b"Subject: gated bdat", b"Subject: gone",
                                        b"last line gated")}
server.slow.update(gates)
server.special[b"Subject: temp"] = (b"hdr", netstring(b"TEMP resting"))
server.special[b"temp line"] = (b"body", netstring(b"TEMP resting"))


with Petrel(t, start=False, workers=1) as p:
    conf = dict(p.settings)
    conf.update({"modules": "socketmap", "module_directory": MODULES,
                 "header_checks": "socketmap:inet:127.0.0.1:%d:hdr" % server.port,
                 "body_checks": "socketmap:inet:127.0.0.1:%d:body" % server.port,
                 "body_checks_size_limit": "10000000"})
    p.write_main_cf(conf)
    p.start()

    def send(body, c=None):
        c = c or p.connect()
        r = c.send_message("sender@example.org", ["u@example.org"], body)
        c.close()
        return r

    r = send("Subject: nothing special\r\n\r\nplain body\r\n")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "not found in the remote tables: queued")
    t.ok(b"Subject: nothing special" in server.seen("hdr") and b"plain body" in server.seen("body"),
         "the header and the body line were asked of the server")

    t.is_(send("Subject: reject me\r\n\r\nbody\r\n"), "550 5.7.1 no thanks", "a remote header_checks REJECT")
    t.ok(p.wait_log(r"reject: header Subject: reject me from \S+; from=<sender@example\.org> to=<u@example\.org>"
                    r" proto=ESMTP helo=<[^>]*>: 5\.7\.1 no thanks"), "logged as Postfix's cleanup does")
    t.is_(send("Subject: fine\r\n\r\nfirst\r\nreject this line\r\nlast\r\n"), "550 5.7.2 bad body line",
          "a remote body_checks REJECT")

    r = send("Subject: prepend me\r\n\r\nbody\r\n")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "a remote PREPEND: queued")
    text = p.queued_bytes(queue_id(r))
    t.ok(b"X-Remote-Seen: yes\r\nSubject: prepend me" in text,
         "the prepended header is written before the one that matched", text[:400])

    # A table that cannot answer: Postfix's cleanup defers the message.
    before = len(p.queue_files())
    t.is_(send("Subject: temp\r\n\r\nbody\r\n"), "451 4.3.0 Error: queue file write error",
          "the remote header_checks table cannot answer: 451 4.3.0, as Postfix")
    t.ok(p.wait_log(r"warning: \w+: header_checks map lookup problem -- message not accepted, try again later"),
         "with Postfix's warning")
    t.is_(send("Subject: x\r\n\r\nbody\r\ntemp line\r\nmore\r\n"), "451 4.3.0 Error: queue file write error",
          "the remote body_checks table cannot answer: 451 4.3.0")
    t.ok(p.wait_log(r"warning: \w+: body_checks map lookup problem -- message not accepted, try again later"),
         "with Postfix's warning")
    t.is_(len(p.queue_files()), before, "nothing was queued for either")

    # A slow header lookup: the session waits, the worker does not.
    c = p.connect()
    c.ehlo("slow.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<u@example.org>")
    t.like(c.cmd("DATA"), r"^354", "DATA")
    c.send(b"Subject: gated\r\nX-After: 1\r\n\r\nbody line one\r\ngated line\r\nbody after\r\n.\r\n")
    t.ok(wait_for(lambda: b"Subject: gated" in server.seen("hdr"), timeout=30), "a header lookup waits at the server")
    other = p.connect()
    t.like(send("Subject: meanwhile\r\n\r\nanother\r\n", other), r"^250 2\.0\.0 Ok: queued as \w+",
           "another session of the same worker completes a whole transaction meanwhile")
    t.ok(b"X-After: 1" not in server.seen("hdr"), "the waiting session asked nothing further meanwhile")
    gates[b"Subject: gated"].set()
    t.ok(wait_for(lambda: b"gated line" in server.seen("body"), timeout=30), "then its body line waits")
    t.ok(b"body after" not in server.seen("body"), "(and the lines after it are not asked yet)")
    t.like(send("Subject: meanwhile 2\r\n\r\nanother\r\n"), r"^250 2\.0\.0 Ok: queued as \w+",
           "another transaction completes while a body line waits")
    gates[b"gated line"].set()
    r = c.read_reply()
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "then the waiting message is queued")
    text = p.queued_bytes(queue_id(r))
    t.ok(b"body line one\r\nreplaced by the remote table\r\nbody after\r\n" in text,
         "with its content in order and the remote REPLACE applied", text[-300:])
    hdr_seen = server.seen("hdr")
    t.ok(hdr_seen.index(b"Subject: gated") < hdr_seen.index(b"X-After: 1"), "headers were asked in order")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "the session goes on")
    c.close()

    # The last line waits (the end of the message with it); commands pipelined after "." wait too.
    c = p.connect()
    c.ehlo("pipe.test")
    c.send(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
    t.is_([c.read_reply() for _ in range(3)][2][:3], "354", "pipelined up to DATA")
    c.send(b"Subject: pipelined\r\n\r\nfirst\r\nlast line gated\r\n.\r\nNOOP\r\n")
    t.ok(wait_for(lambda: b"last line gated" in server.seen("body"), timeout=30), "the last line waits")
    t.like(send("Subject: meanwhile 4\r\n\r\nx\r\n"), r"^250 2\.0\.0 Ok: queued as \w+",
           "another transaction completes meanwhile")
    gates[b"last line gated"].set()
    t.like(c.read_reply(), r"^250 2\.0\.0 Ok: queued as \w+", "then the message is queued")
    t.is_(c.read_reply(), "250 2.0.0 Ok", "and the pipelined NOOP answered")
    c.close()

    # BDAT: a chunk whose header waits is answered after the answer, in order.
    c = p.connect()
    c.ehlo("bdat.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<u@example.org>")
    chunk1 = b"Subject: gated bdat\r\nX-B: 1\r\n\r\nfirst part\r\n"
    chunk2 = b"second part\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1 + b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
    t.ok(wait_for(lambda: b"Subject: gated bdat" in server.seen("hdr"), timeout=30), "a BDAT chunk's header waits")
    t.like(send("Subject: meanwhile 3\r\n\r\nx\r\n"), r"^250 2\.0\.0 Ok: queued as \w+",
           "another transaction completes meanwhile")
    gates[b"Subject: gated bdat"].set()
    t.is_(c.read_reply(), "250 2.0.0 Ok: %d bytes" % len(chunk1), "then the first chunk is answered")
    r = c.read_reply()
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "then BDAT LAST queues the message")
    text = p.queued_bytes(queue_id(r))
    t.ok(b"first part\r\nsecond part\r\n" in text, "with both chunks in order", text[-200:])
    c.close()

    # A client that leaves while its header lookup waits.
    c = p.connect()
    c.ehlo("gone.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<u@example.org>")
    c.cmd("DATA")
    c.send(b"Subject: gone\r\n\r\nbody\r\n.\r\n")
    t.ok(wait_for(lambda: b"Subject: gone" in server.seen("hdr"), timeout=30), "a lookup waits")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    t.like(send("Subject: after gone\r\n\r\nx\r\n"), r"^250 2\.0\.0 Ok: queued as \w+",
           "after a client left while its lookup waited, the worker serves on")
    gates[b"Subject: gone"].set()
    t.like(send("Subject: after gone 2\r\n\r\nx\r\n"), r"^250 2\.0\.0 Ok: queued as \w+",
           "and still does once the late answer came")

    # A multi-MiB message: every header and every body line is asked of the server.
    headers = b"".join(b"X-Many-%d: value %d\r\n" % (i, i) for i in range(2000))
    line = b"y" * 990
    body = b"".join(b"%s %d\r\n" % (line, i) for i in range(3000))
    started = time.time()
    r = send(b"Subject: big\r\n" + headers + b"\r\n" + body, p.connect(timeout=240))
    t.diag("the big message took %.1f s" % (time.time() - started))
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "a %d-byte message with 2001 headers and 3000 lines, all "
           "looked up remotely, is queued" % (len(headers) + len(body)))
    t.ok(b"X-Many-1999: value 1999" in server.seen("hdr") and (line + b" 2999") in server.seen("body"),
         "its last header and last line were asked")
    text = p.queued_bytes(queue_id(r))
    t.ok((line + b" 2999\r\n") in text and b"X-Many-1999: value 1999\r\n" in text,
         "and written")

    # The server goes away: a lookup error, the message deferred, the worker serving.
    server.stop()
    t.is_(send("Subject: server down\r\n\r\nbody\r\n"), "451 4.3.0 Error: queue file write error",
          "the socketmap server is down: 451 4.3.0")
    c = p.connect()
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "and the worker serves on")
    c.close()
    t.ok("panic" not in p.log() and "fatal" not in p.log(), "nothing went wrong in the worker", p.log()[-2000:])

t.done()
