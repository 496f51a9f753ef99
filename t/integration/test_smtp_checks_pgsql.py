"""smtp_header_checks and smtp_body_checks in pgsql: tables (a private PostgreSQL cluster on
loopback): the SMTP client's actions from the database applied exactly in what the next hop (our
own SMTP sink) gets; a header lookup held up in the database (its query waits for an advisory lock
the test holds, so the order is decided by the test, not by timing) while another message to the
same next hop is delivered; a long body; the database down (the delivery deferred with Postfix's
"4.3.0 local data error while talking to HOST[ADDR]", the next hop gets nothing), then delivered
once it is back."""
import re
import subprocess

from harness import Petrel, Tap, wait_for
from pglib import PgCluster
from smtpfilter import SmtpFilter
from tablelib import bundled_module_dir

t = Tap(timeout=300)
MODULES = bundled_module_dir("pgsql")
QMGR = "qmgr unix n - n 300 1 qmgr\n"
GATE = 4353   # the advisory lock the gated header query waits for

pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pfpw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
pg.psql("CREATE TABLE hdr(line text PRIMARY KEY, action text NOT NULL);"
        "INSERT INTO hdr VALUES ('Subject: replace pg', 'REPLACE Subject: replaced by the database'),"
        "('X-Secret: 42', 'IGNORE'), ('X-Tag: prepend', 'PREPEND X-From-Pg: yes'),"
        "('Subject: gated pg', 'REPLACE Subject: opened by the database');"
        "CREATE TABLE body(line text PRIMARY KEY, action text NOT NULL);"
        "INSERT INTO body VALUES ('password: hunter2', 'REPLACE password: [removed]'),"
        "('drop this line', 'IGNORE'), ('row 250', 'REPLACE row 250 from the database'), ('row 499', 'IGNORE');"
        "CREATE FUNCTION gate(text, int) RETURNS text AS $$ SELECT pg_advisory_lock_shared($2); "
        "SELECT pg_advisory_unlock_shared($2); SELECT $1 $$ LANGUAGE sql;"
        "GRANT SELECT ON hdr, body TO postfix", db="mail")


def waiting_on(pg):
    """The advisory locks queries wait for."""
    return pg.psql("SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", db="mail").split()


sink = SmtpFilter()
with Petrel(t, main_cf={}, start=False) as p:
    common = "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n" % pg.port
    hdr = p.write_file("hdr.cf", common + "query = SELECT CASE WHEN line = 'Subject: gated pg' THEN gate(action, %d) "
                       "ELSE action END FROM hdr WHERE line = '%%s'\n" % GATE, mode=0o640)
    body = p.write_file("body.cf", common + "query = SELECT action FROM body WHERE line = '%s'\n", mode=0o640)
    conf = dict(p.settings)
    conf.update({
        "modules": "pgsql", "module_directory": MODULES, "pgsql_timeout": "120s",
        "relay_domains": "remote.test",
        "transport_maps": "inline:{ {remote.test = smtp:[127.0.0.1]:%d} }" % sink.port,
        "smtp_header_checks": "pgsql:" + hdr, "smtp_body_checks": "pgsql:" + body,
        "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s",
    })
    p.write_main_cf(conf)
    p.master_cf += "smtp unix - - n - - smtp\n" + QMGR
    with open(p.conf + "/master.cf", "w") as f:
        f.write(p.master_cf)
    p._chown()
    p.start()

    def submit(rcpt, text):
        c = p.connect()
        r = c.send_message("sender@example.org", [rcpt], text)   # the harness ends the last line
        c.close()
        m = re.search(r"queued as (\S+)", r)
        return m.group(1) if m else None

    def data_with(tag):
        return [tx["data"] for tx in sink.transactions() if tx["data"] and tag in tx["data"]]

    def got(tag, timeout=30):
        found = wait_for(lambda: data_with(tag), timeout=timeout)
        return found[0] if found else b""

    def sent(qid, rcpt, timeout=30):
        return p.wait_log(r"%s: to=<%s>, relay=\S+, .*status=sent" % (qid, re.escape(rcpt)), timeout=timeout)

    # ---- the actions from the database, applied exactly ----
    qid = submit("a@remote.test", "Subject: replace pg\r\nX-Secret: 42\r\nX-Tag: prepend\r\nX-Keep: 1\r\n\r\n"
                 "first\r\npassword: hunter2\r\ndrop this line\r\nbody pg actions")
    data = got(b"body pg actions")
    t.ok(sent(qid, "a@remote.test"), "sent", p.log()[-2000:])
    t.is_(data[data.find(b"Subject: replaced"):],
          b"Subject: replaced by the database\r\nX-From-Pg: yes\r\nX-Tag: prepend\r\nX-Keep: 1\r\n\r\n"
          b"first\r\npassword: [removed]\r\nbody pg actions\r\n",
          "REPLACE, IGNORE, PREPEND from pgsql: exactly what the next hop got")

    # ---- a header query held in the database ----
    holder = subprocess.Popen(p.command("psql", "-h", pg.dir, "-p", str(pg.port), "-U", "admin", "-d", "mail",
                                        "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd="/")
    holder.stdin.write("SELECT pg_advisory_lock(%d);\n\\echo held\n" % GATE)
    holder.stdin.flush()
    holder.stdout.readline()
    t.is_(holder.stdout.readline().strip(), "held", "the test holds the gate")
    held = submit("h@remote.test", "Subject: gated pg\r\nX-After: 1\r\n\r\nheld body\r\npassword: hunter2")
    t.ok(wait_for(lambda: waiting_on(pg) == [str(GATE)], timeout=30),
         "the first message's smtp_header_checks query waits in the database")
    same = submit("s@remote.test", "Subject: meanwhile\r\nX-Secret: 42\r\n\r\nbody meanwhile")
    data = got(b"body meanwhile")
    t.ok(sent(same, "s@remote.test"), "another message to the same next hop is delivered meanwhile",
         p.log()[-2000:])
    t.ok(b"X-Secret" not in data, "(with its checks from the same database applied)")
    t.is_(waiting_on(pg), [str(GATE)], "the held query still waits")
    t.ok(not data_with(b"held body"), "and the next hop has nothing of the first message's content")
    holder.stdin.write("SELECT pg_advisory_unlock(%d);\n\\q\n" % GATE)
    holder.stdin.close()
    holder.wait(timeout=30)
    data = got(b"held body")
    t.ok(sent(held, "h@remote.test"), "the database answers: the held delivery goes on and is sent")
    t.ok(data.endswith(b"Subject: opened by the database\r\nX-After: 1\r\n\r\nheld body\r\npassword: [removed]\r\n"),
         "with the late answer applied and its content in order", data[-200:])

    # ---- a long body ----
    rows = ["row %d" % i for i in range(500)]
    qid = submit("long@remote.test", "Subject: long pg\r\n\r\n" + "\r\n".join(rows) + "\r\nend of long pg")
    data = got(b"end of long pg", timeout=60)
    t.ok(sent(qid, "long@remote.test"), "a 500-line body through pgsql smtp_body_checks is sent")
    want = ["row 250 from the database" if r == "row 250" else r for r in rows if r != "row 499"]
    t.is_(data[data.index(b"\r\n\r\n") + 4:], ("\r\n".join(want) + "\r\nend of long pg\r\n").encode(),
          "every row in order, REPLACE and IGNORE where the database said")
    m = re.search(r"%s: to=<long@remote\.test>, .*delays=([\d./]+)" % qid, p.log())
    t.diag("501 body lines through pgsql smtp_body_checks: delays=%s" % (m.group(1) if m else "?"))

    # ---- the database down ----
    pg.stop()
    down = submit("d@remote.test", "Subject: db down\r\n\r\nbody db down")
    t.ok(p.wait_log(r"%s: to=<d@remote\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*dsn=4\.3\.0, "
                    r"status=deferred \(local data error while talking to 127\.0\.0\.1\[127\.0\.0\.1\]\)"
                    % (down, sink.port), timeout=60),
         "the database down: deferred 4.3.0 \"local data error while talking to HOST[ADDR]\" (Postfix)",
         p.log()[-2000:])
    t.ok(p.wait_log(r"warning: %s: smtp header checks lookup error" % down, timeout=30), "with Postfix's warning")
    t.ok(not data_with(b"body db down"), "the next hop got nothing")
    pg.start()
    t.ok(sent(down, "d@remote.test", timeout=90), "the database back: delivered", p.log()[-2000:])
    t.ok("panic" not in p.log() and "fatal" not in p.log(), "nothing went wrong in the queue manager",
         p.log()[-2000:])

sink.stop()
t.done()
