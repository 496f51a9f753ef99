"""petrelctl stats: the metrics for a person and as JSON (--json), the same
totals /metrics shows (petrelctl metrics), rates over the last minute (or
since the start), the queue and the processes; petrelctl top redraws them
every second."""
import json
import os
import re
import time

from harness import Petrel, Tap, maildir_messages, wait_for
from metricslib import parse_metrics

t = Tap(timeout=200)
QMGR = "qmgr unix n - n 300 1 qmgr\n"

with Petrel(t, extra_services=QMGR, start=False) as p:
    mail = os.path.join(p.dir, "mail")
    os.mkdir(mail)
    if p.pw:
        os.chown(mail, p.pw.pw_uid, p.pw.pw_gid)
    conf = dict(p.settings)
    conf.update({
        "virtual_mailbox_domains": "vmail.test",
        "virtual_mailbox_base": mail,
        "virtual_mailbox_maps": "inline:{ {u@vmail.test = vmail.test/u/} }",
        "relay_domains": "later.test",
        "transport_maps": "inline:{ {later.test = retry:4.4.1 try again later} }",
        "mynetworks": "127.0.0.2/32",
    })
    p.write_main_cf(conf)
    p.start()
    # The first sample for the rates is taken at the start: let a little time pass
    # so the window is not a fraction of a second (rates need a window of 1 s).
    time.sleep(2)

    c = p.connect()
    for i in range(3):
        t.like(c.send_message("u@vmail.test", ["u@vmail.test"], "Subject: %d\r\n\r\nx\r\n" % i, ehlo=(i == 0)),
               r"^250 ", "message %d queued" % i)
    t.like(c.send_message("u@vmail.test", ["y@later.test"], "Subject: later\r\n\r\ny\r\n", ehlo=False), r"^250 ",
           "a message that will be deferred")
    t.like(c.cmd("MAIL FROM:<u@vmail.test>"), r"^250 ", "MAIL")
    t.like(c.cmd("RCPT TO:<z@elsewhere.example>"), r"^454 ", "a relay attempt is rejected")
    c.close()
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(mail, "vmail.test/u"))) == 3), "three delivered")
    t.ok(wait_for(lambda: len(p.queue_files("deferred")) == 1), "one deferred")

    # A mailbox file appears before the delivery agent's report reaches the
    # queue manager, which counts the delivery and retires the message: wait
    # for that (on a loaded machine it can take a while), then check exactly.
    def settled():
        r = p.petrelctl("stats", "--json")
        if r.returncode != 0:
            return False
        s = json.loads(r.stdout)
        return (s["counters"]["deliveries_sent"]["total"] >= 3 and s["counters"]["deliveries_deferred"]["total"] >= 1
                and s["queue"]["active"]["messages"] == 0)
    t.ok(wait_for(settled), "the queue manager has counted the deliveries and retired the messages")

    r = p.petrelctl("stats", "--json")
    t.is_(r.returncode, 0, "petrelctl stats --json answers")
    stats = json.loads(r.stdout)
    counters = stats["counters"]
    metrics = parse_metrics(p.petrelctl("metrics").stdout)
    conns = sum(v for k, v in metrics.items() if k.startswith("petrel_smtpd_connections_total{"))
    t.is_(counters["connections"]["total"], conns, "connections: the total /metrics shows (%d)" % conns)
    t.is_(counters["messages_received"]["total"], 4, "four messages received")
    t.is_(counters["recipients_received"]["total"], 4, "four recipients")
    t.is_(counters["rejects"]["total"], 1, "one restriction reject")
    t.is_(counters["replies_4xx"]["total"], 1, "one 4xx reply")
    t.is_(counters["deliveries_sent"]["total"], 3, "three deliveries sent")
    t.is_(counters["deliveries_deferred"]["total"], 1, "one deferred")
    t.is_(counters["deliveries_bounced"]["total"], 0, "none bounced")
    t.is_(stats["queue"]["deferred"]["messages"], 1, "the deferred queue holds one message")
    t.ok(stats["queue"]["deferred"]["oldest_age_seconds"] >= 0, "with an age")
    t.is_(stats["processes"]["smtpd"], {"running": 2, "expected": 2}, "two smtpd workers of two")
    t.is_(stats["processes"]["qmgr"], {"running": 1, "expected": 1}, "the queue manager")
    window = stats["rate_window_seconds"]
    t.ok(window is not None and 1 <= window <= 61, "rates over the time since the start or the last minute (%s s)"
         % window)
    per_minute = counters["messages_received"]["per_minute"]
    t.ok(per_minute is not None and abs(per_minute * window / 60.0 - 4) <= 0.01,
         "messages per minute = 4 over the window (%s/min over %s s)" % (per_minute, window))
    t.ok(stats["uptime_seconds"] >= 0, "uptime")

    r = p.petrelctl("stats")
    t.is_(r.returncode, 0, "petrelctl stats answers")
    t.like(r.stdout, r"^petrel: up \d+ s, configuration generation 1\n", "uptime and generation")
    t.like(r.stdout, r"\nprocesses: smtpd 2/2, qmgr 1/1, pickup 0/0\n", "processes")
    t.like(r.stdout, r"\nmessages received +4 +[\d.]+/min\n", "messages received with a rate")
    t.like(r.stdout, r"\ndeliveries deferred +1 ", "deliveries deferred")
    t.like(r.stdout, r"\nqueue: incoming 0, active 0, deferred 1 \(oldest \d+ s\), hold 0, corrupt 0, maildrop 0\n",
           "the queue")
    r = p.petrelctl("top", "-n", "2")
    t.is_(r.returncode, 0, "petrelctl top -n 2 (not a terminal: batch mode)")
    screens = re.findall(r"^petrelctl top - \d\d:\d\d:\d\d - every 1 s, q to quit\npetrel: up ", r.stdout, re.M)
    t.is_(len(screens), 2, "two screens, one a second, each petrelctl stats' figures")
    t.is_(len(re.findall(r"^messages received +4 ", r.stdout, re.M)), 2, "with the totals")
    t.ok("\033[2J" not in r.stdout, "nothing cleared without a terminal")
    r = p.petrelctl("top", "-n", "zero")
    t.is_((r.returncode, r.stderr.strip()), (2, "petrelctl: top: usage: petrelctl top [-b] [-n COUNT]"), "a bad count")
    r = p.petrelctl("stats", "--yaml")
    t.is_((r.returncode, r.stderr.strip()), (2, 'petrelctl: stats: unknown option "--yaml" (only --json)'),
          "an unknown option is refused")
with Petrel(t, start=False) as stopped:
    r = stopped.petrelctl("stats")
    t.ok(r.returncode != 0 and "not running" in r.stderr, "without a running petreld: says it is not running")
t.done()
