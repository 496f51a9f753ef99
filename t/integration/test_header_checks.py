"""header_checks, mime_header_checks, nested_header_checks and body_checks (header_checks(5)),
end to end: every action with its exact reply, its log line (Postfix's cleanup wording) and the
message as it is delivered to a Maildir; MIME structure (multipart parts, attached messages,
boundaries as body lines, base64 left encoded); our own Received header checked first; the
cleanup service's settings (cleanup_service_name) and receive_override_options; hostile MIME
with exact outcomes (nesting past mime_nesting_limit, boundaries past
mime_boundary_length_limit, headers past header_size_limit, lines past line_length_limit,
hopcount_limit, strict_8bitmime); a table that fails; and that the server keeps serving."""
import os
import re
import subprocess

from harness import TOP_BUILDDIR, Petrel, Tap, _runnable_copy, free_port, maildir_messages, wait_for

t = Tap(timeout=400)

HEADER_CHECKS = r"""
/^Subject: reject-plain/            REJECT
/^Subject: reject-text/             REJECT no thanks
/^Subject: reject-dsn/              REJECT 5.7.9 spam level
/^Subject: reject-4xx/              REJECT 4.7.1 try later
/^Subject: reject-2xx/              REJECT 2.0.0 fine
/^Subject: warn/                    WARN looked at it
/^Subject: info/                    INFO just so you know
/^Subject: hold/                    HOLD held for review
/^Subject: discard/                 DISCARD gone
/^Subject: dunno/                   DUNNO
/^Subject: ok-compat/               OK
/^X-Ignore-Me:/                     IGNORE
/^X-Strip-Me:/                      STRIP stripped
/^Subject: prepend (.*)/            PREPEND X-Prepended: $1
/^X-Replace-Me: (.*)/               REPLACE X-Replaced: was $1
/^Subject: redirect/                REDIRECT r2@vmail.test
/^Subject: bcc/                     BCC r2@vmail.test
/^Subject: pass/                    PASS trusted sender
/^Subject: unknown-action/          FROBNICATE now
/^Subject: bad-prepend/             PREPEND not a header
/^Subject: bad-redirect/            REDIRECT no-at-sign
/^Subject: bad-bcc/                 BCC <r2@vmail.test>
/^Subject: bad-filter/              FILTER no-colon
/^Subject: empty-filter/            FILTER
/^Received: from strip-our-received/ IGNORE
/^Content-Type:.*name="?[^";]*\.exe/  REJECT executable attachment
/^X-Nested-Only:/                   REJECT header_checks saw a nested header
/^Subject: folded..second line/     REJECT folded headers are matched with their line break
/^Subject: echo (.*)/               REJECT 5.7.1 refused: $1
"""

NESTED_CHECKS = r"""
/^Subject: nested-evil/   REJECT nested message rejected
"""

BODY_CHECKS = r"""
/^body-reject$/          REJECT 5.7.2 bad body line
/^body-ignore$/          IGNORE
/^body-replace (.*)$/    REPLACE replaced body: $1
/^body-prepend$/         PREPEND prepended body line
/^--b1$/                 INFO boundary line is body
/^late-reject$/          REJECT late line
/^c3BhbQ==$/             REJECT base64 as written
/^spam$/                 REJECT decoded text
/^x{2048}$/              REJECT a whole line_length_limit record
"""

SUB_CHECKS = r"""
/^Subject: sub-only/     REJECT 5.7.3 subcleanup rule
/^Content-Type: text/    REJECT mime header seen
"""

SLOW_PCRE = r"""
/^Subject: (a+)+$/       REJECT never decided
"""

QMGR = "qmgr unix n - n 300 1 qmgr\n"
# Local submission (petrel-sendmail -> maildrop -> pickup) goes through the same checks.
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
PICKUP = "pickup unix n - n 1 1 pickup\n"
ports = {name: free_port() for name in ("nochecks", "sub", "smtpdo", "strict", "slow")}

with Petrel(t, main_cf={}, start=False) as p:
    hc = p.write_file("header_checks", HEADER_CHECKS)
    nc = p.write_file("nested_checks", NESTED_CHECKS)
    bc = p.write_file("body_checks", BODY_CHECKS)
    sc = p.write_file("sub_checks", SUB_CHECKS)
    slow = p.write_file("slow.pcre", SLOW_PCRE)
    mail = p.virtual_mailboxes({"u@vmail.test": "vmail.test/u/", "r2@vmail.test": "vmail.test/r2/"}, {
        "header_checks": "regexp:" + hc,
        "nested_header_checks": "regexp:" + nc,
        "body_checks": "regexp:" + bc,
        "body_checks_size_limit": "1000",
        "command_directory": os.path.dirname(POSTDROP),
        "maillog_file": p.log_path,
    })
    master = p.master_cf
    master += "127.0.0.1:%d inet n - n - - smtpd\n  -o receive_override_options=no_header_body_checks\n" % ports["nochecks"]
    master += "127.0.0.1:%d inet n - n - - smtpd\n  -o cleanup_service_name=subcleanup\n" % ports["sub"]
    master += "127.0.0.1:%d inet n - n - - smtpd\n  -o header_checks=regexp:%s\n" % (ports["smtpdo"], sc)
    master += "127.0.0.1:%d inet n - n - - smtpd\n  -o cleanup_service_name=strictcleanup\n" % ports["strict"]
    master += "127.0.0.1:%d inet n - n - - smtpd\n  -o cleanup_service_name=slowcleanup\n" % ports["slow"]
    master += "cleanup unix n - n - 0 cleanup\n"
    master += ("subcleanup unix n - n - 0 cleanup\n  -o header_checks=regexp:%s\n  -o body_checks=\n"
               "  -o disable_mime_input_processing=yes\n" % sc)
    master += ("strictcleanup unix n - n - 0 cleanup\n  -o strict_8bitmime=yes\n  -o mime_nesting_limit=3\n"
               "  -o header_size_limit=1000\n  -o mime_boundary_length_limit=16\n")
    master += "slowcleanup unix n - n - 0 cleanup\n  -o header_checks=pcre:%s\n" % slow
    master += PICKUP + QMGR
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(master)
    p._chown()
    p.start()
    t.ok(p.wait_log(r"service %d: -o header_checks has no effect on an smtpd service" % ports["smtpdo"]) or
         p.wait_log(r"service 127\.0\.0\.1:%d: -o header_checks has no effect on an smtpd service" % ports["smtpdo"]),
         "-o header_checks on an smtpd line is warned about: Postfix's smtpd does not read it")

    def inbox(user="u"):
        return maildir_messages(os.path.join(mail, "vmail.test", user))

    def delivered(tag, user="u"):
        """The delivered message (LF line ends) whose content has tag, waiting for it."""
        found = wait_for(lambda: [m for m in inbox(user) if tag.encode() in m])
        return found[0] if found else None

    def send(body, rcpts=("u@vmail.test",), port=None, ehlo="client.example.org"):
        from harness import Smtp
        c = Smtp(port or p.port)
        c.ehlo(ehlo)
        c.cmd("MAIL FROM:<sender@example.org>")
        for r in rcpts:
            c.cmd("RCPT TO:<%s>" % r)
        c.cmd("DATA")
        c.send(body.encode() if isinstance(body, str) else body)
        c.send(b"\r\n.\r\n")
        reply = c.read_reply()
        c.close()
        return reply

    def logline(pattern):
        m = p.wait_log(pattern)
        return m.group(0) if m else None

    origin = r"from unknown\[127\.0\.0\.1\]; from=<sender@example\.org> to=<u@vmail\.test> proto=ESMTP helo=<client\.example\.org>"

    # --- REJECT ---------------------------------------------------------------
    t.is_(send("Subject: reject-plain\r\n\r\nbody"), "550 5.7.1 message content rejected",
          "REJECT without text: 550 5.7.1 message content rejected")
    t.ok(logline(r": reject: header Subject: reject-plain %s: 5\.7\.1 message content rejected" % origin),
         "logged as Postfix's cleanup logs it")
    t.is_(send("Subject: reject-text\r\n\r\nbody"), "550 5.7.1 no thanks", "REJECT text: 550 5.7.1 text")
    t.is_(send("Subject: reject-dsn\r\n\r\nbody"), "550 5.7.9 spam level", "REJECT with a code keeps it")
    t.is_(send("Subject: reject-4xx\r\n\r\nbody"), "451 4.7.1 try later", "REJECT 4.x.x defers: 451")
    t.is_(send("Subject: reject-2xx\r\n\r\nbody"), "451 4.0.0 fine", "REJECT 2.x.x is made 4.x.x")
    t.ok(logline(r"warning: bad DSN action in 2\.0\.0 fine -- need 4\.x\.x or 5\.x\.x"), "with Postfix's warning")
    t.ok(len(re.findall(r"reject: header Subject: reject-text", p.log())) == 1 and
         not re.search(r"reject: END-OF-MESSAGE .*no thanks", p.log()),
         "one reject line per refused message (pflogsumm counts it once)")
    t.ok(not [f for f in p.queue_files() if os.path.getsize(f) > 0 and b"reject-" in open(f, "rb").read()],
         "a refused message leaves nothing in the queue")
    t.is_(send("Subject: folded\r\n\tsecond line\r\n\r\nbody"),
          "550 5.7.1 folded headers are matched with their line break",
          "a folded header is one logical header, its lines joined with a newline (not unfolded)")

    # A REJECT text with $1 of a folded header: the line break must not reach the client,
    # where it would end the reply early and inject a reply of the client's choosing.
    from harness import Smtp
    c = Smtp(p.port)
    c.ehlo()
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<u@vmail.test>")
    c.cmd("DATA")
    c.send(b"Subject: echo a\r\n 250 2.0.0 Ok: injected\r\n\r\nbody\r\n.\r\n")
    t.is_(c.read_reply(), "550 5.7.1 refused: a? 250 2.0.0 Ok: injected",
          "REJECT text from $1: a folded header's line break is '?' in the reply (one line)")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "and the next reply is the next command's")
    c.close()
    t.is_(send("Subject: echo " + "x" * 600 + "\r\n\r\nbody"), "550 5.7.1 refused: " + "x" * 391,
          "REJECT text from $1 is cut so that the reply line stays within 512 octets")

    # --- logging actions --------------------------------------------------------
    t.like(send("Subject: warn me\r\n\r\nbody warn"), r"^250 2\.0\.0 Ok: queued as \w+", "WARN accepts")
    t.ok(logline(r": warning: header Subject: warn me %s: looked at it" % origin), "WARN logs a warning: line")
    t.ok(delivered("body warn") is not None, "and the message is delivered")
    t.like(send("Subject: info me\r\n\r\nbody info"), r"^250 ", "INFO accepts")
    t.ok(logline(r": info: header Subject: info me %s: just so you know" % origin), "INFO logs an info: line")
    for word in ("dunno", "ok-compat"):
        t.like(send("Subject: %s\r\n\r\nbody %s" % (word, word)), r"^250 ", "%s accepts" % word.upper())
        t.ok(delivered("body %s" % word) is not None, "%s: delivered unchanged" % word.upper())

    # --- HOLD, DISCARD ---------------------------------------------------------
    r = send("Subject: hold this\r\n\r\nbody hold")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "HOLD answers 250")
    qid = r.split()[-1]
    t.ok(wait_for(lambda: any(f.endswith("/" + qid) for f in p.queue_files("hold"))), "and the message waits in hold/")
    t.ok(logline(r"%s: hold: header Subject: hold this %s: held for review" % (qid, origin)), "HOLD is logged")
    t.ok(not re.search(r"%s: hold: END-OF-MESSAGE" % qid, p.log()), "once (by the checks, not again by smtpd)")
    r = send("Subject: discard this\r\n\r\nbody discard")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "DISCARD answers 250")
    qid = r.split()[-1]
    t.ok(logline(r"%s: discard: header Subject: discard this %s: gone" % (qid, origin)), "DISCARD is logged")
    t.ok(not any(qid in f for f in p.queue_files()) and not re.search(r"%s: discard: END-OF-MESSAGE" % qid, p.log()),
         "nothing is kept and nothing else logged")

    # --- header edits ----------------------------------------------------------
    r = send("Subject: prepend hello\r\nX-Ignore-Me: 1\r\nX-Strip-Me: 2\r\nX-Replace-Me: old value\r\n"
             "X-Keep: 3\r\n\r\nbody edits")
    t.like(r, r"^250 ", "header edits: accepted")
    m = delivered("body edits") or b""
    t.ok(b"X-Prepended: hello\nSubject: prepend hello\n" in m, "PREPEND puts its header right before the matched one",
         m)
    t.ok(b"X-Ignore-Me" not in m and b"X-Strip-Me" not in m, "IGNORE and STRIP remove the header")
    t.ok(b"X-Replaced: was old value\n" in m and b"X-Replace-Me" not in m, "REPLACE with $1 substitution")
    t.ok(b"X-Keep: 3\n" in m, "other headers stay")
    t.ok(logline(r": strip: header X-Strip-Me: 2 %s: stripped" % origin), "STRIP is logged")
    t.ok(logline(r": replace: header X-Replace-Me: old value %s: X-Replaced: was old value" % origin),
         "REPLACE is logged")
    t.ok(not re.search(r"X-Ignore-Me", p.log()), "IGNORE is not logged (Postfix)")
    t.like(send("Subject: bad-prepend\r\n\r\nbody bad prepend"), r"^250 ", "a PREPEND that is no header is not applied")
    t.ok(logline(r'warning: bad PREPEND header text "not a header" in header_checks map -- need "headername: headervalue"'),
         "and warned about")
    t.like(send("Subject: unknown-action\r\n\r\nbody unknown"), r"^250 ", "an unknown action is ignored")
    t.ok(logline(r"warning: unknown command in header_checks map: FROBNICATE"), "with a warning")

    # --- our own Received header ------------------------------------------------
    r = send("Subject: our received\r\n\r\nbody our received", ehlo="strip-our-received.example")
    t.like(r, r"^250 ", "our Received header is checked too")
    m = delivered("body our received") or b""
    t.ok(b"Received: from strip-our-received" not in m and b"Subject: our received\n" in m,
         "IGNORE removes our own Received header, as Postfix's cleanup removes smtpd's", m[:300])

    # --- REDIRECT, BCC, PASS -----------------------------------------------------
    r = send("Subject: redirect me\r\n\r\nbody redirect")
    t.like(r, r"^250 ", "REDIRECT accepts")
    t.ok(delivered("body redirect", "r2") is not None, "the message goes to the REDIRECT address")
    t.ok(not [m for m in inbox("u") if b"body redirect" in m], "and not to its recipient")
    t.ok(logline(r": redirect: header Subject: redirect me %s: r2@vmail\.test" % origin), "REDIRECT is logged")
    r = send("Subject: bcc me\r\n\r\nbody bcc")
    t.ok(delivered("body bcc", "r2") is not None and delivered("body bcc", "u") is not None,
         "BCC adds a recipient; the original one still gets the message")
    m = p.wait_log(r"(\w+): bcc: header Subject: bcc me %s: r2@vmail\.test" % origin)
    t.ok(m, "BCC is logged")
    t.ok(m and m.group(1) == r.split()[-1], "under the queue ID of the 250 reply", (m and m.group(1), r))
    t.ok(m and logline(r"%s: edited by header/body checks \(1 change\)" % m.group(1)),
         "the rewritten queue file is logged as the checks' edit (not the modules')")
    # A bad argument is warned about (Postfix's words, naming the list) and the action ignored.
    for subject, warning in (("bad-redirect", r'bad REDIRECT target "no-at-sign" in header_checks map -- '
                                              r'need user@domain'),
                             ("bad-bcc", r'bad BCC address "<r2@vmail\.test>" in header_checks map -- '
                                         r'need user@domain'),
                             ("bad-filter", r"bad FILTER command no-colon in header_checks -- need "
                                            r"transport:destination"),
                             ("empty-filter", r"missing FILTER command argument in header_checks map")):
        r = send("Subject: %s\r\n\r\nbody %s" % (subject, subject))
        t.like(r, r"^250 ", "%s: accepted" % subject)
        t.ok(logline(r"warning: " + warning), "  with Postfix's warning")
        t.ok(delivered("body %s" % subject) is not None and
             not [m for m in inbox("r2") if ("body %s" % subject).encode() in m],
             "  and delivered to its recipient only, as if the rule were not there")
        t.ok(not re.search(r": (redirect|bcc|filter): header Subject: %s" % subject, p.log()),
             "  nothing is logged as done")
    r = send("Subject: pass me\r\n\r\nbody-reject\r\nbody pass")
    t.like(r, r"^250 ", "PASS: no more checks for this message (the body rule does not fire)")
    t.ok(logline(r": pass: header Subject: pass me %s: trusted sender" % origin), "PASS is logged")

    # --- body checks --------------------------------------------------------------
    t.is_(send("Subject: b\r\n\r\nfirst\r\nbody-reject\r\n"), "550 5.7.2 bad body line", "body REJECT")
    t.ok(logline(r": reject: body body-reject %s: 5\.7\.2 bad body line" % origin), "logged as body")
    r = send("Subject: body edits\r\n\r\nbody-ignore\r\nbody-replace xyz\r\nbody-prepend\r\nbody edits end\r\n")
    m = delivered("body edits end") or b""
    t.ok(b"body-ignore" not in m and b"replaced body: xyz\n" in m and b"prepended body line\nbody-prepend\n" in m,
         "body IGNORE, REPLACE and PREPEND", m)
    late = "Subject: late\r\n\r\n" + ("filler line\r\n" * 100) + "late-reject\r\nbody late\r\n"
    t.like(send(late), r"^250 ", "body_checks_size_limit: a line past the limit is not inspected")
    t.is_(send("Subject: x\r\n\r\n" + "x" * 2048 + "yz\r\n"), "550 5.7.1 a whole line_length_limit record",
          "a long body line is inspected line_length_limit bytes at a time (Postfix's records)")
    long_line = "q" * 5000
    send("Subject: long line\r\n\r\n" + long_line + "\r\nbody long line\r\n")
    m = delivered("body long line") or b""
    t.ok(("\n" + long_line + "\n").encode() in m, "and the long line is delivered whole")

    # --- MIME ---------------------------------------------------------------------
    mime = ("Subject: mime\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            "preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\n"
            "Content-Type: application/octet-stream; name=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            "c3BhbQ==\r\n--b1--\r\n")
    t.is_(send(mime % "run.exe"), "550 5.7.1 executable attachment",
          "mime_header_checks (default $header_checks) see a part's Content-Type")
    t.ok(logline(r': reject: header Content-Type: application/octet-stream; name="run\.exe" %s' % origin),
         "logged with the part header")
    t.is_(send(mime % "data.bin"), "550 5.7.1 base64 as written",
          "body_checks see base64 as it is written (Postfix decodes nothing)")
    t.ok(logline(r": info: body --b1 %s: boundary line is body" % origin), "boundary lines are body lines")
    decoded = mime.replace("c3BhbQ==", "not-base64") % "data.bin"
    t.like(send(decoded.replace("hello", "spam-free") + "\r\nmime decoded ok"), r"^250 ",
           "nothing is decoded: the decoded word does not match")
    nested = ("Subject: carrier\r\nContent-Type: multipart/mixed; boundary=\"n1\"\r\n\r\n--n1\r\n"
              "Content-Type: message/rfc822\r\n\r\nSubject: %s\r\nX-Nested-Only: 1\r\n\r\ninner\r\n--n1--\r\n")
    t.is_(send(nested % "nested-evil"), "550 5.7.1 nested message rejected",
          "nested_header_checks see an attached message's headers")
    t.like(send(nested % "harmless" + "\r\nnested ok"), r"^250 ",
           "header_checks do not (X-Nested-Only is in header_checks only)")
    t.like(send("Subject: nested-evil\r\n\r\nprimary nested-evil"), r"^250 ",
           "and nested_header_checks do not see the primary headers")

    # --- hostile MIME -------------------------------------------------------------
    deep = "".join("Content-Type: multipart/mixed; boundary=\"d%d\"\r\n\r\n--d%d\r\n" % (i, i) for i in range(105))
    t.is_(send("Subject: deep\r\n" + deep + "x\r\n"), "550 5.6.0 MIME nesting exceeds safety limit",
          "nesting past mime_nesting_limit (100) with header checks: 550 5.6.0")
    t.ok(logline(r": reject: mime-error MIME nesting exceeds safety limit: Content-Type: multipart/mixed; "
                 r"boundary=\"d10[12]\" from unknown\[127\.0\.0\.1\]; from=<sender@example\.org> to=<u@vmail\.test>"),
         "logged as Postfix logs a MIME error")
    t.like(send("Subject: deep without checks\r\n" + deep + "x\r\n", port=ports["nochecks"]), r"^250 ",
           "without checks (no_header_body_checks) the same message is accepted, as in Postfix")
    t.is_(send("Subject: deep3\r\n" + "".join(
              "Content-Type: multipart/mixed; boundary=\"d%d\"\r\n\r\n--d%d\r\n" % (i, i) for i in range(6)) + "x\r\n",
              port=ports["strict"]),
          "550 5.6.0 MIME nesting exceeds safety limit", "mime_nesting_limit = 3 of the cleanup service applies")
    def boundary_msg(b):
        return ("Subject: long boundary\r\nContent-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n--%s\r\n"
                "Content-Type: application/x; name=\"a.exe\"\r\n\r\nx\r\n--%s--\r\nbody boundary\r\n" % (b, b, b))
    t.is_(send(boundary_msg("B" * 300), port=ports["strict"]), "550 5.7.1 executable attachment",
          "a boundary past mime_boundary_length_limit (16) is kept cut and still finds its parts")
    t.like(send(boundary_msg("B" * 5000)), r"^250 ",
           "with the default limit (2048 = line_length_limit) a 5000-byte boundary line is cut into records and "
           "never matches: its parts are body, as in Postfix")
    big_header = "Subject: big\r\n" + "".join("\tcontinuation line %04d of a long header\r\n" % i for i in range(60))
    r = send(big_header + "X-After: yes\r\n\r\nbody big header", port=ports["strict"])
    t.like(r, r"^250 ", "a header past header_size_limit is accepted")
    m = delivered("body big header") or b""
    head = m.split(b"\n\n", 1)[0]
    subject = re.search(rb"\nSubject: big\n((?:\t[^\n]*\n)*)", head)
    t.ok(subject is not None and len(subject.group(0)) < 1100 and b"continuation line 0024" in head and
         b"continuation line 0025" not in head and head.endswith(b"\nX-After: yes"),
         "stored cut to header_size_limit (the lines past it dropped, as Postfix drops them); the next header stays",
         head[-400:])
    t.is_(send("Subject: caf\xe9\r\n\r\nbody".encode("latin-1"), port=ports["strict"]),
          "550 5.6.0 improper use of 8-bit data in message header", "strict_8bitmime: 8-bit header refused")
    hops = "".join("Received: from hop%d.example by relay%d.example; Thu, 1 Jan 2026 00:00:00 +0000\r\n" % (i, i)
                   for i in range(49))
    t.is_(send(hops + "Subject: hops\r\n\r\nbody"), "554 5.4.0 Error: too many hops",
          "hopcount_limit: 49 Received headers plus ours make 50: refused")
    t.ok(logline(r"warning: \w+: message rejected: hopcount exceeded"), "with Postfix's warning")
    t.like(send(hops.split("\r\n", 1)[1] + "Subject: hops ok\r\n\r\nbody hops ok"), r"^250 ", "48 plus ours pass")

    # --- without checks, a MIME message is stored exactly as it came -------------------
    exact = ("Subject: exact\r\nContent-Type: multipart/mixed; boundary=\"e\"\r\n\r\n--e\r\nContent-Type: text/plain"
             "\r\nX-Part: 1\r\n\r\npart one\r\n--e\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n"
             "inner\r\n--e--\r\nbody exact copy\r\n")
    t.like(send(exact, port=ports["nochecks"]), r"^250 ", "a MIME message through a listener without checks")
    m = delivered("body exact copy") or b""
    t.ok(m.endswith(exact.replace("\r\n", "\n").encode() + b"\n"),
         "is delivered byte for byte after our Received header (its parts written once, in place)", m)

    # --- the cleanup service's settings -----------------------------------------------
    t.like(send("Subject: reject-plain\r\n\r\nbody nochecks", port=ports["nochecks"]), r"^250 ",
           "receive_override_options = no_header_body_checks: no REJECT")
    t.is_(send("Subject: sub-only\r\n\r\nbody", port=ports["sub"]), "550 5.7.3 subcleanup rule",
          "cleanup_service_name: that cleanup service's -o header_checks apply")
    t.like(send("Subject: reject-plain\r\n\r\nbody sub main", port=ports["sub"]), r"^250 ",
           "and main.cf's do not")
    t.like(send("Subject: sub mime\r\nContent-Type: multipart/mixed; boundary=s\r\n\r\n--s\r\nContent-Type: text/plain"
                "\r\n\r\nx\r\n--s--\r\nbody sub mime", port=ports["sub"]), r"^250 ",
           "disable_mime_input_processing: a part's headers are body, not seen by mime_header_checks")
    t.like(send("Subject: sub-only\r\n\r\nbody smtpd -o", port=ports["smtpdo"]), r"^250 ",
           "-o header_checks on the smtpd line itself does nothing (Postfix's smtpd never reads it)")

    # --- local submission: pickup has the same checks ---------------------------------
    def sendmail(args, text):
        return subprocess.run(p.command(SENDMAIL, "-C", p.conf, *args), input=text.encode(),
                              capture_output=True, timeout=60)

    r = sendmail(["-f", "u@vmail.test", "u@vmail.test"], "Subject: bcc by pickup\n\nbody pickup bcc\n")
    t.ok(r.returncode == 0, "petrel-sendmail takes a message", r.stderr)
    t.ok(delivered("body pickup bcc", "r2") is not None and delivered("body pickup bcc", "u") is not None,
         "pickup: header_checks BCC applies to local submission")
    t.ok(logline(r": bcc: header Subject: bcc by pickup from local; from=<u@vmail\.test> to=<u@vmail\.test>: "
                 r"r2@vmail\.test"), "logged with 'from local', as Postfix's cleanup logs pickup's mail")
    r = sendmail(["-f", "u@vmail.test", "u@vmail.test"], "Subject: reject-text by pickup\n\nbody pickup reject\n")
    t.ok(r.returncode == 0, "petrel-sendmail takes a message the checks will refuse (it is queued later)", r.stderr)
    bounce = wait_for(lambda: [m for m in inbox("u") if b"Subject: reject-text by pickup\n" in m and
                               b"\n<u@vmail.test>: 550 5.7.1 no thanks\n" in m], timeout=30)
    t.ok(bounce, "pickup: a REJECT comes back to the sender as a bounce with the rule's reply")
    t.ok(logline(r": reject: header Subject: reject-text by pickup from local; from=<u@vmail\.test> "
                 r"to=<u@vmail\.test>: 5\.7\.1 no thanks"), "logged as the checks' reject")
    t.ok(not [m for m in inbox("u") if b"body pickup reject" in m], "and the message itself is not delivered")

    # --- a table that fails ---------------------------------------------------------
    t.is_(send("Subject: " + "a" * 40 + "b\r\n\r\nbody", port=ports["slow"]), "451 4.3.0 Error: queue file write error",
          "a table that fails (pcre match limit) defers the message: 451 4.3.0")
    t.ok(logline(r"warning: \w+: header_checks map lookup problem -- message not accepted, try again later"),
         "with Postfix's warning")
    t.like(send("Subject: still serving\r\n\r\nbody still serving"), r"^250 ", "and the server keeps serving")
    t.ok(delivered("body still serving") is not None, "and delivering")
t.done()
