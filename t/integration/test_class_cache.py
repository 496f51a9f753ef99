"""smtpd's address class cache (address_class_cache_ttl, core/mail/class_cache.h), against a
private PostgreSQL cluster whose lookup functions record every call they answer: the RCPTs of
one domain, in one session and in the next, ask virtual_mailbox_domains once (Postfix's
smtpd gets the same from resolve_clnt's cache) while virtual_mailbox_maps is asked for every
RCPT; reject_unauth_destination and the recipient validation of one RCPT classify it once; a
domain removed from the database is seen as not ours after the TTL; with the database down
an unknown domain is answered 451 4.3.0 and that failure is not kept: the database back, the
next RCPT asks it again and is accepted; address_class_cache_ttl = 0 asks every time; the queue
manager's routing keeps classes the same way."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Petrel, Tap  # noqa: E402
from pglib import PgCluster  # noqa: E402
from tablelib import bundled_module_dir, rcpt_replies  # noqa: E402

t = Tap(timeout=300)
MODULES = bundled_module_dir("pgsql")

pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
# Each call of the lookup functions leaves a row in asked: the database's own
# count of the queries it answered.
pg.psql("CREATE TABLE asked(what text, key text);"
        "CREATE TABLE domain(domain text PRIMARY KEY);"
        "INSERT INTO domain VALUES ('hot.test'), ('gone.test'), ('late.test');"
        "CREATE TABLE mailbox(username text, maildir text);"
        "INSERT INTO mailbox VALUES ('box@hot.test', 'hot.test/box/'), ('two@hot.test', 'hot.test/two/'),"
        "('box@gone.test', 'gone.test/box/'), ('box@late.test', 'late.test/box/');"
        "CREATE FUNCTION domain_of(k text) RETURNS SETOF text AS $$ "
        "INSERT INTO asked VALUES ('domain', k); SELECT domain FROM domain WHERE domain = k $$ LANGUAGE sql;"
        "CREATE FUNCTION maildir_of(k text) RETURNS SETOF text AS $$ "
        "INSERT INTO asked VALUES ('mailbox', k); SELECT maildir FROM mailbox WHERE username = k $$ LANGUAGE sql;"
        "ALTER TABLE asked OWNER TO postfix; GRANT SELECT ON domain, mailbox TO postfix", db="mail")


def asked(what, key):
    return int(pg.psql("SELECT count(*) FROM asked WHERE what = '%s' AND key = '%s'" % (what, key), db="mail").strip())


OK = "250 2.1.5 Ok"
UNKNOWN = "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table"


def denied(address):
    return "554 5.7.1 <%s>: Relay access denied" % address


def start(p, ttl):
    common = "hosts = 127.0.0.1:%d\nuser = postfix\npassword = pw\ndbname = mail\nretry_interval = 1\n" % pg.port
    domains = p.write_file("domains.cf", common + "query = SELECT domain_of('%s')\n", mode=0o640)
    mailboxes = p.write_file("mailboxes.cf", common + "query = SELECT maildir_of('%s')\n", mode=0o640)
    conf = dict(p.settings)
    conf.update({"modules": "pgsql", "module_directory": MODULES,
                 "virtual_mailbox_domains": "pgsql:" + domains, "virtual_mailbox_maps": "pgsql:" + mailboxes,
                 "virtual_mailbox_base": p.dir,
                 # the client is in mynetworks: only this list decides relaying
                 "smtpd_relay_restrictions": "reject_unauth_destination"})
    if ttl is not None:
        conf["address_class_cache_ttl"] = ttl
    p.write_main_cf(conf)
    p.start()


# The default (30 s): one class query for every RCPT of hot.test, over two sessions.
with Petrel(t, start=False, workers=1) as p:
    start(p, None)
    replies = rcpt_replies(p, ["box@hot.test", "two@hot.test", "nobody@hot.test"]) + rcpt_replies(p, ["box@hot.test"] * 2)
    t.is_(replies, [OK, OK, UNKNOWN % "nobody@hot.test", OK, OK], "the database's answers, RCPT by RCPT")
    t.is_(asked("domain", "hot.test"), 1,
          "virtual_mailbox_domains is asked once for the five RCPTs of one domain in two sessions "
          "(reject_unauth_destination and the recipient validation share the class)")
    t.is_((asked("mailbox", "box@hot.test"), asked("mailbox", "two@hot.test"), asked("mailbox", "nobody@hot.test")),
          (3, 1, 1), "virtual_mailbox_maps is asked for every RCPT (not cached, as in Postfix)")

# A short TTL: a domain removed from the database is seen after it. The cache counts
# whole seconds of the monotonic clock (an entry made at second N expires at N + TTL),
# so an entry lives between TTL - 1 and TTL seconds: 5 s leaves the second session
# 4 s to come on a loaded machine, and the wait after it ends TTL seconds after the
# first query was answered, not a fixed time after the second session.
TTL = 5
with Petrel(t, start=False, workers=1) as p:
    start(p, "%ds" % TTL)
    t.is_(rcpt_replies(p, ["box@gone.test"]), [OK], "gone.test is ours")
    kept_at = time.monotonic()   # the class was kept before its RCPT was answered
    pg.psql("DELETE FROM domain WHERE domain = 'gone.test'", db="mail")
    t.is_(rcpt_replies(p, ["box@gone.test"]), [OK], "removed from the database, its class is still the kept one")
    t.is_(asked("domain", "gone.test"), 1, "and the database was not asked again")
    time.sleep(max(0.0, kept_at + TTL + 0.2 - time.monotonic()))
    t.is_(rcpt_replies(p, ["box@gone.test"]), [denied("box@gone.test")],
          "after address_class_cache_ttl the domain is asked again and is no longer ours")
    t.is_(asked("domain", "gone.test"), 2, "with a second query")

    # The database down: a domain whose class is not kept defers, and the failure is not kept.
    pg.stop()
    try:
        t.is_(rcpt_replies(p, ["box@late.test"]), ["451 4.3.0 <box@late.test>: Temporary lookup failure"],
              "the database down: an RCPT whose class is not known is deferred (451 4.3.0)")
    finally:
        pg.start()
    time.sleep(1.5)   # retry_interval: the failed host is tried again after a second
    t.is_(rcpt_replies(p, ["box@late.test"]), [OK], "the database back: the next RCPT is accepted")
    t.is_(asked("domain", "late.test"), 1,
          "its domain was asked of the database (the query that failed never reached it): the failure was not kept")

# address_class_cache_ttl = 0: every RCPT asks (the behaviour before the cache).
pg.psql("DELETE FROM asked", db="mail")
with Petrel(t, start=False, workers=1) as p:
    start(p, "0")
    t.is_(rcpt_replies(p, ["box@hot.test"] * 3), [OK] * 3, "no cache: the same answers")
    t.is_(asked("domain", "hot.test"), 3, "address_class_cache_ttl = 0: every RCPT asks virtual_mailbox_domains")

# The queue manager's routing keeps classes too: three messages for hot.test, one
# after the other, ask virtual_mailbox_domains once in smtpd and once in the
# queue manager.
pg.psql("DELETE FROM asked", db="mail")
with Petrel(t, start=False, workers=1, extra_services="qmgr unix n - n 300 1 qmgr\n") as p:
    start(p, None)
    for i in range(3):
        c = p.connect()
        reply = c.send_message("sender@example.org", ["box@hot.test"], "Subject: %d\r\n\r\nbody\r\n" % i)
        c.close()
        t.like(reply, r"^250 ", "message %d for box@hot.test accepted" % i)
        deadline = time.time() + 30
        while len(re.findall(r"to=<box@hot\.test>, .*status=sent", p.log())) <= i and time.time() < deadline:
            time.sleep(0.05)
        t.ok(len(re.findall(r"to=<box@hot\.test>, .*status=sent", p.log())) == i + 1,
             "message %d delivered to the virtual mailbox" % i,
             [l for l in p.log().splitlines() if "hot.test" in l][-3:])
    t.is_(asked("domain", "hot.test"), 2,
          "three messages: virtual_mailbox_domains asked once by smtpd and once by the queue manager's routing")

pg.stop()
t.done()
