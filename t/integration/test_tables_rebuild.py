"""Tables rebuilt while petreld reads them under load.

Client threads keep sending mail whose every recipient needs the table (virtual_alias_maps, a
hash: table and a cdb: table from the module), listed and unlisted addresses mixed, while
another thread rebuilds both tables with `petrelctl map build` in a loop, each rebuild with
different contents for one flapping key. No reply may be a 4xx, no listed address may ever be
refused and no unlisted one accepted, and nothing may be logged as a lookup error: a lookup sees
the old file or the new one, never a half-written one. Afterwards a key added by the last
rebuild is accepted without a reload (petreld reopens a rebuilt file by itself), and every
accepted message is delivered.
"""
import os
import threading

from harness import Petrel, Tap, maildir_messages, wait_for
from tablelib import bundled_module_dir

t = Tap(timeout=400)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
LISTED = 100
ROUNDS = 30        # rebuilds of each table
CLIENTS = 4


def table_text(domain, generation):
    lines = ["k%d@%s box@vmail.test" % (i, domain) for i in range(LISTED)]
    if generation % 2 == 0:
        lines.append("flap@%s box@vmail.test" % domain)
    lines.append("gen%d@%s box@vmail.test" % (generation, domain))
    return "\n".join(lines) + "\n"


with Petrel(t, extra_services=QMGR, start=False) as p:
    mail = p.make_dir()
    specs = {}
    for kind, domain in (("hash", "h.test"), ("cdb", "c.test")):
        src = p.write_file("valias-" + kind, table_text(domain, 0))
        specs[domain] = "%s:%s" % (kind, src)
    conf = dict(p.settings)
    conf.update({"modules": "cdb", "module_directory": bundled_module_dir("cdb"),
                 "virtual_alias_domains": "h.test c.test", "virtual_alias_maps": " ".join(specs.values()),
                 "virtual_mailbox_domains": "vmail.test", "virtual_mailbox_base": mail,
                 "virtual_mailbox_maps": "inline:{ {box@vmail.test = box/} }"})
    p.write_main_cf(conf)
    for spec in specs.values():
        t.is_(p.petrelctl("map", "build", spec).returncode, 0, "%s built" % spec.split(":")[0])
    p.start()

    stop = threading.Event()
    lock = threading.Lock()
    results = {"listed": 0, "unlisted": 0, "bad": [], "accepted": 0, "flap": {}}

    def client(n):
        try:
            session_loop(n)
        except Exception as e:   # a dropped connection (a worker that died) is a failure too
            with lock:
                results["bad"].append(("client %d" % n, repr(e)))

    def session_loop(n):
        i = 0
        while not stop.is_set():
            c = p.connect()
            c.ehlo("load%d.test" % n)
            c.cmd("MAIL FROM:<load%d@example.org>" % n)
            good = 0
            for domain in specs:
                for k in range(5):
                    key = "k%d@%s" % ((i * 5 + k + n) % LISTED, domain)
                    reply = c.cmd("RCPT TO:<%s>" % key)
                    with lock:
                        if c.code == 250:
                            results["listed"] += 1
                            good += 1
                        else:
                            results["bad"].append((key, reply))
                reply = c.cmd("RCPT TO:<nobody%d@%s>" % (i, domain))
                with lock:
                    if c.code == 550:
                        results["unlisted"] += 1
                    else:
                        results["bad"].append(("nobody@" + domain, reply))
                reply = c.cmd("RCPT TO:<flap@%s>" % domain)
                with lock:
                    results["flap"][c.code] = results["flap"].get(c.code, 0) + 1
                    if c.code == 250:
                        good += 1
                    elif c.code != 550:
                        results["bad"].append(("flap@" + domain, reply))
            if good and i % 3 == 0:
                c.cmd("DATA")
                c.send("Subject: load %d %d\r\n\r\nx\r\n.\r\n" % (n, i))
                reply = c.read_reply()
                with lock:
                    if c.code == 250:
                        results["accepted"] += 1
                    else:
                        results["bad"].append(("DATA", reply))
            c.cmd("QUIT")
            c.close()
            i += 1

    builds = {"ok": 0, "failed": []}

    def listed():
        with lock:
            return results["listed"]

    def refused_flap():
        with lock:
            return results["flap"].get(550)

    def rebuilder():
        for generation in range(1, ROUNDS + 1):
            for domain, spec in specs.items():
                p.write_file(spec.split(":", 1)[1].split("/")[-1], table_text(domain, generation))
                r = p.petrelctl("map", "build", spec)
                if r.returncode == 0:
                    builds["ok"] += 1
                else:
                    builds["failed"].append(r.stderr)
            # Each generation is looked up by at least two sessions (ten listed
            # RCPTs a session) before the next: the load and both answers for the
            # flapping key come from the rebuilds, not from how the scheduler
            # shares the machine between this thread and the clients.
            mark = listed()
            wait_for(lambda: listed() >= mark + 20, timeout=30)
            if generation == 1:
                # generation 1 has no flap@ (0 had): a worker checks a table for a
                # rebuild at most once a second, so wait until one has followed it
                # (a 550), rather than hope a later check lands on an odd one
                wait_for(refused_flap, timeout=30)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for th in threads:
        th.start()
    rb = threading.Thread(target=rebuilder)
    rb.start()
    rb.join()
    stop.set()
    for th in threads:
        th.join()

    t.is_((builds["ok"], builds["failed"]), (2 * ROUNDS, []), "%d rebuilds under load, all succeeded" % (2 * ROUNDS))
    t.is_(results["bad"], [], "no 4xx and no wrong answer in %d listed and %d unlisted recipients"
          % (results["listed"], results["unlisted"]))
    t.ok(results["listed"] > 500 and results["unlisted"] > 50, "the load was real (%d listed, %d unlisted RCPTs)"
         % (results["listed"], results["unlisted"]))
    t.ok(results["flap"].get(250) and results["flap"].get(550),
         "the flapping key was seen both ways: the workers followed the rebuilds (%r)" % results["flap"])
    log = p.log()
    t.ok("lookup error" not in log and "lookup failure" not in log and "cannot be opened" not in log,
         "no lookup error and no unreadable table in the log")
    t.ok("killed by signal" not in log and "panic" not in log, "no worker died")
    t.ok("was rebuilt: now using the new file" in log, "the reopen is logged")

    # The last generation's own key, without a reload.
    for domain in specs:
        last = "gen%d@%s" % (ROUNDS, domain)

        def accepted():
            c = p.connect()
            c.ehlo("late.test")
            c.cmd("MAIL FROM:<late@example.org>")
            ok = c.cmd("RCPT TO:<%s>" % last).startswith("250")
            c.close()
            return ok
        t.ok(wait_for(accepted, timeout=30), "%s: a key only the last rebuild added is accepted, no reload" % domain)

    delivered = wait_for(lambda: len(maildir_messages(os.path.join(mail, "box"))) >= results["accepted"], timeout=60)
    t.ok(delivered, "every accepted message (%d) is delivered" % results["accepted"])
    stray = [f for f in os.listdir(p.dir) if ".lmdb." in f or ".cdb." in f]
    t.is_(stray, [], "no temporary files are left behind")

t.done()
