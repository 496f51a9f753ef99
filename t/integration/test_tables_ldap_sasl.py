"""ldap: tables with bind = sasl (Cyrus SASL through libldap), against a private slapd
listening on an ldapi:// socket whose entries only an identity authenticated by SASL
EXTERNAL (the peer's uid and gid over the socket) may read: sasl_mechs = EXTERNAL finds the
entry at RCPT (the bind made on a worker thread) and through petrelctl map query (the
blocking lookup); the same table with bind = no is refused the entries (451 4.3.0, never
"User unknown" for an address the directory has), so the lookups above were bound by SASL;
a mechanism the server does not offer is a lookup error, logged with the SASL step."""
import os
import subprocess
import sys
import tempfile
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CLEANUP_DIRS, Petrel, Tap  # noqa: E402
from ldaplib import ALICE_LDIF, SUFFIX, Slapd, alias_table, rcpt_replies  # noqa: E402
from tablelib import bundled_module_dir  # noqa: E402

t = Tap(timeout=300)
MODULES = bundled_module_dir("ldap")

sockdir = tempfile.mkdtemp(prefix="petrel-ldapi-")
os.chmod(sockdir, 0o755)   # petreld's user reaches the socket
CLEANUP_DIRS.append(sockdir)
SOCKET = os.path.join(sockdir, "ldapi")
LDAPI = "ldapi://" + urllib.parse.quote(SOCKET, safe="")


class LdapiSlapd(Slapd):
    """The fixture's slapd on an ldapi:// socket; only SASL EXTERNAL identities read."""

    def __init__(self):
        super().__init__(ALICE_LDIF, extra_conf='access to dn.subtree="%s" by dn.regex="cn=peercred,cn=external,'
                                                'cn=auth$" read by * none\n' % SUFFIX)

    def start(self):
        self.launch(LDAPI)
        self.wait_ready(lambda: subprocess.run(["ldapsearch", "-Y", "EXTERNAL", "-Q", "-LLL", "-H", LDAPI, "-b", SUFFIX,
                                                "-s", "base", "(objectClass=*)"], capture_output=True, timeout=10),
                        SOCKET)
        os.chmod(SOCKET, 0o777)


slapd = LdapiSlapd()
FOUND, DEFER = "250 2.1.5 Ok", "451 4.3.0 <alice@ldap.test>: Temporary lookup failure"


def table(p, name, extra):
    return alias_table(p, name, LDAPI, extra)


def rcpt(p, cf):
    return rcpt_replies(p, MODULES, cf, ["alice@ldap.test"])[0]


with Petrel(t, start=False, workers=1) as p:
    cf = table(p, "sasl.cf", "bind = sasl\nsasl_mechs = EXTERNAL\n")
    t.is_(rcpt(p, cf), FOUND, "bind = sasl, sasl_mechs = EXTERNAL over ldapi://: the entry is found at RCPT")
    r = p.petrelctl("map", "query", "ldap:" + cf, "alice@ldap.test")
    t.is_((r.returncode, r.stdout.strip()), (0, "box@vmail.test"), "petrelctl map query (the blocking lookup)")

with Petrel(t, start=False, workers=1) as p:
    cf = table(p, "anonymous.cf", "bind = no\n")
    t.is_(rcpt(p, cf), DEFER, "the same table with bind = no may not read: 451 4.3.0")

with Petrel(t, start=False, workers=1) as p:
    cf = table(p, "nomech.cf", "bind = sasl\nsasl_mechs = NO-SUCH-MECH\n")
    t.is_(rcpt(p, cf), DEFER, "a SASL mechanism nobody offers: a lookup error, 451 4.3.0")
    t.ok(p.wait_log(r"ldap:%s: %s: SASL bind: " % (cf, LDAPI)), "the SASL bind failure is logged",
         p.log()[-1500:])

slapd.stop()
t.done()
