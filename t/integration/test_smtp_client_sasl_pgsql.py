"""smtp_sasl_password_maps in PostgreSQL (a private cluster on loopback): the relayhost's
password comes from the database and is used for AUTH (a relayhost that requires it: a second
petreld whose AUTH is checked by a private Dovecot auth service); while the query is held up in
the database (it waits for an advisory lock the test holds, so the order is decided by the
test, not by timing), a delivery to another next hop (Postfix's smtp-sink) completes, and the
first one is sent once the database answers. The socketmap side, the server down and the TLS
policy are in test_smtp_client_tables_async.py."""
import re
import subprocess

from harness import Petrel, Tap, wait_for
from pglib import PgCluster
from dovecotlib import require_dovecot
from sasllib import QMGR, DovecotAuth, auth_relay, submit_queued as submit
from serverlib import Sink
from tablelib import bundled_module_dir

t = Tap(timeout=400)
PASSWORD = "Relay-Pw-77"
GATE = 4343   # the advisory lock a gated query waits for

require_dovecot(t)


dc = DovecotAuth({"relayuser": PASSWORD})
dc.start()
sink = Sink(options=("-a", "-c"))   # no AUTH: another next hop
pg = PgCluster()
relay = a = holder = None
try:
    relay = auth_relay(t, dc, bundled_module_dir("sasl"), tls_auth_only=True)
    RELAY = "[127.0.0.1]:%d" % relay.port

    pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pfpw'")
    pg.psql("CREATE DATABASE mail OWNER postfix")
    pg.psql("CREATE TABLE sasl(key text PRIMARY KEY, value text NOT NULL, gated boolean NOT NULL DEFAULT false);"
            "INSERT INTO sasl VALUES ('%s', 'relayuser:%s', false), ('gated@petrel.test', 'relayuser:%s', true);"
            # Waits until the test releases its lock, then answers its argument.
            "CREATE FUNCTION gate(text) RETURNS text AS $$ SELECT pg_advisory_lock_shared(%d); "
            "SELECT pg_advisory_unlock_shared(%d); SELECT $1 $$ LANGUAGE sql;"
            "GRANT SELECT ON sasl TO postfix" % (RELAY, PASSWORD, PASSWORD, GATE, GATE), db="mail")

    a = Petrel(t, start=False, master_cf=None, extra_services=QMGR)
    cf = a.write_file("sasl.cf", "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n"
                      "query = SELECT CASE WHEN gated THEN gate(value) ELSE value END FROM sasl WHERE key = '%%s'\n"
                      % pg.port, mode=0o640)
    a.write_main_cf(dict(a.settings, **{
        "modules": "pgsql", "module_directory": bundled_module_dir("pgsql"), "pgsql_timeout": "120s",
        "relayhost": RELAY, "transport_maps": "inline:{ {other.test = smtp:[127.0.0.1]:%d} }" % sink.port,
        "smtp_sasl_auth_enable": "yes", "smtp_sender_dependent_authentication": "yes",
        "smtp_sasl_password_maps": "pgsql:" + cf, "smtp_tls_security_level": "may",
        "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s"}))
    a.start()

    def sent(qid, rcpt, timeout=30):
        return a.wait_log(r"%s: to=<%s>, relay=\S+, .*status=sent" % (qid, re.escape(rcpt)), timeout=timeout)

    qid = submit(a, "me@petrel.test", "someone@far.example", "pgsql password")
    t.ok(sent(qid, "someone@far.example"), "sent through the relayhost", a.log()[-2000:])
    t.ok(relay.wait_log(r"sasl_method=\S+, sasl_username=relayuser", timeout=30),
         "with the relayhost's password from PostgreSQL")

    holder = subprocess.Popen(a.command("psql", "-h", pg.dir, "-p", str(pg.port), "-U", "admin", "-d", "mail",
                                        "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd="/")
    holder.stdin.write("SELECT pg_advisory_lock(%d);\n\\echo held\n" % GATE)
    holder.stdin.flush()
    t.is_(holder.stdout.readline().strip(), "", "the test holds the gate")
    t.is_(holder.stdout.readline().strip(), "held", "(confirmed)")
    gated = submit(a, "gated@petrel.test", "someone@far.example", "gated password")
    t.ok(wait_for(lambda: pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                                  db="mail").strip() == "1", timeout=30),
         "its smtp_sasl_password_maps query is waiting in the database")
    fast = submit(a, "me@petrel.test", "x@other.test", "meanwhile")
    t.ok(sent(fast, "x@other.test"), "a delivery to another next hop completes meanwhile", a.log()[-2000:])
    t.ok(a.wait_log(r"%s: to=<someone@far\.example>.*status=" % gated, timeout=1) is None,
         "while the first one waits for its password")
    holder.stdin.write("SELECT pg_advisory_unlock(%d);\n\\q\n" % GATE)
    holder.stdin.close()
    holder.wait(timeout=30)
    holder = None
    t.ok(sent(gated, "someone@far.example"), "the database answers: sent", a.log()[-2000:])
    i_fast = a.log().find("%s: to=<x@other.test>" % fast)
    i_gated = a.log().find("%s: to=<someone@far.example>" % gated)
    t.ok(0 <= i_fast < i_gated, "the log shows the later delivery first")
finally:
    if holder:
        holder.kill()
        holder.wait()
    for x in (a, relay):
        if x:
            x.__exit__(None, None, None)
    pg.stop()
    sink.stop()
    dc.cleanup()
t.done()
