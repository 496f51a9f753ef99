"""sender_bcc_maps and recipient_bcc_maps with a remote table (pgsql:, a private PostgreSQL
cluster on loopback) and with a local one (hash:): the BCC address found for the sender and for
each recipient is added to the queued copy with NOTIFY=NEVER, in Postfix's key order
(user+ext@domain, user@domain, the local part for a local domain, @domain; never a bare domain);
a message whose BCC query is held up in the database (it waits for an advisory lock the test
holds, so the order is decided by the test, not by timing) does not hold up another client's
whole transaction on the same (only) worker, and its pipelined replies keep their order; with
the database down the message is not accepted (Postfix's 451 4.3.0 and warning, for DATA and
BDAT), nothing is queued, and once the database is back it is accepted again. socketmap: (a
real socketmap server) is a pattern type: asked the full address only, and TEMP is a 451."""
import os
import re
import socket
import subprocess

from harness import Petrel, Tap, wait_for
from pglib import PgCluster
from socketmaplib import SocketmapServer, netstring
from tablelib import bundled_module_dir

t = Tap(timeout=300)
MODULES = bundled_module_dir("pgsql", "socketmap")
GATE = 4243   # the advisory lock a gated query waits for
OK_RE = r"^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$"
WRITE_ERROR = "451 4.3.0 Error: queue file write error"

pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pfpw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
pg.psql("CREATE TABLE sbcc(address text PRIMARY KEY, bcc text NOT NULL);"
        "INSERT INTO sbcc VALUES ('watched@example.org', 'sender-copy@archive.test'),"
        "('@watched.test', 'sender-domain-copy@archive.test');"
        "CREATE TABLE rbcc(address text PRIMARY KEY, bcc text NOT NULL);"
        "INSERT INTO rbcc VALUES ('alice@example.net', 'team-copy@archive.test'),"
        "('bob@example.net', 'team-copy@archive.test'),"            # the same copy: added once
        "('dave@example.net', 'dave-copy@archive.test'),"           # dave+ext@ finds it without the extension
        "('@catchall.test', 'catchall-copy@archive.test'),"         # Postfix's @domain key
        "('example.com', 'wrong@archive.test'),"                    # a bare domain is not a key of these maps
        "('user', 'local-copy@archive.test'),"                      # the local part, for a local domain only
        "('carol@example.net', 'carol-copy@archive.test');"
        # Waits until the test releases its lock, then answers its argument.
        "CREATE FUNCTION gate(text) RETURNS text AS $$ SELECT pg_advisory_lock_shared(%d); "
        "SELECT pg_advisory_unlock_shared(%d); SELECT $1 $$ LANGUAGE sql;"
        "GRANT SELECT ON sbcc, rbcc TO postfix" % (GATE, GATE), db="mail")


def queued(p, reply):
    """The recipients of the queued message, each with its NOTIFY (None: the default)."""
    m = re.match(OK_RE, reply or "")
    if not m:
        return None
    shown = p.petrelctl("queue", "show", m.group(1)).stdout
    rcpts, notify = [], None
    for line in shown.splitlines():
        if line.startswith("dsn_notify: "):
            notify = line.split(": ", 1)[1]
        elif line.startswith("recipient: "):
            rcpts.append((line.split(": ", 1)[1], notify))
            notify = None
    return rcpts


def send(p, sender, rcpts):
    return p.send_message(sender, rcpts, "Subject: bcc\r\n\r\nbody\r\n")


def key_order_checks(p, what, always=()):
    """always: always_bcc's copy, which comes first among the copies."""
    always = [(a, "NEVER") for a in always]
    r = send(p, "watched@example.org", ["x@remote.test"])
    t.is_(queued(p, r), [("x@remote.test", None)] + always + [("sender-copy@archive.test", "NEVER")],
          "%s: sender_bcc_maps: the sender's BCC address is added, NOTIFY=NEVER" % what)
    r = send(p, "someone@watched.test", ["x@remote.test"])
    t.is_(queued(p, r), [("x@remote.test", None)] + always + [("sender-domain-copy@archive.test", "NEVER")],
          "%s: sender_bcc_maps: @domain" % what)
    r = send(p, "nobody@example.org", ["x@remote.test", "y@example.com", "user@example.net"])
    t.is_(queued(p, r), [("x@remote.test", None), ("y@example.com", None), ("user@example.net", None)] + always,
          "%s: not found: no copy (a bare domain and a non-local domain's local part are no keys)" % what)
    r = send(p, "nobody@example.org", ["alice@example.net", "bob@example.net", "dave+ext@example.net",
                                       "zed@catchall.test", "user@petrel.test"])
    t.is_(queued(p, r), [("alice@example.net", None), ("bob@example.net", None), ("dave+ext@example.net", None),
                         ("zed@catchall.test", None), ("user@petrel.test", None)] + always +
          [("team-copy@archive.test", "NEVER"), ("dave-copy@archive.test", "NEVER"),
           ("catchall-copy@archive.test", "NEVER"), ("local-copy@archive.test", "NEVER")],
          "%s: recipient_bcc_maps: one copy per recipient (once each), without the extension, @domain, "
          "the local part of a local domain" % what)


def setup(p, bcc):
    conf = dict(p.settings)
    conf.update({"modules": "pgsql socketmap", "module_directory": MODULES, "pgsql_timeout": "60s",
                 "smtpd_reject_unlisted_recipient": "no", "recipient_delimiter": "+"})
    conf.update(bcc)
    p.write_main_cf(conf)
    p.start()


# ---- pgsql: found, not found, key order; a held-up query holds up nobody else ----
with Petrel(t, start=False, workers=1) as p:
    common = "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n" % pg.port
    sbcc = p.write_file("sbcc.cf", common + "query = SELECT bcc FROM sbcc WHERE address = '%s'\n", mode=0o640)
    rbcc = p.write_file("rbcc.cf", common + "query = SELECT CASE WHEN address = 'carol@example.net' THEN gate(bcc) "
                        "ELSE bcc END FROM rbcc WHERE address = '%s'\n", mode=0o640)
    setup(p, {"sender_bcc_maps": "pgsql:" + sbcc, "recipient_bcc_maps": "proxy:pgsql:" + rbcc})
    key_order_checks(p, "pgsql")

    holder = subprocess.Popen(p.command("psql", "-h", pg.dir, "-p", str(pg.port), "-U", "admin", "-d", "mail",
                                        "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd="/")   # the unprivileged user may not enter the build directory
    holder.stdin.write("SELECT pg_advisory_lock(%d);\n\\echo held\n" % GATE)
    holder.stdin.flush()
    t.is_(holder.stdout.readline().strip(), "", "the test holds the gate")   # the SELECT's empty result
    t.is_(holder.stdout.readline().strip(), "held", "(confirmed)")
    first = p.connect()
    first.ehlo()
    first.send(b"MAIL FROM:<someone@example.org>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n")   # pipelined
    t.is_(first.read_reply(), "250 2.1.0 Ok", "pipelined MAIL answered")
    t.is_(first.read_reply(), "250 2.1.5 Ok", "pipelined RCPT answered")
    gone = p.connect()   # a client that will leave while its lookup waits
    gone.ehlo()
    gone.send(b"MAIL FROM:<someone@example.org>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n")
    t.ok(wait_for(lambda: pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                                  db="mail").strip() == "2", timeout=30),
         "DATA waits: the recipient_bcc_maps queries of both are held up in the database")
    other = p.connect()   # the same (only) worker
    r = other.send_message("watched@example.org", ["alice@example.net"], "Subject: meanwhile\r\n\r\nx\r\n")
    other.close()
    t.is_(queued(p, r), [("alice@example.net", None), ("sender-copy@archive.test", "NEVER"),
                         ("team-copy@archive.test", "NEVER")],
          "another client's whole transaction, with its own BCC lookups, is served by the worker meanwhile")
    t.is_(pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", db="mail").strip(),
          "2", "while the first ones' queries still wait")
    gone.sock.shutdown(socket.SHUT_RDWR)
    gone.close()
    holder.stdin.write("SELECT pg_advisory_unlock(%d);\n\\q\n" % GATE)
    holder.stdin.flush()
    holder.wait(timeout=30)
    t.like(first.read_reply(), r"^354 ", "then DATA is answered")
    first.send(b"Subject: gated\r\n\r\nbody\r\n.\r\n")
    t.is_(queued(p, first.read_reply()), [("carol@example.net", None), ("carol-copy@archive.test", "NEVER")],
          "and the message is queued with its copy")
    first.close()
    r = send(p, "nobody@example.org", ["bob@example.net"])
    t.is_(queued(p, r), [("bob@example.net", None), ("team-copy@archive.test", "NEVER")],
          "after a client left while its lookup waited, the worker serves on")

    # ---- the database down: not accepted, nothing queued; then back ----
    before = set(p.queue_files())
    pg.stop()
    c = p.connect()
    t.is_(c.send_message("watched@example.org", ["x@remote.test"], "Subject: down\r\n\r\nx\r\n"), WRITE_ERROR,
          "sender_bcc_maps cannot answer: DATA gets Postfix's 451 4.3.0")
    t.ok(p.wait_log(r"warning: NOQUEUE: sender_bcc_maps map lookup problem -- message not accepted, "
                    r"try again later"), "logged as Postfix does", p.log()[-1500:])
    t.is_(c.cmd("RSET"), "250 2.0.0 Ok", "the session goes on")
    c.cmd("MAIL FROM:<>")
    c.cmd("RCPT TO:<x@remote.test>")
    c.send(b"BDAT 12 LAST\r\nSubject: x\r\n")
    t.is_(c.read_reply(), WRITE_ERROR, "recipient_bcc_maps cannot answer: BDAT gets 451 4.3.0 after its chunk")
    t.ok(p.wait_log(r"warning: NOQUEUE: recipient_bcc_maps map lookup problem -- message not accepted, "
                    r"try again later"), "logged as Postfix does", p.log()[-1500:])
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "in step with the client")
    c.close()
    t.is_(set(p.queue_files()), before, "nothing was queued without its copy")
    pg.start()
    # The pgsql module rests a failed host for a minute (as Postfix's
    # dict_pgsql does); a reload opens the tables afresh.
    p.petrelctl("reload")
    t.ok(wait_for(lambda: queued(p, send(p, "watched@example.org", ["x@remote.test"])) ==
                  [("x@remote.test", None), ("sender-copy@archive.test", "NEVER")], timeout=30),
         "the database back (and petreld reloaded): accepted with its copy")
    t.ok("panic" not in p.log() and "fatal" not in p.log(), "nothing went wrong in the worker", p.log()[-2000:])

# ---- local tables (hash:): the same answers, no waiting; always_bcc NOTIFY=NEVER too ----
with Petrel(t, start=False, workers=1) as p:
    src = p.write_file("sbcc", "watched@example.org sender-copy@archive.test\n"
                               "@watched.test sender-domain-copy@archive.test\n")
    rsrc = p.write_file("rbcc", "alice@example.net team-copy@archive.test\nbob@example.net team-copy@archive.test\n"
                                "dave@example.net dave-copy@archive.test\n@catchall.test catchall-copy@archive.test\n"
                                "example.com wrong@archive.test\nuser local-copy@archive.test\n")
    for f in (src, rsrc):
        r = p.petrelctl("map", "build", "hash:" + f)
        t.ok(r.returncode == 0, "petrelctl map build hash:%s" % os.path.basename(f), r.stderr)
    setup(p, {"sender_bcc_maps": "hash:" + src, "recipient_bcc_maps": "hash:" + rsrc,
              "always_bcc": "always@archive.test"})
    key_order_checks(p, "hash", always=["always@archive.test"])

# ---- socketmap: (a pattern type, as in Postfix: asked the full address only) ----
server = SocketmapServer({"sbcc": {b"watched@example.org": b"sender-copy@archive.test"},
                          "rbcc": {b"alice@example.net": b"team-copy@archive.test"}})
server.special[b"temp@example.org"] = (b"sbcc", netstring(b"TEMP resting"))
with Petrel(t, start=False, workers=1) as p:
    setup(p, {"sender_bcc_maps": "socketmap:inet:127.0.0.1:%d:sbcc" % server.port,
              "recipient_bcc_maps": "socketmap:inet:127.0.0.1:%d:rbcc" % server.port})
    r = send(p, "watched@example.org", ["alice@example.net", "alice+x@example.net"])
    t.is_(queued(p, r), [("alice@example.net", None), ("alice+x@example.net", None),
                         ("sender-copy@archive.test", "NEVER"), ("team-copy@archive.test", "NEVER")],
          "socketmap: the sender's and the recipient's copies")
    t.is_(sorted(server.seen("rbcc")), [b"alice+x@example.net", b"alice@example.net"],
          "socketmap: only the full addresses were asked (no partial keys for a pattern type)")
    c = p.connect()
    t.is_(c.send_message("temp@example.org", ["x@remote.test"], "Subject: temp\r\n\r\nx\r\n"), WRITE_ERROR,
          "socketmap answers TEMP: 451 4.3.0, not accepted")
    c.close()
server.stop()

pg.stop()
t.done()
