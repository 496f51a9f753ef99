"""redis: tables (the redis module, hiredis' asynchronous API through the shared client) against
a private redis-server on loopback: virtual_alias_maps at RCPT end to end over SMTP with HGET,
SMEMBERS (several results) and GET with a password and a database, keys with spaces, "*" and
Redis syntax in them that stay one argument, Redis slow (timeout: 451, other sessions served),
down mid-run (451 4.3.0, never "User unknown") and back, delivery through the queue manager
(the blocking lookup), petrelctl map query, and bad files that petreld -n names with their line
(tls settings among them: TLS to Redis cannot be applied, so it stops the start)."""
import os
import re
import socket
import subprocess

from harness import PETRELD, Petrel, Tap, maildir_messages, unread_at, wait_for
from redislib import RedisSentinel, RedisServer
from tablelib import WaitingRcpt, bundled_module_dir

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
MODULES = bundled_module_dir("redis")

redis = RedisServer(extra=["--enable-debug-command", "local"])   # DEBUG SLEEP: a busy Redis
redis.cli("CONFIG", "SET", "requirepass", "r3d!s")   # after start: redislib's readiness PING has no password


def cli(*args):
    return redis.cli("-a", "r3d!s", "--no-auth-warning", *args)


cli("HSET", "virtual_alias", "sales@redis.test", "box@vmail.test", '"a b*"@redis.test', "box@vmail.test")
cli("SADD", "group:staff@redis.test", "box@vmail.test", "other@vmail.test")
cli("-n", "3", "SET", "alias:bob@redis.test", "other@vmail.test")

with Petrel(t, extra_services=QMGR, start=False, workers=1) as p:
    common = "hosts = 127.0.0.1:%d\npassword = r3d!s\ntimeout = 1\n" % redis.port
    hget = p.write_file("redis-valias.cf", common + "query = HGET virtual_alias %s\n", mode=0o640)
    group = p.write_file("redis-group.cf", common + "query = SMEMBERS group:%s\n", mode=0o640)
    get = p.write_file("redis-get.cf", common + "database = 3\nquery = GET alias:%u@%d\ndomain = redis.test\n",
                       mode=0o640)
    mail = p.virtual_mailboxes({"box@vmail.test": "box/", "other@vmail.test": "other/"}, {
        "modules": "redis", "module_directory": MODULES, "virtual_alias_domains": "redis.test",
        "virtual_alias_maps": "redis:%s proxy:redis:%s redis:%s" % (hget, group, get)})
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "petreld -n accepts redis: tables", r.stdout + r.stderr)
    p.start()

    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@redis.test>"), "250 2.1.5 Ok", "HGET: an address in a Redis hash")
    t.is_(c.cmd("RCPT TO:<SALES@REDIS.TEST>"), "250 2.1.5 Ok", "in any case (the key is folded)")
    t.is_(c.cmd("RCPT TO:<staff@redis.test>"), "250 2.1.5 Ok", "SMEMBERS: a set")
    t.is_(c.cmd("RCPT TO:<bob@redis.test>"), "250 2.1.5 Ok", "GET with %u@%d in database 3")
    t.is_(c.cmd("RCPT TO:<nobody@redis.test>"),
          "550 5.1.1 <nobody@redis.test>: Recipient address rejected: User unknown in virtual alias table",
          "an address in no table is not found")
    for addr in ('"*"@redis.test', '"x virtual_alias"@redis.test', '"sales@redis.test FLUSHALL"@redis.test',
                 '"a b"@redis.test'):
        reply = c.cmd("RCPT TO:<%s>" % addr)
        t.ok(reply.startswith("550 5.1.1 ") and "User unknown in virtual alias table" in reply,
             "a key with Redis syntax in it is one argument and matches nothing: %s" % addr, reply)
    t.is_(c.cmd('RCPT TO:<"a b*"@redis.test>'), "250 2.1.5 Ok", "a key with a space and a * finds its own field")
    t.is_(cli("HLEN", "virtual_alias"), "2", "the data is intact")

    # Redis busy (DEBUG SLEEP): another session is served, the lookup ends at timeout with 451.
    c.cmd("RSET")
    c.cmd("MAIL FROM:<sender@example.org>")
    sleeper = subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", str(redis.port), "-a", "r3d!s",
                                "--no-auth-warning", "DEBUG", "SLEEP", "6"], stdout=subprocess.DEVNULL)

    def busy():
        """Redis is in its DEBUG SLEEP: a PING gets no answer (not even -NOAUTH) in 0.2 s."""
        with socket.create_connection(("127.0.0.1", redis.port), timeout=1) as s:
            s.settimeout(0.2)
            s.sendall(b"PING\r\n")
            try:
                return not s.recv(100)
            except socket.timeout:
                return True

    # Redis must still sleep when the lookup comes and for its timeout (1 s)
    # after it: 6 s of sleep leaves a loaded machine several seconds for the
    # session that asks
    wait_for(busy, timeout=10)
    waiting = WaitingRcpt(p, "sales@redis.test")
    wait_for(lambda: unread_at(redis.port), timeout=15)   # the lookup was sent to the sleeping Redis
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "another session is answered while a lookup waits for a busy Redis")
    t.is_(waiting.result(), "451 4.3.0 <sales@redis.test>: Temporary lookup failure",
          "the lookup ends at the file's timeout with 451 4.3.0")
    sleeper.wait(20)
    t.ok(wait_for(lambda: c.cmd("RCPT TO:<sales@redis.test>") == "250 2.1.5 Ok", timeout=30),
         "Redis answers again: found (the client reconnected)")
    c.cmd("RSET")
    c.close()

    c = p.connect()
    reply = c.send_message("sender@example.org", ["staff@redis.test"], "Subject: via redis\r\n\r\nx\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued", "mail to a set's members is accepted")
    c.close()
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(mail, "box"))) == 1 and
                  len(maildir_messages(os.path.join(mail, "other"))) == 1, timeout=30),
         "and delivered to both mailboxes (the queue manager's blocking lookup)")
    r = p.petrelctl("map", "query", "redis:" + group, "staff@redis.test")
    t.ok((r.returncode, sorted(r.stdout.strip().split(","))) == (0, ["box@vmail.test", "other@vmail.test"]),
         "petrelctl map query redis:... SMEMBERS", r.stdout + r.stderr)
    r = p.petrelctl("map", "query", "redis:" + get, "bob@redis.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "other@vmail.test"), "petrelctl map query redis:... GET, database",
         r.stdout + r.stderr)

    redis.stop()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@redis.test>"), "451 4.3.0 <sales@redis.test>: Temporary lookup failure",
          "Redis gone mid-run: 451 4.3.0 Temporary lookup failure, never User unknown")
    r = p.petrelctl("map", "query", "redis:" + hget, "sales@redis.test")
    t.ok(r.returncode == 2, "petrelctl map query with Redis down: a lookup error",
         "%d %s" % (r.returncode, r.stdout + r.stderr))
    redis.start()
    redis.cli("CONFIG", "SET", "requirepass", "r3d!s")
    cli("HSET", "virtual_alias", "sales@redis.test", "box@vmail.test")
    t.ok(wait_for(lambda: c.cmd("RCPT TO:<sales@redis.test>") == "250 2.1.5 Ok", timeout=40),
         "Redis back: found again")
    c.close()
    t.ok(p.wait_log(re.escape("redis:%s" % hget)) is not None, "the failures are logged with the file's name",
         p.log()[-1500:])

# Sentinel: the master found through a sentinel, for the asynchronous and the blocking lookup.
master = RedisServer()
sentinel = RedisSentinel(master.port)
master.cli("HSET", "virtual_alias", "sales@redis.test", "box@vmail.test")
with Petrel(t, start=False, workers=1) as p:
    cf = p.write_file("sentinel.cf", "sentinels = 127.0.0.1:%d\nmaster_name = mymaster\n"
                      "query = HGET virtual_alias %%s\n" % sentinel.port)
    conf = dict(p.settings)
    conf.update({"modules": "redis", "module_directory": MODULES,
                 "virtual_alias_domains": "redis.test", "virtual_alias_maps": "redis:" + cf})
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.ok(wait_for(lambda: c.cmd("RCPT TO:<sales@redis.test>") == "250 2.1.5 Ok", timeout=20),
         "sentinels, master_name: found on the master the sentinel names")
    c.close()
    r = p.petrelctl("map", "query", "redis:" + cf, "sales@redis.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test"),
         "petrelctl map query through the sentinel (the blocking lookup)", r.stdout + r.stderr)
sentinel.close()
master.close()

# Bad files: petreld -n names the file and line.
with Petrel(t, start=False) as p:
    write = p.write_file("set.cf", "hosts = 127.0.0.1:6379\nquery = SET x %s\n")
    fixed = p.write_file("fixed.cf", "query = GET x\n")
    sentinel = p.write_file("sentinel.cf", "sentinels = 127.0.0.1:26379\nquery = GET %s\n")
    tls = p.write_file("tls.cf", "hosts = 127.0.0.1:6379\nquery = GET %s\ntls = yes\n")
    tlsca = p.write_file("tlsca.cf", "query = GET %s\ntls_ca_file = /etc/ssl/certs/ca-certificates.crt\n")
    for cf, want in ((tls, "redis:%s line 3: \"tls\": TLS to Redis is not available" % tls),
                     (tlsca, "redis:%s line 2: \"tls_ca_file\": TLS to Redis is not available" % tlsca),
                     (write, "redis:%s line 2: query: \"SET\": not a read command" % write),
                     (fixed, "redis:%s line 1: query: \"GET x\" does not use the key" % fixed),
                     (sentinel, "redis:%s line 1: sentinels are set but the master name is empty" % sentinel)):
        conf = dict(p.settings)
        conf.update({"modules": "redis", "module_directory": MODULES, "virtual_alias_maps": "redis:" + cf})
        p.write_main_cf(conf)
        r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
        t.ok(r.returncode != 0 and want in r.stdout + r.stderr, "petreld -n: " + want.split(": ", 1)[1],
             r.stdout + r.stderr)

redis.close()
t.done()
