"""A private OpenLDAP server for the ldap: table tests: slapd with an mdb database in a
temporary directory, loaded with slapadd from the test's LDIF, listening on 127.0.0.1 on a
free port in the foreground, ready once its own pidfile is written and a search answers,
stopped by PID (stop() and start() again on the same port, for
the "server goes down mid-run" cases). The root DN "cn=admin,dc=example,dc=test" has the
password "secret"; anonymous users may read everything but passwords.

Also what the ldap: table tests share: the suffix's entry and a one-user directory, a virtual
alias table file, and a petreld that uses it (its RCPT replies, or petreld -n's verdict on it).
Certificates for TLS servers: tlscerts.py."""
import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time

import tablelib
from harness import CLEANUP_DIRS, PETRELD, free_port

SUFFIX = "dc=example,dc=test"
ROOT_DN = "cn=admin," + SUFFIX
ROOT_PW = "secret"

# The suffix's own entry, which every directory starts with.
ROOT_ENTRY = "dn: {s}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n".format(s=SUFFIX)
# A directory of one mail user under the suffix: alice@ldap.test, routed to box@vmail.test.
ALICE_LDIF = ROOT_ENTRY + """dn: uid=alice,{s}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: A
mailLocalAddress: alice@ldap.test
mailRoutingAddress: box@vmail.test
""".format(s=SUFFIX)


class Slapd:
    def __init__(self, ldif, port=None, extra_conf="", extra_urls=()):
        for tool in ("/usr/sbin/slapd", "/usr/sbin/slapadd"):
            if not os.path.exists(tool):
                raise RuntimeError("%s is not installed (Debian: slapd)" % tool)
        self.dir = tempfile.mkdtemp(prefix="petrel-slapd-")
        CLEANUP_DIRS.append(self.dir)
        self.port = port or free_port()
        self.proc = None
        self.extra_urls = list(extra_urls)   # more listeners (other loopback addresses)
        self.pidfile = os.path.join(self.dir, "slapd.pid")
        data = os.path.join(self.dir, "data")
        os.mkdir(data)
        self.conf = os.path.join(self.dir, "slapd.conf")
        with open(self.conf, "w") as f:
            f.write("include /etc/ldap/schema/core.schema\n"
                    "include /etc/ldap/schema/cosine.schema\n"
                    "include /etc/ldap/schema/inetorgperson.schema\n"
                    "include /etc/ldap/schema/nis.schema\n"
                    "include /etc/ldap/schema/misc.schema\n"
                    "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
                    "pidfile %s/slapd.pid\nallow bind_v2\n%s"
                    "access to attrs=userPassword by anonymous auth by * none\n"
                    "access to * by * read\n"
                    "database mdb\nmaxsize 10485760\nsuffix \"%s\"\nrootdn \"%s\"\nrootpw %s\n"
                    "directory %s\n"
                    % (self.dir, extra_conf, SUFFIX, ROOT_DN, ROOT_PW, data))
        ldif_path = os.path.join(self.dir, "data.ldif")
        with open(ldif_path, "w") as f:
            f.write(ldif)
        r = subprocess.run(["/usr/sbin/slapadd", "-f", self.conf, "-l", ldif_path], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("slapadd: %s" % r.stderr)
        self.start()
        atexit.register(self.stop)   # a test that dies half-way leaves no server behind

    def start(self):
        self.launch(" ".join(["ldap://127.0.0.1:%d/" % self.port] + self.extra_urls))
        self.wait_ready(lambda: self.search("(objectClass=*)", scope="base"), "port %d" % self.port)

    def launch(self, urls, env=None):
        """slapd in the foreground on urls (space-separated), its old pidfile gone first."""
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass
        self.proc = subprocess.Popen(["/usr/sbin/slapd", "-d", "0", "-f", self.conf, "-h", urls],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "slapd.log"), "a"), env=env)

    def wait_ready(self, probe, where):
        """Ready once slapd has written its own pidfile (after its listeners are bound and its
        database is open) and probe (a search, a CompletedProcess) succeeds. Either alone is not
        enough: a port that answers may be another process's (a free port taken meanwhile, this
        slapd then exiting), and the pidfile says nothing of the search path."""
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("slapd exited with %s: %s" % (self.proc.returncode, self.log()))
            if self.own_pidfile():
                try:
                    if probe().returncode == 0:
                        return
                except subprocess.TimeoutExpired:
                    pass
            time.sleep(0.1)
        raise RuntimeError("slapd did not answer on %s: %s" % (where, self.log()))

    def own_pidfile(self):
        try:
            with open(self.pidfile) as f:
                return f.read().strip() == str(self.proc.pid)
        except (OSError, ValueError):
            return False

    def search(self, filt, *attrs, scope="sub", base=SUFFIX):
        return subprocess.run(["ldapsearch", "-x", "-LLL", "-H", "ldap://127.0.0.1:%d/" % self.port, "-b", base,
                               "-s", scope, filt] + list(attrs), capture_output=True, text=True, timeout=10)

    def modify(self, ldif):
        return subprocess.run(["ldapmodify", "-x", "-H", "ldap://127.0.0.1:%d/" % self.port, "-D", ROOT_DN,
                               "-w", ROOT_PW], input=ldif, capture_output=True, text=True, timeout=10)

    def log(self):
        try:
            with open(os.path.join(self.dir, "slapd.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self):
        """The server stops answering (SIGSTOP) but keeps its port: a slow server."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)


def alias_table(p, name, server, extra=""):
    """The ldap: table file name in p's directory: virtual aliases, mailLocalAddress to
    mailRoutingAddress under SUFFIX on server (server_host), then the lines extra."""
    return p.write_file(name, "server_host = %s\nsearch_base = %s\nversion = 3\n"
                        "query_filter = (mailLocalAddress=%%s)\nresult_attribute = mailRoutingAddress\n%s"
                        % (server, SUFFIX, extra))


def alias_session(p, modules, cf, **main_cf):
    """tablelib.alias_session with virtual_alias_maps = ldap:cf for the domain ldap.test."""
    return tablelib.alias_session(p, modules, "ldap:" + cf, "ldap.test", **main_cf)


def rcpt_replies(p, modules, cf, addresses, **main_cf):
    """alias_session's replies to RCPT TO for each of addresses, in one transaction."""
    return tablelib.alias_rcpt_replies(p, modules, "ldap:" + cf, "ldap.test", addresses, **main_cf)


def check_config(p, modules, cf):
    """petreld -n on p with virtual_alias_maps = ldap:cf (the ldap module from the directory
    modules): the CompletedProcess."""
    conf = dict(p.settings)
    conf.update({"modules": "ldap", "module_directory": modules, "virtual_alias_maps": "ldap:" + cf})
    p.write_main_cf(conf)
    return subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
