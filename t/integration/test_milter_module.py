"""The milter module in petreld: Postfix's smtpd_milters with real milters
on loopback. Our libmilter filter (modules/milter/t/testfilter.c) for every
edit and verdict, two milters in a chain, a milter that is down, one that
sends garbage, one that hangs, a body past milter_buffer_limit (spilled to a
file), spamass-milter + spamd (GTUBE rejected), clamav-milter + clamd with
our own signature database (EICAR rejected); per-service lists (master.cf
-o smtpd_milters, -o milter_*); and the configuration rules: no milter list
without the module, a bad per-service list named by its master.cf line."""
import os
import re
import subprocess

from harness import PETRELD, TOP_BUILDDIR, Petrel, Smtp, Tap, _runnable_copy, queue_id, refused_port
from modlib import bundled_module_dir
from modlib import smtp_from
from peers import (EICAR, GTUBE, ClamavMilter, Clamd, OpenDKIM, PeerError, ScriptedMilter, SpamassMilter, Spamd,
                   TestFilter, fnv1a64, milter_packet as pkt, shared)

t = Tap(timeout=600)
mods = bundled_module_dir("milter")


def conf(milters, **extra):
    c = {"modules": "milter", "module_directory": mods, "smtpd_milters": milters}
    c.update(extra)
    return c


def send(p, body, sender="sender@example.org", rcpts=("u@petrel.test",)):
    """One transaction; returns (the replies to MAIL, each RCPT, DATA and the end of data)."""
    c = Smtp(p.port)
    c.ehlo()
    out = [c.cmd("MAIL FROM:<%s>" % sender)]
    for r in rcpts:
        out.append(c.cmd("RCPT TO:<%s>" % r))
    out.append(c.cmd("DATA"))
    if c.code == 354:
        c.send(body.encode() if isinstance(body, str) else body)
        c.send(b"\r\n.\r\n")
        out.append(c.read_reply())
    c.cmd("QUIT")
    c.close()
    return out


# --- configuration -------------------------------------------------------------
def check_config(main_cf, master_cf=None):
    p = Petrel(t, main_cf=main_cf, master_cf=master_cf, start=False)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


rc, out = check_config({"smtpd_milters": "inet:127.0.0.1:9"})
t.ok(rc != 0 and "smtpd_milters is set but the milter module is not loaded: mail will NOT be filtered" in out,
     "smtpd_milters without the milter module stops the start (mail would go unfiltered)", out)
rc, out = check_config({"smtpd_milter_maps": "inline:{127.0.0.1=inet:127.0.0.1:9}"})
t.ok(rc != 0 and "smtpd_milter_maps is set but the milter module is not loaded" in out,
     "smtpd_milter_maps without the milter module stops the start", out)
rc, out = check_config(conf("inet:127.0.0.1:9", milter_buffer_limit="2097152"))
t.ok(rc == 0 and "milter_buffer_limit = 2097152 has no effect: the message is read from the queue file and no copy "
     "is kept in memory (remove it from main.cf)" in out,
     "milter_buffer_limit (no effect since the body is read from the queue file) is accepted with a warning", out)
rc, out = check_config(conf("inet:127.0.0.1:9"))
t.ok(rc == 0 and "buffer_limit" not in out, "and not mentioned when it is not set", out)
rc, out = check_config(conf("inet:127.0.0.1:9"), master_cf="127.0.0.1:2525 inet n - n - - smtpd\n"
                       "127.0.0.1:2526 inet n - n - - smtpd -o smtpd_milters=inet:127.0.0.1:10 "
                       "-o milter_default_action=accept -o milter_command_timeout=5s\n")
t.ok(rc == 0, "a per-service smtpd_milters and milter_* (master.cf -o) are accepted", out)
rc, out = check_config(conf("inet:127.0.0.1:9"), master_cf="127.0.0.1:2525 inet n - n - - smtpd\n"
                       "127.0.0.1:2526 inet n - n - - smtpd -o smtpd_milters=bogus:127.0.0.1:10\n")
t.ok(rc != 0 and re.search(r"master\.cf, line 2: service 127\.0\.0\.1:2526: smtpd_milters: .*unknown transport "
                           r"\"bogus\"", out) is not None and "main.cf" not in out.replace("/main.cf: a module", ""),
     "a bad per-service smtpd_milters is refused, naming its master.cf line", out)
rc, out = check_config(conf("inet:127.0.0.1:9"), master_cf="127.0.0.1:2525 inet n - n - - smtpd\n"
                       "127.0.0.1:2526 inet n - n - - smtpd -o smtpd_milters={inet:127.0.0.1:10,connect_timeot=5s}\n")
t.ok(rc != 0 and re.search(r"master\.cf, line 2: service 127\.0\.0\.1:2526: smtpd_milters: .*unknown setting "
                           r"\"connect_timeot\"", out) is not None,
     "a bad per-milter setting in a per-service list is refused, naming its master.cf line", out)
rc, out = check_config(conf("inet:127.0.0.1:9"), master_cf="127.0.0.1:2525 inet n - n - - smtpd\n"
                       "127.0.0.1:2525 pass n - n - - smtpd -o smtpd_milters=inet:127.0.0.1:10\n")
t.ok(rc != 0 and re.search(r"master\.cf, line 2: service 127\.0\.0\.1:2525: smtpd_milters = inet:127\.0\.0\.1:10: "
                           r"another service called 127\.0\.0\.1:2525 \(\S+master\.cf, line 1\) sets smtpd_milters = "
                           r"inet:127\.0\.0\.1:9", out) is not None,
     "two smtpd services of one name with different milter lists are refused (the module knows services by name)",
     out)
rc, out = check_config(conf("{ inet:127.0.0.1:9, connect_timeot=5s }"),
                       master_cf="127.0.0.1:2525 inet n - n - - smtpd\n127.0.0.1:2526 inet n - n - - smtpd\n")
t.ok(rc != 0 and len(re.findall(r"unknown setting", out)) == 1, "a bad main.cf list that several services use is "
     "reported once", out)
rc, out = check_config(conf("inet:127.0.0.1:9"), master_cf="127.0.0.1:2525 inet n - n - - smtpd\n"
                       "127.0.0.1:2526 inet n - n - - smtpd -o receive_override_options=no_milters\n"
                       "127.0.0.1:2527 inet n - n - - smtpd -o smtpd_milters=\n")
t.is_(rc, 0, "no_milters and an empty -o smtpd_milters= are accepted (they turn milters off)")
rc, out = check_config(conf("{ inet:127.0.0.1:9, default_action=maybe }"))
t.ok(rc != 0 and "milter_default_action: unknown action \"maybe\"" in out, "a bad per-milter default_action "
     "is named", out)
rc, out = check_config(conf("{ inet:127.0.0.1:9, connect_timeot=5s }"))
t.ok(rc != 0 and "unknown setting \"connect_timeot\"" in out, "a misspelt per-milter setting is named", out)
rc, out = check_config(conf("inet:127.0.0.1:9", milter_protocol="5"))
t.ok(rc != 0 and "milter_protocol" in out, "milter_protocol = 5 is refused", out)

# --- every edit, in the queued message -----------------------------------------
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        body = ("Subject: do: addheader insheader foldheader chgheader delheader chgfrom addrcpt delrcpt\r\n"
                "X-Delete-Me: yes\r\nFrom: a@example.org\r\n\r\nthe original body\r\n")
        r = send(p, body, rcpts=("u@petrel.test", "rcpt@example.org"))
        qid = queue_id(r[-1])
        t.ok(qid is not None, "a message edited by the milter is accepted", r)
        data = p.queued_bytes(qid)
        t.ok(b"X-Test-Added: added by the test filter\r\n" in data, "ADDHEADER applied")
        hdrs = data[data.find(b"Received: "):]
        t.ok(b"X-Test-First: inserted at the top\r\n" in hdrs and hdrs.find(b"X-Test-First") < hdrs.find(b"From:"),
             "INSHEADER at index 0 applied above the message's headers", hdrs[:400])
        t.ok(b"X-Test-Folded: first line\r\n\tsecond line\r\n" in data, "a folded header added with CRLF")
        t.ok(b"Subject: changed subject\r\n" in data, "CHGHEADER applied")
        t.ok(b"X-Delete-Me" not in data, "CHGHEADER with no value deletes the header")
        t.ok(b"new-sender@example.net" in data and b"sender@example.org" not in data.replace(b"new-sender", b""),
             "CHGFROM applied to the envelope")
        t.ok(b"added@example.org" in data, "ADDRCPT applied")
        t.ok(b"rcpt@example.org" not in data, "DELRCPT applied")
        t.ok(b"the original body" in data, "the body is unchanged without REPLBODY")

        r = send(p, "Subject: do: replbody\r\n\r\noriginal\r\n")
        data = p.queued_bytes(queue_id(r[-1]))
        t.ok(b"This body was replaced.\r\nSecond line.\r\n" in data and b"original" not in data, "REPLBODY applied")

        r = send(p, "Subject: do: quarantine\r\n\r\nhold me\r\n")
        qid = queue_id(r[-1])
        t.ok(qid and any(x.endswith("/" + qid) for x in p.queue_files("hold")),
             "QUARANTINE puts the message in the hold queue", r)
        t.ok(p.wait_log(r"milter-hold: held by the test filter") is not None, "and logs the reason")

        # verdicts at end of message: the client gets the milter's reply exactly
        for what, want in (("reject", "550 5.7.1 Command rejected"),
                           ("tempfail", "451 4.7.1 Service unavailable - try again later"),
                           ("replycode", "554 5.7.1 Rejected by the test filter: 100% sure")):
            before = len(p.queue_files())
            r = send(p, "Subject: do: %s\r\n\r\nbody\r\n" % what)
            t.is_(r[-1], want, "SMFIR_%s at end of message: %s" % (what.upper(), want))
            t.is_(len(p.queue_files()), before, "  and nothing is queued")
        r = send(p, "Subject: do: multiline\r\n\r\nbody\r\n")
        t.is_(r[-1], "450 4.7.0 third line", "a multi-line reply reaches the client whole (its last line here; "
              "test_milter_session.py checks every line)")
        before = len(p.queue_files())
        r = send(p, "Subject: do: discard\r\n\r\nbody\r\n")
        t.like(r[-1], r"^250 ", "DISCARD: the client is told 250")
        t.is_(len(p.queue_files()), before, "  and the message is dropped")
        r = send(p, "Subject: do: accept addheader\r\n\r\nbody\r\n")
        t.ok(queue_id(r[-1]) and b"X-Test-Added" in p.queued_bytes(queue_id(r[-1])),
             "ACCEPT after an edit: queued, edited")

        # per recipient
        r = send(p, "Subject: hi\r\n\r\nbody\r\n", rcpts=("reject-me@example.org", "u@petrel.test"))
        t.is_(r[1], "550 5.7.1 Command rejected", "a recipient the milter rejects gets 550 5.7.1")
        t.like(r[2], r"^250 ", "  the next one passes")
        t.ok(queue_id(r[-1]) is not None, "  and the message goes to the other one")
        r = send(p, "Subject: hi\r\n\r\nbody\r\n", rcpts=("tempfail-me@example.org",))
        t.is_(r[1], "451 4.7.1 Service unavailable - try again later", "a recipient the milter tempfails gets 451")

        # a big body: past milter_buffer_limit it goes to an unlinked file
        big = "".join("line %06d of a long message, to spill past the memory bound\r\n" % i
                      for i in range(60000))
        r = send(p, "Subject: big\r\n\r\n" + big)
        t.ok(queue_id(r[-1]) is not None, "a 3.6 MB message passes through the milter", r)
        want = "eom bytes=%d" % len(big.encode() + b"\r\n")
        eoms = [ln for ln in f.log() if ln.startswith("eom bytes=")]
        t.ok(eoms and eoms[-1].startswith(want) and ("fnv=" + fnv1a64(big.encode() + b"\r\n")) in eoms[-1],
             "  the milter saw every body byte, in order (%s)" % want, eoms[-1:])
        t.ok(not os.listdir(os.path.join(p.queue, "incoming")) or
             all(not n.startswith("milter.") for n in os.listdir(os.path.join(p.queue, "incoming"))),
             "  and no temporary file is left behind")

        log = f.log()
        t.ok(any(ln.startswith("macro connect j=mx.petrel.test") for ln in log)
             and any(ln.startswith("macro mail {mail_addr}=sender@example.org") for ln in log)
             and any(ln.startswith("macro rcpt {rcpt_addr}=u@petrel.test") for ln in log)
             and any(re.match(r"macro (eoh|eom) i=\S+", ln) for ln in log),
             "Postfix's macros: j, {mail_addr}, {rcpt_addr}, i", "\n".join(log[:40]))

# --- verdicts before DATA -------------------------------------------------------
with TestFilter(verdicts={"connect": "reject"}) as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        c = Smtp(p.port, read_greeting=False)
        t.is_(c.read_reply(), "554 mx.petrel.test ESMTP not accepting connections",
              "a milter that rejects at CONNECT: Postfix's greeting")
        t.is_(c.cmd("EHLO client.example.org"), "550 5.7.1 Command rejected", "  the session stays: EHLO gets the "
              "milter's reply")
        t.is_(c.cmd("MAIL FROM:<a@example.org>"), "550 5.7.1 Command rejected", "  MAIL too")
        t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "  NOOP is answered")
        t.like(c.cmd("QUIT"), r"^221 ", "  and QUIT")
        c.close()
        t.ok(p.wait_log(r"reject: CONNECT from \S+: 550 5\.7\.1 Command rejected") is not None, "  logged")
with TestFilter(verdicts={"mail": "reply:553:5.1.8:Sender domain not accepted here"}) as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        r = send(p, "Subject: x\r\n\r\nbody\r\n")
        t.is_(r[0], "553 5.1.8 Sender domain not accepted here", "a custom reply at MAIL reaches the client exactly")

# --- two milters in a chain: the second sees the first one's edits --------------
with TestFilter() as f1, TestFilter() as f2:
    with Petrel(t, main_cf=conf("%s, %s" % (f1.endpoint, f2.endpoint))) as p:
        r = send(p, "Subject: do: chgheader addheader\r\n\r\nbody\r\n")
        t.ok(queue_id(r[-1]) is not None, "two milters: accepted", r)
        seen = [ln for ln in f2.log() if ln.startswith("header ")]
        t.ok("header Subject=[changed subject]" in seen and "header X-Test-Added=[added by the test filter]" in seen,
             "the second milter sees the headers as the first one changed them", seen)
        # REPLBODY streams into petrel_body_replace_*; the next milter reads the new body.
        r = send(p, "Subject: do: replbody_big\r\n\r\nthe original body\r\n")
        qid = queue_id(r[-1])
        t.ok(qid is not None, "two milters that replace the body: accepted", r)
        big = bytes(13 if i % 100 == 98 else 10 if i % 100 == 99 else 97 + i % 26 for i in range(200000))
        eoms = [ln for ln in f2.log() if ln.startswith("eom bytes=")]
        t.ok(eoms and eoms[-1].startswith("eom bytes=200000 ") and ("fnv=" + fnv1a64(big)) in eoms[-1],
             "the second milter is sent the body the first one's REPLBODY wrote", eoms[-1:])
        data = p.queued_bytes(qid) if qid else b""
        t.ok(b"\r\n\r\n" + big in data and b"the original body" not in data, "and that body is queued")

# --- a milter that is down ----------------------------------------------------------
dead_port = refused_port()   # refuses for the whole test: no other test's listener can take it
down = "inet:127.0.0.1:%d" % dead_port
with Petrel(t, main_cf=conf(down)) as p:
    r = send(p, "Subject: x\r\n\r\nbody\r\n")
    t.is_(r[0], "451 4.7.1 Service unavailable - try again later",
          "a milter that is down: milter_default_action (tempfail) answers MAIL, as Postfix")
    t.ok(p.wait_log(r"milter inet:127\.0\.0\.1:%d: .*default_action tempfail" % dead_port) is not None,
         "  and says so in the log")
with Petrel(t, main_cf=conf(down, milter_default_action="reject")) as p:
    c = Smtp(p.port, read_greeting=False)
    t.is_(c.read_reply(), "554 mx.petrel.test ESMTP not accepting connections",
          "milter_default_action = reject: the greeting refuses (Postfix's)")
    t.is_(c.cmd("HELO client.example.org"), "550 5.5.0 Service unavailable", "  and every command gets the "
          "default action's reply")
    c.close()
with Petrel(t, main_cf=conf("{ %s, default_action=accept }" % down)) as p:
    r = send(p, "Subject: x\r\n\r\nbody\r\n")
    t.ok(queue_id(r[-1]) is not None, "the per-milter { ..., default_action=accept } form: mail passes", r)

# --- bad replies: the default action, with an exact reply ---------------------------
UNAVAILABLE = "451 4.7.1 Service unavailable - try again later"
for name, replies, where, want in (
        ("garbage", {"M": b"\xff\xff\xff\xffgarbage"}, 0, UNAVAILABLE),
        ("an oversize packet", {"E": pkt("h", b"X-Big\0" + b"v" * 1100000 + b"\0")}, -1, UNAVAILABLE),
        ("a disconnect in mid-reply", {"E": b"\0\0\0\x20hX-Half"}, -1, UNAVAILABLE),
        # Postfix's answer to a milter whose reply is malformed: a configuration problem
        ("a 2xx REPLYCODE", {"R": pkt("y", b"250 2.0.0 fine\0")}, 1,
         "451 4.3.5 Server configuration problem - try again later")):
    with ScriptedMilter(replies=replies) as m:
        if name == "a disconnect in mid-reply":
            m.replies["E"] = "close"
        with Petrel(t, main_cf=conf(m.endpoint)) as p:
            r = send(p, "Subject: x\r\n\r\nbody\r\n")
            t.is_(r[where], want, "a milter that sends %s: default action, exact reply" % name)
            r = send(p, "Subject: x\r\n\r\nbody\r\n")
            t.ok(len(r) >= 1, "  and the server keeps serving", r)

# --- a milter that hangs: the command timeout, then the default action ----------------
with ScriptedMilter(replies={"M": "hang"}) as m:
    with Petrel(t, main_cf=conf(m.endpoint, milter_command_timeout="2s")) as p:
        r = send(p, "Subject: x\r\n\r\nbody\r\n")
        t.is_(r[0], "451 4.7.1 Service unavailable - try again later",
              "a milter that never answers: milter_command_timeout, then the default action")
        t.ok(p.wait_log(r"milter inet:127\.0\.0\.1:\d+: .*time.*out") is not None, "  logged as a timeout")
        m.stopping = True

# --- no_milters turns the module off for a service -------------------------------------
with TestFilter(verdicts={"mail": "reject"}) as f:
    p = Petrel(t, main_cf=conf(f.endpoint), start=False)
    from harness import free_port
    port2 = free_port()
    p.master_cf += "127.0.0.1:%d inet n - n - - smtpd -o receive_override_options=no_milters\n" % port2
    with open(os.path.join(p.conf, "master.cf"), "w") as fh:
        fh.write(p.master_cf)
    p.start()
    p.wait_listening(port2)
    try:
        r = send(p, "Subject: x\r\n\r\nbody\r\n")
        t.is_(r[0], "550 5.7.1 Command rejected", "the service with milters: the milter rejects MAIL")
        port1 = p.port
        p.port = port2
        r = send(p, "Subject: x\r\n\r\nbody\r\n")
        p.port = port1
        t.ok(queue_id(r[-1]) is not None, "the no_milters service: no milter is asked", r)
    finally:
        p.stop()

# --- per-service milter lists (master.cf -o): each service talks to its own chain ------
with TestFilter() as f1, TestFilter() as f2:
    from harness import free_port
    ports = [free_port() for _ in range(4)]
    p = Petrel(t, main_cf=conf(""), start=False, master_cf=(
        "127.0.0.1:%d inet n - n - - smtpd -o smtpd_milters=%s\n"
        "127.0.0.1:%d inet n - n - - smtpd -o smtpd_milters=%s -o milter_macro_daemon_name=second\n"
        "127.0.0.1:%d inet n - n - - smtpd -o smtpd_milters=%s -o milter_default_action=accept\n"
        "127.0.0.1:%d inet n - n - - smtpd -o smtpd_milters=%s\n"
        % (ports[0], f1.endpoint, ports[1], f2.endpoint, ports[2], down, ports[3], down)))
    p.port = ports[0]
    p.start()
    for port in ports[1:]:
        p.wait_listening(port)
    try:
        replies = {}
        for i, port in enumerate(ports):
            p.port = port
            replies[i] = send(p, "Subject: to listener %d\r\n\r\nbody\r\n" % i)
        p.port = ports[0]
        t.ok(queue_id(replies[0][-1]) and queue_id(replies[1][-1]), "both listeners with a milter accept", replies)
        seen1 = [ln for ln in f1.log() if ln.startswith("header Subject")]
        seen2 = [ln for ln in f2.log() if ln.startswith("header Subject")]
        t.ok(seen1 == ["header Subject=[to listener 0]"], "the first listener's -o smtpd_milters: only its milter "
             "saw its mail, and only its own", seen1)
        t.ok(seen2 == ["header Subject=[to listener 1]"], "the second listener's -o smtpd_milters: the same", seen2)
        t.ok("macro connect {daemon_name}=second" in f2.log() and
             not any(ln.startswith("macro connect {daemon_name}=second") for ln in f1.log()),
             "-o milter_macro_daemon_name applies to its service's sessions only",
             [ln for ln in f1.log() + f2.log() if "daemon_name" in ln])
        t.ok(queue_id(replies[2][-1]) is not None, "-o milter_default_action=accept applies to its service's milter "
             "that is down", replies[2])
        t.is_(replies[3][0], "451 4.7.1 Service unavailable - try again later",
              "  while another service with that milter keeps main.cf's milter_default_action (tempfail)")
    finally:
        p.stop()

# --- non_smtpd_milters: local mail (petrel-sendmail through pickup) ---------------------
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
with TestFilter() as f:
    p = Petrel(t, main_cf=conf("", non_smtpd_milters=f.endpoint, command_directory=os.path.dirname(POSTDROP)),
               extra_services="pickup unix n - n 60 1 pickup\n")
    try:
        r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-f", "local@petrel.test", "u@petrel.test"),
                           input=b"Subject: do: addheader\n\nfrom a local user\n", capture_output=True, timeout=30)
        t.is_(r.returncode, 0, "petrel-sendmail hands a message to the maildrop")
        # The queue file pickup committed (the log's "queued" line), not the
        # first one that an edit replaces: polling the queue could see that.
        m = p.wait_log(r"pickup\[\d+\]: (\w+): from=<local@petrel\.test>, size=\d+, nrcpt=1 \(queued\)", timeout=30)
        data = p.queued_bytes(m.group(1)) if m else b""
        t.ok(b"from a local user" in data and b"X-Test-Added: added by the test filter" in data,
             "non_smtpd_milters: the pickup service's mail goes through the milter and gets its edit")
        r = send(p, "Subject: do: addheader\r\n\r\nby smtp\r\n")
        qid = queue_id(r[-1])
        t.ok(qid and b"X-Test-Added" not in p.queued_bytes(qid), "with smtpd_milters empty, SMTP mail meets no milter")
    finally:
        p.stop()

# --- real scanners: spamass-milter + spamd, clamav-milter + clamd ------------------------
try:
    spamd = shared(Spamd)
    with SpamassMilter(spamd, reject=True) as sm:
        with Petrel(t, main_cf=conf(sm.endpoint)) as p:
            r = send(p, "Subject: spam\r\nFrom: a@example.org\r\n\r\nThis is spam.\r\n" + GTUBE + "\r\n")
            t.is_(r[-1], "550 5.7.1 Blocked by SpamAssassin", "spamass-milter -r -1 + spamd: GTUBE rejected")
            r = send(p, "Subject: lunch\r\nFrom: a@example.org\r\n\r\nShall we meet for lunch on Thursday?\r\n")
            qid = queue_id(r[-1])
            t.ok(qid and re.search(rb"X-Spam-Status: No, score=", p.queued_bytes(qid)),
                 "  a clean message passes, tagged X-Spam-Status: No", r)
    with SpamassMilter(spamd, reject=False) as sm:
        with Petrel(t, main_cf=conf(sm.endpoint)) as p:
            r = send(p, "Subject: spam\r\nFrom: a@example.org\r\n\r\nThis is spam.\r\n" + GTUBE + "\r\n")
            qid = queue_id(r[-1])
            data = p.queued_bytes(qid)
            t.ok(qid and b"X-Spam-Flag: YES\r\n" in data and b"Spam detection software" in data,
                 "spamass-milter without -r: GTUBE tagged and its body replaced by the report", r)
except PeerError as e:
    t.ok(False, "spamd and spamass-milter run", str(e))
try:
    clamd = shared(Clamd)
    with ClamavMilter(clamd, on_infected="Reject") as cm:
        with Petrel(t, main_cf=conf(cm.endpoint)) as p:
            before = len(p.queue_files())
            r = send(p, "Subject: eicar\r\nFrom: a@example.org\r\n\r\n" + EICAR + "\r\n")
            t.is_(r[-1], "550 5.7.1 Command rejected",
                  "clamav-milter OnInfected Reject + clamd (our local signatures): EICAR rejected")
            t.is_(len(p.queue_files()), before, "  and not queued")
            r = send(p, "Subject: clean\r\nFrom: a@example.org\r\n\r\nnothing to see\r\n")
            qid = queue_id(r[-1])
            t.ok(qid and b"X-Virus-Status: Clean" in p.queued_bytes(qid),
                 "  a clean message passes, X-Virus-Status: Clean")
except PeerError as e:
    t.ok(False, "clamd and clamav-milter run", str(e))

# --- OpenDKIM: signs mail from 127.0.0.1, verifies mail from elsewhere --------------------
try:
    with OpenDKIM(domain="example.com") as dk:
        with Petrel(t, main_cf=conf(dk.endpoint)) as p:
            text = "Shall we meet for lunch on Thursday at noon?\r\nBest, Sender\r\n"
            r = send(p, "From: a@example.com\r\nTo: u@petrel.test\r\nSubject: lunch\r\n\r\n" + text)
            data = p.queued_bytes(queue_id(r[-1]))
            t.ok(b"\r\nDKIM-Signature: v=1;" in data, "OpenDKIM signs mail from its internal host 127.0.0.1",
                 data[:600])
            signed = data[data.find(b"DKIM-Signature:"):data.find(text.encode()) + len(text)]
            c = smtp_from(p.port, src="127.0.0.2")
            c.ehlo()
            c.cmd("MAIL FROM:<a@example.com>")
            c.cmd("RCPT TO:<u@petrel.test>")
            c.cmd("DATA")
            c.send(signed + b".\r\n")
            qid = queue_id(c.read_reply())
            c.close()
            data = p.queued_bytes(qid)
            t.ok(re.search(rb"Authentication-Results: petrel\.test;\s+dkim=pass", data) is not None,
                 "OpenDKIM verifies the signed message from 127.0.0.2: Authentication-Results ... dkim=pass",
                 data[:900])
except PeerError as e:
    t.ok(False, "OpenDKIM runs", str(e))

t.done()
