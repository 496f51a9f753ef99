"""Memory for message content. When modules or header rewriting want the header
section, smtpd splits the content as it streams in (smtpd/cleanup.c with the MIME
parser, mail/mime.c), holding the current line and header field in buffers of up to
header_size_limit. Those
buffers belong to the transaction: a client that ends the transaction in the middle
of its header section (RSET between BDAT chunks, or a disconnect) must not leave
them behind, or every such transaction leaks up to 100 KiB in the worker."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Petrel, Tap  # noqa: E402

t = Tap()
# Under AddressSanitizer freed memory waits in a quarantine and would count as
# growth (doc/testing.md); no effect on normal builds.
os.environ["ASAN_OPTIONS"] = ":".join(x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=0") if x)
ROUNDS = 300
LINE = b"X-Long: " + b"x" * 60000   # no line end: the reader keeps it all


def rss_kb(p):
    total = 0
    for pid in p.worker_pids():
        with open("/proc/%d/status" % pid) as f:
            total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return total


def abandoned_transactions(c, n):
    """n transactions that end in their header section; None, or the reply that went wrong."""
    for i in range(n):
        for line, want in (("MAIL FROM:<s@example.org>", "250 2.1.0 Ok"), ("RCPT TO:<r@remote.test>", "250 2.1.5 Ok")):
            r = c.cmd(line)
            if r != want:
                return "%d: %s: %s" % (i, line, r)
        c.send(b"BDAT %d\r\n" % len(LINE) + LINE)
        r = c.read_reply()
        if r != "250 2.0.0 Ok: %d bytes" % len(LINE):
            return "%d: BDAT: %s" % (i, r)
        r = c.cmd("RSET")
        if r != "250 2.0.0 Ok":
            return "%d: RSET: %s" % (i, r)
    return None


# canonical_maps makes smtpd read the header section (to rewrite addresses in it);
# RSET is a junk command (Postfix's smtpd_junk_command_limit): allow this many.
with Petrel(t, workers=1, main_cf={"canonical_maps": "inline:{ {a@example.org = b@example.org} }",
                                   "smtpd_junk_command_limit": "100000"}) as p:
    c = p.connect()
    c.ehlo()
    r = abandoned_transactions(c, 20)
    t.ok(r is None, "BDAT chunks inside the header section, then RSET, are accepted", r)
    before = rss_kb(p)
    r = abandoned_transactions(c, ROUNDS)
    grown = rss_kb(p) - before
    t.ok(r is None, "%d more such transactions" % ROUNDS, r)
    t.ok(grown < 8 * 1024, "the worker does not grow with abandoned header sections",
         "grew by %d KiB over %d transactions" % (grown, ROUNDS))
    # The reader still works for a message that is completed.
    r = c.send_message("a@example.org", ["r@remote.test"],
                       "From: a@example.org\r\nSubject: x\r\n\r\nbody", ehlo=False)
    t.like(r, r"^250 2\.0\.0 Ok: queued as ", "a complete message is still accepted")
    c.close()
t.done()
