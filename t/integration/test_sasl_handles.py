"""SASL server request handles (ABI 1.1) are handles like pending calls: saslmod answers a
request twice inside its start() (the first answer applies, the second is logged and
ignored), answers one long after its hook timeout (the client got 454 4.7.0; the late answer
is logged and ignored) and after its session ended; petreld goes on serving, end() comes
once per start(), and the module's call metrics count the timeout."""
import base64
import re
import time

from harness import Petrel, Tap, wait_for
from modlib import module_dir

t = Tap(timeout=120)
mods = module_dir("saslmod")


def plain(c, user):
    return c.cmd("AUTH PLAIN " + base64.b64encode(("\0%s\0pw" % user).encode()).decode())


STALE = r"module saslmod: petrel_sasl_reply: the SASL request is no longer valid \(already answered, timed out, " \
        r"or its session ended\): ignored"

with Petrel(t, main_cf={"modules": "saslmod", "module_directory": mods, "smtpd_sasl_auth_enable": "yes",
                        "smtpd_sasl_type": "saslmod", "saslmod_hook_timeout": "1s", "saslmod_delay": "1500",
                        "mynetworks": "192.0.2.0/24", "smtpd_sasl_failure_delay": "0s"}) as p:
    t.like(p.petrelctl("modules").stdout, r"SASL back-ends: saslmod\n",
           "petrelctl modules lists the sasl_servers entry (read through the ABI compat layer)")
    c = p.connect()
    c.ehlo()
    t.ok("250-AUTH PLAIN" in c.lines, "the back-end's mechanisms are offered")
    t.is_(plain(c, "twice"), "235 2.7.0 Authentication successful", "answered twice inside start(): the first applies")
    t.ok(p.wait_log(r"module saslmod: petrel_sasl_reply: the request was answered already inside its sasl start "
                    r"call: the first answer applies") is not None, "and the second is logged")
    c.close()

    c = p.connect()
    c.ehlo()
    t.is_(plain(c, "late"), "454 4.7.0 Temporary authentication failure: authentication server did not answer",
          "no answer within saslmod_hook_timeout: 454 4.7.0")
    t.ok(p.wait_log(STALE, timeout=30) is not None, "the answer that comes later is logged and ignored")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "the session goes on")
    t.is_(plain(c, "ok"), "235 2.7.0 Authentication successful", "and authenticates")
    c.close()

    # a late answer after the session ended
    before = len(re.findall(STALE, p.log()))
    started = len(re.findall(r"saslmod: start \d+ PLAIN", p.log()))
    c = p.connect()
    c.ehlo()
    c.send("AUTH PLAIN " + base64.b64encode(b"\0late\0pw").decode() + "\r\n")
    # the back-end has the request (its start() logs) before the client leaves
    wait_for(lambda: len(re.findall(r"saslmod: start \d+ PLAIN", p.log())) > started, timeout=30)
    c.close()
    deadline = time.time() + 30
    while time.time() < deadline and len(re.findall(STALE, p.log())) == before:
        time.sleep(0.1)
    t.is_(len(re.findall(STALE, p.log())), before + 1, "an answer after the session ended is logged and ignored")
    c = p.connect()
    c.ehlo()
    t.is_(plain(c, "ok"), "235 2.7.0 Authentication successful", "petreld goes on serving")
    c.close()

    # a session's end() may come after its client's close: wait until every
    # start() has one (or time is up), then compare
    wait_for(lambda: len(re.findall(r"saslmod: end (\d+)", p.log())) >= len(re.findall(r"saslmod: start (\d+) PLAIN",
                                                                                     p.log())), timeout=30)
    log = p.log()
    starts = re.findall(r"saslmod: start (\d+) PLAIN", log)
    ends = re.findall(r"saslmod: end (\d+)", log)
    t.ok(starts and sorted(starts) == sorted(ends), "end() came once for every start()", [starts, ends])
    m = p.petrelctl("metrics").stdout
    t.like(m, r'petrel_module_hook_calls_total\{module="saslmod",hook="sasl start",verdict="timeout"\} 1\b',
           "the timeout is counted in the module's call metrics")
t.done()
