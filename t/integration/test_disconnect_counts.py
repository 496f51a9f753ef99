"""smtpd's "disconnect from ..." line for a command cut short by the client
leaving (or timing out) before the command was answered: while its check
waits (the sleep restriction, asynchronous here), during its content, or
inside a TLS handshake. Postfix counts a command a success only when its
action returns; a read or write that fails inside it leaves by longjmp, so
the command counts in the total, not in the successes ("rcpt=0/1").

A command answered before the client left counts as answered (the EHLO and
MAIL before a cut RCPT), and a DATA whose 354 went out but whose content
never ended is not a success either. (VRFY and ETRN run no check in
Petrel: doc/smtpd.md.) The counters are Postfix's, in its order: ETRN and
XFORWARD have their own."""
import os
import re
import tempfile

from harness import CLEANUP_DIRS, Petrel, Smtp, Tap, free_port, make_cert, wait_for
from modlib import bundled_module_dir

t = Tap()
work = tempfile.mkdtemp(prefix="petrel-counts-")
os.chmod(work, 0o755)
CLEANUP_DIRS.append(work)
cert, key = make_cert(work)
os.chmod(key, 0o644)   # a throw-away test key, read by the unprivileged petreld

# One service per stage whose check waits 2 s (Postfix's sleep restriction),
# with smtpd_delay_reject = no so the HELO and MAIL checks run at their command.
stages = {
    "ehlo": "smtpd_helo_restrictions=sleep,2",
    "mail": "smtpd_sender_restrictions=sleep,2",
    "rcpt": "smtpd_recipient_restrictions=sleep,2,permit_mynetworks,reject",
    "data": "smtpd_data_restrictions=sleep,2",
    "eom": "smtpd_end_of_data_restrictions=sleep,2",
}
ports = {}
services = ""
stages["tls"] = "smtpd_tls_security_level=encrypt"
for name, opts in stages.items():
    ports[name] = free_port()
    services += "127.0.0.1:%d inet n - n - - smtpd\n  -o smtpd_delay_reject=no -o %s\n" % (ports[name], opts)

users = os.path.join(work, "sasl_passwd")
with open(users, "w") as fh:
    fh.write("alice {PLAIN}secret\n")
os.chmod(users, 0o644)
main_cf = {"smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key, "smtpd_tls_security_level": "may",
           "smtpd_timeout": "3s", "modules": "sasl", "module_directory": bundled_module_dir("sasl"),
           "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "table",
           "smtpd_sasl_path": "texthash:" + users}


SOURCES = ("127.0.0.%d" % i for i in range(10, 250))


def client(port):
    """A client from an address of its own (127.0.0.10, .11, ...): its
    disconnect line is told from the others' (wait_listening's probes come
    from 127.0.0.1, and are logged when the worker gets to them)."""
    source = next(SOURCES)
    c = Smtp(port, timeout=20, source=source)
    c.source = source
    return c


def leave(port, lines, answers):
    """Sends lines (reading each reply but the last's), then reads `answers`
    more replies, and closes the connection at once; returns the client's address."""
    c = client(port)
    for line in lines[:-1]:
        c.cmd(line)
    c.send(lines[-1] + "\r\n")
    for _ in range(answers):
        c.read_reply()
    c.close()
    return c.source


def counts_of(p, c):
    """The counters of the disconnect line of client c (an Smtp, or its address)."""
    addr = c if isinstance(c, str) else c.source
    found = []

    def look():
        m = re.search(r"disconnect from \S+\[%s\]( [^\n]*)\n" % re.escape(addr), p.log())
        if m:
            found.append(m.group(1).strip())
        return bool(m)
    wait_for(look, timeout=30)
    return found[0] if found else None


# the clients' names come from the hosts file: no DNS (a refused resolver may be slow to say so)
hosts = "".join("127.0.0.%d client%d.petrel.test\n" % (i, i) for i in range(10, 250))
with Petrel(t, main_cf=main_cf, extra_services=services, workers=1, hosts=hosts) as p:
    for port in ports.values():
        p.wait_listening(port)

    def cut(name, lines, answers, want, desc):
        t.is_(counts_of(p, leave(ports.get(name, p.port), lines, answers)), want, desc)

    cut("ehlo", ["EHLO client.example.org"], 0,
        "ehlo=0/1 commands=0/1",
        "EHLO whose smtpd_helo_restrictions wait: ehlo=0/1")
    cut("mail", ["EHLO client.example.org", "MAIL FROM:<a@example.org>"], 0,
        "ehlo=1 mail=0/1 commands=1/2",
        "MAIL whose smtpd_sender_restrictions wait: mail=0/1")
    cut("rcpt", ["EHLO client.example.org", "MAIL FROM:<a@example.org>", "RCPT TO:<user@petrel.test>"], 0,
        "ehlo=1 mail=1 rcpt=0/1 commands=2/3",
        "RCPT whose smtpd_recipient_restrictions wait: rcpt=0/1")
    cut("data", ["EHLO client.example.org", "MAIL FROM:<a@example.org>", "RCPT TO:<user@petrel.test>",
                 "DATA"], 0,
        "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4",
        "DATA whose smtpd_data_restrictions wait: data=0/1")
    cut("eom", ["EHLO client.example.org", "MAIL FROM:<a@example.org>", "RCPT TO:<user@petrel.test>",
                "DATA", "Subject: cut\r\n\r\nbody\r\n."], 0,
        "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4",
        "end of data whose smtpd_end_of_data_restrictions wait: data=0/1")
    # no check waits: the content is being read
    cut("plain", ["EHLO client.example.org", "MAIL FROM:<a@example.org>", "RCPT TO:<user@petrel.test>",
                  "DATA", "Subject: half a message"], 0,
        "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4",
        "a client that leaves inside the content after 354: data=0/1")
    # ... or the TLS handshake after 220
    cut("plain", ["EHLO client.example.org", "STARTTLS"], 1,
        "ehlo=1 starttls=0/1 commands=1/2",
        "a client that leaves after STARTTLS's 220, before its handshake: starttls=0/1")
    # ... or an AUTH exchange after 334
    cut("plain", ["EHLO client.example.org", "AUTH PLAIN"], 1,
        "ehlo=1 auth=0/1 commands=1/2",
        "a client that leaves inside AUTH after 334: auth=0/1")
    # a client that times out inside DATA content (smtpd_timeout 3s)
    c = client(p.port)
    for line in ["EHLO client.example.org", "MAIL FROM:<a@example.org>", "RCPT TO:<user@petrel.test>", "DATA"]:
        c.cmd(line)
    c.send("Subject: slow\r\n")
    t.is_(c.read_reply(), "421 4.4.2 mx.petrel.test Error: timeout exceeded", "a silent client times out in DATA")
    c.close()
    t.is_(counts_of(p, c), "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4",
          "... and its DATA counts 0/1, as in Postfix")
    c2 = client(p.port)   # the timed-out session's 421 has been written once this one is logged
    c2.cmd("QUIT")
    c2.close()
    counts_of(p, c2)
    t.is_(len(re.findall(r"disconnect from \S+\[%s\]" % re.escape(c.source), p.log())), 1,
          "one disconnect line for it, not a second one once its 421 is written")
    # Postfix's names and order: helo before ehlo, vrfy and etrn before quit
    c = client(p.port)
    for line in ["HELO client.example.org", "EHLO client.example.org", "VRFY user", "ETRN petrel.test",
                 "XFORWARD NAME=x", "QUIT"]:
        c.cmd(line)
    c.close()
    t.is_(counts_of(p, c), "helo=1 ehlo=1 xforward=0/1 vrfy=1 etrn=0/1 quit=1 commands=4/6",
          "the counters in Postfix's order, ETRN (458) and XFORWARD (550, not authorized) counted as themselves")
    # refused before its handler runs: in the total all the same (Postfix's total_count)
    c = client(ports["tls"])
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "530 5.7.0 Must issue a STARTTLS command first",
          "MAIL before STARTTLS where TLS is required")
    c.cmd("QUIT")
    c.close()
    t.is_(counts_of(p, c), "ehlo=1 mail=0/1 quit=1 commands=2/3", "counts as a failed MAIL")
    c = client(p.port)
    c.send("EHLO client.example.org\r\nNOOP\r\n")
    t.is_(c.read_reply(), "554 5.5.0 Error: SMTP protocol synchronization", "EHLO pipelined with NOOP")
    c.close()
    t.is_(counts_of(p, c), "ehlo=0/1 commands=0/1", "counts as a failed EHLO")
    # answered commands are unchanged
    c = client(ports["mail"])
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok", "a MAIL that waited and was answered")
    c.cmd("QUIT")
    c.close()
    t.is_(counts_of(p, c), "ehlo=1 mail=1 quit=1 commands=3", "counts as a success")
    log = p.log()
    t.ok("AddressSanitizer" not in log and "runtime error:" not in log and "panic" not in log,
         "no crash, no sanitizer report")
t.done()
