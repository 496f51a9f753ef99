"""modules/ratelimit: check_rate_limit in memory shared by both smtpd workers of a
node, and in Redis shared by two petreld (directly and through Sentinel, across a
failover); keys, counting recipients, window
expiry, exclusions, Redis down, and configuration errors."""
import os
import re
import signal
import subprocess
import tempfile
import time

from harness import CLEANUP_DIRS, PETRELD, Petrel, Tap, free_port, run_as_user
from modlib import bundled_module_dir, smtp_from, smtpd_worker_pids
from redislib import RedisSentinel, RedisServer

t = Tap()
mods = bundled_module_dir("ratelimit")
MYNETS = "192.0.2.0/24"


def data_dir():
    d = tempfile.mkdtemp(prefix="petrel-data-")
    CLEANUP_DIRS.append(d)
    _, pw = run_as_user()
    if pw:
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


def conf(limit, **extra):
    c = {"modules": "ratelimit", "module_directory": mods, "mynetworks": MYNETS, "data_directory": data_dir(),
         "smtpd_recipient_restrictions": "check_rate_limit %s, reject_unauth_destination" % limit}
    c.update(extra)
    return c


def transaction(c, sender="alice@sender.example", rcpts=("user@petrel.test",)):
    """MAIL and RCPTs on an open connection, then RSET; the RCPT replies."""
    c.cmd("MAIL FROM:<%s>" % sender)
    replies = [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]
    c.cmd("RSET")
    return replies


def one(p, src="127.0.0.2", **kw):
    c = smtp_from(p.port, src=src)
    c.ehlo()
    r = transaction(c, **kw)
    c.close()
    return r[-1]


OVER = ("450 4.7.1 <user@petrel.test>: Recipient address rejected: Rate limit exceeded: at most %d %s per %s "
        "for %s, try again later")

# --- in memory, shared by the two workers of one node ---
with Petrel(t, main_cf=conf("5/1m")) as p:
    workers = smtpd_worker_pids(p)
    t.ok(len(workers) >= 2, "two smtpd workers")
    # One worker accepts a burst alone; stopping the other in turn makes
    # each of them take half of the client's connections.
    conns = []
    for busy, idle in ((workers[0], workers[1]), (workers[1], workers[0])):
        os.kill(idle, signal.SIGSTOP)
        try:
            conns += [smtp_from(p.port, src="127.0.0.2") for _ in range(5)]
        finally:
            os.kill(idle, signal.SIGCONT)
    for c in conns:
        c.ehlo()
    pids = set(int(m) for m in re.findall(r"smtpd\[(\d+)\]: connect from \S+\[127\.0\.0\.2\]", p.log()))
    t.ok(len(pids) >= 2, "the client's connections are served by both workers", pids)
    replies = [transaction(c)[0] for c in conns]
    for c in conns:
        c.close()
    t.ok(replies.count("250 2.1.5 Ok") == 5, "exactly 5 messages pass across both workers", replies)
    t.is_(replies[-1], OVER % (5, "messages", "1m", "client 127.0.0.2"), "the others get 450 4.7.1")
    t.ok(p.wait_log(r"ratelimit: client 127\.0\.0\.2: over the limit of 5 messages per 1m") is not None,
         "and it is logged")
    t.is_(one(p, src="127.0.0.3"), "250 2.1.5 Ok", "another client has its own count")

# --- window expiry ---
with Petrel(t, main_cf=conf("2/3s")) as p:
    c = smtp_from(p.port, src="127.0.0.2")
    c.ehlo()
    got = [transaction(c)[0] for _ in range(3)]
    t.is_(got[:2], ["250 2.1.5 Ok"] * 2, "2/3s: two messages pass")
    t.is_(got[2], OVER % (2, "messages", "3s", "client 127.0.0.2"), "the third is refused")
    time.sleep(3.2)
    t.is_(transaction(c)[0], "250 2.1.5 Ok", "once the window has passed, a message passes again")
    c.close()

# --- keys, recipients, exclusions ---
with Petrel(t, main_cf=conf("{ 2/1m sender }", smtpd_recipient_restrictions=
                            "check_rate_limit { 2/1m sender }, check_rate_limit { 3/1m recipients }")) as p:
    c = smtp_from(p.port, src="127.0.0.4")
    c.ehlo()
    t.is_(transaction(c, sender="a@x.example", rcpts=("user@petrel.test", "user2@petrel.test")),
          ["250 2.1.5 Ok", "250 2.1.5 Ok"], "one message, two recipients: the sender's message counts once")
    t.is_(transaction(c, sender="a@x.example", rcpts=("user3@petrel.test", "user@petrel.test")),
          ["250 2.1.5 Ok", OVER.replace("<user@petrel.test>", "<user@petrel.test>")
           % (3, "recipients", "1m", "client 127.0.0.4")],
          "the client's fourth recipient in the minute is refused (counting recipients)")
    c.close()
    c = smtp_from(p.port, src="127.0.0.5")
    c.ehlo()
    t.is_(transaction(c, sender="a@x.example")[0],
          OVER % (2, "messages", "1m", "sender a@x.example"),
          "keyed by sender: the sender's third message is refused, from another client too")
    t.is_(transaction(c, sender="b@x.example")[0], "250 2.1.5 Ok", "another sender is counted apart")
    t.is_(transaction(c, sender="")[0], "250 2.1.5 Ok", "the null sender is not limited")
    c.close()
with Petrel(t, main_cf=conf("1/1m", mynetworks="127.0.0.0/8")) as p:
    t.is_([one(p) for _ in range(3)], ["250 2.1.5 Ok"] * 3, "clients in mynetworks are not limited")
with Petrel(t, main_cf=conf("1/1m", ratelimit_exclude_clients="127.0.0.0/24")) as p:
    t.is_([one(p) for _ in range(2)], ["250 2.1.5 Ok"] * 2, "nor are those of ratelimit_exclude_clients")

# --- per master.cf service: the exclusions (.per_service) and mynetworks ---
svc = {name: free_port() for name in ("nomynet", "othernet", "clients")}
with Petrel(t, main_cf=conf("1/1m", mynetworks="127.0.0.0/8"), extra_services="".join(
        "127.0.0.1:%d inet n - n - - smtpd %s\n" % (svc[name], opts) for name, opts in (
            ("nomynet", "-o ratelimit_exclude_mynetworks=no"),
            ("othernet", "-o mynetworks=192.0.2.0/24"),
            ("clients", "-o ratelimit_exclude_mynetworks=no -o ratelimit_exclude_clients=127.0.0.6")))) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
    t.ok(r.returncode == 0 and "ratelimit_exclude" not in r.stderr,
         "an -o of ratelimit_exclude_* on a service is accepted (declared per_service)", r.stderr)

    def via(port, src):
        c = smtp_from(port, src=src)
        c.ehlo()
        reply = transaction(c)[-1]
        c.close()
        return reply
    t.is_([via(p.port, "127.0.0.4") for _ in range(2)], ["250 2.1.5 Ok"] * 2,
          "main.cf's service: a client in mynetworks is not limited")
    t.is_([via(svc["nomynet"], "127.0.0.5") for _ in range(2)],
          ["250 2.1.5 Ok", OVER % (1, "messages", "1m", "client 127.0.0.5")],
          "-o ratelimit_exclude_mynetworks=no: the same kind of client is limited on that service")
    t.is_([via(svc["othernet"], "127.0.0.7") for _ in range(2)],
          ["250 2.1.5 Ok", OVER % (1, "messages", "1m", "client 127.0.0.7")],
          "-o mynetworks=192.0.2.0/24: the module sees the service's mynetworks, so 127.0.0.7 is limited there")
    t.is_([via(svc["clients"], "127.0.0.6") for _ in range(2)], ["250 2.1.5 Ok"] * 2,
          "-o ratelimit_exclude_clients on a service: its clients are not limited there")

# --- Redis, shared by two petreld ---
with RedisServer() as redis:
    addr = "127.0.0.1:%d" % redis.port
    with Petrel(t, main_cf=conf("3/1m", ratelimit_redis=addr)) as a, \
            Petrel(t, main_cf=conf("3/1m", ratelimit_redis=addr)) as b:
        got = [one(a), one(b), one(a), one(b)]
        t.is_(got[:3], ["250 2.1.5 Ok"] * 3, "on Redis: three messages pass through two petreld")
        t.is_(got[3], OVER % (3, "messages", "1m", "client 127.0.0.2"), "the fourth is refused by the other node")
        keys = redis.cli("KEYS", "petrel:ratelimit:*")
        t.ok("petrel:ratelimit:60000:m|c=127.0.0.2" in keys, "the counter's key names window, counting and client", keys)
        redis.stop()
        t.is_(one(b, src="127.0.0.9"), "250 2.1.5 Ok", "Redis down: not limited (ratelimit_default_action = continue)")
        t.ok(b.wait_log(r"warning: .*ratelimit: Redis failed \(.*\): client 127\.0\.0\.9 not counted; not limited")
             is not None, "and logged")
    with Petrel(t, main_cf=conf("3/2s", ratelimit_redis=addr)) as a:
        redis.start()
        # This petreld started with Redis down: each worker connects on its
        # own back-off timer, and one still down answers "not counted, not
        # limited". Every worker says it is connected before the count.
        workers = set(smtpd_worker_pids(a))
        deadline = time.time() + 60
        while time.time() < deadline and not workers <= set(
                int(x) for x in re.findall(r"smtpd\[(\d+)\]: .*connected to Redis", a.log())):
            time.sleep(0.1)
        c = smtp_from(a.port, src="127.0.0.7")
        c.ehlo()
        got = [transaction(c)[0] for _ in range(4)]
        t.is_(got, ["250 2.1.5 Ok"] * 3 + [OVER % (3, "messages", "2s", "client 127.0.0.7")],
              "on Redis: 3/2s refuses the fourth")
        time.sleep(2.2)
        t.is_(transaction(c)[0], "250 2.1.5 Ok", "and the window expires on Redis too")
        c.close()

# --- configuration errors ---
for spec, why in [("100", "N/WINDOW expected"), ("0/1h", "from 1 to"), ("10/1x", "the window is a number"),
                  ("{ 10/1h cheese }", "unknown word \"cheese\"")]:
    with Petrel(t, start=False, main_cf=conf(spec)) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        t.ok(r.returncode != 0 and "restriction check_rate_limit (module ratelimit)" in r.stderr and why in r.stderr,
             "petreld -n refuses check_rate_limit %s" % spec, r.stderr)
with Petrel(t, start=False, main_cf=conf("1/1h", ratelimit_exclude_clients="[2001:db8::1/64]")) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.ok(r.returncode != 0 and 'ratelimit_exclude_clients: non-null host address bits in "2001:db8::1/64", perhaps '
         'you should use "2001:db8::/64" instead' in r.stderr,
         "a network with host bits in ratelimit_exclude_clients is refused, as Postfix words it", r.stderr)
with Petrel(t, start=False, main_cf=conf("1/1h", data_directory="/nonexistent/petrel")) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.ok(r.returncode != 0 and "the directory /nonexistent/petrel does not exist" in r.stderr,
         "a state file in a directory that does not exist is refused", r.stderr)
# --- Sentinel: two petreld share one counter on the master the sentinel names;
# after a failover they go on counting on the promoted replica. ---


def wait_for(cond, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def repl_offset(server):
    m = re.search(r"master_repl_offset:(\d+)", server.cli("INFO", "replication"))
    return int(m.group(1)) if m else -1


with RedisServer() as master, RedisServer(extra=["--replicaof", "127.0.0.1", "0"], start=False) as replica:
    replica.extra = ["--replicaof", "127.0.0.1", str(master.port)]
    replica.start()
    sentinel = RedisSentinel(master.port)
    try:
        t.ok(wait_for(lambda: str(replica.port) in sentinel.replicas(), 30), "the sentinel knows the replica")
        sent = {"ratelimit_redis_sentinels": "127.0.0.1:%d" % sentinel.port}
        with Petrel(t, main_cf=conf("3/10m", **sent)) as a, Petrel(t, main_cf=conf("3/10m", **sent)) as b:
            got = [one(a, src="127.0.0.3"), one(b, src="127.0.0.3"), one(a, src="127.0.0.3"),
                   one(b, src="127.0.0.3")]
            t.is_(got, ["250 2.1.5 Ok"] * 3 + [OVER % (3, "messages", "10m", "client 127.0.0.3")],
                  "through Sentinel: two petreld count one client together")
            t.ok(a.wait_log(r"ratelimit: connected to Redis at 127\.0\.0\.1:%d" % master.port) is not None,
                 "the module asked the sentinel for the master")
            # Redis replicates asynchronously: wait until the replica has
            # everything the master acknowledged.
            t.ok(wait_for(lambda: repl_offset(replica) == repl_offset(master) > 0, 30),
                 "the counter reaches the replica")
            master.stop()
            t.ok(wait_for(lambda: sentinel.master_port() == replica.port, 40),
                 "the sentinel promotes the replica", sentinel.log())
            # Each node finds the new master on its next command; until then a
            # failed command is not counted and not limited (the default action).
            t.ok(wait_for(lambda: one(a, src="127.0.0.4").startswith("250")
                          and "127.0.0.4" in replica.cli("KEYS", "*"), 40),
                 "after the failover the first node counts on the new master")
            t.ok(wait_for(lambda: one(b, src="127.0.0.4").startswith("250")
                          and "connected to Redis at 127.0.0.1:%d" % replica.port in b.log(), 40),
                 "and so does the second")
            t.like(one(b, src="127.0.0.3"), re.escape(OVER % (3, "messages", "10m", "client 127.0.0.3")),
                   "a count made before the failover still holds after it (replicated)")
    finally:
        sentinel.close()

t.done()
