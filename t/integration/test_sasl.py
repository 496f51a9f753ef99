"""SMTP AUTH (RFC 4954) with a module's SASL back-end: PLAIN and LOGIN, failures, TLS-only,
asynchronous verification, and what authentication permits (permit_sasl_authenticated)."""
import base64
import os
import smtplib

from harness import Petrel, Smtp, Tap, make_cert, queue_file_bytes
from modlib import module_dir

t = Tap()
mods = module_dir("testmod")
BASE = {"modules": "testmod", "module_directory": mods, "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "testmod", "smtpd_sasl_path": "private/auth", "mynetworks": "192.0.2.0/24"}


def b64(s):
    return base64.b64encode(s.encode()).decode()


with Petrel(t, main_cf=BASE) as p:
    c = p.connect()
    c.ehlo()
    t.ok("250-AUTH PLAIN LOGIN" in c.lines, "EHLO offers AUTH PLAIN LOGIN")
    t.is_(c.cmd("RCPT TO:<x@elsewhere.example>") and c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok", "a transaction")
    t.like(c.cmd("RCPT TO:<x@elsewhere.example>"), r"^454 4\.7\.1 .*Relay access denied", "relaying is denied before AUTH")
    c.cmd("RSET")
    t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0wrong")), "535 5.7.8 Error: authentication failed: authentication failure",
          "a wrong password gets 535 5.7.8")
    t.ok(p.wait_log(r"warning: unknown\[127\.0\.0\.1\]: SASL PLAIN authentication failed: authentication failure, sasl_username=alice") is not None,
         "and Postfix's warning line (fail2ban reads it)")
    t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), "235 2.7.0 Authentication successful", "AUTH PLAIN with an initial response")
    t.ok(p.wait_log(r"testmod: sasl check PLAIN alice path=private/auth") is not None, "the back-end gets smtpd_sasl_path")
    t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), "503 5.5.1 Error: already authenticated", "only once per session")
    c.cmd("MAIL FROM:<alice@example.org>")
    t.is_(c.cmd("RCPT TO:<x@elsewhere.example>"), "250 2.1.5 Ok", "permit_sasl_authenticated lets alice relay")
    c.cmd("DATA")
    c.send("Subject: authenticated\r\n\r\nx\r\n.\r\n")
    qid = c.read_reply().split()[-1]
    t.ok(p.wait_log(r"%s: client=unknown\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=alice" % qid) is not None,
         "the client= line names the method and user")
    data = b"".join(queue_file_bytes(f) for f in p.queue_files() if f.endswith(qid))
    t.ok(b"with ESMTPA id " + qid.encode() in data, "the Received header says ESMTPA")
    c.close()

    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6", "AUTH LOGIN asks for the user name")
    t.is_(c.cmd(b64("alice")), "334 UGFzc3dvcmQ6", "then the password")
    t.is_(c.cmd(b64("secret")), "235 2.7.0 Authentication successful", "LOGIN succeeds")
    c.close()

    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("AUTH PLAIN"), "334 ", "PLAIN without an initial response asks for it (334 SP)")
    t.is_(c.cmd("*"), "501 5.7.0 Authentication aborted", "* aborts the exchange")
    t.is_(c.cmd("AUTH PLAIN !!!notbase64"), "501 5.5.2 Cannot decode response", "bad base64 is refused")
    t.is_(c.cmd("AUTH CRAM-MD5"), "504 5.5.4 Unrecognized authentication type", "an unknown mechanism is refused")
    t.is_(c.cmd("AUTH PLAIN " + b64("\0down\0secret")), "454 4.7.0 Temporary authentication failure: authentication server unavailable",
          "a back-end failure is temporary (Postfix's reply and reason)")
    t.is_(c.cmd("AUTH PLAIN " + b64("\0slow\0secret")), "235 2.7.0 Authentication successful",
          "an asynchronous back-end answer completes the exchange")
    c.close()

    # the PLAIN message's NULs (petrel_sasl_plain_split, core/module/sasl_plain.c): exactly two, a login between them
    for raw, want, why in (
            ("alice", "501 5.5.2 Invalid authentication data", "no NUL"),
            ("\0alice", "501 5.5.2 Invalid authentication data", "one NUL"),
            ("\0alice\0se\0cret", "501 5.5.2 Invalid authentication data", "a NUL in the password"),
            ("\0alice\0secret\0", "501 5.5.2 Invalid authentication data", "a NUL at the end"),
            ("\0\0secret", "501 5.5.2 Invalid authentication data", "an empty login"),
            ("\0\0", "501 5.5.2 Invalid authentication data", "two NULs alone"),
            ("admin\0alice\0secret",
             "535 5.7.8 Error: authentication failed: authorization identity differs from the login",
             "an authzid other than the login (a password back-end cannot grant it)"),
            ("alice\0alice\0secret", "235 2.7.0 Authentication successful", "an authzid that is the login")):
        c = p.connect()
        c.ehlo()
        t.is_(c.cmd("AUTH PLAIN " + b64(raw)), want, "AUTH PLAIN with %s: exact reply" % why)
        c.close()
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("AUTH PLAIN ="), "501 5.5.2 Invalid authentication data", "an empty initial response (=): 501")
    t.is_(c.cmd("AUTH PLAIN"), "334 ", "PLAIN asks for its response")
    t.is_(c.cmd(b64("\0alice")), "501 5.5.2 Invalid authentication data", "one NUL in a response line: 501")
    c.close()
    t.ok(p.wait_log(r"warning: unknown\[127\.0\.0\.1\]: SASL PLAIN authentication failed: authorization identity "
                    r"differs from the login, sasl_username=alice") is not None,
         "another authzid: Postfix's warning line names the login")

    s = smtplib.SMTP("127.0.0.1", p.port, timeout=10)
    s.login("alice", "secret")
    s.sendmail("alice@example.org", ["y@elsewhere.example"], "Subject: smtplib\r\n\r\nvia login\r\n")
    s.quit()
    t.ok(True, "smtplib logs in and relays")

with Petrel(t, main_cf=dict(BASE, smtpd_tls_auth_only="yes", smtpd_tls_security_level="may"), start=False) as p:
    cert, key = make_cert(p.dir)
    os.chmod(key, 0o644)
    conf = dict(p.settings)
    conf.update({"smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key})
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    c.ehlo()
    t.ok(not any("AUTH" in l for l in c.lines), "smtpd_tls_auth_only: no AUTH before STARTTLS")
    t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")),
          "538 5.7.11 Encryption required for requested authentication mechanism", "AUTH in plaintext gets 538")
    c.cmd("STARTTLS")
    c.starttls()
    c.ehlo()
    t.ok("250-AUTH PLAIN LOGIN" in c.lines, "AUTH is offered after STARTTLS")
    t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0secret")), "235 2.7.0 Authentication successful", "and works")
    c.close()

with Petrel(t, start=False, main_cf={"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot"}) as p:
    import subprocess
    from harness import PETRELD
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.like(r.stderr, r"smtpd_sasl_type: no loaded module provides the SASL back-end \"dovecot\"",
           "AUTH enabled without a back-end module is a configuration error that says so")
t.done()
