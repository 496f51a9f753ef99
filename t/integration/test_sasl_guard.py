"""The sasl module's stolen-account guard: a login that suddenly sends far more than usual has
the message that tripped the guard, and every later one, put in the hold queue, gets 451 4.7.1
at MAIL, and the log and petrelctl metrics say why; other logins go on. The postmaster reviews
the held mail with petrelctl queue (list shows it held; release sends it on) and, once none of
it is left in hold/, the login sends again; petrelctl sasl held lists held logins and
petrelctl sasl release lets one send at once. The state is shared by the workers (several
sessions, two workers)."""
import json
import os
import re

from harness import Petrel, Tap
from modlib import bundled_module_dir
from sasllib import b64

t = Tap(timeout=200)
mods = bundled_module_dir("sasl")


def session(p, user, password):
    c = p.connect()
    c.ehlo()
    r = c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, password)))
    assert r.startswith("235"), r
    return c


def metrics(p):
    values = {}
    for line in p.petrelctl("metrics").stdout.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return {k: v for k, v in values.items() if "sasl" in k}


def send(c, user, n):
    return c.send_message("%s@example.org" % user, ["r%d@far.example" % n], "Subject: %d\r\n\r\nx" % n, ehlo=False)


with Petrel(t, start=False) as p:
    users = p.write_file("users", "alice {PLAIN}A-pw-1\nbob {PLAIN}B-pw-2\n", 0o600)
    p.write_main_cf(dict(p.settings, modules="sasl", module_directory=mods, smtpd_sasl_auth_enable="yes",
                         smtpd_sasl_type="table", smtpd_sasl_path="texthash:" + users, mynetworks="192.0.2.0/24",
                         sasl_guard_enable="yes", sasl_guard_state_file=os.path.join(p.dir, "guard.state"),
                         sasl_guard_min_messages="3", sasl_guard_factor="2"))
    p.start()
    replies = []
    for n in range(3):
        c = session(p, "alice", "A-pw-1")   # new sessions: the workers share the counts
        replies.append(send(c, "alice", n))
        c.close()
    t.ok(all(r.startswith("250 ") for r in replies), "alice's usual mail goes through", replies)
    t.is_(p.queue_files("hold"), [], "nothing held so far")
    c = session(p, "alice", "A-pw-1")
    r = send(c, "alice", 3)
    t.like(r, r"^250 ", "the message that trips the guard is accepted (into the hold queue)")
    qid = r.split()[-1]
    t.ok(p.wait_log(r"%s: sasl: sasl guard: login alice held: 4 messages to about 4 recipients within 3600s" % qid)
         is not None, "the log says which login and why")
    held = p.queue_files("hold")
    t.ok(len(held) == 1 and held[0].endswith(qid), "it is in the hold queue", held)
    t.is_(c.cmd("MAIL FROM:<alice@example.org>"),
          "451 4.7.1 Error: unusual amount of mail from this login: held for review by the postmaster, try again later",
          "alice's next transaction gets 451 4.7.1")
    c.close()
    c = session(p, "bob", "B-pw-2")
    t.like(send(c, "bob", 1), r"^250 ", "bob is not affected")
    c.close()
    values = metrics(p)
    t.ok(values.get("petrel_sasl_guard_logins_held_total") == 1.0 and
         values.get("petrel_sasl_guard_messages_held_total") == 1.0,
         "petrelctl metrics counts the held login and its held message", values)
    t.ok((values.get('petrel_module_hook_calls_total{module="sasl",hook="sasl start",verdict="success"}') or 0) >= 5,
         "and the logins the back-end accepted, among the module's calls", values)
    listing = p.petrelctl("queue", "list")
    t.ok(qid + "!" in listing.stdout, "petrelctl queue list shows the message held", listing.stdout[-800:])
    r = p.petrelctl("queue", "release", qid)
    t.ok(r.returncode == 0, "petrelctl queue release ID", [r.stdout, r.stderr])
    c = session(p, "alice", "A-pw-1")
    t.is_(c.cmd("MAIL FROM:<alice@example.org>"), "250 2.1.0 Ok", "with its held mail reviewed, alice sends again")
    t.ok(p.wait_log(r"sasl guard: login alice released \(its held mail was released or removed\)") is not None,
         "and the log says so")
    t.is_(metrics(p).get("petrel_sasl_guard_logins_released_total"), 1.0, "and the metrics")
    c.close()

    # petrelctl sasl held / release: the guard's state from any worker.
    r = p.petrelctl("sasl", "held")
    t.is_((r.returncode, r.stdout), (0, "sasl: no login is held\n"), "petrelctl sasl held: nobody held now")
    c = session(p, "alice", "A-pw-1")
    replies = [send(c, "alice", n) for n in range(10, 18)]
    c.close()
    qids = [x.split()[-1] for x in replies if x.startswith("250 ")]
    t.ok(p.wait_log(r"sasl guard: login alice held: \d+ messages", 30) is not None and
         len(p.queue_files("hold")) >= 1, "a second burst trips the guard again")
    r = p.petrelctl("sasl", "held")
    m = re.match(r"^alice: held \(\d+ messages this window; usually [\d.]+ messages, [\d.]+ recipients\); "
                 r"in the hold queue:((?: [0-9A-Z]+)+)\n$", r.stdout)
    held_ids = m.group(1).split() if m else []
    t.ok(r.returncode == 0 and m is not None and held_ids and set(held_ids) <= set(qids),
         "petrelctl sasl held lists the login and its held queue IDs", r.stdout + r.stderr)
    r = p.petrelctl("sasl", "held", "--json")
    doc = json.loads(r.stdout) if r.returncode == 0 else None
    t.ok(doc and doc[0]["login"] == "alice" and doc[0]["held"] == held_ids, "and in JSON", r.stdout + r.stderr)
    r = p.petrelctl("sasl", "release", "bob")
    t.is_((r.returncode, r.stderr), (1, "sasl: login bob is not held\n"), "releasing a login that is not held fails")
    r = p.petrelctl("sasl", "release", "alice")
    t.is_((r.returncode, r.stdout),
          (0, "sasl: login alice released; its %d held message%s stay%s in the hold queue for review "
              "(petrelctl queue list, release, delete)\n" % (len(held_ids), "" if len(held_ids) == 1 else "s",
                                                              "s" if len(held_ids) == 1 else "")),
          "petrelctl sasl release LOGIN releases it, leaving its held mail for review")
    t.ok(p.wait_log(r"sasl guard: login alice released by petrelctl") is not None, "logged")
    c = session(p, "alice", "A-pw-1")
    t.is_(c.cmd("MAIL FROM:<alice@example.org>"), "250 2.1.0 Ok", "alice sends again at once")
    c.close()
    t.ok(all(os.path.basename(f) in held_ids for f in p.queue_files("hold")) and len(p.queue_files("hold")) ==
         len(held_ids), "and her held messages are still in the hold queue", p.queue_files("hold"))
    t.is_(metrics(p).get("petrel_sasl_guard_logins_released_total"), 2.0, "the release is counted")
t.done()
