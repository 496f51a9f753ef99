"""Recipient validation at RCPT (issue 8, finding 2: backscatter): Postfix's
smtpd_reject_unlisted_recipient with local_recipient_maps, virtual_alias_maps,
virtual_mailbox_maps and relay_recipient_maps, one address class at a time,
with Postfix's codes and texts; extensions and @domain catch-alls accepted
exactly where the router delivers them; a failing table defers (451 4.3.0);
reject_unlisted_recipient / reject_unlisted_sender as restrictions;
smtpd_reject_unlisted_sender. Every refusal is followed by a message that
still goes through."""
import os
import subprocess

from harness import Petrel, Tap, TEST_USER, TOP_BUILDDIR, _runnable_copy, maildir_messages, wait_for

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"
QMGR = "qmgr unix n - n 300 1 qmgr\n"
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))


def unknown(address, table, code=550, enhanced="5.1.1", what="Recipient"):
    return "%d %s <%s>: %s address rejected: User unknown in %s" % (code, enhanced, address, what, table)


def start(settings, default_local_maps=False, extra_services=""):
    """A petreld with settings on top of the harness defaults; with
    default_local_maps, local_recipient_maps is left at Postfix's default."""
    p = Petrel(t, start=False, extra_services=extra_services)
    conf = dict(p.settings)
    if default_local_maps:
        del conf["local_recipient_maps"]
    conf.update(settings)
    p.write_main_cf(conf)
    p._chown()
    p.start()
    return p


def still_serves(p, what, rcpt="%s@petrel.test" % TEST_USER):
    c = p.connect()
    r = c.send_message("sender@example.org", [rcpt], "Subject: after %s\r\n\r\nok\r\n" % what)
    t.like(r, OK_RE, "%s: a fresh connection still gets its message to <%s> queued" % (what, rcpt))
    c.close()


def rcpt_session(p, sender="sender@example.org"):
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<%s>" % sender), "250 2.1.0 Ok", "MAIL FROM:<%s>" % sender)
    return c


domains = {
    "recipient_delimiter": "+",
    "virtual_alias_domains": "valias.test catchall-alias.test",
    "virtual_alias_maps": "inline:{ {info@valias.test = %s@petrel.test}, "
                          "{@catchall-alias.test = %s@petrel.test} }" % (TEST_USER, TEST_USER),
    "virtual_mailbox_domains": "vmail.test catchall.test",
    "virtual_mailbox_maps": "inline:{ {u@vmail.test = vmail/u/}, {@catchall.test = catchall/} }",
    "relay_domains": "relay.test",
    "relay_recipient_maps": "inline:{ {known@relay.test = x} }",
    # the relay domain's next hop: never reached (nothing is delivered here)
    "transport_maps": "inline:{ {relay.test = error:not delivered in this test} }",
}

# --- every class, Postfix's default local_recipient_maps (the system's users) ---
with start(domains, default_local_maps=True) as p:
    c = rcpt_session(p)
    # 127.0.0.1 is in mynetworks: permit_mynetworks does not skip the check, as in Postfix.
    t.is_(c.cmd("RCPT TO:<ghost@petrel.test>"), unknown("ghost@petrel.test", "local recipient table"),
          "unknown local user: 550 5.1.1 User unknown in local recipient table")
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER), "250 2.1.5 Ok",
          "a real system user (%s) is accepted" % TEST_USER)
    t.is_(c.cmd("RCPT TO:<root@petrel.test>"), "250 2.1.5 Ok", "root, a system user, is accepted")
    t.is_(c.cmd("RCPT TO:<Root@MX.Petrel.Test>"), "250 2.1.5 Ok", "user and domain match without case")
    t.is_(c.cmd("RCPT TO:<%s+tag@petrel.test>" % TEST_USER), "250 2.1.5 Ok",
          "a local user with an extension (recipient_delimiter) is accepted")
    t.is_(c.cmd("RCPT TO:<ghost+tag@petrel.test>"), unknown("ghost+tag@petrel.test", "local recipient table"),
          "an unknown user with an extension is still unknown")
    t.is_(c.cmd("RCPT TO:<postmaster@petrel.test>"), "250 2.1.5 Ok",
          "postmaster@ is always accepted (no such system user)")
    t.is_(c.cmd("RCPT TO:<MAILER-DAEMON@petrel.test>"), "250 2.1.5 Ok", "MAILER-DAEMON@ is always accepted")
    t.is_(c.cmd("RCPT TO:<postmaster>"), "250 2.1.5 Ok", "bare <postmaster> is accepted")

    t.is_(c.cmd("RCPT TO:<u@vmail.test>"), "250 2.1.5 Ok", "a listed virtual mailbox is accepted")
    t.is_(c.cmd("RCPT TO:<u+tag@vmail.test>"), "250 2.1.5 Ok", "a virtual mailbox with an extension is accepted")
    t.is_(c.cmd("RCPT TO:<nobody@vmail.test>"), unknown("nobody@vmail.test", "virtual mailbox table"),
          "unknown virtual mailbox: 550 5.1.1 User unknown in virtual mailbox table")
    t.is_(c.cmd("RCPT TO:<anyone@catchall.test>"), "250 2.1.5 Ok",
          "an @domain catch-all in virtual_mailbox_maps accepts any user")

    t.is_(c.cmd("RCPT TO:<info@valias.test>"), "250 2.1.5 Ok", "a listed virtual alias is accepted")
    t.is_(c.cmd("RCPT TO:<info+tag@valias.test>"), "250 2.1.5 Ok", "a virtual alias with an extension is accepted")
    t.is_(c.cmd("RCPT TO:<ghost@valias.test>"), unknown("ghost@valias.test", "virtual alias table"),
          "unknown user in a virtual alias domain: 550 5.1.1 User unknown in virtual alias table")
    t.is_(c.cmd("RCPT TO:<anyone@catchall-alias.test>"), "250 2.1.5 Ok",
          "an @domain catch-all in virtual_alias_maps accepts any user")

    t.is_(c.cmd("RCPT TO:<known@relay.test>"), "250 2.1.5 Ok", "a relay recipient in relay_recipient_maps is accepted")
    t.is_(c.cmd("RCPT TO:<known+tag@relay.test>"), "250 2.1.5 Ok", "and with an extension")
    t.is_(c.cmd("RCPT TO:<stranger@relay.test>"), unknown("stranger@relay.test", "relay recipient table"),
          "unknown relay recipient: 550 5.1.1 User unknown in relay recipient table")
    t.is_(c.cmd("RCPT TO:<known@sub.relay.test>"), unknown("known@sub.relay.test", "relay recipient table"),
          "a subdomain of a relay domain is checked too")

    t.is_(c.cmd("RCPT TO:<someone@elsewhere.example>"), "250 2.1.5 Ok",
          "a domain that is not ours is not checked (mynetworks may relay)")
    c.cmd("DATA")
    c.send(b"Subject: the accepted ones\r\n\r\nx\r\n.\r\n")
    t.like(c.read_reply(), OK_RE, "the message goes to the accepted recipients")
    c.close()
    t.ok(p.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 550 5\.1\.1 <ghost@petrel\.test>: "
                    r"Recipient address rejected: User unknown in local recipient table; from=<sender@example\.org> "
                    r"to=<ghost@petrel\.test> proto=ESMTP helo=<client\.example\.org>") is not None,
         "the refusal is logged in Postfix's format")
    still_serves(p, "unknown recipients")

# --- what smtpd accepts, the router delivers: extension and catch-all forms end to end ---
with Petrel(t, start=False, extra_services=QMGR) as p:
    boxes = p.make_dir()
    conf = dict(p.settings)
    conf.update(domains)
    conf["virtual_mailbox_base"] = boxes
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    for rcpt in ("u+tag@vmail.test", "whoever@catchall.test"):
        r = c.send_message("sender@example.org", [rcpt], "Subject: to %s\r\n\r\nx\r\n" % rcpt)
        t.like(r, OK_RE, "<%s> is accepted" % rcpt)
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(boxes, "vmail", "u"))) == 1, timeout=60),
         "and the router delivers u+tag@vmail.test to u's mailbox (same extension rule)")
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(boxes, "catchall"))) == 1, timeout=60),
         "and whoever@catchall.test to the catch-all mailbox (same @domain rule)")
    c.close()

# --- alias_maps is part of the default local_recipient_maps ---
with Petrel(t, start=False) as p:
    conf = dict(p.settings)
    del conf["local_recipient_maps"]
    conf["alias_maps"] = "texthash:" + p.write_file("aliases", "webmaster %s\n" % TEST_USER)
    conf["recipient_delimiter"] = "+"
    p.write_main_cf(conf)
    p.start()
    c = rcpt_session(p)
    t.is_(c.cmd("RCPT TO:<webmaster@petrel.test>"), "250 2.1.5 Ok", "an alias in alias_maps is a known local recipient")
    t.is_(c.cmd("RCPT TO:<webmaster+x@petrel.test>"), "250 2.1.5 Ok", "and with an extension")
    t.is_(c.cmd("RCPT TO:<ghost@petrel.test>"), unknown("ghost@petrel.test", "local recipient table"),
          "a name in neither table is unknown")
    c.close()

# --- the codes and texts are the admin's ---
with start(dict(domains, unknown_local_recipient_reject_code="450", unknown_virtual_alias_reject_code="554",
                unknown_virtual_mailbox_reject_code="551", unknown_relay_recipient_reject_code="553")) as p:
    c = rcpt_session(p)
    t.is_(c.cmd("RCPT TO:<ghost@petrel.test>"), unknown("ghost@petrel.test", "local recipient table", 450, "4.1.1"),
          "unknown_local_recipient_reject_code = 450: 450 4.1.1 (the enhanced code follows the reply's class)")
    t.is_(c.cmd("RCPT TO:<ghost@valias.test>"), unknown("ghost@valias.test", "virtual alias table", 554),
          "unknown_virtual_alias_reject_code = 554")
    t.is_(c.cmd("RCPT TO:<ghost@vmail.test>"), unknown("ghost@vmail.test", "virtual mailbox table", 551),
          "unknown_virtual_mailbox_reject_code = 551")
    t.is_(c.cmd("RCPT TO:<ghost@relay.test>"), unknown("ghost@relay.test", "relay recipient table", 553),
          "unknown_relay_recipient_reject_code = 553")
    c.close()
    still_serves(p, "overridden codes")

with start({"show_user_unknown_table_name": "no"}) as p:
    c = rcpt_session(p)
    t.is_(c.cmd("RCPT TO:<ghost@petrel.test>"), "550 5.1.1 <ghost@petrel.test>: Recipient address rejected: User unknown",
          "show_user_unknown_table_name = no: the table is not named")
    c.close()

# --- a table that fails defers: it never means "unknown" ---
with start(dict(domains, virtual_mailbox_maps="fail:down",
                local_recipient_maps="proxy:unix:passwd.byname fail:unreachable")) as p:
    c = rcpt_session(p)
    t.is_(c.cmd("RCPT TO:<u@vmail.test>"), "451 4.3.0 <u@vmail.test>: Temporary lookup failure",
          "virtual_mailbox_maps lookup error: 451 4.3.0 Temporary lookup failure")
    t.is_(c.cmd("RCPT TO:<ghost@petrel.test>"), "451 4.3.0 <ghost@petrel.test>: Temporary lookup failure",
          "local_recipient_maps lookup error for an unknown user: 451 4.3.0, not 550")
    t.is_(c.cmd("RCPT TO:<postmaster@petrel.test>"), "250 2.1.5 Ok", "postmaster needs no lookup")
    t.is_(c.cmd("RCPT TO:<info@valias.test>"), "250 2.1.5 Ok", "other classes are not affected")
    c.close()
    t.ok(p.wait_log(r"warning: virtual_mailbox_maps: fail:down: lookup error for \"u@vmail\.test\"") is not None,
         "the failing table is logged")
    still_serves(p, "a failing table", rcpt="info@valias.test")

# --- smtpd_reject_unlisted_recipient = no, and the explicit restriction ---
with start(dict(domains, smtpd_reject_unlisted_recipient="no")) as p:
    c = rcpt_session(p)
    t.is_(c.cmd("RCPT TO:<ghost@petrel.test>"), "250 2.1.5 Ok",
          "smtpd_reject_unlisted_recipient = no: an unknown local user is accepted")
    t.is_(c.cmd("RCPT TO:<nobody@vmail.test>"), "250 2.1.5 Ok", "and an unknown virtual mailbox")
    c.close()

with start(dict(domains, smtpd_reject_unlisted_recipient="no",
                smtpd_recipient_restrictions="check_recipient_access inline:{ghost2@petrel.test=OK}, "
                                             "reject_unlisted_recipient")) as p:
    c = rcpt_session(p)
    t.is_(c.cmd("RCPT TO:<ghost@petrel.test>"), unknown("ghost@petrel.test", "local recipient table"),
          "reject_unlisted_recipient in smtpd_recipient_restrictions rejects on its own")
    t.is_(c.cmd("RCPT TO:<ghost2@petrel.test>"), "250 2.1.5 Ok", "an OK before it decides first")
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER), "250 2.1.5 Ok", "a known user passes it")
    c.close()

with start(dict(domains, smtpd_recipient_restrictions="check_recipient_maps")) as p:
    c = rcpt_session(p)
    t.is_(c.cmd("RCPT TO:<nobody@vmail.test>"), unknown("nobody@vmail.test", "virtual mailbox table"),
          "check_recipient_maps (the old name) works too")
    c.close()

# --- unknown senders in our domains ---
with start(dict(domains, smtpd_reject_unlisted_sender="yes")) as p:
    c = rcpt_session(p, "ghost@petrel.test")
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER),
          unknown("ghost@petrel.test", "local recipient table", enhanced="5.1.0", what="Sender"),
          "smtpd_reject_unlisted_sender = yes: 550 5.1.0 Sender address rejected (at RCPT: smtpd_delay_reject)")
    c.cmd("RSET")
    c.cmd("MAIL FROM:<nobody@vmail.test>")
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER),
          unknown("nobody@vmail.test", "virtual mailbox table", enhanced="5.1.0", what="Sender"),
          "an unknown virtual mailbox sender")
    c.cmd("RSET")
    c.cmd("MAIL FROM:<%s+list@petrel.test>" % TEST_USER)
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER), "250 2.1.5 Ok", "a known local sender is accepted")
    c.cmd("RSET")
    c.cmd("MAIL FROM:<>")
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER), "250 2.1.5 Ok", "the null sender is never checked")
    c.cmd("RSET")
    c.cmd("MAIL FROM:<someone@example.org>")
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER), "250 2.1.5 Ok", "a sender outside our domains is not checked")
    c.close()
    still_serves(p, "unknown senders")

with start(dict(domains, smtpd_reject_unlisted_sender="yes", smtpd_delay_reject="no")) as p:
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<ghost@petrel.test>"),
          unknown("ghost@petrel.test", "local recipient table", enhanced="5.1.0", what="Sender"),
          "with smtpd_delay_reject = no the unknown sender is refused at MAIL")
    t.is_(c.cmd("MAIL FROM:<%s@petrel.test>" % TEST_USER), "250 2.1.0 Ok", "a known sender is not")
    c.close()

with start(dict(domains, smtpd_sender_restrictions="reject_unlisted_sender")) as p:
    c = rcpt_session(p, "ghost@valias.test")
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER),
          unknown("ghost@valias.test", "virtual alias table", enhanced="5.1.0", what="Sender"),
          "reject_unlisted_sender in smtpd_sender_restrictions (smtpd_reject_unlisted_sender = no)")
    c.close()

with start(domains) as p:
    c = rcpt_session(p, "ghost@petrel.test")
    t.is_(c.cmd("RCPT TO:<%s@petrel.test>" % TEST_USER), "250 2.1.5 Ok",
          "smtpd_reject_unlisted_sender defaults to no: an unknown sender in our domain is accepted")
    c.close()

# --- local submission is never refused for an unknown recipient (Postfix's sendmail) ---
with start({"command_directory": os.path.dirname(POSTDROP)}, extra_services="pickup unix n - n 60 1 pickup\n") as p:
    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "ghost@petrel.test"), input=b"Subject: x\n\nx\n",
                       capture_output=True, timeout=30)
    t.is_(r.returncode, 0, "petrel-sendmail to an unknown local user is accepted (it bounces to the local sender)")

# --- a domain in two class lists: one class for smtpd and router, and a warning ---
with start({"mydestination": "petrel.test, both.test", "virtual_mailbox_domains": "both.test",
            "virtual_mailbox_maps": "inline:{ {box@both.test = both/box/} }"}, extra_services=QMGR) as p:
    t.ok(p.wait_log(r"warning: do not list domain both\.test in BOTH mydestination and virtual_mailbox_domains")
         is not None, "the queue manager warns about a domain in mydestination and virtual_mailbox_domains")
    c = rcpt_session(p)
    t.is_(c.cmd("RCPT TO:<box@both.test>"), unknown("box@both.test", "local recipient table"),
          "the domain is local (Postfix's precedence): virtual_mailbox_maps does not make box known")
    t.is_(c.cmd("RCPT TO:<%s@both.test>" % TEST_USER), "250 2.1.5 Ok", "a system user is")
    c.close()

t.done()
