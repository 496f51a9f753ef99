"""The SMTP client's remote tables in the queue manager: smtp_sasl_password_maps and
smtp_tls_policy_maps served by real socketmap servers (socketmap: tables), against a relayhost
that requires AUTH (a second petreld whose AUTH is checked by a private Dovecot auth service)
and Postfix's smtp-sink as another next hop.

- The password from the table is used for AUTH; keys asked in Postfix's order (the sender with
  smtp_sender_dependent_authentication, the server's host name, the next hop as written); not
  found: no AUTH (the mail goes out as from a stranger).
- A slow password or policy lookup makes that delivery wait; a delivery to another next hop
  completes meanwhile (the queue manager is not blocked); when the answer comes the first
  delivery goes on. The order is decided by the test (the server holds the key until told).
- The password server down: deferred with Postfix's "4.3.0 local data error while talking to
  HOST[ADDR]" (never "no password"), then delivered once it is back.
- TLS policy from the table: encrypt (a next hop without STARTTLS defers 4.7.4), none (no
  STARTTLS); its server down: Postfix's "4.7.5 client TLS configuration problem" (never "no
  policy"), then delivered once it is back; the next hop "[host]:port" is looked up as written
  only (Postfix: no host or parent-domain keys for it)."""
import re
import threading

from harness import Petrel, Tap, wait_for
from dovecotlib import require_dovecot
from sasllib import QMGR, DovecotAuth, auth_relay, submit_queued as submit
from serverlib import Sink
from socketmaplib import SocketmapServer
from tablelib import bundled_module_dir

t = Tap(timeout=400)
PASSWORD = "Relay-Pw-77"
SENDER_PASSWORD = "Sender-Pw-31"

require_dovecot(t)


def count(p, pattern):
    return len(re.findall(pattern, p.log(), re.M))


dc = DovecotAuth({"relayuser": PASSWORD, "senderuser": SENDER_PASSWORD})
dc.start()
other = Sink(options=("-a", "-c"))   # no AUTH, no STARTTLS: another next hop
relay = a = sasl = policy = None
try:
    # The relayhost: AUTH only after STARTTLS, relaying only when authenticated, except to
    # open.test (to show mail going out without AUTH).
    relay = auth_relay(t, dc, bundled_module_dir("sasl"), tls_auth_only=True,
                       smtpd_relay_restrictions="permit_sasl_authenticated, check_recipient_access "
                                                "inline:{ {open.test = OK} }, reject")
    RELAY = "[127.0.0.1]:%d" % relay.port
    OTHER = "[127.0.0.1]:%d" % other.port

    sasl = SocketmapServer({"sasl": {RELAY.encode(): ("relayuser:" + PASSWORD).encode(),
                                     b"me@petrel.test": ("senderuser:" + SENDER_PASSWORD).encode()}})
    policy = SocketmapServer({"policy": {}})

    a = Petrel(t, start=False, master_cf=None, extra_services=QMGR)
    a.write_main_cf(dict(a.settings, **{
        "modules": "socketmap", "module_directory": bundled_module_dir("socketmap"), "socketmap_timeout": "60s",
        "relayhost": RELAY, "transport_maps": "inline:{ {other.test = smtp:%s} }" % OTHER,
        "smtp_sasl_auth_enable": "yes", "smtp_sender_dependent_authentication": "yes",
        "smtp_sasl_password_maps": "socketmap:inet:127.0.0.1:%d:sasl" % sasl.port,
        "smtp_tls_policy_maps": "socketmap:inet:127.0.0.1:%d:policy" % policy.port,
        "smtp_tls_security_level": "may",
        "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s"}))
    a.start()

    def sent(qid, rcpt, timeout=30):
        return a.wait_log(r"%s: to=<%s>, relay=\S+, .*status=sent" % (qid, re.escape(rcpt)), timeout=timeout)

    # ---- the password from the remote table, keys in Postfix's order ----
    qid = submit(a, "me@petrel.test", "someone@far.example", "per sender")
    t.ok(sent(qid, "someone@far.example"), "sent through the relayhost", a.log()[-2000:])
    t.ok(relay.wait_log(r"sasl_method=\S+, sasl_username=senderuser", timeout=30),
         "smtp_sender_dependent_authentication: the sender's password from the socketmap table was used")
    t.is_(sasl.seen("sasl")[:1], [b"me@petrel.test"], "the sender is the first key asked")

    before = len(sasl.seen("sasl"))
    qid = submit(a, "other@petrel.test", "someone@far.example", "per next hop")
    t.ok(sent(qid, "someone@far.example"), "another sender's mail is sent too", a.log()[-2000:])
    t.ok(relay.wait_log(r"sasl_method=\S+, sasl_username=relayuser", timeout=30),
         "with the next hop's password from the table")
    keys = sasl.seen("sasl")[before:]
    t.is_(keys, [b"other@petrel.test", b"127.0.0.1", RELAY.encode()],
          "keys in Postfix's order: the sender, the server's host name, the next hop as written")

    # ---- not found: no AUTH ----
    del sasl.maps["sasl"][RELAY.encode()]
    plain_before = count(relay, r"client=\S+\[127\.0\.0\.1\]$")
    qid = submit(a, "other@petrel.test", "x@open.test", "stranger")
    t.ok(sent(qid, "x@open.test"), "no password in the table: the mail goes out", a.log()[-2000:])
    t.ok(wait_for(lambda: count(relay, r"client=\S+\[127\.0\.0\.1\]$") == plain_before + 1, timeout=30),
         "without AUTH (as Postfix: talk to each other like strangers)", relay.log()[-1500:])
    sasl.maps["sasl"][RELAY.encode()] = ("relayuser:" + PASSWORD).encode()

    # ---- a slow password lookup holds up that delivery only ----
    gate = threading.Event()
    sasl.slow[b"held@petrel.test"] = gate
    sasl.maps["sasl"][b"held@petrel.test"] = ("senderuser:" + SENDER_PASSWORD).encode()
    held = submit(a, "held@petrel.test", "someone@far.example", "held password")
    t.ok(wait_for(lambda: b"held@petrel.test" in sasl.seen("sasl"), timeout=30),
         "its smtp_sasl_password_maps query is waiting in the server")
    fast = submit(a, "other@petrel.test", "y@other.test", "meanwhile")
    t.ok(sent(fast, "y@other.test"), "a delivery to another next hop completes meanwhile", a.log()[-2000:])
    t.ok(a.wait_log(r"%s: to=<someone@far\.example>.*status=" % held, timeout=1) is None,
         "while the first delivery still waits for its password")
    gate.set()
    t.ok(sent(held, "someone@far.example"), "the answer in, the first delivery goes on and is sent",
         a.log()[-2000:])
    i_fast = a.log().find("%s: to=<y@other.test>" % fast)
    i_held = a.log().find("%s: to=<someone@far.example>" % held)
    t.ok(0 <= i_fast < i_held, "the log shows the later delivery first")
    del sasl.slow[b"held@petrel.test"]

    # ---- the password server down: deferred with Postfix's reason, then delivered ----
    sasl.stop()
    down = submit(a, "other@petrel.test", "someone@far.example", "password server down")
    t.ok(a.wait_log(r"%s: to=<someone@far\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*dsn=4\.3\.0, "
                    r"status=deferred \(local data error while talking to 127\.0\.0\.1\[127\.0\.0\.1\]\)"
                    % (down, relay.port), timeout=30),
         "server down: deferred 4.3.0 \"local data error while talking to HOST[ADDR]\" (Postfix)",
         a.log()[-2000:])
    t.ok(a.wait_log(r"warning: %s: smtp_sasl_password_maps lookup error" % down, timeout=30),
         "and Postfix's warning \"ID: smtp_sasl_password_maps lookup error\"")
    t.ok(a.wait_log(r"%s: .*status=(sent|bounced)" % down, timeout=3) is None, "never sent without AUTH")
    sasl.restart()
    t.ok(sent(down, "someone@far.example", timeout=60), "the server back: delivered", a.log()[-2000:])

    # ---- TLS policy from the table ----
    policy.maps["policy"][OTHER.encode()] = b"encrypt"
    enc = submit(a, "other@petrel.test", "z@other.test", "encrypt")
    t.ok(a.wait_log(r"%s: to=<z@other\.test>, .*dsn=4\.7\.4, status=deferred \(TLS is required, but was not "
                    r"offered by host 127\.0\.0\.1\[127\.0\.0\.1\]\)" % enc, timeout=30),
         "policy encrypt from the socketmap table: a next hop without STARTTLS defers 4.7.4", a.log()[-2000:])
    t.ok(OTHER.encode() in policy.seen("policy") and b"127.0.0.1" not in policy.seen("policy"),
         "the next hop [host]:port is looked up as written, not as its host (Postfix)", policy.seen("policy"))
    del policy.maps["policy"][OTHER.encode()]
    t.ok(sent(enc, "z@other.test", timeout=60), "the entry gone: delivered at the next attempt")

    policy.maps["policy"][RELAY.encode()] = b"none"
    tls_before = count(relay, r"TLS connection established from")
    qid = submit(a, "other@petrel.test", "w@open.test", "none")
    t.ok(sent(qid, "w@open.test"), "policy none from the table: sent", a.log()[-2000:])
    t.is_(count(relay, r"TLS connection established from"), tls_before, "without STARTTLS")
    del policy.maps["policy"][RELAY.encode()]

    # ---- a slow policy lookup holds up that delivery only ----
    gate = threading.Event()
    policy.slow[RELAY.encode()] = gate
    before = len(policy.seen("policy"))
    held = submit(a, "other@petrel.test", "someone@far.example", "held policy")
    t.ok(a.wait_log(r"%s: waiting for smtp_tls_policy_maps lookups for next hop %s" % (held, re.escape(RELAY)),
                    timeout=30), "the delivery waits for its TLS policy (logged)", a.log()[-2000:])
    fast = submit(a, "other@petrel.test", "v@other.test", "meanwhile 2")
    t.ok(sent(fast, "v@other.test"), "a delivery to another next hop completes meanwhile", a.log()[-2000:])
    t.ok(a.wait_log(r"%s: to=<someone@far\.example>.*status=" % held, timeout=1) is None,
         "while the first one still waits")
    gate.set()
    t.ok(sent(held, "someone@far.example"), "the policy in: sent", a.log()[-2000:])
    t.ok(a.wait_log(r"%s: TLS policy for next hop %s after 1 round of smtp_tls_policy_maps lookups"
                    % (held, re.escape(RELAY)), timeout=30), "(logged)")
    del policy.slow[RELAY.encode()]

    # ---- the policy server down: Postfix's 4.7.5, then delivered ----
    policy.stop()
    down = submit(a, "other@petrel.test", "u@other.test", "policy server down")
    t.ok(a.wait_log(r"%s: to=<u@other\.test>, .*dsn=4\.7\.5, status=deferred \(client TLS configuration "
                    r"problem\)" % down, timeout=30),
         "policy server down: deferred 4.7.5 \"client TLS configuration problem\" (Postfix), never \"no policy\"",
         a.log()[-2000:])
    t.ok(a.wait_log(r'smtp_tls_policy_maps, next-hop destination "%s": policy table lookup error'
                    % re.escape(OTHER), timeout=30), "and Postfix's warning")
    policy.restart()
    t.ok(sent(down, "u@other.test", timeout=60), "the server back: delivered", a.log()[-2000:])

    # ---- stopping while deliveries wait for both tables ----
    gate = threading.Event()
    policy.slow[OTHER.encode()] = gate
    sasl.slow[b"stop@petrel.test"] = gate
    p_wait = submit(a, "other@petrel.test", "s@other.test", "stop while the policy waits")
    submit(a, "stop@petrel.test", "someone@far.example", "stop while the password waits")
    t.ok(a.wait_log(r"%s: waiting for smtp_tls_policy_maps lookups" % p_wait, timeout=30),
         "one delivery waits for its policy")
    t.ok(wait_for(lambda: b"stop@petrel.test" in sasl.seen("sasl"), timeout=30),
         "another for its password")
    rc = a.stop()
    gate.set()
    t.is_(rc, 0, "petreld stops cleanly meanwhile")
    t.ok(not re.search(r"killed by signal|fatal|panic|AddressSanitizer", a.log()),
         "the queue manager ends without a crash (the waits are cancelled before the modules stop)",
         a.log()[-2000:])

finally:
    for x in (a, relay):
        if x:
            x.__exit__(None, None, None)   # stops it, removes its directory
    for x in (sasl, policy):
        if x:
            x.stop()
    other.stop()
    dc.cleanup()
t.done()
