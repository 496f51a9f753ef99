"""`petrelctl queue` (issue 4, Admin): list in mailq's exact format and as
postqueue -j JSON, show like postcat -q, delete/hold/release/requeue/flush by
ID, ALL and every selector, exit statuses, and a 20,000-message queue listed
in bounded memory.

Queue content comes from t/tools/make-queue (valid queue files written by the
daemon's own writer, deferred ones with defer/ID reasons, fast) and, once,
from a message sent over SMTP to a running petreld. petreld runs only where a
master is needed (flush, SMTP)."""
import json
import os
import re
import subprocess
import time

from harness import PETRELCTL, SANITIZED, Petrel, Tap, TOP_BUILDDIR, _runnable_copy, refused_port

MAKE_QUEUE = _runnable_copy(os.path.join(TOP_BUILDDIR, "t", "tools", "make-queue"))
REASON = "connect to mx.example.com[192.0.2.1]:25: Connection refused"

t = Tap()


def make(p, *args):
    """Runs make-queue (as the test user, so petrelctl and petreld can read
    what it writes) and returns the new queue IDs."""
    r = subprocess.run(p.command(MAKE_QUEUE, p.queue, *args), capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("make-queue failed: %s" % r.stderr)
    return r.stdout.split()


def where(p, qid):
    for d in ("incoming", "active", "deferred", "hold", "corrupt"):
        if os.path.exists(os.path.join(p.queue, d, qid)):
            return d
    return None


def ctl(p, *args, **kw):
    return p.petrelctl("queue", *args, **kw)


def asctime20(sec):
    return time.asctime(time.localtime(sec))[:20]


def jlist(p, *args):
    r = ctl(p, "list", "--json", *args)
    return [json.loads(line) for line in r.stdout.splitlines()]


# ---------------------------------------------------------------------------
# list: exact format, markers, reasons, sizes, totals, empty queue; JSON; show
with Petrel(t, start=False) as p:
    make(p, "-n", "0")
    r = ctl(p)
    t.is_((r.returncode, r.stdout), (0, "Mail queue is empty\n"), "an empty queue: Postfix's 'Mail queue is empty'")
    r = ctl(p, "list", "--json")
    t.is_((r.returncode, r.stdout), (0, ""), "an empty queue: no JSON lines")

    (act,) = make(p, "-d", "active", "-f", "", "-r", "x@example.com", "-s", "2000")
    (dfr,) = make(p, "-d", "deferred", "-f", "alice@example.org", "-r", "bob@example.com", "-r", "carol@example.net",
                  "-r", "dave@example.com", "-r", "erin@example.com", "-x", "1:delivered:2.0.0",
                  "-x", "0:deferred:4.4.1", "-D", "bob@example.com\t4.4.1\t" + REASON,
                  "-D", "erin@example.com\t4.4.1\t" + REASON, "-s", "1234")
    (hld,) = make(p, "-d", "hold", "-r", "y@example.com", "-s", "100")
    js = {o["queue_id"]: o for o in jlist(p)}
    t.is_(sorted(js), sorted([act, dfr, hld]), "--json: one object per message")
    arrival = {k: v["arrival_time"] for k, v in js.items()}
    pad = " " * 50
    want = ("-Queue ID-           --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
            "%s*    2000 %s MAILER-DAEMON\n" % (act, asctime20(arrival[act])) +
            pad + "x@example.com\n"
            "\n"
            "%s     1234 %s alice@example.org\n" % (dfr, asctime20(arrival[dfr])) +
            " " * (85 - len(REASON)) + "(" + REASON + ")\n" +
            pad + "bob@example.com\n" +
            pad + "erin@example.com\n" +
            " " * (85 - len("reason unavailable")) + "(reason unavailable)\n" +
            pad + "dave@example.com\n"
            "\n"
            "%s!     100 %s sender@example.org\n" % (hld, asctime20(arrival[hld])) +
            pad + "y@example.com\n"
            "\n"
            "-- 3 Kbytes in 3 Requests.\n")
    r = ctl(p, "list")
    t.is_(r.returncode, 0, "list exits 0")
    t.is_(r.stdout, want, "list: mailq's columns (ID column widened to 20), * active, ! hold, MAILER-DAEMON, "
          "deferred recipients first under their right-aligned reason, delivered ones omitted, totals")
    t.is_(ctl(p).stdout, want, "list is the default subcommand")

    o = js[dfr]
    t.is_([o["queue_name"], o["message_size"], o["forced_expire"], o["sender"]],
          ["deferred", 1234, False, "alice@example.org"], "--json: queue_name, message_size, forced_expire, sender")
    t.is_(o["recipients"], [{"address": "bob@example.com", "delay_reason": REASON},
                            {"address": "erin@example.com", "delay_reason": REASON},
                            {"address": "dave@example.com"}],
          "--json: undelivered recipients, delay_reason only where known")
    t.is_(js[act]["sender"], "MAILER-DAEMON", "--json: the null sender is MAILER-DAEMON, as postqueue -j says")
    t.ok(abs(o["arrival_time"] - time.time()) < 120, "--json: arrival_time is epoch seconds")
    raw = ctl(p, "list", "--json").stdout.splitlines()
    t.ok(raw and raw[0].startswith('{"queue_name": "active", "queue_id": "%s", "arrival_time": ' % act),
         "--json: postqueue -j's key order and spacing", raw[:1])

    r = ctl(p, "show", dfr)
    t.is_(r.returncode, 0, "show exits 0")
    out = r.stdout
    for want_line in ["*** ENVELOPE RECORDS deferred/%s ***" % dfr, "message_size: 1234", "sender: alice@example.org",
                      "named_attribute: log_client_name=client.example.org",
                      "named_attribute: log_client_address=192.0.2.7", "named_attribute: log_client_port=40123",
                      "named_attribute: log_helo_name=helo.example.org", "named_attribute: log_protocol_name=ESMTPS",
                      "named_attribute: tls=TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                      "dsn_envid: ENVID-test-1", "dsn_ret: HDRS", "dsn_orig_rcpt: rfc822;original@example.com",
                      "dsn_notify: SUCCESS FAILURE", "recipient: bob@example.com",
                      "recipient_status: deferred, dsn=4.4.1, reason=" + REASON,
                      "done_recipient: carol@example.net", "recipient_status: delivered, dsn=2.0.0",
                      "recipient: dave@example.com", "recipient_status: pending",
                      "*** MESSAGE CONTENTS deferred/%s ***" % dfr, "Subject: queue test",
                      "*** MESSAGE FILE END deferred/%s ***" % dfr]:
        t.ok(want_line in out.splitlines(), "show: %s" % want_line, out)
    body = out.split("*** MESSAGE CONTENTS deferred/%s ***\n" % dfr)[1].split("*** MESSAGE FILE END")[0]
    head = "From: <alice@example.org>\r\nTo: <bob@example.com>\r\nSubject: queue test\r\n\r\n"
    content = head + "".join("\r" if k % 62 == 60 else "\n" if k % 62 == 61 else "x" for k in range(1234 - len(head)))
    shown = content.replace("\r\n", "\n")
    t.is_(body, shown if shown.endswith("\n") else shown + "\n",
          "show: the whole content (as make-queue wrote it), CRLF shown as LF, a last partial line ended")
    t.ok("MESSAGE CONTENTS active/%s" % act in ctl(p, "show", "--sender", "<>").stdout, "show works with selectors")

    bad = "1K0ZZZZZZZZZZZZZ000"
    r = ctl(p, "show", bad)
    t.ok(r.returncode == 1 and bad in r.stderr, "show of an unknown ID: exit 1 naming it", r.stderr)
    r = ctl(p, "delete", act, bad)
    t.ok(r.returncode == 1 and bad in r.stderr and where(p, act) is None,
         "delete with one unknown ID: the others are deleted, exit 1 naming the unknown one", r.stderr)
    t.ok("Deleted: 1 message\n" in r.stderr, "postsuper-style summary on stderr", r.stderr)
    r = ctl(p, "hold", "not-an-id")
    t.ok(r.returncode == 1 and "not-an-id" in r.stderr, "a malformed ID: exit 1 naming it", r.stderr)
    for args in (["delete"], ["bogus"], ["list", "--older-than", "3x"], ["list", "--queue", "nope"],
                 ["show", "--json"], ["delete", "ALL", dfr], ["release", "--queue", "deferred"]):
        r = ctl(p, *args)
        t.is_(r.returncode, 2, "usage error exits 2: queue %s" % " ".join(args))

# ---------------------------------------------------------------------------
# actions by ID
with Petrel(t, start=False) as p:
    ids = make(p, "-n", "4", "-d", "deferred", "-D", "rcpt@example.com\t4.4.1\t" + REASON, "-m", "3600")
    a, b, c, d = ids
    r = ctl(p, "hold", a, b)
    t.ok(r.returncode == 0 and where(p, a) == "hold" and where(p, b) == "hold", "hold ID...: moved to hold/")
    t.is_(r.stderr, "petrelctl: Placed on hold: 2 messages\n", "hold summary")
    t.ok(ctl(p, "list", "--queue", "hold").stdout.count("!") == 2, "held messages are marked !")
    r = ctl(p, "release", a)
    st = os.stat(os.path.join(p.queue, "deferred", a))
    t.ok(r.returncode == 0 and where(p, a) == "deferred" and abs(st.st_mtime - time.time()) < 60,
         "release ID: back to deferred/ with mtime now (due at once)")
    t.is_(r.stderr, "petrelctl: Released from hold: 1 message\n", "release summary")
    r = ctl(p, "release", c)
    t.ok(r.returncode == 0 and where(p, c) == "deferred" and r.stderr == "",
         "release of a message not on hold: nothing to do, no error")
    r = ctl(p, "requeue", b, c)
    t.ok(r.returncode == 0 and where(p, b) == "incoming" and where(p, c) == "incoming",
         "requeue ID...: from hold/ and deferred/ to incoming/")
    t.ok(not os.path.exists(os.path.join(p.queue, "defer", c)), "requeue drops the old defer reasons")
    t.is_(r.stderr, "petrelctl: Requeued: 2 messages\n", "requeue summary")
    r = ctl(p, "delete", d)
    t.ok(r.returncode == 0 and where(p, d) is None and not os.path.exists(os.path.join(p.queue, "defer", d)),
         "delete ID: file and defer reasons gone")
    r = ctl(p, "delete", "ALL")
    t.ok(r.returncode == 0 and r.stderr == "petrelctl: Deleted: 3 messages\n" and not p.queue_files(),
         "delete ALL empties the queue", r.stderr)
    r = ctl(p, "delete", "ALL")
    t.ok(r.returncode == 0 and r.stderr == "", "delete ALL on an empty queue: silent, like postsuper")

    # corrupt/: listed and deleted only on request
    (x,) = make(p, "-d", "deferred")
    os.rename(os.path.join(p.queue, "deferred", x), os.path.join(p.queue, "corrupt", x))
    with open(os.path.join(p.queue, "corrupt", x), "r+b") as f:
        f.truncate(40)
    t.is_(ctl(p).stdout, "Mail queue is empty\n", "corrupt/ is not listed by default")
    r = ctl(p, "list", "--queue", "corrupt")
    t.ok(r.returncode == 0 and re.search(r"^%s      *40 .*\(damaged queue file: " % x, r.stdout, re.M),
         "list --queue corrupt shows the damaged file and why", r.stdout)
    r = ctl(p, "show", x)
    t.ok(r.returncode == 1 and "DAMAGED QUEUE FILE corrupt/%s" % x in r.stdout, "show of a damaged file says why, exit 1",
         r.stdout + r.stderr)
    r = ctl(p, "delete", "ALL")
    t.ok(r.returncode == 0 and where(p, x) == "corrupt", "delete ALL leaves corrupt/ alone")
    r = ctl(p, "delete", "ALL", "--queue", "corrupt")
    t.ok(r.returncode == 0 and where(p, x) is None, "delete ALL --queue corrupt removes it")
    (x,) = make(p, "-d", "corrupt")
    r = ctl(p, "delete", x)
    t.ok(r.returncode == 0 and where(p, x) is None, "delete ID works in corrupt/ too")

# ---------------------------------------------------------------------------
# selectors, with every command and with list
with Petrel(t, start=False) as p:
    alice = make(p, "-n", "3", "-d", "deferred", "-f", "Alice@Example.org", "-r", "u@example.com",
                 "-D", "u@example.com\t4.4.1\t" + REASON)
    bounce = make(p, "-n", "2", "-d", "deferred", "-f", "", "-r", "v@other.test",
                  "-D", "v@other.test\t4.7.1\thost mx.other.test said: 450 greylisted")
    old = make(p, "-n", "2", "-d", "active", "-a", "7200", "-r", "w@third.test")
    held = make(p, "-n", "1", "-d", "hold", "-r", "z@example.com")

    def listed(*sel):
        return sorted(o["queue_id"] for o in jlist(p, *sel))

    t.is_(listed("--sender", "alice@example.ORG"), sorted(alice), "--sender: exact, case-insensitive")
    t.is_(listed("--sender", "<>"), sorted(bounce), "--sender '<>': the null sender")
    t.is_(listed("--sender", "alice@example"), [], "--sender is not a substring match")
    t.is_(listed("--recipient-domain", "EXAMPLE.com"), sorted(alice + held), "--recipient-domain")
    t.is_(listed("--older-than", "1h"), sorted(old), "--older-than 1h")
    t.is_(listed("--older-than", "3h"), [], "--older-than 3h")
    t.is_(listed("--queue", "active"), sorted(old), "--queue active")
    t.is_(listed("--queue", "active,hold"), sorted(old + held), "--queue with a list")
    t.is_(listed("--reason", "GREYLISTED"), sorted(bounce), "--reason: substring of the defer reason")
    t.is_(listed("--reason", "refused", "--sender", "<>"), [], "selectors combine (AND)")
    r = ctl(p, "list", "--recipient-domain", "other.test")
    t.ok(r.stdout.endswith("-- 0 Kbytes in 2 Requests.\n"), "list totals count the selected messages", r.stdout)

    r = ctl(p, "hold", "--reason", "greylisted")
    t.ok(r.stderr == "petrelctl: Placed on hold: 2 messages\n" and all(where(p, i) == "hold" for i in bounce),
         "hold --reason", r.stderr)
    r = ctl(p, "release", "--sender", "<>")
    t.ok(r.stderr == "petrelctl: Released from hold: 2 messages\n" and all(where(p, i) == "deferred" for i in bounce)
         and where(p, held[0]) == "hold", "release --sender <> releases only those", r.stderr)
    r = ctl(p, "requeue", "--older-than", "1h")
    t.ok(r.stderr == "petrelctl: Requeued: 2 messages\n" and all(where(p, i) == "incoming" for i in old),
         "requeue --older-than", r.stderr)
    r = ctl(p, "hold", "ALL", "--queue", "incoming")
    t.ok(r.stderr == "petrelctl: Placed on hold: 2 messages\n" and all(where(p, i) == "hold" for i in old),
         "hold ALL --queue incoming", r.stderr)
    r = ctl(p, "requeue", "ALL", "--queue", "hold")
    t.ok(r.stderr == "petrelctl: Requeued: 3 messages\n" and all(where(p, i) == "incoming" for i in old + held),
         "requeue ALL --queue hold", r.stderr)
    r = ctl(p, "delete", "--recipient-domain", "example.com", "--queue", "deferred")
    t.ok(r.stderr == "petrelctl: Deleted: 3 messages\n" and all(where(p, i) is None for i in alice)
         and where(p, held[0]) == "incoming", "delete --recipient-domain D --queue deferred", r.stderr)
    r = ctl(p, "show", "--queue", "deferred")
    t.is_(r.stdout.count("*** ENVELOPE RECORDS deferred/"), 2, "show --queue deferred shows each match")
    r = ctl(p, "hold", "ALL")
    t.ok(r.stderr == "petrelctl: Placed on hold: 5 messages\n", "hold ALL takes incoming, active and deferred",
         r.stderr)
    r = ctl(p, "release", "ALL")
    t.ok(r.stderr == "petrelctl: Released from hold: 5 messages\n" and
         len(os.listdir(os.path.join(p.queue, "deferred"))) == 5, "release ALL", r.stderr)

    # flush without a master: the files are touched, and the command says the system is down
    for i in os.listdir(os.path.join(p.queue, "deferred")):
        path = os.path.join(p.queue, "deferred", i)
        os.utime(path, (time.time() + 7200, time.time() + 7200))
    r = ctl(p, "flush", "--sender", "<>")
    mt = {i: os.stat(os.path.join(p.queue, "deferred", i)).st_mtime for i in os.listdir(os.path.join(p.queue, "deferred"))}
    t.ok(all(abs(mt[i] - time.time()) < 60 for i in bounce) and
         all(mt[i] > time.time() + 3600 for i in mt if i not in bounce), "flush --sender <>: only those retried now")
    t.ok(r.returncode == 1 and "not running" in r.stderr, "flush without a master: says so, exit 1", r.stderr)
    r = ctl(p, "flush")
    t.ok(all(abs(os.stat(os.path.join(p.queue, "deferred", i)).st_mtime - time.time()) < 60 for i in mt),
         "flush: every deferred file's mtime is now")
    t.ok(r.returncode == 1 and "Flushed: 5 messages" in r.stderr, "flush reports the count", r.stderr)

# ---------------------------------------------------------------------------
# with a running master: flush reaches it; a message received over SMTP is listed
dead = refused_port()
with Petrel(t, main_cf={"relayhost": "[127.0.0.1]:%d" % dead}) as p:
    ids = make(p, "-n", "2", "-d", "deferred", "-m", "3600")
    r = ctl(p, "flush")
    # This master.cf has no qmgr line: the master says nobody can flush.
    t.ok(r.returncode == 1 and "no queue manager is running" in r.stderr,
         "flush with a running master but no queue manager: exit 1, says why", r.stderr)
    t.ok("not running" not in r.stderr, "flush with a running master reaches it", r.stderr)

    s = p.connect()
    reply = s.send_message("smtp-sender@example.org", ["far@example.com"], "Subject: hi\r\n\r\nhello")
    s.close()
    m = re.search(r"queued as (\S+)", reply)
    t.ok(m is not None, "message accepted over SMTP", reply)
    qid = m.group(1) if m else "?"
    deadline = time.time() + 30
    found = None
    while time.time() < deadline and found is None:
        found = next((o for o in jlist(p) if o["queue_id"] == qid), None)
        time.sleep(0.1)
    t.ok(found is not None and found["sender"] == "smtp-sender@example.org"
         and [x["address"] for x in found["recipients"]] == ["far@example.com"],
         "a message received over SMTP is listed with its sender and recipient", found)
    r = ctl(p, "show", qid)
    t.ok("named_attribute: log_client_address=127.0.0.1" in r.stdout and "hello" in r.stdout,
         "show of a message received over SMTP: client and content", r.stdout[:2000])

# ---------------------------------------------------------------------------
# a 20,000-message queue streams in bounded memory
with Petrel(t, start=False) as p:
    n = 20000
    make(p, "-n", str(n // 2), "-d", "deferred", "-r", "a@example.com", "-r", "b@example.net",
         "-D", "a@example.com\t4.4.1\t" + REASON)
    make(p, "-n", str(n // 2), "-d", "active", "-r", "c@example.com")
    r = subprocess.run(p.command("/usr/bin/time", "-v", PETRELCTL, "-c", p.conf, "queue", "list"),
                       capture_output=True, text=True, timeout=300)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    t.ok(r.returncode == 0 and r.stdout.endswith(" Kbytes in %d Requests.\n" % n), "20,000 messages listed",
         r.stdout[-200:] + r.stderr[-500:])
    if SANITIZED:
        t.skip("listing 20,000 messages stays under 20 MB RSS", "AddressSanitizer's shadow memory")
    else:
        t.ok(rss is not None and int(rss.group(1)) < 20 * 1024, "listing 20,000 messages stays under 20 MB RSS",
             rss.group(0) if rss else r.stderr)
    t.is_(r.stdout.count("(%s)" % REASON), n // 2, "each deferred message shows its reason")
    r = ctl(p, "list", "--json", "--queue", "deferred")
    t.is_(len(r.stdout.splitlines()), n // 2, "--json --queue deferred: one line per message")
    r = ctl(p, "delete", "ALL", timeout=300)
    t.ok(r.returncode == 0 and r.stderr == "petrelctl: Deleted: %d messages\n" % n, "delete ALL of 20,000", r.stderr)

t.done()
