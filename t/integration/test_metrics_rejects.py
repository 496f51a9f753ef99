"""petrel_smtpd_rejects_total counts every reject under what refused: the
restriction's name (a built-in one, one a table's answer names, a module's
registered restriction, the implicit reject_unlisted_recipient), a module's
hook as module:NAME, a parameter (message_size_limit, header_checks), with
the SMTP stage and the reply code. A reject_warning is not a reject. Label
values never carry client data. Each series is checked by the exact amount
it moves, on the metrics endpoint."""
import os

from harness import Petrel, Tap, free_port
from metricslib import http_get, parse_metrics, wait_http
from modlib import module_dir

t = Tap(timeout=240)
mods = module_dir("testmod")
mport = free_port()


def rejects(port):
    """{(stage, class, restriction, code): value} of petrel_smtpd_rejects_total."""
    out = {}
    status, _, body = http_get(port, "/metrics")
    for key, value in parse_metrics(body).items():
        if not key.startswith("petrel_smtpd_rejects_total{"):
            continue
        labels = dict(part.split("=", 1) for part in key[len("petrel_smtpd_rejects_total{"):-1].split(","))
        labels = {k: v.strip('"') for k, v in labels.items()}
        out[(labels["stage"], labels["class"], labels["restriction"], labels["code"])] = value
    return out


with Petrel(t, start=False) as p:
    hc = p.write_file("header_checks", "/^X-Bad-Header:/ REJECT this header is refused\n")
    conf = dict(p.settings)
    conf.update({
        "metrics_listen": "127.0.0.1:%d" % mport,
        "maillog_file": p.log_path,
        "modules": "testmod", "module_directory": mods, "testmod_hook_timeout": "1s",
        "testmod_default_action": "tempfail",
        "mynetworks": "127.0.0.2/32",
        "relay_domains": "x.test",
        "message_size_limit": "100000",
        "header_checks": "regexp:" + hc,
        "smtpd_restriction_classes": "testmod_no testmod_hang",
        "testmod_no": "check_testmod reject",
        "testmod_hang": "check_testmod hang",
        "smtpd_sender_restrictions": "warn_if_reject, check_sender_access inline:{ {warn@x.test = REJECT only a warning} }",
        "smtpd_recipient_restrictions": "check_recipient_access inline:{ {class@x.test = testmod_no}, "
                                        "{hang@x.test = testmod_hang}, {table@x.test = REJECT the table says no}, "
                                        "{named@x.test = reject_unknown_client_hostname} }, reject_unauth_destination",
    })
    p.write_main_cf(conf)
    p.start()
    t.ok(wait_http(mport), "the metrics endpoint answers")
    before = rejects(mport)
    c = p.connect()
    t.like(c.cmd("EHLO reject.helo.test"), r"^550 ", "a module's helo hook refuses")
    t.like(c.cmd("EHLO client.example.org"), r"^250", "EHLO")
    t.like(c.cmd("MAIL FROM:<s@x.test> SIZE=200000"), r"^552 5\.3\.4 ", "MAIL with SIZE over message_size_limit: 552")
    t.like(c.cmd("MAIL FROM:<warn@x.test>"), r"^250 ", "MAIL: the sender's reject under warn_if_reject will only "
           "warn (at each RCPT)")
    t.like(c.cmd("RCPT TO:<class@x.test>"), r"^554 5\.7\.1 check_testmod rejects",
           "a module's restriction inside a class the table names refuses")
    t.like(c.cmd("RCPT TO:<table@x.test>"), r"^554 5\.7\.1 .*the table says no", "the table's REJECT refuses")
    named = c.cmd("RCPT TO:<named@x.test>")
    t.like(named, r"^450 ", "the table names reject_unknown_client_hostname: the client has no name (the DNS "
           "fails), deferred at the end of the recipient's checks (defer_if_permit)")
    hang = c.cmd("RCPT TO:<hang@x.test>")
    t.like(hang, r"^4\d\d ", "a module's restriction that never answers is refused when its timeout passes")
    hang_code = hang[:3]
    t.like(c.cmd("RCPT TO:<nosuchuser@petrel.test>"), r"^550 5\.1\.1 ",
           "an unknown local user: the implicit reject_unlisted_recipient")
    t.like(c.cmd("RCPT TO:<x@elsewhere.example>"), r"^454 4\.7\.1 ", "relaying: smtpd_relay_restrictions' default")
    t.like(c.cmd("RCPT TO:<user@petrel.test>"), r"^250 ", "a known user")
    t.like(c.cmd("DATA"), r"^354 ", "DATA")
    c.send("X-Bad-Header: yes\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
    t.like(c.read_reply(), r"^550 5\.7\.1 this header is refused", "header_checks refuse at end of message")
    t.like(c.cmd("QUIT"), r"^221 ", "QUIT")
    c.close()

    want = {
        ("EHLO", "5xx", "module:testmod", "550"): 1,
        ("MAIL", "5xx", "message_size_limit", "552"): 1,
        ("RCPT", "5xx", "check_testmod", "554"): 1,
        ("RCPT", "5xx", "check_recipient_access", "554"): 1,
        ("RCPT", "4xx", "reject_unknown_client_hostname", named[:3]): 1,
        ("RCPT", "4xx", "check_testmod", hang_code): 1,
        ("RCPT", "5xx", "reject_unlisted_recipient", "550"): 1,
        ("RCPT", "4xx", "defer_unauth_destination", "454"): 1,
        ("END-OF-MESSAGE", "5xx", "header_checks", "550"): 1,
    }
    after = rejects(mport)
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    t.is_(moved, {k: float(v) for k, v in want.items()},
          "every reject is counted once under its stage, class, restriction and code; the warning is not")
    t.ok(p.wait_log(r"reject_warning: RCPT from .*only a warning") is not None,
         "the warning was logged (at RCPT: smtpd_delay_reject)")
    status, _, body = http_get(mport, "/metrics")
    t.ok("client.example.org" not in body and "x.test" not in body and "reject.helo.test" not in body,
         "no client data in any label")
t.done()
