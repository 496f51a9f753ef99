"""socketmap: tables (the socketmap module, asynchronous) against a real socketmap server
on loopback: check_recipient_access and virtual_alias_maps at RCPT end to end over SMTP,
hostile keys that reach the server as exactly their bytes, TEMP and PERM answers, garbage and
oversized replies, a slow server (timeout) that does not hold up other sessions of the same
worker, the server down (451 4.3.0 for recipient validation, Postfix's 451 4.3.5 for
check_recipient_access) and back, delivery through the queue manager's routing, and
petrelctl map query."""
import os
import subprocess

from harness import PETRELD, Petrel, Tap, maildir_messages, wait_for
from socketmaplib import SocketmapServer, netstring
from tablelib import WaitingRcpt, bundled_module_dir

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
MODULES = bundled_module_dir("socketmap")

virtual = SocketmapServer({"virtual": {b"sales@sm.test": b"box@vmail.test",
                                       b"info@sm.test": b"box@vmail.test, other@vmail.test",
                                       b"slow@sm.test": b"box@vmail.test",
                                       b"friend@sm.test": b"box@vmail.test",
                                       b"\"a b'\\\"\\\\:,\"@sm.test": b"box@vmail.test"}})
access = SocketmapServer({"access": {b"blocked@sm.test": b"REJECT go away",
                                     b"held@sm.test": b"HOLD",
                                     b"friend@sm.test": b"OK"}})
VMAP = "socketmap:inet:127.0.0.1:%d:virtual" % virtual.port
AMAP = "socketmap:inet:127.0.0.1:%d:access" % access.port
# longer than socketmap_timeout: the lookup ends at the timeout
virtual.slow[b"slow@sm.test"] = 8
virtual.special[b"temp@sm.test"] = (b"virtual", netstring(b"TEMP database is resting"))
virtual.special[b"perm@sm.test"] = (b"virtual", netstring(b"PERM no such map"))
virtual.special[b"garbage@sm.test"] = (b"virtual", b"OK box@vmail.test\r\n")
virtual.special[b"huge@sm.test"] = (b"virtual", netstring(b"OK " + b"x" * 200))
virtual.special[b"nul@sm.test"] = (b"virtual", netstring(b"OK box@vmail.test\0other@vmail.test"))


def rcpt(c, address):
    return c.cmd("RCPT TO:<%s>" % address)


with Petrel(t, extra_services=QMGR, start=False, workers=1) as p:
    mail = p.virtual_mailboxes({"box@vmail.test": "box/", "other@vmail.test": "other/"}, {
        "modules": "socketmap", "module_directory": MODULES,
        # 5 s: the slow lookup must still be waiting while another session is
        # served (checked below), on a loaded machine too
        "socketmap_timeout": "5s", "socketmap_max_reply_size": "100",
        "virtual_alias_domains": "sm.test", "virtual_alias_maps": VMAP,
        "smtpd_recipient_restrictions": "check_recipient_access %s, permit_mynetworks, "
                                        "reject_unauth_destination" % AMAP})
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "petreld -n accepts socketmap: tables from the module", r.stdout + r.stderr)
    p.start()

    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(rcpt(c, "sales@sm.test"), "250 2.1.5 Ok", "virtual_alias_maps: an address the server knows is accepted")
    t.is_(rcpt(c, "SALES@SM.TEST"),
          "550 5.1.1 <SALES@SM.TEST>: Recipient address rejected: User unknown in virtual alias table",
          "keys reach the server as given: case is the server's business (Postfix folds no socketmap: key)")
    t.ok(b"SALES@SM.TEST" in virtual.seen("virtual"), "the server saw the key unfolded")
    t.is_(rcpt(c, "nobody@sm.test"),
          "550 5.1.1 <nobody@sm.test>: Recipient address rejected: User unknown in virtual alias table",
          "virtual_alias_maps: an address the server does not know is refused")
    t.is_(rcpt(c, "blocked@sm.test"), "554 5.7.1 <blocked@sm.test>: Recipient address rejected: go away",
          "check_recipient_access: the server's REJECT text is the reply")
    t.is_(virtual.seen("virtual").count(b"blocked@sm.test"), 0,
          "a refusal by check_recipient_access asks virtual_alias_maps nothing")
    t.ok(b"sales@sm.test" in access.seen("access") and b"sm.test" not in access.seen("access"),
         "socketmap: is a pattern table as in Postfix: the whole address only, no parent domains",
         repr(access.seen("access")))

    # Hostile keys: the server receives exactly the bytes of the (folded) address.
    hostile = "\"a b'\\\"\\\\:,\"@sm.test"
    t.is_(rcpt(c, hostile), "250 2.1.5 Ok", "a key with a space, quotes, a backslash, ':' and ',' is looked up")
    t.ok(b"\"a b'\\\"\\\\:,\"@sm.test" in virtual.seen("virtual"),
         "and reaches the server as exactly its bytes (the netstring frames it)", repr(virtual.seen("virtual")[-3:]))
    c.send(b"RCPT TO:<sales@sm.test\x00 sales@sm.test>\r\n")
    t.is_(c.read_reply(), "500 5.5.2 Error: bad syntax", "a NUL byte in RCPT never becomes part of a key")

    # Answers that are not answers: a temporary failure, never "unknown".
    t.is_(rcpt(c, "temp@sm.test"), "451 4.3.0 <temp@sm.test>: Temporary lookup failure",
          "TEMP from the server: 451 4.3.0 Temporary lookup failure")
    t.is_(rcpt(c, "perm@sm.test"), "451 4.3.0 <perm@sm.test>: Temporary lookup failure",
          "PERM from the server: a lookup error too (Postfix's DICT_ERR_CONFIG), deferred")
    t.is_(rcpt(c, "garbage@sm.test"), "451 4.3.0 <garbage@sm.test>: Temporary lookup failure",
          "a reply that is not a netstring: 451 4.3.0")
    t.is_(rcpt(c, "huge@sm.test"), "451 4.3.0 <huge@sm.test>: Temporary lookup failure",
          "a reply over socketmap_max_reply_size: 451 4.3.0")
    t.is_(rcpt(c, "nul@sm.test"), "451 4.3.0 <nul@sm.test>: Temporary lookup failure",
          "a reply with a NUL byte in its value: refused, not cut short")
    t.is_(rcpt(c, "sales@sm.test"), "250 2.1.5 Ok", "and the session goes on")
    t.ok(p.wait_log("socketmap server temporary error: database is resting") is not None, "TEMP's reason is logged")
    t.ok(p.wait_log("socketmap server permanent error: no such map") is not None, "PERM's reason is logged")
    t.ok(p.wait_log("netstring length expected") is not None, "the protocol error is logged")

    # A slow server: this session waits; another session of the same (only)
    # worker is served meanwhile; then the timeout answers 451.
    waiting = WaitingRcpt(p, "slow@sm.test")
    wait_for(lambda: b"slow@sm.test" in virtual.seen("virtual"), timeout=30)
    t.is_(rcpt(c, "info@sm.test"), "250 2.1.5 Ok",
          "while one lookup waits for a slow server, another session of the same worker is answered")
    t.ok(waiting.reply is None, "before the slow lookup has finished (the loop never blocks)")
    t.is_(waiting.result(), "451 4.3.0 <slow@sm.test>: Temporary lookup failure",
          "the slow lookup ends at socketmap_timeout with 451 4.3.0")
    t.ok(p.wait_log(r"no reply from inet:127\.0\.0\.1:%d within 5s" % virtual.port) is not None,
         "the timeout is logged")
    c.cmd("RSET")
    c.close()

    # Delivery: the queue manager's routing reads the same table (blocking form).
    c = p.connect()
    reply = c.send_message("sender@example.org", ["info@sm.test"], "Subject: via socketmap\r\n\r\nx\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued", "mail to an alias the server expands is accepted")
    c.close()
    got = wait_for(lambda: len(maildir_messages(os.path.join(mail, "box"))) == 1 and
                   len(maildir_messages(os.path.join(mail, "other"))) == 1, timeout=30)
    t.ok(got, "and delivered to both mailboxes the server named")

    # petrelctl map query asks the server too.
    r = p.petrelctl("map", "query", VMAP, "info@sm.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "box@vmail.test, other@vmail.test"),
         "petrelctl map query socketmap:...: the server's value", r.stdout + r.stderr)
    r = p.petrelctl("map", "query", VMAP, "nobody@sm.test")
    t.ok(r.returncode == 1, "petrelctl map query: not found exits 1", r.stdout + r.stderr)

    # The servers go down: recipient validation defers with Postfix's 451
    # 4.3.0; check_recipient_access with Postfix's 451 4.3.5.
    virtual.stop()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(rcpt(c, "sales@sm.test"), "451 4.3.0 <sales@sm.test>: Temporary lookup failure",
          "virtual_alias_maps server down: 451 4.3.0 Temporary lookup failure, never User unknown")
    r = p.petrelctl("map", "query", VMAP, "info@sm.test")
    t.ok(r.returncode == 2, "petrelctl map query with the server down: a lookup error (exit 2)",
         "%d %s" % (r.returncode, r.stdout + r.stderr))
    virtual.restart()
    t.is_(rcpt(c, "sales@sm.test"), "250 2.1.5 Ok", "the server is back: the next lookup reconnects")
    access.stop()
    t.is_(rcpt(c, "sales@sm.test"),
          "451 4.3.5 <sales@sm.test>: Recipient address rejected: Server configuration error",
          "check_recipient_access server down: Postfix's 451 4.3.5 Server configuration error")
    access.restart()
    t.is_(rcpt(c, "friend@sm.test"), "250 2.1.5 Ok", "and back: OK from the access map")
    c.close()

# A table naming a server that is not inet:host:port or unix:/path fails petreld -n.
with Petrel(t, start=False) as p:
    conf = dict(p.settings)
    conf.update({"modules": "socketmap", "module_directory": MODULES,
                 "virtual_alias_maps": "socketmap:tcp:127.0.0.1:1:virtual"})
    p.write_main_cf(conf)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and "socketmap:tcp:127.0.0.1:1:virtual: server \"tcp:127.0.0.1:1\" is neither "
         "inet:host:port nor unix:/path" in r.stdout + r.stderr, "petreld -n: a bad server name is reported",
         r.stdout + r.stderr)

virtual.stop()
access.stop()
t.done()
