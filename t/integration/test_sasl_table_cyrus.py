"""smtpd_sasl_type = table (a texthash: table of crypt(3) hashes: yescrypt, bcrypt,
sha512-crypt and {PLAIN}, checked on the module's threads; an edit applies without a reload;
other table types are in test_sasl_table_maps.py)
and smtpd_sasl_type = cyrus (the real libsasl2: auxprop sasldb made with saslpasswd2, and
saslauthd in front of a private Dovecot IMAP with its rimap mechanism), through PLAIN, LOGIN
and, with sasldb, CRAM-MD5. No password reaches the log or the queue."""
import ctypes
import os
import pwd
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time

from harness import PETRELD, TEST_USER, Petrel, Tap, free_port
from modlib import bundled_module_dir
from sasllib import DovecotAuth, b64, files_containing

t = Tap(timeout=300)
mods = bundled_module_dir("sasl")
libcrypt = ctypes.CDLL("libcrypt.so.1")
libcrypt.crypt_gensalt.restype = ctypes.c_char_p
libcrypt.crypt.restype = ctypes.c_char_p


def crypt_hash(prefix, password):
    setting = libcrypt.crypt_gensalt(prefix.encode(), 0, None, 0)
    return libcrypt.crypt(password.encode(), setting).decode()


PASSWORDS = {"yes": "Yes-cr7pt!", "bcr": "Bcr-ypt#9", "sha": "Sha512-pw", "pln": "Plain-pw-3"}
sha512 = subprocess.run(["openssl", "passwd", "-6", PASSWORDS["sha"]], capture_output=True, text=True).stdout.strip()
entries = {"yes": crypt_hash("$y$", PASSWORDS["yes"]), "bcr": crypt_hash("$2b$", PASSWORDS["bcr"]),
           "sha": sha512, "pln": "{PLAIN}" + PASSWORDS["pln"]}
t.ok(entries["yes"].startswith("$y$") and entries["bcr"].startswith("$2b$") and entries["sha"].startswith("$6$"),
     "hashes of each kind made with libcrypt and openssl passwd", entries)

BASE = {"modules": "sasl", "module_directory": mods, "smtpd_sasl_auth_enable": "yes",
        "mynetworks": "192.0.2.0/24", "smtpd_sasl_failure_delay": "0s"}


def login(port, mech, user, password):
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    s.ehlo("client.example.org")
    s.user, s.password = user, password
    fn = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}[mech]
    try:
        code, _ = s.auth(mech, fn, initial_response_ok=(mech == "PLAIN"))
    except smtplib.SMTPAuthenticationError as e:
        code = e.smtp_code
    s.close()
    return code


with Petrel(t, main_cf=BASE, start=False) as p:
    table = p.write_file("sasl_users", "# login hash\n" + "".join("%s %s\n" % kv for kv in entries.items()), 0o600)
    # (no lockout: the bad messages below add failures from this address)
    p.write_main_cf(dict(p.settings, smtpd_sasl_type="table", smtpd_sasl_path="texthash:" + table,
                         smtpd_sasl_failure_limit="0"))
    p.start()
    c = p.connect()
    c.ehlo()
    t.ok("250-AUTH PLAIN LOGIN" in c.lines, "the table back-end offers PLAIN and LOGIN")
    c.close()
    for user, kind in (("yes", "yescrypt"), ("bcr", "bcrypt"), ("sha", "sha512-crypt"), ("pln", "{PLAIN}")):
        t.is_(login(p.port, "PLAIN", user, PASSWORDS[user]), 235, "%s: PLAIN with the right password" % kind)
        t.is_(login(p.port, "LOGIN", user, PASSWORDS[user]), 235, "%s: LOGIN with the right password" % kind)
        t.is_(login(p.port, "PLAIN", user, PASSWORDS[user] + "x"), 535, "%s: a wrong password fails" % kind)
    t.is_(login(p.port, "PLAIN", "nobody", "whatever"), 535, "an unknown login fails the same way")
    t.ok(p.wait_log(r"SASL PLAIN authentication failed: authentication failure, sasl_username=nobody") is not None,
         "and is logged with the login tried")
    # an edit applies without a reload (the file's mtime changes)
    time.sleep(1.1)
    with open(table, "a") as f:
        f.write("new {PLAIN}Fresh-pw\n")
    t.is_(login(p.port, "PLAIN", "new", "Fresh-pw"), 235, "a login added to the file works without a reload")
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("AUTH PLAIN " + b64("other\0yes\0" + PASSWORDS["yes"])),
          "535 5.7.8 Error: authentication failed: authorization identity differs from the login",
          "PLAIN with someone else's authorization identity is refused")
    # The PLAIN split (petrel_sasl_plain_split, core/module/sasl_plain.c; fuzz target sasl_plain)
    for msg, why in (("pln", "no NUL"), ("\0pln", "one NUL"), ("\0pln\0Plain\0-pw-3", "a NUL in the password"),
                     ("\0pln\0" + PASSWORDS["pln"] + "\0", "a NUL at the end"), ("\0\0whatever", "an empty login")):
        t.is_(c.cmd("AUTH PLAIN " + b64(msg)), "535 5.7.8 Error: authentication failed: Invalid authentication data",
              "PLAIN, %s: refused" % why)
    t.is_(c.cmd("AUTH PLAIN"), "334 ", "PLAIN without an initial response: an empty challenge")
    t.is_(c.cmd(b64("\0pln")), "535 5.7.8 Error: authentication failed: Invalid authentication data",
          "the response is split as an initial response is: one NUL is refused")
    t.is_(c.cmd("AUTH PLAIN"), "334 ", "again")
    t.is_(c.cmd(b64("pln\0pln\0" + PASSWORDS["pln"])), "235 2.7.0 Authentication successful",
          "and a well-formed response (authzid = login) authenticates")
    c.close()
    p.stop()
    t.is_(files_containing([p.queue, p.log_path], [pw.encode() for pw in PASSWORDS.values()]), [],
          "no password in the log or the queue")

# A password table the back-end cannot read stops petreld -n and the start,
# naming the parameter and where it is set (not the first AUTH).
def refused(settings, master_extra=""):
    with Petrel(t, main_cf=dict(BASE, **settings), start=False) as p:
        if master_extra:
            with open(os.path.join(p.conf, "master.cf"), "a") as f:
                f.write(master_extra % p.dir)
        n = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True)
        p.start(wait=False)
        try:
            p.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        return n, p.proc.poll(), p.log()


n, start_rc, log = refused({"smtpd_sasl_type": "table", "smtpd_sasl_path": "texthash:/nonexistent/sasl_users"})
t.ok(n.returncode != 0, "a missing password table: petreld -n fails")
t.like(n.stderr, r"main\.cf:\d+: smtpd_sasl_path: texthash:/nonexistent/sasl_users: No such file or directory "
                 r"\(smtpd_sasl_type = table\)", "naming the parameter, its main.cf line, the file and why")
t.ok(start_rc is not None and start_rc != 0, "and petreld does not start", log)
t.like(log, r"smtpd_sasl_path: texthash:/nonexistent/sasl_users: No such file or directory", "saying why")

n, start_rc, log = refused({"smtpd_sasl_type": "table", "smtpd_sasl_path": "hash:/etc/nothing"})
t.ok(n.returncode != 0 and start_rc not in (None, 0), "a hash: table that was never built: refused at start too")
t.like(n.stderr, r"main\.cf:\d+: smtpd_sasl_path: hash:/etc/nothing: /etc/nothing\.lmdb: No such file or "
                 r"directory; build it with `petrelctl map build hash:/etc/nothing`",
       "naming the parameter, the compiled file and the command that builds it")

n, start_rc, log = refused({"smtpd_sasl_type": "table", "smtpd_sasl_path": "/etc/sasl_passwd"})
t.ok(n.returncode != 0 and start_rc not in (None, 0), "a path that is not TYPE:NAME: refused")
t.like(n.stderr, r"main\.cf:\d+: smtpd_sasl_path: \"/etc/sasl_passwd\": must be TYPE:NAME",
       "saying what it must be")

n, start_rc, log = refused({"smtpd_sasl_auth_enable": "no"},
                           "127.0.0.1:%d inet n - n - - smtpd -o smtpd_sasl_auth_enable=yes "
                           "-o smtpd_sasl_type=table -o smtpd_sasl_path=texthash:%%s/missing\n" % free_port())
t.ok(n.returncode != 0 and start_rc not in (None, 0), "a missing table in a master.cf -o override: refused too")
t.like(n.stderr, r"master\.cf, line 2: service 127\.0\.0\.1:\d+: smtpd_sasl_path: texthash:\S+/missing: No such "
                 r"file or directory", "naming the master.cf line")

# ---- Cyrus libsasl2: auxprop sasldb ----
confdir = tempfile.mkdtemp(prefix="petrel-cyrus-")
os.chmod(confdir, 0o755)
sasldb = os.path.join(confdir, "sasldb2")
for user, pw in (("carol", "Carol-sasl-9"), ("dave", "Dave-sasl-8")):
    r = subprocess.run(["saslpasswd2", "-p", "-c", "-f", sasldb, "-u", "petrel.test", user], input=pw + "\n",
                       capture_output=True, text=True)
    t.is_(r.returncode, 0, "saslpasswd2 -f makes a sasldb entry for %s" % user)
petrel_pw = pwd.getpwnam(TEST_USER)
os.chown(sasldb, petrel_pw.pw_uid, petrel_pw.pw_gid)
with open(os.path.join(confdir, "smtpd.conf"), "w") as f:
    f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: PLAIN LOGIN CRAM-MD5\n"
            % sasldb)
cyrus = dict(BASE, smtpd_sasl_type="cyrus", smtpd_sasl_path="smtpd", sasl_cyrus_config_path=confdir,
             smtpd_sasl_local_domain="petrel.test")
with Petrel(t, main_cf=cyrus) as p:
    c = p.connect()
    c.ehlo()
    auth = [l for l in c.lines if l.startswith("250-AUTH ")]
    t.ok(auth and set(auth[0][9:].split()) == {"PLAIN", "LOGIN", "CRAM-MD5"},
         "Cyrus offers what smtpd.conf's mech_list allows", auth)
    c.close()
    for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
        t.is_(login(p.port, mech, "carol", "Carol-sasl-9"), 235, "Cyrus sasldb: %s" % mech)
    t.is_(login(p.port, "PLAIN", "carol", "wrong"), 535, "Cyrus sasldb: a wrong password")
    t.ok(p.wait_log(r"SASL PLAIN authentication failed: authentication failure") is not None,
         "Cyrus' reason in Postfix's line")
    p.stop()
    t.is_(files_containing([p.queue, p.log_path], [b"Carol-sasl-9"]), [], "no password in the log or the queue")

# ---- Cyrus libsasl2 with saslauthd (rimap) in front of a private Dovecot IMAP ----
imap_port = free_port()
dc = DovecotAuth({"erin": "Erin-imap-7"}, mechanisms="plain login",
                 extra="protocols = imap\nservice imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n"
                       "    port = %d\n  }\n}\ndisable_plaintext_auth = no\nmail_location = mbox:/tmp/nomail\n"
                       % imap_port)
mux_dir = tempfile.mkdtemp(prefix="petrel-saslauthd-")
os.chmod(mux_dir, 0o755)
saslauthd = None
try:
    dc.start()
    saslauthd = subprocess.Popen(["saslauthd", "-d", "-a", "rimap", "-O", "127.0.0.1/%d" % imap_port,
                                  "-m", mux_dir, "-n", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 # its SIGTERM handler signals its whole process group: give it its own
                                 start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline and not os.path.exists(os.path.join(mux_dir, "mux")):
        time.sleep(0.1)
    r = subprocess.run(["testsaslauthd", "-u", "erin", "-p", "Erin-imap-7", "-f", os.path.join(mux_dir, "mux")],
                       capture_output=True, text=True, timeout=20)
    t.like(r.stdout, r'0: OK "Success\."', "the private saslauthd checks erin against the private Dovecot IMAP")
    with open(os.path.join(confdir, "smtpd.conf"), "w") as f:
        f.write("pwcheck_method: saslauthd\nsaslauthd_path: %s/mux\nmech_list: PLAIN LOGIN\n" % mux_dir)
    with Petrel(t, main_cf=dict(cyrus, smtpd_sasl_local_domain="")) as p:
        t.is_(login(p.port, "PLAIN", "erin", "Erin-imap-7"), 235, "Cyrus + saslauthd: PLAIN")
        t.is_(login(p.port, "LOGIN", "erin", "Erin-imap-7"), 235, "Cyrus + saslauthd: LOGIN")
        t.is_(login(p.port, "PLAIN", "erin", "wrong"), 535, "Cyrus + saslauthd: a wrong password")
        t0 = time.time()
        p.stop()
        t.diag("petreld stopped in %.1f s" % (time.time() - t0))
finally:
    t0 = time.time()
    if saslauthd:
        saslauthd.send_signal(signal.SIGTERM)
        try:
            saslauthd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            saslauthd.kill()
            saslauthd.wait()
    t.diag("saslauthd stopped in %.1f s" % (time.time() - t0))
    dc.cleanup()
    t.diag("dovecot stopped in %.1f s" % (time.time() - t0))
    shutil.rmtree(mux_dir, ignore_errors=True)
    shutil.rmtree(confdir, ignore_errors=True)
t.done()
