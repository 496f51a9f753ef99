"""The configuration long tail of real Postfix configurations (issue 17): what
real main.cf and master.cf files hold besides the common parameters, one
section each (a "# ---" line), each loaded and used as Postfix would."""
import os
import re
import subprocess
import sys

from harness import (PETRELD, Petrel, Tap, TOP_BUILDDIR, _runnable_copy, free_port, maildir_messages as maildir,
                     wait_for)
from serverlib import Sink

t = Tap()
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
SERVICES = "pickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n"


def check(p):
    return subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)


# --- myorigin = /etc/mailname (Debian): the file's first line is the domain ---
with Petrel(t, extra_services=SERVICES, start=False) as p:
    mailname = p.write_file("mailname", "  origin.example  \nsecond line\n")
    mail = p.make_dir()
    conf = dict(p.settings, myorigin=mailname, virtual_mailbox_domains="vmail.test", virtual_mailbox_base=mail,
                virtual_mailbox_maps="inline:{ {box@vmail.test = box/} }",
                command_directory=os.path.dirname(POSTDROP))
    p.write_main_cf(conf)
    r = p.petrelctl("config", "-x", "myorigin")
    t.is_(r.stdout.strip(), "myorigin = origin.example", "myorigin = /path: its first line, trimmed, is the value")
    r = check(p)
    t.is_(r.returncode, 0, "petreld -n accepts it")
    p.start()
    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-f", "someone", "box@vmail.test"),
                       input=b"Subject: origin\n\nx\n", capture_output=True, timeout=30)
    t.is_(r.returncode, 0, "petrel-sendmail with a bare -f sender exits 0")
    msgs = wait_for(lambda: maildir(os.path.join(mail, "box")))
    t.ok(msgs and b"Return-Path: <someone@origin.example>" in msgs[0],
         "the sender gets @origin.example, not @%s" % mailname, msgs[0][:300] if msgs else None)
    p.stop()
    with open(mailname, "w") as f:
        f.write("\n")
    r = check(p)
    t.ok(r.returncode != 0, "an empty myorigin file fails the check")
    t.like(r.stderr, r"error: %s:\d+: myorigin: myorigin file %s is empty" % (re.escape(os.path.join(p.conf, "main.cf")),
                                                                             re.escape(mailname)), "as Postfix says it")
    os.unlink(mailname)
    r = check(p)
    t.like(r.stderr, r"error: .*main\.cf:\d+: myorigin: cannot open %s: No such file or directory" % re.escape(mailname),
           "a missing one too")

# --- next hops: numbers and service names, checked by petreld -n ---
for relayhost, good, label in (("[127.0.0.1]:submission", True, "a service name (submission)"),
                               ("[mail.isp.example]:smtp", True, "smtp"),
                               ("mail.isp.example:587", True, "a number"),
                               ("[127.0.0.1]:submision", False, "a misspelt service name"),
                               ("[127.0.0.1]:70000", False, "a port above 65535"),
                               ("[127.0.0.1", False, "a missing ]"),
                               ("[127.0.0.1], [127.0.0.2]", False, "several next hops")):
    with Petrel(t, start=False, main_cf={"relayhost": relayhost}) as p:
        r = check(p)
        if good:
            t.is_(r.returncode, 0, "relayhost = %s: %s is accepted" % (relayhost, label))
        else:
            t.ok(r.returncode != 0 and re.search(r"error: %s:\d+: relayhost: bad next hop \"%s\": "
                                                 % (re.escape(os.path.join(p.conf, "main.cf")), re.escape(relayhost)),
                                                 r.stderr),
                 "relayhost = %s: %s fails petreld -n with the main.cf line" % (relayhost, label), r.stderr)

for param, value, good, label in (("default_transport", "smtp:[127.0.0.1]:submission", True, "a service name"),
                                  ("virtual_transport", "lmtp:unix:private/dovecot-lmtp", True, "an LMTP socket"),
                                  ("relay_transport", "relay:[127.0.0.1]:submision", False, "a misspelt service name"),
                                  ("default_transport", "smtp:[127.0.0.1", False, "a missing ]"),
                                  ("virtual_transport", "lmtp:inet:[::1]:70000", False, "a port above 65535")):
    with Petrel(t, start=False, main_cf={param: value}) as p:
        r = check(p)
        if good:
            t.ok(r.returncode == 0, "%s = %s: %s is accepted" % (param, value, label), r.stderr)
        else:
            nexthop = value.split(":", 1)[1]
            t.ok(r.returncode != 0 and re.search(r"error: %s:\d+: %s: bad next hop \"%s\": "
                                                 % (re.escape(os.path.join(p.conf, "main.cf")), param,
                                                    re.escape(nexthop)), r.stderr),
                 "%s = %s: %s fails petreld -n with the main.cf line" % (param, value, label), r.stderr)

sink = Sink(keep=True)
with Petrel(t, extra_services=SERVICES, main_cf={"relayhost": "[127.0.0.1]:%d" % sink.port,
                                                  "relay_domains": "relayed.example"}) as p:
    c = p.connect()
    t.like(c.send_message("s@petrel.test", ["r@far.example"], "Subject: relayhost\r\n\r\nx"), r"^250 ",
           "mail for a remote domain is queued")
    c.close()
    t.ok(wait_for(lambda: any("Subject: relayhost" in m for m in sink.messages()), 30),
         "relayhost = [127.0.0.1]:PORT delivers to that port")
    # Postfix's resolve.c: relayhost is the next hop of relay_domains mail too
    # (relay_transport names no next hop of its own).
    c = p.connect()
    t.like(c.send_message("s@petrel.test", ["r@relayed.example"], "Subject: relay domain\r\n\r\nx"), r"^250 ",
           "mail for a relay_domains domain is queued")
    c.close()
    t.ok(wait_for(lambda: any("Subject: relay domain" in m for m in sink.messages()), 30),
         "and goes through relayhost as well, as in Postfix", p.log()[-1500:])
sink.stop()

# A service name that services(5) maps to the sink's port: in a private mount
# namespace with its own /etc/services (the host's is not touched).
if os.geteuid() == 0:
    inner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "longtail_services.py")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, inner], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=os.path.dirname(inner)))
    t.ok("namespace: delivered" in r.stdout,
         "relayhost = [127.0.0.1]:NAME delivers to the port /etc/services gives NAME", r.stdout + r.stderr)
else:
    t.ok(False, "the services(5) test needs root for a private mount namespace (CI and scripts/test.sh run as root)")

# --- a bare type:table in a restriction list: that list's check_*_access ---
with Petrel(t, start=False) as p:
    access = p.write_file("sender_access", "bad@example.com REJECT\n")
    p.write_main_cf(dict(p.settings, smtpd_sender_restrictions="texthash:" + access))
    p.start()
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<bad@example.com>"), "250 2.1.0 Ok", "MAIL FROM is accepted (smtpd_delay_reject)")
    t.is_(c.cmd("RCPT TO:<postmaster@petrel.test>"),
          "554 5.7.1 <bad@example.com>: Sender address rejected: Access denied",
          "smtpd_sender_restrictions = texthash:... rejects as check_sender_access would")
    c.cmd("RSET")
    t.is_(c.cmd("MAIL FROM:<good@example.com>"), "250 2.1.0 Ok", "another sender")
    t.like(c.cmd("RCPT TO:<postmaster@petrel.test>"), r"^250 ", "is not refused")
    c.close()
with Petrel(t, start=False, main_cf={"smtpd_data_restrictions": "texthash:/etc/hosts"}) as p:
    r = check(p)
    t.ok(r.returncode != 0 and "smtpd_data_restrictions: table texthash:/etc/hosts given without a restriction in "
         "front of it" in r.stderr, "in smtpd_data_restrictions, which has no access check, it is an error", r.stderr)

# --- domain lists: type:table items, "!" exclusions, $virtual_alias_maps ---
with Petrel(t, start=False) as p:
    virtual = p.write_file("virtual", "valias.test anything\nuser@valias.test postmaster@petrel.test\n")
    domains = p.write_file("relay_domains", "partner.test OK\n")
    p.write_main_cf(dict(p.settings, virtual_alias_maps="texthash:" + virtual,
                         relay_domains="!no.partner.test, texthash:" + domains,
                         smtpd_relay_restrictions="reject_unauth_destination"))
    p.start()
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<s@example.org>")
    t.like(c.cmd("RCPT TO:<user@valias.test>"), r"^250 ",
           "virtual_alias_domains = $virtual_alias_maps (Postfix's default): a domain key makes it ours")
    t.is_(c.cmd("RCPT TO:<nobody@valias.test>"),
          "550 5.1.1 <nobody@valias.test>: Recipient address rejected: User unknown in virtual alias table",
          "and an unknown user there is refused as Postfix refuses it")
    t.like(c.cmd("RCPT TO:<x@mx.partner.test>"), r"^250 ", "relay_domains = texthash:...: a subdomain of a listed domain")
    t.is_(c.cmd("RCPT TO:<x@no.partner.test>"), "554 5.7.1 <x@no.partner.test>: Relay access denied",
          "relay_domains = !no.partner.test, ...: the exclusion comes first")
    t.is_(c.cmd("RCPT TO:<x@elsewhere.test>"), "554 5.7.1 <x@elsewhere.test>: Relay access denied", "others")
    c.close()
with Petrel(t, start=False) as p:
    p.write_main_cf(dict(p.settings, relay_domains="fail:down", smtpd_relay_restrictions="reject_unauth_destination"))
    p.start()
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<s@example.org>")
    t.is_(c.cmd("RCPT TO:<x@far.example>"), "451 4.3.0 <x@far.example>: Temporary lookup failure",
          "a domain list whose table fails makes the client try again, never \"not ours\"")
    t.like(c.cmd("RCPT TO:<postmaster@petrel.test>"), r"^250 ", "a domain an earlier list matches is not affected")
    c.close()

# --- -o options Petrel does not apply: delivery transports and ignored services ---
services = SERVICES + ("smtp-amavis unix - - n - 2 smtp -o smtp_data_done_timeout=1200 -o syslog_name=amavis\n"
                       "secure unix - - n - - smtp -o smtp_tls_security_level=encrypt\n"
                       "checked unix - - n - - smtp -o smtp_header_checks=\n"
                       "cleanup unix n - n - 0 cleanup -o header_checks= -o myhostname=cleanup.example\n"
                       "wrongtls unix - - n - - smtp -o lmtp_tls_security_level=encrypt\n")
with Petrel(t, start=False, extra_services=services) as p:
    master_cf = os.path.join(p.conf, "master.cf")
    r = check(p)
    NOT_PER_TRANSPORT = ("Petrel's queue manager runs every transport with main.cf's settings (only the SMTP and "
                         "LMTP clients' settings and the content checks and their limits are per transport)")
    t.ok(("warning: %s:4: service smtp-amavis (command smtp): -o syslog_name=amavis is not applied: %s\n"
          % (master_cf, NOT_PER_TRANSPORT)) in r.stderr,
         "an implemented -o of a delivery transport is warned about", r.stderr)
    t.ok(("error: %s:8: service wrongtls (command smtp): -o lmtp_tls_security_level=encrypt is not applied: %s; "
          "refusing to start: this weakens security "
          "(to start anyway, list lmtp_tls_security_level in petrel_accept_unimplemented)\n"
          % (master_cf, NOT_PER_TRANSPORT)) in r.stderr,
         "a TLS setting an smtp transport does not read is refused", r.stderr)
    t.ok("smtp_tls_security_level" not in r.stderr and "smtp_data_done_timeout" not in r.stderr,
         "the SMTP client's own settings of a transport apply (qmgr/transports.c): nothing said", r.stderr)
    t.ok("smtp_header_checks" not in r.stderr and "-o header_checks" not in r.stderr,
         "the content checks of a transport and of the cleanup service apply: nothing said", r.stderr)
    t.ok(("warning: %s:7: service cleanup (command cleanup): -o myhostname=cleanup.example is not applied: Petrel's "
          "cleanup (inside smtpd and pickup) reads only the header and body checks and their limits from this "
          "service\n" % master_cf) in r.stderr, "another -o of the cleanup service is warned about", r.stderr)

# --- every Postfix service command in master.cf ---
ALL = """\
smtp      inet  n       -       y       -       -       smtpd
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
trace     unix  -       -       y       -       0       bounce
verify    unix  -       -       y       -       1       verify
flush     unix  n       -       y       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
showq     unix  n       -       y       -       -       showq
error     unix  -       -       y       -       -       error
retry     unix  -       -       y       -       -       error
discard   unix  -       -       y       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       y       -       -       lmtp
anvil     unix  -       -       y       -       1       anvil
scache    unix  -       -       y       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
maildrop  unix  -       n       n       -       -       pipe flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
policyd-spf unix -      n       n       -       0       spawn user=nobody argv=/usr/bin/policyd-spf
tlsproxy  unix  -       -       y       -       0       tlsproxy
dnsblog   unix  -       -       y       -       0       dnsblog
PORTQ      inet  n       -       y       -       -       qmqpd
"""
qmqp_port = free_port()
with Petrel(t, start=False, master_cf=ALL.replace("smtp      inet", "127.0.0.1:%d inet" % free_port())
            .replace("PORTQ     ", "127.0.0.1:%d" % qmqp_port)) as p:
    master_cf = os.path.join(p.conf, "master.cf")
    r = check(p)
    t.is_(r.returncode, 0, "a master.cf with every Postfix service command loads")
    t.ok(not re.search(r"unknown command", r.stderr), "no command is unknown")
    t.ok("%s, line 3: service cleanup (command cleanup): Petrel cleans mail up inside smtpd and pickup, with this "
         "service's header and body checks; no process of its own\n" % master_cf in r.stderr,
         "the cleanup service says what Petrel does with it", r.stderr)
    t.ok("%s, line 10: service verify (command verify): address verification is not implemented "
         "(reject_unverified_* are refused); ignored\n" % master_cf in r.stderr, "verify too")
    t.ok(("warning: %s, line 30: service 127.0.0.1:%d (command qmqpd): the QMQP server is not implemented; ignored: "
          "NOTHING listens on 127.0.0.1:%d\n" % (master_cf, qmqp_port, qmqp_port)) in r.stderr,
         "an inet service Petrel does not run is a warning: nothing listens there", r.stderr)
    t.like(r.stderr, r"warning: %s, line 1: service 127\.0\.0\.1:\d+: chroot is not supported; the service runs without "
           r"it" % re.escape(master_cf), "the chroot column is warned about")

# --- virtual_minimum_uid: a uid below it is never used (Postfix's virtual(8)) ---
with Petrel(t, extra_services=SERVICES, start=False) as p:
    mail = p.make_dir("vmail")
    p.write_main_cf(dict(p.settings, virtual_mailbox_domains="vmail.test", virtual_mailbox_base=mail,
                         virtual_mailbox_maps="inline:{ {low@vmail.test = low/}, {ok@vmail.test = ok/} }",
                         virtual_uid_maps="inline:{ {low@vmail.test = 50} }", virtual_minimum_uid="100"))
    p.start()
    c = p.connect()
    t.like(c.send_message("s@example.org", ["low@vmail.test"], "Subject: low uid\r\n\r\nx"), r"^250 ", "queued")
    c.close()
    t.ok(p.wait_log(r"recipient low@vmail\.test: bad uid 50 in virtual_uid_maps \(below virtual_minimum_uid 100\)")
         is not None, "a uid below virtual_minimum_uid is refused with a warning")
    t.ok(p.wait_log(r"to=<low@vmail\.test>, .*dsn=4\.3\.5, status=deferred \(mail system configuration error\)")
         is not None, "and the mail is deferred, not delivered with that uid")
    t.ok(not os.path.exists(os.path.join(mail, "low")), "no mailbox was written")

# --- found by the corpus (t/corpus): every bad item of a restriction list is named ---
with Petrel(t, start=False, main_cf={"smtpd_recipient_restrictions": "reject_bogus_thing, permit_mynetworks, "
                                     "reject_unverified_recipient, check_recipient_access mysql:/nonexistent.cf, "
                                     "reject_unauth_destination"}) as p:
    r = check(p)
    t.ok(r.returncode != 0 and re.search(
        r'error: %s:\d+: smtpd_recipient_restrictions: unknown restriction "reject_bogus_thing"; restriction '
        r'reject_unverified_recipient is not supported by Petrel: [^;]*; check_recipient_access: '
        r'mysql:/nonexistent\.cf: table type mysql is not available' % re.escape(os.path.join(p.conf, "main.cf")),
        r.stderr), "petreld -n names every bad item of one restriction list, not only the first", r.stderr)

# --- found by the corpus (Mailu): per-transport parameters as -o options of their own service ---
services = SERVICES + ("polite unix - - n - - smtp -o polite_destination_rate_delay=0 "
                       "-o polite_destination_concurrency_failed_cohort_limit=10\n")
with Petrel(t, start=False, extra_services=services) as p:
    master_cf = os.path.join(p.conf, "master.cf")
    r = check(p)
    t.ok("unknown parameter" not in r.stderr, "polite_destination_rate_delay in -o is a Postfix name, not unknown",
         r.stderr)
    for opt in ("polite_destination_rate_delay=0", "polite_destination_concurrency_failed_cohort_limit=10"):
        t.ok(("warning: %s:4: service polite (command smtp): -o %s is not applied: %s\n"
              % (master_cf, opt, NOT_PER_TRANSPORT)) in r.stderr,
             "-o %s is not applied (the queue manager reads main.cf, in Postfix too): said" % opt, r.stderr)

# --- found by the corpus: $name of a Postfix parameter Petrel has no value for ---
with Petrel(t, start=False, main_cf={"proxy_read_maps": "$relocated_maps $local_recipient_maps"}) as p:
    r = check(p)
    t.like(r.stderr, r"warning: .*main\.cf:\d+: proxy_read_maps: \$relocated_maps expands to an empty string: "
           r"Petrel has no value for this Postfix parameter \(mail to moved users", "is said as such, not \"undefined\"")
    t.ok("undefined parameter $relocated_maps" not in r.stderr, "not \"undefined parameter\"", r.stderr)

# --- found by the corpus (mailcow): virtual_mailbox_limit matters only to the virtual agent ---
for transport, good in (("lmtp:inet:127.0.0.1:24", True), ("virtual", False)):
    with Petrel(t, start=False, main_cf={"message_size_limit": "104857600", "mailbox_size_limit": "0",
                                        "virtual_transport": transport}) as p:
        r = check(p)
        if good:
            t.ok(r.returncode == 0 and "virtual_mailbox_limit" not in r.stderr,
                 "virtual_transport = %s: virtual_mailbox_limit below message_size_limit is no error (Postfix's "
                 "virtual(8) never runs)" % transport, r.stderr)
        else:
            t.ok(r.returncode != 0 and "virtual_mailbox_limit is smaller than message_size_limit" in r.stderr,
                 "virtual_transport = virtual: it is, as in Postfix", r.stderr)

# --- found by the corpus (Mail-in-a-Box): a problem with a default names it as such ---
# virtual_alias_domains is not in main.cf: its default, $virtual_alias_maps,
# brings the table; the error has no line, so it says where the value comes from.
with Petrel(t, start=False, main_cf={"virtual_alias_maps": "ldap:/nonexistent/ldap-aliases.cf"}) as p:
    r = check(p)
    t.like(r.stderr, r"error: \S+/main\.cf: virtual_alias_domains \(not set in main\.cf: its default value "
           r"\"\$virtual_alias_maps\"\): ldap:/nonexistent/ldap-aliases\.cf: table type ldap is not available",
           "an error in a default value names the parameter and says it is the default")
    t.like(r.stderr, r"error: \S+/main\.cf:\d+: virtual_alias_maps: ldap:/nonexistent/ldap-aliases\.cf: table type "
           r"ldap is not available", "  the parameter set in main.cf keeps its line")

t.done()
