"""Hostile addresses through petrel-sendmail (issue 8, finding 1, the local-submission side).

A local user controls everything petrel-sendmail is given: recipient arguments, the To:/Cc:/Bcc:
headers read by -t, the -f sender, and the SMTP envelope of -bs. None of it may become a command
or a file: commands and files are delivery targets only when the admin's alias table names them.
Every hostile form below tries to create a file in a world-writable trap directory; afterwards
the trap must be empty, each hostile recipient must have bounced (or been refused at submission
as no address at all, exit 64), and the one alias that does run a command must see the hostile
-f senders only censored in its environment.

Recipient validation at RCPT is switched off (smtpd_reject_unlisted_recipient = no), so the
addresses reach the router itself rather than stopping at the pickup's smtpd session.
"""
import os
import re
import subprocess

from harness import Petrel, Tap, _runnable_copy, TOP_BUILDDIR, refused_port, maildir_messages as maildir, wait_for

t = Tap(timeout=400)
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
SERVICES = "pickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n"
SAFE = set("1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def censor(s):
    return "".join(c if c in SAFE else "_" for c in s)


def world_dir(path):
    os.mkdir(path)
    os.chmod(path, 0o777)
    return path


with Petrel(t, extra_services=SERVICES, start=False) as p:
    trap = world_dir(os.path.join(p.dir, "trap"))
    out = world_dir(os.path.join(p.dir, "out"))
    mail = world_dir(os.path.join(p.dir, "mail"))
    record = p.write_file("record.sh", "#!/bin/sh\nenv > %s/env.$$\ncat > /dev/null\n" % out, 0o755)
    aliases = p.write_file("aliases", "runner \"|%s\"\n" % record)
    conf = dict(p.settings)
    conf.update({
        "myorigin": "local.test",
        "mydestination": "local.test, localhost",
        "alias_maps": "texthash:" + aliases,
        "virtual_mailbox_domains": "vmail.test",
        "virtual_mailbox_base": mail,
        "virtual_mailbox_maps": "inline:{ {s@vmail.test = s/} }",
        "smtpd_reject_unlisted_recipient": "no",
        "local_recipient_maps": "",
        "command_directory": os.path.dirname(POSTDROP),
        "maillog_file": p.log_path,
        # notices to the hostile senders' domain go to a dead loopback port, never to DNS
        "transport_maps": "inline:{ {a.example = smtp:[127.0.0.1]:%d} }" % refused_port(),
    })
    p.write_main_cf(conf)
    p.start()

    def sendmail(args, text):
        return subprocess.run(p.command(SENDMAIL, "-C", p.conf, *args), input=text.encode(),
                              capture_output=True, timeout=60)

    # Recipient arguments, every form of command and file.
    args = [
        "|touch %s/a1" % trap,
        '"|touch %s/a2"@local.test' % trap,
        "%s/a3" % trap,
        '"%s/a4"@local.test' % trap,
        "|${sender}",
        '"|$(touch %s/a6)"@local.test' % trap,
        "|`touch %s/a7`" % trap,
        '"|touch %s/a8"@localhost' % trap,
        "Name <|touch %s/a9@local.test>" % trap,
        '":include:%s"@local.test' % aliases,
    ]
    codes = []
    queued = 0
    for a in args:
        r = sendmail(["-f", "s@vmail.test", a], "Subject: argument %s\n\nx\n" % a)
        codes.append(r.returncode)
        queued += r.returncode == 0
    t.ok(all(c in (0, 64) for c in codes), "each hostile recipient argument is queued (0) or refused as no address (64)",
         codes)
    t.ok(queued >= 8, "most are taken as plain (quoted) addresses, as Postfix's sendmail takes them (%d)" % queued)

    # The same through -t headers, with groups, comments and display names.
    header = ("To: |touch %s/h1, \"|touch %s/h2\"@local.test, %s/h3 (comment)\n"
              "Cc: hostile: \"|$(touch %s/h4)\"@local.test, \"%s/h5\"@localhost;\n"
              "Bcc: Someone <|`touch %s/h6`@local.test>\n" % (trap, trap, trap, trap, trap, trap))
    r = sendmail(["-t", "-f", "s@vmail.test"], header + "Subject: headers\n\nx\n")
    t.is_(r.returncode, 0, "-t with command and file forms in To:, Cc: (a group) and Bcc: exits 0") or t.diag(r.stderr)

    # -f senders carrying shell syntax, to the alias that does run a command.
    senders = ['"$(touch %s/s1)"@a.example' % trap, '"`touch %s/s2`"@a.example' % trap,
               '"; touch %s/s3 #"@a.example' % trap, "${sender}@a.example", '"|touch %s/s5"@a.example' % trap]
    for s in senders:
        r = sendmail(["-f", s, "runner@local.test"], "Subject: sender\n\n$(touch %s/body)\n" % trap)
        t.is_(r.returncode, 0, "-f %s to the command alias: exit 0" % s[:30])

    # The SMTP envelope of -bs.
    bs = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-bs"), capture_output=True, timeout=60, input=(
        "EHLO x\r\nMAIL FROM:<\"$(touch %s/b1)\"@a.example>\r\nRCPT TO:<\"|touch %s/b2\"@local.test>\r\n"
        "RCPT TO:<\"%s/b3\"@local.test>\r\nRCPT TO:<runner@local.test>\r\nDATA\r\nSubject: bs\r\n\r\nx\r\n.\r\n"
        "QUIT\r\n" % (trap, trap, trap)).encode())
    t.like(bs.stdout.decode(), r"250 2\.0\.0 Ok: queued as ", "-bs: the hostile envelope is accepted (and queued)")

    t.ok(wait_for(lambda: os.listdir(os.path.join(p.queue, "maildrop")) == [] and
                  not p.queue_files("incoming", "active"), timeout=60),
         "every submission was picked up and every delivery attempt finished")
    envs = wait_for(lambda: len([f for f in os.listdir(out) if f.startswith("env.")]) >= len(senders) + 1 and
                    [open(os.path.join(out, f)).read() for f in os.listdir(out) if f.startswith("env.")], timeout=30)
    t.is_(sorted(os.listdir(trap)), [], "nothing ran and nothing was written in the trap directory")
    log = p.log()
    sent = re.findall(r"to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=([^,]*),[^\n]*status=sent \(([^)]*)", log)
    odd = [(a, r, x) for a, r, x in sent if a != "runner@local.test" and r != "virtual"]
    t.is_(odd, [], "only the alias runner@ went to a command; everything else went to a mailbox or bounced")
    for addr in ('"|touch %s/a1"@local.test' % trap, '%s/a3@local.test' % trap, '"|touch %s/h2"@local.test' % trap,
                 '"|touch %s/b2"@local.test' % trap):
        t.like(log, r"to=<%s>[^\n]*status=bounced \([^)]*unknown user" % re.escape(addr),
               "%s... bounces as an unknown user" % addr[:26])
    t.is_(len(envs or []), len(senders) + 1, "the alias command ran once per message sent to it")
    seen = sorted(m.group(1) for m in (re.search(r"^SENDER=(.*)$", e, re.M) for e in envs or []) if m)
    want = sorted([censor(s) for s in senders] + [censor('"$(touch %s/b1)"@a.example' % trap)])
    t.is_(seen, want, "it sees each hostile -f sender only censored (unsafe bytes replaced by _)")
    notices = maildir(os.path.join(mail, "s"))
    t.ok(len(notices) >= 3 and all(b"Undelivered Mail" in n or b"Subject: " in n for n in notices),
         "the sender's non-delivery notices land in its mailbox (the mail store)")
    t.is_(oct(os.stat(trap).st_mode & 0o777), oct(0o777), "the trap was writable all along (the test has teeth)")
t.done()
