"""The milter module's circuit breaker (Petrel's own; Postfix has none):
after milter_circuit_breaker_failures consecutive failures a milter is not
asked for milter_circuit_breaker_backoff (its default action applies at
once), then one session tries it again. Real peers: a port that accepts
connections and never answers (the blackhole), and our libmilter filter,
killed and started again on the same port."""
import time

from harness import Petrel, Smtp, Tap
from modlib import bundled_module_dir
from peers import TestFilter
from serverlib import Blackhole

t = Tap(timeout=300)
mods = bundled_module_dir("milter")
UNAVAILABLE = "451 4.7.1 Service unavailable - try again later"


def conf(milters, **extra):
    # One smtpd worker: the breaker's state is per worker process.
    c = {"modules": "milter", "module_directory": mods, "smtpd_milters": milters, "smtpd_workers": "1"}
    c.update(extra)
    return c


def mail(p):
    """One transaction; the replies to MAIL and (when MAIL passed) the end of data."""
    c = Smtp(p.port)
    c.ehlo()
    out = [c.cmd("MAIL FROM:<sender@example.org>")]
    if out[0].startswith("250"):
        c.cmd("RCPT TO:<u@petrel.test>")
        if c.cmd("DATA").startswith("354"):
            c.send(b"Subject: breaker\r\n\r\nbody\r\n.\r\n")
            out.append(c.read_reply())
    c.cmd("QUIT")
    c.close()
    return out


def count(p, pattern):
    import re
    return len(re.findall(pattern, p.log()))


# --- a milter that accepts the connection and never answers -------------------------
bh = Blackhole()
try:
    ep = "inet:127.0.0.1:%d" % bh.port
    with Petrel(t, main_cf=conf(ep, milter_connect_timeout="1s", milter_circuit_breaker_failures="2",
                                milter_circuit_breaker_backoff="1h")) as p:
        for i in (1, 2):
            t.is_(mail(p)[0], UNAVAILABLE, "blackhole, session %d: the connect timeout, then the default action" % i)
        t.ok(p.wait_log(r"milter %s: circuit breaker: 2 consecutive failures; not asked for 3600 s" % ep)
             is not None, "the breaker opens after milter_circuit_breaker_failures = 2, logged")
        seen = len(bh.conns)
        timeouts = count(p, r"milter %s: timeout" % ep)
        t.is_(timeouts, 2, "  two timeouts were logged")
        for i in (3, 4):
            t.is_(mail(p)[0], UNAVAILABLE, "session %d: the default action at once" % i)
        t.is_(len(bh.conns), seen, "  and the blackhole got no further connection")
        t.is_(count(p, r"milter %s: timeout" % ep), timeouts, "  no further timeout")
        t.is_(count(p, r"circuit breaker: 2 consecutive failures"), 1, "  the opening is logged once")
    with Petrel(t, main_cf=conf("{ %s, default_action=accept }" % ep, milter_connect_timeout="1s",
                                milter_circuit_breaker_failures="1", milter_circuit_breaker_backoff="1h")) as p:
        mail(p)
        seen = len(bh.conns)
        r = mail(p)
        t.like(r[-1], r"^250 2\.0\.0 Ok: queued as ", "a skipped milter with default_action=accept: mail passes")
        t.is_(len(bh.conns), seen, "  without asking it")
    with Petrel(t, main_cf=conf(ep, milter_connect_timeout="1s", milter_circuit_breaker_failures="0")) as p:
        for i in (1, 2, 3):
            mail(p)
        t.is_(count(p, r"milter %s: timeout" % ep), 3, "milter_circuit_breaker_failures = 0: no breaker, "
              "every session waits")
        t.is_(count(p, r"circuit breaker"), 0, "  and nothing about a breaker is logged")
finally:
    bh.close()

# --- a real libmilter filter, killed, then started again ------------------------------
f = TestFilter()
port, spec, endpoint = f.port, f.spec, f.endpoint


def filter_again():
    g = TestFilter()
    g.port, g.spec, g.endpoint = port, spec, endpoint
    return g.start()


f.start()
with Petrel(t, main_cf=conf(endpoint, milter_circuit_breaker_failures="2",
                            milter_circuit_breaker_backoff="1h")) as p:
    t.like(mail(p)[-1], r"^250 2\.0\.0 Ok: queued as ", "the filter up: mail passes")
    f.stop()
    for i in (1, 2):
        t.is_(mail(p)[0], UNAVAILABLE, "the filter killed, session %d: cannot connect, the default action" % i)
    t.ok(p.wait_log(r"milter %s: circuit breaker: 2 consecutive failures" % endpoint) is not None,
         "the breaker opens")
    g = filter_again()
    try:
        t.is_(mail(p)[0], UNAVAILABLE, "the filter back, but within the back-off: not asked")
        t.ok(not any(ln.startswith("connect ") for ln in g.log()), "  the filter saw no connection", g.log())
    finally:
        g.stop()

f = TestFilter()
port, spec, endpoint = f.port, f.spec, f.endpoint
with Petrel(t, main_cf=conf(endpoint, milter_circuit_breaker_failures="2",
                            milter_circuit_breaker_backoff="1s")) as p:
    mail(p)
    mail(p)
    t.ok(p.wait_log(r"milter %s: circuit breaker: 2 consecutive failures; not asked for 1 s" % endpoint)
         is not None, "a filter that is down: the breaker opens")
    time.sleep(1.5)    # past the back-off (not a timing assertion: the probe must start after it)
    t.is_(mail(p)[0], UNAVAILABLE, "after the back-off, one session tries the milter, still down")
    t.ok(p.wait_log(r"milter %s: circuit breaker: trying the milter again" % endpoint) is not None,
         "  logged as a probe")
    t.ok(p.wait_log(r"milter %s: circuit breaker: still failing; not asked for another 1 s" % endpoint) is not None,
         "  the probe fails: another back-off")
    g = filter_again()
    try:
        time.sleep(1.5)
        t.like(mail(p)[-1], r"^250 2\.0\.0 Ok: queued as ", "the filter back, after the back-off: the probe "
               "passes")
        t.ok(p.wait_log(r"milter %s: circuit breaker: the milter answers again" % endpoint) is not None,
             "  the breaker closes, logged")
        t.ok(any(ln.startswith("connect ") for ln in g.log()), "  the filter was asked", g.log())
        t.like(mail(p)[-1], r"^250 2\.0\.0 Ok: queued as ", "  and the next session too")
        t.is_(count(p, r"trying the milter again"), 2, "  no further probe once closed")
    finally:
        g.stop()

t.done()
