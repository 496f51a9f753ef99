"""postscreen's smaller settings, each against a real client, as
doc/postscreen.md describes them: soft_bounce, the per-client connection
limit, postscreen_allowlist_interfaces (the backup-MX veto), the test
engine's HELO, VRFY and EHLO settings, a client that hangs up, the
data_directory made for the cache, and a temporary allowlist that cannot
be opened. Replies and log lines are Postfix's, word for word."""
import os
import re
import subprocess
import tempfile

from harness import CLEANUP_DIRS, PETRELD, Tap, run_as_user
from psclib import BANNER, PASSED_BANNER, client_port, connect, postscreen

t = Tap()

# --- soft_bounce: no reply of postscreen's is permanent ---
with postscreen(t, start=False, main_cf={"soft_bounce": "yes", "postscreen_greet_action": "drop",
                                         "postscreen_denylist_action": "drop", "postscreen_greet_wait": "4s"}) as p:
    acl = p.write_file("psc_access.cidr", "127.0.4.1 reject\n")
    p.settings["postscreen_access_list"] = "cidr:" + acl
    p.write_main_cf(p.settings)
    p.start()
    c = connect(p.port, "127.0.4.1")
    t.is_(c.lines, ["421 4.3.2 Service currently unavailable"], "a denylisted client, drop: 421 4.3.2, not 521 5.3.2")
    t.ok(c.closed(), "and closed")
    c = connect(p.port, "127.0.4.2", read=False)
    c.send("EHLO early.example\r\n")   # at once: no slow test client misses the greet wait
    c._read_line()
    t.is_(c.read_reply(), "421 4.5.1 Protocol error", "a pregreeter, drop: 421 4.5.1, not 521 5.5.1")
    c = connect(p.port, "127.0.4.3")
    t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "the server keeps serving")
    c.close()

with postscreen(t, main_cf={"soft_bounce": "yes", "postscreen_pipelining_enable": "yes"}) as p:
    c = connect(p.port, "127.0.4.4")
    c.send("EHLO pipe.example\r\nMAIL FROM:<a@example.com>\r\n")
    c.read_reply()
    c.read_reply()
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "450 4.5.1 Protocol error",
          "the test engine's enforce reply: 450 4.5.1, not 550 5.5.1")
    t.ok(p.wait_log(r"NOQUEUE: reject: RCPT from \[127\.0\.4\.4\]:%d: 450 4\.5\.1 Protocol error; "
                    % client_port(c)) is not None, "and logged as such")
    c.close()

# --- postscreen_client_connection_count_limit ---
with postscreen(t, main_cf={"postscreen_client_connection_count_limit": "1", "postscreen_greet_wait": "8s"}) as p:
    first = connect(p.port, "127.0.4.10", read=False)
    t.is_(first._read_line(), "220-" + BANNER, "a client in the greet wait (8 s)")
    second = connect(p.port, "127.0.4.10")
    t.is_(second.lines, ["421 4.7.0 Error: too many connections"],
          "its second connection at the same time: 421 4.7.0 Error: too many connections")
    t.ok(second.closed(), "and closed")
    t.ok(p.wait_log(r"NOQUEUE: reject: CONNECT from \[127\.0\.4\.10\]:%d: too many connections\n"
                    % client_port(second)) is not None, "logged as Postfix does")
    other = connect(p.port, "127.0.4.11", read=False)
    t.is_(other._read_line(), "220-" + BANNER, "another client is not affected")
    other.close()
    first.close()

# --- postscreen_allowlist_interfaces: a client of another address is never allowlisted ---
with postscreen(t, main_cf={"postscreen_allowlist_interfaces": "127.0.0.200"}) as p:
    c = connect(p.port, "127.0.4.20")
    t.is_(c.lines, ["220-" + BANNER, "220 " + BANNER],
          "a client that passes the pregreet test stays with postscreen's engine")
    cp = client_port(c)
    t.ok(p.wait_log(r"ALLOWLIST VETO \[127\.0\.4\.20\]:%d\n" % cp) is not None, "ALLOWLIST VETO [addr]:port")
    c.ehlo("backup.example")
    c.cmd("MAIL FROM:<a@example.com>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "450 4.3.2 Service currently unavailable", "RCPT: come back later")
    c.cmd("QUIT")
    c.close()
    c = connect(p.port, "127.0.4.20")
    t.is_(c.lines[0], "220-" + BANNER, "and on its next connection it is screened again")
    cp2 = client_port(c)
    c.close()
    # both sessions over (their DISCONNECT lines): a PASS would be logged by then
    t.ok(all(p.wait_log(r"DISCONNECT \[127\.0\.4\.20\]:%d\n" % port) is not None for port in (cp, cp2))
         and re.search(r"PASS (NEW|OLD) \[127\.0\.4\.20\]", p.log()) is None, "it never passes")
# POSTSCREEN_README's backup MX: "!address static:all" (the first match decides).
with postscreen(t, main_cf={"postscreen_allowlist_interfaces": "!127.0.0.1 static:all", "respectful_logging": "no"}
                ) as p:
    c = connect(p.port, "127.0.4.22")
    t.is_(c.lines, ["220-" + BANNER, "220 " + BANNER], "!our address, static:all: our clients are never allowlisted")
    t.ok(p.wait_log(r"WHITELIST VETO \[127\.0\.4\.22\]:%d\n" % client_port(c)) is not None,
         "respectful_logging = no: WHITELIST VETO")
    c.close()
with postscreen(t, main_cf={"postscreen_allowlist_interfaces": "!127.0.0.2, static:all"}) as p:
    c = connect(p.port, "127.0.4.23")
    t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "!another address, static:all: our clients pass")
    c.close()
with postscreen(t, main_cf={"postscreen_allowlist_interfaces": "127.0.0.0/8", "respectful_logging": "no"}) as p:
    c = connect(p.port, "127.0.4.21")
    t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "a listed network: the client passes")
    c.close()
    t.ok(p.wait_log(r"PASS NEW \[127\.0\.4\.21\]") is not None and "VETO" not in p.log(), "PASS NEW, no veto")

# --- the test engine's settings ---
with postscreen(t, main_cf={"postscreen_pipelining_enable": "yes", "postscreen_helo_required": "yes",
                            "postscreen_disable_vrfy_command": "yes",
                            "postscreen_discard_ehlo_keywords": "dsn, chunking, etrn"}) as p:
    c = connect(p.port, "127.0.4.30")
    t.is_(c.cmd("MAIL FROM:<a@example.com>"), "503 5.5.1 Error: send HELO/EHLO first",
          "postscreen_helo_required: MAIL before EHLO is refused")
    t.is_(c.cmd("VRFY user"), "502 5.5.1 VRFY command is disabled", "postscreen_disable_vrfy_command")
    c.ehlo("x.example")
    # VRFY is still announced: Postfix's engine asks disable_vrfy_command
    # for the EHLO reply and postscreen_disable_vrfy_command for the command.
    t.is_(c.lines, ["250-mx.petrel.test", "250-SIZE 10240000", "250-VRFY", "250-ENHANCEDSTATUSCODES", "250-8BITMIME",
                    "250 SMTPUTF8"], "postscreen_discard_ehlo_keywords: no DSN, CHUNKING or ETRN")
    t.is_(c.cmd("MAIL FROM:<a@example.com>"), "250 2.1.0 Ok", "after EHLO, MAIL is accepted")
    c.close()

# --- a client that hangs up during the tests ---
with postscreen(t, main_cf={"postscreen_greet_wait": "8s", "postscreen_pipelining_enable": "yes"}) as p:
    c = connect(p.port, "127.0.4.50", read=False)
    t.is_(c._read_line(), "220-" + BANNER, "the teaser")
    cp = client_port(c)
    c.close()
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: HANGUP after [0-9.]+ from \[127\.0\.4\.50\]:%d in tests before "
                    r"SMTP handshake\n" % cp) is not None, "HANGUP after N from [addr]:port in tests before SMTP handshake")
    t.ok(p.wait_log(r"DISCONNECT \[127\.0\.4\.50\]:%d\n" % cp) is not None, "then DISCONNECT")
with postscreen(t, main_cf={"postscreen_pipelining_enable": "yes"}) as p:
    c = connect(p.port, "127.0.4.51")
    c.ehlo("x.example")
    cp = client_port(c)
    c.close()
    t.ok(p.wait_log(r"HANGUP after [0-9.]+ from \[127\.0\.4\.51\]:%d in tests after SMTP handshake\n" % cp)
         is not None, "in the test engine: in tests after SMTP handshake")
    t.ok(p.wait_log(r"DISCONNECT \[127\.0\.4\.51\]:%d\n" % cp) is not None
         and re.search(r"PASS (NEW|OLD) \[127\.0\.4\.51\]", p.log()) is None,
         "a client that hangs up does not pass (nothing by its DISCONNECT)")

# --- data_directory is made for the cache when it does not exist ---
parent = tempfile.mkdtemp(prefix="petrel-datadir-")
CLEANUP_DIRS.append(parent)
_, pw = run_as_user()
if pw:
    os.chown(parent, pw.pw_uid, pw.pw_gid)
with postscreen(t, main_cf={"data_directory": os.path.join(parent, "data")}) as p:
    c = connect(p.port, "127.0.4.60")
    t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "a client passes")
    c.close()
    c = connect(p.port, "127.0.4.60")
    t.is_(c.lines, ["220 " + PASSED_BANNER], "PASS OLD: the cache works in the data_directory petreld made")
    c.close()
    t.ok(os.path.exists(os.path.join(parent, "data", "postscreen_cache.lmdb")), "the cache file is there")

# --- postscreen_allowlist_interfaces: what Petrel does not read is refused ---
for value, item in [("cidr:/etc/postfix/interfaces", "cidr:/etc/postfix/interfaces"),
                    ("192.0.2.1, /etc/postfix/interfaces", "/etc/postfix/interfaces"),
                    ("!mx.example.com static:all", "!mx.example.com")]:
    with postscreen(t, start=False, main_cf={"postscreen_allowlist_interfaces": value}) as p:
        r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
        want = 'postscreen_allowlist_interfaces: "%s" is not supported: list addresses and networks ("!" allowed), ' \
            'or static:all' % item
        t.ok(r.returncode != 0 and want in r.stderr, "petreld -n refuses %s" % value, r.stderr)

# --- a temporary allowlist that cannot be opened ---
with postscreen(t, main_cf={"postscreen_cache_map": "btree:/nonexistent/petrel/postscreen_cache"}) as p:
    t.ok(p.wait_log(r"warning: postscreen_cache_map btree:/nonexistent/petrel/postscreen_cache: .*: postscreen runs "
                    r"without its temporary allowlist\n") is not None, "the problem is logged")
    c = connect(p.port, "127.0.4.40")
    t.is_(c.lines, ["220-" + BANNER, "220 " + PASSED_BANNER], "clients are still screened and pass")
    c.close()
    c = connect(p.port, "127.0.4.40")
    t.is_(c.lines[0], "220-" + BANNER, "without the cache, every connection is a new client")
    c.close()

t.done()
