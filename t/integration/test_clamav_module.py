"""The clamav module in petreld: the message to a private clamd (INSTREAM, our
own signature database: EICAR and a test signature; no freshclam), no milter
in between. A finding is rejected or quarantined, a clean message tagged,
clamd down answers clamav_failure_action, a message above clamav_max_size
passes unscanned, a large body goes through the file spool, and a message
that header_checks PASSed or DISCARDed goes to no clamd, as no milter
(clamav-milter) would get it in Postfix."""
import re

from harness import Petrel, Tap, wait_for
from modlib import bundled_module_dir
from peers import EICAR, OWN_SIGNATURE, Clamd, PeerError, shared

t = Tap(timeout=300)
mods = bundled_module_dir("clamav")


def conf(clamd, **extra):
    c = {"modules": "clamav", "module_directory": mods, "clamav_clamd": clamd}
    c.update(extra)
    return c


def send(p, body):
    return p.send_message("sender@example.org", ["u@petrel.test"], body, quit=True)


try:
    clamd = shared(Clamd, stream_max="25M")
except PeerError as e:
    t.ok(False, "clamd runs", str(e))
    t.done()

with Petrel(t, main_cf=conf(clamd.endpoint)) as p:
    before = len(p.queue_files())
    r = send(p, "Subject: eicar\r\nFrom: a@example.org\r\n\r\n" + EICAR)
    t.is_(r, "554 5.7.1 Message rejected: infected with Eicar-Signature.UNOFFICIAL",
          "EICAR is rejected with the signature's name")
    t.is_(len(p.queue_files()), before, "  and not queued")
    t.ok(p.wait_log(r"clamav: infected: Eicar-Signature\.UNOFFICIAL") is not None, "  and logged")
    r = send(p, "Subject: own\r\n\r\nSome text with " + OWN_SIGNATURE + " inside.")
    t.is_(r, "554 5.7.1 Message rejected: infected with Petrel.Test.Signature.UNOFFICIAL",
          "our own .ndb signature in the body is found too")
    r = send(p, "Subject: clean\r\n\r\nnothing to see here")
    data = p.queued_message(r)
    t.ok(data is not None and b"X-Virus-Status: Clean\r\n" in data, "a clean message is queued with "
         "X-Virus-Status: Clean", r)
    big = "".join("clean line %06d, long enough to pass the memory bound of the spool\r\n" % i
                  for i in range(40000))
    r = send(p, "Subject: big\r\n\r\n" + big + EICAR)
    t.is_(r, "554 5.7.1 Message rejected: infected with Eicar-Signature.UNOFFICIAL",
          "EICAR at the end of a 2.8 MB body (past clamav_buffer_limit, read back from the file) is found")

with Petrel(t, main_cf=conf(clamd.endpoint, clamav_action="quarantine")) as p:
    r = send(p, "Subject: eicar\r\n\r\n" + EICAR)
    data = p.queued_message(r, "hold")
    t.ok(data is not None and b"X-Virus-Status: Infected (Eicar-Signature.UNOFFICIAL)" in data,
         "clamav_action = quarantine: accepted into the hold queue, with X-Virus-Status: Infected (...)", r)

with Petrel(t, main_cf=conf(clamd.endpoint, clamav_max_size="1024")) as p:
    r = send(p, "Subject: big\r\n\r\n" + "x" * 3000 + "\r\n" + EICAR)
    t.ok(p.queued_message(r) is not None, "above clamav_max_size: not scanned, accepted", r)
    t.ok(p.wait_log(r"clamav: message not scanned: larger than clamav_max_size") is not None, "  and logged")


def clamd_findings():
    """The findings clamd logged (it logs no clean scan): EICAR it was sent."""
    try:
        with open(clamd.path("clamd.log"), errors="replace") as f:
            return len(re.findall(r"Eicar-Signature\.UNOFFICIAL FOUND", f.read()))
    except FileNotFoundError:
        return 0


# header_checks PASS or DISCARD takes the milters off the message (Postfix's
# CLEANUP_FLAG_FILTER_ALL): clamd, in clamav-milter's place, gets none of it.
with Petrel(t, main_cf={}, start=False) as p:
    c = dict(p.settings)
    c.update(conf(clamd.endpoint))
    c["header_checks"] = "regexp:" + p.write_file("header_checks", "/^X-Act: pass$/ PASS\n/^X-Act: discard$/ DISCARD\n")
    p.write_main_cf(c)
    p.start()
    before = clamd_findings()
    r = send(p, "X-Act: pass\r\nSubject: eicar\r\n\r\n" + EICAR)
    data = p.queued_message(r)
    t.ok(data is not None and b"X-Act: pass\r\n" in data and b"X-Virus-Status" not in data,
         "header_checks PASS: EICAR is queued unscanned, without X-Virus-Status", r)
    t.ok(p.wait_log(r"clamav: message not scanned: header or body checks stopped the content inspection")
         is not None, "  logged as a message not scanned")
    queued = len(p.queue_files())
    r = send(p, "X-Act: discard\r\nSubject: eicar\r\n\r\n" + EICAR)
    t.ok(r.startswith("250 ") and len(p.queue_files()) == queued, "header_checks DISCARD: 250, nothing kept", r)
    t.is_(clamd_findings(), before, "  clamd found nothing in either: it was sent neither")
    r = send(p, "Subject: eicar\r\n\r\n" + EICAR)
    t.is_(r, "554 5.7.1 Message rejected: infected with Eicar-Signature.UNOFFICIAL",
          "the same message without the action is scanned and rejected")
    t.ok(wait_for(lambda: clamd_findings() == before + 1, timeout=10), "  clamd logged that finding",
         clamd_findings() - before)

with Petrel(t, main_cf=conf("127.0.0.1:9")) as p:
    r = send(p, "Subject: x\r\n\r\nbody")
    t.is_(r, "451 4.7.1 Service unavailable - try again later", "clamd down: clamav_failure_action tempfail")
    t.ok(p.wait_log(r"clamav: cannot scan the message: .*clamav_failure_action tempfail") is not None,
         "  logged with the reason")
with Petrel(t, main_cf=conf("127.0.0.1:9", clamav_failure_action="accept")) as p:
    r = send(p, "Subject: x\r\n\r\nbody")
    t.ok(p.queued_message(r) is not None, "clamav_failure_action = accept: the message passes unscanned", r)

t.done()
