"""ldap: tables over TLS, against a private slapd that refuses every operation without TLS
(security tls=1) and has a certificate from a CA made at test time: start_tls = yes on an
ldap:// server and an ldaps:// server, with tls_require_cert = yes and tls_ca_cert_file, at
RCPT (the connection made on a worker thread, the searches on the loop) and through petrelctl
map query (the blocking lookup); a server certificate from another CA is a lookup error
(451 4.3.0, never "User unknown") with tls_require_cert = yes, and accepted with Postfix's
default tls_require_cert = no; the same server without TLS refuses (so the lookups above did
use TLS); a tls_cert without tls_key is refused by petreld -n naming the line."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Petrel, Tap, free_port  # noqa: E402
from ldaplib import ALICE_LDIF, SUFFIX, Slapd, alias_table, check_config, rcpt_replies  # noqa: E402
from tablelib import bundled_module_dir  # noqa: E402
from tlscerts import TestCerts  # noqa: E402

t = Tap(timeout=300)
MODULES = bundled_module_dir("ldap")

certs = TestCerts()
CA, OTHER_CA, SRV, SRV_KEY = certs.ca, certs.other_ca, certs.server, certs.server_key


class TlsSlapd(Slapd):
    """The fixture's slapd, listening on ldap:// and ldaps://, demanding TLS."""

    def __init__(self):
        self.tls_port = free_port()
        super().__init__(ALICE_LDIF, extra_conf="TLSCACertificateFile %s\nTLSCertificateFile %s\n"
                                                "TLSCertificateKeyFile %s\nsecurity tls=1\n" % (CA, SRV, SRV_KEY))

    def start(self):
        self.launch("ldap://127.0.0.1:%d/ ldaps://127.0.0.1:%d/" % (self.port, self.tls_port))
        env = dict(os.environ, LDAPTLS_CACERT=CA)
        url = "ldaps://127.0.0.1:%d/" % self.tls_port
        self.wait_ready(lambda: subprocess.run(["ldapsearch", "-x", "-LLL", "-H", url, "-b", SUFFIX, "-s", "base",
                                                "(objectClass=*)"], capture_output=True, env=env, timeout=10), url)


slapd = TlsSlapd()
r = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", "ldap://127.0.0.1:%d/" % slapd.port, "-b", SUFFIX,
                    "(uid=alice)"], capture_output=True, text=True, timeout=10)
t.ok(r.returncode != 0 and "onfidentiality required" in r.stderr,
     "the server refuses a search without TLS (ldapsearch)", r.stdout + r.stderr)

FOUND, UNKNOWN, DEFER = ("250 2.1.5 Ok",
                         "550 5.1.1 <nobody@ldap.test>: Recipient address rejected: User unknown in virtual alias table",
                         "451 4.3.0 <alice@ldap.test>: Temporary lookup failure")


VERIFY = "tls_require_cert = yes\ntls_ca_cert_file = %s\n" % CA
cases = (
    ("start_tls = yes on an ldap:// server", "ldap://127.0.0.1:%d" % slapd.port, "start_tls = yes\n" + VERIFY),
    ("an ldaps:// server", "ldaps://127.0.0.1:%d/" % slapd.tls_port, VERIFY),
)
for what, server, extra in cases:
    with Petrel(t, start=False, workers=1) as p:
        cf = alias_table(p, "tls.cf", server, extra)
        t.is_(rcpt_replies(p, MODULES, cf, ["alice@ldap.test", "nobody@ldap.test"]), [FOUND, UNKNOWN],
              "%s, the certificate verified: found and not found at RCPT" % what)
        r = p.petrelctl("map", "query", "ldap:" + cf, "alice@ldap.test")
        t.is_((r.returncode, r.stdout.strip()), (0, "box@vmail.test"),
              "%s: petrelctl map query (the blocking lookup)" % what)
        if r.returncode:
            t.diag(r.stderr)

# A certificate the CA file does not vouch for: a lookup error, never "not found".
with Petrel(t, start=False, workers=1) as p:
    cf = alias_table(p, "wrong-ca.cf", "ldap://127.0.0.1:%d" % slapd.port,
               "start_tls = yes\ntls_require_cert = yes\ntls_ca_cert_file = %s\n" % OTHER_CA)
    t.is_(rcpt_replies(p, MODULES, cf, ["alice@ldap.test"]), [DEFER],
          "tls_require_cert = yes and a certificate from another CA: 451 4.3.0")
    t.ok(p.wait_log(r"ldap:%s: ldap://127\.0\.0\.1:%d: StartTLS: " % (cf, slapd.port)),
         "the failed StartTLS is logged", p.log()[-1500:])
    r = p.petrelctl("map", "query", "ldap:" + cf, "alice@ldap.test")
    t.ok(r.returncode == 2, "petrelctl map query: a lookup error too", "%d %s" % (r.returncode, r.stdout + r.stderr))

# Postfix's default tls_require_cert = no: encrypted, the certificate not checked.
with Petrel(t, start=False, workers=1) as p:
    cf = alias_table(p, "unverified.cf", "ldaps://127.0.0.1:%d/" % slapd.tls_port,
                     "tls_ca_cert_file = %s\n" % OTHER_CA)
    t.is_(rcpt_replies(p, MODULES, cf, ["alice@ldap.test"]), [FOUND],
          "tls_require_cert = no (Postfix's default): the certificate is not checked")

# Without TLS the same server refuses: the lookups above were over TLS.
with Petrel(t, start=False, workers=1) as p:
    cf = alias_table(p, "plain.cf", "ldap://127.0.0.1:%d" % slapd.port, "")
    t.is_(rcpt_replies(p, MODULES, cf, ["alice@ldap.test"]), [DEFER], "the same server without start_tls: 451 4.3.0")

# A client certificate needs its key.
with Petrel(t, start=False) as p:
    cf = alias_table(p, "half.cf", "ldaps://127.0.0.1:%d/" % slapd.tls_port, "tls_cert = %s\n" % SRV)
    r = check_config(p, MODULES, cf)
    want = "ldap:%s line 6: tls_cert without tls_key: a client certificate needs both" % cf
    t.ok(r.returncode != 0 and want in r.stdout + r.stderr, "petreld -n: " + want.split(": ", 1)[1],
         r.stdout + r.stderr)

slapd.stop()
t.done()
