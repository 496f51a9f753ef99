"""Nothing changes meaning silently (issue 17, point 1): what Petrel does with
every Postfix parameter name it does not implement (core/config/parameters.txt,
doc/parameters.md), the petrel_accept_unimplemented override, per-transport
parameters of master.cf services (hyphens included), compatibility_level, and
petreld -n reporting every error of a configuration in one run."""
import os
import pwd
import re
import subprocess

from harness import PETRELD, TEST_USER, Petrel, Smtp, Tap, free_port, wait_for
from serverlib import Sink

t = Tap()


def check(p):
    return subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)


def line_of(p, name, filename="main.cf"):
    with open(os.path.join(p.conf, filename)) as f:
        for n, text in enumerate(f, 1):
            if text.startswith(name + " ") or text.startswith(name + "="):
                return n
    raise AssertionError("%s not in %s" % (name, filename))


REFUSAL = ("; refusing to start: this weakens security or filtering "
           "(to start anyway, list %s in petrel_accept_unimplemented)")

# --- a security or filtering feature without its module stops the check and the start ---
with Petrel(t, start=False, main_cf={"smtpd_milters": "inet:127.0.0.1:%d" % free_port()}) as p:
    main_cf = os.path.join(p.conf, "main.cf")
    want = ("error: %s:%d: smtpd_milters is set but the milter module is not loaded: "
            "mail will NOT be filtered by these milters" % (main_cf, line_of(p, "smtpd_milters"))
            + REFUSAL % "smtpd_milters")
    r = check(p)
    t.ok(r.returncode != 0, "petreld -n refuses smtpd_milters without the milter module")
    t.ok(want + "\n" in r.stderr, "with the exact text naming file, line and what will not happen", r.stderr)
    r = subprocess.run(p.command(PETRELD, "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0, "the start is refused too")
    t.ok(want + "\n" in r.stderr, "saying the same", r.stderr)
    t.ok(not os.path.exists(os.path.join(p.queue, "master.pid")) or not p.log(), "and nothing runs")

    # The admin's explicit override: a warning instead, and the start goes on.
    p.write_main_cf(dict(p.settings, petrel_accept_unimplemented="smtpd_milters"))
    r = check(p)
    t.is_(r.returncode, 0, "petrel_accept_unimplemented = smtpd_milters lets the check pass")
    t.ok(("warning: %s:%d: smtpd_milters is set but the milter module is not loaded: "
          "mail will NOT be filtered by these milters (accepted by petrel_accept_unimplemented)\n"
          % (main_cf, line_of(p, "smtpd_milters"))) in r.stderr, "and still warns, naming the override", r.stderr)
    p.start()
    c = p.connect()
    t.is_(c.code, 220, "the daemon starts and serves with the override")
    c.close()
    t.ok(p.wait_log(r"smtpd_milters is set but the milter module is not loaded: mail will NOT be filtered "
                    r"by these milters \(accepted by petrel_accept_unimplemented\)") is not None,
         "the start logs the warning too")

    # A reload that adds a refused parameter is refused; the running configuration keeps serving.
    p.write_main_cf(dict(p.settings, smtp_tls_per_site="hash:" + os.path.join(p.conf, "tls_per_site")))
    r = p.petrelctl("reload")
    t.ok(r.returncode != 0, "a reload that sets smtp_tls_per_site is refused")
    t.ok(p.wait_log(r"smtp_tls_per_site is set but not implemented: legacy per-site TLS policy is NOT applied "
                    r"\(smtp_tls_policy_maps is\)" + re.escape(REFUSAL % "smtp_tls_per_site"))
         is not None, "the reload says what will not happen")
    c = p.connect()
    t.is_(c.code, 220, "the running configuration keeps serving")
    c.close()

# --- a harmless not-implemented name warns; its harmless value says nothing ---
with Petrel(t, start=False, main_cf={"allow_min_user": "yes", "mailbox_size_limit": "0", "biff": "no",
                                      "smtpd_recipient_limt": "10"}) as p:
    main_cf = os.path.join(p.conf, "main.cf")
    r = check(p)
    t.is_(r.returncode, 0, "warnings do not fail the check")
    t.ok(("warning: %s:%d: allow_min_user is set but not implemented: Petrel does not read this setting: a value "
          "other than Postfix's default is NOT applied\n" % (main_cf, line_of(p, "allow_min_user"))) in r.stderr,
         "allow_min_user = yes warns with what will not happen", r.stderr)
    t.ok("mailbox_size_limit" not in r.stderr, "mailbox_size_limit = 0 (no limit, as Petrel does) says nothing")
    t.ok(("%s:%d: biff has no effect in Petrel: Petrel never notifies comsat: local delivery writes the mailbox and "
          "that is all\n" % (main_cf, line_of(p, "biff"))) in r.stderr, "biff is accepted without effect, with the reason")
    t.like(r.stderr, r"warning: %s:\d+: smtpd_recipient_limt: unknown parameter; did you mean \"smtpd_recipient_limit\"\?"
           % re.escape(main_cf), "a name nobody knows is still an unknown parameter")
    p.write_main_cf(dict(p.settings, allow_min_user="no"))
    r = check(p)
    t.ok("allow_min_user" not in r.stderr, "allow_min_user = no (Postfix's default) says nothing", r.stderr)

# --- warn= values: no parameter of parameters.txt has them since main
# implemented the TLS protocol lists; t/unit/test_classes.c tests them. ---

# --- -o options: checked like main.cf, reported against the master.cf line ---
with Petrel(t, start=False, main_cf={"petrel_accept_unimplemented": "soft_bounce, smtp_tls_wrappermode"},
            extra_services="127.0.0.1:%d inet n - n - - smtpd -o smtpd_tls_dcert_file=/etc/ssl/dsa.pem\n" % free_port()) as p:
    master_cf = os.path.join(p.conf, "master.cf")
    r = check(p)
    t.ok(r.returncode != 0, "an -o option of a refused parameter fails the check")
    t.ok(("error: %s:2: smtpd_tls_dcert_file is set but not implemented: this certificate or key is NOT loaded "
          "(only smtpd_tls_cert_file and smtpd_tls_key_file are)" % master_cf + REFUSAL % "smtpd_tls_dcert_file" + "\n")
         in r.stderr,
         "against its master.cf line", r.stderr)
    t.like(r.stderr, r"warning: .*main\.cf:\d+: petrel_accept_unimplemented: soft_bounce is not a parameter Petrel "
           r"refuses; nothing to accept", "accepting what is not refused is a mistake worth a warning")
    t.ok("smtp_tls_wrappermode is not a parameter" not in r.stderr,
         "accepting a refused parameter that is not set is fine")

# --- per-transport parameters of a master.cf service, hyphens included ---
sink = Sink(keep=True)
sink_port = sink.port
try:
    services = ("qmgr unix n - n 300 1 qmgr\n"
                "smtp-amavis unix - - n - 2 smtp\n"
                "policyd-spf unix - n n - 0 spawn user=%s argv=/bin/true\n"
                % (TEST_USER if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name))
    with Petrel(t, start=False, extra_services=services, main_cf={
            "transport_maps": "inline:{ {remote.test = smtp-amavis:[127.0.0.1]:%d} }" % sink_port,
            "smtp-amavis_destination_recipient_limit": "1",
            "smtp-amavis_delivery_slot_cost": "3",
            "policyd-spf_time_limit": "3600",
            "no-such-service_destination_recipient_limit": "1"}) as p:
        main_cf = os.path.join(p.conf, "main.cf")
        r = check(p)
        t.ok(r.returncode == 0, "per-transport parameters with hyphens are accepted", r.stderr)
        t.ok("smtp-amavis_destination_recipient_limit" not in r.stderr, "and an implemented one says nothing")
        t.ok(("%s:%d: smtp-amavis_delivery_slot_cost has no effect in Petrel: Petrel's queue manager has no "
              "delivery-slot preemption: messages are scheduled in arrival order per destination\n"
              % (main_cf, line_of(p, "smtp-amavis_delivery_slot_cost"))) in r.stderr,
             "one Petrel has no use for is classified by its family (transport_delivery_slot_cost)", r.stderr)
        t.ok("policyd-spf_time_limit" not in r.stderr, "a spawn service's time limit is implemented: nothing said",
             r.stderr)
        t.like(r.stderr, r"warning: %s:\d+: no-such-service_destination_recipient_limit: unknown parameter"
               % re.escape(main_cf), "a per-transport name of no master.cf service is unknown")
        p.start()
        c = p.connect()
        reply = c.send_message("s@petrel.test", ["a@remote.test", "b@remote.test", "c@remote.test"],
                               "Subject: limit\r\n\r\nbody")
        t.like(reply, r"^250 ", "a message for three recipients of transport smtp-amavis is queued")
        c.close()
        # (each file whole: smtp-sink may still be writing one when it appears)
        t.ok(wait_for(lambda: len(sink.files()) >= 3 and all("\nbody" in m for m in sink.messages()), 30),
             "three deliveries reach the sink")
        rcpts = [len(re.findall(r"^X-Rcpt-Args:", m, flags=re.M)) for m in sink.messages()]
        t.is_(sorted(rcpts), [1, 1, 1], "smtp-amavis_destination_recipient_limit = 1: one recipient per transaction")

    with Petrel(t, start=False, extra_services="smtp-amavis unix - - n - 2 smtp\n",
                main_cf={"smtp-amavis_destination_recipient_limit": "many"}) as p:
        r = check(p)
        t.ok(r.returncode != 0, "a bad per-transport value fails the check")
        t.like(r.stderr, r"error: %s:%d: smtp-amavis_destination_recipient_limit: bad integer value \"many\""
               % (re.escape(os.path.join(p.conf, "main.cf")), line_of(p, "smtp-amavis_destination_recipient_limit")),
               "with file, line and parameter")
finally:
    sink.stop()

# --- compatibility_level: Postfix's backwards-compatible defaults, said as Postfix says them ---
with Petrel(t, start=False, main_cf={"compatibility_level": "1"}) as p:
    main_cf = os.path.join(p.conf, "main.cf")
    r = check(p)
    t.is_(r.returncode, 0, "compatibility_level = 1 loads")
    n = line_of(p, "compatibility_level")
    t.ok(("%s:%d: compatibility_level = 1: using backwards-compatible default setting relay_domains=$mydestination\n"
          % (main_cf, n)) in r.stderr, "below level 2, relay_domains defaults to $mydestination, as in Postfix", r.stderr)
    t.ok(("warning: %s:%d: compatibility_level = 1: Postfix's backwards-compatible default "
          "smtpd_relay_before_recipient_restrictions=no is not implemented: smtpd_relay_restrictions are still "
          "evaluated before smtpd_recipient_restrictions\n" % (main_cf, n)) in r.stderr,
         "an old default Petrel cannot honour is a warning")
    r = p.petrelctl("config", "-x", "relay_domains")
    t.is_(r.stdout.strip(), "relay_domains = petrel.test, mx.petrel.test, localhost", "and it is in effect")
    p.write_main_cf(dict(p.settings, compatibility_level="2"))
    r = p.petrelctl("config", "-x", "relay_domains")
    t.is_(r.stdout.strip(), "relay_domains =", "at level 2, as in Postfix, relay_domains is empty")
    p.write_main_cf(dict(p.settings, compatibility_level="three"))
    r = check(p)
    t.ok(r.returncode != 0, "a malformed compatibility_level fails the check")
    t.like(r.stderr, r"error: %s:%d: compatibility_level: malformed compatibility level syntax: \"three\""
           % (re.escape(main_cf), n), "with file and line")

# --- petreld -n reports every error of a configuration in one run ---
with Petrel(t, start=False, main_cf={
        "smtpd_timeout": "5x",
        "alias_maps": "hash:/nonexistent/aliases",
        "transport_maps": "texthash:/nonexistent/transport",
        "canonical_maps": "texthash:/nonexistent/canonical",
        "smtpd_sender_restrictions": "check_sender_access texthash:/nonexistent/access, reject_nothing_known",
        "smtp_tls_wrappermode": "yes"}) as p:
    main_cf = os.path.join(p.conf, "main.cf")
    r = check(p)
    t.ok(r.returncode != 0, "a configuration with many errors fails the check")
    errors = [x for x in r.stderr.splitlines() if " error: " in x]
    want = [("smtpd_timeout", r"smtpd_timeout: bad time value \"5x\""),
            ("alias_maps", r"alias_maps: hash:/nonexistent/aliases: "),
            ("transport_maps", r"transport_maps: texthash:/nonexistent/transport: "),
            ("canonical_maps", r"canonical_maps: texthash:/nonexistent/canonical: "),
            ("smtpd_sender_restrictions", r"smtpd_sender_restrictions: "),
            ("smtp_tls_wrappermode", r"smtp_tls_wrappermode is set but not implemented")]
    for name, pattern in want:
        t.ok(any(re.search(r"error: %s:%d: %s" % (re.escape(main_cf), line_of(p, name), pattern), e) for e in errors),
             "reported with its main.cf line: %s" % name, r.stderr)
    t.like(r.stderr, r"error: %s: %d configuration errors\n" % (re.escape(p.conf), len(errors) - 1),
           "and counted")
    t.ok(not any("master.cf" in e for e in errors), "no main.cf error is blamed on master.cf", r.stderr)

t.done()
