"""redis: tables with several servers in hosts (replicas with the same data, each a real
redis-server on loopback): lookups at RCPT go to the first; when it goes down the lookup that
meets the failure is sent again to the next one and answered (no 451), and so are the lookups
after it; petrelctl map query (the blocking lookup) finds the second server too; with every
server down the answer is 451 4.3.0, never "User unknown"; a bad address in the list is
refused by petreld -n naming the line."""
import subprocess

from harness import PETRELD, Petrel, Tap
from redislib import RedisServer
from tablelib import bundled_module_dir

t = Tap(timeout=300)
MODULES = bundled_module_dir("redis")

first, second = RedisServer(), RedisServer()
for server in (first, second):
    server.cli("HSET", "virtual_alias", "alice@redis.test", "box@vmail.test")

with Petrel(t, start=False, workers=1) as p:
    cf = p.write_file("redis.cf", "hosts = 127.0.0.1:%d, 127.0.0.1:%d\ntimeout = 2\nquery = HGET virtual_alias %%s\n"
                      % (first.port, second.port))
    conf = dict(p.settings)
    conf.update({"modules": "redis", "module_directory": MODULES, "virtual_alias_domains": "redis.test",
                 "virtual_alias_maps": "redis:" + cf})
    p.write_main_cf(conf)
    p.start()

    def rcpt(address):
        c = p.connect()
        c.ehlo("client.test")
        c.cmd("MAIL FROM:<sender@example.org>")
        reply = c.cmd("RCPT TO:<%s>" % address)
        c.close()
        return reply

    def asked(server):
        info = server.cli("INFO", "commandstats")
        for line in info.splitlines():
            if line.startswith("cmdstat_hget:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    t.is_(rcpt("alice@redis.test"), "250 2.1.5 Ok", "two servers: found")
    t.is_((asked(first), asked(second)), (1, 0), "the lookup went to the first server")
    first.stop()
    t.is_(rcpt("alice@redis.test"), "250 2.1.5 Ok", "the first server down: the lookup is answered by the second")
    t.is_(rcpt("nobody@redis.test"),
          "550 5.1.1 <nobody@redis.test>: Recipient address rejected: User unknown in virtual alias table",
          "and the lookups after it (not found is still not found)")
    # alice@, then nobody@ and @redis.test (Postfix's catch-all key)
    t.is_(asked(second), 3, "the second server answered the three lookups")
    t.ok(p.wait_log(r"redis:%s: 127\.0\.0\.1:%d: .*; trying 127\.0\.0\.1:%d" % (cf, first.port, second.port)),
         "the failover is logged", p.log()[-1500:])
    r = p.petrelctl("map", "query", "redis:" + cf, "alice@redis.test")
    t.is_((r.returncode, r.stdout.strip()), (0, "box@vmail.test"),
          "petrelctl map query (the blocking lookup) with the first server down")
    second.stop()
    t.is_(rcpt("alice@redis.test"), "451 4.3.0 <alice@redis.test>: Temporary lookup failure",
          "every server down: 451 4.3.0, never User unknown")

with Petrel(t, start=False) as p:
    cf = p.write_file("bad.cf", "query = GET %s\nhosts = 127.0.0.1:6379, [::1\n")
    conf = dict(p.settings)
    conf.update({"modules": "redis", "module_directory": MODULES, "virtual_alias_maps": "redis:" + cf})
    p.write_main_cf(conf)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and ("redis:%s line 2: hosts: " % cf) in r.stdout + r.stderr,
         "petreld -n: a bad second address is refused, naming the line", r.stdout + r.stderr)

first.close()
second.close()
t.done()
