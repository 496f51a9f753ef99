"""Postfix's SASL policy around any back-end (here the table back-end of the sasl module):
smtpd_sender_login_maps with reject_sender_login_mismatch and its three variants (Postfix's
553 5.7.1 replies), smtpd_sasl_exceptions_networks (AUTH not offered, still served), smtpd_discard_ehlo_keywords
(AUTH not offered and refused with 503),
smtpd_client_auth_rate_limit (450 4.7.1), and Petrel's lockout of failed AUTH per client
address and per login (454 4.7.0 for every attempt, right or wrong, logged in the form
fail2ban reads), released after smtpd_sasl_lockout_time."""
import re
import subprocess
import time

from harness import PETRELD, Petrel, Tap, queue_file_bytes
from modlib import bundled_module_dir
from sasllib import b64

t = Tap(timeout=200)
mods = bundled_module_dir("sasl")
USERS = "alice {PLAIN}A-pass-1\nbob {PLAIN}B-pass-2\ncarol {PLAIN}C-pass-3\n"
LOGINS = "alice@example.org alice\nshared@example.org alice, bob\n@owned.example carol\n"
FAIL2BAN_AUTH = re.compile(
    r"postfix(-\w+)?/\w+(?:/smtp[ds])?\[\d+\]: warning: [^[]*\[(?P<host>[^\]]+)\](?::\d+)?: "
    r"SASL ((?i:LOGIN|PLAIN|(?:CRAM|DIGEST)-MD5)) authentication failed:"
    r"(?! Connection lost to authentication server| Invalid authentication mechanism)")


def auth(c, user, password):
    return c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password)))


def base(p, **extra):
    users = p.write_file("users", USERS, 0o600)
    logins = p.write_file("logins", LOGINS)
    conf = dict(p.settings, modules="sasl", module_directory=mods, smtpd_sasl_auth_enable="yes",
                smtpd_sasl_type="table", smtpd_sasl_path="texthash:" + users, mynetworks="192.0.2.0/24",
                smtpd_sender_login_maps="texthash:" + logins, smtpd_sasl_failure_delay="0s", syslog_name="postfix",
                recipient_delimiter="+")
    conf.update(extra)
    p.write_main_cf(conf)
    p.start()


def mail_rcpt(c, sender):
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if not r.startswith("250"):
        return r
    r = c.cmd("RCPT TO:<x@elsewhere.example>")
    c.cmd("RSET")
    return r


with Petrel(t, start=False) as p:
    base(p, smtpd_sender_restrictions="reject_sender_login_mismatch")
    c = p.connect()
    c.ehlo()
    t.is_(mail_rcpt(c, "alice@example.org"), "553 5.7.1 <alice@example.org>: Sender address rejected: not logged in",
          "an owned sender without AUTH: 553 not logged in")
    t.is_(mail_rcpt(c, "nobody@example.org"), "454 4.7.1 <x@elsewhere.example>: Relay access denied",
          "an unowned sender without AUTH passes this restriction (and meets the relay check)")
    t.is_(auth(c, "alice", "A-pass-1"), "235 2.7.0 Authentication successful", "alice logs in")
    t.is_(mail_rcpt(c, "alice@example.org"), "250 2.1.5 Ok", "her own address")
    t.is_(mail_rcpt(c, "Shared+tag@Example.org"), "250 2.1.5 Ok", "a shared one, with an extension and other case")
    t.is_(mail_rcpt(c, "bob@owned.example"),
          "553 5.7.1 <bob@owned.example>: Sender address rejected: not owned by user alice",
          "carol's domain (@domain key): 553 not owned by user alice")
    t.is_(mail_rcpt(c, "free@else.example"),
          "553 5.7.1 <free@else.example>: Sender address rejected: not owned by user alice",
          "an address nobody owns: refused too (reject_sender_login_mismatch)")
    t.ok(p.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 553 5\.7\.1 <bob@owned\.example>: "
                    r"Sender address rejected: not owned by user alice;") is not None,
         "Postfix's reject line")
    c.close()

with Petrel(t, start=False) as p:
    base(p, smtpd_sasl_authenticated_header="yes")
    c = p.connect()
    c.ehlo()
    auth(c, "alice", "A-pass-1")
    qid = c.send_message("alice@example.org", ["x@elsewhere.example"], "Subject: hdr\r\n\r\nx", ehlo=False).split()[-1]
    data = b"".join(queue_file_bytes(f) for f in p.queue_files() if f.endswith(qid))
    t.ok(b"\t(Authenticated sender: alice)\r\n\tby mx.petrel.test" in data,
         "smtpd_sasl_authenticated_header: Postfix's comment in Received:")
    c.close()

with Petrel(t, start=False) as p:
    base(p, smtpd_sender_restrictions="reject_known_sender_login_mismatch")
    c = p.connect()
    c.ehlo()
    auth(c, "bob", "B-pass-2")
    t.is_(mail_rcpt(c, "free@else.example"), "250 2.1.5 Ok", "reject_known_sender_login_mismatch: unowned is fine")
    t.like(mail_rcpt(c, "alice@example.org"), r"^553 5\.7\.1 .*not owned by user bob", "an owned one is not")
    c.close()

with Petrel(t, start=False) as p:
    base(p, smtpd_sender_restrictions="reject_authenticated_sender_login_mismatch")
    c = p.connect()
    c.ehlo()
    t.is_(mail_rcpt(c, "alice@example.org"), "454 4.7.1 <x@elsewhere.example>: Relay access denied",
          "reject_authenticated_sender_login_mismatch leaves clients without AUTH alone")
    c.close()

with Petrel(t, start=False, main_cf={"smtpd_sender_restrictions": "reject_sender_login_mismatch"}) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.like(r.stderr, r"smtpd_sender_restrictions: reject_sender_login_mismatch needs smtpd_sender_login_maps",
           "the restriction without smtpd_sender_login_maps is a configuration error, not a silent no-op")

with Petrel(t, start=False) as p:
    base(p, smtpd_sasl_exceptions_networks="127.0.0.0/8")
    c = p.connect()
    c.ehlo()
    t.ok(not any("AUTH" in l for l in c.lines), "smtpd_sasl_exceptions_networks: AUTH is not offered to the client",
         c.lines)
    t.is_(auth(c, "alice", "A-pass-1"), "235 2.7.0 Authentication successful",
          "but a client there that sends AUTH anyway is served, as by Postfix")
    c.close()

# smtpd_discard_ehlo_keywords (and its address maps) taking AUTH away is
# stronger than the exceptions networks: Postfix also refuses the command.
with Petrel(t, start=False) as p:
    base(p, smtpd_discard_ehlo_keywords="auth")
    c = p.connect()
    c.ehlo()
    t.ok(not any("AUTH" in l for l in c.lines), "smtpd_discard_ehlo_keywords = auth: AUTH is not announced", c.lines)
    t.is_(auth(c, "alice", "A-pass-1"), "503 5.5.1 Error: authentication not enabled",
          "and the AUTH command answers 503, as in Postfix")
    t.like(c.cmd("NOOP"), r"^250 ", "the session goes on")
    c.close()
with Petrel(t, start=False) as p:
    discard = p.write_file("discard", "127.0.0.1 auth, silent-discard\n")
    base(p, smtpd_discard_ehlo_keyword_address_maps="texthash:" + discard)
    c = p.connect()
    c.ehlo()
    t.ok(not any("AUTH" in l for l in c.lines), "smtpd_discard_ehlo_keyword_address_maps: AUTH hidden from this client",
         c.lines)
    t.is_(auth(c, "alice", "A-pass-1"), "503 5.5.1 Error: authentication not enabled", "and refused")
    c.close()
with Petrel(t, start=False) as p:
    base(p, smtpd_discard_ehlo_keywords="dsn")
    c = p.connect()
    c.ehlo()
    t.ok(any(l.startswith("250-AUTH ") or l.startswith("250 AUTH ") for l in c.lines),
         "discarding another keyword leaves AUTH announced", c.lines)
    t.is_(auth(c, "alice", "A-pass-1"), "235 2.7.0 Authentication successful", "and served")
    c.close()

# ---- lockout per client address ----
with Petrel(t, start=False) as p:
    base(p, smtpd_sasl_failure_limit="3", smtpd_sasl_failure_window="60s", smtpd_sasl_lockout_time="3s",
         smtpd_client_event_limit_exceptions="")
    c = p.connect()
    c.ehlo()
    replies = [auth(c, "alice", "wrong%d" % i) for i in range(3)]
    t.is_(replies, ["535 5.7.8 Error: authentication failed: authentication failure"] * 3, "three failures: 535 each")
    t.ok(p.wait_log(r"3 failures from this client within 60s: its AUTH is locked out for 3s") is not None,
         "the lockout is logged")
    locked = "454 4.7.0 Temporary authentication failure: too many failed authentication attempts from this client, " \
             "try again later"
    t.is_(auth(c, "alice", "A-pass-1"), locked, "locked out: even the right password gets 454 4.7.0")
    t.is_(auth(c, "bob", "B-pass-2"), locked, "and every other login from that address")
    c.close()
    c = p.connect()
    c.ehlo()
    t.is_(auth(c, "bob", "B-pass-2"), locked, "on a new connection too (the table is shared by the workers)")
    c.close()
    hits = [l for l in p.log().splitlines() if FAIL2BAN_AUTH.search(l)]
    t.ok(len(hits) >= 6, "every failure and every locked-out attempt matches fail2ban's postfix-sasl regex", hits[-3:])
    time.sleep(3.5)
    c = p.connect()
    c.ehlo()
    t.is_(auth(c, "bob", "B-pass-2"), "235 2.7.0 Authentication successful", "released after smtpd_sasl_lockout_time")
    c.close()

# ---- lockout per login (the address is exempt: a webmail in mynetworks), and the AUTH rate ----
with Petrel(t, start=False) as p:
    base(p, smtpd_sasl_failure_limit="3", smtpd_sasl_lockout_time="60s",
         smtpd_client_event_limit_exceptions="127.0.0.0/8")
    c = p.connect()
    c.ehlo()
    for i in range(3):
        auth(c, "carol", "bad%d" % i)
    t.ok(p.wait_log(r"3 failures for login carol within 600s: the login is locked out for 60s") is not None,
         "the login's lockout is logged")
    t.is_(auth(c, "carol", "C-pass-3"),
          "454 4.7.0 Temporary authentication failure: too many failed attempts for this login, try again later",
          "carol's right password gets 454 while her login is locked")
    t.is_(auth(c, "carol", "still-wrong"),
          "454 4.7.0 Temporary authentication failure: too many failed attempts for this login, try again later",
          "and so does a wrong one: the lockout is no password oracle")
    t.is_(auth(c, "bob", "B-pass-2"), "235 2.7.0 Authentication successful",
          "other logins from the exempt address still work")
    c.close()

with Petrel(t, start=False) as p:
    base(p, smtpd_client_auth_rate_limit="2", smtpd_client_event_limit_exceptions="")
    c = p.connect()
    c.ehlo()
    auth(c, "alice", "x")
    auth(c, "alice", "y")
    t.is_(auth(c, "alice", "A-pass-1"), "450 4.7.1 Error: too many AUTH commands from 127.0.0.1",
          "smtpd_client_auth_rate_limit: Postfix's 450 4.7.1")
    t.ok(p.wait_log(r"warning: AUTH command rate limit exceeded: 3 from unknown\[127\.0\.0\.1\] for service") is not None,
         "and Postfix's warning")
    c.close()
t.done()
