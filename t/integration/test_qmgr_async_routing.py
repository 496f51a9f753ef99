"""The queue manager's routing with pgsql: tables (a private PostgreSQL cluster on loopback):
transport_maps, virtual_alias_maps and virtual_mailbox_maps from the database route mail
correctly; a message whose virtual_mailbox_maps query is held up in the database (it waits for
an advisory lock the test holds, so the order is decided by the test, not by timing) does not
hold up another message, which is routed and delivered meanwhile; and with the database down a
message is deferred (never "User unknown", never bounced), then delivered once it is back."""
import os
import re
import subprocess

from harness import QUEUED, Petrel, Tap, maildir_messages, queue_id, wait_for
from pglib import PgCluster
from serverlib import Sink
from tablelib import bundled_module_dir

t = Tap(timeout=400)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
MODULES = bundled_module_dir("pgsql")
GATE = 4242   # the advisory lock a gated query waits for

sink = Sink(options=("-c",))   # the next hop transport_maps names
pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pfpw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
pg.psql("CREATE TABLE alias(address text PRIMARY KEY, goto text NOT NULL);"
        "INSERT INTO alias VALUES ('sales@pg.test', 'box@vmail.test');"
        "CREATE TABLE mailbox(address text PRIMARY KEY, maildir text NOT NULL);"
        "INSERT INTO mailbox VALUES ('box@vmail.test', 'box/'), ('gated@vmail.test', 'gated/');"
        "CREATE TABLE transport(domain text PRIMARY KEY, transport text NOT NULL);"
        "INSERT INTO transport VALUES ('routed.test', 'smtp:[127.0.0.1]:%d');"
        # Waits until the test releases its lock, then answers its argument.
        "CREATE FUNCTION gate(text) RETURNS text AS $$ SELECT pg_advisory_lock_shared(%d); "
        "SELECT pg_advisory_unlock_shared(%d); SELECT $1 $$ LANGUAGE sql;"
        "GRANT SELECT ON alias, mailbox, transport TO postfix" % (sink.port, GATE, GATE), db="mail")
LIST = 30   # recipients of one message, each with its own alias and mailbox in the database
pg.psql("INSERT INTO alias SELECT 'list' || i || '@pg.test', 'm' || i || '@vmail.test' FROM generate_series(1, %d) i;"
        "INSERT INTO mailbox SELECT 'm' || i || '@vmail.test', 'm' || i || '/' FROM generate_series(1, %d) i"
        % (LIST, LIST), db="mail")


def log_index(p, pattern):
    """Where pattern first matches in the log, or None."""
    m = re.search(pattern, p.log(), re.M)
    return m.start() if m else None


with Petrel(t, extra_services=QMGR, start=False, workers=1) as p:
    mail = p.make_dir()
    common = "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n" % pg.port
    valias = p.write_file("valias.cf", common + "query = SELECT goto FROM alias WHERE address = '%s'\n", mode=0o640)
    mailbox = p.write_file("mailbox.cf", common + "query = SELECT CASE WHEN address = 'gated@vmail.test' THEN "
                           "gate(maildir) ELSE maildir END FROM mailbox WHERE address = '%s'\n", mode=0o640)
    transport = p.write_file("transport.cf", common + "query = SELECT transport FROM transport WHERE domain = '%s'\n",
                             mode=0o640)
    conf = dict(p.settings)
    conf.update({"modules": "pgsql", "module_directory": MODULES, "pgsql_timeout": "120s",
                 "virtual_alias_domains": "pg.test", "virtual_alias_maps": "pgsql:" + valias,
                 "virtual_mailbox_domains": "vmail.test", "virtual_mailbox_base": mail,
                 "virtual_mailbox_maps": "pgsql:" + mailbox,
                 "relay_domains": "routed.test", "transport_maps": "pgsql:" + transport,
                 # the queue manager's lookups are under test, not smtpd's
                 "smtpd_reject_unlisted_recipient": "no",
                 "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s"})
    p.write_main_cf(conf)
    p.start()
    box, gated = os.path.join(mail, "box"), os.path.join(mail, "gated")

    # (a) routing from the database
    c = p.connect()
    first = queue_id(c.send_message("sender@example.org", ["sales@pg.test", "x@routed.test"],
                                    "Subject: routed by pgsql\r\n\r\nx\r\n"), QUEUED)
    c.close()
    t.ok(first is not None, "a message to a pgsql alias and a pgsql transport is queued")
    t.ok(wait_for(lambda: len(maildir_messages(box)) == 1, timeout=30),
         "virtual_alias_maps and virtual_mailbox_maps in pgsql: delivered to the mailbox the database names")
    t.ok(p.wait_log(r"%s: to=<x@routed\.test>.*relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d.*status=sent" %
                    (first, sink.port), timeout=30),
         "transport_maps in pgsql: relayed to the next hop the database names", p.log()[-2000:])
    t.ok(p.wait_log(r"%s: routed after \d+ rounds? of table lookups" % first),
         "the queue manager routed it with asynchronous lookups", p.log()[-2000:])

    # (a2) many recipients: their lookups run together, not one recipient after another
    c = p.connect()
    many = queue_id(c.send_message("sender@example.org", ["list%d@pg.test" % i for i in range(1, LIST + 1)],
                                   "Subject: to a list\r\n\r\nx\r\n"), QUEUED)
    c.close()
    t.ok(wait_for(lambda: all(len(maildir_messages(os.path.join(mail, "m%d" % i))) == 1
                              for i in range(1, LIST + 1)), timeout=60),
         "%d recipients, each routed through a pgsql alias to a pgsql mailbox, all delivered" % LIST)
    m = p.wait_log(r"%s: routed after (\d+) rounds? of table lookups" % many)
    t.ok(m and int(m.group(1)) < 10,
         "in as many rounds as one recipient needs (%s), not one round per recipient" % (m and m.group(1)))

    # (b) a lookup held up in the database does not hold up another message
    holder = subprocess.Popen(p.command("psql", "-h", pg.dir, "-p", str(pg.port), "-U", "admin", "-d", "mail",
                                        "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd="/")   # the unprivileged user may not enter the build directory (CI's is 0700)
    holder.stdin.write("SELECT pg_advisory_lock(%d);\n\\echo held\n" % GATE)
    holder.stdin.flush()
    t.is_(holder.stdout.readline().strip(), "", "the test holds the gate")   # the SELECT's empty result
    t.is_(holder.stdout.readline().strip(), "held", "(confirmed)")
    c = p.connect()
    slow = queue_id(c.send_message("sender@example.org", ["gated@vmail.test"], "Subject: gated\r\n\r\nx\r\n"), QUEUED)
    c.close()
    t.ok(wait_for(lambda: pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                                  db="mail").strip() == "1", timeout=30),
         "its virtual_mailbox_maps query is waiting in the database")
    c = p.connect()
    fast = queue_id(c.send_message("sender@example.org", ["y@routed.test"], "Subject: not gated\r\n\r\nx\r\n"), QUEUED)
    c.close()
    t.ok(p.wait_log(r"%s: to=<y@routed\.test>.*status=sent" % fast, timeout=30),
         "another message is routed (pgsql transport_maps) and delivered meanwhile", p.log()[-3000:])
    t.ok(log_index(p, r"^.*%s: waiting for table lookups" % slow) is not None,
         "the first one was waiting for its lookups (logged)")
    t.is_(len(maildir_messages(gated)), 0, "and is not delivered while its query waits")
    holder.stdin.write("SELECT pg_advisory_unlock(%d);\n\\q\n" % GATE)
    holder.stdin.close()
    holder.wait(timeout=30)
    t.ok(wait_for(lambda: len(maildir_messages(gated)) == 1, timeout=30),
         "once the database answers, it is delivered to the mailbox the answer names")
    # The mailbox file comes before the delivery agent's log line: wait for the line, then compare
    p.wait_log(r"%s: to=<gated@vmail\.test>.*status=sent" % slow, timeout=30)
    i_fast = log_index(p, r"%s: to=<y@routed\.test>.*status=sent" % fast)
    i_slow = log_index(p, r"%s: to=<gated@vmail\.test>.*status=sent" % slow)
    t.ok(i_fast is not None and i_slow is not None and i_fast < i_slow,
         "the log shows the later message delivered first", p.log()[-3000:])

    # (c) the database down: deferred, never "not found", then delivered when it is back
    pg.stop()
    c = p.connect()
    down = queue_id(c.send_message("sender@example.org", ["sales@pg.test"], "Subject: db down\r\n\r\nx\r\n"), QUEUED)
    c.close()
    t.ok(p.wait_log(r"%s: to=<sales@pg\.test>.*status=deferred \(virtual_alias_maps lookup failure\)" % down,
                    timeout=60),
         "the database down: the recipient is deferred with a lookup failure", p.log()[-3000:])
    t.ok(log_index(p, r"%s: .*status=bounced" % down) is None and
         log_index(p, r"%s: .*User unknown" % down) is None, "never bounced, never \"User unknown\"")
    pg.start()
    # A host that failed is left alone for a minute (as Postfix's pgsql client does).
    t.ok(wait_for(lambda: len(maildir_messages(box)) == 2, timeout=150),
         "the database back: the deferred message is delivered", p.log()[-3000:])
    t.ok(p.wait_log(r"%s: to=<box@vmail\.test>, orig_to=<sales@pg\.test>.*status=sent" % down) or
         p.wait_log(r"%s: to=<box@vmail\.test>.*status=sent" % down), "(logged as sent)", p.log()[-3000:])

pg.stop()
sink.stop()
t.done()
