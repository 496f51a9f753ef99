"""A milter's answer that comes after the core stopped waiting for it
(milter_hook_timeout ran out, the module's failure action answered the
client and the transaction ended) is for nobody: it changes nothing and
the chain does not go on. Two libmilter filters of our own
(modules/milter/t/testfilter.c); at the end of the first message the first
one asks for a quarantine, then takes 5 s to answer, past a 2 s
milter_hook_timeout (and then once more, the quarantine coming late too):
- the client gets the failure action's 4xx, and the second milter gets
  SMFIC_ABORT, not the message (it never got the end of message);
- the late answer is logged once, and ignored: its quarantine does not
  hold the session's next message, and the second milter is not sent the
  headers of a transaction that is over (no "outside a transaction"
  errors);
- the session's next message goes through both milters and is queued, not
  held.
This path runs the milter code after the core finished with the event, so
it is in the sanitizer CI part (SANITIZER_CI_TESTS)."""
import re

from harness import Petrel, Smtp, Tap, wait_for
from peers import TestFilter
from modlib import bundled_module_dir

t = Tap(timeout=300)
mods = bundled_module_dir("milter")


def event(line):
    """A filter log line, its variable parts cut."""
    for word in ("connect", "header", "body", "eom"):
        if line == word or line.startswith(word + " "):
            return word
    return line


def events(f, start, last, timeout=30.0):
    """The callbacks filter f logged from line start on, once last is among them."""
    def cut(lines):
        return [event(ln) for ln in lines[start:] if not ln.startswith(("macro ", "negotiate", "ready"))]
    return cut(f.log(until=lambda lines: last in cut(lines), timeout=timeout))


HELO = "helo client.example.org"
LATE = r"milter: an answer to END-OF-MESSAGE came after the core stopped waiting"

with TestFilter() as f1, TestFilter() as f2:
    with Petrel(t, main_cf={}, start=False) as p:
        conf = dict(p.settings)
        conf.update({"modules": "milter", "module_directory": mods,
                     "smtpd_milters": "%s, %s" % (f1.endpoint, f2.endpoint),
                     "milter_hook_timeout": "2s",
                     # queued mail stays in the queue: nothing is delivered while the test looks
                     "defer_transports": "local smtp"})
        p.write_main_cf(conf)
        p.start()
        t.ok(p.wait_log(r"smtpd\[\d+\]: disconnect from \S+\[127\.0\.0\.1\]") is not None,
             "the readiness probe's session ended")
        t.ok(wait_for(lambda: f1.idle() and f2.idle(), timeout=30), "and so did its milter conversations")

        c = Smtp(p.port)
        c.ehlo()
        seen = [len(f1.log()), len(f2.log())]
        # "quarantine sleep5": the quarantine comes while the core still waits (it
        # holds that message, refused anyway), the answer after; "sleep5 quarantine":
        # both after
        for n, actions in enumerate(("quarantine sleep5", "sleep5 quarantine"), 1):
            case = "do: %s" % actions
            t.like(c.cmd("MAIL FROM:<sender@example.org>"), r"^250 ", "%s: MAIL" % case)
            t.like(c.cmd("RCPT TO:<u@petrel.test>"), r"^250 ", "  RCPT")
            t.like(c.cmd("DATA"), r"^354 ", "  DATA")
            c.send(("Subject: %s\r\n\r\nbody\r\n.\r\n" % case).encode())
            t.like(c.read_reply(), r"^451 4\.3\.0 ",
                   "  the first milter answers the end of message after milter_hook_timeout: the failure "
                   "action's 451")
            got = events(f2, seen[1], "abort")
            t.is_(got[got.index("envfrom <sender@example.org>"):],
                  ["envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "data", "abort"],
                  "  the second milter: SMFIC_ABORT when the transaction ends, not the message")
            t.ok(wait_for(lambda: len(re.findall(LATE, p.log())) >= n, timeout=30),
                 "  the first milter's late answer is logged")
            log = p.log()
            t.is_(len(re.findall(LATE, log)), n, "  once")
            t.is_(re.findall(r".*outside a transaction.*", log), [],
                  "  and ignored: the second milter is not sent the headers of a transaction that is over")
            if n == 1:
                holds = re.findall(r".*milter-hold.*", log)
            seen = [len(f1.log()), len(f2.log())]

        # The session's next message: both milters, queued, not held.
        t.like(c.cmd("MAIL FROM:<sender@example.org>"), r"^250 ", "the session's next MAIL")
        t.like(c.cmd("RCPT TO:<u@petrel.test>"), r"^250 ", "  RCPT")
        t.like(c.cmd("DATA"), r"^354 ", "  DATA")
        c.send(b"Subject: next\r\n\r\nbody\r\n.\r\n")
        reply = c.read_reply()
        t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "  the next message is queued")
        c.cmd("QUIT")
        c.close()
        content = ["envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "data", "header", "eoh", "body",
                   "eom", "close"]
        first = events(f1, seen[0], "close")
        t.is_(first[first.index("envfrom <sender@example.org>"):], content,
              "  the first milter: all of the next message")
        second = events(f2, seen[1], "close")
        t.is_(second[second.index("envfrom <sender@example.org>"):], content,
              "  the second milter: all of the next message")
        t.is_(re.findall(r".*milter-hold.*", p.log()), holds,
              "  the late answers' quarantines hold nothing: no milter-hold line for them")
        t.is_(p.queue_files("hold"), [], "  nothing in the hold queue")
        t.ok(p.queued_message(reply, "incoming", "active", "deferred") is not None, "  the message is queued")

t.done()
