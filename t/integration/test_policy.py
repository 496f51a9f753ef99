"""check_policy_service against a policy server of our own (policylib.py):
Postfix's request attributes at every protocol state, every access(5)
action in a reply with the exact SMTP reply it gives, connection reuse
(per worker, per transaction, request_limit, max_idle), and a policy server
that is down, slow, closes, or answers garbage (the default action and
Postfix's log lines). After every refusal a fresh session still gets its
message queued."""
import re

from harness import Petrel, Tap, queue_id, tcp_open_ends, wait_for
from policylib import PolicyServer, wait_until

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"
QUEUED_ID = r"queued as ([0-9A-Z]+)"   # queue_id() of a reply, Petrel's or not

ACTIONS = {
    "ok": "OK",
    "numeric": "1234567890",
    "dunno": "DUNNO",
    "reject": "REJECT Not welcome here",
    "rejectbare": "REJECT",
    "lower": "reject lower case works too",
    "defer": "DEFER Come back later",
    "code5": "550 5.7.9 Policy says no",
    "code4": "451 4.7.9 Slow down",
    "dsnfix": "REJECT 5.1.8 sender status used for a recipient",
    "dip": "DEFER_IF_PERMIT Maybe later",
    "dir": "DEFER_IF_REJECT Not sure",
    "hold": "HOLD keep it for a human",
    "discard": "DISCARD drop it",
    "prepend": "PREPEND X-Policy: checked by the test server",
    "redirect": "REDIRECT elsewhere@petrel.test",
    "bcc": "BCC copy@petrel.test",
    "filter": "FILTER smtp:[127.0.0.1]:10025",
    "warn": "WARN looks odd",
    "info": "INFO for your information",
    "class": "strict",
    "restrictions": "reject_unauth_destination, permit",
    "table": "hash:/etc/postfix/whatever",
    "bogus": "no_such_restriction",
    "hangup": "421 4.7.0 Go away",
}


def decide(req):
    state = req.get("protocol_state")
    if state == "RCPT":
        local = req.get("recipient", "").split("@")[0]
        return ACTIONS.get(local, "DUNNO")
    if state == "DATA" and req.get("sender", "").startswith("data-reject"):
        return "REJECT no data from you"
    if state == "END-OF-MESSAGE" and req.get("sender", "").startswith("eom-reject"):
        return "550 5.7.1 content refused at the end"
    return "DUNNO"


def still_serves(p, what):
    c = p.connect()
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: after %s\r\n\r\nok\r\n" % what)
    t.like(r, OK_RE, "%s: a fresh session still gets its message queued" % what)
    c.close()


def queue_show(p, qid):
    return p.petrelctl("queue", "show", qid).stdout


def message(c, sender, rcpts, body="Subject: test\r\n\r\nbody\r\n", size=None):
    """A transaction; returns (last RCPT reply, final reply)."""
    c.ehlo()
    c.cmd("MAIL FROM:<%s>%s" % (sender, " SIZE=%d" % size if size else ""))
    last = None
    for r in rcpts:
        last = c.cmd("RCPT TO:<%s>" % r)
    r = c.cmd("DATA")
    if c.code != 354:
        return last, r
    c.send(body.encode() + b".\r\n")
    return last, c.read_reply()


with PolicyServer(decide) as ps:
    conf = {
        "smtpd_reject_unlisted_recipient": "no",
        "smtpd_restriction_classes": "strict",
        "strict": "check_recipient_access inline:{ { class@petrel.test = REJECT The class says no } }, permit",
        "smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service %s, "
                                        "check_recipient_access inline:{ { dir@petrel.test = REJECT Table rejects } }"
                                        % ps.endpoint,
        "smtpd_data_restrictions": "check_policy_service %s" % ps.endpoint,
        "smtpd_end_of_data_restrictions": "check_policy_service %s" % ps.endpoint,
    }
    with Petrel(t, main_cf=conf) as p:
        # --- the request: Postfix's attributes --------------------------------------------
        c = p.connect()
        rcpt_reply, final = message(c, "attrs@example.org", ["one@petrel.test"], size=1234)
        t.like(final, OK_RE, "a message goes through the policy server at RCPT, DATA and END-OF-MESSAGE")
        client_port = str(c.sock.getsockname()[1])
        c.close()
        states = ps.states()
        t.is_(states[-3:], ["RCPT", "DATA", "END-OF-MESSAGE"], "one request per protocol state, in order")
        rcpt = ps.last("RCPT")
        want = {"request": "smtpd_access_policy", "protocol_name": "ESMTP", "helo_name": "client.example.org",
                "queue_id": "", "sender": "attrs@example.org", "recipient": "one@petrel.test",
                "recipient_count": "0", "client_address": "127.0.0.1", "client_name": "unknown",
                "reverse_client_name": "unknown", "client_port": client_port, "server_address": "127.0.0.1",
                "server_port": str(p.port), "size": "1234", "etrn_domain": "", "stress": "", "sasl_method": "",
                "sasl_username": "", "sasl_sender": "", "ccert_subject": "", "ccert_issuer": "",
                "ccert_fingerprint": "", "ccert_pubkey_fingerprint": "", "encryption_protocol": "",
                "encryption_cipher": "", "encryption_keysize": "0", "policy_context": "",
                "compatibility_level": "3.6"}
        for name, value in want.items():
            t.is_(rcpt.get(name), value, "RCPT request: %s=%s" % (name, value))
        t.like(rcpt.get("instance"), r"^[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+$", "RCPT request: instance")
        t.ok(rcpt.get("mail_version"), "RCPT request: mail_version")
        t.ok(b"\n\n" not in rcpt["_raw"] and all("=" in l for l in rcpt["_raw"].decode().split("\n")),
             "the request is name=value lines")
        data = ps.last("DATA")
        t.is_((data["recipient_count"], data["recipient"], data["queue_id"]), ("1", "one@petrel.test", ""),
              "DATA request: recipient_count=1 and the one recipient, no queue ID yet")
        eom = ps.last("END-OF-MESSAGE")
        t.is_(eom["queue_id"], queue_id(final, QUEUED_ID), "END-OF-MESSAGE request: the queue ID")
        t.ok(int(eom["size"]) > 0 and eom["size"] != "1234", "END-OF-MESSAGE request: the actual size")
        t.ok(rcpt["instance"] == data["instance"] == eom["instance"], "one instance for the whole transaction")
        c = p.connect()
        message(c, "attrs2@example.org", ["a@petrel.test", "b@petrel.test"])
        c.close()
        data2 = ps.last("DATA")
        t.is_((data2["recipient_count"], data2["recipient"]), ("2", ""),
              "DATA request with two recipients: recipient_count=2, no recipient")
        t.ok(data2["instance"] != data["instance"], "the next transaction has another instance")

        # --- every action of access(5) --------------------------------------------------------
        def rcpt_case(local, want, desc, sender="sender@example.org"):
            c = p.connect()
            c.ehlo()
            c.cmd("MAIL FROM:<%s>" % sender)
            got = c.cmd("RCPT TO:<%s@petrel.test>" % local)
            t.is_(got, want, desc)
            c.close()
            return got

        rcpt_case("ok", "250 2.1.5 Ok", "action=OK")
        rcpt_case("numeric", "250 2.1.5 Ok", "an all-numeric action is OK")
        rcpt_case("dunno", "250 2.1.5 Ok", "action=DUNNO")
        rcpt_case("reject", "554 5.7.1 <reject@petrel.test>: Recipient address rejected: Not welcome here",
                  "action=REJECT text")
        rcpt_case("rejectbare", "554 5.7.1 <rejectbare@petrel.test>: Recipient address rejected: Access denied",
                  "action=REJECT without text")
        rcpt_case("lower", "554 5.7.1 <lower@petrel.test>: Recipient address rejected: lower case works too",
                  "actions are not case-sensitive")
        rcpt_case("defer", "450 4.7.1 <defer@petrel.test>: Recipient address rejected: Come back later",
                  "action=DEFER text")
        rcpt_case("code5", "550 5.7.9 <code5@petrel.test>: Recipient address rejected: Policy says no",
                  "action=550 5.7.9 text")
        rcpt_case("code4", "451 4.7.9 <code4@petrel.test>: Recipient address rejected: Slow down",
                  "action=451 4.7.9 text")
        rcpt_case("dsnfix", "554 5.1.2 <dsnfix@petrel.test>: Recipient address rejected: sender status used for a "
                  "recipient", "a sender's 5.1.8 becomes the recipient's 5.1.2 (smtpd_dsn_fix)")
        rcpt_case("dip", "450 4.7.1 <dip@petrel.test>: Recipient address rejected: Maybe later",
                  "action=DEFER_IF_PERMIT: 450 at the end when nothing rejects")
        rcpt_case("dir", "450 4.7.1 <dir@petrel.test>: Recipient address rejected: Not sure",
                  "action=DEFER_IF_REJECT: a later REJECT becomes the deferral")
        rcpt_case("class", "554 5.7.1 <class@petrel.test>: Recipient address rejected: The class says no",
                  "an action naming a restriction class evaluates the class")
        rcpt_case("restrictions", "250 2.1.5 Ok", "an action naming restrictions evaluates them (permit)")
        rcpt_case("table", "451 4.3.5 Server configuration error",
                  "an action naming a table: 451 4.3.5, as Postfix")
        rcpt_case("bogus", "451 4.3.5 Server configuration error",
                  "an unknown action: 451 4.3.5, as Postfix")
        rcpt_case("filter", "250 2.1.5 Ok", "action=FILTER accepts: the message's content filter")
        t.ok(p.wait_log(r"filter: RCPT from unknown\[127\.0\.0\.1\]: <filter@petrel\.test>: Recipient address "
                        r"triggers FILTER smtp:\[127\.0\.0\.1\]:10025"), "FILTER: Postfix's log line")
        t.ok(p.wait_log(r"warning: access table inet:127\.0\.0\.1:\d+ has entry with lookup table: hash:/etc/postfix/"
                        r"whatever"), "a table in an action is named in the log")
        rcpt_case("warn", "250 2.1.5 Ok", "action=WARN accepts")
        t.ok(p.wait_log(r"NOQUEUE: warn: RCPT from unknown\[127\.0\.0\.1\]: looks odd; from=<sender@example\.org> "
                        r"to=<warn@petrel\.test> proto=ESMTP helo=<client\.example\.org>"), "action=WARN: Postfix's log line")
        rcpt_case("info", "250 2.1.5 Ok", "action=INFO accepts")
        t.ok(p.wait_log(r"NOQUEUE: info: RCPT from unknown\[127\.0\.0\.1\]: for your information;"),
             "action=INFO: Postfix's log line")
        still_serves(p, "refusals by the policy server")

        c = p.connect()
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.org>")
        t.is_(c.cmd("RCPT TO:<hangup@petrel.test>"), "421 4.7.0 <hangup@petrel.test>: Recipient address rejected: Go away",
              "action=421 text")
        t.ok(c.closed(), "and the session is closed after a 421, as in Postfix")
        still_serves(p, "a 421 from the policy server")

        # Actions that change the message.
        c = p.connect()
        _, r = message(c, "sender@example.org", ["hold@petrel.test"])
        c.close()
        t.like(r, OK_RE, "action=HOLD: the message is accepted")
        t.ok(wait_until(lambda: p.queue_files("hold")), "action=HOLD: it waits in the hold queue")
        t.ok(p.wait_log(r"NOQUEUE: hold: RCPT from unknown\[127\.0\.0\.1\]: <hold@petrel\.test>: Recipient address "
                        r"keep it for a human; from=<sender@example\.org> to=<hold@petrel\.test>"),
             "action=HOLD: Postfix's log line")
        c = p.connect()
        _, r = message(c, "sender@example.org", ["discard@petrel.test", "user@petrel.test"])
        c.close()
        t.like(r, OK_RE, "action=DISCARD: the client is told the message was taken")
        t.ok(p.wait_log(r"%s: discard: END-OF-MESSAGE" % queue_id(r, QUEUED_ID)),
             "action=DISCARD: and it is discarded")
        t.ok(p.wait_log(r"NOQUEUE: discard: RCPT from unknown\[127\.0\.0\.1\]: <discard@petrel\.test>: Recipient "
                        r"address drop it;"), "action=DISCARD: Postfix's log line")
        c = p.connect()
        _, r = message(c, "sender@example.org", ["prepend@petrel.test"])
        c.close()
        shown = queue_show(p, queue_id(r, QUEUED_ID))
        t.like(shown, r"X-Policy: checked by the test server\nReceived: from client\.example\.org",
               "action=PREPEND: the header is above our Received:")
        c = p.connect()
        _, r = message(c, "sender@example.org", ["redirect@petrel.test", "user@petrel.test"])
        c.close()
        shown = queue_show(p, queue_id(r, QUEUED_ID))
        t.ok(re.findall(r"^recipient: (.*)$", shown, re.M) == ["elsewhere@petrel.test"],
             "action=REDIRECT: the only recipient is the redirect address", shown)
        c = p.connect()
        _, r = message(c, "sender@example.org", ["bcc@petrel.test"])
        c.close()
        shown = queue_show(p, queue_id(r, QUEUED_ID))
        t.ok(re.findall(r"^recipient: (.*)$", shown, re.M) == ["bcc@petrel.test", "copy@petrel.test"],
             "action=BCC: one more recipient", shown)
        c = p.connect()
        _, r = message(c, "data-reject@example.org", ["user@petrel.test"])
        t.is_(r, "554 5.7.1 <DATA>: Data command rejected: no data from you", "REJECT at DATA")
        c.close()
        c = p.connect()
        _, r = message(c, "eom-reject@example.org", ["user@petrel.test"])
        t.is_(r, "550 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: content refused at the end",
              "550 at END-OF-MESSAGE")
        c.close()
        still_serves(p, "DATA and END-OF-MESSAGE refusals")

        # --- connection reuse -------------------------------------------------------------------
        before = ps.connections
        for i in range(4):
            c = p.connect()
            message(c, "reuse@example.org", ["user@petrel.test"])
            c.close()
        t.ok(ps.connections - before <= 2,
             "sequential sessions reuse the worker's connections (%d new for 12 requests)" % (ps.connections - before))
        ps.clear()
        c1, c2 = p.connect(), p.connect()
        for c in (c1, c2):
            c.ehlo()
            c.cmd("MAIL FROM:<overlap@example.org>")
        c1.cmd("RCPT TO:<user@petrel.test>")
        c2.cmd("RCPT TO:<user@petrel.test>")
        c1.cmd("RCPT TO:<user2@petrel.test>")
        c2.cmd("RCPT TO:<user2@petrel.test>")
        for c in (c1, c2):
            c.cmd("DATA")
            c.send(b"Subject: overlap\r\n\r\nx\r\n.\r\n")
            c.read_reply()
            c.close()
        by_instance = {}
        with ps.lock:
            for number, req in ps.requests:
                by_instance.setdefault(req["instance"], set()).add(number)
        t.ok(len(by_instance) == 2 and all(len(v) == 1 for v in by_instance.values()),
             "two transactions at once: every request of one instance comes over one connection", by_instance)

# --- request_limit, max_idle, policy_context in Postfix's { } form -------------------------------
with PolicyServer(lambda req: "DUNNO") as ps:
    conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service { %s, "
                                            "{ request_limit = 1 }, policy_context=submission }" % ps.endpoint,
            "smtpd_workers": "1"}
    with Petrel(t, main_cf=conf) as p:
        c = p.connect()
        message(c, "limit@example.org", ["user@petrel.test", "user2@petrel.test", "user3@petrel.test"])
        c.close()
        t.is_(ps.connections, 3, "request_limit = 1: one connection per request")
        t.is_(ps.last("RCPT")["policy_context"], "submission", "policy_context from the { } form")
with PolicyServer(lambda req: "DUNNO") as ps:
    conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service { %s, max_idle=1s }"
                                            % ps.endpoint, "smtpd_workers": "1"}
    with Petrel(t, main_cf=conf) as p:
        c = p.connect()
        message(c, "idle@example.org", ["user@petrel.test"])
        c.close()
        # smtpd closes the idle connection after max_idle: the server's end goes with it
        wait_for(lambda: not tcp_open_ends(ps.port), timeout=30)
        c = p.connect()
        message(c, "idle@example.org", ["user@petrel.test"])
        c.close()
        t.is_(ps.connections, 2, "max_idle = 1s: an idle connection is closed, the next request opens another")

# --- a server that is down, slow, closes, or answers garbage -------------------------------------
dead_port = __import__("harness").refused_port()   # refuses for the whole test: no other test can bind it
conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service inet:127.0.0.1:%d"
                                        % dead_port}
with Petrel(t, main_cf=conf) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
          "451 4.3.5 <user@petrel.test>: Recipient address rejected: Server configuration problem",
          "server down: smtpd_policy_service_default_action (451 4.3.5 Server configuration problem)")
    c.close()
    t.ok(p.wait_log(r"warning: connect to 127\.0\.0\.1:%d: Connection refused" % dead_port),
         "server down: the connect failure is logged")
    t.ok(p.wait_log(r"warning: problem talking to server 127\.0\.0\.1:%d: Connection refused" % dead_port),
         "server down: Postfix's 'problem talking to server' line")
conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service { inet:127.0.0.1:%d, "
                                        "default_action=DUNNO }" % dead_port}
with Petrel(t, main_cf=conf) as p:
    still_serves(p, "a server that is down with default_action = DUNNO")


def faulty(mode):
    def decide_faulty(req):
        if mode == "slow":
            return ("sleep", 3, "OK")
        if mode == "garbage":
            return ("raw", b"this is not the protocol\n\n")
        if mode == "noaction":
            return ("raw", b"foo=bar\n\n")
        if mode == "novalue":
            return ("raw", b"action\n\n")
        if mode == "long":
            return ("raw", b"action=DUNNO " + b"x" * 20000 + b"\n\n")
        if mode == "close":
            return ("close",)
        if mode == "utf8":
            return ("raw", b"action=REJECT \xff\xfe bad\n\n")
        if mode == "extra":
            return ("raw", b"action=REJECT first\n\naction=OK\n\n")
        return "DUNNO"
    return decide_faulty


cases = [
    ("slow", r"warning: timeout on 127\.0\.0\.1:\d+ while reading input attribute name"),
    ("garbage", r"warning: missing attribute action in input from 127\.0\.0\.1:\d+"),
    ("noaction", r"warning: missing attribute action in input from 127\.0\.0\.1:\d+"),
    ("novalue", r"warning: missing value for string attribute action in input from 127\.0\.0\.1:\d+"),
    ("long", r"warning: problem talking to server 127\.0\.0\.1:\d+: reply too long"),
    ("close", r"warning: premature end-of-input on 127\.0\.0\.1:\d+ while reading input attribute name"),
    ("utf8", r"warning: malformed UTF-8 in policy server 127\.0\.0\.1:\d+ response"),
]
for mode, log_re in cases:
    with PolicyServer(faulty(mode)) as ps:
        conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service { %s, timeout=1s, "
                                                "try_limit=2, retry_delay=1s }" % ps.endpoint}
        with Petrel(t, main_cf=conf) as p:
            c = p.connect()
            c.ehlo()
            c.cmd("MAIL FROM:<sender@example.org>")
            t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
                  "451 4.3.5 <user@petrel.test>: Recipient address rejected: Server configuration problem",
                  "policy server %s: the default action" % mode)
            c.close()
            t.ok(p.wait_log(log_re), "policy server %s: logged as Postfix logs it" % mode)
            if mode != "utf8":
                # smtpd gives up on a slow server after timeout, whether or not its thread has
                # recorded the request by then: wait for the second one, then count
                wait_for(lambda: len(ps.requests) >= 2, timeout=30)
                t.is_(len(ps.requests), 2, "policy server %s: asked try_limit (2) times" % mode)
            else:
                t.is_(len(ps.requests), 1, "invalid UTF-8: the default action at once, as in Postfix")
            c = p.connect()
            t.is_(c.ehlo(), "250 CHUNKING", "policy server %s: petreld still serves the next session" % mode)
            c.close()
with PolicyServer(faulty("extra")) as ps:
    conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service %s" % ps.endpoint,
            "smtpd_workers": "1"}
    with Petrel(t, main_cf=conf) as p:
        for i in range(2):
            c = p.connect()
            c.ehlo()
            c.cmd("MAIL FROM:<sender@example.org>")
            t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
                  "554 5.7.1 <user@petrel.test>: Recipient address rejected: first",
                  "a reply followed by more data: the first reply counts (session %d)" % (i + 1))
            c.close()
        t.is_(ps.connections, 2, "a connection with data after the reply is not used again")

t.done()
