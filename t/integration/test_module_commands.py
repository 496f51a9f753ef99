"""Module control commands (petrelctl MODULE COMMAND, plugin API 1.1
petrel_command) against real peers: petrelctl greylist list|whitelist|delete
with a real redis-server shared by two petreld (what one node's command
changes, the other node sees), --json, the errors petrelctl reports (unknown
module or command, bad arguments, Redis down, petreld not running), and the
control socket's permission (another user cannot run them)."""
import json
import os
import subprocess
import tempfile
import time

from harness import CLEANUP_DIRS, PETRELCTL, Petrel, Tap, run_as_user
from modlib import bundled_module_dir, rcpt_reply, smtp_from
from redislib import RedisServer

t = Tap()
mods = bundled_module_dir("greylist", "ratelimit")
DELAY = 2


def conf(redis_addr, **extra):
    c = {"modules": "greylist", "module_directory": mods, "mynetworks": "192.0.2.0/24",
         "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination, check_greylist",
         "greylist_redis": redis_addr, "greylist_delay": "%ds" % DELAY, "greylist_redis_timeout": "1s",
         "greylist_auto_whitelist_count": "0", "smtpd_workers": "2"}
    c.update(extra)
    return c


def attempt(p, sender="alice@sender.example", rcpt="user@petrel.test", src="127.0.0.2"):
    c = smtp_from(p.port, src=src)
    r = rcpt_reply(c, sender=sender, rcpt=rcpt)
    c.close()
    return r


def check(got, want, desc, extra=""):
    return t.ok(got == want, desc, "got:  %r\nwant: %r\n%s" % (got, want, extra))


def ctl(p, *args):
    r = p.petrelctl(*args)
    return r.returncode, r.stdout, r.stderr


with RedisServer() as redis:
    addr = "127.0.0.1:%d" % redis.port
    with Petrel(t, main_cf=conf(addr)) as a, Petrel(t, main_cf=conf(addr)) as b:
        rc, out, err = ctl(a, "greylist", "list")
        check(rc, 0, "greylist list with nothing in Redis succeeds", err)
        t.like(out, r"^greylist: no triplets or clients\n$", "and says there is nothing")

        t.like(attempt(a), r"^450 4\.7\.1 ", "a first attempt is greylisted")
        t.like(attempt(b, sender="bob@other.example", rcpt="user2@petrel.test", src="127.0.3.4"), r"^450 4\.7\.1 ",
               "another triplet, on the other node")
        rc, out, err = ctl(b, "greylist", "list")
        check(rc, 0, "greylist list succeeds", err)
        t.like(out, r"(?m)^127\.0\.0\.0/24 <alice@sender\.example> <user@petrel\.test>: greylisted, a retry passes "
                    r"in [0-2] s \(first seen \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$",
               "it shows the first node's triplet, read from the shared Redis (asked of the second node)")
        t.like(out, r"(?m)^127\.0\.3\.0/24 <bob@other\.example> <user2@petrel\.test>: greylisted", "and its own")

        rc, out, err = ctl(a, "greylist", "list", "127.0.3.4")
        t.ok(rc == 0 and "bob@other.example" in out and "alice@" not in out,
             "greylist list CLIENT shows the triplets of the client's network only", out + err)

        time.sleep(DELAY + 0.5)
        check(attempt(a), "250 2.1.5 Ok", "the retry passes")
        rc, out, err = ctl(a, "greylist", "list", "--json")
        check(rc, 0, "greylist list --json succeeds", err)
        try:
            doc = json.loads(out)
        except ValueError as e:
            doc = None
            t.diag("not JSON: %s: %r" % (e, out))
        t.ok(doc is not None and set(doc) == {"triplets", "clients", "truncated"}, "--json gives one JSON object",
             out)
        trip = [x for x in (doc or {}).get("triplets", []) if x["recipient"] == "user@petrel.test"]
        t.ok(len(trip) == 1 and trip[0]["state"] == "passed" and trip[0]["client_network"] == "127.0.0.0/24"
             and trip[0]["sender"] == "alice@sender.example" and trip[0]["first_seen"] > 1700000000
             and trip[0]["expires_in"] > 35 * 86400 - 60, "the passed triplet with its fields", trip)

        # whitelist: on one node, effective on the other at once.
        t.like(attempt(b, sender="carol@new.example", src="127.0.9.9"), r"^450 4\.7\.1 ",
               "a new client is greylisted")
        rc, out, err = ctl(a, "greylist", "whitelist", "127.0.9.9")
        check(rc, 0, "greylist whitelist CLIENT succeeds", err)
        t.like(out, r"^greylist: client 127\.0\.9\.9 whitelisted for 3024000 s \(greylist_max_age\)\n$",
               "and says for how long")
        check(attempt(b, sender="dave@new.example", src="127.0.9.9"), "250 2.1.5 Ok",
              "the other node no longer greylists the client")
        t.ok(b.wait_log(r"greylist: action=pass, reason=client whitelisted \(petrelctl\), client=\S+\[127\.0\.9\.9\]")
             is not None, "and logs why")
        ttl = int(redis.cli("TTL", "petrel:greylist:w:127.0.9.9"))
        t.ok(35 * 86400 - 60 < ttl <= 35 * 86400, "the whitelist entry expires after greylist_max_age", ttl)
        rc, out, err = ctl(a, "greylist", "list", "127.0.9.9")
        t.like(out, r"(?m)^client 127\.0\.9\.9: whitelisted \(petrelctl greylist whitelist\) until \d{4}-",
               "greylist list shows the whitelisted client")

        # delete: one triplet, then a whole client.
        rc, out, err = ctl(b, "greylist", "delete", "127.0.0.2", "<alice@sender.example>", "user@petrel.test")
        check((rc, out), (0, "greylist: triplet 127.0.0.0/24 <alice@sender.example> <user@petrel.test> deleted\n"),
              "greylist delete CLIENT SENDER RECIPIENT deletes one triplet", err)
        t.like(attempt(a), r"^450 4\.7\.1 ", "that triplet is greylisted again")
        rc, out, err = ctl(b, "greylist", "delete", "127.0.0.2", "nobody@x.example", "user@petrel.test")
        check((rc, err), (1, "greylist: triplet 127.0.0.0/24 <nobody@x.example> <user@petrel.test> deleted: "
                             "not found\n"), "deleting a triplet Redis does not hold fails and says so")
        rc, out, err = ctl(a, "greylist", "delete", "127.0.9.9")
        check((rc, out), (0, "greylist: client 127.0.9.9: whitelist entry and passes deleted\n"
                             "greylist: deleted 1 triplet of 127.0.9.0/24\n"),
              "greylist delete CLIENT forgets the client's whitelisting and its network's triplets", err)
        t.like(attempt(b, sender="erin@new.example", src="127.0.9.9"), r"^450 4\.7\.1 ",
               "the client is greylisted again")
        t.ok(a.wait_log(r"greylist: running command delete for petrelctl") is not None,
             "a worker logs the command it runs")

        # Errors, with their exit status and text.
        rc, out, err = ctl(a, "greylist", "whitelist", "not-an-address")
        check((rc, err), (2, "greylist: \"not-an-address\" is not an IPv4 or IPv6 address\n"
                             "usage: petrelctl greylist whitelist CLIENT\n"), "a bad address: exit 2 and the usage")
        rc, out, err = ctl(a, "greylist", "whitelist")
        check((rc, err), (2, "petrelctl greylist whitelist: missing arguments\nusage: petrelctl greylist whitelist "
                             "CLIENT\n"), "a missing argument: refused by the master with the usage")
        rc, out, err = ctl(a, "greylist", "whitelist", "--json", "127.0.0.1")
        check((rc, err.splitlines()[0] if err else ""), (2, "petrelctl greylist whitelist: has no JSON output: "
                                                            "\"--json\""), "--json where there is none")
        rc, out, err = ctl(a, "greylist", "frobnicate")
        t.ok(rc == 2 and err.startswith("module greylist has no command \"frobnicate\"\ncommands of module greylist:"),
             "an unknown command of the module lists its commands", err)
        rc, out, err = ctl(a, "greylist", "help")
        t.ok(rc == 0 and "  petrelctl greylist list [--json] [CLIENT]\n" in out and "  petrelctl greylist delete CLIENT [SENDER RECIPIENT]"
             in out, "greylist help lists the commands with their usage", out + err)
        rc, out, err = ctl(a, "nosuchmodule", "list")
        check((rc, err), (2, "unknown command \"nosuchmodule\": not a petrelctl command, and no loaded module has "
                             "that name (modules: greylist)\n"), "an unknown command or module")
        rc, out, err = ctl(a, "greylist", "list", "1.2.3.4", "x" * 5000)
        check(rc, 2, "too many or too long arguments are refused", err)

        # Another user cannot reach the control socket.
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PETRELCTL, "-c", a.conf,
                            "greylist", "list"], capture_output=True, text=True)
        t.ok(r.returncode == 1 and "Permission denied" in r.stderr,
             "another user cannot run module commands (the control socket is the admin's)", r.stderr)

        # Redis down: a clear error, not a hang.
        redis.stop()
        rc, out, err = ctl(a, "greylist", "list")
        t.ok(rc == 1 and err.startswith("greylist: Redis: "), "Redis down: greylist list fails and says why", err)
        redis.start()

    with Petrel(t, main_cf=conf(addr), start=False) as a:
        rc, out, err = ctl(a, "greylist", "list")
        t.ok(rc == 1 and "no running petreld to ask" in err, "petreld not running: petrelctl says so", err)


# --- petrelctl ratelimit show ---
def rl_conf(rules, **extra):
    d = tempfile.mkdtemp(prefix="petrel-data-")
    CLEANUP_DIRS.append(d)
    _, pw = run_as_user()
    if pw:
        os.chown(d, pw.pw_uid, pw.pw_gid)
    c = {"modules": "ratelimit", "module_directory": mods, "mynetworks": "192.0.2.0/24", "data_directory": d,
         "smtpd_recipient_restrictions": rules + ", reject_unauth_destination", "smtpd_workers": "2"}
    c.update(extra)
    return c


def transaction(p, src="127.0.0.5", sender="alice@sender.example", rcpts=("user@petrel.test",)):
    c = smtp_from(p.port, src=src)
    c.ehlo()
    c.cmd("MAIL FROM:<%s>" % sender)
    replies = [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]
    c.cmd("QUIT")
    c.close()
    return replies


with Petrel(t, main_cf=rl_conf("check_rate_limit 3/1m")) as p:
    for i in range(2):
        transaction(p)
    # Both workers map the same counters: whichever runs the command sees both messages.
    for attempt_no in range(3):
        rc, out, err = ctl(p, "ratelimit", "show", "client=127.0.0.5")
        check((rc, out), (0, "check_rate_limit 3/1m client messages: 2 of 3 messages in the last 1m for client "
                             "127.0.0.5\n"), "ratelimit show client=ADDR: the in-memory count (try %d)" % attempt_no, err)
    rc, out, err = ctl(p, "ratelimit", "show", "127.0.0.5")
    check(rc, 0, "a bare address is a client key", err)
    transaction(p)
    rc, out, err = ctl(p, "ratelimit", "show", "--json", "client=127.0.0.5")
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    check(doc, {"key": "client=127.0.0.5", "rules": [{"rule": "3/1m client messages", "limit": 3, "window_seconds": 60,
                                                      "counting": "messages", "count": 3, "over": True}]},
          "--json gives the rule, its limit, window and count, and that the key is at the limit", out + err)
    rc, out, err = ctl(p, "ratelimit", "show", "client=127.0.0.77")
    check((rc, out), (0, "check_rate_limit 3/1m client messages: 0 of 3 messages in the last 1m for client "
                         "127.0.0.77\n"), "a key never seen counts 0", err)
    rc, out, err = ctl(p, "ratelimit", "show", "sender=bob@x.example")
    check((rc, err), (1, "ratelimit: no check_rate_limit rule counts by exactly sender bob@x.example; the rules are: "
                         "3/1m client messages\n"), "a key no rule counts by: exit 1 naming the rules")
    rc, out, err = ctl(p, "ratelimit", "show", "colour=blue")
    check((rc, err), (2, "ratelimit show: \"colour\": keys are client, sender, sasl_user and recipient_domain\n"
                         "usage: petrelctl ratelimit show [--json] KEY\n"), "an unknown key part: exit 2 and the usage")

with RedisServer() as redis:
    rules = "check_rate_limit 10/1h, check_rate_limit { 5/1h sender recipients }"
    rc_conf = lambda: rl_conf(rules, ratelimit_redis="127.0.0.1:%d" % redis.port)
    with Petrel(t, main_cf=rc_conf()) as a, Petrel(t, main_cf=rc_conf()) as b:
        transaction(a, rcpts=("user@petrel.test", "user2@petrel.test"))
        transaction(b, rcpts=("user3@petrel.test",))
        rc, out, err = ctl(b, "ratelimit", "show", "sender=Alice@Sender.Example")
        check((rc, out), (0, "check_rate_limit 5/1h sender recipients: 3 of 5 recipients in the last 1h for sender "
                             "Alice@Sender.Example\n"),
              "ratelimit show on Redis: the recipients both nodes counted (the sender in any case)", err)
        rc, out, err = ctl(a, "ratelimit", "show", "client=127.0.0.5")
        check((rc, out), (0, "check_rate_limit 10/1h client messages: 2 of 10 messages in the last 1h for client "
                             "127.0.0.5\n"), "and the messages, per client", err)
        redis.stop()
        rc, out, err = ctl(a, "ratelimit", "show", "client=127.0.0.5")
        t.ok(rc == 1 and err.startswith("ratelimit: Redis: "), "Redis down: show fails and says why", err)

t.done()
