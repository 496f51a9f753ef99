"""When a transaction ends, the milters hear of it at once, as from
Postfix's smtpd: its mail_reset() (after the reply to the end of DATA,
whatever the outcome; RSET; a new EHLO; the session's end) sends
SMFIC_ABORT to every milter still in the transaction (milter_abort()), so
a milter frees the message's state then, not at the next MAIL. Checked
with two libmilter filters of our own (modules/milter/t/testfilter.c),
whose logs give the exact callbacks each got, in order, and the ABORT
before the client's next command:
- header_checks REJECT and DISCARD (no milter gets the content);
- an access restriction's DISCARD at RCPT (no later event of the
  transaction goes to the milters, MILTER_SKIP_FLAGS, but an unknown
  command does: Postfix's smtpd reports unknown commands to the milters
  whatever the transaction's flags);
- a milter's own DISCARD at RCPT: an unknown command of the transaction
  no longer goes to that milter (Postfix's milter8_unknown_event skips a
  milter in its ACCEPT_MSG state) but still to the other one; after the
  transaction's end both get them again;
- EHLO in a transaction: after a DISCARD the milters get the ABORT but
  not that EHLO (Postfix reports HELO before its mail_reset clears
  MILTER_SKIP_FLAGS), otherwise both;
- RSET.
A message the milters saw to its end of message gets no ABORT after it
(libmilter would ignore one there)."""
from harness import Petrel, Smtp, Tap, wait_for
from peers import TestFilter
from modlib import bundled_module_dir

t = Tap(timeout=300)
mods = bundled_module_dir("milter")

HEADER_RULES = r"""
/^X-Act: reject$/      REJECT 5.7.1 header says no
/^X-Act: discard$/     DISCARD dropped by header
"""


def event(line):
    """A filter log line, its variable parts cut (connect's port, a
    header's value, a body chunk's size, the end of message's digest)."""
    for word in ("connect", "header", "body", "eom"):
        if line == word or line.startswith(word + " "):
            return word
    return line


def events(f, start, last, timeout=30.0):
    """The callbacks filter f logged from line start on, once line last
    (an event() value) is among them (SMFIC_ABORT and the close have no
    reply: they are logged whenever the filter gets to them)."""
    def cut(lines):
        return [event(ln) for ln in lines[start:] if not ln.startswith(("macro ", "negotiate", "ready"))]
    return cut(f.log(until=lambda lines: last in cut(lines), timeout=timeout))


def log_end(*filters):
    return [len(f.log()) for f in filters]


def message(c, case, headers=""):
    """DATA and a message whose headers are X-Case: CASE and headers."""
    t.like(c.cmd("DATA"), r"^354 ", "%s: DATA" % case)
    c.send(("X-Case: %s\r\nSubject: test\r\n%s\r\nbody\r\n.\r\n" % (case, headers)).encode())
    return c.read_reply()


CONTENT = ["header", "header", "eoh", "body", "eom"]   # X-Case, Subject; the body; the end
HELO = "helo client.example.org"

with TestFilter() as f1, TestFilter() as f2:
    with Petrel(t, main_cf={}, start=False, local_users=["gone", "discard-one"]) as p:
        conf = dict(p.settings)
        conf.update({"modules": "milter", "module_directory": mods,
                     "smtpd_milters": "%s, %s" % (f1.endpoint, f2.endpoint),
                     "header_checks": "regexp:" + p.write_file("header_checks", HEADER_RULES),
                     "smtpd_recipient_restrictions": "check_recipient_access inline:{ {gone@petrel.test=DISCARD} }, "
                                                     "permit_mynetworks, reject",
                     # queued mail stays in the queue: nothing is delivered while the test looks
                     "defer_transports": "local smtp",
                     # longer than a wait for a milter's line: a session that waits for a late
                     # ABORT does not end (and QUIT its milters) meanwhile
                     "smtpd_timeout": "120s"})
        p.write_main_cf(conf)
        p.start()
        # The harness's readiness probe is a session of its own: its milter
        # conversations end before the test's begin.
        t.ok(p.wait_log(r"smtpd\[\d+\]: disconnect from \S+\[127\.0\.0\.1\]") is not None,
             "the readiness probe's session ended")
        t.ok(wait_for(lambda: f1.idle() and f2.idle(), timeout=30), "and so did its milter conversations")

        # --- header_checks REJECT and DISCARD ----------------------------------------------
        for case, act, reply in (("hc-reject", "reject", r"^550 5\.7\.1 header says no$"),
                                 ("hc-discard", "discard", r"^250 2\.0\.0 Ok: queued as ")):
            start = log_end(f1, f2)
            c = Smtp(p.port)
            c.ehlo()
            c.cmd("MAIL FROM:<sender@example.org>")
            c.cmd("RCPT TO:<u@petrel.test>")
            t.like(message(c, case, "X-Act: %s\r\n" % act), reply, "%s: header_checks answers" % case)
            want = ["connect", HELO, "envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "data", "abort"]
            for name, f, s in (("first", f1, start[0]), ("second", f2, start[1])):
                t.is_(events(f, s, "abort"), want,
                      "  the %s milter: no content, and SMFIC_ABORT right after the reply, before the next "
                      "command" % name)
            # the same session's next message goes through the milters as usual
            start = log_end(f1, f2)
            c.cmd("MAIL FROM:<sender@example.org>")
            c.cmd("RCPT TO:<u@petrel.test>")
            t.like(message(c, case + "-next"), r"^250 2\.0\.0 Ok: queued as ", "  the next message is accepted")
            c.cmd("QUIT")
            c.close()
            want = ["envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "data"] + CONTENT + ["close"]
            for name, f, s in (("first", f1, start[0]), ("second", f2, start[1])):
                t.is_(events(f, s, "close"), want,
                      "  the %s milter gets all of it, then the close (no ABORT after an end of message)" % name)

        # --- an access restriction's DISCARD at RCPT ---------------------------------------
        start = log_end(f1, f2)
        c = Smtp(p.port)
        c.ehlo()
        replies = [c.cmd("MAIL FROM:<sender@example.org>"), c.cmd("RCPT TO:<u@petrel.test>"),
                   c.cmd("RCPT TO:<gone@petrel.test>"), c.cmd("RCPT TO:<user@petrel.test>")]
        t.ok(all(r.startswith("250 ") for r in replies), "access DISCARD at RCPT: answered 250", replies)
        t.like(c.cmd("XYZZY one"), r"^502 5\.5\.2 ", "  an unknown command in the transaction: 502")
        t.like(message(c, "access-discard"), r"^250 2\.0\.0 Ok: queued as ", "  the message: 250 (discarded)")
        want = ["connect", HELO, "envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "unknown XYZZY one",
                "abort"]
        for name, f, s in (("first", f1, start[0]), ("second", f2, start[1])):
            t.is_(events(f, s, "abort"), want,
                  "  the %s milter: not the discarded RCPT nor the later ones, DATA or the content; the unknown "
                  "command yes (as Postfix); SMFIC_ABORT right after the reply" % name)
        c.cmd("QUIT")
        c.close()
        for name, f, s in (("first", f1, start[0]), ("second", f2, start[1])):
            t.is_(events(f, s, "close")[len(want):], ["close"], "  then the %s milter's close" % name)

        # --- a milter's own DISCARD at RCPT ------------------------------------------------
        start = log_end(f1, f2)
        c = Smtp(p.port)
        c.ehlo()
        replies = [c.cmd("MAIL FROM:<sender@example.org>"), c.cmd("RCPT TO:<u@petrel.test>"),
                   c.cmd("RCPT TO:<discard-one@petrel.test>"), c.cmd("RCPT TO:<user@petrel.test>")]
        t.ok(all(r.startswith("250 ") for r in replies), "the first milter's DISCARD at RCPT: answered 250", replies)
        t.like(c.cmd("XYZZY one"), r"^502 5\.5\.2 ", "  an unknown command in the transaction: 502")
        t.like(message(c, "milter-discard"), r"^250 2\.0\.0 Ok: queued as ", "  the message: 250 (discarded)")
        events(f1, start[0], "abort")
        events(f2, start[1], "abort")
        t.like(c.cmd("XYZZY two"), r"^502 5\.5\.2 ", "  an unknown command after the transaction: 502")
        c.cmd("QUIT")
        c.close()
        t.is_(events(f1, start[0], "close"),
              ["connect", HELO, "envfrom <sender@example.org>", "envrcpt <u@petrel.test>",
               "envrcpt <discard-one@petrel.test>", "abort", "unknown XYZZY two", "close"],
              "  the discarding milter: no later RCPT, no unknown command of the transaction (Postfix's "
              "ACCEPT_MSG), SMFIC_ABORT after the reply, then the unknown command after it")
        t.is_(events(f2, start[1], "close"),
              ["connect", HELO, "envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "unknown XYZZY one",
               "abort", "unknown XYZZY two", "close"],
              "  the other milter: not the discarded RCPT nor the later ones; both unknown commands; SMFIC_ABORT "
              "after the reply")

        # --- EHLO in a transaction --------------------------------------------------------
        # Postfix reports HELO to the milters unless MILTER_SKIP_FLAGS are set, then
        # mail_reset() aborts the transaction: after a DISCARD the milters get the
        # ABORT and not that EHLO; otherwise the EHLO as well (libmilter, in a
        # transaction, runs xxfi_abort itself when a HELO comes)
        for case, discard in (("EHLO after an access DISCARD", True), ("EHLO in a transaction", False)):
            start = log_end(f1, f2)
            c = Smtp(p.port)
            c.ehlo()
            c.cmd("MAIL FROM:<sender@example.org>")
            c.cmd("RCPT TO:<u@petrel.test>")
            if discard:
                c.cmd("RCPT TO:<gone@petrel.test>")
            t.like(c.ehlo("again.example.org"), r"^250 ", case)
            c.cmd("MAIL FROM:<sender@example.org>")
            c.cmd("RCPT TO:<u@petrel.test>")
            t.like(message(c, "helo-reset"), r"^250 2\.0\.0 Ok: queued as ", "  the next message is accepted")
            c.cmd("QUIT")
            c.close()
            want = (["connect", HELO, "envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "abort"]
                    + ([] if discard else ["helo again.example.org"])
                    + ["envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "data"] + CONTENT + ["close"])
            for name, f, s in (("first", f1, start[0]), ("second", f2, start[1])):
                t.is_(events(f, s, "close"), want, "  the %s milter: SMFIC_ABORT, %s, then the next message"
                      % (name, "not the EHLO (as Postfix)" if discard else "the EHLO"))

        # --- RSET -------------------------------------------------------------------------
        start = log_end(f1, f2)
        c = Smtp(p.port)
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.org>")
        c.cmd("RCPT TO:<u@petrel.test>")
        t.like(c.cmd("RSET"), r"^250 ", "RSET in a transaction")
        want = ["connect", HELO, "envfrom <sender@example.org>", "envrcpt <u@petrel.test>", "abort"]
        for name, f, s in (("first", f1, start[0]), ("second", f2, start[1])):
            t.is_(events(f, s, "abort"), want, "  the %s milter gets SMFIC_ABORT at the RSET" % name)
        c.cmd("QUIT")
        c.close()
        for name, f, s in (("first", f1, start[0]), ("second", f2, start[1])):
            t.is_(events(f, s, "close")[len(want):], ["close"], "  then the %s milter's close" % name)

t.done()
