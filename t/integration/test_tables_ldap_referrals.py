"""ldap: tables with chase_referrals, against two private slapd servers on loopback: the first
holds some entries and referral objects (objectClass referral) pointing to the second, which
holds the others. At RCPT (the asynchronous lookup, the referred server's connection made on a
worker thread) and through petrelctl map query (the blocking lookup): an entry found through a
search continuation reference (a referral inside the searched subtree) and through a referral
for the search base itself, not found through a referral, a referral to a server that is down
(451 4.3.0, never "User unknown") or that stops answering (451 within the timeout), a referral
loop and a chain longer than the hop limit (451, logged), chase_referrals = no as Postfix (a
continuation reference is ignored: not found; a referral for the base is a search error: 451),
start_tls = yes applied to the referred server too (an entry the second server shows only over
TLS), and the pool of 16 referred connections per table (17 servers for one lookup: 451; one
after the other: found, idle connections closed to make room)."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PETRELD, Petrel, Tap, free_port, refused_port  # noqa: E402
from ldaplib import ROOT_ENTRY, SUFFIX, Slapd, check_config  # noqa: E402
from tablelib import bundled_module_dir, rcpt_replies  # noqa: E402
from tlscerts import TestCerts  # noqa: E402

t = Tap(timeout=300)
MODULES = bundled_module_dir("ldap")

certs = TestCerts()
CA, SRV, SRV_KEY = certs.ca, certs.server, certs.server_key
TLS_CONF = "TLSCACertificateFile %s\nTLSCertificateFile %s\nTLSCertificateKeyFile %s\n" % (CA, SRV, SRV_KEY)

P1, P2, DEAD = free_port(), free_port(), refused_port()   # DEAD refuses every connection


def entry(uid, box, parent):
    return ("dn: uid={u},{p}\nobjectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\nuid: {u}\n"
            "cn: {u}\nsn: {u}\nmailRoutingAddress: {b}\n\n".format(u=uid, b=box, p=parent))


def referral(ou, parent, url):
    return ("dn: ou={o},{p}\nobjectClass: referral\nobjectClass: extensibleObject\nou: {o}\nref: {u}\n\n"
            .format(o=ou, p=parent, u=url))


def ou(name, parent):
    return "dn: ou={o},{p}\nobjectClass: organizationalUnit\nou: {o}\n\n".format(o=name, p=parent)


PEOPLE = "ou=people," + SUFFIX


def at(port, dn):
    return "ldap://127.0.0.1:%d/%s" % (port, dn)


# The first server: a local entry, and referrals to the second (inside ou=people, and whole
# subtrees), to a server that is down, round in a loop, and along a chain of 6 hops.
LDIF1 = (ROOT_ENTRY + ou("people", SUFFIX) + entry("near", "near-box@vmail.test", PEOPLE)
         + referral("remote", PEOPLE, at(P2, "ou=remote," + PEOPLE))
         + referral("down", SUFFIX, at(DEAD, "ou=down," + SUFFIX))
         + referral("loop", SUFFIX, at(P2, "ou=loop," + SUFFIX))
         + "".join(referral("hop%d" % i, SUFFIX, at(P2, "ou=hop%d,%s" % (i + 1, SUFFIX))) for i in (0, 2, 4)))
LDIF2 = (ROOT_ENTRY + ou("people", SUFFIX) + ou("remote", PEOPLE)
         + entry("far", "far-box@vmail.test", "ou=remote," + PEOPLE)
         + entry("secure", "secure-box@vmail.test", "ou=remote," + PEOPLE)
         + referral("loop", SUFFIX, at(P1, "ou=loop," + SUFFIX))
         + "".join(referral("hop%d" % i, SUFFIX, at(P1, "ou=hop%d,%s" % (i + 1, SUFFIX))) for i in (1, 3, 5)))
# 17 more referrals, each to the second server at another loopback address (127.0.0.2 to
# 127.0.0.18): 17 referred servers for a pool of 16 connections per table.
WIDE = ["127.0.0.%d" % (2 + i) for i in range(17)]
LDIF1 += ou("wide", SUFFIX) + "".join(
    referral("w%d" % i, "ou=wide," + SUFFIX, "ldap://%s:%d/ou=remote,%s" % (a, P2, PEOPLE)) for i, a in enumerate(WIDE))
# uid=secure is shown only over TLS.
SECURE = ('access to dn.base="uid=secure,ou=remote,%s" by tls_ssf=64 read by * none\n' % PEOPLE)
slapd2 = Slapd(LDIF2, port=P2, extra_conf=TLS_CONF + SECURE, extra_urls=["ldap://%s:%d/" % (a, P2) for a in WIDE])
slapd1 = Slapd(LDIF1, port=P1, extra_conf=TLS_CONF)

r = slapd1.search("(uid=far)", "uid", base=PEOPLE)
t.ok("ldap://127.0.0.1:%d/ou=remote" % P2 in r.stdout and "uid: far" not in r.stdout,
     "the first server answers a search for far with a referral only (ldapsearch)", r.stdout + r.stderr)
r = slapd2.search("(uid=secure)", "uid", base=PEOPLE)
t.ok(r.returncode == 0 and "uid: secure" not in r.stdout, "the second server hides uid=secure without TLS",
     r.stdout + r.stderr)

FOUND = "250 2.1.5 Ok"


def unknown(a):
    return "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual alias table" % a


def defer(a):
    return "451 4.3.0 <%s>: Temporary lookup failure" % a


# One table per domain (domain = ...), so each address asks one of them.
TABLES = {
    "people.test": (PEOPLE, "chase_referrals = yes\n"),
    "base.test": ("ou=remote," + PEOPLE, "chase_referrals = yes\n"),
    "down.test": ("ou=down," + SUFFIX, "chase_referrals = yes\n"),
    "loop.test": ("ou=loop," + SUFFIX, "chase_referrals = yes\n"),
    "hops.test": ("ou=hop0," + SUFFIX, "chase_referrals = yes\n"),
    "nochase.test": (PEOPLE, ""),
    "nochasebase.test": ("ou=remote," + PEOPLE, "chase_referrals = no\n"),
    "tls.test": (PEOPLE, "chase_referrals = yes\nstart_tls = yes\ntls_require_cert = yes\n"
                 "tls_ca_cert_file = %s\n" % CA),
    # 17 continuation references in one search's results: 17 servers at once.
    "wide.test": ("ou=wide," + SUFFIX, "chase_referrals = yes\n"),
    # One referral per key (far@w3.one.test: ou=w3), to a server of its own.
    "one.test": ("ou=%3,ou=wide," + SUFFIX, "chase_referrals = yes\n"),
}
ONE = ["w%d.one.test" % i for i in range(len(WIDE))]

with Petrel(t, start=False, workers=1) as p:
    files = {}
    for domain, (base, extra) in TABLES.items():
        domains = " ".join(ONE) if domain == "one.test" else domain
        files[domain] = p.write_file(domain + ".cf", "server_host = ldap://127.0.0.1:%d\nsearch_base = %s\n"
                                     "version = 3\nbind = no\ntimeout = 5\ndomain = %s\nquery_filter = (uid=%%u)\n"
                                     "result_attribute = mailRoutingAddress\n%s" % (P1, base, domains, extra))
    conf = dict(p.settings)
    conf.update({"modules": "ldap", "module_directory": MODULES,
                 "virtual_alias_domains": " ".join(list(TABLES) + ONE),
                 "virtual_alias_maps": " ".join("ldap:" + files[d] for d in TABLES)})
    p.write_main_cf(conf)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "petreld -n accepts chase_referrals = yes", r.stdout + r.stderr)
    p.start()

    addresses = ["near@people.test", "far@people.test", "nobody@people.test", "far@base.test",
                 "nobody@base.test"]
    t.is_(rcpt_replies(p, addresses), [FOUND, FOUND, unknown("nobody@people.test"), FOUND, unknown("nobody@base.test")],
          "chase_referrals = yes: found on the first server, found through a continuation reference and "
          "through a referral for the base, not found through either")
    t.is_(rcpt_replies(p, ["far@people.test", "far@base.test"]), [FOUND, FOUND],
          "again, on the pooled connection to the referred server")

    t.is_(rcpt_replies(p, ["far@down.test"]), [defer("far@down.test")], "a referral to a server that is down: 451 4.3.0")
    t.ok(p.wait_log(r"ldap:%s: referred server ldap://127\.0\.0\.1:%d: connect" % (files["down.test"], DEAD)),
         "the unreachable referred server is logged", p.log()[-1500:])
    t.is_(rcpt_replies(p, ["far@loop.test"]), [defer("far@loop.test")], "a referral loop: 451 4.3.0")
    t.ok(p.wait_log(r"ldap:%s: referral loop for \"far@loop\.test\": ldap://127\.0\.0\.1:%d/ou=loop,"
                    % (files["loop.test"], P1)), "the loop is logged", p.log()[-1500:])
    t.is_(rcpt_replies(p, ["far@hops.test"]), [defer("far@hops.test")], "6 referrals in a row: 451 4.3.0")
    t.ok(p.wait_log(r"ldap:%s: referral hop limit \(5\) exceeded for \"far@hops\.test\""
                    % files["hops.test"]), "the hop limit is logged", p.log()[-1500:])

    t.is_(rcpt_replies(p, ["near@nochase.test", "far@nochase.test", "far@nochasebase.test"]),
          [FOUND, unknown("far@nochase.test"), defer("far@nochasebase.test")],
          "chase_referrals = no (Postfix's default): a continuation reference is ignored (not found), "
          "a referral for the base is a search error (451)")
    t.ok(p.wait_log(r"ldap:%s: search error 10 for \"far@nochasebase\.test\": Referral" % files["nochasebase.test"]),
         "the referral result is logged as Postfix's search error", p.log()[-1500:])

    t.is_(rcpt_replies(p, ["secure@people.test", "secure@tls.test", "far@tls.test"]),
          [unknown("secure@people.test"), FOUND, FOUND],
          "start_tls = yes applies to the referred server (it shows uid=secure over TLS only)")

    # The pool: 17 referred servers for one lookup is one too many (451, logged); one after
    # the other, each lookup finds its own, an idle connection closed to make room.
    t.is_(rcpt_replies(p, ["far@wide.test"]), [defer("far@wide.test")], "17 referred servers at once: 451 4.3.0")
    t.ok(p.wait_log(r"ldap:%s: referral to ldap://127\.0\.0\.\d+:%d: the 16 connections to referred servers are "
                    r"all busy" % (files["wide.test"], P2)), "the full pool is logged", p.log()[-1500:])
    t.is_(rcpt_replies(p, ["far@" + d for d in ONE]), [FOUND] * len(ONE),
          "17 referred servers one after the other: each found (the pool makes room)")

    # The referred server stops answering: the lookup's timeout (5 s) answers 451 and drops its
    # connection; once it answers again, a new one finds the entry.
    slapd2.pause()
    start = time.time()
    replies = rcpt_replies(p, ["far@base.test"])
    elapsed = time.time() - start
    slapd2.resume()
    t.is_(replies, [defer("far@base.test")], "a referred server that does not answer: 451 4.3.0")
    t.ok(4 <= elapsed < 15, "within the table's timeout (%.1f s)" % elapsed)
    t.ok(p.wait_log(r"ldap:%s: referred server ldap://127\.0\.0\.1:%d: no answer in time" % (files["base.test"], P2)),
         "the silent referred server is logged", p.log()[-1500:])
    t.is_(rcpt_replies(p, ["far@base.test"]), [FOUND], "it answers again: found on a new connection")

    for key, want in (("far@people.test", (0, "far-box@vmail.test")), ("near@people.test", (0, "near-box@vmail.test")),
                      ("far@base.test", (0, "far-box@vmail.test")), ("nobody@people.test", (1, "")),
                      ("far@down.test", (2, "")), ("far@loop.test", (2, "")), ("far@hops.test", (2, "")),
                      ("far@nochase.test", (1, "")), ("secure@tls.test", (0, "secure-box@vmail.test"))):
        domain = key.split("@")[1]
        r = p.petrelctl("map", "query", "ldap:" + files[domain], key)
        t.is_((r.returncode, r.stdout.strip()), want, "petrelctl map query %s (the blocking lookup)" % key)
        if r.returncode != want[0]:
            t.diag(r.stderr)

    t.ok(p.proc.poll() is None, "petreld is still running")

# A value that is neither yes nor no is refused, naming the line.
with Petrel(t, start=False) as p:
    cf = p.write_file("bad.cf", "server_host = ldap://127.0.0.1:%d\nsearch_base = %s\nchase_referrals = maybe\n"
                      % (P1, SUFFIX))
    r = check_config(p, MODULES, cf)
    want = "ldap:%s line 3: chase_referrals = maybe: yes or no" % cf
    t.ok(r.returncode != 0 and want in r.stdout + r.stderr, "petreld -n: " + want.split(": ", 1)[1],
         r.stdout + r.stderr)

slapd1.stop()
slapd2.stop()
t.done()
