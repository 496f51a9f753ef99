"""The result cache of the ldap:, redis: and socketmap: tables (the glue every remote table
type is declared through, modules/common/remote_table.c), against a private slapd,
redis-server and socketmap server, with virtual_mailbox_domains in the remote table: with
cache_ttl (socketmap_cache_ttl in main.cf for socketmap, which has no file) an answer found
and one not found are reused while the directory changes and while the server is down; a
lookup error is never cached; cache_size evicts the least recently used entry; a positive
answer expires after cache_ttl while cache_negative_ttl keeps a "not found" longer; the
hits and misses are counted in petrel_TYPE_cache_lookups_total, every lookup in
petrel_table_lookups_total and its latency histogram; lookups of one key in flight at once
make one request; and an ldap_table(5) file written for Postfix (cache_size without
cache_ttl, the legacy OpenLDAP client cache) turns on no cache, with a warning."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Petrel, Tap, free_port, wait_for  # noqa: E402
from ldaplib import ROOT_DN, SUFFIX, Slapd  # noqa: E402
from metricslib import http_get, parse_metrics, wait_http  # noqa: E402
from redislib import RedisServer  # noqa: E402
from socketmaplib import SocketmapServer  # noqa: E402
from tablelib import bundled_module_dir  # noqa: E402

t = Tap(timeout=400)
MODULES = bundled_module_dir("ldap", "redis", "socketmap")
assert ROOT_DN


class LdapBackend:
    type = "ldap"

    def __init__(self):
        self.slapd = Slapd("dn: {s}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
                           "dn: ou=domains,{s}\nobjectClass: organizationalUnit\nou: domains\n".format(s=SUFFIX))

    def spec(self, p, cache):
        cf = p.write_file("domains.cf", "server_host = ldap://127.0.0.1:%d\nsearch_base = ou=domains,%s\n"
                          "query_filter = (cn=%%s)\nresult_attribute = cn\nbind = no\ntimeout = 5\n%s"
                          % (self.slapd.port, SUFFIX, cache))
        return "ldap:" + cf

    def add(self, domain):
        r = self.slapd.modify("dn: cn=%s,ou=domains,%s\nchangetype: add\nobjectClass: device\ncn: %s\n"
                              % (domain, SUFFIX, domain))
        assert r.returncode == 0, r.stderr

    def remove(self, domain):
        r = self.slapd.modify("dn: cn=%s,ou=domains,%s\nchangetype: delete\n" % (domain, SUFFIX))
        assert r.returncode == 0, r.stderr

    def down(self):
        self.slapd.stop()

    def up(self):
        self.slapd.start()

    def close(self):
        self.slapd.stop()


class RedisBackend:
    type = "redis"

    def __init__(self):
        self.server = RedisServer()
        self.domains = set()

    def spec(self, p, cache):
        cf = p.write_file("domains.cf", "hosts = 127.0.0.1:%d\nquery = GET domain:%%s\ntimeout = 5\n%s"
                          % (self.server.port, cache))
        return "redis:" + cf

    def add(self, domain):
        self.domains.add(domain)
        self.server.cli("SET", "domain:" + domain, domain)

    def remove(self, domain):
        self.domains.discard(domain)
        self.server.cli("DEL", "domain:" + domain)

    def down(self):
        self.server.stop()

    def up(self):
        self.server.start()   # no persistence: the data is written again
        for d in self.domains:
            self.server.cli("SET", "domain:" + d, d)

    def close(self):
        self.server.close()


class SocketmapBackend:
    type = "socketmap"

    def __init__(self):
        self.domains = {}
        self.server = SocketmapServer({"domains": self.domains})

    def spec(self, p, cache):
        # No file: the cache's settings are main.cf's (socketmap_cache_*), given as "main.cf NAME = VALUE" lines.
        for line in cache.splitlines():
            name, _, value = line.partition("=")
            p.extra_main_cf["socketmap_" + name.strip()] = value.strip()
        return "socketmap:inet:127.0.0.1:%d:domains" % self.server.port

    def add(self, domain):
        self.domains[domain.encode()] = domain.encode()

    def remove(self, domain):
        self.domains.pop(domain.encode(), None)

    def down(self):
        self.server.stop()

    def up(self):
        self.server.restart()

    def close(self):
        self.server.stop()


OK = "250 2.1.5 Ok"


def relay_denied(domain):
    return "554 5.7.1 <x@%s>: Relay access denied" % domain


def rcpt(p, domain):
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    reply = c.cmd("RCPT TO:<x@%s>" % domain)
    c.close()
    return reply


def start(p, backend, cache, mport=None):
    p.extra_main_cf = {}
    spec = backend.spec(p, cache)
    conf = dict(p.settings)
    conf.update({"modules": backend.type, "module_directory": MODULES, "virtual_mailbox_domains": spec,
                 "virtual_mailbox_maps": "static:mailbox", "virtual_mailbox_base": p.dir,
                 "smtpd_relay_restrictions": "reject_unauth_destination",
                 # smtpd's cache of domain classes (test_class_cache.py) would hide the
                 # table's: the domain list is this test's probe
                 "address_class_cache_ttl": "0"})
    conf.update(p.extra_main_cf)
    if mport:
        conf["metrics_listen"] = "127.0.0.1:%d" % mport
    p.write_main_cf(conf)
    p.start()
    return spec


def metric(body, name, **labels):
    key = "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in labels.items()))
    return body.get(key)


def cache_cases(backend):
    T = backend.type
    backend.add("hot.test")
    mport = free_port()
    with Petrel(t, start=False, workers=1) as p:
        spec = start(p, backend, "cache_ttl = 1h\ncache_size = 2\n", mport)
        t.ok(wait_http(mport), "%s: the metrics endpoint answers" % T)
        t.is_([rcpt(p, d) for d in ("hot.test", "hot.test", "new.test", "new.test")],
              [OK, OK, relay_denied("new.test"), relay_denied("new.test")], "%s: the server's answers" % T)
        backend.remove("hot.test")
        backend.add("new.test")
        t.is_([rcpt(p, "hot.test"), rcpt(p, "new.test")], [OK, relay_denied("new.test")],
              "%s: within cache_ttl a found and a not found answer are reused while the server's data changes"
              % T)
        backend.down()
        t.is_(rcpt(p, "hot.test"), OK, "%s: a cached answer survives the server going down" % T)
        t.is_([rcpt(p, "other.test")[:9]] * 1 + [rcpt(p, "other.test")[:9]],
              ["451 4.3.0"] * 2, "%s: a key not cached is a lookup error (451) while the server is down, each time"
              % T)
        body = parse_metrics(http_get(mport, "/metrics")[2])
        t.is_((metric(body, "petrel_%s_cache_lookups_total" % T, table=spec, result="hit"),
               metric(body, "petrel_%s_cache_lookups_total" % T, table=spec, result="miss")), (5.0, 4.0),
              "%s: petrel_%s_cache_lookups_total counts 5 hits and 4 misses" % (T, T))
        t.is_(tuple(metric(body, "petrel_table_lookups_total", type=T, table=spec, result=r)
                    for r in ("found", "notfound", "error")), (4.0, 3.0, 2.0),
              "%s: petrel_table_lookups_total counts every lookup, cached or not, errors included" % T)
        t.is_(metric(body, "petrel_table_lookup_duration_seconds_count", type=T, table=spec), 9.0,
              "%s: and the latency histogram has them all" % T)
        backend.up()
        # The error was not cached: once the server is back (Redis's client reconnects in the
        # background), other.test is asked and its answer given.
        t.ok(wait_for(lambda: rcpt(p, "other.test") == relay_denied("other.test"), 30),
             "%s: the lookup errors were not cached: the server's answer once it is back" % T)
        # cache_size = 2 holds hot.test and other.test now (new.test, the least recently
        # used, went out): new.test is asked again and shows the server's change; that pushes
        # out hot.test, which is asked again too.
        t.is_([rcpt(p, "new.test"), rcpt(p, "hot.test")], [OK, relay_denied("hot.test")],
              "%s: cache_size: the least recently used entries were evicted and asked again" % T)
        t.is_(rcpt(p, "new.test"), OK, "%s: a recent entry stays" % T)

    # A positive answer expires after cache_ttl; cache_negative_ttl keeps a "not found" longer.
    backend.add("exp.test")
    with Petrel(t, start=False, workers=1) as p:
        start(p, backend, "cache_ttl = 1\ncache_negative_ttl = 1h\n")
        t.is_(rcpt(p, "exp.test"), OK, "%s: found" % T)
        backend.remove("exp.test")
        time.sleep(1.5)
        t.is_(rcpt(p, "exp.test"), relay_denied("exp.test"), "%s: after cache_ttl the change shows" % T)
        backend.add("exp.test")
        t.is_(rcpt(p, "exp.test"), relay_denied("exp.test"),
              "%s: cache_negative_ttl = 1h keeps the \"not found\" after cache_ttl would have expired it" % T)
    backend.remove("exp.test")
    backend.remove("new.test")


ldap = LdapBackend()
try:
    cache_cases(ldap)
    # A file written for Postfix: cache_size (and cache, cache_expiry) without cache_ttl are
    # the legacy OpenLDAP client cache's, which Postfix ignores too: no cache, a warning.
    ldap.add("legacy.test")
    with Petrel(t, start=False, workers=1) as p:
        start(p, ldap, "cache = yes\ncache_expiry = 30\ncache_size = 32768\n")
        t.is_(rcpt(p, "legacy.test"), OK, "ldap legacy cache settings: found")
        ldap.remove("legacy.test")
        t.is_(rcpt(p, "legacy.test"), relay_denied("legacy.test"),
              "ldap: cache, cache_expiry and cache_size without cache_ttl turn on no cache (as in Postfix)")
        t.ok(all(("line %d: %s is ignored" % (n, name)) in p.log()
                 for n, name in ((7, "cache"), (8, "cache_expiry"), (9, "cache_size"))),
             "ldap: each legacy cache setting is named in a warning", p.log()[-1500:])
finally:
    ldap.close()

redis = RedisBackend()
try:
    cache_cases(redis)
finally:
    redis.close()

sm = SocketmapBackend()
try:
    cache_cases(sm)
    # Lookups of one key in flight at once: one request to the server.
    sm.add("slow.test")
    hold = threading.Event()
    sm.server.slow[b"slow.test"] = hold
    mport = free_port()
    with Petrel(t, start=False, workers=1) as p:
        spec = start(p, sm, "cache_ttl = 1h\n", mport)
        t.ok(wait_http(mport), "socketmap: the metrics endpoint answers")
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(rcpt(p, "slow.test"))) for _ in range(4)]
        for th in threads:
            th.start()

        def misses():
            body = parse_metrics(http_get(mport, "/metrics")[2])
            return metric(body, "petrel_socketmap_cache_lookups_total", table=spec, result="miss")
        # A fifth session asks too and hangs up while it waits: its query is answered (ignored) with the rest.
        gone = p.connect()
        gone.ehlo("client.test")
        gone.cmd("MAIL FROM:<sender@example.org>")
        gone.send(b"RCPT TO:<x@slow.test>\r\n")
        t.ok(wait_for(lambda: misses() == 5.0, 30), "socketmap: five sessions ask for the slow key (five misses)")
        gone.close()
        # the misses are counted when the request is sent, maybe before the
        # server's thread has read it: wait for the request, then count them
        wait_for(lambda: b"slow.test" in sm.server.seen("domains"), 30)
        t.is_(sm.server.seen("domains").count(b"slow.test"), 1,
              "socketmap: five lookups of a key at once, one request on its way")
        hold.set()
        for th in threads:
            th.join(60)
        t.is_(replies, [OK] * 4, "socketmap: and its answer is every session's")
        t.is_(sm.server.seen("domains").count(b"slow.test"), 1, "socketmap: one request for the five")
        t.is_(rcpt(p, "slow.test"), OK, "socketmap: the worker goes on after a joined session hung up")
finally:
    sm.close()
t.done()
