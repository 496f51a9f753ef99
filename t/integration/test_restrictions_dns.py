"""The client's name and the restrictions that ask the DNS, against a
private dnsmasq: the reverse lookup at connect (forward-confirmed, a forged
name, no PTR, a DNS that refuses and one that does not answer at all),
what Received: and the log show, smtpd_peername_lookup = no;
reject_unknown_client_hostname, reject_unknown_reverse_client_hostname,
reject_unknown_helo_hostname, reject_unknown_sender_domain,
reject_unknown_recipient_domain (with null MX, reply codes and
*_tempfail_action), check_reverse_client_hostname_access and the
check_*_{a,mx,ns}_access family. Clients connect from different loopback
addresses (127.0.0.2 to 127.0.0.6) whose PTR records differ. After each
refusal the server still serves."""
import os
import re
import socket
import threading
import time

from harness import Dnsmasq, Petrel, Tap, refused_dns_port

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"


def wire(name):
    return "".join("%02x" % len(label) + label.encode().hex() for label in name.split(".")) + "00"


RECORDS = [
    "--local=/petrel-test/", "--local=/0.0.127.in-addr.arpa/",
    # 127.0.0.2: a name that resolves back (verified)
    "--ptr-record=2.0.0.127.in-addr.arpa,good.petrel-test", "--host-record=good.petrel-test,127.0.0.2",
    # 127.0.0.3: a name whose address is another one (forged)
    "--ptr-record=3.0.0.127.in-addr.arpa,forged.petrel-test", "--host-record=forged.petrel-test,192.0.2.99",
    # 127.0.0.4: no PTR at all
    # 127.0.0.5: a PTR whose name does not exist
    "--ptr-record=5.0.0.127.in-addr.arpa,ghost.petrel-test",
    # mail domains
    "--mx-host=mxdom.petrel-test,mx1.petrel-test,10", "--host-record=mx1.petrel-test,127.0.0.10",
    "--dns-rr=nullmx.petrel-test,15,000000",
    "--host-record=aonly.petrel-test,127.0.0.20",
    "--dns-rr=nsdom.petrel-test,2,%s" % wire("ns1.petrel-test"), "--host-record=ns1.petrel-test,127.0.0.11",
    "--host-record=helo-a.petrel-test,127.0.0.12",
]


class Silent:
    """A DNS server that never answers: UDP packets go nowhere."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.server = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.queries = 0
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        while not self.stopping:
            try:
                self.sock.recv(4096)
                self.queries += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        self.stopping = True
        self.sock.close()


def still_serves(p, what, source="127.0.0.2"):
    c = p.connect(source=source)
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: after %s\r\n\r\nok\r\n" % what)
    t.like(r, OK_RE, "%s: a fresh session still gets its message queued" % what)
    c.close()


def rcpt(p, source, rcpt_to, helo="client.example.org", sender="sender@example.org"):
    c = p.connect(source=source)
    c.ehlo(helo)
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if c.code == 250:
        r = c.cmd("RCPT TO:<%s>" % rcpt_to)
    c.close()
    return r


def start(dns_server, extra=None, tables=None):
    p = Petrel(t, start=False)
    conf = dict(p.settings)
    conf.update({
        "dns_resolver": dns_server,
        "mynetworks": "127.0.0.1/32",
        "relay_domains": "mxdom.petrel-test, nullmx.petrel-test, aonly.petrel-test, nxdomain.petrel-test, "
                         "nsdom.petrel-test",
        "smtpd_reject_unlisted_recipient": "no",
        "smtpd_restriction_classes": "u_client, u_reverse, u_helo, u_sender, u_rcpt, c_sender_mx, c_sender_ns, "
                                     "c_client_a, c_helo_a, c_rcpt_mx, c_reverse, c_ok",
        "u_client": "reject_unknown_client_hostname",
        "u_reverse": "reject_unknown_reverse_client_hostname",
        "u_helo": "reject_unknown_helo_hostname",
        "u_sender": "reject_unknown_sender_domain",
        "u_rcpt": "reject_unknown_recipient_domain",
        "c_sender_mx": "check_sender_mx_access texthash:@servers@",
        "c_sender_ns": "check_sender_ns_access texthash:@servers@",
        "c_client_a": "check_client_a_access texthash:@servers@",
        "c_helo_a": "check_helo_a_access texthash:@servers@",
        "c_rcpt_mx": "check_recipient_mx_access texthash:@servers@",
        "c_reverse": "check_reverse_client_hostname_access texthash:@servers@",
        "c_ok": "check_sender_mx_access texthash:@okmap@",
        "smtpd_recipient_restrictions": "check_recipient_access texthash:@select@",
    })
    conf.update(extra or {})
    files = {
        "select": "u-client@petrel.test u_client\nu-reverse@petrel.test u_reverse\nu-helo@petrel.test u_helo\n"
                  "u-sender@petrel.test u_sender\nmxdom.petrel-test u_rcpt\nnullmx.petrel-test u_rcpt\n"
                  "aonly.petrel-test u_rcpt\nnxdomain.petrel-test u_rcpt\nc-sender-mx@petrel.test c_sender_mx\n"
                  "c-sender-ns@petrel.test c_sender_ns\nc-client-a@petrel.test c_client_a\n"
                  "c-helo-a@petrel.test c_helo_a\nnsdom.petrel-test c_rcpt_mx\nc-reverse@petrel.test c_reverse\n"
                  "c-ok@petrel.test c_ok\n",
        "servers": "mx1.petrel-test REJECT Mail exchanger mx1 is not welcome\n"
                   "127.0.0.11 REJECT Name server address 127.0.0.11 is not welcome\n"
                   "127.0.0.2 REJECT Client address 127.0.0.2 is not welcome\n"
                   "127.0.0.12 REJECT HELO address 127.0.0.12 is not welcome\n"
                   "forged.petrel-test REJECT Unverified name forged.petrel-test\n",
        "okmap": "mx1.petrel-test OK\n",
    }
    files.update(tables or {})
    for name, text in files.items():
        path = p.write_file(name, text)
        conf = {k: v.replace("@%s@" % name, path) for k, v in conf.items()}
    p.write_main_cf(conf)
    p._chown()
    p.start()
    return p


with Dnsmasq(RECORDS) as dns:
    with start(dns.server) as p:
        # --- the client's name ----------------------------------------------------------------
        c = p.connect(source="127.0.0.2")
        r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: named\r\n\r\nok\r\n")
        c.close()
        t.like(r, OK_RE, "a client with a verified name sends a message")
        qid = re.search(r"queued as (\w+)", r).group(1)
        t.ok(p.wait_log(r"connect from good\.petrel-test\[127\.0\.0\.2\]"), "the log names the verified client")
        t.ok(p.wait_log(r"%s: client=good\.petrel-test\[127\.0\.0\.2\]" % qid), "the client= line too")
        shown = p.petrelctl("queue", "show", qid).stdout
        t.like(shown, r"Received: from client\.example\.org \(good\.petrel-test \[127\.0\.0\.2\]\)",
               "Received: names the verified client")
        rcpt(p, "127.0.0.3", "user@petrel.test")
        t.ok(p.wait_log(r"warning: hostname forged\.petrel-test does not resolve to address 127\.0\.0\.3\n"),
             "a name that does not resolve back: Postfix's warning")
        t.ok(p.wait_log(r"connect from unknown\[127\.0\.0\.3\]"), "and the client is unknown")
        rcpt(p, "127.0.0.5", "user@petrel.test")
        t.ok(p.wait_log(r"warning: hostname ghost\.petrel-test does not resolve to address 127\.0\.0\.5: "),
             "a name that does not exist: the warning says why")

        # --- reject_unknown_client_hostname / _reverse_client_hostname -----------------------
        t.is_(rcpt(p, "127.0.0.2", "u-client@petrel.test"), "250 2.1.5 Ok",
              "reject_unknown_client_hostname: a verified client passes")
        t.is_(rcpt(p, "127.0.0.3", "u-client@petrel.test"),
              "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.3]",
              "reject_unknown_client_hostname: a forged name (unknown_client_reject_code 450)")
        t.is_(rcpt(p, "127.0.0.4", "u-client@petrel.test"),
              "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.4]",
              "reject_unknown_client_hostname: no PTR")
        t.is_(rcpt(p, "127.0.0.3", "u-reverse@petrel.test"), "250 2.1.5 Ok",
              "reject_unknown_reverse_client_hostname: a PTR is enough, verified or not")
        t.is_(rcpt(p, "127.0.0.4", "u-reverse@petrel.test"),
              "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.4]",
              "reject_unknown_reverse_client_hostname: no PTR")
        t.is_(rcpt(p, "127.0.0.3", "c-reverse@petrel.test"),
              "554 5.7.1 <forged.petrel-test>: Unverified Client host rejected: Unverified name forged.petrel-test",
              "check_reverse_client_hostname_access looks up the unverified name")
        still_serves(p, "client name refusals")

        # --- reject_unknown_helo_hostname ---------------------------------------------------------
        t.is_(rcpt(p, "127.0.0.2", "u-helo@petrel.test", helo="good.petrel-test"), "250 2.1.5 Ok",
              "reject_unknown_helo_hostname: a name with an address passes")
        t.is_(rcpt(p, "127.0.0.2", "u-helo@petrel.test", helo="mxdom.petrel-test"), "250 2.1.5 Ok",
              "reject_unknown_helo_hostname: a name with only an MX record passes")
        t.is_(rcpt(p, "127.0.0.2", "u-helo@petrel.test", helo="nohost.petrel-test"),
              "450 4.7.1 <nohost.petrel-test>: Helo command rejected: Host not found",
              "reject_unknown_helo_hostname: no such host (unknown_hostname_reject_code 450)")
        t.is_(rcpt(p, "127.0.0.2", "u-helo@petrel.test", helo="[192.0.2.1]"), "250 2.1.5 Ok",
              "reject_unknown_helo_hostname: an address literal is not looked up")
        t.is_(rcpt(p, "127.0.0.2", "u-helo@petrel.test", helo="[192.0.2.300]"),
              "501 5.5.2 <[192.0.2.300]>: Helo command rejected: invalid ip address",
              "reject_unknown_helo_hostname: a bad address literal")

        # --- reject_unknown_sender_domain / _recipient_domain --------------------------------------
        for sender, want, desc in [
            ("a@mxdom.petrel-test", "250 2.1.5 Ok", "a domain with MX"),
            ("a@aonly.petrel-test", "250 2.1.5 Ok", "a domain with only an address"),
            ("a@petrel.test", "250 2.1.5 Ok", "one of our domains (not looked up)"),
            ("", "250 2.1.5 Ok", "the null sender"),
            ("a@nxdomain.petrel-test", "450 4.1.8 <a@nxdomain.petrel-test>: Sender address rejected: Domain not found",
             "no such domain (unknown_address_reject_code 450)"),
            ("a@nullmx.petrel-test", "550 5.7.27 <a@nullmx.petrel-test>: Sender address rejected: Domain "
             "nullmx.petrel-test does not accept mail (nullMX)", "a null MX (RFC 7505)"),
        ]:
            t.is_(rcpt(p, "127.0.0.2", "u-sender@petrel.test", sender=sender), want, "reject_unknown_sender_domain: " + desc)
        for rcpt_to, want, desc in [
            ("b@mxdom.petrel-test", "250 2.1.5 Ok", "a domain with MX"),
            ("b@aonly.petrel-test", "250 2.1.5 Ok", "a domain with only an address"),
            ("b@nxdomain.petrel-test", "450 4.1.2 <b@nxdomain.petrel-test>: Recipient address rejected: Domain not found",
             "no such domain"),
            ("b@nullmx.petrel-test", "556 5.1.10 <b@nullmx.petrel-test>: Recipient address rejected: Domain "
             "nullmx.petrel-test does not accept mail (nullMX)", "a null MX"),
        ]:
            t.is_(rcpt(p, "127.0.0.2", rcpt_to), want, "reject_unknown_recipient_domain: " + desc)
        still_serves(p, "unknown domain refusals")

        # --- check_*_{a,mx,ns}_access ------------------------------------------------------------
        t.is_(rcpt(p, "127.0.0.2", "c-sender-mx@petrel.test", sender="a@mxdom.petrel-test"),
              "554 5.7.1 <a@mxdom.petrel-test>: Sender address rejected: Mail exchanger mx1 is not welcome",
              "check_sender_mx_access: the MX host's name")
        t.is_(rcpt(p, "127.0.0.2", "c-sender-mx@petrel.test", sender="a@aonly.petrel-test"), "250 2.1.5 Ok",
              "check_sender_mx_access: without MX the domain is its own server (not listed)")
        t.is_(rcpt(p, "127.0.0.2", "c-sender-ns@petrel.test", sender="a@nsdom.petrel-test"),
              "554 5.7.1 <a@nsdom.petrel-test>: Sender address rejected: Name server address 127.0.0.11 is not welcome",
              "check_sender_ns_access: the name server's address")
        t.is_(rcpt(p, "127.0.0.2", "c-sender-ns@petrel.test", sender="a@sub.nsdom.petrel-test"),
              "554 5.7.1 <a@sub.nsdom.petrel-test>: Sender address rejected: Name server address 127.0.0.11 is not "
              "welcome", "check_sender_ns_access: a name without NS uses its parent's")
        t.is_(rcpt(p, "127.0.0.2", "c-client-a@petrel.test"),
              "554 5.7.1 <good.petrel-test[127.0.0.2]>: Client host rejected: Client address 127.0.0.2 is not welcome",
              "check_client_a_access: the verified name's addresses")
        t.is_(rcpt(p, "127.0.0.3", "c-client-a@petrel.test"), "250 2.1.5 Ok",
              "check_client_a_access: an unknown client is not looked up")
        t.is_(rcpt(p, "127.0.0.2", "c-helo-a@petrel.test", helo="helo-a.petrel-test"),
              "554 5.7.1 <helo-a.petrel-test>: Helo command rejected: HELO address 127.0.0.12 is not welcome",
              "check_helo_a_access")
        t.is_(rcpt(p, "127.0.0.2", "c@nsdom.petrel-test"), "250 2.1.5 Ok",
              "check_recipient_mx_access: a domain without MX whose own name is not listed")
        t.is_(rcpt(p, "127.0.0.2", "c-ok@petrel.test", sender="a@mxdom.petrel-test"),
              "451 4.3.5 Server configuration error",
              "check_sender_mx_access answering OK: refused, as Postfix (names from the DNS may not permit)")
        t.ok(p.wait_log(r"warning: restriction check_sender_mx_access returns OK for a@mxdom\.petrel-test"),
             "and Postfix's warning says why")
        still_serves(p, "server access refusals")

    # Reply codes and the tempfail actions are parameters.
    with start(dns.server, {"unknown_client_reject_code": "550", "unknown_address_reject_code": "550",
                            "unknown_hostname_reject_code": "550"}) as p:
        t.is_(rcpt(p, "127.0.0.3", "u-client@petrel.test"),
              "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.3]",
              "unknown_client_reject_code = 550")
        t.is_(rcpt(p, "127.0.0.2", "u-sender@petrel.test", sender="a@nxdomain.petrel-test"),
              "550 5.1.8 <a@nxdomain.petrel-test>: Sender address rejected: Domain not found",
              "unknown_address_reject_code = 550")
        t.is_(rcpt(p, "127.0.0.2", "u-helo@petrel.test", helo="nohost.petrel-test"),
              "550 5.7.1 <nohost.petrel-test>: Helo command rejected: Host not found",
              "unknown_hostname_reject_code = 550")

    # smtpd_peername_lookup = no: no reverse lookup at all.
    with start(dns.server, {"smtpd_peername_lookup": "no"}) as p:
        with open(dns.log_path) as f:
            before = f.read().count("2.0.0.127.in-addr.arpa")
        rcpt(p, "127.0.0.2", "user@petrel.test")
        t.ok(p.wait_log(r"connect from unknown\[127\.0\.0\.2\]"), "smtpd_peername_lookup = no: the client is unknown")
        with open(dns.log_path) as f:
            t.is_(f.read().count("2.0.0.127.in-addr.arpa"), before, "smtpd_peername_lookup = no: no PTR query")

# --- a DNS that refuses (fast) and one that does not answer at all -------------------------------
refusing = "127.0.0.1:%d" % refused_dns_port()
with start(refusing, {"unknown_client_reject_code": "550", "unknown_address_reject_code": "550",
                      "unknown_hostname_reject_code": "550"},
           {"select": "u-client@petrel.test u_client\nu-reverse@petrel.test u_reverse\nu-helo@petrel.test u_helo\n"
                      "u-sender@petrel.test u_sender\nnxdomain.petrel-test u_rcpt\n"
                      "dip-then-reject@petrel.test u_sender, reject\nc-sender-mx@petrel.test c_sender_mx\n"}) as p:
    t.is_(rcpt(p, "127.0.0.2", "u-client@petrel.test"),
          "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.2]",
          "DNS down: reject_unknown_client_hostname answers 450, never unknown_client_reject_code (550)")
    t.is_(rcpt(p, "127.0.0.2", "u-reverse@petrel.test"),
          "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.2]",
          "DNS down: reject_unknown_reverse_client_hostname answers 450")
    t.is_(rcpt(p, "127.0.0.2", "u-helo@petrel.test", helo="good.petrel-test"),
          "450 4.7.1 <good.petrel-test>: Helo command rejected: Host not found",
          "DNS down: reject_unknown_helo_hostname defers (defer_if_permit: 450 at the end of RCPT)")
    t.is_(rcpt(p, "127.0.0.2", "u-sender@petrel.test", sender="a@mxdom.petrel-test"),
          "450 4.1.8 <a@mxdom.petrel-test>: Sender address rejected: Domain not found",
          "DNS down: reject_unknown_sender_domain defers")
    t.is_(rcpt(p, "127.0.0.2", "b@nxdomain.petrel-test"),
          "450 4.1.2 <b@nxdomain.petrel-test>: Recipient address rejected: Domain not found",
          "DNS down: reject_unknown_recipient_domain defers")
    t.is_(rcpt(p, "127.0.0.2", "dip-then-reject@petrel.test", sender="a@mxdom.petrel-test"),
          "554 5.7.1 <dip-then-reject@petrel.test>: Recipient address rejected: Access denied",
          "defer_if_permit: a later reject still rejects")
    t.is_(rcpt(p, "127.0.0.2", "c-sender-mx@petrel.test", sender="a@mxdom.petrel-test"), "250 2.1.5 Ok",
          "DNS down: check_sender_mx_access finds nothing (logged), as Postfix")
    t.ok(p.wait_log(r"warning: Unable to look up MX host for mxdom\.petrel-test: Host not found, try again"),
         "and logs that it could not look")
    still_serves(p, "a DNS that refuses")
with start(refusing, {"unknown_address_tempfail_action": "defer"},
           {"select": "u-sender@petrel.test u_sender\n"}) as p:
    t.is_(rcpt(p, "127.0.0.2", "u-sender@petrel.test", sender="a@mxdom.petrel-test"),
          "450 4.1.8 <a@mxdom.petrel-test>: Sender address rejected: Domain not found",
          "unknown_address_tempfail_action = defer: 450 at once")

silent = Silent()
try:
    with start(silent.server, {"unknown_client_reject_code": "550", "unknown_address_reject_code": "550",
                               "unknown_hostname_reject_code": "550"}) as p:
        # Every DNS restriction at once, one session each (each waits for the
        # resolver to give up: about 14 s with c-ares' retries).
        cases = [
            ("u-client@petrel.test", "client.example.org", "sender@example.org",
             "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.2]", "reject_unknown_client_hostname"),
            ("u-reverse@petrel.test", "client.example.org", "sender@example.org",
             "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.2]",
             "reject_unknown_reverse_client_hostname"),
            ("u-helo@petrel.test", "good.petrel-test", "sender@example.org",
             "450 4.7.1 <good.petrel-test>: Helo command rejected: Host not found", "reject_unknown_helo_hostname"),
            ("u-sender@petrel.test", "client.example.org", "a@mxdom.petrel-test",
             "450 4.1.8 <a@mxdom.petrel-test>: Sender address rejected: Domain not found",
             "reject_unknown_sender_domain"),
            ("b@nxdomain.petrel-test", "client.example.org", "sender@example.org",
             "450 4.1.2 <b@nxdomain.petrel-test>: Recipient address rejected: Domain not found",
             "reject_unknown_recipient_domain"),
            ("c-sender-mx@petrel.test", "client.example.org", "a@mxdom.petrel-test", "250 2.1.5 Ok",
             "check_sender_mx_access (finds nothing, logged)"),
        ]
        results = {}

        def session(case):
            rcpt_to, helo, sender, _, _ = case
            try:
                c = p.connect(source="127.0.0.2", timeout=90)
                results[rcpt_to] = [c.code]
                c.ehlo(helo)
                c.cmd("MAIL FROM:<%s>" % sender)
                results[rcpt_to].append(c.cmd("RCPT TO:<%s>" % rcpt_to))
                c.close()
            except OSError as e:
                results[rcpt_to] = [None, repr(e)]

        threads = [threading.Thread(target=session, args=(case,)) for case in cases]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        t.ok(all(results.get(c[0], [None])[0] == 220 for c in cases),
             "a DNS that does not answer: the greetings come when the reverse lookups give up", results)
        for rcpt_to, _, _, want, name in cases:
            t.is_(results.get(rcpt_to, [None, None])[-1], want,
                  "a DNS that does not answer: %s gives a temporary answer (the codes say 550)" % name)
        t.ok(silent.queries > 1, "the queries went to the silent server (and were retried)")
        t.ok(p.wait_log(r"connect from unknown\[127\.0\.0\.2\]"), "the client is unknown")
        t.ok(p.wait_log(r"warning: Unable to look up MX host for mxdom\.petrel-test: Host not found, try again"),
             "check_sender_mx_access: the failed lookup is logged")
        still_serves_silent = p.connect(source="127.0.0.2", timeout=90)
        t.is_(still_serves_silent.ehlo(), "250 CHUNKING", "the server still serves")
        still_serves_silent.close()
finally:
    silent.stop()

t.done()
