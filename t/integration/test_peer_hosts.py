"""The client's name from the hosts file, as Postfix's getnameinfo() and
getaddrinfo() find it with glibc's "hosts: files dns": a name the hosts file
gives appears in the log, Received: and check_client_access without asking
DNS (the private dnsmasq's query log says so, and its PTR records for those
addresses say otherwise); a line with no name or an invalid name makes the
client unknown (getnameinfo() stops at the file); a name DNS gives that the
hosts file lists with other addresses is forged (getaddrinfo() stops at the
file); an address the file does not list is asked of DNS as before; an IPv6
client (::1); a file changed while petreld runs takes effect within a
second or so; an nsswitch.conf without files first: DNS only, and the start
says so; "hosts: files" without dns: the hosts file only, no DNS query. The instance's hosts file and nsswitch.conf are its own
(PETREL_HOSTS_FILE, PETREL_NSSWITCH_FILE: doc/testing.md)."""
import os
import re
import time

from harness import Dnsmasq, Petrel, Smtp, Tap, free_port, on_worker, wait_for
from modlib import smtpd_worker_pids

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"

RECORDS = [
    "--local=/petrel-test/", "--local=/0.0.127.in-addr.arpa/", "--local=/ip6.arpa/",
    # What DNS says of the addresses the hosts file lists: never asked.
    "--ptr-record=2.0.0.127.in-addr.arpa,dns-two.petrel-test", "--host-record=dns-two.petrel-test,127.0.0.2",
    "--ptr-record=7.0.0.127.in-addr.arpa,dns-seven.petrel-test", "--host-record=dns-seven.petrel-test,127.0.0.7",
    "--ptr-record=8.0.0.127.in-addr.arpa,dns-eight.petrel-test", "--host-record=dns-eight.petrel-test,127.0.0.8",
    # 127.0.0.5: a PTR from DNS whose name the hosts file lists elsewhere (forged)
    "--ptr-record=5.0.0.127.in-addr.arpa,elsewhere.petrel-test", "--host-record=elsewhere.petrel-test,127.0.0.5",
    # 127.0.0.9: not in the hosts file; DNS names and verifies it
    "--ptr-record=9.0.0.127.in-addr.arpa,dns-nine.petrel-test", "--host-record=dns-nine.petrel-test,127.0.0.9",
]

HOSTS = """# the test's hosts file
127.0.0.2 Named.Petrel-Test alias.petrel-test   # case kept, an alias
127.0.0.2 second-line.petrel-test
127.0.0.3\trejected.petrel-test
127.0.0.6 hosts-alias-only.petrel-test
192.0.2.5 elsewhere.petrel-test
127.0.0.7 bad..name.petrel-test
127.0.0.8
::1 six.petrel-test
"""


def rcpt(p, source, rcpt_to):
    c = p.connect(source=source)
    c.ehlo("client.example.org")
    r = c.cmd("MAIL FROM:<sender@example.org>")
    if c.code == 250:
        r = c.cmd("RCPT TO:<%s>" % rcpt_to)
    c.close()
    return r


def queries(dns, name):
    """How many queries the dnsmasq logged for name."""
    with open(dns.log_path) as f:
        return len(re.findall(r"query\[\w+\] %s from" % re.escape(name), f.read()))


def start(dns, nsswitch="hosts: files dns\n", v6_port=None):
    master_cf = None
    p = Petrel(t, start=False, hosts=HOSTS, nsswitch=nsswitch)
    if v6_port:
        master_cf = "127.0.0.1:%d inet n - n - - smtpd\n[::1]:%d inet n - n - - smtpd\n" % (p.port, v6_port)
        with open(os.path.join(p.conf, "master.cf"), "w") as f:
            f.write(master_cf)
    conf = dict(p.settings)
    conf.update({
        "dns_resolver": dns.server,
        "mynetworks": "127.0.0.1/32",
        "inet_protocols": "all",
        "smtpd_reject_unlisted_recipient": "no",
        "smtpd_restriction_classes": "u_client, u_reverse",
        "u_client": "reject_unknown_client_hostname",
        "u_reverse": "reject_unknown_reverse_client_hostname",
        "smtpd_recipient_restrictions": "check_recipient_access texthash:%s, check_client_access texthash:%s"
                                        % (p.write_file("select", "u-client@petrel.test u_client\n"
                                                                  "u-reverse@petrel.test u_reverse\n"),
                                           p.write_file("clients", "rejected.petrel-test REJECT Named by the hosts file\n"
                                                                   "dns-two.petrel-test REJECT Named by DNS\n")),
    })
    p.write_main_cf(conf)
    p._chown()
    p.start()
    return p


def received_of(p, reply):
    qid = re.search(r"queued as (\w+)", reply).group(1)
    return qid, p.petrelctl("queue", "show", qid).stdout


with Dnsmasq(RECORDS) as dns:
    v6_port = free_port()
    with start(dns, v6_port=v6_port) as p:
        # --- a name from the hosts file ------------------------------------------------------------
        c = p.connect(source="127.0.0.2")
        r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: hosts\r\n\r\nok\r\n")
        c.close()
        t.like(r, OK_RE, "a client the hosts file names sends a message")
        qid, shown = received_of(p, r)
        t.ok(p.wait_log(r"connect from Named\.Petrel-Test\[127\.0\.0\.2\]"),
             "the log names the client by the hosts file's first name for the address, its case kept")
        t.ok(p.wait_log(r"%s: client=Named\.Petrel-Test\[127\.0\.0\.2\]" % qid), "the client= line too")
        t.like(shown, r"Received: from client\.example\.org \(Named\.Petrel-Test \[127\.0\.0\.2\]\)",
               "Received: names the client from the hosts file")
        t.is_(queries(dns, "2.0.0.127.in-addr.arpa") + queries(dns, "Named.Petrel-Test")
              + queries(dns, "named.petrel-test"), 0, "no DNS query for a client the hosts file names and verifies")
        t.is_(rcpt(p, "127.0.0.2", "u-client@petrel.test"), "250 2.1.5 Ok",
              "reject_unknown_client_hostname: the hosts file's name is verified")
        t.is_(rcpt(p, "127.0.0.3", "user@petrel.test"),
              "554 5.7.1 <rejected.petrel-test[127.0.0.3]>: Client host rejected: Named by the hosts file",
              "check_client_access sees the name the hosts file gives")
        t.is_(rcpt(p, "127.0.0.2", "user@petrel.test"), "250 2.1.5 Ok",
              "the name DNS would give (dns-two, refused by the table) is not asked for")

        # --- no name, an invalid name: unknown, and DNS is not asked --------------------------------
        t.is_(rcpt(p, "127.0.0.7", "u-reverse@petrel.test"),
              "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.7]",
              "an invalid name in the hosts file: no reverse name (Postfix's sockaddr_to_hostname)")
        t.ok(p.wait_log(r"connect from unknown\[127\.0\.0\.7\]"), "and the client is unknown")
        t.is_(rcpt(p, "127.0.0.8", "u-client@petrel.test"),
              "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.8]",
              "an address listed with no name: unknown (getnameinfo() stops at the file)")
        t.is_(queries(dns, "7.0.0.127.in-addr.arpa") + queries(dns, "8.0.0.127.in-addr.arpa"), 0,
              "no DNS query for an address the hosts file lists, named or not")

        # --- a DNS name the hosts file lists with another address: forged ---------------------------
        t.is_(rcpt(p, "127.0.0.5", "u-client@petrel.test"),
              "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.5]",
              "a PTR name that the hosts file lists with another address is forged")
        t.ok(p.wait_log(r"warning: hostname elsewhere\.petrel-test does not resolve to address 127\.0\.0\.5\n"),
             "with Postfix's warning")
        t.is_(rcpt(p, "127.0.0.5", "u-reverse@petrel.test"), "250 2.1.5 Ok",
              "its reverse name (from DNS) is known")
        t.is_(queries(dns, "5.0.0.127.in-addr.arpa"), 2, "the PTR came from DNS (twice: two sessions)")
        t.is_(queries(dns, "elsewhere.petrel-test"), 0, "the forward lookup did not (DNS would have said 127.0.0.5)")

        # --- not in the hosts file: DNS as before ------------------------------------------------------
        t.is_(rcpt(p, "127.0.0.9", "u-client@petrel.test"), "250 2.1.5 Ok",
              "an address the hosts file does not list is named and verified by DNS")
        t.ok(p.wait_log(r"connect from dns-nine\.petrel-test\[127\.0\.0\.9\]"), "the log names it")
        t.ok(queries(dns, "9.0.0.127.in-addr.arpa") == 1 and queries(dns, "dns-nine.petrel-test") == 1,
             "one PTR and one A query")

        # --- IPv6 ---------------------------------------------------------------------------------------
        try:
            c = Smtp(v6_port, host="::1", source="::1")
            c.ehlo("client.example.org")
            c.close()
            t.ok(p.wait_log(r"connect from six\.petrel-test\[::1\]"), "an IPv6 client named by the hosts file")
        except OSError as e:
            t.skip("an IPv6 client named by the hosts file", "no IPv6 loopback: %s" % e)

        # --- the file changes while petreld runs ---------------------------------------------------------
        with open(p.hosts_path, "w") as f:
            f.write(HOSTS.replace("Named.Petrel-Test alias.petrel-test", "renamed.petrel-test"))
        # The workers look once a second and read the file on a thread: a
        # slow (sanitizer) build may need a little longer than the look.
        deadline = time.time() + 20
        renamed = None
        while renamed is None and time.time() < deadline:
            c = p.connect(source="127.0.0.2")
            c.ehlo("client.example.org")
            c.close()
            renamed = p.wait_log(r"connect from renamed\.petrel-test\[127\.0\.0\.2\]", timeout=0.5)
        t.ok(renamed, "a changed hosts file takes effect without a restart")
        os.unlink(p.hosts_path)
        # Each worker notices in its own time (its next look): ask each one
        # (the others stopped) until it names the client from DNS, so that
        # every worker has read the file's absence before the count below.
        by_dns = "554 5.7.1 <dns-two.petrel-test[127.0.0.2]>: Client host rejected: Named by DNS"
        workers = smtpd_worker_pids(p)
        answers = {}
        for pid in workers:
            def ask(pid=pid):
                answers[pid] = on_worker(workers, pid, lambda: rcpt(p, "127.0.0.2", "user@petrel.test"))
                return answers[pid] == by_dns
            wait_for(ask, timeout=20)
        t.ok(len(workers) >= 2 and all(a == by_dns for a in answers.values()),
             "the hosts file removed: DNS names the client (in every worker)", answers)
        t.ok(p.wait_log(r"warning: cannot open %s: No such file or directory: it answers no client name until it can be read"
                        % re.escape(p.hosts_path)), "and the log says the file cannot be read")
        t.is_(len(re.findall(r"warning: cannot open %s" % re.escape(p.hosts_path), p.log())), 1,
              "said once (by the first worker; every worker has read the file)")
        t.ok(p.wait_log(r"client names: hosts file %s, nsswitch %s \(from the environment" %
                        (re.escape(p.hosts_path), re.escape(p.nsswitch_path))),
             "the start says which files replace /etc/hosts and /etc/nsswitch.conf")

    # --- nsswitch without files first: DNS only, and said so -------------------------------------------
    with start(dns, nsswitch="# no files\nhosts: dns files\n") as p:
        t.is_(rcpt(p, "127.0.0.2", "user@petrel.test"),
              "554 5.7.1 <dns-two.petrel-test[127.0.0.2]>: Client host rejected: Named by DNS",
              "nsswitch with dns first: the hosts file is not asked")
        t.ok(p.wait_log(r"warning: %s: the hosts line starts with dns, not files: client names come from DNS only; "
                        r"%s is not consulted" % (re.escape(p.nsswitch_path), re.escape(p.hosts_path))),
             "the start says the hosts file is not consulted, and why")
        p.stop()   # every worker that started has decided (and said) what it would before it exits
        t.is_(len(re.findall(r"is not consulted", p.log())), 1, "said once (by the first worker)")

    # --- nsswitch "hosts: files" without dns: the hosts file alone, as glibc (and so Postfix) ------------
    with start(dns, nsswitch="hosts: files\n") as p:
        asked = queries(dns, "9.0.0.127.in-addr.arpa") + queries(dns, "2.0.0.127.in-addr.arpa")
        t.is_(rcpt(p, "127.0.0.2", "u-client@petrel.test"), "250 2.1.5 Ok",
              "files without dns: a client the hosts file names is named and verified")
        t.ok(p.wait_log(r"connect from Named\.Petrel-Test\[127\.0\.0\.2\]"), "by the hosts file's name")
        t.is_(rcpt(p, "127.0.0.9", "u-reverse@petrel.test"),
              "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.9]",
              "files without dns: a client the file does not list has no name (DNS would say dns-nine)")
        t.ok(p.wait_log(r"connect from unknown\[127\.0\.0\.9\]"), "and is unknown")
        t.is_(queries(dns, "9.0.0.127.in-addr.arpa") + queries(dns, "2.0.0.127.in-addr.arpa"), asked,
              "files without dns: DNS is never asked")
        t.ok(p.wait_log(r"%s: hosts: files without dns: client names come from %s only \(a client not in it "
                        r"is unknown\), as with Postfix" % (re.escape(p.nsswitch_path), re.escape(p.hosts_path))),
             "the start says so")

t.done()
