"""mysql: tables (the mysql module, MariaDB Connector/C's non-blocking API) against a private
MariaDB server on loopback, with a mysql_table(5) file as Postfix admins write it:
virtual_alias_maps and check_recipient_access at RCPT end to end over SMTP, keys with quotes,
backslashes, % and SQL in them that reach the database only as data, a slow query that does not
hold up another session of the same worker, the database down (451 4.3.0 / Postfix's 451 4.3.5,
never "User unknown"), delivery through the queue manager, petrelctl map query, and stored
procedures (CALL; several result sets; none, with require_result_set)."""
import os
import subprocess

from harness import PETRELD, Petrel, Tap, maildir_messages, wait_for
from mysqllib import MariaDB
from tablelib import WaitingRcpt, alias_session, bundled_module_dir

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
MODULES = bundled_module_dir("mysql")

db = MariaDB()
db.sql("CREATE DATABASE mail; CREATE USER 'postfix'@'127.0.0.1' IDENTIFIED BY 'pf''pw';"
       "GRANT SELECT ON mail.* TO 'postfix'@'127.0.0.1';")
db.sql("CREATE TABLE alias(address VARCHAR(255) PRIMARY KEY, goto TEXT NOT NULL, active TINYINT DEFAULT 1)"
       " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
       "INSERT INTO alias VALUES ('sales@my.test', 'box@vmail.test', 1),"
       "('info@my.test', 'box@vmail.test, other@vmail.test', 1),"
       "('\"o\\'brien\\\\\\\\x\"@my.test', 'box@vmail.test', 1), ('old@my.test', 'box@vmail.test', 0);"
       "CREATE TABLE access(address VARCHAR(255), action TEXT);"
       "INSERT INTO access VALUES ('blocked@my.test', 'REJECT not here');", db="mail")

with Petrel(t, extra_services=QMGR, start=False, workers=1) as p:
    common = "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pf'pw\ndbname = mail\n" % db.port
    valias = p.write_file("mysql-valias.cf", "# as in MYSQL_README\n" + common +
                          "query = SELECT goto FROM alias WHERE address = '%s' AND active = 1\n", mode=0o640)
    access = p.write_file("mysql-access.cf", common + "query = SELECT action FROM access WHERE address = '%s'\n",
                          mode=0o640)
    slow = p.write_file("mysql-slow.cf", common + "query = SELECT 'box@vmail.test' FROM DUAL WHERE SLEEP(8) = 0 "
                        "AND '%s' = 'slow@my.test'\n", mode=0o640)
    mail = p.virtual_mailboxes({"box@vmail.test": "box/", "other@vmail.test": "other/"}, {
        # 5 s (the slow query sleeps 8): the slow lookup must still be waiting
        # while another is answered (checked below), on a loaded machine too
        "modules": "mysql", "module_directory": MODULES, "mysql_timeout": "5s",
        "virtual_alias_domains": "my.test", "virtual_alias_maps": "proxy:mysql:%s mysql:%s" % (valias, slow),
        "smtpd_recipient_restrictions": "check_recipient_access mysql:%s, permit_mynetworks, "
                                        "reject_unauth_destination" % access})
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "petreld -n accepts mysql: tables", r.stdout + r.stderr)
    p.start()

    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@my.test>"), "250 2.1.5 Ok", "virtual_alias_maps: an address in the database")
    t.is_(c.cmd("RCPT TO:<old@my.test>"),
          "550 5.1.1 <old@my.test>: Recipient address rejected: User unknown in virtual alias table",
          "a row the query does not select is not found")
    t.is_(c.cmd("RCPT TO:<blocked@my.test>"), "554 5.7.1 <blocked@my.test>: Recipient address rejected: not here",
          "check_recipient_access: the action from the database")
    for addr in ("\"x' OR '1'='1\"@my.test", "\"x\\\\' OR 1=1 -- \"@my.test", "\"%s%%\"@my.test",
                 "\"'; DROP TABLE alias; -- \"@my.test"):
        reply = c.cmd("RCPT TO:<%s>" % addr)
        t.ok(reply.startswith("550 5.1.1 ") and "User unknown in virtual alias table" in reply,
             "a key with SQL in it matches nothing: %s" % addr, reply)
    t.is_(c.cmd("RCPT TO:<\"o'brien\\\\x\"@my.test>"), "250 2.1.5 Ok",
          "a key with a quote and a backslash finds its own row, exactly")
    t.is_(db.sql("SELECT count(*) FROM alias", db="mail").strip(), "4", "the table is intact")

    waiting = WaitingRcpt(p, "slow@my.test")
    # the slow query runs in the database (not merely a thread started)
    wait_for(lambda: db.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                            "AND INFO LIKE 'SELECT %SLEEP(8)%'").strip() == "1", timeout=30)
    t.is_(c.cmd("RCPT TO:<info@my.test>"), "250 2.1.5 Ok", "a lookup is answered while another waits for a slow query")
    t.ok(waiting.reply is None, "before the slow one has finished (the loop never blocks)")
    t.is_(waiting.result(), "451 4.3.0 <slow@my.test>: Temporary lookup failure",
          "the slow query ends at mysql_timeout with 451 4.3.0")
    c.cmd("RSET")
    c.close()

    c = p.connect()
    reply = c.send_message("sender@example.org", ["info@my.test"], "Subject: via mysql\r\n\r\nx\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued", "mail to an alias from the database is accepted")
    c.close()
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(mail, "box"))) == 1 and
                  len(maildir_messages(os.path.join(mail, "other"))) == 1, timeout=30),
         "and delivered to both mailboxes the database names")
    r = p.petrelctl("map", "query", "mysql:" + valias, "info@my.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test, other@vmail.test"),
         "petrelctl map query mysql:...", r.stdout + r.stderr)

    db.stop()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@my.test>"),
          "451 4.3.5 <sales@my.test>: Recipient address rejected: Server configuration error",
          "the database down: check_recipient_access defers (Postfix's 451 4.3.5)")
    c.close()

db.start()
# Stored procedures (mysql_table(5), Postfix 3.2+): CALL ends with a status result, which is
# read too, so the connection's next query works; a second result set with data is an
# error; none at all is an error unless require_result_set = no.
db.sql("DELIMITER //\n"
       "CREATE PROCEDURE lookup(IN a VARCHAR(255)) BEGIN SELECT goto FROM alias WHERE address = a; END//\n"
       "CREATE PROCEDURE twice(IN a VARCHAR(255)) BEGIN SELECT goto FROM alias WHERE address = a; SELECT 1; END//\n"
       "CREATE PROCEDURE nothing(IN a VARCHAR(255)) BEGIN SET @x = a; END//\n"
       "DELIMITER ;\nGRANT EXECUTE ON mail.* TO 'postfix'@'127.0.0.1';", db="mail")
with Petrel(t, start=False, workers=1) as p:
    common = "hosts = 127.0.0.1:%d\nuser = postfix\npassword = pf'pw\ndbname = mail\n" % db.port
    proc = p.write_file("proc.cf", common + "query = CALL lookup('%s')\n")
    twice = p.write_file("twice.cf", common + "query = CALL twice('%s')\n")
    nothing = p.write_file("nothing.cf", common + "query = CALL nothing('%s')\n")
    nothing_ok = p.write_file("nothing-ok.cf", common + "query = CALL nothing('%s')\nrequire_result_set = no\n")
    conf = dict(p.settings)
    conf.update({"modules": "mysql", "module_directory": MODULES, "mysql_timeout": "5s", "mysql_max_connections": "1",
                 "virtual_alias_domains": "my.test", "virtual_alias_maps": "mysql:" + proc,
                 "smtpd_recipient_restrictions": "check_recipient_access mysql:%s, check_recipient_access mysql:%s, "
                                                 "permit_mynetworks" % (nothing_ok, twice)})
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@my.test>"),
          "451 4.3.5 <sales@my.test>: Recipient address rejected: Server configuration error",
          "a procedure with two result sets that return data: a lookup error")
    conf["smtpd_recipient_restrictions"] = "check_recipient_access mysql:%s, permit_mynetworks" % nothing_ok
    p.write_main_cf(conf)
    c.close()
    p.stop()
    p.start()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    for n in range(3):
        t.is_(c.cmd("RCPT TO:<sales@my.test>"), "250 2.1.5 Ok",
              "CALL lookup('%%s') found, lookup %d on one connection (require_result_set = no: CALL nothing "
              "is not found)" % (n + 1))
    t.is_(c.cmd("RCPT TO:<old@my.test>"), "250 2.1.5 Ok", "a row the procedure returns")
    t.is_(c.cmd("RCPT TO:<none@my.test>"),
          "550 5.1.1 <none@my.test>: Recipient address rejected: User unknown in virtual alias table",
          "a key the procedure does not find")
    c.close()
    log = p.log()
    t.ok("query on" not in log and "out of sync" not in log, "no query failed (the status results were read)",
         log[-1500:])
    t.ok(p.wait_log("multiple result sets returning data are not supported") is not None,
         "the two result sets were logged")
    for cf, code, label in ((proc, 0, "found"), (twice, 2, "two result sets: a lookup error"),
                            (nothing, 2, "no result set: a lookup error"),
                            (nothing_ok, 1, "no result set, require_result_set = no: not found")):
        r = p.petrelctl("map", "query", "mysql:" + cf, "sales@my.test")
        t.ok(r.returncode == code, "petrelctl map query, CALL: " + label, "%d %s" % (r.returncode,
                                                                                    r.stdout + r.stderr))

with Petrel(t, start=False, workers=1) as p:
    cf = p.write_file("v.cf", "hosts = 127.0.0.1:%d\nuser = postfix\npassword = pf'pw\ndbname = mail\n"
                      "query = SELECT goto FROM alias WHERE address = '%%s'\n" % db.port)
    c = alias_session(p, MODULES, "mysql:" + cf, "my.test", mysql_timeout="2s")
    t.is_(c.cmd("RCPT TO:<sales@my.test>"), "250 2.1.5 Ok", "host:port without inet: works too")
    db.stop()
    t.is_(c.cmd("RCPT TO:<sales@my.test>"), "451 4.3.0 <sales@my.test>: Temporary lookup failure",
          "the database down: virtual_alias_maps answers 451 4.3.0, never User unknown")
    c.close()

t.done()
