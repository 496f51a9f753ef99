"""The database tables' result cache (cache_ttl, cache_negative_ttl, cache_size in a
pgsql_table(5) file), against a private PostgreSQL cluster whose query function records
every call it answers: without cache_ttl every RCPT asks the database (Postfix's behaviour,
the default); with it a hot domain in virtual_mailbox_domains and an unknown address are
asked once, both answers come from the cache, an entry expires after its TTL, lookup
errors are never cached, lookups of one key in flight at once make one query, cache_size evicts the least recently used entry, the hits and
misses are counted in petrel_pgsql_cache_lookups_total, and a bad setting is refused
naming the file and line. The same cache in mysql_table(5) files, against a private MariaDB
server whose general query log counts the module's queries."""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PETRELD, Petrel, Tap, free_port  # noqa: E402
from metricslib import http_get, parse_metrics, wait_http  # noqa: E402
from mysqllib import MariaDB  # noqa: E402
from pglib import PgCluster  # noqa: E402
from tablelib import bundled_module_dir, rcpt_replies  # noqa: E402

t = Tap(timeout=300)
MODULES = bundled_module_dir("pgsql", "mysql")

pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
# Each call of the lookup functions leaves a row in asked: the database's own
# count of the queries it answered.
pg.psql("CREATE TABLE asked(what text, key text);"
        "CREATE TABLE domain(domain text PRIMARY KEY);"
        "INSERT INTO domain VALUES ('hot.test'), ('two.test'), ('slow.test');"
        "CREATE TABLE mailbox(username text, maildir text);"
        "INSERT INTO mailbox VALUES ('box@hot.test', 'hot.test/box/'), ('dup@hot.test', 'a/'), ('dup@hot.test', 'b/'),"
        "('box@slow.test', 'slow.test/box/');"
        "CREATE FUNCTION domain_of(k text) RETURNS SETOF text AS $$ "
        "INSERT INTO asked VALUES ('domain', k); SELECT pg_sleep(CASE WHEN k = 'slow.test' THEN 2 ELSE 0 END); "
        "SELECT domain FROM domain WHERE domain = k $$ LANGUAGE sql;"
        "CREATE FUNCTION maildir_of(k text) RETURNS SETOF text AS $$ "
        "INSERT INTO asked VALUES ('mailbox', k); SELECT maildir FROM mailbox WHERE username = k $$ LANGUAGE sql;"
        "ALTER TABLE asked OWNER TO postfix; GRANT SELECT ON domain, mailbox TO postfix", db="mail")


def asked(what, key=None):
    sql = "SELECT count(*) FROM asked WHERE what = '%s'" % what + (" AND key = '%s'" % key if key else "")
    return int(pg.psql(sql, db="mail").strip())


def reset():
    pg.psql("DELETE FROM asked", db="mail")


UNKNOWN = "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table"
OK = "250 2.1.5 Ok"


def start(p, cache, mport=None):
    common = "hosts = 127.0.0.1:%d\nuser = postfix\npassword = pw\ndbname = mail\n" % pg.port
    domains = p.write_file("domains.cf", common + "query = SELECT domain_of('%s')\n" + cache, mode=0o640)
    mailboxes = p.write_file("mailboxes.cf", common + "query = SELECT maildir_of('%s')\nexpansion_limit = 1\n" + cache,
                             mode=0o640)
    conf = dict(p.settings)
    conf.update({"modules": "pgsql", "module_directory": MODULES,
                 "virtual_mailbox_domains": "pgsql:" + domains, "virtual_mailbox_maps": "pgsql:" + mailboxes,
                 "virtual_mailbox_base": p.dir, "address_class_cache_ttl": "0"})
    if mport:
        conf["metrics_listen"] = "127.0.0.1:%d" % mport
    p.write_main_cf(conf)
    p.start()
    return domains, mailboxes


# The default: no cache, every RCPT asks the database (as Postfix does).
with Petrel(t, start=False, workers=1) as p:
    start(p, "")
    reset()
    replies = rcpt_replies(p, ["box@hot.test"] * 3 + ["nobody@hot.test"] * 2)
    t.is_(replies, [OK] * 3 + [UNKNOWN % "nobody@hot.test"] * 2, "without cache_ttl: the database's answers")
    t.is_((asked("domain", "hot.test"), asked("mailbox", "nobody@hot.test")), (5, 2),
          "without cache_ttl every RCPT asks the database (the default, as in Postfix)")

# With a cache: one query per key, found and not found alike.
mport = free_port()
with Petrel(t, start=False, workers=1) as p:
    domains, _ = start(p, "cache_ttl = 1h\ncache_size = 3\n", mport)
    t.ok(wait_http(mport), "the metrics endpoint answers")
    reset()
    replies = rcpt_replies(p, ["box@hot.test"] * 3 + ["nobody@hot.test"] * 2)
    t.is_(replies, [OK] * 3 + [UNKNOWN % "nobody@hot.test"] * 2, "with cache_ttl: the same answers")
    t.is_(asked("domain", "hot.test"), 1, "the hot domain is asked of the database once")
    t.is_((asked("mailbox", "box@hot.test"), asked("mailbox", "nobody@hot.test")), (1, 1),
          "a mailbox found and an address not found: once each (negative answers are cached too)")
    body = parse_metrics(http_get(mport, "/metrics")[2])
    label = 'table="pgsql:%s"' % domains
    t.is_((body.get('petrel_pgsql_cache_lookups_total{%s,result="hit"}' % label),
           body.get('petrel_pgsql_cache_lookups_total{%s,result="miss"}' % label)), (4.0, 1.0),
          "petrel_pgsql_cache_lookups_total counts the domain table's 4 hits and 1 miss")

    # Errors are never cached: more rows than expansion_limit is a lookup error each time.
    replies = rcpt_replies(p, ["dup@hot.test"] * 2)
    t.is_(replies, ["451 4.3.0 <dup@hot.test>: Temporary lookup failure"] * 2,
          "a lookup error (expansion_limit exceeded) defers")
    t.is_(asked("mailbox", "dup@hot.test"), 2, "and is not cached: each RCPT asks the database again")

    # cache_size = 3: the domain table holds hot.test and two.test; two
    # other domains (not found) push hot.test, the least recently used, out.
    reset()
    rcpt_replies(p, ["x@two.test", "x@cold1.test", "x@cold2.test", "box@hot.test"])
    t.is_(asked("domain", "hot.test"), 1, "cache_size: the least recently used entry was evicted and asked again")
    rcpt_replies(p, ["x@cold2.test"])
    t.is_(asked("domain", "cold2.test"), 1, "a recent entry stays cached")

# Lookups of one key in flight at once (a slow domain query, five sessions): one query.
with Petrel(t, start=False, workers=1) as p:
    start(p, "cache_ttl = 1h\n")
    reset()
    replies = []
    threads = [threading.Thread(target=lambda: replies.extend(rcpt_replies(p, ["box@slow.test"]))) for _ in range(5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    t.is_(replies, [OK] * 5, "five sessions at once, the domain query slow: every RCPT is answered")
    t.is_(asked("domain", "slow.test"), 1,
          "one query for the five: the later lookups wait for the answer of the one on its way")

# Expiry: with cache_ttl = 1s (cache_negative_ttl = 1s), a change in the database shows after a second.
with Petrel(t, start=False, workers=1) as p:
    start(p, "cache_ttl = 1\n")
    reset()
    t.is_(rcpt_replies(p, ["new@hot.test"]), [UNKNOWN % "new@hot.test"], "an address not in the database yet")
    pg.psql("INSERT INTO mailbox VALUES ('new@hot.test', 'hot.test/new/')", db="mail")
    time.sleep(1.5)
    t.is_(rcpt_replies(p, ["new@hot.test"]), [OK], "after cache_negative_ttl the new mailbox is found")
    t.is_(asked("mailbox", "new@hot.test"), 2, "the expired entry made a second query")

# cache_negative_ttl = 0: only positive answers are cached.
with Petrel(t, start=False, workers=1) as p:
    start(p, "cache_ttl = 1h\ncache_negative_ttl = 0\n")
    reset()
    rcpt_replies(p, ["box@hot.test", "box@hot.test", "nobody@hot.test", "nobody@hot.test"])
    t.is_((asked("mailbox", "box@hot.test"), asked("mailbox", "nobody@hot.test")), (1, 2),
          "cache_negative_ttl = 0: a found mailbox is cached, an unknown address is asked each time")

# Bad settings: petreld -n names the file and line.
with Petrel(t, start=False) as p:
    for text, want in (("cache_ttl = 5x\n", "line 6: cache_ttl: bad time \"5x\""),
                       ("cache_ttl = 1m\ncache_size = 0\n", "line 7: cache_size: bad number \"0\"")):
        cf = p.write_file("bad.cf", "hosts = 127.0.0.1:%d\nuser = postfix\npassword = pw\ndbname = mail\n"
                          "query = SELECT domain_of('%%s')\n%s" % (pg.port, text))
        conf = dict(p.settings)
        conf.update({"modules": "pgsql", "module_directory": MODULES, "virtual_mailbox_domains": "pgsql:" + cf})
        p.write_main_cf(conf)
        r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
        t.ok(r.returncode != 0 and ("pgsql:%s %s" % (cf, want)) in r.stdout + r.stderr, "petreld -n: " + want,
             r.stdout + r.stderr)

pg.stop()

# mysql: the same cache; the general query log (to a table) holds every query the module sent.
db = MariaDB()
db.sql("CREATE DATABASE mail; CREATE USER 'postfix'@'127.0.0.1' IDENTIFIED BY 'pw';"
       "GRANT SELECT ON mail.* TO 'postfix'@'127.0.0.1';"
       "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1;")
db.sql("CREATE TABLE domain(domain VARCHAR(255) PRIMARY KEY); INSERT INTO domain VALUES ('hot.test');"
       "CREATE TABLE mailbox(username VARCHAR(255), maildir TEXT);"
       "INSERT INTO mailbox VALUES ('box@hot.test', 'hot.test/box/');", db="mail")


def mysql_asked(key):
    # The key is split in CONCAT so that this query's own text does not match.
    half = len(key) // 2
    return int(db.sql("SELECT count(*) FROM mysql.general_log WHERE user_host LIKE 'postfix%%' AND "
                      "command_type = 'Query' AND argument LIKE CONCAT('%%''', '%s', '%s', '''%%')"
                      % (key[:half], key[half:])).strip())


for cache, want, what in (("", (3, 2), "without cache_ttl every RCPT asks MariaDB"),
                          ("cache_ttl = 1h\n", (1, 1), "with cache_ttl the hot domain and the unknown address "
                                                       "are asked once")):
    db.sql("TRUNCATE mysql.general_log")
    with Petrel(t, start=False, workers=1) as p:
        common = "hosts = 127.0.0.1:%d\nuser = postfix\npassword = pw\ndbname = mail\n" % db.port
        domains = p.write_file("domains.cf", common + "query = SELECT domain FROM domain WHERE domain = '%s'\n" + cache)
        mailboxes = p.write_file("mailboxes.cf", common + "query = SELECT maildir FROM mailbox WHERE username = '%s'\n"
                                 + cache)
        conf = dict(p.settings)
        conf.update({"modules": "mysql", "module_directory": MODULES,
                     "virtual_mailbox_domains": "mysql:" + domains, "virtual_mailbox_maps": "mysql:" + mailboxes,
                     "virtual_mailbox_base": p.dir, "address_class_cache_ttl": "0"})
        p.write_main_cf(conf)
        p.start()
        replies = rcpt_replies(p, ["box@hot.test"] + ["nobody@hot.test"] * 2)
        t.is_(replies, [OK] + [UNKNOWN % "nobody@hot.test"] * 2,
              "mysql:%s the database's answers" % (" with cache_ttl:" if cache else ""))
        t.is_((mysql_asked("hot.test"), mysql_asked("nobody@hot.test")), want, "mysql: " + what)
db.stop()
t.done()
