"""pgsql: and mysql: tables whose server accepts the connection and never says a word (a
loopback listener that reads and stays silent): each lookup is bounded by TYPE_timeout from
the moment it is asked (modules/common/sql_lookups.c), so RCPT answers 451 4.3.0, never "User
unknown", and the log says "no answer within 1s" for the key. With TYPE_max_connections = 1,
two sessions asking at once: one lookup is on the connection, the other waits in the FIFO, and
both are answered 451 when their time is up (the connection of the first is closed, the
second's taken off the FIFO or off the next connection)."""
import threading
import time

from harness import Petrel, Tap
from serverlib import Blackhole
from tablelib import bundled_module_dir

t = Tap(timeout=180)
MODULES = bundled_module_dir("pgsql", "mysql")
DEFER = "451 4.3.0 <%s>: Temporary lookup failure"


class SilentServer(Blackhole):
    """A Blackhole on 127.0.0.1:port that reads what comes and never answers."""

    def session(self, conn):
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass


def rcpt(p, address, out):
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    started = time.time()
    out[address] = (c.cmd("RCPT TO:<%s>" % address), time.time() - started)
    c.close()


for kind in ("pgsql", "mysql"):
    server = SilentServer()
    with Petrel(t, start=False, workers=1) as p:
        cf = p.write_file(kind + ".cf", "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = secret\n"
                          "dbname = mail\nquery = SELECT goto FROM alias WHERE address = '%%s'\n" % server.port)
        conf = dict(p.settings)
        conf.update({"modules": kind, "module_directory": MODULES, kind + "_timeout": "1s",
                     kind + "_max_connections": "1", "virtual_alias_domains": "my.test",
                     "virtual_alias_maps": kind + ":" + cf})
        p.write_main_cf(conf)
        p.start()
        got = {}
        rcpt(p, "one@my.test", got)
        reply, took = got["one@my.test"]
        t.is_(reply, DEFER % "one@my.test", "%s: a server that never answers: 451 4.3.0, never User unknown" % kind)
        t.ok(0.8 <= took < 15, "%s: the lookup is answered when %s_timeout is up (%.1f s)" % (kind, kind, took))
        t.ok(p.wait_log(r"%s:%s: no answer within 1s for \"one@my\.test\"" % (kind, cf)),
             "%s: the timeout is logged with the file and the key" % kind, p.log()[-1500:])
        t.ok(len(server.conns) >= 1, "%s: the server was connected to (%d)" % (kind, len(server.conns)))

        # Two at once with one connection allowed: one waits in the FIFO.
        got = {}
        threads = [threading.Thread(target=rcpt, args=(p, a, got)) for a in ("two@my.test", "three@my.test")]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        for a in ("two@my.test", "three@my.test"):
            t.is_(got.get(a, (None, 0))[0], DEFER % a, "%s: two lookups at once on one connection: %s gets 451" % (kind, a))
            t.ok(p.wait_log(r"%s:%s: no answer within 1s for \"%s\"" % (kind, cf, a.replace(".", r"\."))),
                 "%s: and its timeout is logged" % kind, p.log()[-1500:])
        t.ok("panic" not in p.log() and "fatal" not in p.log(), "%s: nothing went wrong in the worker" % kind,
             p.log()[-1500:])
    server.close()

t.done()
