"""The MTA side of the milter protocol (modules/milter) against a real libmilter
filter of our own (modules/milter/t/testfilter.c), through t/tools/scan-drive:
every reply at every stage, every modification, every protocol option the
filter can negotiate (NO*, NR_*, SKIP, HDR_LEADSPC, RCPT_REJ, SETSYMLIST),
protocol versions 2, 3, 4 and 6, body chunks of at most 64 KiB, streamed body
replacement, PROGRESS against the content timeout, connection reuse with
QUIT_NC, and the default actions when the milter is down.

SHUTDOWN and malformed replies cannot come from libmilter: see
test_milter_hostile.py."""
import os
import re
import tempfile

from harness import Tap, refused_port, CLEANUP_DIRS
from peers import TestFilter, scan_drive, write_message, fnv1a64, PeerError

t = Tap(timeout=600)
work = tempfile.mkdtemp(prefix="petrel-milter-test-")
CLEANUP_DIRS.append(work)

MACROS = ["--macro", "j=mx.petrel.test", "--macro", "{daemon_name}=petrel", "--macro", "v=Petrel 0.1",
          "--macro", "i=4F2A9C01B", "--macro", "{client_addr}=192.0.2.1", "--macro", "{mail_addr}=sender@example.com",
          "--macro", "{rcpt_addr}=rcpt@example.org", "--macro", "{auth_authen}=alice",
          "--macro", "{tls_version}=TLSv1.3", "--macro", "_=client.example.com [192.0.2.1]"]


def msg(name, subject, body="Hello body\nline two\n", extra=()):
    headers = [("From", "Sender <sender@example.com>"), ("To", "rcpt@example.org"), ("Subject", subject)]
    headers += list(extra)
    return write_message(work, name, headers, body)


def drive(filt, message, *opts):
    return scan_drive("milter", *(list(MACROS) + list(opts) + [filt.endpoint, message]))


def line(lines, prefix):
    for ln in lines:
        if ln.startswith(prefix):
            return ln
    return None


def has(lines, prefix):
    return line(lines, prefix) is not None


def check_no_errors(lines, what):
    bad = [ln for ln in lines if ln.startswith("log: error") or ln.startswith("stderr:")]
    t.ok(not bad, what + ": no errors from the connection", "\n".join(bad))


plain = msg("plain.eml", "plain")

try:
    # ------------------------------------------------------------------
    # every modification, and what the filter saw
    all_edits = msg("edits.eml", "do: addheader insheader foldheader chgheader delheader chgfrom_args addrcpt "
                    "addrcpt_par delrcpt replbody quarantine",
                    extra=[("X-Delete-Me", "yes"), ("X-Folded", "first\n\tsecond")])
    out = os.path.join(work, "edited.eml")
    with TestFilter() as f:
        rc, lines = drive(f, all_edits, "--write-message", out)
        t.is_(rc, 0, "scan-drive ran")
        t.like(line(lines, "open:"), r"^open: ok version=6 actions=0x1ff steps=0x0$", "negotiated version 6, all actions")
        t.is_(line(lines, "macros connect:"), "macros connect: j {daemon_name} {daemon_addr} v _",
              "Postfix's default milter_connect_macros")
        t.is_(line(lines, "macros mail:"),
              "macros mail: i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
              "Postfix's default milter_mail_macros")
        edits = [ln for ln in lines if ln.startswith("edit:")]
        t.is_(edits, [
            "edit: add_header X-Test-Added= added by the test filter",
            "edit: insert_header 0 X-Test-First= inserted at the top",
            "edit: add_header X-Test-Folded= first line\\r\\n\\tsecond line",
            "edit: change_header Subject[1]= changed subject",
            "edit: delete_header X-Delete-Me[1]",
            "edit: change_from <bounces@example.net> args=\"RET=HDRS ENVID=abc123\"",
            "edit: add_rcpt <added@example.org> args=\"\"",
            "edit: add_rcpt <added-par@example.org> args=\"NOTIFY=NEVER\"",
            "edit: delete_rcpt <rcpt@example.org>",
            "edit: body_chunk 39 first",
            "edit: body_end 39",
            "edit: quarantine held by the test filter",
        ], "ADDHEADER INSHEADER CHGHEADER (change, delete) CHGFROM+args ADDRCPT ADDRCPT_PAR DELRCPT REPLBODY "
           "QUARANTINE, in order")
        t.is_(line(lines, "eom:"), "eom: continue quarantine=held by the test filter",
              "end of message: continue, message to be held")
        check_no_errors(lines, "all edits")
        with open(out, "rb") as fp:
            edited = fp.read()
        t.ok(edited.startswith(b"X-Test-First: inserted at the top\r\nFrom:"), "inserted header first",
             edited[:200])
        t.ok(b"Subject: changed subject\r\n" in edited and b"X-Delete-Me" not in edited
             and b"X-Test-Folded: first line\r\n\tsecond line\r\n" in edited, "changed, deleted, folded headers applied",
             edited)
        t.ok(edited.endswith(b"\r\n\r\nThis body was replaced.\r\nSecond line.\r\n"), "body replaced", edited[-80:])
        log = f.log()
        t.ok("negotiate mta_actions=0x1ff mta_flags=0x1ff7ff want_flags=0x0" in log,
             "we offered every action and the version 6 steps (no RCPT_REJ by default)", "\n".join(log))
        t.ok("connect host=client.example.com family=inet port=54321 addr=192.0.2.1" in log,
             "CONNECT carries name, family, port and address", "\n".join(log))
        for stage, macro in (("connect", "j=mx.petrel.test"), ("connect", "{daemon_name}=petrel"),
                             ("connect", "v=Petrel 0.1"), ("connect", "_=client.example.com [192.0.2.1]"),
                             ("mail", "i=4F2A9C01B"), ("mail", "{auth_authen}=alice"),
                             ("mail", "{mail_addr}=sender@example.com"), ("rcpt", "{rcpt_addr}=rcpt@example.org"),
                             ("helo", "{tls_version}=TLSv1.3"), ("header", "i=4F2A9C01B"), ("eom", "i=4F2A9C01B")):
            t.ok("macro %s %s" % (stage, macro) in log, "macro %s at %s" % (macro, stage))
        t.ok("macro connect {client_addr}=192.0.2.1" not in log,
             "a macro outside the stage's list is not sent ({client_addr} at CONNECT)")
        t.ok("header Subject=[do: addheader insheader foldheader chgheader delheader chgfrom_args addrcpt "
             "addrcpt_par delrcpt replbody quarantine]" in log, "header values without the first space (Sendmail)")
        t.ok("header X-Folded=[first\\n\\tsecond]" in log, "folded header lines are separated by LF (Sendmail)")
        body = b"Hello body\r\nline two\r\n"
        t.ok("eom bytes=%d chunks=1 fnv=%s" % (len(body), fnv1a64(body)) in log, "the body arrived as sent (CRLF)",
             "\n".join(log))

    # ------------------------------------------------------------------
    # replies at each stage
    cases = [
        ({"connect": "reject"}, "connect: reject 550 5.7.1 Command rejected connection", "helo"),
        ({"connect": "tempfail"}, "connect: tempfail 451 4.7.1 Service unavailable - try again later connection", "helo"),
        ({"helo": "reply:421:4.7.0:Go away"}, "helo: tempfail 421 4.7.0 Go away connection", "envfrom"),
        ({"mail": "reject"}, "mail: reject 550 5.7.1 Command rejected", "envrcpt"),
        ({"mail": "reply:553:5.1.8:Bad sender"}, "mail: reject 553 5.1.8 Bad sender", "envrcpt"),
        ({"data": "tempfail"}, "data: tempfail 451 4.7.1 Service unavailable - try again later", "header"),
        ({"header": "reject"}, "header From: reject 550 5.7.1 Command rejected", "header To"),
        ({"eoh": "discard"}, "eoh: discard", "body"),
        # A short body goes out as the last chunk, just before EOM: the refusal
        # answers the end of message.
        ({"body": "reply:554:5.7.0:No body like that"}, "eom: reject 554 5.7.0 No body like that", "eom"),
    ]
    for verdicts, want, not_after in cases:
        with TestFilter(verdicts=verdicts) as f:
            rc, lines = drive(f, plain)
            stage = list(verdicts)[0]
            t.ok(want in lines, "%s=%s: %s" % (stage, verdicts[stage], want), "\n".join(lines))
            t.ok(not any(ln.startswith(not_after) for ln in f.log()), "  then no %s reaches the milter" % not_after,
                 "\n".join(f.log()))

    with TestFilter(verdicts={"connect": "accept"}) as f:
        rc, lines = drive(f, plain)
        t.ok("connect: accept connection" in lines and "helo: continue" in lines and "eom: continue" in lines,
             "ACCEPT at CONNECT: the session goes on", "\n".join(lines))
        log = f.log()
        t.ok(not any(ln.startswith(("helo", "envfrom", "header")) for ln in log),
             "  without a single further event for the milter", "\n".join(log))

    with TestFilter(verdicts={"mail": "accept"}) as f:
        rc, lines = drive(f, plain)
        log = f.log()
        t.ok("mail: accept" in lines and "eom: continue" in lines and not any(ln.startswith("envrcpt") for ln in log)
             and not any(ln.startswith("eom") for ln in log), "ACCEPT at MAIL: no more events for the message",
             "\n".join(lines + log))

    with TestFilter() as f:
        rc, lines = drive(f, plain, "--rcpt", "<ok@example.org>", "--rcpt", "<reject-x@example.org>",
                          "--rcpt", "<tempfail-y@example.org>", "--rcpt", "<reply-z@example.org>",
                          "--rcpt", "<ok2@example.org> NOTIFY=NEVER ORCPT=rfc822;ok2@example.org")
        t.ok("rcpt <reject-x@example.org>: reject 550 5.7.1 Command rejected" in lines, "RCPT reject: that recipient only")
        t.ok("rcpt <tempfail-y@example.org>: tempfail 451 4.7.1 Service unavailable - try again later" in lines,
             "RCPT tempfail")
        t.ok("rcpt <reply-z@example.org>: reject 550 5.1.1 No such user here" in lines, "RCPT custom reply")
        t.ok("eom: continue" in lines, "the message goes on for the others")
        t.ok("envrcpt <ok2@example.org> NOTIFY=NEVER ORCPT=rfc822;ok2@example.org" in f.log(),
             "RCPT carries its ESMTP arguments")

    with TestFilter() as f:
        rc, lines = drive(f, plain, "--rcpt", "<discard-me@example.org>")
        t.ok("rcpt <discard-me@example.org>: discard" in lines, "DISCARD at RCPT")
        t.ok(not any(ln.startswith("data") for ln in f.log()), "  the message gets no more events")

    for word, want in (("accept", "eom: accept"), ("reject", "eom: reject 550 5.7.1 Command rejected"),
                       ("tempfail", "eom: tempfail 451 4.7.1 Service unavailable - try again later"),
                       ("discard", "eom: discard"),
                       ("replycode", "eom: reject 554 5.7.1 Rejected by the test filter: 100% sure"),
                       ("multiline", "eom: tempfail 450-4.7.0 first line\\r\\n450-4.7.0 second line\\r\\n"
                                     "450 4.7.0 third line")):
        with TestFilter() as f:
            rc, lines = drive(f, msg("eom-%s.eml" % word, "do: " + word))
            t.ok(want in lines, "end of message %s: %s" % (word, want), "\n".join(lines))

    # ------------------------------------------------------------------
    # negotiated options
    steps = {"noconnect": ("connect", 0x1), "nohelo": ("helo", 0x2), "nomail": ("envfrom", 0x4),
             "norcpt": ("envrcpt", 0x8), "nobody": ("body", 0x10), "nohdrs": ("header", 0x20),
             "noeoh": ("eoh", 0x40), "nounknown": ("unknown", 0x100), "nodata": ("data", 0x200)}
    for opt, (event, bit) in steps.items():
        with TestFilter(options=opt) as f:
            rc, lines = drive(f, plain, "--unknown", "XYZZY now")
            log = f.log()
            t.ok(line(lines, "open:").endswith("steps=0x%x" % bit), "%s negotiated" % opt, line(lines, "open:"))
            t.ok(not any(ln.startswith(event + " ") or ln == event for ln in log)
                 and any(ln.startswith("eom") for ln in log) and "eom: continue" in lines,
                 "  %s: no %s event, the rest as usual" % (opt, event), "\n".join(log))
    with TestFilter(options="nomail") as f:
        rc, lines = drive(f, plain)
        t.ok("macro rcpt i=4F2A9C01B" in f.log(), "the MAIL macros still go out without the MAIL event (as Postfix)")

    nr = "nr_conn,nr_helo,nr_mail,nr_rcpt,nr_data,nr_unkn,nr_hdr,nr_eoh,nr_body"
    big_body = "".join("line %05d of a long body .........................................\n" % i
                       for i in range(4000))
    big = msg("big.eml", "big body", body=big_body)
    big_crlf = big_body.replace("\n", "\r\n").encode()
    with TestFilter(options=nr) as f:
        rc, lines = drive(f, big, "--unknown", "XYZZY")
        t.like(line(lines, "open:"), r"steps=0xff080$", "every no-reply option negotiated")
        t.ok(all(ln.endswith(": continue") for ln in lines
                 if re.match(r"^(connect|helo|unknown|mail|rcpt|data|header|eoh|body|eom)\b", ln)),
             "  every event answered without a reply packet", "\n".join(lines))
        log = f.log()
        t.ok("eom bytes=%d chunks=5 fnv=%s" % (len(big_crlf), fnv1a64(big_crlf)) in log,
             "  and every event arrived: the whole body, in 5 chunks", "\n".join(log[-5:]))
        check_no_errors(lines, "no-reply options")

    with TestFilter() as f:
        rc, lines = drive(f, big)
        chunks = [int(ln.split()[1]) for ln in f.log() if ln.startswith("body ")]
        t.is_(chunks, [65535, 65535, 65535, 65535, len(big_crlf) - 4 * 65535], "body chunks of at most 65535 bytes")
    with TestFilter() as f:
        rc, lines = drive(f, big, "--chunk", "1000")
        chunks = [int(ln.split()[1]) for ln in f.log() if ln.startswith("body ")]
        t.is_(chunks, [65535, 65535, 65535, 65535, len(big_crlf) - 4 * 65535],
              "  also when the body is fed in 1000-byte pieces")

    with TestFilter(options="skip", verdicts={"body": "skip"}) as f:
        rc, lines = drive(f, big)
        log = f.log()
        t.ok(len([ln for ln in log if ln.startswith("body ")]) == 1 and any(ln.startswith("eom") for ln in log)
             and "eom: continue" in lines, "SKIP after the first body chunk: no more chunks, EOM still sent",
             "\n".join(log))

    with TestFilter(options="leadspc") as f:
        rc, lines = drive(f, msg("lead.eml", "do: addheader", extra=[("X-Tab", "\tvalue")]))
        log = f.log()
        t.ok("header Subject=[ do: addheader]" in log and "header X-Tab=[ \\tvalue]" in log,
             "HDR_LEADSPC: header values keep their leading white space", "\n".join(log))
        t.ok("edit: add_header X-Test-Added=added by the test filter" in lines,
             "  and a milter's value is taken as sent (no space added)", "\n".join(lines))

    with TestFilter(options="rcpt_rej") as f:
        rc, lines = drive(f, plain, "--offer-rcpt-rej", "--rejected-rcpt", "<unknown@example.org>")
        t.ok("envrcpt <unknown@example.org>" in f.log(), "RCPT_REJ offered and asked for: rejected recipients are sent")
    with TestFilter(options="rcpt_rej") as f:
        rc, lines = drive(f, plain, "--rejected-rcpt", "<unknown@example.org>")
        t.ok("envrcpt <unknown@example.org>" not in f.log() and "negotiate: the MTA does not offer 0x800" in f.log(),
             "  not offered (the default): they are not", "\n".join(f.log()))

    with TestFilter(options="symlist") as f:
        rc, lines = drive(f, plain)
        t.is_([line(lines, "macros %s:" % s) for s in ("connect", "mail", "rcpt", "eoh", "eom")],
              ["macros connect: {client_addr}", "macros mail: {mail_addr} i", "macros rcpt: {rcpt_addr}",
               "macros eoh: i", "macros eom: j {daemon_name}"], "SETSYMLIST replaces the lists it names")
        log = f.log()
        t.ok("macro connect {client_addr}=192.0.2.1" in log and "macro connect j=mx.petrel.test" not in log
             and "macro eom {daemon_name}=petrel" in log, "  and the milter gets exactly those", "\n".join(log))

    # ------------------------------------------------------------------
    # protocol versions
    # libmilter shows its filter the no-reply flags as offered whatever the
    # MTA said (it fakes them when the MTA lacks them): 0xff080 on top.
    for version, mta_flags, data_sent, unknown_sent in (("2", 0x7f | 0xff080, False, False),
                                                        ("3", 0x17f | 0xff080, False, True),
                                                        ("4", 0x37f | 0xff080, True, True)):
        with TestFilter() as f:
            rc, lines = drive(f, plain, "--protocol", version, "--unknown", "XYZZY")
            log = f.log()
            t.ok(line(lines, "open:").startswith("open: ok version=%s " % version)
                 and "negotiate mta_actions=0x1ff mta_flags=0x%x want_flags=0x0" % mta_flags in log,
                 "milter_protocol %s: offered and used" % version, "\n".join(lines[:2] + log[:2]))
            t.ok(("data" in log) == data_sent and any(ln.startswith("unknown") for ln in log) == unknown_sent
                 and "eom: continue" in lines, "  DATA %s, UNKNOWN %s" % ("sent" if data_sent else "not sent",
                                                                            "sent" if unknown_sent else "not sent"),
                 "\n".join(log))

    # ------------------------------------------------------------------
    # replacement bodies
    out = os.path.join(work, "bigbody.eml")
    with TestFilter() as f:
        rc, lines = drive(f, msg("replbig.eml", "do: replbody_big"), "--write-message", out)
        chunks = [ln for ln in lines if ln.startswith("edit: body_chunk")]
        expect = bytes((13 if i % 100 == 98 else 10 if i % 100 == 99 else 97 + i % 26) for i in range(200000))
        with open(out, "rb") as fp:
            got = fp.read().split(b"\r\n\r\n", 1)[1]
        t.ok(len(chunks) >= 4 and "edit: body_end 200000" in lines and got == expect,
             "a 200,000-byte replacement arrives in %d pieces, never whole, intact" % len(chunks), "\n".join(chunks))
    with TestFilter() as f:
        rc, lines = drive(f, msg("repllf.eml", "do: replbody_lf"), "--write-message", out)
        with open(out, "rb") as fp:
            got = fp.read().split(b"\r\n\r\n", 1)[1]
        t.is_(got, b"LF line one\r\nLF line two\r\n", "a replacement with LF line ends gets CRLF, and a final line end")
    with TestFilter() as f:
        rc, lines = drive(f, msg("replmax.eml", "do: replbody_big"), "--max-body", "100000")
        t.ok("eom: tempfail 451 4.3.5 Server configuration problem - try again later connection failed" in lines
             and has(lines, "log: warning milter %s: replacement body larger than 100000 bytes; default_action tempfail"
                     % f.endpoint), "a replacement above the limit fails the milter", "\n".join(lines))

    # ------------------------------------------------------------------
    # timeouts and PROGRESS
    with TestFilter() as f:
        rc, lines = drive(f, msg("progress.eml", "do: progress"), "--timeouts", "5000,5000,1000")
        t.ok("eom: continue" in lines, "PROGRESS every 0.3 s keeps a 1 s content timeout from firing (1.8 s in all)",
             "\n".join(lines))
    with TestFilter() as f:
        rc, lines = drive(f, msg("sleep.eml", "do: sleep2"), "--timeouts", "5000,5000,1000")
        t.ok("eom: tempfail 451 4.7.1 Service unavailable - try again later connection failed" in lines
             and ("log: warning milter %s: timeout after 1000 ms waiting for the reply to SMFIC_BODYEOB; "
                  "default_action tempfail" % f.endpoint) in lines,
             "without PROGRESS the content timeout fires: default action, with the reason logged", "\n".join(lines))

    # ------------------------------------------------------------------
    # sessions, messages, connection reuse
    with TestFilter() as f:
        rc, lines = drive(f, plain, "--sessions", "3")
        # the last close is logged when the connection ends, maybe after the driver exited
        log = f.log(until=lambda log: len([ln for ln in log if ln == "close"]) >= 3)
        t.ok(lines.count("reuse: quit_nc") == 2 and len([ln for ln in log if ln.startswith("negotiate")]) == 1
             and len([ln for ln in log if ln.startswith("connect ")]) == 3
             and len([ln for ln in log if ln == "close"]) == 3,
             "QUIT_NC: three SMTP sessions over one milter connection, one negotiation", "\n".join(log))
    with TestFilter() as f:
        rc, lines = drive(f, msg("acc.eml", "do: accept"), "--sessions", "2")
        t.ok("reuse: new connection" in lines and len([ln for ln in f.log() if ln.startswith("negotiate")]) == 2,
             "after an ACCEPT at end of message libmilter would ignore QUIT_NC: a new connection instead",
             "\n".join(lines))
    with TestFilter() as f:
        rc, lines = drive(f, plain, "--messages", "3", "--unknown", "XYZZY foo")
        log = f.log()
        t.ok(lines.count("eom: continue") == 3 and len([ln for ln in log if ln.startswith("eom")]) == 3
             and "unknown XYZZY foo" in log, "three messages in one session, and an unknown command", "\n".join(log))
    with TestFilter() as f:
        rc, lines = drive(f, plain, "--messages", "2", "--abort-after", "rcpt")
        log = f.log(until=lambda log: log.count("abort") >= 2)   # SMFIC_ABORT has no reply
        t.ok(log.count("abort") == 2 and not any(ln.startswith("data") for ln in log),
             "ABORT ends a transaction without a message", "\n".join(log))

    # ------------------------------------------------------------------
    # clients and endpoints
    for client, want in (("v6.example.com,2001:db8::25,4000,6", "connect host=v6.example.com family=inet6 port=4000 "
                                                                 "addr=2001:db8::25"),
                         ("unknown,192.0.2.9,25,4", "connect host=[192.0.2.9] family=inet port=25 addr=192.0.2.9"),
                         ("localhost,/run/client.sock,0,unix", "connect host=localhost family=unix port=-1 "
                                                               "addr=/run/client.sock"),
                         ("unknown,unknown,0,unknown", "connect host=unknown family=unknown port=-1 addr=none")):
        with TestFilter() as f:
            drive(f, plain, "--client", client)
            t.ok(want in f.log(), "client %s: %s" % (client, want), "\n".join(f.log()[:3]))
    with TestFilter(unix=True) as f:
        rc, lines = drive(f, plain)
        t.ok("eom: continue" in lines, "a milter on a unix: socket", "\n".join(lines))

    # ------------------------------------------------------------------
    # failure: milter down, edit refused
    port = refused_port()   # refused for as long as the test runs: no other test's server binds it
    for action, want in (("accept", "continue connection failed"),
                         ("tempfail", "tempfail 451 4.7.1 Service unavailable - try again later connection failed"),
                         ("reject", "reject 550 5.5.0 Service unavailable connection failed"),
                         ("shutdown", "shutdown 421 4.7.1 Service unavailable - try again later connection failed"),
                         ("quarantine", "continue connection failed quarantine=milter default_action")):
        rc, lines = scan_drive("milter", "--default-action", action, "inet:127.0.0.1:%d" % port, plain)
        t.ok("open: " + want in lines and "connect: " + want in lines,
             "milter down, default_action %s: %s" % (action, want), "\n".join(lines))
        t.ok(("log: warning milter inet:127.0.0.1:%d: connect to 127.0.0.1:%d: Connection refused" % (port, port))
             in lines, "  logged with the reason")
    rc, lines = scan_drive("milter", "--default-action", "accept", "inet:127.0.0.1:%d" % port, plain)
    t.ok("eom: continue connection failed" in lines, "  with accept, the message goes through", "\n".join(lines))

    with TestFilter() as f:
        rc, lines = drive(f, all_edits, "--fail-edit", "2")
        t.ok(has(lines, "eom: tempfail 451 4.3.0 Error: message modification failed edit_failed")
             and len([ln for ln in lines if ln.startswith("edit:")]) == 2,
             "an edit the MTA cannot apply: no further edits, 451 at the end", "\n".join(lines))
except PeerError as e:
    t.ok(False, "a peer could not start", str(e))

t.done()
