"""Module metrics (ABI 1.1): the core's figures per module and hook (calls by
verdict, durations, circuit state) and a module's own counters, gauges and
histograms, aggregated across smtpd workers in the shared region the master
maps, kept across a worker's crash, and read with `petrelctl metrics` in the
Prometheus text format."""
import os
import re
import signal
import time

from harness import Petrel, Tap
from modlib import module_dir

t = Tap()
mods = module_dir("testmod", "apimod")
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def metrics(p):
    r = p.petrelctl("metrics")
    values, meta = {}, []
    for line in r.stdout.splitlines():
        if line.startswith("#"):
            meta.append(line)
            continue
        m = SAMPLE.match(line)
        if m:
            values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        elif line:
            meta.append("UNPARSED " + line)
    return r, values, meta


def wait_for(p, key, want, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, values, _ = metrics(p)
        if values.get(key) == want:
            return True
        time.sleep(0.1)
    return False


main_cf = {"modules": "apimod testmod", "module_directory": mods, "testmod_hook_timeout": "1s",
           "testmod_circuit_failures": "2", "testmod_circuit_cooldown": "60s"}
with Petrel(t, main_cf=main_cf, workers=2) as p:
    t.ok(wait_for(p, "petrel_apimod_processes", 2), "a gauge each worker sets to 1 reads 2: summed across workers")
    r, values, meta = metrics(p)
    t.is_(r.returncode, 0, "petrelctl metrics answers")
    t.is_([m for m in meta if m.startswith("UNPARSED")], [], "every line is a comment or a sample")
    t.ok("# TYPE petrel_module_hook_calls_total counter" in meta and
         "# TYPE petrel_module_hook_duration_seconds histogram" in meta and
         "# TYPE petrel_module_circuit_open gauge" in meta and
         "# TYPE petrel_apimod_mails_total counter" in meta and
         "# TYPE petrel_apimod_sender_length_bytes histogram" in meta, "core and module families are declared", meta)
    t.ok(p.wait_log(r"module apimod: petrel_metric_register: counter petrel_apimod_mails: a counter's name ends in "
                    r"_total") is not None, "a counter without _total is refused")
    t.ok(p.wait_log(r"module apimod: petrel_metric_register: metric \"petrel_notemod_things\" must start with "
                    r"petrel_apimod_") is not None, "a name outside the module's prefix is refused")

    c = p.connect()
    c.ehlo()
    for sender, reply in (("note-a@example.org", "250"), ("plain-sender-long@example.org", "250"),
                          ("reject-x@example.org", "550"), ("bad-x@example.org", "451")):
        t.like(c.cmd("MAIL FROM:<%s>" % sender), "^" + reply, "MAIL FROM:<%s>" % sender)
        c.cmd("RSET")
    c.close()
    _, values, _ = metrics(p)
    t.is_(values.get('petrel_apimod_mails_total{kind="note"}'), 1.0, "a module's counter with a label")
    t.is_(values.get('petrel_apimod_mails_total{kind="plain"}'), 3.0, "and its other label value")
    t.is_(values.get('petrel_apimod_sender_length_bytes_bucket{le="20"}'), 3.0,
          "a module's histogram: cumulative bucket (3 senders of at most 20 bytes)")
    t.is_(values.get('petrel_apimod_sender_length_bytes_bucket{le="+Inf"}'), 4.0, "the +Inf bucket counts all")
    t.is_(values.get("petrel_apimod_sender_length_bytes_count"), 4.0, "_count")
    t.is_(values.get('petrel_apimod_sender_length_bytes_bucket{le="10"}'), 0.0, "an empty bucket")
    t.is_(values.get("petrel_apimod_sender_length_bytes_sum"), float(18 + 29 + 20 + 17), "_sum")
    t.is_(values.get('petrel_module_hook_calls_total{module="testmod",hook="mail",verdict="reject"}'), 1.0,
          "the core counts a module's REJECT")
    t.is_(values.get('petrel_module_hook_calls_total{module="testmod",hook="mail",verdict="invalid"}'), 1.0,
          "an answer that broke the reply rules")
    t.is_(values.get('petrel_module_hook_calls_total{module="testmod",hook="mail",verdict="continue"}'), 2.0,
          "and CONTINUE")
    t.ok((values.get('petrel_module_hook_calls_total{module="testmod",hook="connect",verdict="continue"}') or 0) >= 1,
         "per hook (connect: our sessions and the harness's probe)")
    t.is_(values.get('petrel_module_hook_duration_seconds_count{module="testmod",hook="mail"}'), 4.0,
          "every call's duration is observed")

    # A worker dies: the counters stay, the gauge loses its value until the new worker sets it.
    before = values.get('petrel_module_hook_calls_total{module="testmod",hook="connect",verdict="continue"}')
    victim = p.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    t.ok(p.wait_log(r"process .* pid %d killed by signal 9" % victim) is not None, "a worker is killed")
    deadline = time.time() + 20
    while time.time() < deadline and len(re.findall(r"module apimod: mode=", p.log())) < 3:
        time.sleep(0.1)
    t.is_(len(re.findall(r"module apimod: mode=", p.log())), 3, "the master starts a new worker (init runs again)")
    t.ok(wait_for(p, "petrel_apimod_processes", 2), "the gauge reads 2 again, not 3: the dead worker's value went")
    _, values, _ = metrics(p)
    t.is_(values.get('petrel_module_hook_calls_total{module="testmod",hook="connect",verdict="continue"}'), before,
          "the counters survive the worker's death")

    # Timeouts and the circuit.
    c = p.connect()
    c.ehlo()
    for i in range(2):
        t.is_(c.cmd("MAIL FROM:<hang-%d@example.org>" % i), "250 2.1.0 Ok", "hang %d: the default action" % i)
        c.cmd("RSET")
    t.is_(c.cmd("MAIL FROM:<reject-y@example.org>"), "250 2.1.0 Ok", "the open circuit skips the module")
    c.close()
    _, values, _ = metrics(p)
    t.is_(values.get('petrel_module_hook_calls_total{module="testmod",hook="mail",verdict="timeout"}'), 2.0,
          "timeouts are counted")
    t.is_(values.get('petrel_module_circuit_open{module="testmod"}'), 1.0, "the open circuit shows (one process)")
    t.is_(values.get('petrel_module_circuit_opened_total{module="testmod"}'), 1.0, "and how often it opened")
    t.is_(values.get('petrel_module_hook_calls_total{module="testmod",hook="mail",verdict="skipped"}'), 1.0,
          "and the skipped call is counted")
t.done()
