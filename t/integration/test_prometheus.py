"""A real Prometheus (Debian's package) scrapes petreld's metrics endpoint
every second while the test sends, rejects, defers and bounces mail: each
counter moves by exactly the right amount, read through Prometheus' HTTP
API; `promtool check metrics` accepts the output; an smtpd worker killed
with SIGKILL leaves no counter reset in Prometheus' eyes (resets() is 0)."""
import os
import re
import shutil
import signal
import subprocess
import time

from harness import Petrel, Tap, free_port, wait_for
from metricslib import Prometheus, http_get, wait_value

t = Tap(timeout=300)
if not shutil.which("prometheus") or not shutil.which("promtool"):
    t.skip("a real Prometheus", "prometheus and promtool are not installed (scripts/install-deps.sh installs them)")
    t.done()
    raise SystemExit(0)

QMGR = "qmgr unix n - n 300 1 qmgr\n"
mport = free_port()
with Petrel(t, extra_services=QMGR, start=False) as p:
    mail = os.path.join(p.dir, "mail")
    os.mkdir(mail)
    if p.pw:
        os.chown(mail, p.pw.pw_uid, p.pw.pw_gid)
    conf = dict(p.settings)
    conf.update({
        "metrics_listen": "127.0.0.1:%d" % mport,
        "virtual_mailbox_domains": "vmail.test",
        "virtual_mailbox_base": mail,
        "virtual_mailbox_maps": "inline:{ {u@vmail.test = vmail.test/u/} }",
        "relay_domains": "bounce.test later.test",
        "transport_maps": "inline:{ {bounce.test = error:5.1.1 no such user here}, "
                          "{later.test = retry:4.4.1 try again later} }",
        "mynetworks": "127.0.0.2/32",
        "maillog_file": p.log_path,
    })
    p.write_main_cf(conf)
    p.start()
    svc = '{service="127.0.0.1:%d"}' % p.port

    # promtool's own check of the exposition (its linter too).
    status, _, body = http_get(mport, "/metrics")
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    t.is_((r.returncode, r.stdout + r.stderr), (0, ""), "promtool check metrics accepts /metrics without a remark")

    with Prometheus(t, mport) as prom:
        t.ok(prom.wait_scrape_after(time.time()), "Prometheus scrapes petreld")
        t.is_(prom.value('up{job="petrel"}'), 1.0, "the target is up")
        conns0 = prom.value("petrel_smtpd_connections_total" + svc) or 0

        c = p.connect()
        t.like(c.send_message("u@vmail.test", ["u@vmail.test"], "Subject: one\r\n\r\n1\r\n"), r"^250 ", "sent mail")
        t.like(c.send_message("u@vmail.test", ["x@bounce.test"], "Subject: two\r\n\r\n2\r\n", ehlo=False), r"^250 ",
               "mail that will bounce")
        t.like(c.send_message("u@vmail.test", ["y@later.test"], "Subject: three\r\n\r\n3\r\n", ehlo=False), r"^250 ",
               "mail that will be deferred")
        t.like(c.cmd("MAIL FROM:<u@vmail.test>"), r"^250 ", "MAIL")
        t.like(c.cmd("RCPT TO:<z@elsewhere.example>"), r"^454 ", "a relay attempt: rejected")
        c.cmd("QUIT")
        c.close()
        # Everything has happened once the notice of the bounce is delivered.
        t.is_(wait_value(mport, 'petrel_deliveries_total{transport="virtual",status="sent"}', 2.0), 2.0,
              "the mail and the bounce notice are delivered")
        t.is_(wait_value(mport, 'petrel_deliveries_total{transport="retry",status="deferred"}', 1.0), 1.0,
              "the deferral happened")
        t.ok(prom.wait_scrape_after(time.time()), "Prometheus scraped after that")

        want = (
            ("petrel_smtpd_connections_total" + svc, conns0 + 1, "one connection more"),
            ("petrel_smtpd_messages_received_total" + svc, 3.0, "three messages received"),
            ("petrel_smtpd_received_recipients_total" + svc, 3.0, "three recipients"),
            ('petrel_smtpd_rejects_total{stage="RCPT",class="4xx"}', 1.0, "one reject at RCPT"),
            ('petrel_deliveries_total{transport="virtual",status="sent"}', 2.0,
             "two sent (the message and the bounce notice)"),
            ('petrel_deliveries_total{transport="error",status="bounced"}', 1.0, "one bounced"),
            ('petrel_deliveries_total{transport="retry",status="deferred"}', 1.0, "one deferred"),
            ('petrel_delivery_duration_seconds_count{transport="virtual"}', 2.0, "two latencies observed"),
            ('sum(petrel_deliveries_total)', 4.0, "four delivery attempts in all"),
            ('petrel_queue_messages{queue="deferred"}', 1.0, "the deferred queue holds one message"),
            ('petrel_processes{role="smtpd"}', 2.0, "two smtpd workers up"),
        )
        for expr, value, what in want:
            t.is_(prom.value(expr), value, "Prometheus: %s (%s)" % (what, expr))
        size = sum(int(x) for x in re.findall(r"size=(\d+), nrcpt=1 \(queued\)", p.log()))
        t.is_(prom.value("petrel_smtpd_received_bytes_total" + svc), float(size),
              "Prometheus: the bytes received are the log's sizes added up (%d)" % size)
        t.is_(prom.value('petrel_smtpd_replies_total{class="3xx"}'), 3.0, "Prometheus: three 354 replies to DATA")

        # A worker dies: Prometheus sees no counter reset, and the restart.
        qmgr_pid = int(re.search(r"queue manager pid (\d+)", p.petrelctl("status").stdout).group(1))
        victim = [pid for pid in p.worker_pids() if pid != qmgr_pid][0]
        os.kill(victim, signal.SIGKILL)
        t.ok(p.wait_log(r"pid %d killed by signal 9" % victim) is not None, "an smtpd worker is killed")
        t.ok(wait_for(lambda: http_get(mport, "/healthz")[0] == 200, timeout=20), "and restarted")
        c = p.connect()
        t.like(c.send_message("u@vmail.test", ["u@vmail.test"], "Subject: four\r\n\r\n4\r\n"), r"^250 ",
               "mail after the crash")
        c.close()
        t.is_(wait_value(mport, 'petrel_deliveries_total{transport="virtual",status="sent"}', 3.0), 3.0, "delivered")
        t.ok(prom.wait_scrape_after(time.time()), "Prometheus scraped after the crash")
        t.is_(prom.value('petrel_process_restarts_total{role="smtpd"}'), 1.0, "Prometheus: one smtpd restart")
        t.is_(prom.value("petrel_smtpd_messages_received_total" + svc), 4.0,
              "Prometheus: four messages received (the count went on from three)")
        names = [n for n in prom.api("/api/v1/label/__name__/values")["data"]
                 if n.startswith("petrel_") and (n.endswith("_total") or n.endswith("_count"))]
        t.ok(len(names) >= 8, "Prometheus knows petrel's counters (%d)" % len(names))
        reset = [(n, labels) for n in names for labels, v in prom.query("resets(%s[10m])" % n) if v > 0]
        t.is_(reset, [], "Prometheus: no petrel counter or histogram count was reset across the crash")
        scrapes = prom.value('count_over_time(up{job="petrel"}[10m])')
        t.ok(scrapes is not None and scrapes >= 3, "scraped every second meanwhile (%s scrapes)" % scrapes)
t.done()
