"""petrel-sendmail: local submission through the maildrop directory (petrel-postdrop writes the
file, the pickup role submits it), sendmail's options, -t address parsing, refused line breaks,
and the same path to delivery as SMTP mail. Runs in single-user mode: petreld, petrel-sendmail and
petrel-postdrop all run as one user (the test user when the suite runs as root)."""
import os
import re
import signal
import subprocess

from harness import Petrel, Tap, _runnable_copy, TOP_BUILDDIR, refused_port, maildir_messages as maildir, wait_for

t = Tap()
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
SERVICES = "pickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n"


with Petrel(t, extra_services=SERVICES, start=False) as p:
    mail = p.make_dir()
    conf = dict(p.settings)
    boxes = ["a", "b", "c", "d", "e"]
    conf.update({"virtual_mailbox_domains": "vmail.test", "virtual_mailbox_base": mail,
                 "virtual_mailbox_maps": "inline:{ %s, {@vmail.test = catchall/} }" %
                 ", ".join("{%s@vmail.test = %s/}" % (b, b) for b in boxes),
                 "myorigin": "vmail.test", "command_directory": os.path.dirname(POSTDROP),
                 # relayed mail goes to a dead loopback port, never to DNS
                 "transport_maps": "inline:{ {elsewhere.test = smtp:[127.0.0.1]:%d} }" % refused_port()})
    p.write_main_cf(conf)
    p.start()
    st = os.stat(os.path.join(p.queue, "maildrop"))
    t.is_(oct(st.st_mode & 0o7777), oct(0o1700), "petreld creates maildrop/ (mode 1700 in single-user mode)")
    t.ok(not os.path.exists(os.path.join(p.queue, "public", "pickup")), "there is no pickup socket any more")

    def sendmail(args, text, **kw):
        return subprocess.run(p.command(SENDMAIL, "-C", p.conf, *args), input=text.encode(),
                              capture_output=True, timeout=30, **kw)

    def box(name, count=1):
        # a delivery through pickup, the queue manager and virtual(8): the sanitizer build
        # on a loaded machine takes many seconds (the wait ends as soon as it is there)
        return wait_for(lambda: len(maildir(os.path.join(mail, name))) >= count and maildir(os.path.join(mail, name)),
                        timeout=60)

    r = sendmail(["-f", "sender@vmail.test", "a@vmail.test"], "Subject: via sendmail\n\nhello\n.\nafter the dot\n")
    t.is_(r.returncode, 0, "petrel-sendmail with a recipient argument exits 0")
    msgs = box("a")
    t.is_(len(msgs or []), 1, "the message is delivered like SMTP mail")
    m = msgs[0] if msgs else b""
    t.ok(b"Subject: via sendmail\n" in m, "with its headers")
    t.ok(b"hello\n" in m and b"after the dot" not in m, "a lone dot ends the message without -i")
    t.ok(b"Date: " in m and b"Message-ID: " in m and b"From: sender@vmail.test" in m,
         "missing Date, Message-ID and From are added")
    uid = p.pw.pw_uid if p.pw else os.getuid()
    t.like(m.decode("utf-8", "replace"), r"Received: by mx\.petrel\.test \(Petrel, from userid %d\)\n\tid \w+; " % uid,
           "the Received: header names the submitting uid, as Postfix's pickup does")
    t.ok(p.wait_log(r"pickup\[\d+\]: \w+: uid=%d from=<sender@vmail\.test>" % uid) is not None,
         "the pickup logs uid= and from= with the queue ID (Postfix's line)")

    r = sendmail(["-t", "-i", "-F", "Test User"],
                 "To: b@vmail.test\nCc: Someone <c@vmail.test>\nBcc: a@vmail.test\nSubject: extract\n\nline\n.\nkept\n")
    t.is_(r.returncode, 0, "-t -i exits 0")
    b, c, a = box("b"), box("c"), box("a", 2)
    t.ok(b and c, "-t takes To and Cc recipients")
    t.ok(a and len(a) == 2, "and Bcc recipients")
    t.ok(b and b"Bcc:" not in b[0], "the Bcc header is removed")
    t.ok(b and b".\nkept\n" in b[0], "-i: a lone dot does not end the message")
    t.ok(b and b"From: Test User <" in b[0], "-F sets the From: full name")

    # Finding 20: header addresses with spaces, groups, comments, display names (they were dropped).
    r = sendmail(["-t"], 'To: "john doe"@vmail.test, team: d@vmail.test (Dee), "Doe, E." <e@vmail.test>;\n'
                         'Subject: spaces\n\nx\n')
    t.is_(r.returncode, 0, "-t accepts a quoted local part with a space, a group, comments, display names",
          ) or t.diag(r.stderr.decode())
    t.ok(box("catchall") and box("d") and box("e"), '"john doe"@vmail.test, and the group\'s members, get the message')
    t.ok(p.wait_log(r'to=<"john doe"@vmail\.test>, .*status=sent') is not None,
         "the quoted address is the envelope recipient, quotes and space intact")

    r = sendmail(["-t"], "To: Joe <joe@vmail.test\nSubject: bad\n\nx\n")
    t.is_(r.returncode, 64, "an unparsable To: header exits EX_USAGE instead of losing the address")
    t.like(r.stderr.decode(), r"To/Cc/Bcc header: cannot parse .*missing '>'", "and says what is wrong")

    r = sendmail(["-t"], "Subject: nobody\n\nx\n")
    t.is_(r.returncode, 64, "-t without recipients exits EX_USAGE")
    t.ok(b"no recipient addresses" in r.stderr, "and says why")

    # Finding 14: line breaks in arguments never reach the envelope. The pickup
    # removes a maildrop file after the queue file is made, so after the
    # deliveries above it may still be there a moment: wait until maildrop/ is
    # empty, so that the check below is about these submissions only.
    wait_for(lambda: os.listdir(os.path.join(p.queue, "maildrop")) == [], timeout=30)
    for args, what in ((["-f", "s@vmail.test\r\nRCPT TO:<x@elsewhere.test>", "a@vmail.test"], "the -f sender"),
                       (["a@vmail.test\r\nRCPT TO:<x@elsewhere.test>"], "a recipient argument"),
                       (["a@vmail.test\nDATA"], "a recipient argument"),
                       (["-F", "Name\r\nBcc: x@elsewhere.test", "a@vmail.test"], "the -F full name")):
        r = sendmail(args, "Subject: crlf\n\nx\n")
        t.is_(r.returncode, 64, "CR/LF in %s: exit 64" % what)
        t.is_(r.stderr.decode().strip(), "petrel-sendmail: %s contains a line break (CR or LF): refused" % what,
              "with a clear message")
    t.is_(os.listdir(os.path.join(p.queue, "maildrop")), [], "and nothing was stored")

    r = sendmail(["-f", "s@vmail.test", "x@elsewhere.test"], "Subject: relay\n\nx\n")
    t.is_(r.returncode, 0, "local submission may relay (as mynetworks may)")

    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-bp"), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0 and ("Queue ID" in r.stdout or "empty" in r.stdout), "-bp lists the queue")
    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-q"), capture_output=True, text=True, timeout=30)
    t.is_(r.returncode, 0, "-q flushes the queue")

    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-Z"), capture_output=True, text=True, timeout=30)
    t.is_(r.returncode, 64, "an unknown option exits EX_USAGE")

    r = sendmail(["-f", "s@vmail.test", "a@vmail.test"], "Subject: big\n\n" + ("x" * 1000 + "\n") * 20,
                 env=dict(os.environ))
    t.is_(r.returncode, 0, "a 20 KB message is fine")
    small = dict(conf)
    small["message_size_limit"] = "10000"
    p.write_main_cf(small)
    r = sendmail(["a@vmail.test"], "Subject: big\n\n" + ("x" * 1000 + "\n") * 20)
    t.is_(r.returncode, 69, "a message over message_size_limit exits EX_UNAVAILABLE")
    t.like(r.stderr.decode(), r"message too large \(message_size_limit = 10000 bytes\)", "and says why")
    p.write_main_cf(conf)

    # Finding 20: petreld down is no reason to refuse mail.
    p.stop()
    # petrel-sendmail stops petrel-postdrop with SIGTERM when the message is
    # over message_size_limit, often just as postdrop creates its file. A
    # SIGTERM between the file's creation and the handler learning its name
    # left an empty file (never ready: pickup ignores it for an hour) in
    # about one try of 20 on a loaded machine: once in CI, test 42 below.
    # strace holds postdrop inside that openat (2 s) while the signal comes.
    # With petreld down nothing picks up, so whatever stays is seen.
    drop = os.path.join(p.queue, "maildrop")
    # LeakSanitizer cannot work under ptrace: in a sanitizer build the traced
    # postdrop runs without leak checking (ASan's other checks stay on).
    traced_env = dict(os.environ)
    traced_env["ASAN_OPTIONS"] = ":".join(x for x in (traced_env.get("ASAN_OPTIONS"), "detect_leaks=0") if x)
    r = subprocess.run(p.command("strace", "-f", "-e", "trace=openat", POSTDROP, "-c", p.conf), input=b"",
                       capture_output=True, timeout=30, env=traced_env)
    calls = [x for x in r.stderr.decode().splitlines() if re.match(r"(\[pid +\d+\] )?openat\(", x)]
    nth = [i + 1 for i, x in enumerate(calls) if "O_EXCL" in x]
    t.ok(nth, "postdrop creates its file with O_EXCL (seen through strace)", r.stderr.decode()[-2000:])
    held = subprocess.Popen(p.command("strace", "-o", "/dev/null", "-e", "trace=openat", "-e",
                                      "inject=openat:delay_exit=2000000:when=%d" % (nth or [1])[0], POSTDROP,
                                      "-c", p.conf), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=traced_env)
    made = wait_for(lambda: os.listdir(drop), timeout=30)
    for pid in subprocess.run(["pgrep", "-P", str(held.pid)], capture_output=True, text=True).stdout.split():
        os.kill(int(pid), signal.SIGTERM)
    held.communicate(timeout=30)
    t.ok(made and held.returncode == 128 + signal.SIGTERM, "SIGTERM while postdrop creates its file: it stops",
         "made %r, exit %r" % (made, held.returncode))
    t.is_(os.listdir(drop), [], "and the file it was creating is gone")
    r = sendmail(["-f", "late@vmail.test", "c@vmail.test"], "Subject: while down\n\nx\n")
    t.is_(r.returncode, 0, "with petreld down, petrel-sendmail still exits 0")
    t.ok(len(os.listdir(os.path.join(p.queue, "maildrop"))) >= 1, "the message waits in maildrop/")
    p.start()
    got = box("c", 2)
    t.ok(got and any(b"Subject: while down" in x for x in got), "and is delivered when petreld starts")
    t.ok(wait_for(lambda: os.listdir(os.path.join(p.queue, "maildrop")) == [], timeout=45),
         "the maildrop file is gone once the queue file exists",
         "maildrop/: %r\n%s" % (os.listdir(os.path.join(p.queue, "maildrop")), p.log()[-4000:]))
t.done()
