"""petrelctl stats: the metrics for a person and as JSON (--json), the same
totals /metrics shows (petrelctl metrics), rates over the last minute (or
since the start), the queue and the processes; petrelctl top redraws them
every second, with the busiest destinations (real deliveries to Postfix's
smtp-sink, a deferring route, a bounce) and the modules' latency over the
last minute; mailbox deliveries' fsync latency is a histogram in /metrics."""
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
import time

from harness import PETRELCTL, Petrel, Tap, free_port, maildir_messages, wait_for
from metricslib import parse_metrics
from modlib import module_dir
from serverlib import Sink

t = Tap(timeout=200)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
SINK_PORT = free_port()
sink = Sink(SINK_PORT, options=("-c",))

with Petrel(t, extra_services=QMGR, start=False) as p:
    mail = p.virtual_mailboxes({"u@vmail.test": "vmail.test/u/"}, {
        "relay_domains": "later.test remote.test gone.test",
        "transport_maps": "inline:{ {later.test = retry:4.4.1 try again later}, "
                          "{remote.test = smtp:[127.0.0.1]:%d}, {gone.test = error:5.1.1 no such domain} }" % SINK_PORT,
        "mynetworks": "127.0.0.2/32",
        "modules": "testmod", "module_directory": module_dir("testmod"),
    })
    t.ok(wait_for(sink.listening), "smtp-sink listens")
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
    for i in range(2):
        t.like(c.send_message("u@vmail.test", ["r%d@remote.test" % i], "Subject: r%d\r\n\r\nr\r\n" % i,
                              ehlo=False), r"^250 ", "message %d to the sink queued" % i)
    t.like(c.send_message("u@vmail.test", ["x@gone.test"], "Subject: gone\r\n\r\ng\r\n", ehlo=False), r"^250 ",
           "a message that will bounce")
    t.like(c.cmd("MAIL FROM:<u@vmail.test>"), r"^250 ", "MAIL")
    t.like(c.cmd("RCPT TO:<z@elsewhere.example>"), r"^454 ", "a relay attempt is rejected")
    c.close()
    # three, and the bounce of the message to gone.test
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(mail, "vmail.test/u"))) == 4, timeout=60), "four delivered")
    t.ok(wait_for(lambda: len(p.queue_files("deferred")) == 1, timeout=60), "one deferred")

    # A mailbox file appears before the delivery agent's report reaches the
    # queue manager, which counts the delivery and retires the message: wait
    # for that (on a loaded machine it can take a while), then check exactly.
    def settled():
        r = p.petrelctl("stats", "--json")
        if r.returncode != 0:
            return False
        s = json.loads(r.stdout)
        return (s["counters"]["deliveries_sent"]["total"] >= 6 and s["counters"]["deliveries_deferred"]["total"] >= 1
                and s["queue"]["active"]["messages"] == 0)
    t.ok(wait_for(settled, timeout=60), "the queue manager has counted the deliveries and retired the messages")

    r = p.petrelctl("stats", "--json")
    t.is_(r.returncode, 0, "petrelctl stats --json answers")
    stats = json.loads(r.stdout)
    counters = stats["counters"]
    metrics = parse_metrics(p.petrelctl("metrics").stdout)
    conns = sum(v for k, v in metrics.items() if k.startswith("petrel_smtpd_connections_total{"))
    t.is_(counters["connections"]["total"], conns, "connections: the total /metrics shows (%d)" % conns)
    t.is_(counters["messages_received"]["total"], 7, "seven messages received")
    t.is_(counters["recipients_received"]["total"], 7, "seven recipients")
    t.is_(counters["rejects"]["total"], 1, "one restriction reject")
    t.is_(counters["replies_4xx"]["total"], 1, "one 4xx reply")
    t.is_(counters["deliveries_sent"]["total"], 6, "six deliveries sent (three to the mailbox, two to the sink, the "
          "bounce notice)")
    t.is_(counters["deliveries_deferred"]["total"], 1, "one deferred")
    t.is_(counters["deliveries_bounced"]["total"], 1, "one bounced")
    t.is_(stats["queue"]["deferred"]["messages"], 1, "the deferred queue holds one message")
    t.ok(stats["queue"]["deferred"]["oldest_age_seconds"] >= 0, "with an age")
    t.is_(stats["processes"]["smtpd"], {"running": 2, "expected": 2}, "two smtpd workers of two")
    t.is_(stats["processes"]["qmgr"], {"running": 1, "expected": 1}, "the queue manager")
    window = stats["rate_window_seconds"]
    t.ok(window is not None and 1 <= window <= 61, "rates over the time since the start or the last minute (%s s)"
         % window)
    per_minute = counters["messages_received"]["per_minute"]
    t.ok(per_minute is not None and abs(per_minute * window / 60.0 - 7) <= 0.01,
         "messages per minute = 7 over the window (%s/min over %s s)" % (per_minute, window))
    t.ok(stats["uptime_seconds"] >= 0, "uptime")

    # Mailbox deliveries: their fsync time, one sample per message made durable.
    fsyncs = metrics.get('petrel_mailbox_fsync_duration_seconds_count{transport="virtual",format="maildir"}')
    t.is_(fsyncs, 4, "the fsync latency of four maildir deliveries is in the histogram")
    t.ok(metrics.get('petrel_mailbox_fsync_duration_seconds_sum{transport="virtual",format="maildir"}', -1) > 0,
         "with their time")

    # The busiest destinations: the queue manager's board.
    def board():
        s = json.loads(p.petrelctl("stats", "--json").stdout)
        return {(d["transport"], d["destination"]): d for d in s["destinations"]}
    sink_key = ("smtp", "[127.0.0.1]:%d" % SINK_PORT)
    t.ok(wait_for(lambda: board().get(sink_key, {}).get("total", {}).get("sent") == 2, timeout=30),
         "the board shows the sink's two deliveries (published every second)")
    dests = board()
    sink_row = dests[sink_key]
    t.is_((sink_row["active"], sink_row["in_delivery"], sink_row["deferred"], sink_row["concurrency"],
           sink_row["concurrency_limit"], sink_row["last_minute"], sink_row["last_error"]),
          (0, 0, 0, 0, 20, {"sent": 2, "deferred": 0, "bounced": 0}, None),
          "the sink: nothing active, in delivery (0 of default_destination_concurrency_limit 20) or deferred, two "
          "sent in the last minute, no error")
    retry = dests.get(("retry", None), {})
    t.is_((retry.get("deferred"), retry.get("last_minute", {}).get("deferred")), (1, 1),
          "the retry route: one recipient waiting in deferred/, one deferral in the last minute")
    t.is_((retry.get("last_error") or {}).get("text"), "4.4.1 try again later", "with its last error")
    gone = dests.get(("error", None), {})
    t.is_((gone.get("total", {}).get("bounced"), (gone.get("last_error") or {}).get("text")),
          (1, "5.1.1 no such domain"), "the error route: one bounce, and why")
    t.is_(dests.get(("virtual", None), {}).get("total", {}).get("sent"), 4,
          "every virtual mailbox is one row (no mailbox is named): four sent")
    modules = {m["module"]: m for m in stats["modules"]}
    testmod = modules.get("testmod", {})
    t.ok(testmod.get("hook_calls_per_minute") and testmod.get("mean_hook_seconds_last_minute") is not None,
         "a module's calls and mean latency over the last minute (%s/min, %s s)"
         % (testmod.get("hook_calls_per_minute"), testmod.get("mean_hook_seconds_last_minute")))

    r = p.petrelctl("stats")
    t.is_(r.returncode, 0, "petrelctl stats answers")
    t.like(r.stdout, r"^petrel: up \d+ s, configuration generation 1\n", "uptime and generation")
    t.like(r.stdout, r"\nprocesses: smtpd 2/2, qmgr 1/1, pickup 0/0\n", "processes")
    t.like(r.stdout, r"\nmessages received +7 +[\d.]+/min\n", "messages received with a rate")
    t.like(r.stdout, r"\ndeliveries deferred +1 ", "deliveries deferred")
    t.like(r.stdout, r"\n  smtp:\[127\.0\.0\.1\]:%d +0 +0/20 +0 +2 +0 +0  -\n" % SINK_PORT,
           "the sink's row: active, concurrency in use of its limit, deferred, sent, deferrals and bounces in the last minute, no error")
    t.like(r.stdout, r"\n  retry +0 +0/20 +1 +0 +1 +0  \d+ s ago: 4\.4\.1 try again later\n", "the retry route's row")
    t.like(r.stdout, r"\n  testmod .*; [\d.]+ calls/min, mean [\d.]+ ms\n", "the module's last minute")
    t.like(r.stdout, r"\nqueue: incoming 0, active 0, deferred 1 \(oldest \d+ s\), hold 0, corrupt 0, maildrop 0\n",
           "the queue")
    r = p.petrelctl("top", "-n", "2")
    t.is_(r.returncode, 0, "petrelctl top -n 2 (not a terminal: batch mode)")
    screens = re.findall(r"^petrelctl top - \d\d:\d\d:\d\d - every 1 s, q to quit\npetrel: up ", r.stdout, re.M)
    t.is_(len(screens), 2, "two screens, one a second, each petrelctl stats' figures")
    t.is_(len(re.findall(r"^messages received +7 ", r.stdout, re.M)), 2, "with the totals")
    t.ok("\033[2J" not in r.stdout, "nothing cleared without a terminal")
    t.is_(len(re.findall(r"^destinations:\n", r.stdout, re.M)), 2, "each screen with the busiest destinations")
    # On a terminal 60 columns wide: the screen is cleared and no line wraps
    # (a destination's last error is longer than that).
    master_fd, slave_fd = pty.openpty()
    fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 60, 0, 0))
    proc = subprocess.Popen(p.command(PETRELCTL, "-c", p.conf, "top", "-n", "1"), stdin=subprocess.DEVNULL,
                            stdout=slave_fd, stderr=subprocess.PIPE)
    os.close(slave_fd)
    screen = b""
    while True:
        try:
            data = os.read(master_fd, 65536)
        except OSError:
            break
        if not data:
            break
        screen += data
    proc.wait(timeout=30)
    os.close(master_fd)
    lines = screen.decode("utf-8", "replace").replace("\033[H\033[2J", "").split("\r\n")
    t.ok(screen.startswith(b"\033[H\033[2J") and "  retry" in screen.decode(), "on a terminal: cleared, then drawn")
    t.is_([x for x in lines if len(x) > 60], [], "no line wider than the terminal's 60 columns")
    r = p.petrelctl("top", "-n", "zero")
    t.is_((r.returncode, r.stderr.strip()), (2, "petrelctl: top: usage: petrelctl top [-b] [-n COUNT]"), "a bad count")
    # Tried again (petrelctl queue flush) and deferred again: still one
    # recipient waiting there, not two.
    t.is_(p.petrelctl("queue", "flush").returncode, 0, "petrelctl queue flush")
    t.ok(wait_for(lambda: (board().get(("retry", None), {}).get("total", {}).get("deferred") == 2
                           and len(p.queue_files("deferred")) == 1), timeout=30), "the deferred message was tried again")
    t.is_(board()[("retry", None)]["deferred"], 1, "and counts once in deferred/")
    r = p.petrelctl("stats", "--yaml")
    t.is_((r.returncode, r.stderr.strip()), (2, 'petrelctl: stats: unknown option "--yaml" (only --json)'),
          "an unknown option is refused")
with Petrel(t, start=False) as stopped:
    r = stopped.petrelctl("stats")
    t.ok(r.returncode != 0 and "not running" in r.stderr, "without a running petreld: says it is not running")
sink.stop()
t.done()
