"""petrel-sendmail: local submission through the pickup socket, sendmail's options, and the
same path to delivery as SMTP mail."""
import os
import subprocess
import time

from harness import Petrel, Tap, _runnable_copy, TOP_BUILDDIR, maildir_messages as maildir, wait_for

t = Tap()
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
SERVICES = "pickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n"


with Petrel(t, extra_services=SERVICES, start=False) as p:
    mail = os.path.join(p.dir, "mail")
    os.mkdir(mail)
    if p.pw:
        os.chown(mail, p.pw.pw_uid, p.pw.pw_gid)
    conf = dict(p.settings)
    conf.update({"virtual_mailbox_domains": "vmail.test", "virtual_mailbox_base": mail,
                 "virtual_mailbox_maps": "inline:{ {a@vmail.test = a/}, {b@vmail.test = b/}, {c@vmail.test = c/} }",
                 "myorigin": "vmail.test"})
    p.write_main_cf(conf)
    p.start()
    t.ok(os.path.exists(os.path.join(p.queue, "public", "pickup")), "the pickup socket exists in public/")

    def sendmail(args, text):
        return subprocess.run(p.command(SENDMAIL, "-C", p.conf, *args), input=text.encode(),
                              capture_output=True, timeout=30)

    r = sendmail(["-f", "sender@vmail.test", "a@vmail.test"], "Subject: via sendmail\n\nhello\n.\nafter the dot\n")
    t.is_(r.returncode, 0, "petrel-sendmail with a recipient argument exits 0")
    msgs = wait_for(lambda: maildir(os.path.join(mail, "a")))
    t.is_(len(msgs), 1, "the message is delivered like SMTP mail")
    m = msgs[0] if msgs else b""
    t.ok(b"Subject: via sendmail\n" in m, "with its headers")
    t.ok(b"hello\n" in m and b"after the dot" not in m, "a lone dot ends the message without -i")
    t.ok(b"Date: " in m and b"Message-ID: " in m and b"From: sender@vmail.test" in m,
         "missing Date, Message-ID and From are added")
    t.ok(p.wait_log(r"connect from localhost\[127\.0\.0\.1\] \(local submission, uid=\d+\)") is not None,
         "the submitting user is logged by uid")

    r = sendmail(["-t", "-i", "-F", "Test User"],
                 "To: b@vmail.test\nCc: Someone <c@vmail.test>\nBcc: a@vmail.test\nSubject: extract\n\nline\n.\nkept\n")
    t.is_(r.returncode, 0, "-t -i exits 0")
    b = wait_for(lambda: maildir(os.path.join(mail, "b")))
    c = wait_for(lambda: maildir(os.path.join(mail, "c")))
    a = wait_for(lambda: len(maildir(os.path.join(mail, "a"))) == 2 and maildir(os.path.join(mail, "a")))
    t.ok(len(b) == 1 and len(c) == 1, "-t takes To and Cc recipients")
    t.ok(a and len(a) == 2, "and Bcc recipients")
    t.ok(b and b"Bcc:" not in b[0], "the Bcc header is removed")
    t.ok(b and b".\nkept\n" in b[0], "-i: a lone dot does not end the message")
    t.ok(b and b"From: Test User <" in b[0], "-F sets the From: full name")

    r = sendmail(["-t"], "Subject: nobody\n\nx\n")
    t.is_(r.returncode, 64, "-t without recipients exits EX_USAGE")
    t.ok(b"no recipient addresses" in r.stderr, "and says why")

    r = sendmail(["-f", "s@vmail.test", "x@elsewhere.test"], "Subject: relay\n\nx\n")
    t.is_(r.returncode, 0, "local submission may relay (as mynetworks may)")

    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-bp"), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0 and ("Queue ID" in r.stdout or "empty" in r.stdout), "-bp lists the queue")
    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-q"), capture_output=True, text=True, timeout=30)
    t.is_(r.returncode, 0, "-q flushes the queue")

    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-bs"), input=b"QUIT\r\n",
                       capture_output=True, timeout=30)
    t.ok(r.stdout.startswith(b"220 ") and b"221 2.0.0 Bye" in r.stdout, "-bs speaks SMTP on stdin/stdout")

    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-Z"), capture_output=True, text=True, timeout=30)
    t.is_(r.returncode, 64, "an unknown option exits EX_USAGE")

    p.stop()
    r = sendmail(["a@vmail.test"], "Subject: down\n\nx\n")
    t.is_(r.returncode, 75, "with petreld down, petrel-sendmail exits EX_TEMPFAIL")
    t.ok(b"is petreld running" in r.stderr, "and says why")
t.done()
