"""Every restriction Postfix documents is either supported or refused by
`petreld -n` with a message that says so. The list is Postfix 3.12's: the
names smtpd_check.c's generic_checks() accepts (aliases included) and the
restrictions postconf(5) documents (postconf.proto), without
check_address_map (a local_header_rewrite_clients item, not a
restriction); reject_unknown_forward_client_hostname is documented in a
comment only and not implemented by Postfix either. Each name is checked
alone in smtpd_recipient_restrictions with the argument it needs, then the
dnsbl module's names again with the module loaded. Also: restriction
classes' configuration errors, a bare table in a list, spawn(8) services."""
import os
import re
import subprocess

from harness import PETRELD, Petrel, Tap
from modlib import bundled_module_dir

t = Tap()

TABLE, ZONE, NUMBER, POLICY = "static:DUNNO", "list.example.test", "1", "inet:127.0.0.1:10040"
POSTFIX_RESTRICTIONS = {
    "check_ccert_access": TABLE, "check_client_a_access": TABLE, "check_client_access": TABLE,
    "check_client_mx_access": TABLE, "check_client_ns_access": TABLE, "check_etrn_access": TABLE,
    "check_helo_a_access": TABLE, "check_helo_access": TABLE, "check_helo_mx_access": TABLE,
    "check_helo_ns_access": TABLE, "check_policy_service": POLICY, "check_recipient_a_access": TABLE,
    "check_recipient_access": TABLE, "check_recipient_maps": None, "check_recipient_mx_access": TABLE,
    "check_recipient_ns_access": TABLE, "check_relay_domains": None, "check_reverse_client_hostname_a_access": TABLE,
    "check_reverse_client_hostname_access": TABLE, "check_reverse_client_hostname_mx_access": TABLE,
    "check_reverse_client_hostname_ns_access": TABLE, "check_sasl_access": TABLE, "check_sender_a_access": TABLE,
    "check_sender_access": TABLE, "check_sender_mx_access": TABLE, "check_sender_ns_access": TABLE,
    "defer": None, "defer_if_permit": None, "defer_if_reject": None, "defer_unauth_destination": None,
    "permit": None, "permit_auth_destination": None, "permit_dnswl_client": ZONE, "permit_inet_interfaces": None,
    "permit_mx_backup": None, "permit_mynetworks": None, "permit_naked_ip_address": None,
    "permit_rhswl_client": ZONE, "permit_sasl_authenticated": None, "permit_tls_all_clientcerts": None,
    "permit_tls_clientcerts": None, "reject": None, "reject_authenticated_sender_login_mismatch": None,
    "reject_invalid_helo_hostname": None, "reject_invalid_hostname": None, "reject_known_sender_login_mismatch": None,
    "reject_maps_rbl": None, "reject_multi_recipient_bounce": None, "reject_non_fqdn_helo_hostname": None,
    "reject_non_fqdn_hostname": None, "reject_non_fqdn_recipient": None, "reject_non_fqdn_sender": None,
    "reject_plaintext_session": None, "reject_rbl": ZONE, "reject_rbl_client": ZONE, "reject_rhsbl_client": ZONE,
    "reject_rhsbl_helo": ZONE, "reject_rhsbl_recipient": ZONE, "reject_rhsbl_reverse_client": ZONE,
    "reject_rhsbl_sender": ZONE, "reject_sender_login_mismatch": None, "reject_unauth_destination": None,
    "reject_unauth_pipelining": None, "reject_unauthenticated_sender_login_mismatch": None,
    "reject_unknown_address": None, "reject_unknown_client": None, "reject_unknown_client_hostname": None,
    "reject_unknown_forward_client_hostname": None, "reject_unknown_helo_hostname": None,
    "reject_unknown_hostname": None, "reject_unknown_recipient_domain": None,
    "reject_unknown_reverse_client_hostname": None, "reject_unknown_sender_domain": None,
    "reject_unlisted_recipient": None, "reject_unlisted_sender": None, "reject_unverified_recipient": None,
    "reject_unverified_sender": None, "sleep": NUMBER, "warn_if_reject": None,
}
DNSBL = ["permit_dnswl_client", "permit_rhswl_client", "reject_rbl_client", "reject_rhsbl_client", "reject_rhsbl_helo",
         "reject_rhsbl_recipient", "reject_rhsbl_reverse_client", "reject_rhsbl_sender"]
# What the issue asks the core to provide (the rest may be refused with a reason).
MUST_SUPPORT = [
    "check_policy_service", "reject_unknown_client_hostname", "reject_unknown_reverse_client_hostname",
    "reject_unknown_helo_hostname", "reject_unknown_sender_domain", "reject_unknown_recipient_domain",
    "reject_unlisted_recipient", "reject_unlisted_sender", "check_sender_mx_access", "check_sender_ns_access",
    "check_client_a_access", "check_client_mx_access", "check_client_ns_access",
    "check_reverse_client_hostname_access", "check_reverse_client_hostname_a_access",
    "check_reverse_client_hostname_mx_access", "check_reverse_client_hostname_ns_access", "check_helo_a_access",
    "check_helo_mx_access", "check_helo_ns_access", "check_recipient_a_access", "check_recipient_mx_access",
    "check_recipient_ns_access", "reject_multi_recipient_bounce", "warn_if_reject", "sleep", "defer_if_permit",
    "defer_if_reject",
    # issue 12 (SASL)
    "reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch", "reject_known_sender_login_mismatch",
]


BASE = {}


def check(p, settings):
    """petreld -n with the instance's first main.cf plus settings."""
    if not BASE:
        BASE.update(p.settings)
    conf = dict(BASE)
    conf.update(settings)
    p.write_main_cf(conf)
    p._chown()
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    return r.returncode, r.stderr


supported, refused = [], []
with Petrel(t, start=False) as p:
    for name, arg in sorted(POSTFIX_RESTRICTIONS.items()):
        value = "reject_unauth_destination, %s%s" % (name, " " + arg if arg else "")
        settings = {"smtpd_recipient_restrictions": value}
        if name.endswith("sender_login_mismatch"):
            settings["smtpd_sender_login_maps"] = "static:somebody"   # refused without it (test_sasl_policy.py)
        rc, err = check(p, settings)
        if rc == 0:
            supported.append(name)
            t.ok(True, "%s: supported" % name)
            continue
        m = re.search(r"restriction %s (is not supported by Petrel: .+|is provided by module \w+, which is not loaded"
                      r": add \w+ to modules)" % re.escape(name), err)
        t.ok(m, "%s: refused, saying why (%s)" % (name, m.group(1) if m else "no reason given"), err)
        refused.append(name)
    t.diag("supported: %d, refused with a reason: %d, of %d" % (len(supported), len(refused), len(POSTFIX_RESTRICTIONS)))
    missing = [n for n in MUST_SUPPORT if n not in supported]
    t.ok(not missing, "every restriction the core must provide is supported", "missing: %s" % missing)

    # dnsbl's names with the module loaded.
    for name in DNSBL:
        rc, err = check(p, {"modules": "dnsbl", "module_directory": bundled_module_dir("dnsbl"),
                            "smtpd_recipient_restrictions": "reject_unauth_destination, %s %s" % (name, ZONE)})
        t.is_(rc, 0, "%s: supported with modules = dnsbl" % name)

    # Restriction classes.
    rc, err = check(p, {"modules": "", "smtpd_restriction_classes": "undefined_class",
                        "smtpd_recipient_restrictions": "reject_unauth_destination, undefined_class"})
    t.ok(rc != 0 and "restriction class `undefined_class' needs a definition" in err,
         "a class without a definition is refused", err)
    rc, err = check(p, {"smtpd_restriction_classes": "reject", "smtpd_recipient_restrictions": "reject_unauth_destination"})
    t.ok(rc != 0 and "reject is the name of a restriction, not a class name" in err,
         "a class named like a restriction is refused", err)
    rc, err = check(p, {"smtpd_restriction_classes": "bad_class", "bad_class": "permit_mynetworks, frobnicate",
                        "smtpd_recipient_restrictions": "reject_unauth_destination, bad_class"})
    t.ok(rc != 0 and 'bad_class (restriction class): unknown restriction "frobnicate"' in err,
         "an unknown restriction inside a class is refused at load time", err)
    rc, err = check(p, {"smtpd_restriction_classes": "my_class", "my_class": "permit_mynetworks, reject_unauth_destination",
                        "smtpd_relay_restrictions": "", "smtpd_recipient_restrictions": "my_class"})
    t.is_(rc, 0, "a class that guards relaying counts for the open relay check")
    t.ok("unknown parameter" not in err, "class definitions are no 'unknown parameter'", err)
    rc, err = check(p, {"smtpd_restriction_classes": "", "smtpd_relay_restrictions": "",
                        "smtpd_recipient_restrictions": "permit, reject_unauth_destination"})
    t.ok(rc != 0 and "open relay" in err, "a reject_unauth_destination after permit does not guard relaying", err)

    # A bare table means the stage's check_*_access, as in Postfix.
    rc, err = check(p, {"smtpd_client_restrictions": "static:DUNNO", "smtpd_recipient_restrictions": "reject_unauth_destination"})
    t.is_(rc, 0, "a bare table in smtpd_client_restrictions is check_client_access")
    rc, err = check(p, {"smtpd_client_restrictions": "", "smtpd_data_restrictions": "static:DUNNO"})
    t.ok(rc != 0 and "table static:DUNNO given without a restriction" in err,
         "a bare table in smtpd_data_restrictions is refused", err)

    # check_policy_service's settings.
    rc, err = check(p, {"smtpd_data_restrictions": "", "smtpd_recipient_restrictions":
                        "reject_unauth_destination, check_policy_service { inet:127.0.0.1:10040, frobs=1 }"})
    t.ok(rc != 0 and 'unknown attribute name "frobs"' in err, "an unknown policy service setting is refused", err)
    rc, err = check(p, {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service tcp:x:1"})
    t.ok(rc != 0 and "need inet:host:port or unix:/path" in err, "a bad policy endpoint is refused", err)

    # Postfix's spawn(8) policy servers: the master runs them (test_spawn.py runs one).
    with open(os.path.join(p.conf, "master.cf"), "a") as f:
        f.write("policy unix - n n - 0 spawn user=nobody argv=/usr/bin/policyd-spf\n")
    rc, err = check(p, {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service unix:private/policy",
                        "policy_time_limit": "3600"})
    t.ok(rc == 0 and "spawn" not in err and "policy_time_limit" not in err,
         "check_policy_service pointing at a spawn(8) service is accepted, with its time limit, silently", err)

t.done()
