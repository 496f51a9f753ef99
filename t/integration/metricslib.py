"""Helpers for the observability tests: reading petreld's metrics endpoint
(metrics_listen) over real HTTP, parsing the Prometheus text format, and a
private Prometheus (Debian's package) that scrapes it.

    from metricslib import http_get, parse_metrics, Prometheus
    status, headers, body = http_get(port, "/metrics")
    values = parse_metrics(body)          # {'name{labels}': float}
    with Prometheus(t, petrel_metrics_port) as prom:
        prom.wait_scraped()
        prom.value('sum(petrel_smtpd_connections_total)')
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from harness import free_port

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def http_get(port, path, source=None, host="127.0.0.1", timeout=10, headers=None):
    """One GET; returns (status, headers dict, body text). source: the local
    address to connect from (127.0.0.2 is still loopback)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def wait_http(port, timeout=15):
    """Waits until the metrics endpoint answers: the master binds it after the
    SMTP listeners the harness waits for."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            http_get(port, "/healthz", timeout=2)
            return True
        except OSError:
            time.sleep(0.05)
    return False


def parse_metrics(text):
    """Samples of the text format: {'name{labels as written}': value}; lines
    that are neither comments nor samples are returned under 'UNPARSED'."""
    values, bad = {}, []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m:
            values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        else:
            bad.append(line)
    if bad:
        values["UNPARSED"] = bad
    return values


def wait_value(port, key, want, timeout=15):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = parse_metrics(http_get(port, "/metrics")[2]).get(key)
        if got == want:
            return got
        time.sleep(0.1)
    return got


class Prometheus:
    """A private Prometheus on a free loopback port, scraping one target every
    second, with its data in a temporary directory. Stopped by PID."""

    def __init__(self, tap, target_port, rule_files=(), interval="1s"):
        self.tap = tap
        self.dir = tempfile.mkdtemp(prefix="petrel-prom-")
        self.port = free_port()
        rules = "".join("  - %s\n" % f for f in rule_files)
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: %s\n  evaluation_interval: %s\n" % (interval, interval) +
                    ("rule_files:\n" + rules if rules else "") +
                    "scrape_configs:\n  - job_name: petrel\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % target_port)
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=" + os.path.join(self.dir, "prometheus.yml"),
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: " + self.log())
            try:
                if http_get(self.port, "/-/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus not ready: " + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def api(self, path, **params):
        url = "http://127.0.0.1:%d%s?%s" % (self.port, path, urllib.parse.urlencode(params))
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read().decode())

    def query(self, expr):
        """The instant vector of expr: [(labels dict, value float)]."""
        out = self.api("/api/v1/query", query=expr)
        if out.get("status") != "success":
            raise RuntimeError("query %s: %s" % (expr, out))
        result = out["data"]["result"]
        if out["data"]["resultType"] == "scalar":
            return [({}, float(result[1]))]
        return [(r["metric"], float(r["value"][1])) for r in result]

    def value(self, expr):
        """The single value of expr, or None when it has no result."""
        r = self.query(expr)
        return r[0][1] if len(r) == 1 else None

    def scrapes(self):
        """How many scrapes of petrel Prometheus has stored (the up series)."""
        return self.value('count_over_time(up{job="petrel"}[1h])') or 0

    def wait_scrape_after(self, when, timeout=20):
        """Waits until a successful scrape that began after the Unix time when
        is stored: what was counted before `when` is in Prometheus then."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = self.api("/api/v1/targets")
            for target in out["data"]["activeTargets"]:
                last = target.get("lastScrape", "")
                if target.get("health") == "up" and last:
                    # 2026-12-03T13:55:01.123456789Z
                    stamp = time.mktime(time.strptime(last[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                    frac = re.match(r"\.(\d+)", last[19:])
                    if frac:
                        stamp += float("0." + frac.group(1))
                    if stamp > when:
                        time.sleep(0.2)   # the samples are appended right after lastScrape is set
                        return True
            time.sleep(0.2)
        return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
