"""What the SMTP client and the milters see of each other, through petreld
with real milters on loopback: multi-line replies (libmilter's
smfi_setmlreply) reach the client whole, each line with the code and
enhanced code; a malformed custom reply is milter_default_action's, with
one log line naming it; MAIL and RCPT reach the milter with their ESMTP
parameters; Postfix's macros for the connection, TLS and SASL."""
import os
import re
import struct

import base64
import tempfile

from harness import CLEANUP_DIRS, Petrel, Smtp, Tap, make_cert, queue_file_bytes, wait_for
from modlib import bundled_module_dir
from peers import ScriptedMilter, TestFilter, milter_packet as pkt

t = Tap(timeout=300)
mods = bundled_module_dir("milter", "sasl")


def conf(milters, **extra):
    c = {"modules": "milter", "module_directory": mods, "smtpd_milters": milters}
    c.update(extra)
    return c


def queue_records(p, qid):
    """The envelope records of queued message qid (doc/queue-format.md)."""
    data = next(queue_file_bytes(f) for f in p.queue_files() if os.path.basename(f) == qid)
    pos, records = 16, []
    while True:
        kind = data[pos:pos + 1].decode()
        (length,) = struct.unpack(">I", data[pos + 1:pos + 5])
        records.append((kind, data[pos + 5:pos + 5 + length]))
        pos += 5 + length
        if kind == "M":
            return records


def recipients(records):
    out = []
    for kind, payload in records:
        if kind == "R":
            (olen,) = struct.unpack(">I", payload[6:10])
            orcpt = None if olen == 0xFFFFFFFF else payload[10:10 + olen].decode()
            out.append((payload[10 + (olen if orcpt is not None else 0):].decode(), payload[5], orcpt))
    return out


def send_one(p, subject, mail="MAIL FROM:<sender@example.org>", rcpts=("u@petrel.test",)):
    c = session(p)
    c.cmd(mail)
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r)
    c.cmd("DATA")
    c.send(("Subject: %s\r\n\r\nbody\r\n.\r\n" % subject).encode())
    reply = c.read_reply()
    c.cmd("QUIT")
    c.close()
    m = re.match(r"250 2\.0\.0 Ok: queued as (\S+)", reply)
    return m.group(1) if m else None


def session(p):
    c = Smtp(p.port)
    c.ehlo()
    return c


# --- multi-line replies from libmilter ----------------------------------------------
ML_RCPT = ["550-5.1.1 No such user here", "550-5.1.1 See https://example.org/why", "550 5.1.1 Ask your postmaster"]
with TestFilter(verdicts={"mail": "mlreply:553:5.1.8:Sender refused|because of its domain"}) as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        c = session(p)
        c.cmd("MAIL FROM:<sender@example.org>")
        t.is_(c.lines, ["553-5.1.8 Sender refused", "553 5.1.8 because of its domain"],
              "smfi_setmlreply at MAIL: both lines reach the client, each with its codes")
        t.ok(p.wait_log(r"milter-reject: MAIL from \S+: 553-5\.1\.8 Sender refused\?\?553 5\.1\.8 because of its "
                        r"domain") is not None, "  logged whole, its CRLF as ?? (Postfix)")
        t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "  and the session goes on")
        c.close()

with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        c = session(p)
        t.like(c.cmd("MAIL FROM:<sender@example.org>"), r"^250 ", "MAIL passes")
        c.cmd("RCPT TO:<mlreply-x@example.org>")
        t.is_(c.lines, ML_RCPT, "smfi_setmlreply at RCPT: three lines, exactly")
        t.like(c.cmd("RCPT TO:<u@petrel.test>"), r"^250 ", "  the next recipient passes")
        t.is_(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>", "DATA")
        c.send(b"Subject: do: multiline\r\n\r\nbody\r\n.\r\n")
        c.read_reply()
        t.is_(c.lines, ["450-4.7.0 first line", "450-4.7.0 second line", "450 4.7.0 third line"],
              "smfi_setmlreply at end of message: three lines, exactly")
        t.is_(c.cmd("RSET"), "250 2.0.0 Ok", "  and the session goes on")
        c.cmd("QUIT")
        c.close()
        # BDAT: the refusal of the last chunk is the same multi-line reply
        c = session(p)
        c.cmd("MAIL FROM:<sender@example.org>")
        c.cmd("RCPT TO:<u@petrel.test>")
        body = b"Subject: do: multiline\r\n\r\nbody\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        c.read_reply()
        t.is_(c.lines, ["450-4.7.0 first line", "450-4.7.0 second line", "450 4.7.0 third line"],
              "the same reply to BDAT LAST")
        c.close()

# --- ESMTP parameters of MAIL and RCPT reach the milter ------------------------------
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        c = session(p)
        t.like(c.cmd("MAIL FROM:<sender@example.org>   SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef"), r"^250 ",
               "MAIL with ESMTP parameters")
        t.like(c.cmd("RCPT TO:<u@petrel.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@petrel.test"), r"^250 ",
               "RCPT with ESMTP parameters")
        t.like(c.cmd("RCPT TO:<u@petrel.test>"), r"^250 ", "RCPT without")
        c.cmd("QUIT")
        c.close()
        log = f.log()
        t.ok("envfrom <sender@example.org> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef" in log,
             "SMFIC_MAIL: the address, then each parameter as sent (one argument each)", "\n".join(log))
        t.ok("envrcpt <u@petrel.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@petrel.test" in log
             and "envrcpt <u@petrel.test>" in log, "SMFIC_RCPT: the same", "\n".join(log))

# --- macros: the connection's ends, TLS, SASL ------------------------------------------
work = tempfile.mkdtemp(prefix="petrel-milter-session-")
CLEANUP_DIRS.append(work)
cert, key = make_cert(work)
users = os.path.join(work, "sasl_passwd")
with open(users, "w") as fh:
    fh.write("alice {PLAIN}secret\n")
os.chmod(users, 0o644)
os.chmod(key, 0o644)   # a throw-away test key, read by the unprivileged petreld
os.chmod(work, 0o755)
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint, modules="milter sasl", smtpd_tls_cert_file=cert, smtpd_tls_key_file=key,
                                smtpd_tls_security_level="may", smtpd_sasl_auth_enable="yes",
                                smtpd_sasl_type="table", smtpd_sasl_path="texthash:" + users,
                                # {client_port} and {daemon_port} are not in Postfix's default list
                                milter_connect_macros="j {daemon_name} {daemon_addr} {daemon_port} {client_port} v _")
                ) as p:
        c = Smtp(p.port)
        client_port = c.sock.getsockname()[1]
        c.ehlo()
        t.like(c.cmd("STARTTLS"), r"^220 ", "STARTTLS")
        c.starttls()
        c.ehlo()
        t.like(c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode()), r"^235 ", "AUTH")
        t.like(c.cmd("MAIL FROM:<alice@example.org> AUTH=alice@example.org"), r"^250 ", "MAIL with AUTH=")
        c.cmd("QUIT")
        c.close()
        log = f.log()
        t.ok("connect host=[127.0.0.1] family=inet port=%d addr=127.0.0.1" % client_port in log,
             "SMFIC_CONNECT carries the client's port (%d), not 0" % client_port, "\n".join(log))
        for stage, macro in (("connect", "{client_port}=%d" % client_port), ("connect", "{daemon_addr}=127.0.0.1"),
                             ("connect", "{daemon_port}=%d" % p.port), ("helo", "{tls_version}=TLSv1.3"),
                             ("helo", "{cipher}=TLS_AES_256_GCM_SHA384"), ("helo", "{cipher_bits}=256"),
                             ("mail", "{auth_type}=PLAIN"), ("mail", "{auth_authen}=alice"),
                             ("mail", "{auth_author}=alice@example.org")):
            t.ok("macro %s %s" % (stage, macro) in log, "macro at %s: %s" % (stage, macro),
                 "\n".join(ln for ln in log if ln.startswith("macro")))
        t.ok(not any("{cert_subject}" in ln for ln in log),
             "{cert_subject} only for a verified client certificate (none here)")

# --- one connection per milter per SMTP session, across its messages (Postfix) ---------
# Postfix never sends SMFIC_QUIT_NC: each SMTP session has its own milter
# connection, and its messages (and an aborted transaction) go over it.
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        # The counts below are this session's: the readiness probe's session
        # is over (petreld's end closed, and any milter conversation of its
        # own with it) before it starts, and the lines it left are skipped.
        p.wait_closed([p.probe_port])
        wait_for(f.idle, timeout=30)
        start = len(f.log())
        c = session(p)
        for i in (1, 2):
            c.cmd("MAIL FROM:<sender@example.org>")
            c.cmd("RCPT TO:<u@petrel.test>")
            c.cmd("DATA")
            c.send(b"Subject: message %d\r\n\r\nbody\r\n.\r\n" % i)
            t.like(c.read_reply(), r"^250 2\.0\.0 Ok: queued as ", "message %d of the session" % i)
        c.cmd("MAIL FROM:<sender@example.org>")
        c.cmd("RSET")
        c.cmd("QUIT")
        c.close()

        def counter(lines):
            return lambda word: sum(1 for ln in lines if ln == word or ln.startswith(word + " "))
        # SMFIC_ABORT has no reply and the milter connection closes after QUIT's
        # reply: the filter may log both after this client has its answer
        log = f.log(until=lambda lines: counter(lines[start:])("close") >= 1 and counter(lines[start:])("abort") >= 1)
        log = log[start:]
        count = counter(log)
        t.ok(count("negotiate") == 1 and count("connect") == 1 and count("close") == 1,
             "one milter connection for the session's messages (one negotiation, one CONNECT, one close)", log)
        t.ok(count("eom") == 2 and count("envfrom") == 3 and count("abort") >= 1,
             "  two messages and an aborted transaction went over it", log)

# --- unknown commands: SMFIC_UNKNOWN ----------------------------------------------------
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        c = session(p)
        t.is_(c.cmd("XFOO bar  baz"), "502 5.5.2 Error: command not recognized", "an unknown command: 502")
        t.is_(c.cmd("EXPN staff"), "502 5.5.2 Error: command not recognized", "EXPN (not implemented): 502")
        t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "  and the session goes on")
        c.close()
        log = f.log()
        t.ok("unknown XFOO bar  baz" in log and "unknown EXPN staff" in log,
             "the milter got SMFIC_UNKNOWN with the whole line, as Postfix sends it", "\n".join(log))
with TestFilter(verdicts={"unknown": "reply:554:5.7.1:Not here"}) as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        c = session(p)
        t.is_(c.cmd("XFOO"), "554 5.7.1 Not here", "a milter's reply to an unknown command reaches the client")
        t.like(c.cmd("MAIL FROM:<sender@example.org>"), r"^250 ", "  and the session goes on")
        c.close()

# --- CHGFROM and ADDRCPT_PAR with ESMTP parameters: applied as Postfix does --------
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        qid = send_one(p, "do: chgfrom_args addrcpt_par addrcpt_orcpt")
        t.ok(qid is not None, "a message with CHGFROM and ADDRCPT_PAR parameters is queued")
        recs = queue_records(p, qid) if qid else []
        rec = dict((k, v) for k, v in recs if k in "SFE")
        t.is_(rec.get("S"), b"bounces@example.net", "CHGFROM: the new sender")
        t.is_(rec.get("F", b"\0" * 5)[4], 2, "CHGFROM's RET=HDRS is applied")
        t.is_(rec.get("E"), b"abc123", "CHGFROM's ENVID=abc123 is applied")
        rs = recipients(recs)
        t.ok(("added-par@example.org", 8, None) in rs, "ADDRCPT_PAR's NOTIFY=NEVER is applied", rs)
        t.ok(("added-orcpt@example.org", 1 | 4, "rfc822;orig+x@example.org") in rs,
             "ADDRCPT_PAR's NOTIFY=SUCCESS,DELAY and ORCPT (xtext-decoded) are applied", rs)
        t.ok(p.wait_log(r"\w+: module milter: petrel_recipient_add_params: ignoring ESMTP parameter \"FOO=bar\" "
                        r"\(only a valid NOTIFY= or ORCPT= is applied to a recipient\)") is not None,
             "  an unknown parameter is ignored with a warning naming it (Postfix)")
        qid = send_one(p, "do: chgfrom_badargs", mail="MAIL FROM:<sender@example.org> RET=HDRS ENVID=orig")
        recs = queue_records(p, qid) if qid else []
        rec = dict((k, v) for k, v in recs if k in "SFE")
        t.ok(rec.get("S") == b"bounces@example.net" and rec.get("F", b"\0" * 5)[4] == 1,
             "CHGFROM: a valid RET=FULL applied", rec)
        t.is_(rec.get("E"), b"orig", "  a malformed ENVID ignored: the client's stays")
        for bad in ("SIZE=1", "ENVID=a+ZZ"):
            t.ok(p.wait_log(r"module milter: petrel_sender_change_params: ignoring ESMTP parameter \"%s\" \(only a "
                            r"valid RET= or ENVID= is applied to a sender\)" % re.escape(bad)) is not None,
                 "  %s ignored with a warning naming it" % bad)

# --- malformed custom replies: the default action, one log line ---------------------
CONF_PROBLEM = "451 4.3.5 Server configuration problem - try again later"
for name, text, err in (
        ("lines with different codes", b"550-5.7.1 a\r\n551 5.7.1 b\0", "line 2 has code 551, the first line 550"),
        ("a 2xx line after a 5xx", b"550-5.7.1 a\r\n250 2.0.0 b\0", "line 2 is not \"4xx \" or \"5xx \" followed by text"),
        ("a bare LF between lines", b"550-5.7.1 a\n550 5.7.1 b\0", "line 1 does not end with CRLF"),
        ("a CRLF at the end", b"550 5.7.1 a\r\n\0", "line 1 is not \"4xx-\" or \"5xx-\" followed by text"),
        ("33 lines", b"".join(b"550-5.7.1 x\r\n" for _ in range(32)) + b"550 5.7.1 x\0", "more than 32 lines")):
    with ScriptedMilter(replies={"R": pkt("y", text)}) as m:
        with Petrel(t, main_cf=conf(m.endpoint)) as p:
            c = session(p)
            c.cmd("MAIL FROM:<sender@example.org>")
            c.cmd("RCPT TO:<u@petrel.test>")
            t.is_(c.lines, [CONF_PROBLEM], "a REPLYCODE with %s: milter_default_action (tempfail), exactly" % name)
            shown = text.rstrip(b"\0").decode().replace("\r", "?").replace("\n", "?")[:100]
            t.ok(p.wait_log(r"milter %s: malformed reply: %s: \"%s" % (re.escape(m.endpoint), re.escape(err),
                                                                         re.escape(shown[:60]))) is not None,
                 "  logged, naming what was wrong", p.log()[-1500:])
            t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "  and the server keeps serving")
            c.close()

with ScriptedMilter(replies={"R": pkt("y", b"550-5.7.1 a\r\n551 5.7.1 b\0")}) as m:
    with Petrel(t, main_cf=conf(m.endpoint, milter_default_action="reject")) as p:
        c = session(p)
        c.cmd("MAIL FROM:<sender@example.org>")
        c.cmd("RCPT TO:<u@petrel.test>")
        t.is_(c.lines, [CONF_PROBLEM], "the same with milter_default_action = reject: a configuration problem is "
              "451 4.3.5 (Postfix's milter8_conf_error)")
        c.close()
with ScriptedMilter(replies={"R": pkt("y", b"550-5.7.1 a\r\n551 5.7.1 b\0")}) as m:
    with Petrel(t, main_cf=conf(m.endpoint, milter_default_action="accept")) as p:
        c = session(p)
        c.cmd("MAIL FROM:<sender@example.org>")
        t.like(c.cmd("RCPT TO:<u@petrel.test>"), r"^250 ", "with milter_default_action = accept: the recipient passes")
        c.close()

# long lines are cut, never split into more lines or passed whole
long_text = b"550-5.7.1 " + b"a" * 600 + b"\r\n550 5.7.1 end\0"
with ScriptedMilter(replies={"R": pkt("y", long_text)}) as m:
    with Petrel(t, main_cf=conf(m.endpoint)) as p:
        c = session(p)
        c.cmd("MAIL FROM:<sender@example.org>")
        c.cmd("RCPT TO:<u@petrel.test>")
        t.ok(len(c.lines) == 2, "a 610-character line: still two lines", c.lines)
        t.ok(c.lines[0].startswith("550-5.7.1 aaa") and len(c.lines[0]) <= 512 and c.lines[1] == "550 5.7.1 end",
             "  the long one cut to fit an SMTP line", [len(x) for x in c.lines])
        c.close()
t.done()
