"""modules/greylist against real Redis peers: first attempt 450 and a retry after
the delay 250, two petreld sharing one Redis, sender normalisation, whitelists,
the auto-whitelist, Redis down at start and mid-run, restarted, paused (command
deadline), and a Sentinel failover between two redis-server."""
import subprocess
import time

from harness import PETRELD, Petrel, Tap, free_port, wait_for
from modlib import bundled_module_dir, rcpt_reply, smtp_from
from redislib import RedisSentinel, RedisServer, SilentServer

t = Tap()
mods = bundled_module_dir("greylist")
MYNETS = "192.0.2.0/24"
# Redis keeps whole seconds (TIME): an early retry is refused only while fewer than DELAY
# seconds' boundaries have passed since the first attempt, which may be DELAY - 1 s and a bit
# of real time. 4 s leaves the early retries 3 s on a loaded machine.
DELAY = 4


def conf(redis_addr, **extra):
    c = {"modules": "greylist", "module_directory": mods, "mynetworks": MYNETS,
         "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination, check_greylist",
         "greylist_redis": redis_addr, "greylist_delay": "%ds" % DELAY, "greylist_redis_timeout": "1s",
         "greylist_auto_whitelist_count": "0"}
    c.update(extra)
    return c


def attempt(p, sender="alice@sender.example", rcpt="user@petrel.test", src="127.0.0.2", port=None):
    c = smtp_from(port or p.port, src=src)
    r = rcpt_reply(c, sender=sender, rcpt=rcpt)
    c.close()
    return r


GREYLISTED = r"^450 4\.7\.1 <%%s>: Recipient address rejected: Greylisted, try again in [1-%d] seconds$" % DELAY

with RedisServer() as redis:
    addr = "127.0.0.1:%d" % redis.port
    with Petrel(t, main_cf=conf(addr)) as a, Petrel(t, main_cf=conf(addr)) as b:
        t.like(attempt(a), GREYLISTED % "user@petrel\\.test",
               "a first attempt is refused 450 4.7.1 with the seconds to wait")
        t.ok(a.wait_log(r"greylist: action=greylist, reason=new, client=\S+\[127\.0\.0\.2\], "
                        r"sender=<alice@sender\.example>, recipient=<user@petrel\.test>") is not None,
             "and logged as postgrey logs it")
        t.like(attempt(a), GREYLISTED % "user@petrel\\.test", "an early retry is refused too")
        t.ok(a.wait_log(r"action=greylist, reason=early-retry") is not None, "logged as an early retry")
        t.like(attempt(b, rcpt="user2@petrel.test"), GREYLISTED % "user2@petrel\\.test",
               "another recipient is another triplet (on the second petreld)")
        time.sleep(DELAY + 0.5)
        t.is_(attempt(a), "250 2.1.5 Ok", "a retry after the delay is accepted")
        t.is_(attempt(b, rcpt="user2@petrel.test"), "250 2.1.5 Ok",
              "the other petreld shares the state: its triplet passes after the delay too")
        t.is_(attempt(b), "250 2.1.5 Ok", "a triplet that passed on one node passes on the other")
        t.is_(attempt(a, src="127.0.0.99"), "250 2.1.5 Ok", "a client of the same /24 shares the triplet")
        t.like(attempt(a, src="127.0.1.2"), GREYLISTED % "user@petrel\\.test", "another /24 is another triplet")
        keys = redis.cli("KEYS", "petrel:greylist:*")
        t.ok("petrel:greylist:t:127.0.0.0/24/alice@sender.example/user@petrel.test" in keys,
             "the triplet key holds the /24, the sender and the recipient", keys)
        ttl = int(redis.cli("TTL", "petrel:greylist:t:127.0.0.0/24/alice@sender.example/user@petrel.test"))
        t.ok(35 * 86400 - 60 < ttl <= 35 * 86400, "a passed triplet is kept for greylist_max_age (35d)", ttl)

        # Sender normalisation: BATV tags, SRS, VERP numbers and +extensions.
        t.like(attempt(a, sender="prvs=0123456789=bob@list.example"), GREYLISTED % "user@petrel\\.test",
               "a BATV-tagged sender is greylisted")
        t.like(attempt(a, sender="bounce-12345@verp.example"), GREYLISTED % "user@petrel\\.test", "a VERP sender too")
        t.like(attempt(a, sender="SRS0=HHH=TT=orig.example=carol@forwarder.example"), GREYLISTED % "user@petrel\\.test",
               "an SRS sender too")
        time.sleep(DELAY + 0.5)
        t.is_(attempt(b, sender="prvs=9876543210=bob@list.example"), "250 2.1.5 Ok",
              "its retry with another BATV tag is the same triplet")
        t.is_(attempt(b, sender="bounce-67890@verp.example"), "250 2.1.5 Ok",
              "a VERP retry with another number is the same triplet")
        t.is_(attempt(b, sender="SRS0=XYZ=UV=orig.example=carol@other-forwarder.example"), "250 2.1.5 Ok",
              "an SRS retry through another forwarder is the same triplet (the original sender)")

    # Whitelists and the auto-whitelist.
    with Petrel(t, main_cf=conf(addr, greylist_whitelist_clients="127.0.5.0/24, ::1",
                                greylist_whitelist_recipients="postmaster@, @petrel.test.example, user3@petrel.test",
                                greylist_auto_whitelist_count="1")) as p:
        t.is_(attempt(p, src="127.0.5.7", sender="new1@x.example"), "250 2.1.5 Ok", "a whitelisted client network")
        t.is_(attempt(p, rcpt="postmaster@petrel.test", sender="new2@x.example"), "250 2.1.5 Ok",
              "a whitelisted recipient local part (postmaster@)")
        t.is_(attempt(p, rcpt="user3@petrel.test", sender="new3@x.example"), "250 2.1.5 Ok",
              "a whitelisted recipient address")
        t.like(attempt(p, src="127.0.6.6", sender="awl@x.example"), GREYLISTED % "user@petrel\\.test",
               "a new client is greylisted")
        time.sleep(DELAY + 0.5)
        t.is_(attempt(p, src="127.0.6.6", sender="awl@x.example"), "250 2.1.5 Ok", "it retries and passes")
        t.is_(attempt(p, src="127.0.6.6", sender="other@y.example"), "250 2.1.5 Ok",
              "after greylist_auto_whitelist_count passes, its new triplets pass at once")
        t.ok(p.wait_log(r"action=pass, reason=client AWL") is not None, "logged as postgrey's client AWL")

    # Per master.cf service (.per_service): whitelists, text and delay.
    svc = {name: free_port() for name in ("white", "text")}
    with Petrel(t, main_cf=conf(addr), extra_services="".join(
            "127.0.0.1:%d inet n - n - - smtpd %s\n" % (svc[name], opts) for name, opts in (
                ("white", "-o greylist_whitelist_clients=127.0.7.0/24"),
                ("text", "-o greylist_text=Come_back_in_%s_seconds -o greylist_delay=1h")))) as p:
        t.like(attempt(p, src="127.0.7.7", sender="svc1@x.example"), GREYLISTED % "user@petrel\\.test",
               "main.cf's service greylists the client")
        t.is_(attempt(p, src="127.0.7.7", sender="svc2@x.example", port=svc["white"]), "250 2.1.5 Ok",
              "-o greylist_whitelist_clients on a service: not greylisted there")
        t.like(attempt(p, src="127.0.8.8", sender="svc3@x.example", port=svc["text"]),
               r"^450 4\.7\.1 <user@petrel\.test>: Recipient address rejected: Come_back_in_3[56]\d\d_seconds$",
               "-o greylist_text and -o greylist_delay=1h on a service: its own text and delay")

    # A paused Redis: the command's deadline.
    with Petrel(t, main_cf=conf(addr)) as p:
        attempt(p, sender="warmup@x.example")
        # paused long enough for the session to reach its RCPT on a loaded machine
        redis.cli("CLIENT", "PAUSE", "8000", "ALL")
        t.is_(attempt(p, sender="paused@x.example"), "250 2.1.5 Ok",
              "a Redis that does not answer in greylist_redis_timeout: the default action (continue) applies")
        t.ok(p.wait_log(r"warning: .*greylist: Redis failed \(timed out\): .*sender=<paused@x\.example>.*"
                        r"not greylisted \(greylist_default_action = continue\)") is not None,
             "and it is logged with the triplet")
        t.ok(wait_for(lambda: attempt(p, sender="after-pause%d@x.example" % time.time()).startswith("450"), 30),
             "greylisting resumes when Redis answers again")

# Redis down at start, then started: petreld starts, accepts, then greylists.
with RedisServer(start=False) as redis:
    addr = "127.0.0.1:%d" % redis.port
    with Petrel(t, main_cf=conf(addr)) as p:
        t.is_(attempt(p, sender="early@x.example"), "250 2.1.5 Ok", "Redis down at start: mail is accepted")
        t.ok(p.wait_log(r"warning: .*greylist: Redis at 127\.0\.0\.1:\d+ is unavailable: .*retrying in the background")
             is not None, "the outage is logged once")
        t.ok(p.wait_log(r"not greylisted \(greylist_default_action = continue\)") is not None,
             "each decision that fell back says so")
        redis.start()
        t.ok(p.wait_log(r"greylist: connected to Redis at 127\.0\.0\.1:\d+: it is back", 40) is not None,
             "the module reconnects when Redis comes")
        t.like(attempt(p, sender="late@x.example"), GREYLISTED % "user@petrel\\.test", "and greylists again")
        # Stopped mid-run and restarted.
        redis.stop()
        t.is_(attempt(p, sender="during@x.example"), "250 2.1.5 Ok", "Redis stopped mid-run: accepted")
        t.ok(p.wait_log(r"Redis at 127\.0\.0\.1:\d+ went away") is not None, "logged as gone")
        redis.start()
        t.ok(wait_for(lambda: attempt(p, sender="again%d@x.example" % time.time()).startswith("450"), 40),
             "Redis restarted: greylisting resumes")
    with Petrel(t, main_cf=conf(addr, greylist_default_action="tempfail")) as p:
        redis.stop()
        t.is_(attempt(p, sender="strict@x.example"), "451 4.3.0 Temporary greylisting failure, try again later",
              "greylist_default_action = tempfail defers while Redis is down")

# A server that accepts and never answers (the connection attempt's deadline).
silent = SilentServer()
with Petrel(t, main_cf=conf("127.0.0.1:%d" % silent.port)) as p:
    t.is_(attempt(p, sender="silent@x.example"), "250 2.1.5 Ok", "a Redis that never answers: accepted")
    t.ok(p.wait_log(r"Redis at 127\.0\.0\.1:\d+ is unavailable: connecting timed out") is not None,
         "the connection attempt times out and is logged")
    c = smtp_from(p.port, src="127.0.0.2")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "the server keeps serving")
    c.close()
silent.close()

# Configuration errors are refused by petreld -n.
for name, value, why in [("greylist_redis", "nowhere", "bad Redis address \"nowhere\""),
                         ("greylist_redis_sentinels", "127.0.0.1:x", "bad sentinel address"),
                         ("greylist_whitelist_clients", "10.0.0.0/33", "is not an address or network"),
                         ("greylist_whitelist_clients", "10.1.2.3/8", 'greylist_whitelist_clients: non-null host '
                          'address bits in "10.1.2.3/8", perhaps you should use "10.0.0.0/8" instead')]:
    with Petrel(t, start=False, main_cf=conf("127.0.0.1:1", **{name: value})) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        t.ok(r.returncode != 0 and why in r.stderr, "petreld -n refuses %s = %s" % (name, value), r.stderr)

# Sentinel: two redis-server (master and replica), one sentinel, a failover.
with RedisServer() as master, RedisServer(extra=["--replicaof", "127.0.0.1", "0"], start=False) as replica:
    replica.extra = ["--replicaof", "127.0.0.1", str(master.port)]
    replica.start()
    sentinel = RedisSentinel(master.port)
    try:
        t.ok(wait_for(lambda: "127.0.0.1" in sentinel.replicas() and str(replica.port) in sentinel.replicas(), 30),
             "the sentinel knows the replica")
        with Petrel(t, main_cf=conf("", greylist_redis_sentinels="127.0.0.1:%d" % sentinel.port)) as p:
            t.like(attempt(p, sender="s1@x.example"), GREYLISTED % "user@petrel\\.test",
                   "through Sentinel: greylisted on the master")
            t.ok(p.wait_log(r"greylist: connected to Redis at 127\.0\.0\.1:%d" % master.port) is not None,
                 "the module asked the sentinel for the master")
            # Redis replicates asynchronously: a write the master acknowledged
            # can be lost in a failover (doc/modules/greylist.md). Wait for it.
            t.ok(wait_for(lambda: "s1@x.example" in replica.cli("KEYS", "*"), 30),
                 "the triplet reaches the replica")
            master.stop()
            t.ok(wait_for(lambda: sentinel.master_port() == replica.port, 40),
                 "the sentinel promotes the replica", sentinel.log())
            t.ok(wait_for(lambda: attempt(p, sender="s2@x.example").startswith("450"), 40),
                 "after the failover, greylisting goes on with the new master")
            t.ok(p.wait_log(r"connected to Redis at 127\.0\.0\.1:%d: it is back" % replica.port) is not None,
                 "the module found the new master through the sentinel")
            time.sleep(DELAY + 0.5)
            t.is_(attempt(p, sender="s1@x.example"), "250 2.1.5 Ok",
                  "a triplet first seen before the failover passes after it (replicated)")
    finally:
        sentinel.close()
t.done()
