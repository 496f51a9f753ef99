"""pgsql: and mysql: table files that petreld -n refuses, with the exact text of each refusal:
what the two types read alike (modules/common/sql_table.c: the file's path, query, hosts,
dbname, retry_interval, idle_interval) and where they differ on purpose (a URI host and a port
that is not a number pass pgsql's check, dbname's message names a host only where a host may
be a URI, each refuses its own legacy parameters in its own words), and which mistake a file
with two is refused for (each type reads its settings in its own order). An unknown parameter
is warned about, naming the file and the line. No database is needed: petreld -n opens the
tables without connecting."""
import subprocess

from harness import PETRELD, Petrel, Tap
from tablelib import bundled_module_dir

t = Tap(timeout=120)
MODULES = bundled_module_dir("pgsql", "mysql")

QUERY = "query = SELECT goto FROM alias WHERE address = '%s'\n"
BASE = "user = postfix\npassword = secret\ndbname = mail\n" + QUERY
SEVENTEEN = " ".join("inet:10.0.0.%d:5432" % i for i in range(1, 18))


def check(p, kind, name, text):
    """petreld -n with virtual_alias_maps = KIND:NAME (a file written from text when text is
    not None): (exit status, output)."""
    spec = name
    if text is not None:
        spec = p.write_file(name, text, mode=0o640)
    conf = dict(p.settings)
    conf.update({"modules": kind, "module_directory": MODULES, "virtual_alias_domains": "my.test",
                 "virtual_alias_maps": kind + ":" + spec})
    p.write_main_cf(conf)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr, spec


with Petrel(t, start=False) as p:
    # (type, file name, its text (None: no file, a main.cf name), the error after "TYPE:FILE: ",
    # or after "TYPE:FILE " when it names a line)
    refused = []
    for kind in ("pgsql", "mysql"):
        refused += [
            (kind, "virtual", None, "parameters in main.cf (virtual_query, ...) are not supported: name a "
             "%s_table(5) configuration file by its path" % kind),
            (kind, kind + "-noquery.cf", "hosts = 127.0.0.1\ndbname = mail\n", "no query"),
            (kind, kind + "-bracket.cf", "hosts = [::1\n" + BASE, "line 1: hosts: bad host \"[::1\""),
            (kind, kind + "-emptyport.cf", "hosts = inet:db.example:\n" + BASE,
             "line 1: hosts: bad host \"inet:db.example:\""),
            (kind, kind + "-emptyhost.cf", "hosts = db.example, :5432\n" + BASE, "line 1: hosts: bad host \":5432\""),
            (kind, kind + "-seventeen.cf", "hosts = %s\n" % SEVENTEEN + BASE, "line 1: hosts: more than 16 hosts"),
            (kind, kind + "-retry.cf", "hosts = 127.0.0.1\n" + BASE + "retry_interval = 0\n",
             "line 6: retry_interval: \"0\" is not a number of at least 1"),
            (kind, kind + "-idle.cf", "hosts = 127.0.0.1\n" + BASE + "idle_interval = soon\n",
             "line 6: idle_interval: \"soon\" is not a number of at least 1"),
        ]
    refused += [
        ("mysql", "mysql-port.cf", "hosts = db.example:mysql\n" + BASE, "line 1: hosts: bad host \"db.example:mysql\""),
        ("mysql", "mysql-port0.cf", "hosts = inet:[::1]:0\n" + BASE, "line 1: hosts: bad host \"inet:[::1]:0\""),
        ("mysql", "mysql-port-big.cf", "hosts = db.example:65536\n" + BASE,
         "line 1: hosts: bad host \"db.example:65536\""),
        ("pgsql", "pgsql-nodb.cf", "hosts = unix:/run/postgresql, postgresql://u:pw@db/mail\n" + QUERY,
         "dbname is not set (host \"unix:/run/postgresql\" is not a URI)"),
        ("pgsql", "pgsql-nodb-default.cf", QUERY, "dbname is not set (host \"localhost\" is not a URI)"),
        ("mysql", "mysql-nodb.cf", "hosts = unix:/run/mysqld/mysqld.sock\n" + QUERY, "dbname is not set"),
        ("pgsql", "pgsql-legacy.cf", BASE + "select_function = lookup\n",
         "line 5: select_function: the legacy query parameters are not supported by Petrel: write the query "
         "with query ="),
        ("mysql", "mysql-legacy.cf", BASE + "where_field = address\n",
         "line 5: where_field: not supported by Petrel's mysql module (write the query with query =)"),
        # Two mistakes: pgsql reads the query before retry_interval, mysql after.
        ("pgsql", "pgsql-two.cf", "retry_interval = 0\nhosts = 127.0.0.1\n", "no query"),
        ("mysql", "mysql-two.cf", "retry_interval = 0\nhosts = 127.0.0.1\n",
         "line 1: retry_interval: \"0\" is not a number of at least 1"),
        # mysql reads charset before the hosts: an empty one is refused first.
        ("mysql", "mysql-charset.cf", "hosts = [::1\ncharset =\n" + BASE, "line 2: charset is empty"),
    ]
    for kind, name, text, want in refused:
        rc, out, spec = check(p, kind, name, text)
        full = "%s:%s%s %s" % (kind, spec, "" if want.startswith("line ") else ":", want)
        t.ok(rc != 0 and full in out, "petreld -n refuses %s %s: %s" % (kind, name, want), out)

    # What passes one type's check and not the other's, and the warning for an unknown name.
    rc, out, spec = check(p, "pgsql", "pgsql-textport.cf",
                          "hosts = db.example:postgres, postgresql://u:secret@db/mail?sslmode=require\n" + BASE)
    t.ok(rc == 0, "pgsql: a port that is not a number and a URI host pass petreld -n (libpq checks them)", out)
    rc, out, spec = check(p, "mysql", "mysql-unknown.cf", "hosts = inet:127.0.0.1:3306\n" + BASE + "bogus = 1\n")
    t.ok(rc == 0 and "mysql:%s, line 6: unknown parameter \"bogus\" is ignored" % spec in out,
         "mysql: an unknown parameter is warned about with its file and line", out)
    # pgsql_table(5)'s legacy select_function was never mysql_table(5)'s: an unknown name there
    # (it was accepted and silently did nothing).
    rc, out, spec = check(p, "mysql", "mysql-select-function.cf",
                          "hosts = inet:127.0.0.1:3306\n" + BASE + "select_function = f\n")
    t.ok(rc == 0 and "mysql:%s, line 6: unknown parameter \"select_function\" is ignored" % spec in out,
         "mysql: pgsql's select_function is an unknown parameter to mysql, warned about", out)
    rc, out, spec = check(p, "pgsql", "pgsql-unknown.cf", "hosts = inet:127.0.0.1:5432\n" + BASE + "charset = x\n")
    t.ok(rc == 0 and "pgsql:%s, line 6: unknown parameter \"charset\" is ignored" % spec in out,
         "pgsql: mysql's charset is an unknown parameter to pgsql, warned about", out)

t.done()
