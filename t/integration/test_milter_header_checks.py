"""milter_header_checks (Postfix's cleanup_milter_header_checks) with a real
libmilter filter of our own (modules/milter/t/testfilter.c): the headers a
milter adds (ADDHEADER), inserts (INSHEADER) or changes (CHGHEADER) are
looked up in milter_header_checks, and the actions Postfix honours there
apply to the message: REJECT (the client gets the table's reply), HOLD (hold
queue), DISCARD (250, nothing queued), REPLACE, IGNORE, BCC, FILTER, WARN;
PREPEND is warned about as Postfix does, and so are bad BCC, FILTER and
REDIRECT arguments (ignored); after a REDIRECT later headers get no action.
A header no rule matches is written as the milter asked. header_checks does not see the milters' headers; milter_header_checks
does not see the message's own."""
import re

from harness import Petrel, Smtp, Tap, queue_id
from modlib import bundled_module_dir
from peers import TestFilter

t = Tap(timeout=300)
mods = bundled_module_dir("milter")


def send(p, body):
    c = Smtp(p.port)
    c.ehlo()
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<u@petrel.test>")
    c.cmd("DATA")
    c.send(body.encode())
    c.send(b"\r\n.\r\n")
    r = c.read_reply()
    c.cmd("QUIT")
    c.close()
    return r


def start(p, milters, rules, **more):
    """Starts p with the milter module, the milters (TestFilters) and
    milter_header_checks holding rules; more main.cf settings on top."""
    conf = dict(p.settings)
    conf.update({"modules": "milter", "module_directory": mods,
                 "smtpd_milters": " ".join(m.endpoint for m in milters),
                 "milter_header_checks": "regexp:" + p.write_file("milter_header_checks", rules)})
    conf.update(more)
    p.write_main_cf(conf)
    p.start()


MILTER_RULES = ("/^X-Test-Added: added by/ REJECT 5.7.1 Spam header from the milter\n"
                "/^X-Test-First:/ HOLD\n"
                "/^Subject: changed subject/ DISCARD\n"
                "/^X-Seen-By-Header-Checks:/ REJECT milter_header_checks saw the message's own header\n")
# header_checks matches the filter's folded header: it must not see it.
HEADER_RULES = "/^X-Test-Folded:/ REJECT header_checks saw a milter's header\n"

with TestFilter() as f:
    with Petrel(t, main_cf={}, start=False) as p:
        start(p, [f], MILTER_RULES, header_checks="regexp:" + p.write_file("header_checks", HEADER_RULES))

        # REJECT: the client gets the table's reply, nothing is queued
        before = len(p.queue_files())
        r = send(p, "Subject: do: addheader\r\nFrom: a@example.org\r\n\r\nbody\r\n")
        t.is_(r, "550 5.7.1 Spam header from the milter",
              "a milter's header that milter_header_checks REJECTs: the client gets the rule's reply")
        t.is_(len(p.queue_files()), before, "  and nothing is queued")
        t.ok(p.wait_log(r"milter-header-reject: header X-Test-Added: added by the test filter from "
                        r"\S+; from=<sender@example\.org> to=<u@petrel\.test> proto=ESMTP helo=<[^>]*>: "
                        r"5\.7\.1 Spam header from the milter") is not None,
             "  logged as Postfix's cleanup logs it (milter-header-reject)")

        # HOLD: an inserted header puts the message on hold
        r = send(p, "Subject: do: insheader\r\nFrom: a@example.org\r\n\r\nbody\r\n")
        qid = queue_id(r)
        t.ok(qid is not None, "a milter's header that milter_header_checks HOLDs: accepted", r)
        t.ok(qid and any(x.endswith("/" + qid) for x in p.queue_files("hold")), "  and in the hold queue",
             p.queue_files())
        t.ok(b"X-Test-First: inserted at the top\r\n" in p.queued_bytes(qid, "hold"),
             "  with the inserted header (HOLD keeps it)")
        t.ok(p.wait_log(r"milter-header-hold: header X-Test-First: inserted at the top") is not None,
             "  logged (milter-header-hold)")

        # DISCARD: a changed header; 250 and nothing queued
        before = len(p.queue_files())
        r = send(p, "Subject: do: chgheader\r\nFrom: a@example.org\r\n\r\nbody\r\n")
        t.like(r, r"^250 2\.0\.0 Ok: queued as ", "a changed header that milter_header_checks DISCARDs: 250")
        t.is_(len(p.queue_files()), before, "  and nothing is queued")
        t.ok(p.wait_log(r"milter-header-discard: header Subject: changed subject") is not None,
             "  logged (milter-header-discard)")

        # not matched: written as asked; header_checks does not see milter headers
        r = send(p, "Subject: do: accept\r\nFrom: a@example.org\r\n\r\nbody\r\n")
        qid = queue_id(r)
        t.ok(qid is not None, "a message the milter does not edit is accepted", r)
        r = send(p, "Subject: ordinary\r\nX-Seen-By-Header-Checks: yes\r\nFrom: a@example.org\r\n\r\nbody\r\n")
        t.ok(queue_id(r) is not None, "milter_header_checks does not look at the message's own headers", r)

        # not matched: written as the milter asked, although header_checks has a REJECT rule for it
        r = send(p, "Subject: do: foldheader\r\nFrom: a@example.org\r\n\r\nbody\r\n")
        qid = queue_id(r)
        t.ok(qid is not None, "header_checks does not see a header a milter adds (its REJECT rule did not fire)", r)
        t.ok(b"X-Test-Folded: first line\r\n\tsecond line\r\n" in p.queued_bytes(qid),
             "  a milter's header milter_header_checks does not match is delivered with the message")


# REPLACE, IGNORE, PREPEND (not implemented in Postfix either: a warning)
EDIT_RULES = ("/^X-Test-Added:/ REPLACE X-Replaced: by milter_header_checks\n"
              "/^X-Test-Folded:/ IGNORE\n"
              "/^X-Test-First:/ PREPEND X-Prepended: no\n")
with TestFilter() as f:
    with Petrel(t, main_cf={}, start=False) as p:
        start(p, [f], EDIT_RULES)
        r = send(p, "Subject: do: addheader foldheader insheader\r\nFrom: a@example.org\r\n\r\nbody\r\n")
        qid = queue_id(r)
        data = p.queued_bytes(qid)
        t.ok(qid is not None, "REPLACE, IGNORE, PREPEND: accepted", r)
        t.ok(b"X-Replaced: by milter_header_checks\r\n" in data and b"X-Test-Added" not in data,
             "  REPLACE writes the rule's header instead of the milter's", data[:600])
        t.ok(b"X-Test-Folded" not in data, "  IGNORE drops the milter's header")
        t.ok(b"X-Test-First: inserted at the top\r\n" in data and b"X-Prepended" not in data,
             "  PREPEND is not applied (as in Postfix); the header is written")
        t.ok(p.wait_log(r"the milter_header/body_checks prepend action is not implemented") is not None,
             "  and Postfix's warning is logged")


# After a REDIRECT no rule applies to later milter headers (Postfix's
# cleanup_milter_hbc_extend answers every action by keeping the header once
# CLEANUP_FLAG_FILTER_ALL is cleared): the IGNORE below is not applied.
END_RULES = ("/^X-Test-First:/ REDIRECT elsewhere@example.org\n"
             "/^X-Test-Added:/ IGNORE\n")
with TestFilter() as f:
    with Petrel(t, main_cf={}, start=False) as p:
        start(p, [f], END_RULES)
        r = send(p, "Subject: do: insheader addheader\r\nFrom: a@example.org\r\n\r\nbody\r\n")
        qid = queue_id(r)
        data = p.queued_bytes(qid)
        t.ok(qid is not None and p.wait_log(r"milter-header-redirect: header X-Test-First: inserted at the top "
                                            r"from .*: elsewhere@example\.org") is not None,
             "REDIRECT: accepted and logged", r)
        t.ok(b"X-Test-Added: added by the test filter\r\n" in data,
             "  a later milter header that an IGNORE rule matches is kept: the checks ended", data[:600])


# BCC, FILTER, WARN (the same bookkeeping as header_checks': checks_actions.c)
# apply and are logged as milter-header-ACTION; none ends the checks, so all
# three of one message's milter headers are acted on. A bad BCC, FILTER or
# REDIRECT argument is warned about, naming milter_header_checks, and
# ignored: the header is written and the message accepted unchanged.
ENVELOPE_RULES = ("/^X-Test-Added:/ BCC bcc@example.org\n"
                  "/^X-Test-Folded:/ FILTER smtp:[127.0.0.1]:10025\n"
                  "/^X-Test-First:/ WARN looked at it\n")
BAD_RULES = ("/^X-Test-Added:/ BCC <bcc@example.org>\n"
             "/^X-Test-Folded:/ FILTER no-colon\n"
             "/^X-Test-First:/ REDIRECT no-at-sign\n")
for rules, label in ((ENVELOPE_RULES, "good"), (BAD_RULES, "bad")):
    with TestFilter() as f:
        with Petrel(t, main_cf={}, start=False) as p:
            start(p, [f], rules)
            r = send(p, "Subject: do: addheader foldheader insheader\r\nFrom: a@example.org\r\n\r\nbody\r\n")
            qid = queue_id(r)
            data = p.queued_bytes(qid)
            origin = r"from \S+; from=<sender@example\.org> to=<u@petrel\.test> proto=ESMTP helo=<[^>]*>"
            if label == "good":
                t.ok(qid is not None, "BCC, FILTER, WARN in milter_header_checks: accepted", r)
                t.ok(p.wait_log(r"(?m)%s: milter-header-bcc: header X-Test-Added: added by the test filter %s: "
                                r"bcc@example\.org$" % (qid, origin)) is not None,
                     "  BCC is logged (milter-header-bcc)")
                t.ok(b"bcc@example.org" in data, "  and the queue file has the BCC recipient", data[:600])
                t.ok(p.wait_log(r"(?m)%s: milter-header-filter: header X-Test-Folded: first line\?\?\?second "
                                r"line %s: smtp:\[127\.0\.0\.1\]:10025$" % (qid, origin)) is not None,
                     "  FILTER is logged (milter-header-filter; the folded header's CR LF TAB are '?')",
                     re.findall(r".*milter-header-filter.*", p.log()))
                t.ok(p.wait_log(r"(?m)%s: milter-header-warning: header X-Test-First: inserted at the top %s: "
                                r"looked at it$" % (qid, origin)) is not None,
                     "  WARN is logged (milter-header-warning)",
                     re.findall(r".*milter-header-.*", p.log()))
                t.ok(b"X-Test-Added: added by the test filter\r\n" in data and
                     b"X-Test-First: inserted at the top\r\n" in data,
                     "  the headers are written as the milter asked", data[:600])
            else:
                t.ok(qid is not None, "bad BCC, FILTER, REDIRECT arguments in milter_header_checks: accepted", r)
                t.ok(p.wait_log(r'warning: bad BCC address "<bcc@example\.org>" in milter_header_checks map '
                                r'-- need user@domain') is not None, "  a bad BCC address: Postfix's warning")
                t.ok(p.wait_log(r"warning: bad FILTER command no-colon in milter_header_checks -- need "
                                r"transport:destination") is not None, "  a bad FILTER: Postfix's warning")
                t.ok(p.wait_log(r'warning: bad REDIRECT target "no-at-sign" in milter_header_checks map '
                                r'-- need user@domain') is not None, "  a bad REDIRECT: Postfix's warning")
                t.ok(not re.search(r"milter-header-(bcc|filter|redirect):", p.log()),
                     "  none of them is taken (nothing logged as done)")
                t.ok(b"bcc@example.org" not in data and b"no-at-sign" not in data,
                     "  the envelope is unchanged", data[:600])
                t.ok(b"X-Test-Added: added by the test filter\r\n" in data and
                     b"X-Test-First: inserted at the top\r\n" in data,
                     "  and the headers are written as the milter asked", data[:600])


# Two milters: a REJECT of the first one's header ends the chain (Postfix's
# cleanup answers the edit with the rejection, which ends milter8's message
# and milter_message's loop), so the second is not sent the message; after
# a DISCARD or a REDIRECT the edit succeeds and the second still is.
for action, outcome in (("REJECT 5.7.1 chain ends", r"^550 5\.7\.1 chain ends$"),
                        ("DISCARD", r"^250 2\.0\.0 Ok: queued as "),
                        ("REDIRECT elsewhere@example.org", r"^250 2\.0\.0 Ok: queued as ")):
    with TestFilter() as f1, TestFilter() as f2:
        with Petrel(t, main_cf={}, start=False) as p:
            start(p, [f1, f2], "/^X-Test-Added:/ %s\n" % action)
            r = send(p, "Subject: do: addheader\r\nX-Chain: one\r\n\r\nbody\r\n")
            word = action.split()[0]
            t.like(r, outcome, "two milters, %s of the first one's header: the action's outcome" % word)
            t.ok("header X-Chain=[one]" in f1.log(), "  the first milter got the message")
            seen = "header X-Chain=[one]" in f2.log()
            if word == "REJECT":
                t.ok(not seen, "  the second milter is not sent the message (the chain ends)", f2.log()[-5:])
            else:
                t.ok(seen, "  the second milter is still sent the message")


t.done()
