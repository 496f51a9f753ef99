"""The spf module end to end: petreld with modules = spf and check_spf in
smtpd_recipient_restrictions, a private dnsmasq serving the test domains' SPF
records (dns_resolver), real SMTP sessions, and the delivered message's
Received-SPF header read from the Maildir it was delivered to."""
import os
import re
import subprocess

from harness import PETRELD, Dnsmasq, Petrel, Smtp, Tap, free_port, maildir_messages, refused_dns_port, wait_for
from modlib import bundled_module_dir

t = Tap()


MODS = bundled_module_dir("spf")


def txt(name, text):
    # passed to dnsmasq without a shell: quotes would be part of the text
    return "--txt-record=%s,%s" % (name, text)


# The client is 127.0.0.1; mynetworks does not hold it unless a test says so.
RECORDS = [
    "--local=/test/",
    txt("pass.test", "v=spf1 ip4:127.0.0.1 -all"),
    txt("fail.test", "v=spf1 ip4:192.0.2.1 -all"),
    txt("softfail.test", "v=spf1 ip4:192.0.2.1 ~all"),
    txt("neutral.test", "v=spf1 ?all"),
    "--txt-record=none.test,just some text",
    # include and redirect chains
    txt("inc.test", "v=spf1 include:inc2.test -all"),
    txt("inc2.test", "v=spf1 include:pass.test -all"),
    txt("redir.test", "v=spf1 redirect=redir2.test"),
    txt("redir2.test", "v=spf1 redirect=fail.test"),
    txt("redirpass.test", "v=spf1 redirect=pass.test"),
    # a and mx mechanisms through the same DNS
    txt("mx.test", "v=spf1 mx -all"),
    "--mx-host=mx.test,mail.mx.test,10",
    "--address=/mail.mx.test/127.0.0.1",
    txt("a.test", "v=spf1 a:host.a.test -all"),
    "--address=/host.a.test/127.0.0.1",
    # 11 DNS-querying terms: permerror (RFC 7208 4.6.4)
    txt("perm.test", "v=spf1 " + " ".join("include:l%d.test" % i for i in range(1, 12)) + " ip4:127.0.0.1 -all"),
    # 3 void lookups before the match: permerror (RFC 7208 4.6.4)
    txt("void.test", "v=spf1 a:v1.test a:v2.test a:v3.test ip4:127.0.0.1 -all"),
    # 2 void lookups are allowed
    txt("void2.test", "v=spf1 a:v1.test a:v2.test ip4:127.0.0.1 -all"),
    # a syntax error and two records: permerror
    txt("syntax.test", "v=spf1 ip4:300.1.1.1 -all"),
    txt("two.test", "v=spf1 -all"),
    txt("two.test", "v=spf1 +all"),
    # HELO identities
    txt("helo-pass.test", "v=spf1 ip4:127.0.0.1 -all"),
    txt("helo-fail.test", "v=spf1 -all"),
]
RECORDS += [txt("l%d.test" % i, "v=spf1 ip4:192.0.2.%d -all" % i) for i in range(1, 12)]

QMGR = "qmgr unix n - n 300 1 qmgr\n"


def instance(dns_server, services="", **extra):
    cfg = {"modules": "spf", "module_directory": MODS, "dns_resolver": dns_server,
           "mynetworks": "192.0.2.0/24",
           "smtpd_recipient_restrictions": "check_spf"}
    cfg.update(extra)
    p = Petrel(t, main_cf=cfg, extra_services=services + QMGR, start=False)
    p.virtual_mailboxes({"u@vmail.test": "u/"})
    p.start()
    return p


def rcpt(p, sender, helo="client.test", rcpt_to="u@vmail.test", port=None):
    """MAIL and RCPT; returns the RCPT reply (or the MAIL reply when it fails)."""
    c = Smtp(port) if port else p.connect()
    c.ehlo(helo)
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if c.code == 250:
        r = c.cmd("RCPT TO:<%s>" % rcpt_to)
    c.cmd("QUIT")
    c.close()
    return r


def deliver(p, sender, subject, helo="client.test", rcpts=("u@vmail.test",)):
    """A whole transaction; returns (final reply, the delivered message or None)."""
    c = p.connect()
    c.ehlo(helo)
    c.cmd("MAIL FROM:<%s>" % sender)
    for r in rcpts:
        last = c.cmd("RCPT TO:<%s>" % r)
        if c.code != 250:
            c.close()
            return last, None
    c.cmd("DATA")
    c.send(("Subject: %s\r\nFrom: <x@example.org>\r\n\r\nbody\r\n.\r\n" % subject).encode())
    reply = c.read_reply()
    c.cmd("QUIT")
    c.close()
    if not reply.startswith("250"):
        return reply, None
    box = os.path.join(p.boxes, "u")
    # the delivery through the queue manager: many seconds for the sanitizer
    # build on a loaded machine (the wait ends as soon as it is there)
    msg = wait_for(lambda: next((m for m in maildir_messages(box) if ("Subject: %s\r\n" % subject).encode() in m
                                 or ("Subject: %s\n" % subject).encode() in m), None), timeout=60)
    return reply, msg


def spf_header(msg):
    """The Received-SPF header of a delivered message, unfolded, or None."""
    if msg is None:
        return None
    head = msg.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    m = re.search(r"^Received-SPF:(.*(?:\r?\n[ \t].*)*)", head, re.M)
    return re.sub(r"\r?\n[ \t]+", " ", m.group(1)).strip() if m else None


with Dnsmasq(RECORDS) as dns:
    with instance(dns.server) as p:
        # --- results and their actions ------------------------------------------------
        t.is_(rcpt(p, "a@fail.test"),
              "550 5.7.23 SPF fail: domain of a@fail.test does not designate 127.0.0.1 as permitted sender",
              "fail: 550 5.7.23 (RFC 7372) with the reason")
        reply, msg = deliver(p, "a@pass.test", "pass")
        t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "pass: accepted")
        t.is_(spf_header(msg),
              "pass (mx.petrel.test: domain of a@pass.test designates 127.0.0.1 as permitted sender) "
              "client-ip=127.0.0.1; envelope-from=\"a@pass.test\"; helo=client.test; receiver=mx.petrel.test; "
              "identity=mailfrom;",
              "pass: Received-SPF in the delivered message (RFC 7208 9.1)")
        t.ok(msg is not None and msg.index(b"Received-SPF:") < msg.index(b"Subject:"),
             "the header is at the top of the message")
        reply, msg = deliver(p, "a@softfail.test", "softfail")
        t.like(spf_header(msg), r"^softfail \(mx\.petrel\.test: domain of transitioning a@softfail\.test does not "
                                r"designate 127\.0\.0\.1 as permitted sender\) client-ip=127\.0\.0\.1;",
               "softfail: accepted with the header")
        reply, msg = deliver(p, "a@neutral.test", "neutral")
        t.like(spf_header(msg), r"^neutral \(mx\.petrel\.test: 127\.0\.0\.1 is neither permitted nor denied by "
                                r"domain of a@neutral\.test\)", "neutral: accepted with the header")
        reply, msg = deliver(p, "a@none.test", "none")
        t.like(spf_header(msg), r"^none \(mx\.petrel\.test: domain of a@none\.test does not designate permitted "
                                r"sender hosts\) ",
               "none (a TXT record that is not SPF): accepted with the header")
        reply, msg = deliver(p, "a@nxdomain.test", "nxdomain")
        t.like(spf_header(msg), r"^none ", "none (no such domain)")

        # --- include, redirect, a, mx -----------------------------------------------------
        reply, msg = deliver(p, "a@inc.test", "include")
        t.like(spf_header(msg), r"^pass \(mx\.petrel\.test: domain of a@inc\.test designates",
               "an include chain passes")
        t.is_(rcpt(p, "a@redir.test"),
              "550 5.7.23 SPF fail: domain of a@redir.test does not designate 127.0.0.1 as permitted sender",
              "a redirect chain ending in -all fails")
        reply, msg = deliver(p, "a@redirpass.test", "redirect")
        t.like(spf_header(msg), r"^pass ", "a redirect to a passing record passes")
        reply, msg = deliver(p, "a@mx.test", "mx")
        t.like(spf_header(msg), r"^pass ", "the mx mechanism resolves the MX host through dns_resolver")
        reply, msg = deliver(p, "a@a.test", "amech")
        t.like(spf_header(msg), r"^pass ", "the a:host mechanism too")

        # --- processing limits (RFC 7208 4.6.4) and bad records -------------------------
        reply, msg = deliver(p, "a@perm.test", "perm")
        t.like(spf_header(msg), r"^permerror \(mx\.petrel\.test: invalid SPF record of perm\.test: .*\) client-ip",
               "11 DNS-querying terms: permerror (spf_permerror_action = dunno: accepted, header says so)")
        reply, msg = deliver(p, "a@void.test", "void")
        t.like(spf_header(msg), r"^permerror \(mx\.petrel\.test: invalid SPF record of void\.test: more than 2 "
                                r"void DNS lookups\)",
               "3 void lookups: permerror, although the record would pass after them")
        reply, msg = deliver(p, "a@void2.test", "void2")
        t.like(spf_header(msg), r"^pass ", "2 void lookups are allowed")
        reply, msg = deliver(p, "a@syntax.test", "syntax")
        t.like(spf_header(msg), r"^permerror ", "a syntax error is a permerror")
        reply, msg = deliver(p, "a@two.test", "two")
        t.like(spf_header(msg), r"^permerror \(mx\.petrel\.test: invalid SPF record of two\.test: Multiple SPF "
                                r"records",
               "two SPF records are a permerror")

        # --- the HELO identity -------------------------------------------------------------
        t.is_(rcpt(p, "a@pass.test", helo="helo-fail.test"),
              "550 5.7.23 SPF fail (HELO): domain of postmaster@helo-fail.test does not designate 127.0.0.1 as "
              "permitted sender", "HELO is checked first and its fail rejects, whatever MAIL FROM says")
        reply, msg = deliver(p, "", "nullpass", helo="helo-pass.test")
        t.is_(spf_header(msg),
              "pass (mx.petrel.test: domain of postmaster@helo-pass.test designates 127.0.0.1 as permitted "
              "sender) client-ip=127.0.0.1; envelope-from=\"\"; helo=helo-pass.test; receiver=mx.petrel.test; "
              "identity=helo;",
              "the null sender: the HELO identity decides, and the header says identity=helo")
        t.is_(rcpt(p, "", helo="helo-fail.test"),
              "550 5.7.23 SPF fail (HELO): domain of postmaster@helo-fail.test does not designate 127.0.0.1 as "
              "permitted sender", "the null sender with a failing HELO is rejected")
        reply, msg = deliver(p, "a@pass.test", "helopass", helo="helo-pass.test")
        t.like(spf_header(msg), r"identity=mailfrom;$", "a passing HELO lets MAIL FROM decide")

        # --- one evaluation per transaction ---------------------------------------------------
        before = open(dns.log_path).read().count("query[TXT] fail.test")
        c = p.connect()
        c.ehlo()
        c.cmd("MAIL FROM:<a@fail.test>")
        replies = [c.cmd("RCPT TO:<u@vmail.test>") for _ in range(3)]
        c.close()
        t.ok(all(r.startswith("550 5.7.23 SPF fail") for r in replies), "every RCPT gets the answer")
        after = open(dns.log_path).read().count("query[TXT] fail.test")
        t.is_(after - before, 1, "the record was looked up once for the transaction")
        t.ok(p.wait_log(r"module spf: client=127\.0\.0\.1 helo=client\.test sender=<a@fail\.test>: "
                        r"mailfrom fail \(domain fail\.test, \d+ queries\)") is not None, "the result is logged")
        # the server keeps serving after all that
        t.is_(rcpt(p, "a@pass.test"), "250 2.1.5 Ok", "the server keeps serving")
    t.ok("query[TXT] pass.test" in open(dns.log_path).read(), "every query went to dns_resolver")
    t.ok("query[SPF]" not in open(dns.log_path).read(), "the obsolete SPF RR type is never asked for")

    # --- actions are configurable ---------------------------------------------------------
    with instance(dns.server, spf_softfail_action="reject", spf_permerror_action="reject",
                  spf_fail_action="defer") as p:
        t.is_(rcpt(p, "a@softfail.test"),
              "550 5.7.23 SPF softfail: domain of transitioning a@softfail.test does not designate 127.0.0.1 as "
              "permitted sender", "spf_softfail_action = reject")
        t.is_(rcpt(p, "a@perm.test"),
              "550 5.7.24 SPF permerror: invalid SPF record of perm.test: Mechanisms used too many DNS lookups",
              "spf_permerror_action = reject: 550 5.7.24")
        t.is_(rcpt(p, "a@fail.test"),
              "451 4.7.23 SPF fail: domain of a@fail.test does not designate 127.0.0.1 as permitted sender",
              "spf_fail_action = defer: 451 4.7.23")
    with instance(dns.server, spf_fail_action="dunno", spf_helo_check="no") as p:
        reply, msg = deliver(p, "a@fail.test", "faildunno", helo="helo-fail.test")
        t.like(reply, r"^250 ", "spf_fail_action = dunno accepts a fail; spf_helo_check = no ignores the HELO")
        t.like(spf_header(msg), r"^fail \(mx\.petrel\.test: domain of a@fail\.test does not designate 127\.0\.0\.1 "
                                r"as permitted sender\) .*identity=mailfrom;$",
               "a fail that is not rejected is recorded")

    # --- skipping -----------------------------------------------------------------------------
    with instance(dns.server, mynetworks="127.0.0.0/8",
                  smtpd_recipient_restrictions="check_spf, reject_unauth_destination") as p:
        reply, msg = deliver(p, "a@fail.test", "skipped")
        t.like(reply, r"^250 ", "mynetworks clients are not checked (spf_skip_mynetworks = yes)")
        t.is_(spf_header(msg), None, "and get no Received-SPF header")
        t.ok(p.wait_log(r"spf: not checked: client in mynetworks") is not None, "the skip is logged")
    with instance(dns.server, mynetworks="127.0.0.0/8", spf_skip_mynetworks="no",
                  smtpd_recipient_restrictions="check_spf, reject_unauth_destination") as p:
        t.like(rcpt(p, "a@fail.test"), r"^550 5\.7\.23 ", "spf_skip_mynetworks = no checks them too")
    with instance(dns.server, spf_whitelist_clients="[::1], 192.0.2.0/24, [127.0.0.0]/30") as p:
        t.is_(rcpt(p, "a@fail.test"), "250 2.1.5 Ok", "a client in spf_whitelist_clients is not checked")
    with instance(dns.server, spf_whitelist_domains=".example.net fail.test") as p:
        t.is_(rcpt(p, "a@fail.test"), "250 2.1.5 Ok", "a sender domain in spf_whitelist_domains is not checked")
        t.like(rcpt(p, "a@redir.test"), r"^550 5\.7\.23 ", "others are")

    # --- per master.cf service: every spf_* parameter (.per_service), and mynetworks ---------
    svc = {name: free_port() for name in ("dunno", "white", "mynet", "bad")}
    lines = "".join("127.0.0.1:%d inet n - n - - smtpd %s\n" % (svc[name], opts) for name, opts in (
        ("dunno", "-o spf_fail_action=dunno"), ("white", "-o spf_whitelist_clients=127.0.0.0/8"),
        ("mynet", "-o mynetworks=127.0.0.0/8")))
    with instance(dns.server, services=lines) as p:
        t.like(rcpt(p, "a@fail.test"), r"^550 5\.7\.23 ", "main.cf's service: fail is rejected")
        t.is_(rcpt(p, "a@fail.test", port=svc["dunno"]), "250 2.1.5 Ok",
              "-o spf_fail_action=dunno: that service lets it through")
        t.is_(rcpt(p, "a@fail.test", port=svc["white"]), "250 2.1.5 Ok",
              "-o spf_whitelist_clients: that service does not check the client")
        t.is_(rcpt(p, "a@fail.test", port=svc["mynet"]), "250 2.1.5 Ok",
              "-o mynetworks: the module skips that service's mynetworks (spf_skip_mynetworks)")
        t.ok(p.wait_log(r"spf: not checked: client in mynetworks") is not None, "  and says why")
    for opt, want, what in [
            ("spf_fail_action=bounce", "spf_fail_action = bounce: expected reject, defer, hold or dunno",
             "a bad -o spf_fail_action"),
            ("spf_whitelist_clients=10.1.2.3/8", 'spf_whitelist_clients: non-null host address bits in '
             '"10.1.2.3/8", perhaps you should use "10.0.0.0/8" instead', "-o spf_whitelist_clients with host bits")]:
        p = Petrel(t, main_cf={"modules": "spf", "module_directory": MODS, "dns_resolver": dns.server,
                               "smtpd_recipient_restrictions": "check_spf"}, start=False,
                   extra_services="127.0.0.1:%d inet n - n - - smtpd -o %s\n" % (svc["bad"], opt))
        with p:
            r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
            t.ok(r.returncode != 0 and "master.cf service 127.0.0.1:%d: %s" % (svc["bad"], want) in r.stderr,
                 "petreld -n refuses %s, naming the service" % what, r.stderr)

    # --- configuration errors are caught by petreld -n ---------------------------------------
    for param, value, want in [
            ("spf_fail_action", "bounce", r"spf_fail_action = bounce: expected reject, defer, hold or dunno"),
            ("spf_whitelist_clients", "hash:/etc/x", r"spf_whitelist_clients: \"hash:/etc/x\" is a lookup table: "
                                                     r"this list takes addresses and networks"),
            ("spf_whitelist_clients", "300.1.2.3", r"spf_whitelist_clients: \"300\.1\.2\.3\" is not an address or "
                                                   r"network"),
            # Postfix's words (cidr_match_parse), the item without its brackets
            ("spf_whitelist_clients", "192.0.2.0/24 [2001:db8::1]/64",
             r"main\.cf:\d+: smtpd_recipient_restrictions: restriction check_spf \(module spf\): spf_whitelist_clients: "
             r"non-null host address bits in \"2001:db8::1/64\", perhaps you should use \"2001:db8::/64\" instead$"),
            ("spf_whitelist_domains", "hash:/etc/x", r"spf_whitelist_domains: \"hash:/etc/x\" is a lookup table: "
                                                     r"this list takes domains")]:
        p = Petrel(t, main_cf={"modules": "spf", "module_directory": MODS, "dns_resolver": dns.server,
                               "smtpd_recipient_restrictions": "check_spf", param: value}, start=False)
        with p:
            r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
            t.ok(r.returncode != 0 and re.search(want, r.stderr, re.M), "petreld -n refuses %s = %s" % (param, value),
                 r.stderr)

# --- temperror: the DNS server is down (a port that refuses, which no other test's dnsmasq can take) ---
closed = "127.0.0.1:%d" % refused_dns_port()
with instance(closed, spf_lookup_timeout="5s") as p:
    t.like(rcpt(p, "a@pass.test"), r"^451 4\.7\.24 SPF temperror: temporary error checking pass\.test: ",
           "DNS down: 451 4.7.24 (spf_temperror_action = defer)")
    t.is_(rcpt(p, "a@pass.test"), rcpt(p, "a@pass.test"), "and again, the server keeps serving")
with instance(closed, spf_temperror_action="dunno", spf_lookup_timeout="5s") as p:
    reply, msg = deliver(p, "a@pass.test", "temperror")
    t.like(spf_header(msg), r"^temperror \(mx\.petrel\.test: temporary error checking pass\.test: ",
           "spf_temperror_action = dunno: accepted, the header says temperror")
t.done()
