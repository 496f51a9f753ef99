"""doc/howto/virtual-hosting.md, run (test_howto_virtual_hosting.py for PostgreSQL, ..._mariadb.py
for MariaDB, ..._ldap.py for LDAP): every block of the how-to marked with a
file name is taken from the page, its paths and ports replaced with private ones, and used as
written: the SQL schema and data in a private database server, Petrel's table files, main.cf
and master.cf lines, Dovecot's SQL and main configuration for a private Dovecot (IMAP, POP3,
LMTP, auth). Then what the page's last section promises: mail to a mailbox and to an alias
over port 25 lands in the INBOX through LMTP, an unknown user and another domain are refused,
a virtual user submits on 587 after STARTTLS with AUTH checked by Dovecot against the
database, may send as her own address and her alias but not as another user, the message is
read back over IMAP (imaplib) and POP3 (poplib), and the database down answers 451."""
import imaplib
import os
import poplib
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

from harness import CLEANUP_DIRS, TEST_USER, Petrel, Smtp, Tap, free_port, make_cert, wait_for
from ldaplib import SUFFIX, Slapd
from mysqllib import MariaDB
from pglib import PgCluster
from tablelib import bundled_module_dir

t = Tap(timeout=300)
HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, "..", "..", "doc", "howto", "virtual-hosting.md")
QMGR = "qmgr unix n - n 300 1 qmgr\n"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def bail(reason, diag=None):
    t.ok(False, "virtual-hosting how-to: " + reason, diag)
    t.done()


def blocks(path):
    """The page's fenced blocks that name a file: {name: text}."""
    with open(path) as f:
        text = f.read()
    return {m.group(1): m.group(2) for m in re.finditer(r"^```\w* file=(\S+)\n(.*?)^```$", text, re.S | re.M)}


def substitute(text, mapping):
    for old, new in mapping.items():
        text = text.replace(old, new)
    return text


class Postgres:
    """The page's PostgreSQL blocks, in a private cluster."""
    name, module, driver, package = "PostgreSQL", "pgsql", "libdriver_pgsql.so", "dovecot-pgsql"
    blocks = ("schema.sql", "data.sql", "dovecot-sql.conf.ext")
    data = blocks[:2]
    tables = ("pgsql-domains.cf", "pgsql-mailboxes.cf", "pgsql-aliases.cf", "pgsql-sender-login.cf")
    main_cf = ()
    dovecot_sql = "dovecot-sql.conf.ext"
    dovecot_conf = {}

    def start(self, page):
        self.pg = PgCluster()
        self.pg.psql("CREATE ROLE petrel LOGIN PASSWORD 'Petrel-DB-Pw'; "
                     "CREATE ROLE dovecot LOGIN PASSWORD 'Dovecot-DB-Pw'")
        self.pg.psql("CREATE DATABASE mail")
        self.pg.psql(page["schema.sql"], db="mail")
        self.pg.psql(page["data.sql"], db="mail")
        return self.pg.psql("SELECT count(*) FROM mailboxes", db="mail").strip()

    def paths(self):
        return {"127.0.0.1:5432": "127.0.0.1:%d" % self.pg.port, "port=5432": "port=%d" % self.pg.port}

    def stop(self):
        self.pg.stop()


class Mariadb:
    """The page's MariaDB blocks (and its data.sql), in a private mariadbd."""
    name, module, driver, package = "MariaDB", "mysql", "libdriver_mysql.so", "dovecot-mysql"
    blocks = ("schema-mariadb.sql", "data.sql", "dovecot-sql-mariadb.conf.ext", "main-mariadb.cf")
    data = blocks[:2]
    tables = ("mysql-domains.cf", "mysql-mailboxes.cf", "mysql-aliases.cf", "mysql-sender-login.cf")
    main_cf = ("main-mariadb.cf",)
    dovecot_sql = "dovecot-sql-mariadb.conf.ext"
    dovecot_conf = {}

    def start(self, page):
        self.db = MariaDB()
        self.db.sql("CREATE DATABASE mail; CREATE USER 'petrel'@'127.0.0.1' IDENTIFIED BY 'Petrel-DB-Pw';"
                    "CREATE USER 'dovecot'@'127.0.0.1' IDENTIFIED BY 'Dovecot-DB-Pw';")
        self.db.sql(page["schema-mariadb.sql"], db="mail")
        self.db.sql(page["data.sql"], db="mail")
        return self.db.sql("SELECT count(*) FROM mailboxes", db="mail").strip()

    def paths(self):
        return {"127.0.0.1:3306": "127.0.0.1:%d" % self.db.port, "port=3306": "port=%d" % self.db.port}

    def stop(self):
        self.db.stop()


class Ldap:
    """The page's LDAP blocks, in a private slapd (ldaplib: its suffix replaces dc=example,dc=com)."""
    name, module, driver, package = "LDAP", "ldap", "libauthdb_ldap.so", "dovecot-ldap"
    blocks = ("mail.ldif", "dovecot-ldap.conf.ext", "main-ldap.cf")
    data = blocks[:1]
    tables = ("ldap-domains.cf", "ldap-mailboxes.cf", "ldap-aliases.cf", "ldap-sender-login.cf")
    main_cf = ("main-ldap.cf",)
    dovecot_sql = "dovecot-ldap.conf.ext"
    # as the page says: dovecot.conf's passdb and userdb read the LDAP file
    dovecot_conf = {"driver = sql": "driver = ldap",
                    "/etc/dovecot/dovecot-sql.conf.ext": "/etc/dovecot/dovecot-ldap.conf.ext"}

    def start(self, page):
        self.slapd = Slapd(substitute(page["mail.ldif"], {"dc=example,dc=com": SUFFIX}))
        found = self.slapd.search("(objectClass=inetOrgPerson)", "mail").stdout
        return str(found.count("\nmail: "))

    def paths(self):
        return {"ldap://127.0.0.1:389": "ldap://127.0.0.1:%d" % self.slapd.port, "dc=example,dc=com": SUFFIX}

    def stop(self):
        self.slapd.stop()


def run(db):
    """Runs the page with db's blocks (Postgres(), Mariadb() or Ldap())."""
    if os.geteuid() != 0:
        bail("must run as root (Dovecot switches to the mail user)")
    for tool in (DOVECOT, "/usr/lib/dovecot/imap", "/usr/lib/dovecot/pop3", "/usr/lib/dovecot/lmtp"):
        if not os.access(tool, os.X_OK):
            bail("%s is not installed (dovecot-imapd, dovecot-pop3d, dovecot-lmtpd: "
                 "PETREL_WITH_TESTS=1 scripts/install-deps.sh)" % tool)
    if not os.path.exists("/usr/lib/dovecot/modules/auth/" + db.driver) and \
            not os.path.exists("/usr/lib/dovecot/modules/" + db.driver):
        bail("Dovecot's %s driver is not installed (%s)" % (db.module, db.package))
    mail_user = pwd.getpwnam(TEST_USER)
    page = blocks(PAGE)
    t.ok(set(page) >= set(db.blocks) | set(db.tables) | {"main.cf", "master.cf", "dovecot.conf"},
         "the how-to has every file block the %s test runs" % db.name, sorted(page))

    # ---- the database, from the page ----
    t.is_(db.start(page), "2", "%s load%s" % (" and ".join(db.data), "" if len(db.data) > 1 else "s"))

    # ---- Dovecot, from the page ----
    ddir = tempfile.mkdtemp(prefix="petrel-howto-dovecot-")
    CLEANUP_DIRS.append(ddir)
    os.chmod(ddir, 0o755)
    vmail = os.path.join(ddir, "vmail")
    private = os.path.join(ddir, "private")   # /var/spool/postfix/private
    for d in (vmail, private):
        os.mkdir(d, 0o755)
    os.chown(vmail, mail_user.pw_uid, mail_user.pw_gid)
    imap_port, pop3_port = free_port(), free_port()
    paths = dict(db.paths(), **{
        "/var/vmail": vmail,
        "/var/spool/postfix/private": private,
        "/etc/dovecot/dovecot-sql.conf.ext": os.path.join(ddir, "dovecot-sql.conf.ext"),
        "/etc/dovecot/dovecot-ldap.conf.ext": os.path.join(ddir, "dovecot-sql.conf.ext"),
        "5000 AS uid, 5000 AS gid": "%d AS uid, %d AS gid" % (mail_user.pw_uid, mail_user.pw_gid),
        "=uid=5000, =gid=5000": "=uid=%d, =gid=%d" % (mail_user.pw_uid, mail_user.pw_gid),
        "user = petrel": "user = %s" % TEST_USER,
        "port = 143": "port = %d" % imap_port,
        "port = 110": "port = %d" % pop3_port,
    })
    with open(os.path.join(ddir, "dovecot-sql.conf.ext"), "w") as f:
        f.write(substitute(page[db.dovecot_sql], paths))
    os.chmod(os.path.join(ddir, "dovecot-sql.conf.ext"), 0o600)
    dconf = os.path.join(ddir, "dovecot.conf")
    with open(dconf, "w") as f:
        # What a private instance needs around the page's configuration.
        f.write("base_dir = %s/run\nstate_dir = %s/state\nlog_path = %s/dovecot.log\nssl = no\n"
                "listen = 127.0.0.1\ndisable_plaintext_auth = no\nauth_failure_delay = 0\n"
                "default_login_user = dovenull\ndefault_internal_user = dovecot\nfirst_valid_uid = 1\n"
                % (ddir, ddir, ddir))
        f.write(substitute(substitute(page["dovecot.conf"], db.dovecot_conf), paths))
        f.write("service imap-login {\n  inet_listener imaps {\n    port = 0\n  }\n}\n"
                "service pop3-login {\n  inet_listener pop3s {\n    port = 0\n  }\n}\n"
                "service lmtp {\n  inet_listener lmtp {\n    port = 0\n  }\n}\n")
    os.mkdir(os.path.join(ddir, "state"), 0o750)
    dlog = open(os.path.join(ddir, "dovecot.out"), "ab")
    dproc = subprocess.Popen([DOVECOT, "-c", dconf, "-F"], stdout=dlog, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)


    def dovecot_logs():
        text = ""
        for name in ("dovecot.out", "dovecot.log"):
            try:
                with open(os.path.join(ddir, name), "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                pass
        return text[-3000:]


    def dovecot_stop():
        if dproc.poll() is None:
            children = subprocess.run(["pgrep", "-P", str(dproc.pid)], capture_output=True, text=True).stdout.split()
            dproc.send_signal(signal.SIGTERM)
            try:
                dproc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                dproc.kill()
                dproc.wait()
            for pid in children:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


    def imap_up():
        try:
            with socket.create_connection(("127.0.0.1", imap_port), timeout=2) as s:
                return s.recv(200).startswith(b"* OK")
        except OSError:
            return False


    if not wait_for(lambda: imap_up() and os.path.exists(os.path.join(private, "auth")), timeout=20):
        dovecot_stop()
        bail("the private Dovecot did not start", dovecot_logs())

    try:
        # ---- Petrel, from the page ----
        with Petrel(t, extra_services=QMGR, start=False, workers=1) as p:
            cert, key = make_cert(p.dir, "mail.example.com")
            os.chmod(key, 0o644)
            paths.update({"/etc/postfix/": p.dir + "/", "/etc/ssl/certs/mail.example.com.pem": cert,
                          "/etc/ssl/private/mail.example.com.key": key})
            for name in db.tables:
                p.write_file(name, substitute(page[name], paths), mode=0o640)
            conf = dict(p.settings)
            for block in ("main.cf",) + db.main_cf:
                for line in substitute(page[block], paths).splitlines():
                    name, value = line.split("=", 1)
                    conf[name.strip()] = value.strip()
            conf.update({"module_directory": bundled_module_dir(db.module, "sasl"), "mynetworks": "192.0.2.0/24",
                         "smtpd_sasl_failure_delay": "0s", "minimal_backoff_time": "1s"})
            p.write_main_cf(conf)
            sub_port = free_port()
            with open(os.path.join(p.conf, "master.cf"), "a") as f:
                f.write(substitute(page["master.cf"], paths).replace("submission inet", "127.0.0.1:%d inet" % sub_port))
            p.start()
            p.wait_listening(sub_port)

            # Port 25: mail from the internet.
            c = p.connect()
            c.ehlo("mx.sender.test")
            c.cmd("MAIL FROM:<someone@sender.test>")
            t.is_(c.cmd("RCPT TO:<bob@example.com>"), "250 2.1.5 Ok", "port 25: a mailbox in the database")
            t.is_(c.cmd("RCPT TO:<info@example.com>"), "250 2.1.5 Ok", "port 25: an alias in the database")
            t.is_(c.cmd("RCPT TO:<nobody@example.com>"),
                  "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
                  "port 25: an unknown user is refused at RCPT")
            t.is_(c.cmd("RCPT TO:<x@elsewhere.test>"),
                  "454 4.7.1 <x@elsewhere.test>: Relay access denied",
                  "port 25: another domain is not relayed (smtpd_relay_restrictions: defer_unauth_destination)")
            c.cmd("RSET")
            r = c.send_message("someone@sender.test", ["info@example.com"],
                               "From: someone@sender.test\r\nSubject: hello via info\r\n\r\nfrom outside\r\n", ehlo=False)
            t.like(r, r"^250 2\.0\.0 Ok: queued", "port 25: the message to the alias is accepted")
            c.close()

            # Port 587: Alice, as her mail client or webmail would.
            ctx = ssl._create_unverified_context()
            s = smtplib.SMTP("127.0.0.1", sub_port, timeout=20)
            s.ehlo("webmail.example.com")
            s.starttls(context=ctx)
            s.ehlo("webmail.example.com")
            code, text = s.login("alice@example.com", "Alice-Pw-1")
            t.is_(code, 235, "587: AUTH after STARTTLS, the password checked by Dovecot against the database")
            refused = s.sendmail("alice@example.com", ["bob@example.com"],
                                 "From: alice@example.com\r\nSubject: lunch?\r\n\r\nfrom Alice\r\n")
            t.is_(refused, {}, "587: Alice sends as herself to Bob")
            try:
                s.sendmail("sales@example.com", ["bob@example.com"], "Subject: as sales\r\n\r\nx\r\n")
                t.ok(True, "587: Alice sends as her alias sales@example.com (smtpd_sender_login_maps in %s)" % db.module)
            except smtplib.SMTPException as e:
                t.ok(False, "587: Alice sends as her alias sales@example.com (smtpd_sender_login_maps in %s)" % db.module,
                     str(e))
            try:
                s.sendmail("bob@example.com", ["bob@example.com"], "Subject: forged\r\n\r\nx\r\n")
                t.ok(False, "587: Alice may not send as Bob")
            except smtplib.SMTPRecipientsRefused as e:   # smtpd_delay_reject: at RCPT, as Postfix
                code, text = e.recipients["bob@example.com"]
                t.is_("%d %s" % (code, text.decode()),
                      "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice@example.com",
                      "587: Alice may not send as Bob")
            s.quit()
            s = smtplib.SMTP("127.0.0.1", sub_port, timeout=20)
            s.ehlo("webmail.example.com")
            s.starttls(context=ctx)
            s.ehlo("webmail.example.com")
            try:
                s.login("alice@example.com", "wrong")
                t.ok(False, "587: a wrong password is refused")
            except smtplib.SMTPAuthenticationError as e:
                t.is_(e.smtp_code, 535, "587: a wrong password is refused")
            s.close()

            # Bob reads his mail: IMAP and POP3.
            def bob_has(count):
                try:
                    m = imaplib.IMAP4("127.0.0.1", imap_port)
                    m.login("bob@example.com", "Bob-Pw-2")
                    typ, data = m.select("INBOX")
                    n = int(data[0])
                    m.logout()
                    return n >= count
                except (OSError, imaplib.IMAP4.error):
                    return False

            t.ok(wait_for(lambda: bob_has(3), timeout=40), "three messages reach Bob's INBOX through LMTP",
                 p.log()[-2000:] + dovecot_logs())
            m = imaplib.IMAP4("127.0.0.1", imap_port)
            m.login("bob@example.com", "Bob-Pw-2")
            m.select("INBOX", readonly=True)
            typ, data = m.search(None, "SUBJECT", "lunch?")
            ids = data[0].split()
            t.is_(len(ids), 1, "IMAP: Alice's message is in Bob's INBOX")
            typ, data = m.fetch(ids[0], "(BODY.PEEK[])")
            body = data[0][1].decode("utf-8", "replace")
            t.ok("from Alice" in body and re.search(r"(?mi)^Received: .*\n?.*by ", body) is not None,
                 "IMAP: its body, with Petrel's Received header", body[:800])
            typ, data = m.search(None, "SUBJECT", "\"hello via info\"")
            t.is_(len(data[0].split()), 1, "IMAP: the mail from outside to the alias info@ is there too")
            m.logout()
            pop = poplib.POP3("127.0.0.1", pop3_port, timeout=20)
            pop.user("bob@example.com")
            pop.pass_("Bob-Pw-2")
            count, size = pop.stat()
            t.ok(count == 3, "POP3: Bob sees his three messages", count)
            pop.quit()
            alice_new = os.path.join(vmail, "example.com", "alice", "Maildir", "new")
            t.ok(not os.path.isdir(alice_new) or not os.listdir(alice_new), "nothing went to Alice's mailbox")

            # The database down: 451, never "user unknown".
            db.stop()
            c = p.connect()
            c.ehlo("mx.sender.test")
            c.cmd("MAIL FROM:<someone@sender.test>")
            reply = c.cmd("RCPT TO:<bob@example.com>")
            t.ok(reply.startswith("451 4.3.0 "), "the database down: 451 4.3.0, the sender retries", reply)
            c.close()
    finally:
        dovecot_stop()
        db.stop()
    t.done()
