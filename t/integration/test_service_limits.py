"""Service limits (issue 8, findings 8 and 12): what happens when a service
is full of (idle) sessions.

  1. At a service's maxproc limit new clients wait in the listen backlog, as
     with Postfix's master, and are served when a session ends - also when
     that session belongs to another worker process (after a reload the old
     generation's sessions hold the slots and only the new workers accept).
     No 421 for them.
  2. Stress: when a public service (not loopback-only) takes its last slot,
     its existing idle sessions in every worker and its new sessions use the
     stress=yes settings: Postfix's default smtpd_timeout of
     ${stress?{10}:{300}}s frees the slots idle clients hold, main.cf's
     ${stress?...} applies (seen in the banner), smtpd_hard_error_limit is 1.
  3. Per-client limits leave room for others: with the defaults one client
     gets at most smtpd_client_connection_count_limit = 50 of the 100
     sessions; its 51st connection gets 421 4.7.0, another client is served.
  4. Long accounting keys (IPv6 listener written in full): the process limit
     and the per-client limit still count (they used to be truncated at 48
     bytes and never matched).
"""
import os
import re
import select
import time

from harness import Petrel, Smtp, Tap, free_port, on_worker, wait_for

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"


def connect_from(port, src="127.0.0.1", host="127.0.0.1", greeting=True, timeout=30):
    return Smtp(port, host=host, timeout=timeout, read_greeting=greeting, source=None if ":" in host else src)


def silent(c, seconds):
    """True when the server sent nothing (no greeting, no 421) for that long."""
    r, _, _ = select.select([c.sock], [], [], seconds)
    return not r


def slots_freed(p, client_ports, port=None, timeout=30):
    """Waits until petreld has closed its end of these connections: their slots are free then
    (Petrel.wait_closed)."""
    p.wait_closed(client_ports, port=port, timeout=timeout)


def probe_gone(p):
    """The harness' start-up probe connection ends: wait until it freed its slot."""
    slots_freed(p, {p.probe_port})


def send_one(c, what):
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: %s\r\n\r\nbody\r\n" % what)
    t.like(r, OK_RE, "%s: the message is queued" % what)


# --- 1. at maxproc, new clients wait in the backlog ------------------------
with Petrel(t, start=False) as p:
    p.master_cf = "127.0.0.1:%d inet n - n - 2 smtpd\n" % p.port
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(p.master_cf)
    p.start()
    probe_gone(p)
    a = p.connect()
    b = p.connect()
    t.is_((a.code, b.code), (220, 220), "maxproc 2: two sessions are served")
    a.ehlo()
    c = connect_from(p.port, greeting=False)
    t.ok(silent(c, 2.0), "the 3rd client is not refused: it waits in the listen backlog (no 421, no greeting)")
    t.ok(p.wait_log(r'warning: service "127\.0\.0\.1:%d" has reached its process limit "2"' % p.port) is not None,
         "the log says the service reached its process limit")
    t.ok("under stress" not in p.log(), "a loopback-only service never goes into stress mode (Postfix's rule)")
    a.cmd("QUIT")
    a.close()
    c.sock.settimeout(30)
    t.like(c.read_reply(), r"^220 mx\.petrel\.test ESMTP", "when a session ends, the waiting client is greeted")
    send_one(c, "after waiting in the backlog")
    ended = {c.sock.getsockname()[1], b.sock.getsockname()[1]}
    c.cmd("QUIT")
    c.close()
    b.cmd("QUIT")
    b.close()

    # The wake-up crosses processes: after a reload the old worker generation
    # drains (it never accepts again) while its sessions still count.
    slots_freed(p, ended)
    a2 = p.connect()
    b2 = p.connect()
    t.is_((a2.code, b2.code), (220, 220), "the service is full again")
    old_workers = set(p.worker_pids())
    r = p.petrelctl("reload")
    t.is_(r.returncode, 0, "reload while the service is full")
    t.ok(bool(wait_for(lambda: set(p.worker_pids()) - old_workers, timeout=30)), "a new worker generation started")
    c2 = connect_from(p.port, greeting=False)
    t.ok(silent(c2, 2.0), "after the reload, a new client still waits: the old sessions hold both slots")
    a2.cmd("QUIT")
    a2.close()
    c2.sock.settimeout(30)
    t.like(c2.read_reply(), r"^220 ", "a session of the old generation ends: a new worker accepts the waiting client")
    # The new generation is smtpd_workers (2) processes, started one after the
    # other: the one that accepted may be the second, which need not have existed
    # when the wait above saw the first. So: a worker of the master's that is not
    # of the old generation (it logged "connect from" before its greeting).
    pids = re.findall(r"smtpd\[(\d+)\]: connect from unknown\[127\.0\.0\.1\]", p.log())
    t.ok(pids and int(pids[-1]) not in old_workers and int(pids[-1]) in p.worker_pids(),
         "that client was accepted by another process than the one whose session ended",
         (pids[-3:], sorted(old_workers), p.worker_pids()))
    send_one(c2, "after a cross-process wake-up")
    c2.close()
    b2.close()

# --- 2. stress: a public service at its limit ------------------------------
# 0.0.0.0 makes the service public (Postfix never stresses loopback-only
# services); the test only ever connects to 127.0.0.1.
settings = {"smtpd_banner": "$myhostname ESMTP ${stress?{busy}:{ready}}",
            # a restriction list that differs under stress is compiled from the stress settings
            "smtpd_sender_restrictions":
                "${stress?{check_sender_access inline:{ {stressed@example.org = REJECT busy sender} }}:{}}"}
with Petrel(t, main_cf=settings, start=False) as p:
    del p.settings["smtpd_timeout"]   # the harness' 30 s: use Postfix's ${stress?{10}:{300}}s
    p.write_main_cf(p.settings)
    p.master_cf = "0.0.0.0:%d inet n - n - 2 smtpd\n" % p.port
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(p.master_cf)
    p.start()
    probe_gone(p)
    r = p.petrelctl("config", "-d", "smtpd_timeout", "smtpd_hard_error_limit", "smtpd_junk_command_limit")
    t.is_(r.stdout, "smtpd_timeout = ${stress?{10}:{300}}s\nsmtpd_hard_error_limit = ${stress?{1}:{20}}\n"
          "smtpd_junk_command_limit = ${stress?{1}:{100}}\n", "Postfix's stress-adapting defaults")
    workers = p.worker_pids(at_least=2)
    t.is_(len(workers), 2, "two workers")
    a = on_worker(workers, workers[0], lambda: connect_from(p.port))
    t.is_(a.lines[-1], "220 mx.petrel.test ESMTP ready", "first session: normal settings (${stress?...} empty)")
    a.ehlo()
    b = on_worker(workers, workers[1], lambda: connect_from(p.port))
    t.is_(b.lines[-1], "220 mx.petrel.test ESMTP busy",
          "the session that takes the last slot starts the stress period and uses stress=yes settings")
    t.ok(p.wait_log(r"service 0\.0\.0\.0:%d: under stress" % p.port) is not None, "the log says so")
    c = connect_from(p.port, greeting=False)
    t.ok(silent(c, 1.0), "a 3rd client waits in the backlog")
    start = time.time()
    a.sock.settimeout(40)
    try:
        ra = a.read_reply()
    except (OSError, ConnectionError) as e:
        ra = repr(e)
    t.is_(ra, "421 4.4.2 mx.petrel.test Error: timeout exceeded",
          "the idle session on the other worker was switched to the stress timeout and ends")
    t.ok(time.time() - start < 30, "well before the normal 300 s (bounded wait, not a speed check)",
         "took %.1f s" % (time.time() - start))
    t.ok(p.wait_log(r"smtpd\[%d\]: service 0\.0\.0\.0:%d: under stress: 1 session switched to the stress settings "
                    r"\(smtpd_timeout 10s\)" % (workers[0], p.port)) is not None,
         "the other worker logged the switch of its idle session (smtpd_timeout 10s)")
    c.sock.settimeout(40)
    t.is_(c.read_reply(), "220 mx.petrel.test ESMTP busy", "the waiting client is then served, with stress settings")
    t.like(c.cmd("FOO"), r"^502 5\.5\.2 ", "one bad command")
    t.is_(c.cmd("NOOP"), "421 4.7.0 mx.petrel.test Error: too many errors",
          "smtpd_hard_error_limit is 1 under stress: the next command ends the session")
    b.sock.settimeout(40)
    try:
        rb = b.read_reply()
    except (OSError, ConnectionError) as e:
        rb = repr(e)
    t.is_(rb, "421 4.4.2 mx.petrel.test Error: timeout exceeded", "the stressed session that never spoke times out too")
    ended = {x.sock.getsockname()[1] for x in (a, b, c)}
    for x in (a, b, c):
        x.close()
    slots_freed(p, ended)
    d = connect_from(p.port)
    t.is_(d.lines[-1], "220 mx.petrel.test ESMTP busy", "the stress period lasts (Postfix: 1000 s after the last full)")
    send_one(d, "under stress")
    d.cmd("MAIL FROM:<stressed@example.org>")
    t.like(d.cmd("RCPT TO:<user@petrel.test>"), r"^554 5\.7\.1 .*busy sender",
           "main.cf's ${stress?...} restriction list applies under stress")
    d.close()

# --- 3. one client cannot take every slot ---------------------------------
with Petrel(t, main_cf={"smtpd_client_event_limit_exceptions": "192.0.2.1"}, start=False) as p:
    p.master_cf = "127.0.0.1:%d inet n - n - - smtpd\n" % p.port
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(p.master_cf)
    p.start()
    r = p.petrelctl("config", "-d", "smtpd_client_connection_count_limit", "default_process_limit")
    t.is_(r.stdout, "smtpd_client_connection_count_limit = 50\ndefault_process_limit = 100\n",
          "defaults: one client may hold half of a service's 100 sessions (Postfix's)")
    held = [connect_from(p.port, src="127.0.0.2") for _ in range(50)]
    t.is_(sum(1 for h in held if h.code == 220), 50, "50 sessions from 127.0.0.2 are served")
    over = connect_from(p.port, src="127.0.0.2")
    t.is_(over.lines[-1], "421 4.7.0 mx.petrel.test Error: too many connections from 127.0.0.2",
          "its 51st gets 421 4.7.0 at once: the only 421 a full-ish service gives")
    t.ok(over.closed(), "and is closed")
    other = connect_from(p.port, src="127.0.0.3")
    t.is_(other.code, 220, "another client still finds room")
    send_one(other, "another client next to a greedy one")
    other.close()
    for h in held:
        h.close()

# --- 4. long accounting keys: an IPv6 listener written in full ------------
LONG = "[0000:0000:0000:0000:0000:0000:0000:0001]"
with Petrel(t, start=False) as p:
    p6a, p6b = free_port("::1"), free_port("::1")
    p.master_cf = ("127.0.0.1:%d inet n - n - - smtpd\n" % p.port +
                   "%s:%d inet n - n - 2 smtpd\n" % (LONG, p6a) +
                   "%s:%d inet n - n - - smtpd -o smtpd_client_connection_count_limit=3\n" % (LONG, p6b))
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(p.master_cf)
    p.start()
    t.ok(len("service:%s:%d" % (LONG, p6a)) >= 48, "the service's accounting key is 48 bytes or more")

    a = connect_from(p6a, host="::1")
    b = connect_from(p6a, host="::1")
    t.is_((a.code, b.code), (220, 220), "long-key service with maxproc 2: two sessions")
    c = connect_from(p6a, host="::1", greeting=False)
    t.ok(silent(c, 2.0), "the 3rd waits: the long key is counted, not truncated")
    a.cmd("QUIT")
    a.close()
    c.sock.settimeout(30)
    t.like(c.read_reply(), r"^220 ", "and is served when one ends")
    c.close()
    b.close()

    held = [connect_from(p6b, host="::1") for _ in range(3)]
    t.is_([h.code for h in held], [220, 220, 220], "client limit 3 on a long-key service: three sessions from ::1")
    over = connect_from(p6b, host="::1")
    t.is_(over.lines[-1], "421 4.7.0 mx.petrel.test Error: too many connections from ::1",
          "the 4th from ::1: 421 4.7.0 (the per-client key is long too)")
    over.close()
    held[0].cmd("QUIT")
    ended = held[0].sock.getsockname()[1]
    held[0].close()
    # its session gives its count back before petreld closes its end: wait for
    # that close, not a number of retries (tcp_open_ends reads tcp6 too)
    slots_freed(p, {ended}, port=p6b)
    again = connect_from(p6b, host="::1")
    t.is_(again.code, 220, "after one of them ends, ::1 may connect again (the count went down)")
    for x in held[1:] + [again]:
        x.close()

t.done()
