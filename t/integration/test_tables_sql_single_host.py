"""mysql: and pgsql: tables whose hosts name one server (perhaps a load balancer): as Postfix
3.10+, a single failed connection is retried at once instead of leaving the table without a
server for retry_interval. A loopback proxy in front of a private MariaDB and a private
PostgreSQL closes the first connection it accepts and forwards the rest: the lookup is found
all the same (the asynchronous client at RCPT and the blocking one, petrelctl map query), and
the failure is logged."""
import re
import socket
import threading

from harness import Petrel, Tap, free_port
from mysqllib import MariaDB
from pglib import PgCluster
from serverlib import pump
from tablelib import bundled_module_dir

t = Tap(timeout=300)


class DropFirstProxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:target; every connection in drop (by
    its number, from 1) is closed at once instead."""

    def __init__(self, target, drop):
        self.target, self.drop, self.accepted = target, set(drop), 0
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted in self.drop:
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def close(self):
        self.sock.close()


def check(kind, module, server_port, setup):
    # Connection 1 (the worker's first) and 3 (petrelctl's first; 2 served the worker)
    # are dropped.
    proxy = DropFirstProxy(server_port, drop=(1, 3))
    with Petrel(t, start=False, workers=1) as p:
        cf = p.write_file("%s.cf" % kind, "hosts = 127.0.0.1:%d\n%s" % (proxy.port, setup), mode=0o640)
        conf = dict(p.settings)
        conf.update({"modules": module, "module_directory": bundled_module_dir(module), module + "_timeout": "5s",
                     "virtual_alias_domains": "one.test", "virtual_alias_maps": "%s:%s" % (kind, cf)})
        p.write_main_cf(conf)
        p.start()
        c = p.connect()
        c.ehlo("client.test")
        c.cmd("MAIL FROM:<sender@example.org>")
        t.is_(c.cmd("RCPT TO:<sales@one.test>"), "250 2.1.5 Ok",
              "%s: the one server's first connection fails, the lookup is retried at once and found" % kind)
        c.close()
        t.ok(p.wait_log(re.escape("%s:%s: connect to 127.0.0.1:%d" % (kind, cf, proxy.port))) is not None,
             "%s: the failure is logged" % kind, p.log()[-1500:])
        r = p.petrelctl("map", "query", "%s:%s" % (kind, cf), "sales@one.test")
        t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test"),
             "%s: the same in the blocking client (petrelctl map query)" % kind, r.stdout + r.stderr)
    proxy.close()


db = MariaDB()
db.sql("CREATE DATABASE mail; CREATE USER 'postfix'@'127.0.0.1' IDENTIFIED BY 'pfpw';"
       "GRANT SELECT ON mail.* TO 'postfix'@'127.0.0.1';")
db.sql("CREATE TABLE alias(address VARCHAR(255) PRIMARY KEY, goto TEXT NOT NULL);"
       "INSERT INTO alias VALUES ('sales@one.test', 'box@vmail.test');", db="mail")
check("mysql", "mysql", db.port, "user = postfix\npassword = pfpw\ndbname = mail\n"
      "query = SELECT goto FROM alias WHERE address = '%s'\n")
db.stop()

pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pfpw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
pg.psql("CREATE TABLE alias(address text PRIMARY KEY, goto text NOT NULL);"
        "INSERT INTO alias VALUES ('sales@one.test', 'box@vmail.test'); GRANT SELECT ON alias TO postfix", db="mail")
check("pgsql", "pgsql", pg.port, "user = postfix\npassword = pfpw\ndbname = mail\n"
      "query = SELECT goto FROM alias WHERE address = '%s'\n")
pg.stop()
t.done()
