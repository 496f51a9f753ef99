"""LMTP delivery to a real Dovecot: petreld routes lmtp.test with
transport_maps = lmtp:unix:SOCKET (and lmtpinet.test with lmtp:inet:127.0.0.1:PORT) to a
PRIVATE Dovecot (own config, base_dir, state_dir and log in a temp dir; never the system
instance), which stores into per-user Maildirs. Covers: one transaction, two recipients,
both saved by Dovecot; per-recipient LMTP replies (an unknown user bounces with Dovecot's
550 while the others are delivered, and the bounce itself comes back over LMTP); Dovecot
down -> deferred, Dovecot back + petrelctl queue flush -> delivered.

Dovecot runs as root in the foreground (dovecot -F) and is stopped by PID; mail is stored
as the test user (petrel). When Dovecot is missing or cannot start, the script fails
loudly with the reason (install it with PETREL_WITH_TESTS=1 scripts/install-deps.sh)."""
import os
import pwd
import re

import dovecotlib
from harness import TEST_USER, Petrel, Tap, maildir_messages, wait_for

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
DOVECOT = dovecotlib.DOVECOT
LMTP_BIN = "/usr/lib/dovecot/lmtp"


def maildir_new(home, user):
    return maildir_messages(os.path.join(home, user, "Maildir"))


def bail(reason, diag=None):
    """Dovecot could not be used: fail loudly, never skip."""
    t.ok(False, "private Dovecot for the LMTP tests: " + reason, diag)
    t.done()


class Dovecot(dovecotlib.Dovecot):
    """A private Dovecot serving LMTP only, on a unix socket and a loopback port."""

    USERS = ("a", "b", "s")   # nobody_here is deliberately absent
    what = "LMTP socket"

    def __init__(self, mail_user):
        super().__init__("petrel-dovecot-", "lmtp")
        self.home = os.path.join(self.dir, "home")
        os.mkdir(self.home, 0o755)
        os.chown(self.home, mail_user.pw_uid, mail_user.pw_gid)
        users = self.write_users({u: "secret" for u in self.USERS})
        self.write_conf("""# Private Dovecot for Petrel's LMTP integration test.
base_dir = {base}
state_dir = {state}
log_path = {log}
protocols = lmtp
listen = 127.0.0.1
ssl = no
hostname = dovecot.lmtp.test
default_login_user = dovenull
default_internal_user = dovecot
auth_username_format = %Ln
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
  default_fields = uid={uid} gid={gid} home={home}/%n
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
""".format(base=self.base, state=self.state, log=self.log_path, users=users,
           uid=mail_user.pw_uid, gid=mail_user.pw_gid, home=self.home, port=self.port))

    def probe(self, s):
        """Ready when the LMTP greeting is a 220."""
        greeting = s.recv(512).decode("utf-8", "replace")
        if greeting.startswith("220 "):
            return greeting.strip()
        self.last = greeting
        return None


# ---- Preconditions: loud failures, not skips ----
if os.geteuid() != 0:
    bail("must run as root (Dovecot's LMTP switches to the mail user's uid)")
if not os.access(DOVECOT, os.X_OK) or not os.access(LMTP_BIN, os.X_OK):
    bail("dovecot or %s not installed (dovecot-core, dovecot-lmtpd: "
         "PETREL_WITH_TESTS=1 scripts/install-deps.sh)" % LMTP_BIN)
try:
    mail_user = pwd.getpwnam(TEST_USER)
    pwd.getpwnam("dovecot")
    pwd.getpwnam("dovenull")
except KeyError as e:
    bail("missing system user: %s" % e)

dc = Dovecot(mail_user)
try:
    greeting = dc.start()
except Exception as e:   # noqa: BLE001 - any failure is reported, then the script fails
    dc.cleanup()
    bail("dovecot did not start", str(e))
t.like(greeting, r"^220 dovecot\.lmtp\.test ", "the private Dovecot answers LMTP on its unix socket")

try:
    conf = {
        "relay_domains": "lmtp.test lmtpinet.test",
        "transport_maps": "inline:{ {lmtp.test = lmtp:unix:%s}, {lmtpinet.test = lmtp:inet:127.0.0.1:%d} }"
                          % (dc.socket, dc.port),
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "queue_run_delay": "1s",
    }
    with Petrel(t, main_cf=conf, extra_services=QMGR, start=False) as p:
        settings = dict(p.settings)
        settings["maillog_file"] = p.log_path
        p.write_main_cf(settings)
        p.start()
        sock_re = re.escape(dc.socket)

        # 1. One transaction, two recipients: Dovecot saves into both Maildirs.
        c = p.connect()
        body = "Subject: over lmtp\r\nMessage-ID: <lmtp-1@petrel.test>\r\n\r\nhello from petrel via dovecot\r\n"
        reply = c.send_message("s@lmtp.test", ["a@lmtp.test", "b@lmtp.test"], body)
        t.like(reply, r"^250 ", "petreld accepts the message for a@ and b@lmtp.test")
        qid = reply.split()[-1]
        for u in ("a", "b"):
            msgs = wait_for(lambda: maildir_new(dc.home, u))
            t.is_(len(msgs), 1, "Dovecot stored the message in %s's Maildir/new" % u)
            m = msgs[0] if msgs else b""
            t.ok(b"hello from petrel via dovecot" in m, "%s's copy contains the body" % u, m[:400])
            t.ok(b"Return-Path: <s@lmtp.test>" in m, "with the envelope sender as Return-Path", m[:400])
            t.ok(re.search(br"Received: from mx\.petrel\.test\n\tby dovecot\.lmtp\.test with LMTP\n", m) is not None,
                 "with Dovecot's LMTP Received header on top of petreld's", m[:400])
            owner = os.stat(os.path.join(dc.home, u, "Maildir")).st_uid
            t.is_(owner, mail_user.pw_uid, "%s's Maildir belongs to the userdb uid" % u)
        for u in ("a", "b"):
            t.ok(p.wait_log(r"petrel/\w+\[\d+\]: %s: to=<%s@lmtp\.test>, relay=[^,\s]*\[%s\], .*dsn=2\.0\.0, "
                            r"status=sent \(250 2\.0\.0 <%s@lmtp\.test> \S+ Saved\)" % (qid, u, sock_re, u)) is not None,
                 "the log shows %s@ sent to the LMTP socket with Dovecot's 250 reply" % u, p.log()[-3000:])
        t.ok(p.wait_log(r"%s: removed" % qid) is not None, "the queue file is removed after delivery")
        # Dovecot's log process may write the line after the LMTP reply: wait for it
        saved = r"lmtp\(a\)<\d+><[^>]+>: Info: msgid=<lmtp-1@petrel\.test>: saved mail to INBOX"
        wait_for(lambda: re.search(saved, dc.logs()), timeout=30)
        t.like(dc.logs(), saved, "Dovecot's own log records the save for a")

        # 2. Per-recipient LMTP replies: the unknown user bounces, the others are delivered.
        body = "Subject: mixed\r\nMessage-ID: <lmtp-2@petrel.test>\r\n\r\nsecond message\r\n"
        reply = c.send_message("s@lmtp.test", ["a@lmtp.test", "nobody_here@lmtp.test", "b@lmtp.test"],
                               body, ehlo=False)
        t.like(reply, r"^250 ", "petreld accepts a message with an unknown LMTP user among the recipients")
        qid = reply.split()[-1]
        t.ok(p.wait_log(r"%s: to=<nobody_here@lmtp\.test>, relay=[^,\s]*\[%s\], .*dsn=5\.1\.1, status=bounced "
                        r"\(host [^)]*said: 550 5\.1\.1 <nobody_here@lmtp\.test> User doesn't exist: "
                        r"nobody_here@lmtp\.test" % (qid, sock_re)) is not None,
             "nobody_here bounces with Dovecot's 550 5.1.1 reply", p.log()[-3000:])
        for u in ("a", "b"):
            t.ok(p.wait_log(r"%s: to=<%s@lmtp\.test>, .*status=sent \(250 2\.0\.0 <%s@lmtp\.test> \S+ Saved\)"
                            % (qid, u, u)) is not None,
                 "in the same transaction %s@ is delivered" % u, p.log()[-3000:])
            msgs = wait_for(lambda: len(maildir_new(dc.home, u)) >= 2 and maildir_new(dc.home, u))
            t.ok(msgs and any(b"second message" in m for m in msgs), "%s's Maildir has the second message" % u)
        t.ok(not os.path.exists(os.path.join(dc.home, "nobody_here")), "nothing is stored for the unknown user")
        t.ok(p.wait_log(r"%s: sender non-delivery notification: \w+" % qid) is not None,
             "a non-delivery notification is queued for the sender")
        dsns = wait_for(lambda: maildir_new(dc.home, "s"))
        t.is_(len(dsns), 1, "the bounce reaches the sender's Maildir, itself over LMTP")
        d = dsns[0].decode("utf-8", "replace") if dsns else ""
        t.like(d, r"Final-Recipient: rfc822; ?nobody_here@lmtp\.test", "the bounce names the failed recipient")
        t.like(d, r"User doesn't exist", "and carries Dovecot's reply text")
        t.ok("Final-Recipient: rfc822; a@lmtp.test" not in d and "Final-Recipient: rfc822;a@lmtp.test" not in d,
             "and does not list the delivered recipients")

        # 3. lmtp:inet: next hop on Dovecot's loopback listener.
        reply = c.send_message("s@lmtp.test", ["a@lmtpinet.test"], "Subject: inet\r\n\r\nvia tcp\r\n", ehlo=False)
        qid = reply.split()[-1]
        t.ok(p.wait_log(r"%s: to=<a@lmtpinet\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent "
                        r"\(250 2\.0\.0 <a@lmtpinet\.test> \S+ Saved\)" % (qid, dc.port)) is not None,
             "lmtp:inet:127.0.0.1:PORT delivers through Dovecot's inet listener", p.log()[-3000:])
        m = wait_for(lambda: [x for x in maildir_new(dc.home, "a") if b"via tcp" in x])
        t.ok(m, "into a's Maildir")
        t.ok(m and re.search(br"Delivered-To: a@lmtpinet\.test\nReceived: from mx\.petrel\.test \(\[127\.0\.0\.1\]\)\n"
                             br"\tby dovecot\.lmtp\.test with LMTP", m[0]) is not None,
             "Dovecot adds Delivered-To (single recipient) and its Received header over TCP", m[0][:400] if m else "")

        # 4. Dovecot down: deferred; back up + queue flush: delivered.
        dc.stop()
        t.ok(dc.proc.poll() is not None, "the private Dovecot is stopped by PID")
        reply = c.send_message("s@lmtp.test", ["b@lmtp.test"], "Subject: later\r\n\r\nwhen dovecot is back\r\n",
                               ehlo=False)
        qid = reply.split()[-1]
        t.ok(p.wait_log(r"%s: to=<b@lmtp\.test>, relay=[^,\s]*\[%s\], .*dsn=4\.\d\.\d, status=deferred \(connect to "
                        r"%s: (No such file or directory|Connection refused)\)" % (qid, sock_re, sock_re)) is not None,
             "with Dovecot down the message is deferred (connect to the socket fails)", p.log()[-3000:])
        t.ok(wait_for(lambda: any(f.endswith("/" + qid) for f in p.queue_files("deferred"))),
             "and waits in deferred/")
        try:
            dc.start()
            restarted = True
        except Exception as e:   # noqa: BLE001
            restarted = False
            t.diag(str(e))
        t.ok(restarted, "Dovecot restarts on the same base_dir")
        r = p.petrelctl("queue", "flush")
        t.is_(r.returncode, 0, "petrelctl queue flush")
        t.ok(p.wait_log(r"%s: to=<b@lmtp\.test>, relay=[^,\s]*\[%s\], .*status=sent \(250 2\.0\.0 "
                        % (qid, sock_re)) is not None,
             "after Dovecot is back, the flushed message is delivered", p.log()[-3000:])
        t.ok(wait_for(lambda: any(b"when dovecot is back" in m for m in maildir_new(dc.home, "b"))),
             "into b's Maildir")
        t.ok(p.wait_log(r"%s: removed" % qid) is not None, "and removed from the queue")
        c.close()
except Exception as e:   # noqa: BLE001 - report, do not die without a TAP plan
    import traceback
    t.ok(False, "LMTP test aborted: %s" % e, traceback.format_exc() + "\n--- dovecot ---\n" + dc.logs()[-2000:])
finally:
    dc.cleanup()
t.ok(dc.proc.poll() is not None, "Dovecot is stopped at the end")
t.done()
