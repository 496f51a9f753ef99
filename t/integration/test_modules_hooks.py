"""Module hooks end to end with the test module: every phase, every verdict on the wire,
suspension, timeouts, the circuit breaker, edits in the queued message, crash isolation."""
import time

from harness import Petrel, Smtp, Tap, queue_file_bytes, wait_for
from modlib import module_dir

t = Tap()
mods = module_dir("testmod")
BASE = {"modules": "testmod", "module_directory": mods, "testmod_log_hooks": "yes"}


def conf(**extra):
    c = dict(BASE)
    c.update(extra)
    return c


def queue_bytes(p, *dirs):
    out = []
    for path in p.queue_files(*dirs):
        out.append(queue_file_bytes(path))
    return out


def mail(c, sender, rcpt="u@petrel.test", body="Subject: t\r\n\r\nbody\r\n"):
    c.ehlo()
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if c.code != 250:
        return r
    r = c.cmd("RCPT TO:<%s>" % rcpt)
    if c.code != 250:
        return r
    r = c.cmd("DATA")
    if c.code != 354:
        return r
    c.send(body.encode() + b".\r\n")
    return c.read_reply()


# --- every phase is called, in order ---------------------------------------
with Petrel(t, main_cf=conf(), workers=1) as p:
    # the readiness probe's session is over before this one starts: its
    # hook lines, if it got that far, come before this session's
    p.wait_closed([p.probe_port])
    c = p.connect()
    reply = mail(c, "a@example.org", body="Subject: hello\r\nX-One: 1\r\n\r\nbody\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "a message passes through every hook")
    qid = reply.split()[-1]
    c.cmd("QUIT")
    c.close()
    t.ok(p.wait_log(r"hook queued %s" % qid) is not None, "the queued hook sees the queue ID")
    order = [m for m in __import__("re").findall(r"testmod: hook (\w+)", p.log())]
    # The harness's readiness probe is a connection too: start at the session that said HELO.
    order = order[order.index("helo") - 1:] if "helo" in order else order
    t.is_(order, ["connect", "helo", "mail", "rcpt", "data", "header", "header", "end_of_headers",
                  "end_of_message", "queued"], "hooks run in SMTP order, one header hook per header")

# --- verdicts and replies on the wire ----------------------------------------
# testmod_delay 2s: the suspension below must outlast another session's
# connect and EHLO on a loaded machine.
with Petrel(t, main_cf=conf(testmod_delay="2s"), workers=1) as p:
    c = p.connect()
    t.is_(c.cmd("EHLO reject.helo.test"), "550 5.7.1 testmod rejects this HELO", "helo hook REJECT")
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<reject-a@example.org>"), "550 5.7.1 testmod rejects this address", "mail hook REJECT")
    t.is_(c.cmd("MAIL FROM:<tempfail-a@example.org>"), "451 4.7.1 testmod tempfails this address", "mail hook TEMPFAIL")
    t.is_(c.cmd("MAIL FROM:<bad-a@example.org>"), "451 4.3.0 Error: internal filter failure",
          "a REJECT with a 2xx reply is refused by the core: 451 4.3.0")
    t.ok(p.wait_log(r"module testmod: invalid reject reply \"250 2\.0\.0") is not None, "and the log names the module")
    # petrel_set_reply_lines: a multi-line reply, each line with the codes
    t.is_(c.cmd("MAIL FROM:<mlreply-a@example.org>"), "550 5.7.1 all good", "petrel_set_reply_lines: a multi-line reply")
    t.is_(c.lines, ["550-5.7.1 testmod rejects this address", "550-5.7.1 for three reasons", "550 5.7.1 all good"],
          "  every line reaches the client with the code and enhanced code")
    t.ok(p.wait_log(r"reject: MAIL from \S+: 550-5\.7\.1 testmod rejects this address\?\?550-5\.7\.1 for three "
                    r"reasons\?\?550 5\.7\.1 all good;") is not None, "  logged whole, its line ends as ?? (Postfix)")
    t.is_(c.cmd("MAIL FROM:<mlbad-a@example.org>"), "451 4.3.0 Error: internal filter failure",
          "a reply line with CR LF inside is refused by the core: 451 4.3.0")
    t.is_(c.lines, ["451 4.3.0 Error: internal filter failure"], "  one line, nothing injected")
    t.ok(p.wait_log(r"module testmod: invalid reject reply \"550 5\.7\.1 first\?second\?\?250 2\.0\.0 injected\"")
         is not None, "  and the log names the module", p.log()[-2000:])
    t.is_(c.cmd("MAIL FROM:<mlmany-a@example.org>"), "451 4.3.0 Error: internal filter failure",
          "a reply of more than 32 lines is refused by the core: 451 4.3.0")
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<reject-u@petrel.test>"), "550 5.7.1 testmod rejects this address", "rcpt hook REJECT")
    t.is_(c.cmd("RCPT TO:<datareject@petrel.test>"), "250 2.1.5 Ok", "a recipient accepted")
    t.is_(c.cmd("DATA"), "554 5.7.1 testmod rejects DATA", "data hook REJECT")
    c.cmd("RSET")
    t.like(c.cmd("NOOP"), r"^250", "the session goes on after refusals")
    c.close()

    # HOLD and DISCARD
    c = p.connect()
    before = len(p.queue_files())
    reply = mail(c, "discard-a@example.org")
    t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "DISCARD answers like an accepted message")
    t.is_(len(p.queue_files()), before, "but nothing is queued")
    t.ok(p.wait_log(r"discard: END-OF-MESSAGE") is not None, "and the discard is logged")
    c.close()
    c = p.connect()
    reply = mail(c, "hold-a@example.org")
    qid = reply.split()[-1]
    t.ok(any(f.endswith("/" + qid) for f in p.queue_files("hold")), "HOLD puts the message in the hold queue")
    c.close()

    # Suspension: slow hooks do not hold up other sessions.
    c = p.connect()
    c.ehlo()
    start = time.time()
    c.send("MAIL FROM:<slow-a@example.org>\r\n")
    other = p.connect()
    t.like(other.ehlo(), r"^250 ", "another session is served while a hook is suspended")
    # The one worker answered the other session before the suspended MAIL:
    # its reply has not come yet (an order, not a time).
    timeout = c.sock.gettimeout()
    c.sock.setblocking(False)
    try:
        early = c.sock.recv(4096)
    except BlockingIOError:
        early = b""
    c.sock.settimeout(timeout)
    t.is_(early, b"", "immediately: the suspended session's reply is still to come")
    c.buf += early
    other.close()
    t.is_(c.read_reply(), "250 2.1.0 Ok", "the suspended hook resumes with CONTINUE")
    t.ok(time.time() - start >= 1.9, "after the module's delay")
    c.cmd("RSET")
    t.is_(c.cmd("MAIL FROM:<slowreject-a@example.org>"), "550 5.7.1 testmod says no, later",
          "a suspended hook can resume with REJECT and a reply")
    c.close()

    # A late resume after the client left is a no-op.
    c = p.connect()
    c.ehlo()
    before = p.log().count("petrel_resume: the pending call is no longer valid")
    c.send("MAIL FROM:<late-a@example.org>\r\n")
    c.close()
    # testmod resumes it 1.5 s later; the core logs the resume it ignores
    wait_for(lambda: p.log().count("petrel_resume: the pending call is no longer valid") > before, timeout=30)
    c = p.connect()
    t.like(c.ehlo(), r"^250 ", "a resume after the session died changes nothing")
    c.close()
    t.ok("killed by signal" not in p.log(), "and crashes nothing")

# --- connect reject -------------------------------------------------------
with Petrel(t, main_cf=conf(testmod_connect_reject="yes")) as p:
    c = Smtp(p.port)
    t.is_(c.lines, ["554 mx.petrel.test ESMTP not accepting connections"],
          "connect hook REJECT: Postfix's greeting for a milter's reject at connect")
    t.is_(c.cmd("EHLO client.example.org"), "554 5.7.1 testmod refuses connections",
          "  the session stays: every command gets the module's reply")
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "554 5.7.1 testmod refuses connections", "  MAIL too")
    t.is_(c.cmd("RSET"), "250 2.0.0 Ok", "  RSET is answered")
    t.like(c.cmd("QUIT"), r"^221 ", "  and QUIT ends it")
    c.close()
    # the error limits end a client that keeps trying
    c = Smtp(p.port)
    replies = []
    try:
        for i in range(30):
            replies.append(c.cmd("HELO x%d.example.org" % i))
            if replies[-1].startswith("421 "):
                break
    except OSError:
        pass
    t.ok(len(replies) < 30 and replies[-1].startswith("421 4.7.0 mx.petrel.test Error: too many errors"),
         "  a client that keeps trying is cut off by smtpd_hard_error_limit", replies[-3:])
    c.close()

# --- content hooks ---------------------------------------------------------
with Petrel(t, main_cf=conf()) as p:
    c = p.connect()
    before = len(p.queue_files())
    reply = mail(c, "a@example.org", body="Subject: x\r\nX-Testmod-Reject: yes\r\n\r\nbody\r\n")
    t.is_(reply, "550 5.7.1 testmod rejects this header", "a header hook's refusal is answered after the dot")
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<u@petrel.test>")
    c.cmd("DATA")
    for piece in [b"Subject: y\r\n\r\nline one\r\nTESTMOD-", b"BODY", b"-REJECT\r\n", b".\r\n"]:
        c.send(piece)
        time.sleep(0.05)
    t.is_(c.read_reply(), "550 5.7.1 testmod rejects this body", "a body hook sees content split across packets")
    t.is_(len(p.queue_files()), before, "nothing refused is queued")
    # A body that starts without an empty line, its first line split across
    # two BDAT chunks: the body hook sees that line whole (it once got only
    # the part in the second chunk).
    c.cmd("RSET")
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<u@petrel.test>")
    first, second = b"Subject: z\r\nTESTMOD-BO", b"DY-REJECT is no header\r\n"
    c.send(b"BDAT %d\r\n" % len(first) + first)
    t.is_(c.read_reply(), "250 2.0.0 Ok: %d bytes" % len(first), "BDAT: the chunk ending inside a body line")
    c.send(b"BDAT %d LAST\r\n" % len(second) + second)
    t.is_(c.read_reply(), "550 5.7.1 testmod rejects this body",
          "a body hook sees a first body line (no empty line before it) split across BDAT chunks")
    t.is_(len(p.queue_files()), before, "nothing refused is queued")
    c.close()

# --- edits ------------------------------------------------------------------
with Petrel(t, main_cf=conf()) as p:
    c = p.connect()
    body = ("Subject: original subject\r\n"
            "X-Remove-Me: gone\r\n"
            "X-Testmod-Add: X-Added: by testmod\r\n"
            "X-Testmod-Insert: X-First: on top\r\n"
            "X-Testmod-Change: Subject\r\n"
            "X-Testmod-Delete: X-Remove-Me\r\n"
            "X-Testmod-Sender: changed-sender@example.net\r\n"
            "X-Testmod-Add-Rcpt: added-rcpt@petrel.test\r\n"
            "X-Testmod-Del-Rcpt: second-rcpt@petrel.test\r\n"
            "\r\n"
            "the body stays\r\n" + "x" * 70000 + "\r\n")
    c.ehlo()
    c.cmd("MAIL FROM:<orig-sender@example.org>")
    c.cmd("RCPT TO:<first-rcpt@petrel.test>")
    c.cmd("RCPT TO:<second-rcpt@petrel.test>")
    c.cmd("DATA")
    c.send(body.encode() + b".\r\n")
    reply = c.read_reply()
    t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "an edited message is accepted")
    qid = reply.split()[-1]
    files = [f for f in p.queue_files() if f.endswith("/" + qid)]
    t.is_(len(files), 1, "under the ID given in the reply, exactly once")
    t.is_(len(p.queue_files()), 1, "the unedited first copy is gone")
    data = queue_file_bytes(files[0]) if files else b""
    t.ok(b"Subject: changed by testmod\r\n" in data, "header change applied")
    t.ok(b"X-Remove-Me: gone" not in data, "header delete applied")
    t.ok(b"X-Added: by testmod\r\n" in data, "header add applied")
    content = data[data.find(b"Received: "):]
    t.ok(content.find(b"X-First: on top") < content.find(b"Subject:") and b"X-First: on top" in content,
         "header insert at the top applied (after our Received header)")
    t.ok(content.startswith(b"Received: from ") and (b"id " + qid.encode()) in content[:400],
         "the Received header names the queue ID of the 250 reply")
    t.ok(b"changed-sender@example.net" in data and b"orig-sender@example.org" not in data,
         "envelope sender change applied")
    t.ok(b"added-rcpt@petrel.test" in data, "recipient add applied")
    t.ok(b"second-rcpt@petrel.test" not in data.replace(b"X-Testmod-Del-Rcpt: second-rcpt@petrel.test", b""),
         "recipient delete applied")
    t.ok(b"the body stays\r\n" + b"x" * 70000 + b"\r\n" in data, "the body is copied intact")
    t.ok(p.wait_log(r"%s: edited by modules \(\d+ changes\)" % qid) is not None, "the rewrite is logged")
    t.ok(p.wait_log(r"%s: client=" % qid) is not None,
         "under the queue ID the message had from its first log line (no second ID)")

    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<u@petrel.test>")
    c.cmd("DATA")
    c.send(b"Subject: b\r\nX-Testmod-Body: replacement text\r\n\r\noriginal body\r\n.\r\n")
    qid = c.read_reply().split()[-1]
    data = b"".join(queue_file_bytes(f) for f in p.queue_files() if f.endswith("/" + qid))
    t.ok(b"replacement text\r\n" in data and b"original body" not in data, "body replace applied")

    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<u@petrel.test>")
    c.cmd("DATA")
    c.send(b"Subject: q\r\nX-Testmod-Quarantine: looks suspicious\r\n\r\nbody\r\n.\r\n")
    qid = c.read_reply().split()[-1]
    t.ok(any(f.endswith("/" + qid) for f in p.queue_files("hold")), "quarantine puts the message on hold")
    t.ok(p.wait_log(r"%s: hold: END-OF-MESSAGE .*looks suspicious" % qid) is not None, "with the reason logged")
    c.close()

# --- module restrictions in every list ---------------------------------------
lists = [("smtpd_client_restrictions", "RCPT"), ("smtpd_helo_restrictions", "RCPT"),
         ("smtpd_sender_restrictions", "RCPT"), ("smtpd_recipient_restrictions", "RCPT"),
         ("smtpd_relay_restrictions", "RCPT"), ("smtpd_data_restrictions", "DATA"),
         ("smtpd_end_of_data_restrictions", "END")]
for param, stage in lists:
    cfg = conf(testmod_log_hooks="no")
    cfg[param] = "check_testmod reject"
    if param == "smtpd_relay_restrictions":
        cfg[param] = "check_testmod reject, permit_mynetworks, reject_unauth_destination"
    with Petrel(t, main_cf=cfg) as p:
        c = p.connect()
        reply = mail(c, "a@example.org")
        t.like(reply, r"^554 5\.7\.1 .*check_testmod rejects",
               "check_testmod in %s rejects (at %s)" % (param, stage))
        c.close()
    if param == "smtpd_end_of_data_restrictions":
        break

with Petrel(t, main_cf=conf(testmod_log_hooks="yes", testmod_hook_timeout="1s",
                            smtpd_recipient_restrictions="check_testmod slowok, check_testmod hang")) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<u@petrel.test>"), "250 2.1.5 Ok", "an asynchronous restriction that answers OK permits")
    c.cmd("RCPT TO:<second@petrel.test>")
    # The second RCPT's refusal (an unknown user, after the restrictions) is
    # logged after the first RCPT's whole evaluation: by then the hang step
    # would have been called (and logged).
    t.ok(p.wait_log(r"reject: RCPT from \S+: 550 5\.1\.1 <second@petrel\.test>") is not None
         and "hook check_testmod hang" not in p.log(),
         "without waiting for the steps after it (never called)", p.log()[-1500:])
    c.close()

with Petrel(t, main_cf=conf(testmod_log_hooks="no", testmod_hook_timeout="1s",
                            smtpd_recipient_restrictions="check_testmod hang, reject")) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    start = time.time()
    reply = c.cmd("RCPT TO:<u@petrel.test>")
    took = time.time() - start
    t.like(reply, r"^554 5\.7\.1 ", "a restriction that never answers times out and evaluation goes on (to reject)")
    t.ok(p.wait_log(r"module testmod: no answer within 1000 ms") is not None and 0.9 <= took < 9,
         "after the module's hook timeout (1 s, not the default 10 s)", "took %.2f s" % took)
    c.close()

# --- timeouts, default actions and the circuit breaker -----------------------
with Petrel(t, main_cf=conf(testmod_log_hooks="no", testmod_hook_timeout="1s",
                            testmod_default_action="tempfail", testmod_circuit_failures="0")) as p:
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<hang-a@example.org>"), "451 4.3.0 Error: filter temporarily unavailable, try again later",
          "a hook timeout with default action tempfail answers 451 4.3.0")
    t.ok(p.wait_log(r"module testmod: no answer within 1000 ms") is not None, "the timeout is logged")
    c.close()

with Petrel(t, workers=1, main_cf=conf(testmod_log_hooks="yes", testmod_hook_timeout="1s",
                                       testmod_circuit_failures="2", testmod_circuit_cooldown="3s")) as p:
    c = p.connect()
    c.ehlo()
    for i in range(2):
        start = time.time()
        t.is_(c.cmd("MAIL FROM:<hang-%d@example.org>" % i), "250 2.1.0 Ok", "timeout %d: default action continue" % (i + 1))
        c.cmd("RSET")
        t.ok(time.time() - start >= 0.9, "timeout %d waited for the hook" % (i + 1))
    t.ok(p.wait_log(r"module testmod: circuit open after 2 consecutive failures \(last: timeout\).*for 3 seconds") is not None,
         "the circuit opens after the configured failures")
    t.is_(c.cmd("MAIL FROM:<hang-3@example.org>"), "250 2.1.0 Ok", "an open circuit applies the default action")
    c.cmd("RSET")
    time.sleep(3.2)
    c.cmd("MAIL FROM:<a@example.org>")
    t.ok(p.wait_log(r"module testmod: circuit half-open") is not None, "after the cool-down the circuit is half-open")
    t.ok(p.wait_log(r"module testmod: circuit closed") is not None, "and a good answer closes it")
    # The module's mail hook logs each call: a@ (after the cool-down) is
    # there, hang-3@ (while the circuit was open) is not.
    t.ok(p.wait_log(r"testmod: hook mail a@example\.org") is not None
         and "hook mail hang-3@example.org" not in p.log(),
         "the open circuit answered without calling the module", p.log()[-1500:])
    c.close()

# --- crash isolation ---------------------------------------------------------
with Petrel(t, workers=1, main_cf=conf(testmod_log_hooks="no"), crash_test=True) as p:
    c = p.connect()
    reply = mail(c, "a@example.org")
    qid = reply.split()[-1]
    c.close()
    c = p.connect()
    c.ehlo()
    c.send("MAIL FROM:<crash-a@example.org>\r\n")
    t.ok(c.closed(wait=30), "a module crash drops that worker's sessions")
    t.ok(p.wait_log(r"panic: module testmod crashed in hook mail: signal 11") is not None,
         "the log names the module and the hook")
    t.ok(p.wait_log(r"process .* killed by signal 11") is not None, "the master sees the worker die")
    deadline = time.time() + 30
    ok = False
    while time.time() < deadline and not ok:
        try:
            c2 = p.connect()
            ok = c2.code == 220
            c2.close()
        except Exception:
            time.sleep(0.2)
    t.ok(ok, "the master restarts the worker and service resumes")
    t.ok(any(f.endswith("/" + qid) for f in p.queue_files()), "a message accepted before the crash is still queued")

# --- delivery-result hooks run in the queue manager -------------------------
with Petrel(t, main_cf=conf(testmod_log_hooks="no"), extra_services="qmgr unix n - n 300 1 qmgr\n",
            start=False) as p:
    # smtpd_reject_unlisted_recipient = no: the bounce below needs an unknown
    # user past smtpd (test_recipient_validation.py tests the check).
    boxes = p.virtual_mailboxes({"u@vmail.test": "u/"}, {"smtpd_reject_unlisted_recipient": "no"})
    p.start()
    c = p.connect()
    qid = mail(c, "a@example.org", rcpt="u@vmail.test").split()[-1]
    t.ok(p.wait_log(r"petrel/qmgr\[\d+\]: module testmod: delivery %s to=<u@vmail\.test> status=sent dsn=2\.0\.0 relay=virtual" % qid,
                    timeout=30) is not None, "the delivery hook sees each recipient's result, in the queue manager")
    qid = mail(c, "a@example.org", rcpt="nobody@vmail.test").split()[-1]
    t.ok(p.wait_log(r"module testmod: delivery %s to=<nobody@vmail\.test> status=bounced dsn=5\.1\.1" % qid) is not None,
         "bounces too")
    c.close()

t.done()
