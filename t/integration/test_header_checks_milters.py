"""header_checks, mime_header_checks, nested_header_checks and body_checks
actions against smtpd_milters, with a real libmilter filter of our own
(modules/milter/t/testfilter.c), as Postfix's cleanup does it: REJECT,
DISCARD, REDIRECT and PASS clear CLEANUP_FLAG_FILTER_ALL, so no later header
or body line is checked and no milter gets the message's content (the
filter's log has no header, body or end of message for it, and its edits
are not made); HOLD, FILTER, BCC, WARN, INFO, PREPEND, REPLACE, IGNORE,
STRIP, DUNNO and OK leave both on (the filter sees the message and its
edit is in the queue file). Each message's outcome is Postfix's. The same
for non_smtpd_milters (petrel-sendmail's mail, through pickup). A DISCARD
before the content (an access restriction at MAIL or RCPT) keeps the
transaction's later events and its content from the milters, as Postfix's
smtpd does (MILTER_SKIP_FLAGS)."""
import os
import subprocess

from harness import TOP_BUILDDIR, Petrel, Smtp, Tap, _runnable_copy, queue_id
from modlib import bundled_module_dir
from peers import TestFilter

t = Tap(timeout=400)
mods = bundled_module_dir("milter")

HEADER_RULES = r"""
/^X-Act: reject$/      REJECT 5.7.1 header says no
/^X-Act: defer$/       REJECT 4.7.1 header says later
/^X-Act: discard$/     DISCARD dropped by header
/^X-Act: redirect$/    REDIRECT r2@example.org
/^X-Act: pass$/        PASS trusted
/^X-Act: hold$/        HOLD held by header
/^X-Act: filter$/      FILTER smtp:[127.0.0.1]:9
/^X-Act: bcc$/         BCC bcc@example.org
/^X-Act: warn$/        WARN looked at it
/^X-Act: info$/        INFO noted
/^X-Act: prepend$/     PREPEND X-Prepended: yes
/^X-Act: replace$/     REPLACE X-Act: replaced
/^X-Act: ignore$/      IGNORE
/^X-Act: strip$/       STRIP stripped
/^X-Act: dunno$/       DUNNO
/^X-Act: ok$/          OK
/^X-Late: reject$/     REJECT 5.7.3 a later header was checked
"""
MIME_RULES = r"""
/^X-Part: pass$/       PASS part trusted
/^X-Part: warn$/       WARN part looked at
"""
NESTED_RULES = r"""
/^X-Nested: discard$/  DISCARD nested dropped
/^X-Nested: info$/     INFO nested noted
"""
BODY_RULES = r"""
/^body-reject$/        REJECT 5.7.2 body says no
/^body-discard$/       DISCARD dropped by body
/^body-redirect$/      REDIRECT r2@example.org
/^body-pass$/          PASS body trusted
/^body-hold$/          HOLD held by body
/^body-warn$/          WARN body looked at
/^late-body$/          REJECT 5.7.4 a later body line was checked
"""


def send(p, case, headers="", body="body\r\n", subject="do: addheader"):
    """One message whose first header is X-Case: CASE (no rule matches it)
    and whose Subject asks the test filter for an ADDHEADER edit."""
    c = Smtp(p.port)
    c.ehlo()
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<u@petrel.test>")
    c.cmd("DATA")
    msg = "X-Case: %s\r\nSubject: %s\r\nFrom: a@example.org\r\n%s\r\n%s" % (case, subject, headers, body)
    c.send(msg.encode())
    c.send(b"\r\n.\r\n")
    r = c.read_reply()
    c.cmd("QUIT")
    c.close()
    return r


def milter_saw(f, case):
    """Whether the filter got the content of case's message (its headers
    come at end of message, before the body and the end of message)."""
    return "header X-Case=[%s]" % case in f.log()


MULTIPART = ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n",
             "preamble\r\n--b1\r\nContent-Type: text/plain\r\nX-Part: %s\r\n\r\npart text\r\n"
             "late-body\r\n--b1--\r\n")
NESTED = ("MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n",
          "Subject: inner\r\nX-Nested: %s\r\n\r\ninner body\r\nlate-body\r\n")

with TestFilter() as f:
    with Petrel(t, main_cf={}, start=False) as p:
        conf = dict(p.settings)
        conf.update({"modules": "milter", "module_directory": mods, "smtpd_milters": f.endpoint,
                     "header_checks": "regexp:" + p.write_file("header_checks", HEADER_RULES),
                     "mime_header_checks": "regexp:" + p.write_file("mime_header_checks", MIME_RULES),
                     "nested_header_checks": "regexp:" + p.write_file("nested_header_checks", NESTED_RULES),
                     "body_checks": "regexp:" + p.write_file("body_checks", BODY_RULES),
                     # queued mail stays in the queue: nothing is delivered while the test looks
                     "defer_transports": "local smtp"})
        p.write_main_cf(conf)
        p.start()

        # --- the actions that stop the milters ------------------------------------------
        for case, headers, body, reply in (
                ("hc-reject", "X-Act: reject\r\n", "body\r\n", r"^550 5\.7\.1 header says no$"),
                ("hc-defer", "X-Act: defer\r\n", "body\r\n", r"^451 4\.7\.1 header says later$"),
                ("bc-reject", "", "body-reject\r\n", r"^550 5\.7\.2 body says no$")):
            before = len(p.queue_files())
            r = send(p, case, headers, body)
            t.like(r, reply, "%s: the rule's reply" % case)
            t.is_(len(p.queue_files()), before, "  nothing is queued")
            t.ok(not milter_saw(f, case), "  the milter got none of the message", f.log()[-6:])

        for case, headers, body, log in (
                ("hc-discard", "X-Act: discard\r\nX-Late: reject\r\n", "late-body\r\n",
                 r"discard: header X-Act: discard from .*: dropped by header"),
                ("bc-discard", "X-Late: warn\r\n", "body-discard\r\nlate-body\r\n",
                 r"discard: body body-discard from .*: dropped by body"),
                ("nested-discard", NESTED[0], NESTED[1] % "discard",
                 r"discard: header X-Nested: discard from .*: nested dropped")):
            before = len(p.queue_files())
            r = send(p, case, headers, body)
            t.like(r, r"^250 2\.0\.0 Ok: queued as ", "%s: 250 (later header and body rules not applied)" % case)
            t.is_(len(p.queue_files()), before, "  nothing is queued")
            t.ok(p.wait_log(log) is not None, "  the DISCARD is logged")
            t.ok(not milter_saw(f, case), "  the milter got none of the message", f.log()[-6:])

        for case, headers, body, log in (
                ("hc-pass", "X-Act: pass\r\nX-Late: reject\r\n", "late-body\r\n",
                 r"pass: header X-Act: pass from .*: trusted"),
                ("bc-pass", "", "body-pass\r\nlate-body\r\n", r"pass: body body-pass from .*: body trusted"),
                ("mime-pass", MULTIPART[0], MULTIPART[1] % "pass", r"pass: header X-Part: pass from .*: part trusted"),
                ("hc-redirect", "X-Act: redirect\r\nX-Late: reject\r\n", "late-body\r\n",
                 r"redirect: header X-Act: redirect from .*: r2@example\.org"),
                ("bc-redirect", "", "body-redirect\r\nlate-body\r\n",
                 r"redirect: body body-redirect from .*: r2@example\.org")):
            r = send(p, case, headers, body)
            qid = queue_id(r)
            t.ok(qid is not None, "%s: accepted (later header and body rules not applied)" % case, r)
            t.ok(p.wait_log(log) is not None, "  the action is logged")
            t.ok(not milter_saw(f, case), "  the milter got none of the message", f.log()[-6:])
            data = p.queued_bytes(qid)
            t.ok(data and b"X-Test-Added" not in data, "  and made no edit (its ADDHEADER is not in the queue file)",
                 data[:400])
            if "redirect" in case:
                t.ok(b"r2@example.org" in data, "  the queue file has the REDIRECT address")

        t.ok(not p.wait_log(r"a later (header|body line) was checked", timeout=0.5),
             "no header or body rule fired after REJECT, DISCARD, PASS or REDIRECT")

        # --- the actions that leave the milters on -----------------------------------------
        def runs(case, headers="", body="body\r\n", dirs=()):
            r = send(p, case, headers, body)
            qid = queue_id(r)
            t.ok(qid is not None, "%s: accepted" % case, r)
            t.ok(milter_saw(f, case), "  the milter got the message")
            data = p.queued_bytes(qid, *dirs)
            t.ok(b"X-Test-Added: added by the test filter\r\n" in data, "  and its edit is in the queue file",
                 data[:500])
            return data

        data = runs("hc-hold", "X-Act: hold\r\n", dirs=("hold",))
        t.ok(data, "  HOLD: in the hold queue")
        data = runs("bc-hold", "", "body-hold\r\nbody-warn\r\n", dirs=("hold",))
        t.ok(data, "  body HOLD: in the hold queue")
        t.ok(p.wait_log(r"warning: body body-warn from .*: body looked at") is not None,
             "  and later body lines are still checked (WARN after HOLD)")
        runs("hc-filter", "X-Act: filter\r\n")
        t.ok(p.wait_log(r"filter: header X-Act: filter from .*: smtp:\[127\.0\.0\.1\]:9") is not None,
             "  FILTER is logged")
        data = runs("hc-bcc", "X-Act: bcc\r\n")
        t.ok(b"bcc@example.org" in data, "  BCC: the queue file has the added recipient")
        runs("hc-warn", "X-Act: warn\r\n")
        runs("hc-info", "X-Act: info\r\n")
        data = runs("hc-prepend", "X-Act: prepend\r\n")
        t.ok(b"X-Prepended: yes\r\n" in data, "  PREPEND's header is written")
        data = runs("hc-replace", "X-Act: replace\r\n")
        t.ok(b"X-Act: replaced\r\n" in data, "  REPLACE's header is written")
        data = runs("hc-ignore", "X-Act: ignore\r\n")
        t.ok(b"X-Act: ignore" not in data, "  IGNORE drops the header")
        data = runs("hc-strip", "X-Act: strip\r\n")
        t.ok(b"X-Act: strip" not in data, "  STRIP drops the header")
        runs("hc-dunno", "X-Act: dunno\r\n")
        runs("hc-ok", "X-Act: ok\r\n")
        runs("mime-warn", MULTIPART[0], (MULTIPART[1] % "warn").replace("late-body", "more text"))
        runs("nested-info", NESTED[0], (NESTED[1] % "info").replace("late-body", "more text"))
        t.ok(p.wait_log(r"warning: header X-Part: warn from .*: part looked at") is not None
             and p.wait_log(r"info: header X-Nested: info from .*: nested noted") is not None,
             "mime_header_checks WARN and nested_header_checks INFO are logged")

        # a milter still refuses after a header_checks HOLD (the milters ran)
        r = send(p, "hc-hold-milter-reject", "X-Act: hold\r\n", subject="do: reject")
        t.like(r, r"^5\d\d ", "after a HOLD a milter's REJECT still answers the client")
        t.ok(milter_saw(f, "hc-hold-milter-reject"), "  the milter got the message")

# --- a DISCARD before the content (an access restriction) -----------------------------
# Postfix's smtpd then sends the milters no further MAIL, RCPT or DATA of the transaction
# (MILTER_SKIP_FLAGS: not the discarding command's, nor RCPT, DATA or the
# content, its cleanup gets no milters); the message is accepted and dropped.
with TestFilter() as f:
    with Petrel(t, main_cf={}, start=False) as p:
        conf = dict(p.settings)
        conf.update({"modules": "milter", "module_directory": mods, "smtpd_milters": f.endpoint,
                     # sender restrictions at MAIL (not delayed to RCPT), so that MAIL itself discards
                     "smtpd_delay_reject": "no",
                     "smtpd_sender_restrictions": "check_sender_access inline:{ {dropped@example.org=DISCARD} }",
                     "smtpd_recipient_restrictions": "check_recipient_access inline:{ {u@petrel.test=DISCARD} }, "
                                                     "permit_mynetworks, reject",
                     "defer_transports": "local smtp"})
        p.write_main_cf(conf)
        p.start()
        for case, sender, rcpts, not_sent in (
                ("access-rcpt-discard", "kept@example.org", ("b@petrel.test", "u@petrel.test", "user@petrel.test"),
                 ("envrcpt <u@petrel.test>", "envrcpt <user@petrel.test>", "data")),
                ("access-mail-discard", "dropped@example.org", ("b@petrel.test",),
                 ("envfrom <dropped@example.org>", "envrcpt <b@petrel.test>", "data"))):
            before = len(p.queue_files())
            seen_before = len(f.log())
            c = Smtp(p.port)
            c.ehlo()
            replies = [c.cmd("MAIL FROM:<%s>" % sender)] + [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]
            c.cmd("DATA")
            c.send(("X-Case: %s\r\nSubject: do: addheader\r\n\r\nbody\r\n.\r\n" % case).encode())
            replies.append(c.read_reply())
            c.cmd("QUIT")
            c.close()
            t.ok(all(r.startswith("250") for r in replies), "%s: every command is answered 250" % case, replies)
            t.is_(len(p.queue_files()), before, "  nothing is queued (discarded)")
            log = f.log()[seen_before:]
            t.ok(not milter_saw(f, case) and not any(ln.startswith(x) for x in not_sent for ln in log),
                 "  the milter got no later event of the transaction: %s, nor the content" % ", ".join(not_sent),
                 log[-8:])
        t.ok("envfrom <kept@example.org>" in f.log() and "envrcpt <b@petrel.test>" in f.log(),
             "the events before the DISCARD went to the milter")

# --- non_smtpd_milters: petrel-sendmail's mail goes through the same checks -----------
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
with TestFilter() as f:
    with Petrel(t, main_cf={}, start=False, extra_services="pickup unix n - n 60 1 pickup\n") as p:
        conf = dict(p.settings)
        conf.update({"modules": "milter", "module_directory": mods, "non_smtpd_milters": f.endpoint,
                     "command_directory": os.path.dirname(POSTDROP),
                     "header_checks": "regexp:" + p.write_file("header_checks", HEADER_RULES),
                     "defer_transports": "local smtp"})
        p.write_main_cf(conf)
        p.start()
        for case, act, stopped in (("local-pass", "pass", True), ("local-warn", "warn", False)):
            r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-f", "local@petrel.test", "u@petrel.test"),
                               input=("X-Case: %s\nSubject: do: addheader\nX-Act: %s\n\nlocal body\n"
                                      % (case, act)).encode(), capture_output=True, timeout=30)
            t.is_(r.returncode, 0, "%s: petrel-sendmail hands the message to the maildrop" % case)
            # the checks' line for this message, then its queue file
            logged = p.wait_log(r"(\w+): %s: header X-Act: %s from local" % ("pass" if stopped else "warning", act),
                                timeout=30)
            qid = logged.group(1) if logged else None
            t.ok(qid is not None, "  header_checks %s is logged for the pickup service's mail" % act.upper())
            data = p.queued_bytes(qid) if qid and p.wait_log(r"pickup\[\d+\]: %s: from=<local@petrel\.test>, "
                                                             r"size=\d+, nrcpt=1 \(queued\)" % qid, timeout=30) else b""
            if stopped:
                t.ok(not milter_saw(f, case) and data and b"X-Test-Added" not in data,
                     "  PASS: the non_smtpd_milters milter got none of it and made no edit", data[:300])
            else:
                t.ok(milter_saw(f, case) and b"X-Test-Added: added by the test filter" in data,
                     "  WARN: the non_smtpd_milters milter got it and its edit is queued", data[:300])

t.done()
