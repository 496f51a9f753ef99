"""The content stage with pgsql: tables (a private PostgreSQL cluster on loopback):
header_checks and body_checks from the database (REJECT, found, not found), header address
rewriting from a pgsql sender_canonical_maps (a From: header rewritten), a header lookup and a
canonical lookup held up in the database (they wait for an advisory lock the test holds, so the
order is decided by the test, not by timing) while another session of the same (only) worker
completes whole transactions, a canonical table that fails (the message deferred, as Postfix's
cleanup does) and the database down (451 4.3.0, nothing queued)."""
import subprocess

from harness import Petrel, Tap, queue_id, wait_for
from pglib import PgCluster
from tablelib import bundled_module_dir

t = Tap(timeout=300)
MODULES = bundled_module_dir("pgsql")
GATE = 4343   # the advisory lock the gated header query waits for
GATE2 = 4344  # and the gated canonical query

pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pfpw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
pg.psql("CREATE TABLE hdr(line text PRIMARY KEY, action text NOT NULL);"
        "INSERT INTO hdr VALUES ('subject: reject pg', 'REJECT 5.7.1 refused by the database'),"
        "('subject: prepend pg', 'PREPEND X-From-Pg: yes'), ('subject: gated pg', 'DUNNO');"
        "CREATE TABLE body(line text PRIMARY KEY, action text NOT NULL);"
        "INSERT INTO body VALUES ('bad pg line', 'REJECT 5.7.2 bad line from the database');"
        "CREATE TABLE canon(address text PRIMARY KEY, goto text NOT NULL);"
        "INSERT INTO canon VALUES ('old@pg.test', 'new@pg.test'), ('gated@pg.test', 'opened@pg.test');"
        "CREATE FUNCTION gate(text, int) RETURNS text AS $$ SELECT pg_advisory_lock_shared($2); "
        "SELECT pg_advisory_unlock_shared($2); SELECT $1 $$ LANGUAGE sql;"
        "GRANT SELECT ON hdr, body, canon TO postfix", db="mail")


def waiting_on(pg):
    """The advisory locks queries wait for."""
    return pg.psql("SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", db="mail").split()


with Petrel(t, start=False, workers=1) as p:
    common = "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n" % pg.port
    hdr = p.write_file("hdr.cf", common + "query = SELECT CASE WHEN line = 'subject: gated pg' THEN gate(action, %d) "
                       "ELSE action END FROM hdr WHERE line = lower('%%s')\n" % GATE, mode=0o640)
    body = p.write_file("body.cf", common + "query = SELECT action FROM body WHERE line = '%s'\n", mode=0o640)
    canon = p.write_file("canon.cf", common + "query = SELECT CASE WHEN address = 'gated@pg.test' THEN gate(goto, %d) "
                         "WHEN '%%s' = 'broken@pg.test' THEN (1/0)::text ELSE goto END FROM canon "
                         "WHERE address = '%%s' OR ('%%s' = 'broken@pg.test' AND address = 'old@pg.test')\n" % GATE2,
                         mode=0o640)
    conf = dict(p.settings)
    conf.update({"modules": "pgsql", "module_directory": MODULES, "pgsql_timeout": "120s",
                 "header_checks": "pgsql:" + hdr, "body_checks": "pgsql:" + body,
                 "sender_canonical_maps": "pgsql:" + canon})
    p.write_main_cf(conf)
    p.start()

    def send(text):
        return p.send_message("sender@example.org", ["u@example.org"], text)

    r = send("Subject: nothing\r\nFrom: Someone <someone@pg.test>\r\n\r\nplain\r\n")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "nothing in the database: queued")
    t.is_(send("Subject: reject pg\r\n\r\nbody\r\n"), "550 5.7.1 refused by the database",
          "header_checks in pgsql: REJECT")
    t.is_(send("Subject: x\r\n\r\nfirst\r\nbad pg line\r\n"), "550 5.7.2 bad line from the database",
          "body_checks in pgsql: REJECT")
    r = send("Subject: prepend pg\r\n\r\nbody\r\n")
    t.ok(b"X-From-Pg: yes\r\nSubject: prepend pg\r\n" in p.queued_bytes(queue_id(r)), "header_checks in pgsql: PREPEND")
    r = send("Subject: canonical\r\nFrom: Old Name <old@pg.test>\r\nTo: u@example.org\r\n\r\nbody\r\n")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "a From: header whose address is in sender_canonical_maps")
    text = p.queued_bytes(queue_id(r))
    t.ok(b"From: Old Name <new@pg.test>\r\n" in text, "is rewritten from the database", text[:600])

    # Lookups held up in the database: a header check, then a canonical rewrite.
    holder = subprocess.Popen(p.command("psql", "-h", pg.dir, "-p", str(pg.port), "-U", "admin", "-d", "mail",
                                        "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd="/")
    holder.stdin.write("SELECT pg_advisory_lock(%d), pg_advisory_lock(%d);\n\\echo held\n" % (GATE, GATE2))
    holder.stdin.flush()
    holder.stdout.readline()
    t.is_(holder.stdout.readline().strip(), "held", "the test holds the gate")
    slow = p.connect(timeout=60)
    slow.ehlo("slow.test")
    slow.cmd("MAIL FROM:<sender@example.org>")
    slow.cmd("RCPT TO:<u@example.org>")
    slow.cmd("DATA")
    slow.send(b"Subject: gated pg\r\nFrom: <gated@pg.test>\r\n\r\nbody\r\n.\r\n")
    t.ok(wait_for(lambda: waiting_on(pg) == [str(GATE)], timeout=30), "a header_checks query waits in the database")
    t.like(send("Subject: meanwhile\r\nFrom: <old@pg.test>\r\n\r\nx\r\n"), r"^250 2\.0\.0 Ok: queued as \w+",
           "another session of the same worker completes a transaction meanwhile (checks and rewriting in pgsql)")
    holder.stdin.write("SELECT pg_advisory_unlock(%d);\n" % GATE)
    holder.stdin.flush()
    t.ok(wait_for(lambda: waiting_on(pg) == [str(GATE2)], timeout=30),
         "then, its header answered, its From: canonical query waits in the database")
    t.like(send("Subject: meanwhile 2\r\n\r\nx\r\n"), r"^250 2\.0\.0 Ok: queued as \w+",
           "another transaction completes while the canonical query waits")
    holder.stdin.write("SELECT pg_advisory_unlock(%d);\n\\q\n" % GATE2)
    holder.stdin.close()
    holder.wait(timeout=30)
    r = slow.read_reply()
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "once the database answers, the waiting message is queued")
    t.ok(b"From: <opened@pg.test>\r\n" in p.queued_bytes(queue_id(r)), "with its From: rewritten by the late answer")
    slow.close()

    # A canonical table that fails: Postfix's cleanup defers the message.
    before = len(p.queue_files())
    t.is_(send("Subject: x\r\nFrom: <broken@pg.test>\r\n\r\nbody\r\n"), "451 4.3.0 Error: queue file write error",
          "sender_canonical_maps fails for a From: address: 451 4.3.0")
    t.ok(p.wait_log(r"warning: \w+: sender_canonical_maps map lookup problem for broken@pg\.test -- message not "
                    r"accepted, try again later"), "with Postfix's warning", p.log()[-3000:])

    # The database down.
    pg.stop()
    t.is_(send("Subject: db down\r\n\r\nbody\r\n"), "451 4.3.0 Error: queue file write error",
          "the database is down: 451 4.3.0")
    t.ok(p.wait_log(r"warning: \w+: header_checks map lookup problem -- message not accepted, try again later"),
         "with Postfix's warning")
    t.is_(len(p.queue_files()), before, "nothing was queued for either")
    c = p.connect()
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "and the worker serves on")
    c.close()
    t.ok("panic" not in p.log() and "fatal" not in p.log(), "nothing went wrong in the worker", p.log()[-2000:])

t.done()
