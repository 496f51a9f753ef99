"""An SMFIC_ABORT that cannot be written. A transaction's end (RSET, the
reply to the end of DATA, QUIT, a lost client) sends SMFIC_ABORT to each
milter still in it (milter_session.c's tx_ended, as Postfix's
mail_reset() -> milter_abort()). When that milter's socket broke without
its read watch seeing it, the write fails: as Postfix's milter8_abort()
-> milter8_write_cmd() -> milter8_comm_error(), the milter is given up for
the rest of the SMTP session with one warning naming the command and the
error, its default_action answers its later events, and the session goes
on; the next session talks to the milter again.

The break is real: our libmilter filter (modules/milter/t/testfilter.c),
for a recipient halfclose-..., shuts the read side of its unix socket
before it answers CONTINUE and keeps the socket open. On a unix stream
socket that leaves the MTA's end unable to send (EPIPE) and nothing to
read (no EOF, no POLLIN/POLLHUP): the ABORT is the first thing that finds
out. Over TCP the same shutdown would not reach the MTA at all, hence the
unix socket. The filter asks for no SMFIC_DATA (nodata), so that after a
header_checks REJECT (no milter gets the content) the ABORT that follows
the 550 is the first write since RCPT."""
import re

from harness import Petrel, Smtp, Tap, wait_for
from peers import TestFilter
from modlib import bundled_module_dir

t = Tap(timeout=300)
mods = bundled_module_dir("milter")

HEADER_RULES = "/^X-Act: reject$/ REJECT 5.7.1 header says no\n"
RCPT = "halfclose-one@petrel.test"


def count(p, pattern):
    return len(re.findall(pattern, p.log()))


def wait_count(p, pattern, n, timeout=30.0):
    """True once pattern matches n times in petreld's log."""
    return wait_for(lambda: count(p, pattern) >= n, timeout=timeout) is not False


def filter_lines(f, start, last, timeout=30.0):
    """Filter f's callbacks from log line start on, once last is among them
    (macros and the connection's details left out)."""
    def cut(lines):
        return [ln.split(" ")[0] if ln.startswith(("connect ", "header ", "body ", "eom "))
                else ln for ln in lines[start:] if not ln.startswith(("macro ", "negotiate", "ready"))]
    return cut(f.log(until=lambda lines: last in cut(lines), timeout=timeout))


def conversations_over(f):
    """Every conversation the filter had is over: each starts with the
    negotiation and ends with libmilter's xxfi_close (a half-closed one's
    when libmilter reads its EOF). Not counted by SMFIC_CONNECT: a client
    that leaves at once (the readiness probe) may end the conversation
    before it."""
    lines = f.log()
    return sum(ln == "close" for ln in lines) >= sum(ln.startswith("negotiate ") for ln in lines)


def broken_transaction(c, case):
    """MAIL and the recipient that breaks the milter's socket."""
    t.like(c.cmd("MAIL FROM:<sender@example.org>"), r"^250 ", "%s: MAIL" % case)
    t.like(c.cmd("RCPT TO:<%s>" % RCPT), r"^250 ", "  RCPT: the milter answered CONTINUE, then broke its socket")


def good_session(p, f, case):
    """A new session's message goes through the milter, all of it."""
    start = len(f.log())
    c = Smtp(p.port)
    c.ehlo()
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<u@petrel.test>")
    c.cmd("DATA")
    c.send(b"Subject: after\r\n\r\nbody\r\n.\r\n")
    t.like(c.read_reply(), r"^250 2\.0\.0 Ok: queued as ", "%s: a new session's message is accepted" % case)
    c.cmd("QUIT")
    c.close()
    t.is_(filter_lines(f, start, "close"),
          ["connect", "helo client.example.org", "envfrom <sender@example.org>", "envrcpt <u@petrel.test>",
           "header", "eoh", "body", "eom", "close"],
          "  with a new conversation with the milter, all of it")


for action in ("tempfail", "accept"):
    with TestFilter(options="nodata", unix=True) as f:
        with Petrel(t, main_cf={}, start=False, local_users=["halfclose-one"]) as p:
            conf = dict(p.settings)
            conf.update({"modules": "milter", "module_directory": mods, "smtpd_milters": f.endpoint,
                         "milter_default_action": action,
                         "header_checks": "regexp:" + p.write_file("header_checks", HEADER_RULES),
                         "defer_transports": "local smtp"})
            p.write_main_cf(conf)
            p.start()
            workers = p.worker_pids(at_least=1)
            # The readiness probe's session and its milter conversation are over
            # before the test's begin: the filter finds its socket as the only one.
            t.ok(p.wait_log(r"smtpd\[\d+\]: disconnect from \S+\[127\.0\.0\.1\]") is not None,
                 "default_action %s: the readiness probe's session ended" % action)
            t.ok(wait_for(lambda: conversations_over(f), timeout=30), "  and its milter conversation")
            ep = re.escape(f.endpoint)
            line = r"milter %s: error writing SMFIC_ABORT: Broken pipe; default_action %s$" % (ep, action)
            # the line's prefix says whose it is: the transaction's (NOQUEUE or
            # its queue ID) while the session lives; at the session's end the
            # core has made the session's handle stale and petrel_log names the
            # module alone (milter_session.c, tx_ended)
            in_session = r"(?m)^petrel/smtpd\[\d+\]: warning: %s: milter: " + line
            at_end = r"(?m)^petrel/smtpd\[\d+\]: warning: module milter: " + line
            seen = 0

            # --- RSET: the session goes on ----------------------------------------------
            c = Smtp(p.port)
            c.ehlo()
            start = len(f.log())
            broken_transaction(c, "RSET (default_action %s)" % action)
            # libmilter reads EOF at once and ends the conversation (its own
            # xxfi_abort and xxfi_close); the filter's duplicate keeps the socket
            t.is_(filter_lines(f, start, "close"), ["envfrom <sender@example.org>", "envrcpt <%s>" % RCPT,
                                                    "halfclose", "abort", "close"],
                  "  the filter broke its socket, and libmilter closed its descriptor")
            t.like(c.cmd("RSET"), r"^250 ", "  RSET: 250")
            seen += 1
            t.ok(wait_count(p, in_session % "NOQUEUE", 1), "  the failed ABORT is logged, with the error and "
                 "the action", p.log()[-2000:])
            # Postfix's milter8_event after an error: the milter's default reply, no I/O
            c.cmd("MAIL FROM:<sender@example.org>")
            if action == "tempfail":
                t.is_(c.lines, ["451 4.7.1 Service unavailable - try again later"],
                      "  the next MAIL: the default action's reply for the rest of the session (Postfix)")
                t.like(c.cmd("NOOP"), r"^250 ", "  the session goes on")
            else:
                t.like(c.lines[0], r"^250 ", "  the next MAIL: 250, without the milter")
                c.cmd("RCPT TO:<u@petrel.test>")
                c.cmd("DATA")
                c.send(b"Subject: next\r\n\r\nbody\r\n.\r\n")
                t.like(c.read_reply(), r"^250 2\.0\.0 Ok: queued as ", "  the next message is accepted")
            t.like(c.cmd("QUIT"), r"^221 ", "  QUIT: 221")
            c.close()
            t.ok(not wait_count(p, r"milter %s: " % ep, seen + 1, timeout=2),
                 "  once: no other line about that milter (nothing more is written to it)", p.log()[-2000:])
            t.is_(f.log()[-1], "close", "  the filter heard nothing after the break")
            good_session(p, f, "  after it")

            # --- the reply to the end of DATA -------------------------------------------
            # header_checks REJECT: no milter gets the content, and this one asked
            # for no SMFIC_DATA (nodata): the ABORT after the 550 is the first
            # write since RCPT's reply
            c = Smtp(p.port)
            c.ehlo()
            broken_transaction(c, "end of DATA (default_action %s)" % action)
            t.like(c.cmd("DATA"), r"^354 ", "  DATA: 354")
            c.send(b"X-Act: reject\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
            t.like(c.read_reply(), r"^550 5\.7\.1 header says no$", "  header_checks REJECT: 550")
            seen += 1
            t.ok(wait_count(p, in_session % "[0-9A-Z]{10,}", 1), "  the failed ABORT after the reply is logged, "
                 "with the message's queue ID", p.log()[-2000:])
            t.like(c.cmd("NOOP"), r"^250 ", "  the session goes on")
            c.cmd("QUIT")
            c.close()
            good_session(p, f, "  after it")

            # --- QUIT and a lost client: the session's end --------------------------------
            for how in ("QUIT", "a lost client"):
                c = Smtp(p.port)
                c.ehlo()
                broken_transaction(c, "%s (default_action %s)" % (how, action))
                if how == "QUIT":
                    t.like(c.cmd("QUIT"), r"^221 ", "  QUIT: 221")
                c.close()
                seen += 1
                t.ok(wait_count(p, at_end, seen - 2), "  the failed ABORT at the session's end is logged",
                     p.log()[-2000:])
                good_session(p, f, "  after it")

            t.is_(count(p, r"milter %s: " % ep), seen, "  one line per failed ABORT, no other about that milter")
            t.is_(p.worker_pids(), workers, "  the smtpd workers are the same processes as at the start")
            t.ok(not re.search(r"panic|fatal|AddressSanitizer|runtime error|killed by signal", p.log()),
                 "  nothing crashed", p.log()[-2000:])

t.done()
