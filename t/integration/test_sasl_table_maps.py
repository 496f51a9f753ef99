"""smtpd_sasl_type = table with tables other than texthash:, opened through Module API 1.1
(petrel_table_open / petrel_table_lookup): a hash: (LMDB) and a cdb: table built with
`petrelctl map build`, a socketmap: table served by a real socketmap server on loopback
(asynchronous: a slow answer does not hold up another session of the same worker), a pgsql:
table on a private PostgreSQL cluster, and a type no loaded module provides (found at the
first EHLO: AUTH not offered, 454, logged). Good, bad and unknown logins over real SMTP AUTH
(PLAIN and LOGIN); a table that cannot answer (the server down, TEMP) is 454 4.7.0, never 535,
and AUTH works again when the socketmap server is back; a missing compiled file stops
petreld -n and the start, naming the command that builds it."""
import ctypes
import os
import smtplib
import subprocess
import threading
import time

from harness import PETRELD, Petrel, Tap, free_port, wait_for
from pglib import PgCluster
from sasllib import b64, files_containing
from socketmaplib import SocketmapServer, netstring
from tablelib import bundled_module_dir

t = Tap(timeout=300)
libcrypt = ctypes.CDLL("libcrypt.so.1")
libcrypt.crypt_gensalt.restype = ctypes.c_char_p
libcrypt.crypt.restype = ctypes.c_char_p


def crypt_hash(prefix, password):
    setting = libcrypt.crypt_gensalt(prefix.encode(), 0, None, 0)
    return libcrypt.crypt(password.encode(), setting).decode()


mods = bundled_module_dir("sasl", "cdb", "socketmap")

PASSWORDS = {"alice@example.org": "Alice-y3s!", "bob": "Bob-plain-7", "carol": "Carol-sha-5"}
ENTRIES = {"alice@example.org": crypt_hash("$y$", PASSWORDS["alice@example.org"]),
           "bob": "{PLAIN}" + PASSWORDS["bob"], "carol": crypt_hash("$6$", PASSWORDS["carol"])}
TEMPFAIL = "454 4.7.0 Temporary authentication failure: authentication table unavailable"

BASE = {"modules": "sasl cdb socketmap", "module_directory": mods, "smtpd_sasl_auth_enable": "yes",
        "mynetworks": "192.0.2.0/24", "smtpd_sasl_failure_delay": "0s", "smtpd_sasl_type": "table",
        "smtpd_sasl_failure_limit": "0",  # the many 535s here from one address would lock it out
        "socketmap_timeout": "10s"}


def login(port, mech, user, password):
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("client.example.org")
    s.user, s.password = user, password
    fn = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mech]
    try:
        code, _ = s.auth(mech, fn, initial_response_ok=(mech == "PLAIN"))
    except smtplib.SMTPAuthenticationError as e:
        code = e.smtp_code
    s.close()
    return code


def auth_plain(port, user, password):
    """The exact reply to AUTH PLAIN with an initial response."""
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("client.example.org")
    code, text = s.docmd("AUTH", "PLAIN " + b64("\0%s\0%s" % (user, password)))
    s.close()
    return "%d %s" % (code, text.decode())


def check_logins(port, tag):
    for user, pw in PASSWORDS.items():
        t.is_(login(port, "PLAIN", user, pw), 235, "%s: %s: PLAIN with the right password" % (tag, user))
        t.is_(login(port, "LOGIN", user, pw), 235, "%s: %s: LOGIN with the right password" % (tag, user))
        t.is_(login(port, "PLAIN", user, pw + "x"), 535, "%s: %s: a wrong password fails" % (tag, user))
    t.is_(login(port, "PLAIN", "BOB", PASSWORDS["bob"]), 235, "%s: the login is looked up without case" % tag)
    t.is_(login(port, "PLAIN", "nobody", "whatever"), 535, "%s: an unknown login fails the same way" % tag)


server = SocketmapServer({"passwd": {k.encode(): v.encode() for k, v in ENTRIES.items()}})
server.special[b"temp"] = (b"passwd", netstring(b"TEMP database is resting"))
server.maps["passwd"][b"slow"] = b"{PLAIN}Slow-pw"
release_slow = threading.Event()
server.slow[b"slow"] = release_slow   # answers when the test says
cdb_port, sm_port = free_port(), free_port()
try:
    with Petrel(t, main_cf=BASE, start=False, workers=1) as p:
        source = p.write_file("sasl_passwd", "# login value\n" + "".join("%s %s\n" % kv for kv in ENTRIES.items()),
                              0o600)
        p.write_main_cf(dict(p.settings, smtpd_sasl_path="hash:" + source))
        with open(os.path.join(p.conf, "master.cf"), "a") as f:
            f.write("127.0.0.1:%d inet n - n - - smtpd -o smtpd_sasl_path=cdb:%s\n" % (cdb_port, source))
            f.write("127.0.0.1:%d inet n - n - - smtpd -o smtpd_sasl_path=socketmap:inet:127.0.0.1:%d:passwd\n"
                    % (sm_port, server.port))
        n = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True)
        t.ok(n.returncode != 0, "petreld -n refuses a hash: password table that was never built")
        t.like(n.stderr, r"main\.cf:\d+: smtpd_sasl_path: hash:\S+/sasl_passwd: \S+/sasl_passwd\.lmdb: No such file "
                         r"or directory; build it with `petrelctl map build hash:\S+/sasl_passwd` "
                         r"\(smtpd_sasl_type = table\)", "naming the parameter, its line and the command that builds it")
        t.like(n.stderr, r"master\.cf, line 2: service 127\.0\.0\.1:%d: smtpd_sasl_path: cdb:\S+: \S+\.cdb: No such "
                         r"file or directory; build it with `petrelctl map build cdb:" % cdb_port,
               "and the cdb: one of a master.cf -o override")
        for spec in ("hash:" + source, "cdb:" + source):
            r = p.petrelctl("map", "build", spec)
            t.ok(r.returncode == 0, "petrelctl map build %s" % spec.split(":")[0], r.stderr)
        n = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True)
        t.ok(n.returncode == 0, "petreld -n accepts hash:, cdb: and socketmap: password tables", n.stderr)
        p.start()
        c = p.connect()
        c.ehlo()
        t.ok("250-AUTH PLAIN LOGIN" in c.lines, "hash: table: PLAIN and LOGIN offered", c.lines)
        c.close()
        check_logins(p.port, "hash: (LMDB)")
        check_logins(cdb_port, "cdb:")
        check_logins(sm_port, "socketmap:")
        t.ok(b"alice@example.org" in server.seen("passwd") and b"bob" in server.seen("passwd"),
             "the socketmap server was asked, with the folded login", server.seen("passwd"))

        # A slow socketmap answer holds up neither the loop nor another session (workers=1).
        slow = {}
        th = threading.Thread(target=lambda: slow.setdefault("code", login(sm_port, "PLAIN", "slow", "Slow-pw")))
        th.start()
        wait_for(lambda: b"slow" in server.seen("passwd"), timeout=20)
        t0 = time.time()
        t.is_(login(cdb_port, "PLAIN", "bob", PASSWORDS["bob"]), 235,
              "another session of the same worker authenticates while the socketmap answer is pending")
        t.diag("other login took %.3f s" % (time.time() - t0))
        t.ok(th.is_alive(), "(the slow lookup was still pending then)")
        release_slow.set()
        th.join(30)
        t.is_(slow.get("code"), 235, "and the slow lookup completes with its own answer")

        # The table cannot answer: 454, a back-end that is down, never 535.
        t.is_(auth_plain(sm_port, "temp", "whatever"), TEMPFAIL, "socketmap TEMP: 454 4.7.0")
        server.stop()
        t.is_(auth_plain(sm_port, "bob", PASSWORDS["bob"]), TEMPFAIL, "socketmap server down: 454 4.7.0")
        t.ok(p.wait_log(r"table: socketmap:inet:127\.0\.0\.1:%d:passwd cannot answer now" % server.port) is not None,
             "logged, naming the table")
        t.ok(p.wait_log(r"SASL PLAIN authentication failed: authentication table unavailable, sasl_username=bob")
             is not None, "in Postfix's failure line")
        t.is_(login(p.port, "PLAIN", "bob", PASSWORDS["bob"]), 235, "the other services' tables still answer")
        server.restart()
        t.is_(login(sm_port, "PLAIN", "bob", PASSWORDS["bob"]), 235, "the server is back: AUTH works again")
        t.is_(login(sm_port, "PLAIN", "bob", "wrong"), 535, "and a wrong password is 535 again")
        p.stop()
        t.is_(files_containing([p.queue, p.log_path], [pw.encode() for pw in PASSWORDS.values()]), [],
              "no password in the log or the queue")
finally:
    server.stop()

# pgsql: a private PostgreSQL cluster (libpq's asynchronous API in the pgsql module).
pg = PgCluster()
try:
    pg.psql("CREATE ROLE petrel_auth LOGIN PASSWORD 'auth-pw'")
    pg.psql("CREATE DATABASE mail OWNER petrel_auth")
    pg.psql("CREATE TABLE users(login text PRIMARY KEY, hash text NOT NULL);" +
            "".join("INSERT INTO users VALUES ('%s', '%s');" % kv for kv in ENTRIES.items()) +
            "GRANT SELECT ON users TO petrel_auth", db="mail")
    with Petrel(t, main_cf=dict(BASE, modules="sasl pgsql", module_directory=bundled_module_dir("sasl", "pgsql"),
                                pgsql_timeout="5s"), start=False, workers=1) as p:
        cf = p.write_file("sasl-pgsql.cf", "hosts = inet:127.0.0.1:%d\nuser = petrel_auth\npassword = auth-pw\n"
                          "dbname = mail\nquery = SELECT hash FROM users WHERE login = '%%s'\n" % pg.port, 0o640)
        p.write_main_cf(dict(p.settings, smtpd_sasl_path="pgsql:" + cf))
        n = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True)
        t.ok(n.returncode == 0, "petreld -n accepts a pgsql: password table", n.stderr)
        p.start()
        check_logins(p.port, "pgsql:")
        t.is_(login(p.port, "PLAIN", "x' OR '1'='1", "whatever"), 535, "pgsql: a login with SQL in it is only data")
        pg.stop()
        t.is_(auth_plain(p.port, "bob", PASSWORDS["bob"]), TEMPFAIL, "pgsql: the database down: 454 4.7.0")
        t.ok(p.wait_log(r"table: pgsql:\S+ cannot answer now") is not None, "logged, naming the table")
        p.stop()
        t.is_(files_containing([p.queue, p.log_path], [pw.encode() for pw in PASSWORDS.values()]), [],
              "no password in the log or the queue")
finally:
    pg.stop()

# A type no loaded module provides: the compiled file is there, but the
# table cannot be opened as the workers would (petrel_table_check, Module
# API 1.1): petreld -n and the start refuse it, naming the module to add
# (before, the check could only look at the file, and the first AUTH found
# out: AUTH not offered, 454).
with Petrel(t, main_cf=dict(BASE, modules="sasl"), start=False) as p:
    source = p.write_file("sasl_passwd", "bob %s\n" % ENTRIES["bob"], 0o600)
    p.write_main_cf(dict(p.settings, smtpd_sasl_path="hash:" + source))
    r = p.petrelctl("map", "build", "hash:" + source)
    t.ok(r.returncode == 0, "petrelctl map build hash: (an LMDB file, as lmdb: reads)", r.stderr)
    p.write_main_cf(dict(p.settings, smtpd_sasl_path="lmdb:" + source))
    n = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True)
    t.ok(n.returncode != 0, "lmdb: without the lmdb module: petreld -n refuses it", n.stderr)
    t.like(n.stderr, r"smtpd_sasl_path: .*lmdb:\S+: .*add lmdb to `modules`.*\(smtpd_sasl_type = table\)",
           "naming the module that provides the type")
t.done()
