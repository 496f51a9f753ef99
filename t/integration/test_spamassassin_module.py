"""The spamassassin module in petreld: the message to a private spamd
(local rules only, no network tests), no milter in between. GTUBE is tagged
as spamass-milter tags it, or rejected with spamassassin_reject_score; a
clean message gets X-Spam-Status: No; spamd down answers
spamassassin_failure_action; a message above spamassassin_max_size passes
unscanned; one that header_checks PASSed or DISCARDed goes to no spamd, as
no milter (spamass-milter) would get it in Postfix."""
import re

from harness import Petrel, Tap, wait_for
from modlib import bundled_module_dir
from peers import GTUBE, PeerError, Spamd, shared

t = Tap(timeout=400)
mods = bundled_module_dir("spamassassin")


def conf(spamd, **extra):
    c = {"modules": "spamassassin", "module_directory": mods, "spamassassin_spamd": spamd}
    c.update(extra)
    return c


def send(p, body):
    return p.send_message("sender@example.org", ["u@petrel.test"], body, quit=True)


SPAM = "Subject: spam\r\nFrom: a@example.org\r\nTo: u@petrel.test\r\n\r\nThis is spam.\r\n" + GTUBE
HAM = ("Subject: lunch\r\nFrom: a@example.org\r\nTo: u@petrel.test\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\n"
       "Message-ID: <lunch@example.org>\r\n\r\nShall we meet for lunch on Thursday at noon?\r\nBest, Sender")

try:
    spamd = shared(Spamd)
except PeerError as e:
    t.ok(False, "spamd runs", str(e))
    t.done()

with Petrel(t, main_cf=conf(spamd.endpoint)) as p:
    data = p.queued_message(send(p, SPAM))
    t.ok(data is not None and b"X-Spam-Flag: YES\r\n" in data, "GTUBE without a reject score: accepted, "
         "X-Spam-Flag: YES")
    t.ok(data is not None and re.search(rb"X-Spam-Status: Yes, score=1\d\d\d\.\d required=5\.0 tests=[^\r]*GTUBE",
                                        data) is not None,
         "  X-Spam-Status: Yes, score=... required=5.0 tests=...GTUBE... (spamass-milter's form)",
         data[:800] if data else None)
    t.ok(data is not None and re.search(rb"X-Spam-Score: 1\d\d\d\.\d\r\n", data) is not None, "  X-Spam-Score")
    data = p.queued_message(send(p, HAM))
    t.ok(data is not None and re.search(rb"X-Spam-Status: No, score=-?\d+\.\d required=5\.0", data) is not None
         and b"X-Spam-Flag" not in data, "a clean message: X-Spam-Status: No, no X-Spam-Flag")

with Petrel(t, main_cf=conf(spamd.endpoint, spamassassin_reject_score="-1")) as p:
    before = len(p.queue_files())
    t.is_(send(p, SPAM), "550 5.7.1 Blocked by SpamAssassin",
          "spamassassin_reject_score = -1: GTUBE rejected as spamass-milter -r -1 rejects it")
    t.is_(len(p.queue_files()), before, "  and not queued")
    t.ok(p.queued_message(send(p, HAM)) is not None, "  a clean message passes")
with Petrel(t, main_cf=conf(spamd.endpoint, spamassassin_reject_score="2000")) as p:
    t.ok(p.queued_message(send(p, SPAM)) is not None, "spamassassin_reject_score = 2000: GTUBE (1000) is only tagged")

with Petrel(t, main_cf=conf(spamd.endpoint, spamassassin_max_size="1024",
                            spamassassin_reject_score="-1")) as p:
    data = p.queued_message(send(p, SPAM + "\r\n" + "padding line\r\n" * 200))
    t.ok(data is not None and b"X-Spam-Status" not in data, "above spamassassin_max_size: not scanned, accepted")
    t.ok(p.wait_log(r"spamassassin: message not scanned: larger than spamassassin_max_size") is not None,
         "  and logged")


def spamd_requests():
    """The messages spamd was asked about, from its own log."""
    try:
        with open(spamd.path("spamd.log"), errors="replace") as f:
            return len(re.findall(r"spamd: checking message ", f.read()))
    except FileNotFoundError:
        return 0


# header_checks PASS or DISCARD takes the milters off the message (Postfix's
# CLEANUP_FLAG_FILTER_ALL): spamd, in spamass-milter's place, gets none of it.
with Petrel(t, main_cf={}, start=False) as p:
    c = dict(p.settings)
    c.update(conf(spamd.endpoint, spamassassin_reject_score="-1"))
    c["header_checks"] = "regexp:" + p.write_file("header_checks", "/^X-Act: pass$/ PASS\n/^X-Act: discard$/ DISCARD\n")
    p.write_main_cf(c)
    p.start()
    before = spamd_requests()
    r = send(p, "X-Act: pass\r\n" + SPAM)
    data = p.queued_message(r)
    t.ok(data is not None and b"X-Act: pass\r\n" in data and b"X-Spam-" not in data,
         "header_checks PASS: GTUBE is queued unscanned, without X-Spam headers (the reject score not applied)", r)
    t.ok(p.wait_log(r"spamassassin: message not scanned: header or body checks stopped the content inspection")
         is not None, "  logged as a message not scanned")
    queued = len(p.queue_files())
    r = send(p, "X-Act: discard\r\n" + SPAM)
    t.ok(r.startswith("250 ") and len(p.queue_files()) == queued, "header_checks DISCARD: 250, nothing kept", r)
    t.is_(spamd_requests(), before, "  spamd got neither message (its log shows no request)")
    t.is_(send(p, SPAM), "550 5.7.1 Blocked by SpamAssassin", "the same message without the action is scanned "
          "(and rejected)")
    t.ok(wait_for(lambda: spamd_requests() == before + 1, timeout=10), "  spamd logged that one request",
         spamd_requests() - before)

with Petrel(t, main_cf=conf("127.0.0.1:9")) as p:
    data = p.queued_message(send(p, SPAM))
    t.ok(data is not None and b"X-Spam-Status" not in data, "spamd down: spamassassin_failure_action accept "
         "(as spamc): the message passes unscanned")
    t.ok(p.wait_log(r"spamassassin: cannot scan the message: .*spamassassin_failure_action accept") is not None,
         "  logged with the reason")
with Petrel(t, main_cf=conf("127.0.0.1:9", spamassassin_failure_action="tempfail")) as p:
    t.is_(send(p, SPAM), "451 4.7.1 Service unavailable - try again later",
          "spamassassin_failure_action = tempfail: 451 4.7.1")

t.done()
