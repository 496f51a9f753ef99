"""mysql: tables over TLS (mysql_table(5)'s tls_* settings, option_file and option_group), against a
private MariaDB server on loopback with a certificate from a CA made at test time and
require_secure_transport = ON, so that a lookup without TLS fails: tls_CAfile with
tls_verify_cert = yes finds the row at RCPT (the non-blocking client) and through petrelctl map
query (the blocking one); the same with another CA (tls_verify_cert set or not), with a server
certificate for another name (tls_verify_cert = yes), and a table without tls_* settings, are
lookup errors (451 4.3.0, never "User unknown"); a user created REQUIRE X509 is found with
tls_cert_file/tls_key_file and is a lookup error without them; TLS settings from an option_file,
in its [client] group or in the group option_group names; charset set again after an option
file chose latin1; require_result_set (a statement without a result set); idle_interval; a missing tls_CAfile or option_file
is refused by petreld -n naming the file, the line and the parameter."""
import os
import re
import subprocess

from harness import PETRELD, Petrel, Tap, run_as_user, wait_for
from mysqllib import MariaDB
from tablelib import alias_rcpt_replies, alias_session, bundled_module_dir
from tlscerts import TestCerts

t = Tap(timeout=300)
MODULES = bundled_module_dir("mysql")
certs = TestCerts(owner=run_as_user()[1])

db = MariaDB(extra_args=["--ssl-ca=" + certs.ca, "--ssl-cert=" + certs.server, "--ssl-key=" + certs.server_key,
                         "--require-secure-transport=ON"])
db.sql("CREATE DATABASE mail; CREATE USER 'postfix'@'127.0.0.1' IDENTIFIED BY 'pfpw';"
       "GRANT SELECT ON mail.* TO 'postfix'@'127.0.0.1';"
       "CREATE USER 'x509user'@'127.0.0.1' IDENTIFIED BY 'xpw' REQUIRE X509;"
       "GRANT SELECT ON mail.* TO 'x509user'@'127.0.0.1';")
db.sql("CREATE TABLE alias(address VARCHAR(255) PRIMARY KEY, goto TEXT NOT NULL);"
       "INSERT INTO alias VALUES ('sales@my.test', 'box@vmail.test');", db="mail")

FOUND = "250 2.1.5 Ok"
DEFER = "451 4.3.0 <sales@my.test>: Temporary lookup failure"


def table(p, name, extra, user="postfix", password="pfpw"):
    return p.write_file(name, "hosts = inet:127.0.0.1:%d\nuser = %s\npassword = %s\ndbname = mail\n"
                        "query = SELECT goto FROM alias WHERE address = '%%s'\n%s" % (db.port, user, password, extra),
                        mode=0o640)


def rcpt(p, cf):
    try:
        return alias_rcpt_replies(p, MODULES, "mysql:" + cf, "my.test", ["sales@my.test"], mysql_timeout="5s")[0]
    finally:
        p.stop()


cases = [
    ("verify.cf", "tls_CAfile = %s\ntls_verify_cert = yes\n" % certs.ca, {}, FOUND,
     "tls_CAfile and tls_verify_cert = yes: found over TLS"),
    ("plain.cf", "", {}, DEFER, "no tls_* settings: the server refuses the connection, a lookup error (451)"),
    ("wrong-ca.cf", "tls_CAfile = %s\ntls_verify_cert = yes\n" % certs.other_ca, {}, DEFER,
     "a server certificate from another CA with tls_verify_cert = yes: a lookup error (451)"),
    ("wrong-ca-noverify.cf", "tls_CAfile = %s\n" % certs.other_ca, {}, DEFER,
     "another CA, tls_verify_cert unset: the library checks the chain all the same (a lookup error)"),
    ("x509.cf", "tls_CAfile = %s\ntls_verify_cert = yes\ntls_cert_file = %s\ntls_key_file = %s\n"
     % (certs.ca, certs.client, certs.client_key), {"user": "x509user", "password": "xpw"}, FOUND,
     "a user that must show a certificate (REQUIRE X509): found with tls_cert_file and tls_key_file"),
    ("x509-nocert.cf", "tls_CAfile = %s\ntls_verify_cert = yes\n" % certs.ca,
     {"user": "x509user", "password": "xpw"}, DEFER, "the same user without a client certificate: a lookup error"),
]
with Petrel(t, start=False, workers=1) as p:
    files = {}
    for name, extra, who, want, label in cases:
        files[name] = table(p, name, extra, **who)
        reply = rcpt(p, files[name])
        t.is_(reply, want, label)
        if want == DEFER:
            t.ok(p.wait_log(re.escape("mysql:%s: connect to inet:127.0.0.1:%d" % (files[name], db.port))) is not None,
                 "the failed connection is logged (%s)" % name, p.log()[-1500:])

    # The blocking lookup (petrelctl) with the same files.
    r = p.petrelctl("map", "query", "mysql:" + files["verify.cf"], "sales@my.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test"),
         "petrelctl map query over TLS (the blocking client)", r.stdout + r.stderr)
    r = p.petrelctl("map", "query", "mysql:" + files["x509.cf"], "sales@my.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test"),
         "petrelctl map query with a client certificate", r.stdout + r.stderr)
    for name in ("wrong-ca.cf", "plain.cf"):
        r = p.petrelctl("map", "query", "mysql:" + files[name], "sales@my.test")
        t.ok(r.returncode == 2, "petrelctl map query, %s: a lookup error (exit 2)" % name,
             "%d %s" % (r.returncode, r.stdout + r.stderr))

    # option_file: TLS from its [client] group (read by default, as Postfix
    # 3.2+), or from the group option_group names.
    client_cnf = p.write_file("client.cnf", "[client]\nssl-ca = %s\nssl-verify-server-cert\n" % certs.ca)
    group_cnf = p.write_file("group.cnf", "[client]\nssl-ca = %s\nssl-verify-server-cert\n[petrel]\nssl-ca = %s\n"
                             % (certs.other_ca, certs.ca))
    cf = table(p, "optfile.cf", "option_file = %s\n" % client_cnf)
    t.is_(rcpt(p, cf), FOUND, "option_file: TLS settings from its [client] group")
    cf = table(p, "optgroup.cf", "option_file = %s\noption_group = petrel\n" % group_cnf)
    t.is_(rcpt(p, cf), FOUND, "option_group: its group is read after [client] and wins")
    cf = table(p, "optnogroup.cf", "option_file = %s\n" % group_cnf)
    t.is_(rcpt(p, cf), DEFER, "without option_group, only [client] (another CA here): a lookup error")

    # charset: an option file that picks another character set is overridden
    # after connecting (the query sees utf8mb4 only then), in both clients.
    latin_cnf = p.write_file("latin1.cnf", "[client]\nssl-ca = %s\ndefault-character-set = latin1\n" % certs.ca)
    cf = p.write_file("charset.cf", "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n"
                      "option_file = %s\nquery = SELECT goto FROM alias WHERE address = '%%s' "
                      "AND @@character_set_client = 'utf8mb4'\n" % (db.port, latin_cnf), mode=0o640)
    t.is_(rcpt(p, cf), FOUND, "charset: utf8mb4 again after an option file chose latin1 (non-blocking client)")
    r = p.petrelctl("map", "query", "mysql:" + cf, "sales@my.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test"), "and in the blocking client",
         r.stdout + r.stderr)
    # require_result_set: a statement without a result set is an error by
    # default, "not found" with require_result_set = no.
    noresult = "tls_CAfile = %s\nquery = DO '%%s'\n" % certs.ca
    cf = p.write_file("noresult.cf", "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n%s"
                      % (db.port, noresult), mode=0o640)
    t.is_(rcpt(p, cf), DEFER, "a query without a result set: a lookup error (require_result_set = yes)")
    cf = p.write_file("noresult-ok.cf", "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n"
                      "%srequire_result_set = no\n" % (db.port, noresult), mode=0o640)
    t.is_(rcpt(p, cf), "550 5.1.1 <sales@my.test>: Recipient address rejected: User unknown in virtual alias table",
          "with require_result_set = no: not found")
    r = p.petrelctl("map", "query", "mysql:" + cf, "sales@my.test")
    t.ok(r.returncode == 1, "and not found in the blocking client (exit 1)", "%d %s" % (r.returncode,
                                                                                       r.stdout + r.stderr))

    # idle_interval (Postfix 3.9+): an idle connection is closed after it.
    def sessions():
        return int(db.sql("SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'postfix'").strip())

    for name, extra in (("idle-default.cf", ""), ("idle-1.cf", "idle_interval = 1\n")):
        cf = table(p, name, "tls_CAfile = %s\n%s" % (certs.ca, extra))
        c = alias_session(p, MODULES, "mysql:" + cf, "my.test", mysql_timeout="5s")
        t.is_(c.cmd("RCPT TO:<sales@my.test>"), FOUND, "found (%s)" % name)
        if extra:
            t.ok(wait_for(lambda: sessions() == 0, timeout=20), "idle_interval = 1: the idle connection is closed")
        else:
            t.is_(sessions(), 1, "the default idle_interval (60 s) keeps the connection for the next lookup")
        t.is_(c.cmd("RCPT TO:<sales@my.test>"), FOUND, "and the next lookup is found (%s)" % name)
        c.close()
        p.stop()

    # A certificate from the right CA for another name: tls_verify_cert = yes
    # checks the name too; without it, only the chain is checked.
    db.stop()
    db.extra_args = ["--ssl-ca=" + certs.ca, "--ssl-cert=" + certs.misnamed, "--ssl-key=" + certs.misnamed_key,
                     "--require-secure-transport=ON"]
    db.start()
    t.is_(rcpt(p, files["verify.cf"]), DEFER, "a server certificate for another name with tls_verify_cert = yes: "
          "a lookup error (451)")
    cf = table(p, "noverify.cf", "tls_CAfile = %s\n" % certs.ca)
    t.is_(rcpt(p, cf), FOUND, "the same without tls_verify_cert (Postfix's default): the name is not checked")

# petreld -n names the missing file, the line and the parameter.
with Petrel(t, start=False) as p:
    missing = os.path.join(p.dir, "no-such-ca.pem")
    for name, extra, want in (
            ("missing-ca.cf", "tls_CAfile = %s\n" % missing,
             "line 6: tls_CAfile: %s: No such file or directory" % missing),
            ("missing-key.cf", "tls_cert_file = %s\ntls_key_file = %s\n" % (certs.client, missing),
             "line 7: tls_key_file: %s: No such file or directory" % missing),
            ("capath-file.cf", "tls_CApath = %s\n" % certs.ca, "line 6: tls_CApath: %s: not a directory" % certs.ca),
            ("missing-optfile.cf", "option_file = %s\n" % missing,
             "line 6: option_file: %s: No such file or directory" % missing),
            ("bad-verify.cf", "tls_verify_cert = maybe\n", "line 6: tls_verify_cert: \"maybe\" is not yes or no")):
        cf = table(p, name, extra)
        conf = dict(p.settings)
        conf.update({"modules": "mysql", "module_directory": MODULES, "virtual_alias_maps": "mysql:" + cf})
        p.write_main_cf(conf)
        r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
        full = "mysql:%s %s" % (cf, want)
        t.ok(r.returncode != 0 and full in r.stdout + r.stderr, "petreld -n: " + want, r.stdout + r.stderr)

db.stop()
t.done()
