"""The restriction engine as a client sees it: access tables (texthash: and
inline:) giving OK, REJECT text, DEFER, 4xx/5xx text, DUNNO; the non-FQDN and
invalid-HELO checks; smtpd_delay_reject phases; relay vs recipient lists;
reject_unauth_pipelining. Every refused session is followed by a message
that still goes through."""
import re

from harness import Petrel, Tap

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"


def still_serves(p, what, helo="client.example.org", sender="sender@example.org"):
    c = p.connect()
    c.ehlo(helo)
    r = c.send_message(sender, ["user@petrel.test"], "Subject: after %s\r\n\r\nok\r\n" % what, ehlo=False)
    t.like(r, OK_RE, "%s: a fresh connection still gets its message queued" % what)
    c.close()


def start(settings, tables=None):
    """A petreld whose main.cf may refer to texthash files as @NAME@."""
    p = Petrel(t, start=False)
    conf = dict(p.settings)
    for name, text in (tables or {}).items():
        path = p.write_file(name, text)
        settings = {k: v.replace("@%s@" % name, path) for k, v in settings.items()}
    conf.update(settings)
    p.write_main_cf(conf)
    p._chown()
    p.start()
    return p


tables = {
    "helo_access": "reject.example REJECT Your HELO is not welcome\n"
                   "defer.example DEFER Come back later\n"
                   "custom.example 450 4.7.9 Custom temporary text\n"
                   "custom5.example 521 5.7.9 Custom permanent text\n"
                   "plain.example 550\n",
    "sender_access": "spammer@example.org REJECT Known spammer\n"
                     "example.net 550 5.7.0 No mail from example.net\n"
                     "dunno.example.org DUNNO\n"
                     "ok.example.org OK\n",
    "rcpt_access": "blocked@petrel.test REJECT\n"
                   "later@petrel.test 451 4.2.0 Mailbox busy, try later\n"
                   "deferred@petrel.test DEFER\n",
}
with start({
    "smtpd_helo_restrictions": "check_helo_access texthash:@helo_access@",
    "smtpd_sender_restrictions": "check_sender_access texthash:@sender_access@, "
                                 "check_sender_access inline:{ { dunno.example.org = REJECT Dunno fell through } }",
    "smtpd_recipient_restrictions": "check_recipient_access texthash:@rcpt_access@, "
                                    "check_recipient_access inline:{ { inline@petrel.test = REJECT Inline says no } }",
}, tables) as p:
    def helo_case(name, want, desc):
        c = p.connect()
        c.ehlo(name)
        t.is_(c.lines[-1], "250 CHUNKING", "%s: EHLO itself is accepted (smtpd_delay_reject=yes)" % name)
        c.cmd("MAIL FROM:<a@example.org>")
        t.is_(c.cmd("RCPT TO:<user@petrel.test>"), want, desc)
        c.close()

    helo_case("reject.example", "554 5.7.1 <reject.example>: Helo command rejected: Your HELO is not welcome",
              "check_helo_access REJECT text: 554 5.7.1 at RCPT")
    helo_case("sub.reject.example", "554 5.7.1 <sub.reject.example>: Helo command rejected: Your HELO is not welcome",
              "check_helo_access matches parent domains")
    helo_case("defer.example", "450 4.7.1 <defer.example>: Helo command rejected: Come back later",
              "check_helo_access DEFER text: 450 4.7.1")
    helo_case("custom.example", "450 4.7.9 <custom.example>: Helo command rejected: Custom temporary text",
              "check_helo_access 450 4.7.9 text")
    helo_case("custom5.example", "521 5.7.9 <custom5.example>: Helo command rejected: Custom permanent text",
              "check_helo_access 521 5.7.9 text")
    # access(5): an all-numeric result is OK (checked before "4NN text",
    # which needs text), so a bare "550" permits, exactly as in Postfix.
    helo_case("plain.example", "250 2.1.5 Ok", "check_helo_access bare 550 is all-numeric: OK, as in Postfix")
    still_serves(p, "helo access")

    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<spammer@example.org>"), "250 2.1.0 Ok", "MAIL is accepted; the sender check waits for RCPT")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "554 5.7.1 <spammer@example.org>: Sender address rejected: Known spammer",
          "check_sender_access REJECT text")
    c.cmd("RSET")
    c.cmd("MAIL FROM:<someone@example.net>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
          "550 5.7.0 <someone@example.net>: Sender address rejected: No mail from example.net",
          "check_sender_access domain key with 550 5.7.0 text")
    c.cmd("RSET")
    c.cmd("MAIL FROM:<x@dunno.example.org>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
          "554 5.7.1 <x@dunno.example.org>: Sender address rejected: Dunno fell through",
          "DUNNO goes on to the next restriction (inline: table)")
    c.cmd("RSET")
    c.cmd("MAIL FROM:<x@ok.example.org>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "250 2.1.5 Ok", "OK ends the sender list")
    t.is_(c.cmd("RCPT TO:<blocked@petrel.test>"), "554 5.7.1 <blocked@petrel.test>: Recipient address rejected: Access denied",
          "check_recipient_access REJECT without text: Access denied")
    t.is_(c.cmd("RCPT TO:<later@petrel.test>"),
          "451 4.2.0 <later@petrel.test>: Recipient address rejected: Mailbox busy, try later",
          "check_recipient_access 451 4.2.0 text")
    t.is_(c.cmd("RCPT TO:<deferred@petrel.test>"),
          "450 4.7.1 <deferred@petrel.test>: Recipient address rejected: Access denied", "check_recipient_access DEFER")
    t.is_(c.cmd("RCPT TO:<inline@petrel.test>"),
          "554 5.7.1 <inline@petrel.test>: Recipient address rejected: Inline says no", "inline: table REJECT text")
    t.is_(c.cmd("RCPT TO:<Blocked@Petrel.Test>").split(":")[0], "554 5.7.1 <Blocked@Petrel.Test>",
          "access lookups ignore case")
    c.cmd("DATA")
    c.send(b"Subject: one good rcpt\r\n\r\nx\r\n.\r\n")
    t.like(c.read_reply(), OK_RE, "the message goes to the one accepted recipient")
    c.close()
    t.ok(p.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 554 5\.7\.1 <spammer@example\.org>: "
                    r"Sender address rejected: Known spammer; from=<spammer@example\.org> to=<user@petrel\.test> "
                    r"proto=ESMTP helo=<client\.example\.org>") is not None, "the reject is logged in Postfix's format")
    still_serves(p, "sender and recipient access")

# smtpd_delay_reject = no: each list at its own command.
with start({
    "smtpd_delay_reject": "no",
    "smtpd_helo_restrictions": "reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname",
    "smtpd_sender_restrictions": "reject_non_fqdn_sender, check_sender_access inline:{bad@example.org=REJECT}",
    "smtpd_recipient_restrictions": "reject_non_fqdn_recipient",
}) as p:
    c = p.connect()
    t.is_(c.cmd("EHLO bad_host!name"), "501 5.5.2 <bad_host!name>: Helo command rejected: Invalid name",
          "reject_invalid_helo_hostname at EHLO: 501 5.5.2")
    t.is_(c.cmd("EHLO nodots"), "504 5.5.2 <nodots>: Helo command rejected: need fully-qualified hostname",
          "reject_non_fqdn_helo_hostname at EHLO: 504 5.5.2")
    t.like(c.cmd("EHLO [127.0.0.1]"), r"^250 ", "an address literal is a valid HELO")
    t.is_(c.cmd("EHLO client.example.org"), "250 CHUNKING", "a proper FQDN passes")
    t.is_(c.cmd("MAIL FROM:<user@localhost>"),
          "504 5.5.2 <user@localhost>: Sender address rejected: need fully-qualified address",
          "reject_non_fqdn_sender at MAIL: 504 5.5.2")
    t.is_(c.cmd("MAIL FROM:<bad@example.org>"), "554 5.7.1 <bad@example.org>: Sender address rejected: Access denied",
          "check_sender_access at MAIL with smtpd_delay_reject=no")
    t.is_(c.cmd("MAIL FROM:<>"), "250 2.1.0 Ok", "the null sender is not a non-FQDN sender")
    t.is_(c.cmd("RCPT TO:<user@petrel>"), "504 5.5.2 <user@petrel>: Recipient address rejected: need fully-qualified address",
          "reject_non_fqdn_recipient: 504 5.5.2")
    t.is_(c.cmd("RCPT TO:<postmaster>"), "250 2.1.5 Ok", "bare <postmaster> is exempt from the FQDN check")
    c.close()
    still_serves(p, "delay_reject=no")

# smtpd_delay_reject = yes (default): the same checks all answer at RCPT.
with start({
    "smtpd_helo_restrictions": "reject_invalid_helo_hostname",
    "smtpd_sender_restrictions": "reject_non_fqdn_sender",
    "smtpd_client_restrictions": "check_client_access inline:{127.0.0.9=REJECT}",
}) as p:
    c = p.connect()
    t.is_(c.cmd("EHLO bad_host!name"), "250 CHUNKING", "delay_reject=yes: an invalid HELO is accepted at EHLO")
    t.is_(c.cmd("MAIL FROM:<user@localhost>"), "250 2.1.0 Ok", "delay_reject=yes: a non-FQDN sender is accepted at MAIL")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "501 5.5.2 <bad_host!name>: Helo command rejected: Invalid name",
          "delay_reject=yes: the HELO check answers at RCPT")
    c.close()
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<user@localhost>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
          "504 5.5.2 <user@localhost>: Sender address rejected: need fully-qualified address",
          "delay_reject=yes: the sender check answers at RCPT")
    c.close()
    still_serves(p, "delay_reject=yes")

# Client restrictions: at connect with smtpd_delay_reject=no, at RCPT by default.
with start({"smtpd_delay_reject": "no",
            "smtpd_client_restrictions": "check_client_access inline:{ { 127.0.0.2 = REJECT Go away } }"}) as p:
    c = p.connect(source="127.0.0.2", read_greeting=False)
    t.is_(c.read_reply(), "554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: Go away",
          "check_client_access REJECT at connect (delay_reject=no): 554 instead of the greeting")
    t.ok(c.closed(), "and the connection is closed")
    still_serves(p, "client rejected at connect")

with start({"smtpd_client_restrictions": "check_client_access inline:{ { 127.0.0.2 = REJECT Go away } }"}) as p:
    c = p.connect(source="127.0.0.2", read_greeting=False)
    t.like(c.read_reply(), r"^220 ", "check_client_access with delay_reject=yes: normal greeting")
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: Go away",
          "and the client is rejected at RCPT")
    c.close()
    still_serves(p, "client rejected at RCPT")

# Relay restrictions are evaluated before, and independently of, recipient restrictions.
with start({"mynetworks": "192.0.2.0/24",
            "smtpd_recipient_restrictions": "check_recipient_access inline:{friend@elsewhere.example=OK}"}) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<friend@elsewhere.example>"), "454 4.7.1 <friend@elsewhere.example>: Relay access denied",
          "OK in smtpd_recipient_restrictions does not bypass smtpd_relay_restrictions")
    c.close()
    still_serves(p, "relay before recipient lists")

with start({"smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit"}) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<anyone@elsewhere.example>"), "250 2.1.5 Ok", "permit_mynetworks lets 127.0.0.1 relay")
    c.close()
    still_serves(p, "permit_mynetworks")

with start({"smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_recipient_restrictions": "defer"}) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<anyone@elsewhere.example>"), "554 5.7.1 <anyone@elsewhere.example>: Relay access denied",
          "permit_sasl_authenticated never matches without SASL")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "450 4.3.2 <user@petrel.test>: Recipient address rejected: Try again later",
          "defer in smtpd_recipient_restrictions: Postfix's 450 4.3.2 Try again later ($defer_code)")
    c.close()

# reject_unauth_pipelining in smtpd_data_restrictions (with the 3.9 guard off).
with start({"smtpd_forbid_unauth_pipelining": "no", "smtpd_data_restrictions": "reject_unauth_pipelining"}) as p:
    c = p.connect()
    c.cmd("HELO client.example.org")
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<user@petrel.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n")
    t.is_(c.read_reply(), "250 2.1.0 Ok", "unauth pipelining: MAIL")
    t.is_(c.read_reply(), "250 2.1.5 Ok", "unauth pipelining: RCPT")
    t.is_(c.read_reply(), "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining",
          "reject_unauth_pipelining: a HELO client pipelining DATA gets 503 5.5.0")
    t.ok(p.wait_log(r"NOQUEUE: reject: DATA from unknown\[127\.0\.0\.1\]: 503 5\.5\.0 ") is not None, "and it is logged")
    c.close()
    c = p.connect()
    c.ehlo()
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<user@petrel.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n")
    c.read_reply()
    c.read_reply()
    t.is_(c.read_reply(), "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining",
          "reject_unauth_pipelining: an ESMTP client sending content before 354 gets 503 5.5.0 too")
    c.close()
    c = p.connect()
    c.cmd("HELO client.example.org")
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok", "a HELO client that waits: MAIL")
    c.cmd("RCPT TO:<user@petrel.test>")
    t.like(c.cmd("DATA"), r"^354 ", "a HELO client that waits gets 354")
    c.send(b"Subject: patient\r\n\r\nx\r\n.\r\n")
    t.like(c.read_reply(), OK_RE, "and its message is queued")
    c.close()
    still_serves(p, "reject_unauth_pipelining")

t.done()
