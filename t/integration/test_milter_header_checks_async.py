"""milter_header_checks in a remote table (socketmap:, against a real socketmap
server on loopback) with real libmilter filters of our own
(modules/milter/t/testfilter.c): the milter module asks the core through
petrel_milter_header_checks_async, so a header whose lookup waits for the
server stops only its own session. Its edit and every later one are held, in
order, until the answer comes, and the next milter is asked only then (it sees
the edits as the checks left them); meanwhile another session of the same
(only) worker completes a whole transaction. The order is decided by the test
(the server holds an answer until the test lets it go), not by timing.
REJECT, DISCARD, HOLD, REPLACE, PREPEND (warned, as Postfix) and IGNORE as
with a local table; after a REDIRECT later milter headers get no action
(Postfix's cleanup_milter_hbc_extend); a table that cannot answer, or a
server that is down, defers the message (451 4.3.0) as Postfix's cleanup
does; a client that leaves while a lookup waits."""
import re
import threading

from harness import Petrel, Tap, queue_id, wait_for
from modlib import bundled_module_dir
from peers import TestFilter
from socketmaplib import SocketmapServer, netstring

t = Tap(timeout=300)
mods = bundled_module_dir("milter", "socketmap")

ADDED = b"X-Test-Added: added by the test filter"
FIRST = b"X-Test-First: inserted at the top"
SUBJECT = b"Subject: changed subject"

server = SocketmapServer({"mhc": {}})
table = server.maps["mhc"]


def folded_asked():
    return any(k.startswith(b"X-Test-Folded: first line") for k in server.seen("mhc"))


# The first filter edits; the second asks for no modification and logs the
# headers it is shown (the first one's edits as milter_header_checks left them).
with TestFilter() as f1, TestFilter(options="actions=0") as f2:
    with Petrel(t, main_cf={}, start=False, workers=1) as p:
        conf = dict(p.settings)
        conf.update({"modules": "milter socketmap", "module_directory": mods,
                     "smtpd_milters": f1.endpoint + ", " + f2.endpoint,
                     "milter_header_checks": "socketmap:inet:127.0.0.1:%d:mhc" % server.port})
        p.write_main_cf(conf)
        p.start()

        def send(subject):
            return p.send_message("sender@example.org", ["u@petrel.test"],
                                  "Subject: %s\r\nFrom: a@example.org\r\n\r\nbody\r\n" % subject)

        # not found: the header is written as the milter asked
        r = send("do: addheader")
        qid = queue_id(r)
        t.ok(qid is not None, "a milter's header the remote table does not know: accepted", r)
        t.ok(ADDED in server.seen("mhc"), "  the header was asked of the server as it would be written")
        t.ok(ADDED + b"\r\n" in p.queued_bytes(qid), "  and written as the milter asked")

        # A lookup that waits: its session is held, the worker is not.
        table[ADDED] = b"REPLACE X-Replaced: by the remote table"
        gate = threading.Event()
        server.slow[ADDED] = gate
        server.requests.clear()
        a = p.connect()
        a.ehlo("waiting.test")
        a.cmd("MAIL FROM:<sender@example.org>")
        a.cmd("RCPT TO:<u@petrel.test>")
        t.like(a.cmd("DATA"), r"^354", "DATA")
        a.send(b"Subject: do: addheader foldheader\r\nFrom: a@example.org\r\n\r\nbody\r\n.\r\n")
        t.ok(wait_for(lambda: ADDED in server.seen("mhc"), timeout=20), "the first milter header's lookup waits")
        seen_f2 = open(f2.log_path).read().count("eom bytes=")
        server.slow.pop(ADDED)   # only this session's lookup is held
        table.pop(ADDED)
        r = send("do: addheader")
        qid_b = queue_id(r)
        t.ok(qid_b is not None, "another session of the same worker completes a whole transaction meanwhile", r)
        t.ok(ADDED + b"\r\n" in p.queued_bytes(qid_b), "  (its own lookup answered: not found)")
        seen = server.seen("mhc")
        t.ok(not folded_asked(), "the waiting session's next edit is held: its header is not asked yet", seen)
        t.is_(open(f2.log_path).read().count("eom bytes="), seen_f2 + 1,
              "  and the second milter got only the other session's message meanwhile")
        table[ADDED] = b"REPLACE X-Replaced: by the remote table"
        gate.set()
        r = a.read_reply()
        qid_a = queue_id(r)
        t.ok(qid_a is not None, "then the waiting message is accepted", r)
        data = p.queued_bytes(qid_a)
        t.ok(b"X-Replaced: by the remote table\r\n" in data and ADDED not in data,
             "  with the remote REPLACE applied", data[:700])
        t.ok(b"X-Test-Folded: first line\r\n\tsecond line\r\n" in data, "  and the held edit made after it")
        t.ok(data.find(b"X-Replaced:") < data.find(b"X-Test-Folded:"), "  in the milter's order")
        t.ok(folded_asked(), "  the held header was asked of the server after the answer")
        log2 = open(f2.log_path).read()
        t.ok("header X-Replaced=" in log2 and "header X-Test-Added=" not in log2.split("eom bytes=")[-2],
             "the next milter was asked only then, and saw the header as milter_header_checks left it")
        log = p.log()
        t.ok(0 <= log.find(qid_b or "none") < log.find("milter-header-replace: header X-Test-Added"),
             "the log has the other transaction before the waiting one's REPLACE")
        t.is_(a.cmd("NOOP"), "250 2.0.0 Ok", "the session goes on")
        a.close()

        # Each action, as with a local table.
        table[ADDED] = b"REJECT 5.7.1 Spam header from the remote table"
        before = len(p.queue_files())
        t.is_(send("do: addheader"), "550 5.7.1 Spam header from the remote table",
              "REJECT: the client gets the rule's reply")
        t.is_(len(p.queue_files()), before, "  and nothing is queued")
        t.ok(p.wait_log(r"milter-header-reject: header X-Test-Added: added by the test filter from \S+; "
                        r"from=<sender@example\.org> to=<u@petrel\.test> proto=ESMTP helo=<[^>]*>: "
                        r"5\.7\.1 Spam header from the remote table"), "  logged as Postfix's cleanup logs it")

        table[SUBJECT] = b"DISCARD"
        r = send("do: chgheader")
        t.like(r, r"^250 2\.0\.0 Ok: queued as ", "DISCARD of a changed header: 250")
        t.is_(len(p.queue_files()), before, "  and nothing is queued")
        t.ok(p.wait_log(r"milter-header-discard: header Subject: changed subject"), "  logged")

        table[FIRST] = b"HOLD"
        qid = queue_id(send("do: insheader"))
        t.ok(qid is not None and any(x.endswith("/" + qid) for x in p.queue_files("hold")),
             "HOLD of an inserted header: accepted into the hold queue", p.queue_files("hold"))
        t.ok(FIRST + b"\r\n" in p.queued_bytes(qid, "hold"), "  with the header")

        table[FIRST] = b"PREPEND X-Prepended: no"
        table[ADDED] = b"IGNORE"
        qid = queue_id(send("do: insheader addheader"))
        data = p.queued_bytes(qid)
        t.ok(qid is not None and FIRST + b"\r\n" in data and b"X-Prepended" not in data,
             "PREPEND is not applied (as in Postfix); the header is written")
        t.ok(p.wait_log(r"the milter_header/body_checks prepend action is not implemented"),
             "  with Postfix's warning")
        t.ok(ADDED not in data, "IGNORE drops the milter's header")

        # After a REDIRECT, later milter headers get no action (nothing
        # logged, replaced or dropped): Postfix's cleanup_milter_hbc_extend.
        table[FIRST] = b"REDIRECT elsewhere@example.org"
        table[ADDED] = b"IGNORE"
        qid = queue_id(send("do: insheader addheader"))
        data = p.queued_bytes(qid)
        t.ok(qid is not None and p.wait_log(r"milter-header-redirect: header X-Test-First: inserted at the top "
                                            r"from .*: elsewhere@example\.org"), "REDIRECT: accepted, logged")
        t.ok(ADDED + b"\r\n" in data, "  a later header that IGNORE matches is kept: the checks ended", data[:600])
        table.pop(FIRST)

        # A table that cannot answer, and a server that is down: deferred.
        table.clear()
        server.special[ADDED] = (b"mhc", netstring(b"TEMP resting"))
        before = len(p.queue_files())
        t.is_(send("do: addheader"), "451 4.3.0 Error: queue file write error",
              "the remote table cannot answer: 451 4.3.0, as Postfix")
        t.ok(p.wait_log(r"warning: \w+: milter_header_checks map lookup problem -- message not accepted, "
                        r"try again later"), "  with Postfix's warning")
        server.special.clear()
        server.stop()
        t.is_(send("do: addheader"), "451 4.3.0 Error: queue file write error",
              "the socketmap server is down: 451 4.3.0")
        t.is_(len(p.queue_files()), before, "  nothing was queued for either")
        server.restart()
        t.like(send("do: addheader"), r"^250 2\.0\.0 Ok: queued as ", "the server is back: accepted")

        # The client leaves while a lookup waits: nothing breaks.
        gate = threading.Event()
        server.slow[ADDED] = gate
        server.requests.clear()
        c = p.connect()
        c.ehlo("leaving.test")
        c.cmd("MAIL FROM:<sender@example.org>")
        c.cmd("RCPT TO:<u@petrel.test>")
        c.cmd("DATA")
        c.send(b"Subject: do: addheader foldheader\r\nFrom: a@example.org\r\n\r\nbody\r\n.\r\n")
        t.ok(wait_for(lambda: ADDED in server.seen("mhc"), timeout=20), "a lookup waits")
        c.close()
        server.slow.pop(ADDED)
        t.like(send("do: accept"), r"^250 2\.0\.0 Ok: queued as ", "the client left: the worker takes the next one")
        gate.set()
        t.like(send("do: addheader"), r"^250 2\.0\.0 Ok: queued as ", "and the late answer changes nothing")
        t.ok(not folded_asked(), "  the left session's held edit was never made")
        t.ok(not re.search(r"panic|fatal|AddressSanitizer|killed by signal", p.log()),
             "nothing crashed", p.log()[-2000:])

server.stop()
t.done()
