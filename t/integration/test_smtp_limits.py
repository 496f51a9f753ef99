"""The bad input catalogue, part 2: slow clients, error limits, junk,
relaying, postmaster, connection count/rate limits shared by the workers.
Each adversarial session is followed by a normal message on a fresh
connection that must still be queued."""
import os
import time

from harness import Petrel, Tap, on_worker

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"


def still_serves(p, what, src=None):
    c = p.connect(source=src)
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: after %s\r\n\r\nstill serving\r\n" % what)
    t.like(r, OK_RE, "%s: a fresh connection still gets its message queued" % what)
    c.cmd("QUIT")
    c.close()


# --- slow clients: smtpd_timeout ---
with Petrel(t, main_cf={"smtpd_timeout": "2s"}) as p:
    c = p.connect()
    c.ehlo()
    start = time.time()
    t.is_(c.read_reply(), "421 4.4.2 mx.petrel.test Error: timeout exceeded", "idle client: 421 4.4.2 after smtpd_timeout")
    took = time.time() - start
    t.ok(1.5 <= took <= 6, "the timeout fires after about 2 s", "took %.2f s" % took)
    t.ok(c.closed(), "and the server closes the connection")
    t.ok(p.wait_log(r"timeout after EHLO from unknown\[127\.0\.0\.1\]") is not None, "the log says timeout after EHLO")
    still_serves(p, "idle timeout")

    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<user@petrel.test>")
    c.cmd("DATA")
    c.send(b"Subject: slow\r\n\r\nfirst line\r\n")
    time.sleep(1.2)
    c.send(b"second line\r\n")   # progress resets the timer ...
    time.sleep(1.2)
    c.send(b"third line\r\n")
    t.is_(c.read_reply(), "421 4.4.2 mx.petrel.test Error: timeout exceeded",
          "a client that stalls in DATA: 421 4.4.2")
    t.ok(c.closed(), "and the server closes the connection")
    t.ok(p.wait_log(r"timeout after DATA") is not None, "the log says timeout after DATA")
    still_serves(p, "stall in DATA")

    c = p.connect()
    c.send(b"EHL")   # a partial command, never finished
    t.is_(c.read_reply(), "421 4.4.2 mx.petrel.test Error: timeout exceeded", "a half-sent command: 421 4.4.2")
    still_serves(p, "half-sent command")

# --- error limits ---
with Petrel(t, main_cf={"smtpd_hard_error_limit": "3", "smtpd_junk_command_limit": "2"}) as p:
    c = p.connect()
    c.ehlo()
    t.like(c.cmd("JUNK1"), r"^502 5\.5\.2 ", "error 1")
    t.like(c.cmd("RCPT TO:<user@petrel.test>"), r"^503 5\.5\.1 ", "error 2")
    c.send(b"JUNK3\r\n")
    t.like(c.read_reply(), r"^502 5\.5\.2 ", "error 3 is answered")
    t.is_(c.read_reply(), "421 4.7.0 mx.petrel.test Error: too many errors",
          "then smtpd_hard_error_limit=3: 421 4.7.0 at once")
    t.ok(c.closed(), "and the server disconnects")
    t.ok(p.wait_log(r"too many errors after UNKNOWN from unknown\[127\.0\.0\.1\]") is not None, "logged")
    still_serves(p, "hard error limit")

    c = p.connect()
    c.ehlo()
    replies = [c.cmd("NOOP") for _ in range(5)]
    t.is_(replies, ["250 2.0.0 Ok"] * 5, "NOOPs are answered")
    t.is_(c.read_reply(), "421 4.7.0 mx.petrel.test Error: too many errors",
          "junk commands past smtpd_junk_command_limit count as errors: 421 4.7.0")
    still_serves(p, "junk commands")

with Petrel(t, main_cf={"smtpd_soft_error_limit": "2", "smtpd_error_sleep_time": "1s"}) as p:
    c = p.connect()
    c.ehlo()
    start = time.time()
    c.cmd("JUNK1")
    c.cmd("JUNK2")
    fast = time.time() - start
    start = time.time()
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "past the soft error limit the session goes on")
    slow = time.time() - start
    t.ok(fast < 0.8 and slow >= 0.9, "past smtpd_soft_error_limit the client is slowed by smtpd_error_sleep_time",
         "before %.2f s, after %.2f s" % (fast, slow))
    start = time.time()
    c.cmd("NOOP")
    again = time.time() - start
    t.ok(again >= 0.9, "and every later reply, not only an error's (Postfix sleeps on anything past the limit)",
         "%.2f s" % again)
    c.close()
    still_serves(p, "soft error limit")

# --- VRFY disabled ---
with Petrel(t, main_cf={"disable_vrfy_command": "yes"}) as p:
    c = p.connect()
    c.ehlo()
    t.ok("250-VRFY" not in c.lines, "EHLO does not offer VRFY when disabled")
    t.is_(c.cmd("VRFY user@petrel.test"), "502 5.5.1 VRFY command is disabled", "disable_vrfy_command=yes: 502 5.5.1")
    c.close()
    still_serves(p, "VRFY disabled")

# --- relaying: 127.0.0.1 is outside mynetworks here ---
with Petrel(t, main_cf={"mynetworks": "192.0.2.0/24"}) as p:
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok", "MAIL from an outside client")
    t.is_(c.cmd("RCPT TO:<someone@elsewhere.example>"), "454 4.7.1 <someone@elsewhere.example>: Relay access denied",
          "relay for an outside client: 454 4.7.1 (defer_unauth_destination)")
    t.is_(c.cmd("RCPT TO:<postmaster@elsewhere.example>"),
          "454 4.7.1 <postmaster@elsewhere.example>: Relay access denied", "postmaster@elsewhere is no way to relay")
    t.is_(c.cmd("RCPT TO:<someone@elsewhere.example@petrel.test>").split()[0], "501",
          "a double @ is a syntax error, not a relay trick")
    t.is_(c.cmd("RCPT TO:<someone%elsewhere.example@petrel.test>"),
          "550 5.1.1 <someone%elsewhere.example@petrel.test>: Recipient address rejected: "
          "User unknown in local recipient table",
          "a %-hack to our own domain is a local address, not a relay: an unknown local user")
    t.is_(c.cmd("RCPT TO:<postmaster>"), "250 2.1.5 Ok", "<postmaster> accepted")
    t.is_(c.cmd("RCPT TO:<Postmaster@petrel.test>"), "250 2.1.5 Ok", "postmaster at our domain accepted")
    t.is_(c.cmd("RCPT TO:<user@MX.Petrel.Test>"), "250 2.1.5 Ok", "domain match ignores case")
    c.cmd("DATA")
    c.send(b"Subject: mixed\r\n\r\nmixed\r\n.\r\n")
    t.like(c.read_reply(), OK_RE, "the message goes to the accepted recipients")
    c.close()
    still_serves(p, "relay denied")

with Petrel(t, main_cf={"mynetworks": "192.0.2.0/24", "smtpd_relay_restrictions": "reject_unauth_destination",
                        "relay_domains": "relay.example"}) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<someone@elsewhere.example>"), "554 5.7.1 <someone@elsewhere.example>: Relay access denied",
          "reject_unauth_destination: 554 5.7.1")
    t.is_(c.cmd("RCPT TO:<someone@relay.example>"), "250 2.1.5 Ok", "relay_domains are accepted")
    t.is_(c.cmd("RCPT TO:<someone@sub.relay.example>"), "250 2.1.5 Ok", "and their subdomains")
    t.like(c.cmd("RCPT TO:<someone@[192.0.2.7]>"), r"^554 5\.7\.1 ", "an address literal is not ours: 554 5.7.1")
    c.close()
    still_serves(p, "reject_unauth_destination")

# --- connection count limit, shared by both workers ---
with Petrel(t, main_cf={"smtpd_client_connection_count_limit": "2",
                        "smtpd_client_event_limit_exceptions": "192.0.2.1"}) as p:
    workers = p.worker_pids(at_least=2)
    t.is_(len(workers), 2, "two workers")
    held = []
    for pid in workers:
        held.append(on_worker(workers, pid, lambda: p.connect(source="127.0.0.2")))
    t.is_([h.code for h in held], [220, 220], "two connections from 127.0.0.2, one on each worker")
    pids = [m for m in __import__("re").findall(r"smtpd\[(\d+)\]: connect from unknown\[127\.0\.0\.2\]", p.log())]
    t.is_(sorted(int(x) for x in pids), sorted(workers), "the log shows each worker accepted one of them")
    third = p.connect(source="127.0.0.2")
    t.is_(third.lines[-1], "421 4.7.0 mx.petrel.test Error: too many connections from 127.0.0.2",
          "the 3rd concurrent connection: 421 4.7.0, counted across both workers")
    t.ok(third.closed(), "and it is closed")
    t.ok(p.wait_log(r"Connection concurrency limit exceeded: 3 from unknown\[127\.0\.0\.2\]") is not None, "logged")
    other = p.connect(source="127.0.0.3")
    t.is_(other.code, 220, "another client address is not limited")
    other.close()
    held[0].cmd("QUIT")
    first = held[0].sock.getsockname()[1]
    held[0].close()
    p.wait_closed([first])   # its session has given its count back (not at the client's close)
    again = p.connect(source="127.0.0.2")
    t.is_(again.code, 220, "after one closes, the client may connect again")
    ended = [again.sock.getsockname()[1], held[1].sock.getsockname()[1]]
    again.close()
    held[1].close()
    p.wait_closed(ended)
    still_serves(p, "connection count limit", src="127.0.0.2")

# Default exceptions ($mynetworks): no limit for 127.0.0.0/8.
with Petrel(t, main_cf={"smtpd_client_connection_count_limit": "1"}) as p:
    a = p.connect()
    b = p.connect()
    t.is_((a.code, b.code), (220, 220), "mynetworks clients are exempt by default")
    a.close()
    b.close()
    still_serves(p, "exempt count limit")

# --- connection rate limit, shared by both workers ---
with Petrel(t, main_cf={"smtpd_client_connection_rate_limit": "2",
                        "smtpd_client_event_limit_exceptions": "192.0.2.1"}) as p:
    workers = p.worker_pids(at_least=2)
    codes = []
    for pid in workers:
        c = on_worker(workers, pid, lambda: p.connect(source="127.0.0.4"))
        codes.append(c.code)
        c.cmd("QUIT")
        c.close()
    t.is_(codes, [220, 220], "two connections from 127.0.0.4 within the minute, one per worker")
    c = p.connect(source="127.0.0.4")
    t.is_(c.lines[-1], "421 4.7.0 mx.petrel.test Error: too many connections from 127.0.0.4",
          "the 3rd connection in the rate window: 421 4.7.0, counted across both workers")
    c.close()
    t.ok(p.wait_log(r"Connection rate limit exceeded: 3 from unknown\[127\.0\.0\.4\]") is not None, "logged")
    still_serves(p, "connection rate limit", src="127.0.0.5")

# --- maxproc in master.cf limits concurrent sessions of the service ---
# (at the limit new clients wait in the backlog: test_service_limits.py)
with Petrel(t, start=False) as p:
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write("127.0.0.1:%d inet n - n - 2 smtpd\n" % p.port)
    p.start()
    p.wait_closed([p.probe_port])   # the harness' probe connection has given its slot back
    a = p.connect()
    b = p.connect()
    c = p.connect(read_greeting=False)
    t.is_((a.code, b.code), (220, 220), "maxproc 2: two sessions are served")
    t.ok(not c.closed(wait=1.0) and c.buf == b"", "the 3rd session waits: no greeting, no 421")
    a.cmd("QUIT")
    a.close()
    c.sock.settimeout(30)
    t.like(c.read_reply(), r"^220 ", "and is greeted when a session ends")
    ended = c.sock.getsockname()[1]
    c.close()
    p.wait_closed([ended])
    still_serves(p, "maxproc")
    b.close()

t.done()
