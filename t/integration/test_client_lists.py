"""The client lists Postfix reads as name and address lists (namadr_list):
mynetworks, debug_peer_list, smtpd_client_event_limit_exceptions. Each
takes networks, the client's verified host name (from dnsmasq's PTR and A
records here), a parent domain where parent_domain_matches_subdomains names
the list by default, type:table items keyed by the name or the address, and
!exclusions; a bad item is refused by petreld -n naming the parameter."""
import os
import re
import subprocess
from harness import PETRELD, Dnsmasq, Petrel, Tap, free_port
from modlib import smtp_from
from psclib import postscreen

t = Tap()
RELAY = "-o smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination"

with Dnsmasq(["--ptr-record=2.0.0.127.in-addr.arpa,relay.cl.test", "--host-record=relay.cl.test,127.0.0.2"]) as dns:
    with Petrel(t, start=False, main_cf={"dns_resolver": dns.server, "mydestination": "localhost",
                                          "mynetworks": "127.0.0.1/32"}) as p:
        names = p.write_file("cl_names", "relay.cl.test OK\n")
        mynetworks = {"host": "relay.cl.test", "parent": "cl.test", "table": "texthash:" + names,
                      "other": "other.cl.test,127.0.0.3", "negated": "!relay.cl.test,127.0.0.0/8",
                      "subdomain": ".relay.cl.test", "failing": "fail:down"}
        ports = {name: free_port() for name in list(mynetworks) + ["debug", "nodebug", "limit", "nolimit", "barelf",
                                                                    "nobarelf"]}
        with open(os.path.join(p.conf, "master.cf"), "a") as f:
            for name, value in mynetworks.items():
                f.write("127.0.0.1:%d inet n - n - - smtpd -o mynetworks=%s %s\n" % (ports[name], value, RELAY))
            f.write("127.0.0.1:%d inet n - n - - smtpd -o debug_peer_list=cl.test\n" % ports["debug"])
            f.write("127.0.0.1:%d inet n - n - - smtpd -o debug_peer_list=other.cl.test\n" % ports["nodebug"])
            for name, value in (("limit", "texthash:" + names), ("nolimit", "other.cl.test")):
                f.write("127.0.0.1:%d inet n - n - - smtpd -o smtpd_client_connection_count_limit=1 "
                        "-o smtpd_client_event_limit_exceptions=%s\n" % (ports[name], value))
            for name, value in (("barelf", "cl.test"), ("nobarelf", "!relay.cl.test,127.0.0.0/8")):
                f.write("127.0.0.1:%d inet n - n - - smtpd -o smtpd_forbid_bare_newline=reject "
                        "-o smtpd_forbid_bare_newline_exclusions=%s\n" % (ports[name], value))
        p._chown()
        p.start()

        def relay_reply(name):
            p.wait_listening(ports[name])
            c = smtp_from(ports[name], src="127.0.0.2")
            c.ehlo("relay.cl.test")
            c.cmd("MAIL FROM:<sender@example.com>")
            r = c.cmd("RCPT TO:<user@remote.example>")
            c.close()
            return r

        for name, want in (("host", "a host name matches the verified client name"),
                           ("parent", "a parent domain matches (parent_domain_matches_subdomains' default)"),
                           ("table", "a texthash: table keyed by the verified name")):
            t.like(relay_reply(name), r"^250 2\.1\.5 Ok$",
                   "mynetworks = %s: %s: permit_mynetworks relays" % (mynetworks[name], want))
        for name, want in (("other", "names and addresses that are not the client's"),
                           ("negated", "!relay.cl.test before 127.0.0.0/8: the exclusion decides"),
                           ("subdomain", ".relay.cl.test: only names below it")):
            t.like(relay_reply(name), r"^554 5\.7\.1 <user@remote\.example>: Relay access denied$",
                   "mynetworks = %s: %s: not in mynetworks (554 5.7.1)" % (mynetworks[name], want))

        t.like(relay_reply("failing"), r"^451 4\.3\.0 <user@remote\.example>: Temporary lookup failure$",
               "mynetworks = fail:down: a table that fails makes permit_mynetworks answer 451 4.3.0 (Postfix's)")

        for name, listed in (("debug", True), ("nodebug", False)):
            p.wait_listening(ports[name])
            c = smtp_from(ports[name], src="127.0.0.2")
            c.ehlo("probe-%s.example" % name)
            c.cmd("QUIT")
            c.close()
            line = p.wait_log(r"< relay\.cl\.test\[127\.0\.0\.2\]: EHLO probe-%s\.example" % name,
                              timeout=30 if listed else 2)
            t.ok((line is not None) == listed, "debug_peer_list = %s: %s" % (
                "cl.test" if listed else "other.cl.test",
                "the session of relay.cl.test is logged verbosely" if listed else "another name: not logged"))

        for name, exempt in (("limit", True), ("nolimit", False)):
            p.wait_listening(ports[name])
            first = smtp_from(ports[name], src="127.0.0.2")
            second = smtp_from(ports[name], src="127.0.0.2")
            r = second.lines[-1] if second.lines else ""
            if exempt:
                t.like(r, r"^220 ", "smtpd_client_event_limit_exceptions = texthash: keyed by the name: a second "
                       "connection is not limited (220)")
            else:
                t.like(r, r"^421 4\.7\.0 \S+ Error: too many connections from 127\.0\.0\.2$",
                       "smtpd_client_event_limit_exceptions = other.cl.test: the limit applies (421 4.7.0)")
            first.close()
            second.close()

        for name, excluded in (("barelf", True), ("nobarelf", False)):
            p.wait_listening(ports[name])
            c = smtp_from(ports[name], src="127.0.0.2")
            c.ehlo("relay.cl.test")
            c.cmd("MAIL FROM:<sender@example.com>")
            c.cmd("RCPT TO:<user@localhost>")
            c.cmd("DATA")
            c.send(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
            r = c.read_reply()
            if excluded:
                t.like(r, r"^250 2\.0\.0 Ok: queued as ", "smtpd_forbid_bare_newline_exclusions = cl.test: the "
                       "verified name's parent domain is exempt from reject")
            else:
                t.like(r, r"^550 5\.5\.2 Error: bare <LF> received$", "smtpd_forbid_bare_newline_exclusions = "
                       "!relay.cl.test,127.0.0.0/8: the name's exclusion decides (550 5.5.2)")
            c.close()

# postscreen matches mynetworks by address only (Postfix's server_acl):
# petreld -n says that host names there do not pass postscreen.
with postscreen(t, start=False, main_cf={"mynetworks": "relay.cl.test, 127.0.0.1"}) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
    t.ok(r.returncode == 0 and re.search(r"mynetworks names hosts \(\"relay\.cl\.test\"\): postscreen's "
                                         r"permit_mynetworks matches the client's address only", r.stderr),
         "postscreen: host names in mynetworks load, with a warning that postscreen does not match them", r.stderr)

for value, want in (("relay.cl.test, 127.0.0.1", None),
                    ("relay.cl.test/24", r"mynetworks: \"relay\.cl\.test/24\" is neither a network, a host or "
                                         r"domain name, nor a type:table"),
                    ("300.1.2.3/8", r"mynetworks: ")):
    with Petrel(t, start=False, main_cf={"mynetworks": value}) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
        if want is None:
            t.ok(r.returncode == 0, "mynetworks = %s: petreld -n accepts a host name" % value, r.stderr)
        else:
            t.ok(r.returncode != 0 and re.search(want, r.stderr),
                 "mynetworks = %s is an error naming the parameter" % value, r.stderr)
t.done()
