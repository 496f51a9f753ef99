"""The SMTP client's AUTH (smtp_sasl_auth_enable, smtp_sasl_password_maps keyed by the next
hop as written, smtp_sasl_mechanism_filter, smtp_sasl_security_options) against a relayhost
that requires AUTH: a second petreld whose AUTH is checked by a PRIVATE Dovecot auth service
(it accepts relaying only from authenticated clients). SCRAM-SHA-256 and CRAM-MD5 and PLAIN
as the filter allows; smtp_sender_dependent_authentication (the sender's entry first); plaintext PLAIN refused by the default security options (deferred with
Postfix's text); a wrong password deferred with the server's 535 made 4.7.8; AUTH on one
transport only, through its master.cf -o overrides."""
import os
import re

from harness import Petrel, Tap
from modlib import bundled_module_dir
from dovecotlib import require_dovecot
from sasllib import QMGR, DovecotAuth, auth_relay, relaying_client, submit_far as submit

t = Tap(timeout=300)
PASSWORD = "Relay-Pw-77"

require_dovecot(t)

mods = bundled_module_dir("sasl")
SENDER_PASSWORD = "Sender-Pw-31"
dc = DovecotAuth({"relayuser": PASSWORD, "senderuser": SENDER_PASSWORD})
dc.start()


def sink(tls_auth_only):
    return auth_relay(t, dc, mods, tls_auth_only)


def sender(sink_port, password=PASSWORD, more_credentials="", **extra):
    return relaying_client(t, sink_port, "relayuser", password, more_credentials,
                           **dict({"smtp_tls_security_level": "may"}, **extra))


try:
    s1 = sink(tls_auth_only=True)
    with s1:
        for extra, mech, why in (({}, "SCRAM-SHA-256", "the strongest mechanism both offer, over STARTTLS"),
                                 ({"smtp_sasl_mechanism_filter": "cram-md5"}, "CRAM-MD5",
                                  "smtp_sasl_mechanism_filter picks CRAM-MD5"),
                                 ({"smtp_sasl_mechanism_filter": "plain, login", "smtp_sasl_tls_security_options": "noanonymous"}, "PLAIN",
                                  "PLAIN under TLS (smtp_sasl_tls_security_options = noanonymous)")):
            with sender(s1.port, **extra) as a:
                r = submit(a, mech)
                t.like(r, r"^250 ", "mail for the relayhost accepted (%s)" % mech)
                line = s1.wait_log(r"client=localhost\[127\.0\.0\.1\], sasl_method=%s, sasl_username=relayuser"
                                   % re.escape(mech), timeout=30) or \
                    s1.wait_log(r"client=\S+\[127\.0\.0\.1\], sasl_method=%s, sasl_username=relayuser"
                                % re.escape(mech), timeout=5)
                t.ok(line is not None, "the relayhost saw AUTH %s as relayuser: %s" % (mech, why))
                t.ok(a.wait_log(r"to=<someone@far\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent"
                                % s1.port, timeout=30) is not None, "and our delivery says sent",
                     [l for l in a.log().splitlines() if "far.example" in l][:3])
        with sender(s1.port, password="wrong") as a:
            submit(a, "wrong")
            t.ok(a.wait_log(r"status=deferred \(SASL authentication failed; server 127\.0\.0\.1\[127\.0\.0\.1\] said: "
                            r"535 5\.7\.8 Error: authentication failed: authentication failure\)", timeout=30)
                 is not None, "a wrong password defers with Postfix's text")
            t.ok(a.wait_log(r"dsn=4\.7\.8, status=deferred", timeout=5) is not None, "as 4.7.8 (soft bounce)")
        # the sender's own credentials come first with smtp_sender_dependent_authentication
        senders = "me@petrel.test senderuser:%s\n" % SENDER_PASSWORD
        with sender(s1.port, more_credentials=senders, smtp_sender_dependent_authentication="yes") as a:
            submit(a, "per sender")
            t.ok(s1.wait_log(r"sasl_method=SCRAM-SHA-256, sasl_username=senderuser", timeout=30) is not None,
                 "smtp_sender_dependent_authentication: the sender's entry is used before the next hop's")
            t.ok(a.wait_log(r"to=<someone@far\.example>, .*status=sent", timeout=30) is not None,
                 "and the mail is sent")
        with sender(s1.port, password="wrong", more_credentials=senders) as a:
            submit(a, "not per sender")
            t.ok(a.wait_log(r"status=deferred \(SASL authentication failed; server", timeout=30) is not None,
                 "without it, the sender's entry is not looked at (the next hop's wrong password is used)")
        # per transport: AUTH only on a master.cf smtp service's -o overrides
        # (main.cf leaves it off), as each Postfix smtp(8) reads them
        with Petrel(t, start=False, master_cf=None, extra_services=QMGR) as a:
            maps = a.write_file("sasl_passwd", "[127.0.0.1]:%d relayuser:%s\n" % (s1.port, PASSWORD), 0o600)
            a.master_cf += ("authsmtp unix - - n - - smtp -o smtp_sasl_auth_enable=yes "
                            "-o smtp_sasl_password_maps=texthash:%s\n" % maps)
            with open(os.path.join(a.conf, "master.cf"), "w") as f:
                f.write(a.master_cf)
            a.write_main_cf(dict(a.settings, relayhost="[127.0.0.1]:%d" % s1.port, default_transport="authsmtp",
                                 smtp_tls_security_level="may", minimal_backoff_time="1s"))
            a.start()
            submit(a, "per transport")
            t.ok(a.wait_log(r"to=<someone@far\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent"
                            % s1.port, timeout=30) is not None,
                 "smtp_sasl_auth_enable and smtp_sasl_password_maps as -o overrides of one transport: it logs in",
                 [l for l in a.log().splitlines() if "far.example" in l][:3])
    s2 = sink(tls_auth_only=False)
    with s2:
        with sender(s2.port, smtp_tls_security_level="none", smtp_sasl_mechanism_filter="plain, login") as a:
            submit(a, "plaintext")
            t.ok(a.wait_log(r"status=deferred \(SASL authentication failed: server 127\.0\.0\.1\[127\.0\.0\.1\] "
                            r"offered no compatible authentication mechanisms for this type of connection "
                            r"security\)", timeout=30) is not None,
                 "no password in plaintext by default: deferred with Postfix's text")
            t.ok(s2.wait_log(r"sasl_method=PLAIN", timeout=2) is None, "the sink never saw AUTH PLAIN")
        with sender(s2.port, smtp_tls_security_level="none", smtp_sasl_security_options="noanonymous") as a:
            submit(a, "cram")
            t.ok(s2.wait_log(r"sasl_method=SCRAM-SHA-256, sasl_username=relayuser", timeout=30) is not None,
                 "without TLS and with plaintext allowed, a challenge mechanism still comes first")
finally:
    dc.cleanup()
t.done()
