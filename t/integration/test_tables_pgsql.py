"""pgsql: tables (the pgsql module, libpq's asynchronous API) against a private PostgreSQL
cluster on loopback, with a pgsql_table(5) file as Postfix admins write it: virtual_alias_maps
and check_recipient_access at RCPT end to end over SMTP, keys with quotes, backslashes, % and SQL
in them that reach the database only as data, the database down (451 4.3.0 for recipient
validation, 451 4.3.5 for check_recipient_access, never "User unknown") and back, a slow query
that does not hold up another session of the same worker, expansion_limit, delivery through the
queue manager, petrelctl map query, encoding (client_encoding) and a bad retry_interval."""
import os
import re
import subprocess

from harness import PETRELD, Petrel, Tap, maildir_messages, wait_for
from pglib import PgCluster
from tablelib import WaitingRcpt, alias_session, bundled_module_dir

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
MODULES = bundled_module_dir("pgsql")

pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pf''pw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
pg.psql("CREATE TABLE alias(address text PRIMARY KEY, goto text NOT NULL, active boolean DEFAULT true);"
        "INSERT INTO alias VALUES ('sales@pg.test', 'box@vmail.test', true),"
        "('info@pg.test', 'box@vmail.test, other@vmail.test', true),"
        "('\"o''brien\\\\x\"@pg.test', 'box@vmail.test', true),"
        "('old@pg.test', 'box@vmail.test', false);"
        "CREATE TABLE access(address text, action text);"
        "INSERT INTO access VALUES ('blocked@pg.test', 'REJECT not here'), ('two@pg.test', 'OK'),"
        "('two@pg.test', 'DUNNO');"
        "CREATE FUNCTION slow(text) RETURNS text AS $$ SELECT pg_sleep(8); SELECT 'box@vmail.test'::text $$ "
        "LANGUAGE sql;"
        "GRANT SELECT ON alias, access TO postfix", db="mail")

with Petrel(t, extra_services=QMGR, start=False, workers=1) as p:
    common = "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pf'pw\ndbname = mail\n" % pg.port
    valias = p.write_file("pgsql-valias.cf", "# as in PGSQL_README\n" + common +
                          "query = SELECT goto FROM alias WHERE address = '%s' AND active\n", mode=0o640)
    access = p.write_file("pgsql-access.cf", common + "query = SELECT action FROM access WHERE address = '%s'\n"
                          "expansion_limit = 1\n", mode=0o640)
    slow = p.write_file("pgsql-slow.cf", common + "query = SELECT slow('%s') WHERE '%s' = 'slow@pg.test'\n",
                        mode=0o640)
    mail = p.virtual_mailboxes({"box@vmail.test": "box/", "other@vmail.test": "other/"}, {
        # 5 s (slow() sleeps 8): the slow lookup must still be waiting while
        # another is answered (checked below), on a loaded machine too
        "modules": "pgsql", "module_directory": MODULES, "pgsql_timeout": "5s",
        "virtual_alias_domains": "pg.test", "virtual_alias_maps": "proxy:pgsql:%s pgsql:%s" % (valias, slow),
        "smtpd_recipient_restrictions": "check_recipient_access pgsql:%s, permit_mynetworks, "
                                        "reject_unauth_destination" % access})
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "petreld -n accepts pgsql: tables", r.stdout + r.stderr)
    p.start()

    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@pg.test>"), "250 2.1.5 Ok", "virtual_alias_maps: an address in the database")
    t.is_(c.cmd("RCPT TO:<SALES@PG.TEST>"), "250 2.1.5 Ok", "in any case (the key is folded, as Postfix does)")
    t.is_(c.cmd("RCPT TO:<old@pg.test>"),
          "550 5.1.1 <old@pg.test>: Recipient address rejected: User unknown in virtual alias table",
          "a row the query does not select is not found")
    t.is_(c.cmd("RCPT TO:<blocked@pg.test>"), "554 5.7.1 <blocked@pg.test>: Recipient address rejected: not here",
          "check_recipient_access: the action from the database")
    t.is_(c.cmd("RCPT TO:<two@pg.test>"),
          "451 4.3.5 <two@pg.test>: Recipient address rejected: Server configuration error",
          "more rows than expansion_limit: a lookup error, Postfix's 451 4.3.5")
    # Injection attempts: data, never SQL.
    for addr in ("\"x' OR '1'='1\"@pg.test", "\"x\\\\' OR 1=1 --\"@pg.test", "\"%s%%\"@pg.test",
                 "\"'; DROP TABLE alias; --\"@pg.test"):
        reply = c.cmd("RCPT TO:<%s>" % addr)
        t.ok(reply.startswith("550 5.1.1 ") and "User unknown in virtual alias table" in reply,
             "a key with SQL in it matches nothing: %s" % addr, reply)
    t.is_(c.cmd("RCPT TO:<\"o'brien\\\\x\"@pg.test>"), "250 2.1.5 Ok",
          "a key with a quote and a backslash finds its own row, exactly")
    t.is_(pg.psql("SELECT count(*) FROM alias", db="mail").strip(), "4", "the table is intact")
    c.send(b"RCPT TO:<sales@pg.test\x00' OR '1'='1>\r\n")
    t.is_(c.read_reply(), "500 5.5.2 Error: bad syntax", "a NUL byte never becomes part of a key")

    # A slow query: another session of the same (only) worker is served meanwhile.
    waiting = WaitingRcpt(p, "slow@pg.test")
    # the slow query runs in the database (not merely a thread started)
    wait_for(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
                             "query LIKE 'SELECT slow(%'").strip() == "1", timeout=30)
    t.is_(c.cmd("RCPT TO:<info@pg.test>"), "250 2.1.5 Ok", "a lookup is answered while another waits for a slow query")
    t.ok(waiting.reply is None, "before the slow one has finished (the loop never blocks)")
    t.is_(waiting.result(), "451 4.3.0 <slow@pg.test>: Temporary lookup failure",
          "the slow query ends at pgsql_timeout with 451 4.3.0")
    c.cmd("RSET")
    c.close()

    c = p.connect()
    reply = c.send_message("sender@example.org", ["info@pg.test"], "Subject: via pgsql\r\n\r\nx\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued", "mail to an alias from the database is accepted")
    c.close()
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(mail, "box"))) == 1 and
                  len(maildir_messages(os.path.join(mail, "other"))) == 1, timeout=30),
         "and delivered to both mailboxes the database names")
    r = p.petrelctl("map", "query", "pgsql:" + valias, "info@pg.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test, other@vmail.test"),
         "petrelctl map query pgsql:...", r.stdout + r.stderr)
    # encoding (Postfix 3.8+): the client encoding, UTF8 unless set.
    enc_query = "query = SELECT goto FROM alias WHERE address = '%s' AND current_setting('client_encoding') = '{}'\n"
    for name, extra, want in (("enc-default.cf", "", "UTF8"), ("enc-latin1.cf", "encoding = LATIN1\n", "LATIN1")):
        cf = p.write_file(name, common + extra + enc_query.format(want), mode=0o640)
        r = p.petrelctl("map", "query", "pgsql:" + cf, "sales@pg.test")
        t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test"), "the client encoding is %s (%s)" % (want, name),
             r.stdout + r.stderr)

    pg.stop()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@pg.test>"),
          "451 4.3.5 <sales@pg.test>: Recipient address rejected: Server configuration error",
          "the database down: check_recipient_access defers (Postfix's 451 4.3.5)")
    r = p.petrelctl("map", "query", "pgsql:" + valias, "info@pg.test")
    t.ok(r.returncode == 2, "petrelctl map query with the database down: a lookup error",
         "%d %s" % (r.returncode, r.stdout + r.stderr))
    pg.start()
    # The host was marked dead for a minute after failing; a new process (this
    # petrelctl) tries it at once.
    r = p.petrelctl("map", "query", "pgsql:" + valias, "sales@pg.test")
    t.ok(r.returncode == 0, "the database is back: petrelctl finds it", r.stdout + r.stderr)
    c.close()

# Recipient validation alone (no access table) with the database down: 451 4.3.0.
with Petrel(t, start=False, workers=1) as p:
    cf = p.write_file("v.cf", "hosts = 127.0.0.1:%d\nuser = postfix\npassword = pf'pw\ndbname = mail\n"
                      "query = SELECT goto FROM alias WHERE address = '%%s'\n" % pg.port)
    c = alias_session(p, MODULES, "pgsql:" + cf, "pg.test", pgsql_timeout="2s")
    t.is_(c.cmd("RCPT TO:<sales@pg.test>"), "250 2.1.5 Ok", "host:port without inet: works too")
    pg.stop()
    t.is_(c.cmd("RCPT TO:<sales@pg.test>"), "451 4.3.0 <sales@pg.test>: Temporary lookup failure",
          "the database down: virtual_alias_maps answers 451 4.3.0 Temporary lookup failure, never User unknown")
    t.ok(p.wait_log("%s: (query on|read from)|no database server available" % re.escape("pgsql:" + cf)) is not None,
         "the failure is logged", p.log()[-1500:])
    c.close()

# Bad files: petreld -n names the file and line.
with Petrel(t, start=False) as p:
    legacy = p.write_file("legacy.cf", "hosts = 127.0.0.1\ndbname = mail\ntable = alias\nselect_field = goto\n"
                          "where_field = address\n")
    nodb = p.write_file("nodb.cf", "hosts = 127.0.0.1\nquery = SELECT 1 WHERE '%s' = 'x'\n")
    retry = p.write_file("retry.cf", "hosts = 127.0.0.1\ndbname = mail\nquery = SELECT 1 WHERE '%s' = 'x'\n"
                         "retry_interval = soon\n")
    for cf, want in ((legacy, "pgsql:%s line 4: select_field: the legacy query parameters are not supported" % legacy),
                     (nodb, "pgsql:%s: dbname is not set" % nodb),
                     (retry, "pgsql:%s line 4: retry_interval: \"soon\" is not a number of at least 1" % retry)):
        conf = dict(p.settings)
        conf.update({"modules": "pgsql", "module_directory": MODULES, "virtual_alias_maps": "pgsql:" + cf})
        p.write_main_cf(conf)
        r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
        t.ok(r.returncode != 0 and want in r.stdout + r.stderr, "petreld -n: " + want.split(": ", 1)[1],
             r.stdout + r.stderr)

pg.stop()
t.done()
