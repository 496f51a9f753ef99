"""A real Prometheus (Debian's package) scrapes petreld's metrics endpoint
every second while the test sends, rejects, defers and bounces mail: each
counter moves by exactly the right amount, read through Prometheus' HTTP
API; `promtool check metrics` accepts the output; an smtpd worker killed
with SIGKILL leaves no counter reset in Prometheus' eyes (resets() is 0).
The shipped Grafana dashboard (etc/grafana/petrel.json): every panel's
PromQL returns data from this Prometheus. The shipped alerting rules
(etc/prometheus/petrel-alerts.yml): Prometheus loads and evaluates them
without error, every series they select exists, `promtool check rules`
and `promtool test rules` (t/integration/prometheus_rules_test.yml) pass."""
import os
import re
import shutil
import signal
import subprocess
import time

from harness import TOP_SRCDIR, Petrel, Tap, free_port, make_cert, wait_for
from metricslib import wait_http, Prometheus, http_get, parse_metrics, wait_value
from modlib import module_dir
from scripted_smtp import Server
import json
import tempfile

ALERTS = os.path.join(TOP_SRCDIR, "etc", "prometheus", "petrel-alerts.yml")
DASHBOARD = os.path.join(TOP_SRCDIR, "etc", "grafana", "petrel.json")
RULES_TEST = os.path.join(TOP_SRCDIR, "t", "integration", "prometheus_rules_test.yml")

t = Tap(timeout=300)
if not shutil.which("prometheus") or not shutil.which("promtool"):
    t.skip("a real Prometheus", "prometheus and promtool are not installed (scripts/install-deps.sh installs them)")
    t.done()
    raise SystemExit(0)

QMGR = "qmgr unix n - n 300 1 qmgr\n"
mport = free_port()
certdir = tempfile.mkdtemp(prefix="petrel-prom-tls-")
# A next hop with STARTTLS, so the outbound TLS panel has a handshake to show.
tls_server = Server(tls=make_cert(certdir, "tls.test"))
with Petrel(t, extra_services=QMGR, start=False) as p:
    cert, key = make_cert(p.dir)
    p._chown()
    mail = p.virtual_mailboxes({"u@vmail.test": "vmail.test/u/"}, {
        "modules": "testmod", "module_directory": module_dir("testmod"),
        "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key,
        "metrics_listen": "127.0.0.1:%d" % mport,
        "relay_domains": "bounce.test later.test tls.test",
        "transport_maps": "inline:{ {bounce.test = error:5.1.1 no such user here}, "
                          "{later.test = retry:4.4.1 try again later}, "
                          "{tls.test = smtp:[127.0.0.1]:%d} }" % tls_server.port,
        "smtp_tls_security_level": "may",
        # A table that fails, for one recipient only: the table-error alert's series.
        "smtpd_restriction_classes": "broken_lookup",
        "broken_lookup": "check_client_access fail:metrics",
        "smtpd_recipient_restrictions": "check_recipient_access inline:{ {failing@vmail.test = broken_lookup} }",
        "mynetworks": "127.0.0.2/32",
        "maillog_file": p.log_path,
    })
    p.start()
    t.ok(wait_http(mport), "the metrics endpoint answers")
    svc = '{service="127.0.0.1:%d"}' % p.port

    # promtool's own check of the exposition (its linter too).
    status, _, body = http_get(mport, "/metrics")
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    t.is_((r.returncode, r.stdout + r.stderr), (0, ""), "promtool check metrics accepts /metrics without a remark")

    conn_key = "petrel_smtpd_connections_total" + svc
    t.ok(wait_for(lambda: parse_metrics(http_get(mport, "/metrics")[2]).get(conn_key, 0) >= 1),
         "the harness's readiness probe is counted")

    rules_dir = tempfile.mkdtemp(prefix="petrel-rules-")
    shutil.copy(ALERTS, rules_dir)
    shutil.copy(RULES_TEST, rules_dir)
    r = subprocess.run(["promtool", "check", "rules", "petrel-alerts.yml"], cwd=rules_dir, capture_output=True,
                       text=True, timeout=60)
    t.ok(r.returncode == 0, "promtool check rules accepts etc/prometheus/petrel-alerts.yml", r.stdout + r.stderr)
    r = subprocess.run(["promtool", "test", "rules", "prometheus_rules_test.yml"], cwd=rules_dir,
                       capture_output=True, text=True, timeout=60)
    t.ok(r.returncode == 0, "promtool test rules: every alert fires when it should and only then",
         r.stdout + r.stderr)

    with Prometheus(t, mport, rule_files=[os.path.join(rules_dir, "petrel-alerts.yml")]) as prom:
        t.ok(prom.wait_scrape_after(time.time()), "Prometheus scrapes petreld")
        t.is_(prom.value('up{job="petrel"}'), 1.0, "the target is up")
        conns0 = prom.value(conn_key)

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
            ('petrel_smtpd_rejects_total{stage="RCPT",class="4xx",restriction="defer_unauth_destination",code="454"}', 1.0,
             "one reject at RCPT, by defer_unauth_destination with 454"),
            ('petrel_deliveries_total{transport="virtual",status="sent"}', 2.0,
             "two sent (the message and the bounce notice)"),
            ('petrel_deliveries_total{transport="error",status="bounced"}', 1.0, "one bounced"),
            ('petrel_deliveries_total{transport="retry",status="deferred"}', 1.0, "one deferred"),
            ('petrel_delivery_duration_seconds_count{transport="virtual"}', 2.0, "two latencies observed"),
            ('petrel_mailbox_fsync_duration_seconds_count{transport="virtual",format="maildir"}', 2.0,
             "two mailbox fsync latencies observed"),
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

        # A TLS session, so the TLS panel has a handshake to show.
        c = p.connect()
        c.ehlo()
        t.like(c.cmd("STARTTLS"), r"^220 ", "STARTTLS")
        c.starttls()
        version = c.sock.version()
        c.ehlo()
        c.cmd("QUIT")
        c.close()
        t.is_(wait_value(mport, 'petrel_smtpd_tls_handshakes_total{%s,result="ok",version="%s"}'
                         % (svc[1:-1], version), 1.0), 1.0, "the TLS handshake is counted, with its version")
        t.is_(wait_value(mport, 'petrel_smtpd_sessions_total{%s,tls="yes"}' % svc[1:-1], 1.0), 1.0,
              "the session is counted as a TLS one when it ends")
        t.ok(prom.wait_scrape_after(time.time()), "Prometheus scraped after the TLS session")
        t.is_(prom.value('petrel_smtpd_sessions_total{%s,tls="yes"}' % svc[1:-1]), 1.0,
              "Prometheus: one TLS session")
        plain = prom.value('petrel_smtpd_sessions_total{%s,tls="no"}' % svc[1:-1])
        # Sessions are counted when they end: the three that sent mail and
        # ended before the TLS one (a session cut by the worker's crash never ends).
        t.ok(plain is not None and plain >= 3, "Prometheus: the plaintext sessions before it, counted apart",
             'petrel_smtpd_sessions_total{tls="no"} = %s' % plain)
        c = p.connect()
        t.like(c.send_message("s@vmail.test", ["r@tls.test"], "Subject: out\r\n\r\nx\r\n"), r"^250 ",
               "mail for a next hop with STARTTLS")
        c.close()
        c = p.connect()
        c.ehlo()
        t.like(c.cmd("MAIL FROM:<s@vmail.test>"), r"^250 ", "MAIL")
        t.like(c.cmd("RCPT TO:<failing@vmail.test>"), r"^451 4\.3\.5 ",
               "a recipient whose check asks a failing table: 451 4.3.5, as Postfix answers")
        c.close()
        t.is_(wait_value(mport, 'petrel_table_lookups_total{type="fail",table="fail:metrics",result="error"}', 1.0), 1.0,
              "the failed lookup is counted")
        t.ok(wait_for(lambda: any(x.get("tls") for x in tls_server.sessions), timeout=30),
             "the next hop saw a TLS session")
        out_version = ([x.get("tls_version") for x in tls_server.sessions if x.get("tls")] or ["?"])[0]
        t.is_(wait_value(mport, 'petrel_smtp_tls_handshakes_total{transport="smtp",result="ok",version="%s"}'
                         % out_version, 1.0, timeout=30), 1.0, "the outbound TLS handshake is counted, with its version")
        t.ok(prom.wait_scrape_after(time.time()), "Prometheus scraped after it")
        t.ok(prom.wait_scrape_after(time.time()), "and once more (a rate needs two samples)")

        # Prometheus negotiated OpenMetrics: its metadata names a counter's
        # family without _total (from the text format it would be with it).
        meta = prom.api("/api/v1/metadata")["data"]
        t.is_([m["type"] for m in meta.get("petrel_smtpd_connections", [])], ["counter"],
              "Prometheus scraped OpenMetrics: the counter family petrel_smtpd_connections")
        t.ok("petrel_smtpd_connections_total" not in meta, "and no family named with _total")

        # The dashboard: every panel's every query returns data.
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        names = [v["name"] for v in dashboard["templating"]["list"]]
        t.is_(names, ["datasource", "instance"], "the dashboard's variables: the Prometheus datasource and instances")
        panels = [x for x in dashboard["panels"] if x["type"] != "row"]
        t.ok(all(x["datasource"]["uid"] == "${datasource}" for x in panels), "every panel uses the datasource variable")
        instances = prom.query("petrel_start_time_seconds")
        t.is_(len(instances), 1, "the instance variable's query (label_values of petrel_start_time_seconds) has one")
        empty = []
        for panel in panels:
            for target in panel["targets"]:
                expr = target["expr"].replace("$instance", ".+")
                if not prom.query(expr):
                    empty.append((panel["title"], expr))
        t.is_(empty, [], "every one of the %d panels' %d queries returns data" %
              (len(panels), sum(len(x["targets"]) for x in panels)))

        # The alerting rules: loaded, evaluated without error, and every series they select exists.
        groups = prom.api("/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        t.is_(len(rules), 11, "Prometheus loaded the 11 alerting rules")
        deadline = time.time() + 20
        while time.time() < deadline and any(r.get("health") != "ok" for r in rules):
            time.sleep(0.5)
            rules = [r for g in prom.api("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        t.is_([(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"], [],
              "and evaluates every one without error")
        missing = []
        for rule in rules:
            for m in re.finditer(r"\b((?:petrel_[a-z_]+|up)(?:\{[^}]*\})?)", rule["query"]):
                if not prom.query("count(%s)" % m.group(1)):
                    missing.append((rule["name"], m.group(1)))
        t.is_(missing, [], "every series an alert selects exists in petreld's metrics")
        firing = [r["name"] for r in rules if r.get("state") == "firing"]
        t.is_(firing, [], "no alert fires on this healthy instance")
    shutil.rmtree(rules_dir, ignore_errors=True)
tls_server.stop()
shutil.rmtree(certdir, ignore_errors=True)
t.done()
