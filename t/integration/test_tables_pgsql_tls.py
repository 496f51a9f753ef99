"""pgsql: tables over TLS, against a private PostgreSQL with ssl = on, a certificate from a CA made
at test time and pg_hba.conf hostssl lines only (a connection without TLS is refused): hosts as
a postgresql:// connection URI (Postfix 3.3+) with sslmode=verify-full and sslrootcert finds the
row at RCPT (libpq's asynchronous start-up drives the handshake) and through petrelctl map query
(the blocking client), without dbname, user or password in the file; another CA, a server
certificate for another name (verify-full; verify-ca accepts it), and sslmode=disable, are lookup
errors (451 4.3.0, never "User unknown"); a role that must show a
certificate (clientcert=verify-full) is found with sslcert/sslkey and is a lookup error without;
the historical host form uses TLS too (libpq's default sslmode=prefer); a URI's password never
reaches the log; idle_interval closes an idle connection; a non-URI host without dbname is refused
by petreld -n."""
import os
import re
import subprocess

from harness import PETRELD, Petrel, Tap, run_as_user, wait_for
from pglib import PgCluster
from tablelib import alias_rcpt_replies, alias_session, bundled_module_dir
from tlscerts import TestCerts

t = Tap(timeout=300)
# The harness starts petreld and petrelctl as the test user with root's
# environment; libpq would look for ~/.postgresql/ in root's HOME, which that
# user may not read (an error, not "no file"). A petreld started as root
# drops HOME in its unprivileged processes: tested at the end, with HOME set.
ROOT_HOME = os.environ.pop("HOME", None)
MODULES = bundled_module_dir("pgsql")
certs = TestCerts(owner=run_as_user()[1], client_cn="x509user")

HBA = ("local all all trust\n"
       "hostssl all x509user 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n"
       "hostssl all all 127.0.0.1/32 scram-sha-256\n")
pg = PgCluster(extra_opts="-c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c ssl_ca_file=%s"
               % (certs.server, certs.server_key, certs.ca), hba=HBA)
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pfpw'; CREATE ROLE x509user LOGIN PASSWORD 'xpw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
pg.psql("CREATE TABLE alias(address text PRIMARY KEY, goto text NOT NULL);"
        "INSERT INTO alias VALUES ('sales@pg.test', 'box@vmail.test');"
        "GRANT SELECT ON alias TO postfix, x509user", db="mail")

FOUND = "250 2.1.5 Ok"
DEFER = "451 4.3.0 <sales@pg.test>: Temporary lookup failure"
QUERY = "query = SELECT goto FROM alias WHERE address = '%s'\n"


def uri(user, password, params):
    return "postgresql://%s:%s@127.0.0.1:%d/mail?%s" % (user, password, pg.port, params)


def rcpt(p, cf):
    try:
        return alias_rcpt_replies(p, MODULES, "pgsql:" + cf, "pg.test", ["sales@pg.test"], pgsql_timeout="5s")[0]
    finally:
        p.stop()


verify = "sslmode=verify-full&sslrootcert=" + certs.ca
cases = [
    ("verify.cf", "hosts = %s\n" % uri("postfix", "pf-secret", verify), FOUND,
     "a postgresql:// URI with sslmode=verify-full and sslrootcert: found over TLS"),
    ("wrong-ca.cf", "hosts = %s\n" % uri("postfix", "pf-secret", "sslmode=verify-full&sslrootcert=" + certs.other_ca),
     DEFER, "a server certificate from another CA with sslmode=verify-full: a lookup error (451)"),
    ("disable.cf", "hosts = %s\n" % uri("postfix", "pf-secret", "sslmode=disable"), DEFER,
     "sslmode=disable: the server (hostssl only) refuses, a lookup error (451)"),
    ("x509.cf", "hosts = %s\n" % uri("x509user", "xpw", verify + "&sslcert=%s&sslkey=%s"
                                     % (certs.client, certs.client_key)), FOUND,
     "a role that must show a certificate (clientcert=verify-full): found with sslcert and sslkey"),
    ("x509-nocert.cf", "hosts = %s\n" % uri("x509user", "xpw", verify), DEFER,
     "the same role without a client certificate: a lookup error"),
    ("legacy.cf", "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pf-secret\ndbname = mail\n" % pg.port, FOUND,
     "hosts = inet:host:port: libpq's default sslmode (prefer) uses TLS too"),
]
pg.psql("ALTER ROLE postfix PASSWORD 'pf-secret'")
with Petrel(t, start=False, workers=1) as p:
    files = {}
    for name, hosts, want, label in cases:
        files[name] = p.write_file(name, hosts + QUERY, mode=0o640)
        t.is_(rcpt(p, files[name]), want, label)
    t.ok(p.wait_log(re.escape("pgsql:%s: connect to postgresql://postfix:(password)@127.0.0.1:%d/mail:"
                              % (files["wrong-ca.cf"], pg.port))) is not None,
         "the failed connection is logged, the URI without its password and parameters", p.log()[-2000:])
    t.ok("pf-secret" not in p.log(), "the password in the URI never reaches the log")

    r = p.petrelctl("map", "query", "pgsql:" + files["verify.cf"], "sales@pg.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test"),
         "petrelctl map query over TLS (the blocking client)", r.stdout + r.stderr)
    r = p.petrelctl("map", "query", "pgsql:" + files["x509.cf"], "sales@pg.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test"),
         "petrelctl map query with a client certificate", r.stdout + r.stderr)
    for name in ("wrong-ca.cf", "disable.cf"):
        r = p.petrelctl("map", "query", "pgsql:" + files[name], "sales@pg.test")
        t.ok(r.returncode == 2, "petrelctl map query, %s: a lookup error (exit 2)" % name,
             "%d %s" % (r.returncode, r.stdout + r.stderr))


    # idle_interval (Postfix 3.9+): an idle connection is closed after it.
    def sessions():
        return int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'postfix' "
                           "AND application_name = 'petrel'").strip())

    for name, extra in (("idle-default.cf", ""), ("idle-1.cf", "idle_interval = 1\n")):
        cf = p.write_file(name, "hosts = %s\n%s%s" % (uri("postfix", "pf-secret", verify), extra, QUERY), mode=0o640)
        c = alias_session(p, MODULES, "pgsql:" + cf, "pg.test", pgsql_timeout="5s")
        t.is_(c.cmd("RCPT TO:<sales@pg.test>"), FOUND, "found (%s)" % name)
        if extra:
            t.ok(wait_for(lambda: sessions() == 0, timeout=20), "idle_interval = 1: the idle connection is closed")
        else:
            t.is_(sessions(), 1, "the default idle_interval (60 s) keeps the connection for the next lookup")
        t.is_(c.cmd("RCPT TO:<sales@pg.test>"), FOUND, "and the next lookup is found (%s)" % name)
        c.close()
        p.stop()

    # A certificate from the right CA for another name: verify-full checks the
    # name, verify-ca only the chain.
    pg.stop()
    pg.extra_opts = ("-c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c ssl_ca_file=%s"
                     % (certs.misnamed, certs.misnamed_key, certs.ca))
    pg.start()
    t.is_(rcpt(p, files["verify.cf"]), DEFER, "a server certificate for another name with sslmode=verify-full: "
          "a lookup error (451)")
    cf = p.write_file("verify-ca.cf", "hosts = %s\n%s" % (uri("postfix", "pf-secret", "sslmode=verify-ca&sslrootcert="
                                                            + certs.ca), QUERY), mode=0o640)
    t.is_(rcpt(p, cf), FOUND, "the same with sslmode=verify-ca: the name is not checked")
    pg.stop()
    pg.extra_opts = ("-c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c ssl_ca_file=%s"
                     % (certs.server, certs.server_key, certs.ca))
    pg.start()


class RootPetrel(Petrel):
    """petreld started as root itself (no setpriv): its processes run as mail_owner."""

    def command(self, *args, user=True):
        return list(args)


if os.geteuid() == 0:
    os.environ["HOME"] = ROOT_HOME or "/root"
    with RootPetrel(t, start=False, workers=1) as p:
        cf = p.write_file("verify.cf", "hosts = %s\n%s" % (uri("postfix", "pf-secret", verify), QUERY), mode=0o644)
        t.is_(rcpt(p, cf), FOUND, "petreld started as root with HOME=%s: its unprivileged worker verifies the "
              "server with libpq (no ~/.postgresql/ of root's in the way)" % os.environ["HOME"])
    os.environ.pop("HOME")

# A host that is not a URI needs dbname (Postfix 3.10's rule); URIs alone do not.
with Petrel(t, start=False) as p:
    mixed = p.write_file("mixed.cf", "hosts = %s 127.0.0.1:%d\n%s" % (uri("postfix", "x", verify), pg.port, QUERY))
    conf = dict(p.settings)
    conf.update({"modules": "pgsql", "module_directory": MODULES, "virtual_alias_maps": "pgsql:" + mixed})
    p.write_main_cf(conf)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    want = "pgsql:%s: dbname is not set (host \"127.0.0.1:%d\" is not a URI)" % (mixed, pg.port)
    t.ok(r.returncode != 0 and want in r.stdout + r.stderr, "petreld -n: a non-URI host without dbname is refused",
         r.stdout + r.stderr)
    only_uri = p.write_file("uri.cf", "hosts = %s\n%s" % (uri("postfix", "x", verify), QUERY))
    conf["virtual_alias_maps"] = "pgsql:" + only_uri
    p.write_main_cf(conf)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "petreld -n: URIs alone need no dbname", r.stdout + r.stderr)

pg.stop()
t.done()
