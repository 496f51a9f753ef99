"""postscreen on the SMTP port, with Debian's master.cf lines: the port is
bound, new clients meet the pregreet test and pass to smtpd (the pass
service's settings apply), the temporary allowlist makes them PASS OLD on
any worker and after a reload, the permanent access list, the pregreet
actions, the tests after the greeting (pipelining, non-SMTP commands, bare
newlines) with their actions and Postfix's "come back" rule, the command
limits, and the pre- and post-queue limits. Replies and log lines are
checked word for word as Postfix writes them."""
import os
import re
import signal
import subprocess
import time

from harness import PETRELD, Tap, holds_listener, on_worker, wait_for
from psclib import BANNER, PASSED_BANNER, connect, client_port, postscreen

t = Tap()

# --- the Debian lines load and bind the port ---
with postscreen(t, start=False) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.is_(r.returncode, 0, "petreld -n accepts Debian's postscreen master.cf")
    t.ok("service dnsblog (command dnsblog): done inside the smtpd workers (postscreen); no process of its own"
         in r.stderr, "dnsblog is said to be done inside the workers", r.stderr)
    t.ok("service tlsproxy (command tlsproxy): done inside the smtpd workers" in r.stderr, "tlsproxy too")
    t.ok("unknown command" not in r.stderr and "]: error: " not in r.stderr, "and nothing is refused", r.stderr)

with postscreen(t) as p:
    # A new client: the teaser, the wait, then smtpd's greeting (the pass service's banner).
    c = connect(p.port, "127.0.0.2")
    t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER],
          "a new client gets postscreen's 220- teaser, then after the greet wait smtpd's 220 of the pass service")
    cp = client_port(c)
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: CONNECT from \[127\.0\.0\.2\]:%d to \[127\.0\.0\.1\]:%d\n"
                    % (cp, p.port)) is not None, "CONNECT from [client]:port to [server]:port")
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: PASS NEW \[127\.0\.0\.2\]:%d\n" % cp) is not None, "PASS NEW")
    t.ok(p.wait_log(r"petrel/smtpd\[\d+\]: connect from unknown\[127\.0\.0\.2\]\n") is not None,
         "then smtpd's own connect line: the same socket, now an smtpd session")
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: through postscreen\r\n\r\nhello\r\n")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \S+$", "mail flows through the smtpd session after the pass")
    c.cmd("QUIT")
    c.close()

    # The temporary allowlist: PASS OLD, on each worker. Which worker accepts
    # a connection is the kernel's choice (it may give every one to the same
    # worker): each in turn accepts one while the others are stopped (only
    # until its CONNECT line: the pass to smtpd may need another process).
    def listening():
        pids = [pid for pid in p.worker_pids() if holds_listener(pid, p.port)]
        return pids if len(pids) >= 2 else None
    workers = wait_for(listening, timeout=30) or []
    pids_old = set()
    greetings = set()

    def accepted_by(pid):
        c = connect(p.port, "127.0.0.2", read=False)
        p.wait_log(r"petrel/postscreen\[%d\]: CONNECT from \[127\.0\.0\.2\]:%d " % (pid, client_port(c)))
        return c
    for pid in workers:
        c = on_worker(workers, pid, lambda: accepted_by(pid))
        c.read_reply()
        greetings.add(tuple(c.lines))
        cp = client_port(c)
        c.cmd("QUIT")
        c.close()
        m = p.wait_log(r"petrel/postscreen\[(\d+)\]: PASS OLD \[127\.0\.0\.2\]:%d\n" % cp)
        if m:
            pids_old.add(m.group(1))
    t.is_(greetings, {("220 " + PASSED_BANNER,)}, "a client that passed gets smtpd's greeting at once, no teaser")
    t.ok(len(workers) == 2 and pids_old == set(str(pid) for pid in workers),
         "PASS OLD is logged by both smtpd workers: the cache is shared", (workers, pids_old))

    # A reload: new workers, same cache file.
    old_workers = set(str(x) for x in p.worker_pids(at_least=2))
    os.kill(p.proc.pid, signal.SIGHUP)
    t.ok(p.wait_log(r"reload -- version") is not None, "SIGHUP reloads")
    # the old workers close their listener at their drain signal: from then
    # on only a new one accepts
    wait_for(lambda: not any(holds_listener(int(pid), p.port) for pid in old_workers), timeout=30)
    deadline = time.time() + 30
    seen_new = False
    while time.time() < deadline and not seen_new:
        c = connect(p.port, "127.0.0.2")
        cp = client_port(c)
        c.cmd("QUIT")
        c.close()
        m = p.wait_log(r"petrel/postscreen\[(\d+)\]: PASS OLD \[127\.0\.0\.2\]:%d\n" % cp, timeout=5)
        seen_new = m is not None and m.group(1) not in old_workers
    t.ok(seen_new, "after the reload a new worker still finds the client: PASS OLD")

    # Pregreet, default action ignore: logged, then smtpd sees the early talker.
    # The client talks at once (not after reading the teaser), so that a
    # slow test client cannot miss postscreen_greet_wait (1 s).
    c = connect(p.port, "127.0.0.3", read=False)
    c.send("EHLO early.example\r\n")
    teaser = c._read_line()
    t.is_(teaser, "220-" + BANNER, "the teaser comes first")
    t.is_(c.read_reply(), "554 5.5.0 Error: SMTP protocol synchronization",
          "greet action ignore: the client is handed to smtpd, which refuses the early talker")
    cp = client_port(c)
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: PREGREET 20 after [0-9.]+ from \[127\.0\.0\.3\]:%d: "
                    r"EHLO early\.example\\r\\n\n" % cp) is not None,
         "PREGREET 20 after N from [addr]:port: the escaped text, as Postfix logs it")
    c.close()

# --- pregreet: enforce and drop ---
# A pregreet ends the greet wait at once, so a long one costs nothing here
# and no slow test client can miss it.
with postscreen(t, main_cf={"postscreen_greet_action": "enforce", "postscreen_greet_wait": "4s"}) as p:
    c = connect(p.port, "127.0.0.4", read=False)
    c.send("EHLO early.example\r\n")
    c._read_line()
    t.like(c.read_reply(), r"^250 CHUNKING$", "enforce: no greeting for a pregreeter, its EHLO is answered")
    t.ok("250-PIPELINING" not in c.lines, "postscreen's engine announces no PIPELINING", c.lines)
    t.is_(c.lines, ["250-mx.petrel.test", "250-SIZE 10240000", "250-VRFY", "250-ETRN", "250-ENHANCEDSTATUSCODES",
                    "250-8BITMIME", "250-DSN", "250-SMTPUTF8", "250 CHUNKING"], "Postfix's EHLO reply, no PIPELINING")
    t.is_(c.cmd("MAIL FROM:<spammer@example.com>"), "250 2.1.0 Ok", "MAIL is accepted")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "550 5.5.1 Protocol error", "RCPT is refused with the reason")
    cp = client_port(c)
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: NOQUEUE: reject: RCPT from \[127\.0\.0\.4\]:%d: 550 5\.5\.1 "
                    r"Protocol error; from=<spammer@example\.com>, to=<user@petrel\.test>, proto=ESMTP, "
                    r"helo=<early\.example>\n" % cp) is not None, "and logged as Postfix's postscreen logs it")
    t.is_(c.cmd("QUIT"), "221 2.0.0 Bye", "QUIT")
    t.ok(c.closed(), "and the connection ends")
    t.ok(p.wait_log(r"DISCONNECT \[127\.0\.0\.4\]:%d\n" % cp) is not None, "DISCONNECT")
    t.ok(p.wait_log(r"PASS (NEW|OLD) \[127\.0\.0\.4\]", timeout=10) is None, "a client that failed does not pass")
    c = connect(p.port, "127.0.0.4", read=False)
    t.is_(c._read_line(), "220-" + BANNER, "and is tested again on its next connection")
    c.close()
    c = connect(p.port, "127.0.0.5")
    t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "the server keeps serving")
    c.close()

with postscreen(t, main_cf={"postscreen_greet_action": "drop", "postscreen_greet_wait": "4s"}) as p:
    c = connect(p.port, "127.0.0.4", read=False)
    c.send("HELO early\r\n")
    c._read_line()
    t.is_(c.read_reply(), "521 5.5.1 Protocol error", "drop: 521 5.5.1 Protocol error at once")
    t.ok(c.closed(), "and the connection is closed")
    cp = client_port(c)
    t.ok(p.wait_log(r"PREGREET 12 after [0-9.]+ from \[127\.0\.0\.4\]:%d: HELO early\\r\\n\n" % cp) is not None,
         "PREGREET logged")
    t.ok(p.wait_log(r"DISCONNECT \[127\.0\.0\.4\]:%d\n" % cp) is not None, "DISCONNECT logged")

# --- the permanent access list ---
with postscreen(t, start=False, main_cf={"postscreen_denylist_action": "drop", "mynetworks": "127.0.0.9/32"}) as p:
    acl = p.write_file("psc_access.cidr", "127.0.0.6/32 reject\n127.0.0.7 permit\n127.0.0.8 dunno\n")
    p.settings["postscreen_access_list"] = "permit_mynetworks, cidr:" + acl
    p.write_main_cf(p.settings)
    p.start()
    c = connect(p.port, "127.0.0.6")
    t.is_(c.lines, ["521 5.3.2 Service currently unavailable"], "a denylisted client: drop, 521 5.3.2")
    t.ok(c.closed(), "and closed")
    t.ok(p.wait_log(r"DENYLISTED \[127\.0\.0\.6\]:%d\n" % client_port(c)) is not None, "DENYLISTED [addr]:port")
    c = connect(p.port, "127.0.0.7")
    t.is_(c.lines, ["220 " + PASSED_BANNER], "an allowlisted client goes to smtpd at once, no teaser")
    t.ok(p.wait_log(r"ALLOWLISTED \[127\.0\.0\.7\]:%d\n" % client_port(c)) is not None, "ALLOWLISTED [addr]:port")
    c.close()
    c = connect(p.port, "127.0.0.9")
    t.is_(c.lines, ["220 " + PASSED_BANNER], "permit_mynetworks allowlists mynetworks")
    c.close()
    c = connect(p.port, "127.0.0.8")
    t.is_(c.lines[0], "220-" + BANNER, "dunno: the tests go on")
    c.close()

# The old name of the action still works, and respectful_logging = no gives the old words.
with postscreen(t, start=False, main_cf={"postscreen_blacklist_action": "enforce", "respectful_logging": "no"}) as p:
    acl = p.write_file("psc_access.cidr", "127.0.0.6 reject\n")
    p.settings["postscreen_access_list"] = "cidr:" + acl
    p.write_main_cf(p.settings)
    p.start()
    c = connect(p.port, "127.0.0.6")
    t.is_(c.lines[-1], "220 " + BANNER, "postscreen_blacklist_action = enforce: the test engine greets")
    c.ehlo("x.example")
    c.cmd("MAIL FROM:<a@example.com>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "550 5.3.2 Service currently unavailable",
          "and refuses RCPT with 550 5.3.2")
    t.ok(p.wait_log(r"BLACKLISTED \[127\.0\.0\.6\]:%d\n" % client_port(c)) is not None,
         "respectful_logging = no: BLACKLISTED")
    c.close()

# --- the tests after the greeting ---
deep = {"postscreen_pipelining_enable": "yes", "postscreen_non_smtp_command_enable": "yes",
        "postscreen_bare_newline_enable": "yes", "postscreen_bare_newline_action": "enforce"}
with postscreen(t, main_cf=deep) as p:
    c = connect(p.port, "127.0.0.10")
    t.is_(c.lines, ["220-" + BANNER, "220 " + BANNER],
          "after-220 tests: after the wait the greeting is postscreen's engine's, not smtpd's")
    c.ehlo("good.example")
    t.is_(c.code, 250, "EHLO")
    t.is_(c.cmd("MAIL FROM:<sender@example.org>"), "250 2.1.0 Ok", "MAIL")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "450 4.3.2 Service currently unavailable",
          "a client that passed every test is told to come back: 450 4.3.2 at RCPT")
    cp = client_port(c)
    t.is_(c.cmd("QUIT"), "221 2.0.0 Bye", "QUIT")
    c.close()
    t.ok(p.wait_log(r"NOQUEUE: reject: RCPT from \[127\.0\.0\.10\]:%d: 450 4\.3\.2 Service currently unavailable; "
                    r"from=<sender@example\.org>, to=<user@petrel\.test>, proto=ESMTP, helo=<good\.example>\n"
                    % cp) is not None, "the 450 is logged as Postfix logs it")
    t.ok(p.wait_log(r"PASS NEW \[127\.0\.0\.10\]:%d\n" % cp) is not None, "PASS NEW once the session ends")
    t.ok(p.wait_log(r"DISCONNECT \[127\.0\.0\.10\]:%d\n" % cp) is not None, "DISCONNECT")
    c = connect(p.port, "127.0.0.10")
    t.is_(c.lines, ["220 " + PASSED_BANNER], "it comes back: PASS OLD, straight to smtpd")
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: second try\r\n\r\nhi\r\n")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \S+$", "and its mail is accepted")
    c.close()

    # Pipelining: two commands in one write.
    c = connect(p.port, "127.0.0.11")
    c.send("EHLO pipe.example\r\nMAIL FROM:<a@example.com>\r\n")
    c.read_reply()
    t.is_(c.read_reply(), "250 2.1.0 Ok", "the pipelined commands are still answered")
    cp = client_port(c)
    t.ok(p.wait_log(r"COMMAND PIPELINING from \[127\.0\.0\.11\]:%d after EHLO: "
                    r"MAIL FROM:<a@example\.com>\\r\\n\n" % cp) is not None,
         "COMMAND PIPELINING from [addr]:port after EHLO: what followed, escaped")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "550 5.5.1 Protocol error",
          "pipelining action enforce (the default): 550 5.5.1 at RCPT")
    c.cmd("QUIT")
    c.close()
    c = connect(p.port, "127.0.0.11")
    t.is_(c.lines[0], "220-" + BANNER, "a pipeliner is tested again next time")
    c.close()

    # Non-SMTP commands: the default action is drop.
    c = connect(p.port, "127.0.0.12")
    t.is_(c.cmd("GET / HTTP/1.0"), "521 5.7.0 Error: I can break rules, too. Goodbye.",
          "an HTTP request: 521 5.7.0 (non-SMTP command, drop)")
    t.ok(c.closed(), "and closed")
    t.ok(p.wait_log(r"NON-SMTP COMMAND from \[127\.0\.0\.12\]:%d after CONNECT: GET / HTTP/1\.0\n" % client_port(c))
         is not None, "NON-SMTP COMMAND from [addr]:port after CONNECT: the command")
    c = connect(p.port, "127.0.0.13")
    c.ehlo("x.example")
    t.is_(c.cmd("Subject: hello"), "521 5.7.0 Error: I can break rules, too. Goodbye.",
          "a mail header as a command is not SMTP")
    t.ok(p.wait_log(r"NON-SMTP COMMAND from \[127\.0\.0\.13\]:%d after EHLO: Subject: hello\n" % client_port(c))
         is not None, "logged after EHLO")
    c = connect(p.port, "127.0.0.13")
    t.is_(c.cmd("\x01\x02"), "521 5.7.0 Error: I can break rules, too. Goodbye.",
          "a command that is not text, through smtpd_forbidden_commands' regexp:{{/^[^A-Z]/ Bogus}}")
    t.ok(p.wait_log(r"NON-SMTP COMMAND from \[127\.0\.0\.13\]:%d after CONNECT: \?\? \n" % client_port(c))
         is not None, "its name logged printable")

    # Bare newlines, action enforce.
    c = connect(p.port, "127.0.0.14")
    c.send("EHLO bare.example\n")
    c.read_reply()
    t.is_(c.code, 250, "a bare LF still ends the command")
    cp = client_port(c)
    t.ok(p.wait_log(r"BARE NEWLINE from \[127\.0\.0\.14\]:%d after EHLO bare\.example\n" % cp) is not None,
         "BARE NEWLINE from [addr]:port after the line")
    c.cmd("MAIL FROM:<a@example.com>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "550 5.5.1 Protocol error", "enforce: 550 5.5.1 at RCPT")
    c.close()

    # DATA without a valid recipient ends the session, as in Postfix.
    c = connect(p.port, "127.0.0.15")
    c.ehlo("x.example")
    c.cmd("MAIL FROM:<a@example.com>")
    t.is_(c.cmd("DATA"), "554 5.5.1 Error: no valid recipients", "DATA: 554 5.5.1")
    t.ok(c.closed(), "and the connection ends")
    t.ok(p.wait_log(r"DATA without valid RCPT from \[127\.0\.0\.15\]:%d\n" % client_port(c)) is not None,
         "DATA without valid RCPT from [addr]:port")
    c = connect(p.port, "127.0.0.16")
    t.is_(c.cmd("AUTH PLAIN AAAA"), "502 5.5.2 Error: command not recognized", "no AUTH in postscreen's engine")
    t.is_(c.cmd("STARTTLS"), "502 5.5.1 Error: command not implemented", "no STARTTLS either (doc/postscreen.md)")
    t.is_(c.cmd("VRFY user"), "450 4.3.2 Service currently unavailable", "VRFY gets the RCPT reply")
    t.is_(c.cmd("ETRN x"), "458 Unable to queue messages", "ETRN")
    c.close()

# --- command limits of the test engine ---
with postscreen(t, main_cf={"postscreen_pipelining_enable": "yes", "postscreen_command_count_limit": "3",
                            "postscreen_command_time_limit": "2s", "line_length_limit": "600"}) as p:
    c = connect(p.port, "127.0.0.20")
    for i in range(3):
        c.cmd("NOOP")
    t.is_(c.cmd("NOOP"), "421 mx.petrel.test Service unavailable - try again later",
          "postscreen_command_count_limit: the next command gets 421")
    t.ok(p.wait_log(r"COMMAND COUNT LIMIT from \[127\.0\.0\.20\]:%d after NOOP\n" % client_port(c)) is not None,
         "COMMAND COUNT LIMIT logged")
    c = connect(p.port, "127.0.0.21")
    c.send("NOOP")
    t.is_(c.read_reply(), "421 4.4.2 mx.petrel.test Error: timeout exceeded",
          "a command that does not end within postscreen_command_time_limit: 421 4.4.2")
    t.ok(p.wait_log(r"COMMAND TIME LIMIT from \[127\.0\.0\.21\]:%d after CONNECT\n" % client_port(c)) is not None,
         "COMMAND TIME LIMIT logged")
    c = connect(p.port, "127.0.0.22")
    c.send("X" * 700)
    t.is_(c.read_reply(), "421 mx.petrel.test Service unavailable - try again later",
          "a command longer than line_length_limit: 421")
    t.ok(p.wait_log(r"COMMAND LENGTH LIMIT from \[127\.0\.0\.22\]:%d after CONNECT\n" % client_port(c)) is not None,
         "COMMAND LENGTH LIMIT logged")
    c = connect(p.port, "127.0.0.23")
    c.ehlo("x.example")
    t.is_(c.code, 250, "the server keeps serving")
    c.close()

# --- pre-queue: too many clients being screened; postscreen's stress ---
with postscreen(t, main_cf={"postscreen_pre_queue_limit": "10", "postscreen_greet_wait": "${stress?{1}:{8}}s"}) as p:
    # The harness's start-up probe must be gone before the count starts.
    wait_for(lambda: "DISCONNECT [127.0.0.1]" in p.log(), timeout=30)
    waiting = []
    for i in range(9):
        waiting.append(connect(p.port, "127.0.1.%d" % (i + 1), read=False))
    t.ok(wait_for(lambda: len(re.findall(r"CONNECT from \[127\.0\.1\.", p.log())) == 9, timeout=30),
         "nine clients are being screened (postscreen_greet_wait is 8 s without stress)")
    t.ok(p.wait_log(r"entering STRESS mode with 9 connections\n") is not None,
         "at 90% of postscreen_pre_queue_limit postscreen enters stress")
    c = connect(p.port, "127.0.1.100")
    t.is_(c.lines, ["421 4.3.2 All screening ports are busy"], "the 10th client being screened: 421 4.3.2")
    t.ok(p.wait_log(r"reject: connect from \[127\.0\.1\.100\]:%d: all screening ports busy\n" % client_port(c))
         is not None, "logged as Postfix does")
    for w in waiting:
        w.close()
    t.ok(p.wait_log(r"leaving STRESS mode with \d+ connections\n") is not None, "and leaves stress when they go")

# --- post-queue: the smtpd service is full; clients wait, then are refused ---
with postscreen(t, pass_maxproc="1", main_cf={"postscreen_access_list": "permit", "postscreen_post_queue_limit": "5"}
                ) as p:
    first = connect(p.port, "127.0.2.1")
    t.is_(first.lines, ["220 " + PASSED_BANNER], "the one smtpd session slot")
    queued = [connect(p.port, "127.0.2.%d" % (i + 2), read=False) for i in range(5)]
    t.ok(p.wait_log(r"ALLOWLISTED \[127\.0\.2\.6\]") is not None, "five clients pass")
    # Every one of them waits: none hears anything (a 421 here means another
    # client took a place in the post-queue: once the harness's readiness
    # probe, screened late on a loaded machine, see psclib.probe_gone).
    import select
    ready, _, _ = select.select([q.sock for q in queued], [], [], 1)
    heard = []
    for q in [q for q in queued if q.sock in ready]:
        try:
            heard.append("%s: %s" % (q.sock.getsockname()[0], q.read_reply()))
        except OSError as e:
            heard.append("%s: closed (%s)" % (q.sock.getsockname()[0], e))
    t.is_(heard, [], "the passed clients wait while the smtpd service is at its maxproc")
    c = connect(p.port, "127.0.2.100")
    t.is_(c.lines, ["421 4.3.2 All server ports are busy"],
          "with postscreen_post_queue_limit clients waiting, the next gets 421 4.3.2 at connect")
    t.ok(p.wait_log(r"NOQUEUE: reject: CONNECT from \[127\.0\.2\.100\]:%d: all server ports busy\n"
                    % client_port(c)) is not None, "logged as Postfix does")
    # A reload: the old workers drain, and the clients they hold waiting
    # must still get their turn (they are woken as before).
    old_workers = set(p.worker_pids(at_least=2))
    os.kill(p.proc.pid, signal.SIGHUP)
    t.ok(p.wait_log(r"reload -- version") is not None, "a reload while clients wait")
    t.ok(wait_for(lambda: len(set(p.worker_pids()) - old_workers) >= 2, timeout=30), "new workers run")
    # the old workers take their drain signal (they close their listener) before the slot frees
    wait_for(lambda: not any(holds_listener(pid, p.port) for pid in old_workers), timeout=30)
    first.cmd("QUIT")
    first.close()
    # Watch every waiting client until one is greeted (a loaded machine may
    # take a while), keeping whatever the others hear meanwhile.
    greeted, others = None, []
    deadline = time.time() + 30
    pending = list(queued)
    while greeted is None and pending and time.time() < deadline:
        ready, _, _ = select.select([q.sock for q in pending], [], [], 1)
        for q in [q for q in pending if q.sock in ready]:
            pending.remove(q)
            try:
                reply = q.read_reply()
            except OSError as e:
                reply = "closed (%s)" % e
            if reply == "220 " + PASSED_BANNER and greeted is None:
                greeted = q
            else:
                others.append("%s: %s" % (q.sock.getsockname()[0], reply))
    t.ok(greeted is not None, "when the session ends, a waiting client gets the slot and smtpd's greeting")
    ready, _, _ = select.select([q.sock for q in pending], [], [], 2)   # a second grant, if any
    for q in [q for q in pending if q.sock in ready]:
        try:
            others.append("%s: %s" % (q.sock.getsockname()[0], q.read_reply()))
        except OSError as e:
            others.append("%s: closed (%s)" % (q.sock.getsockname()[0], e))
    # The one slot went to one client: no other was let in. (Twice in loaded
    # CI runs another client became readable too: it had been refused "421
    # 4.3.2 All server ports are busy" at connect, because the harness's
    # readiness probe, screened late, had taken a place in the post-queue.
    # psclib now waits for the probe to be gone; the description still says
    # what any other client heard.)
    t.ok(not any(o.endswith(": 220 " + PASSED_BANNER) for o in others),
         "no second waiting client is let in for the one slot%s"
         % (" (others heard: %s)" % "; ".join(others) if others else ""))
    for q in queued:
        q.close()

# The same with one worker and one waiting client: once the session ends,
# the waiting client is all the draining worker has left, and the worker
# must serve it rather than exit under it.
with postscreen(t, pass_maxproc="1", main_cf={"postscreen_access_list": "permit", "smtpd_workers": "1"}) as p:
    first = connect(p.port, "127.0.2.1")
    t.is_(first.lines, ["220 " + PASSED_BANNER], "one worker: the one smtpd session slot")
    waiting = connect(p.port, "127.0.2.2", read=False)
    t.ok(p.wait_log(r"ALLOWLISTED \[127\.0\.2\.2\]") is not None, "a second client passes and waits")
    old_workers = set(p.worker_pids(at_least=1))
    os.kill(p.proc.pid, signal.SIGHUP)
    t.ok(p.wait_log(r"reload -- version") is not None, "a reload")
    t.ok(wait_for(lambda: len(set(p.worker_pids()) - old_workers) >= 1, timeout=30), "a new worker runs")
    # the old workers take their drain signal (they close their listener) before the slot frees
    wait_for(lambda: not any(holds_listener(pid, p.port) for pid in old_workers), timeout=30)
    first.cmd("QUIT")
    first.close()
    try:
        got = waiting.read_reply()
    except OSError as e:
        got = "no greeting: %s" % e
    t.is_(got, "220 " + PASSED_BANNER, "the waiting client is greeted by smtpd")
    if got.startswith("220 "):
        r = waiting.send_message("sender@example.org", ["user@petrel.test"], "Subject: drained\r\n\r\nhi\r\n")
    else:
        r = got
    t.like(r, r"^250 2\.0\.0 Ok: queued as \S+$", "and its mail is accepted by the draining worker")
    waiting.close()

# --- waiting clients that hang up give up their places at once ---
# Five clients wait (postscreen_post_queue_limit 5, its minimum) and hang
# up, one after sending a byte. Their places must go with them: a sixth
# client is then let into the post-queue rather than refused "421 4.3.2 All
# server ports are busy", and it, not a dead socket, gets the slot when it
# frees.
with postscreen(t, pass_maxproc="1", main_cf={"postscreen_access_list": "permit",
                                              "postscreen_post_queue_limit": "5", "smtpd_workers": "1"}) as p:
    first = connect(p.port, "127.0.3.1")
    t.is_(first.lines, ["220 " + PASSED_BANNER], "hang-up: the one smtpd session slot")
    gone = [connect(p.port, "127.0.3.%d" % i, read=False) for i in range(2, 7)]
    t.ok(all(p.wait_log(r"ALLOWLISTED \[127\.0\.3\.%d\]" % i) is not None for i in range(2, 7)),
         "five clients pass and wait")
    gone[0].sock.sendall(b"E")   # early bytes: the hang-up behind them is seen too
    for g in gone:
        g.close()
    t.ok(all(p.wait_log(r"HANGUP after \S+ from \[127\.0\.3\.%d\]:\d+ while waiting for an smtpd session" % i)
             is not None for i in range(2, 7)), "every hang-up is noticed while the clients wait, and logged")
    last = connect(p.port, "127.0.3.7", read=False)
    t.ok(p.wait_log(r"ALLOWLISTED \[127\.0\.3\.7\]") is not None, "a sixth client passes")
    t.ok(p.wait_log(r"NOQUEUE: reject: CONNECT from \[127\.0\.3\.7\]", timeout=1) is None,
         "and is not refused as if the post-queue were still full")
    first.cmd("QUIT")
    first.close()
    try:
        got = last.read_reply()
    except OSError as e:
        got = "no greeting: %s" % e
    t.is_(got, "220 " + PASSED_BANNER, "the slot goes to the client that is still there")
    last.close()

# --- the cache's cleanup (postscreen_cache_cleanup_interval, _retention_time) ---
with postscreen(t, main_cf={"postscreen_cache_cleanup_interval": "2s", "postscreen_cache_retention_time": "1s",
                            "postscreen_greet_ttl": "1s"}) as p:
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: cache \S+/postscreen_cache\.lmdb full cleanup: retained=0 dropped=0 "
                    r"entries\n") is not None, "the cleanup runs (once for all workers) and says what it did")
    c = connect(p.port, "127.0.3.1")
    t.is_(c.lines[-1], "220 " + PASSED_BANNER, "a client passes")
    c.close()
    t.ok(p.wait_log(r"full cleanup: retained=0 dropped=1 entries\n", timeout=20) is not None,
         "its entry goes once its test expired longer ago than the retention time")
    c = connect(p.port, "127.0.3.1")
    t.is_(c.lines[0], "220-" + BANNER, "and it is screened again")
    c.close()

# --- SIGTERM: screened clients are told ---
with postscreen(t, main_cf={"postscreen_greet_wait": "10s"}) as p:
    c = connect(p.port, "127.0.3.2", read=False)
    t.is_(c._read_line(), "220-" + BANNER, "a client in the greet wait")
    p.proc.send_signal(signal.SIGTERM)
    t.is_(c.read_reply(), "421 4.3.2 mx.petrel.test Service shutting down", "SIGTERM: 421 4.3.2, as smtpd's sessions")
    t.ok(c.closed(), "and closed")
    t.is_(p.proc.wait(timeout=20), 0, "petreld stops")

# --- configurations Petrel refuses rather than misreads ---
for extra, master_extra, want in [
    ({"postscreen_cache_map": "memcache:127.0.0.1:11211"}, "",
     'postscreen_cache_map: type "memcache" is not supported for the postscreen cache'),
    ({"postscreen_dnsbl_sites": "bl.example*x"}, "", 'postscreen_dnsbl_sites: bad DNSBL weight factor "x"'),
    ({"postscreen_access_list": "permit_sasl_authenticated"}, "",
     'postscreen_access_list: unknown "permit_sasl_authenticated"'),
    ({"smtpd_service_name": "nosuch"}, "", 'but master.cf has no "nosuch pass ... smtpd" line'),
]:
    with postscreen(t, start=False, main_cf=extra) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        t.ok(r.returncode != 0 and want in r.stderr, "petreld -n refuses: %s" % want, r.stderr)
with postscreen(t, start=False, main_cf={"postscreen_command_filter": "pcre:/etc/x", "postscreen_pipelining_enable":
                                         "yes", "postscreen_tls_security_level": "may"}) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.ok("postscreen_command_filter is set but not implemented" in r.stderr,
         "a postscreen parameter Petrel does not implement is warned about", r.stderr)
    t.ok("postscreen_tls_security_level = may: the after-220 tests run without STARTTLS" in r.stderr,
         "and so is STARTTLS in the after-220 tests", r.stderr)
# The old names of the engine's TLS level too, and smtpd_use_tls they default to.
for extra, name in [({"postscreen_use_tls": "yes"}, "postscreen_use_tls"),
                    ({"smtpd_use_tls": "yes"}, "postscreen_use_tls"),
                    ({"postscreen_enforce_tls": "yes"}, "postscreen_enforce_tls")]:
    extra["postscreen_bare_newline_enable"] = "yes"
    with postscreen(t, start=False, main_cf=extra) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        # smtpd_use_tls = yes without a certificate also stops smtpd's own
        # start (TLS that cannot be applied): only the warning matters here.
        t.ok((r.returncode == 0 or "smtpd_use_tls" in extra)
             and "%s = yes: the after-220 tests run without STARTTLS" % name in r.stderr,
             "%s: STARTTLS in the after-220 tests is warned about" % sorted(extra), r.stderr)
with postscreen(t, start=False, main_cf={"postscreen_use_tls": "yes"}) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.ok(r.returncode == 0 and "STARTTLS" not in r.stderr, "not when no after-220 test runs", r.stderr)
with postscreen(t, start=False, main_cf={"postscreen_tls_cert_file": "/etc/ssl/x.pem"}) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.ok(r.returncode == 0 and "postscreen_tls_cert_file is set but has no effect: postscreen's after-220 test "
         "engine offers no STARTTLS here" in r.stderr, "a postscreen TLS parameter is accepted and warned about",
         r.stderr)

t.done()
