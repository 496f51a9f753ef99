"""Module restrictions in ABI 1.1: the verdicts DEFER_IF_REJECT and
DEFER_IF_PERMIT with Postfix's meaning (smtpd_check.c's defer_if_reject and
defer_if_permit), a module's refusals going through warn_if_reject and a
pending defer_if_reject like any restriction's, and optional restriction
arguments (max_args), through verdictmod (t/modules/verdictmod.c)."""
import subprocess

from harness import PETRELD, Petrel, Smtp, Tap, free_port
from modlib import module_dir

t = Tap()
mods = module_dir("verdictmod")

CASES = [
    # (name, restriction list, RCPT reply)
    ("dip_permit", "check_verdict defer_if_permit, permit_mynetworks, reject",
     "450 4.7.1 Service unavailable (module verdictmod)"),
    ("dip_reject", "check_verdict defer_if_permit, reject",
     "554 5.7.1 <u@petrel.test>: Recipient address rejected: Access denied"),
    ("dip_code", "check_verdict defer_if_permit 451, permit_mynetworks",
     "451 4.7.1 verdictmod defers if permitted"),
    ("dip_later", "check_verdict later_defer_if_permit, permit_mynetworks", "450 4.7.1 verdictmod defers later"),
    ("dir_reject", "check_verdict defer_if_reject, reject", "450 4.7.1 verdictmod defers if rejected"),
    ("dir_permit", "check_verdict defer_if_reject, permit_mynetworks", "250 2.1.5 Ok"),
    ("dir_module", "defer_if_reject, check_verdict reject",
     "450 4.7.0 <u@petrel.test>: Recipient address rejected: defer_if_reject requested"),
    ("warn_module", "warn_if_reject, check_verdict reject, permit_mynetworks", "250 2.1.5 Ok"),
    ("warn_broken", "warn_if_reject, check_verdict broken, permit_mynetworks", "451 4.3.0 Error: internal filter failure"),
    ("plain_reject", "check_verdict reject, permit_mynetworks", "554 5.7.1 verdictmod rejects"),
    ("optional_stop", "check_verdict dunno reject", "554 5.7.1 <u@petrel.test>: Recipient address rejected: "
     "Access denied"),
]

ports = {name: free_port() for name, _, _ in CASES}
ports["hook"] = free_port()
extra = "".join("127.0.0.1:%d inet n - n - - smtpd\n  -o smtpd_recipient_restrictions=%s\n"
                % (ports[n], rl.replace(", ", ",").replace(" ", ",")) for n, rl, _ in CASES)
extra += "127.0.0.1:%d inet n - n - - smtpd\n  -o verdictmod_mail_verdict=defer_if_permit\n" % ports["hook"]
main_cf = {"modules": "verdictmod", "module_directory": mods}
with Petrel(t, main_cf=main_cf, extra_services=extra, workers=1) as p:
    for port in ports.values():
        p.wait_listening(port)
    for name, rl, want in CASES:
        c = Smtp(ports[name])
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        t.is_(c.cmd("RCPT TO:<u@petrel.test>"), want, "%s: %s" % (name, rl))
        c.cmd("QUIT")
        c.close()
    log = p.log()
    t.like(log, r"reject_warning: RCPT from \S+: 554 5\.7\.1 verdictmod rejects",
           "warn_if_reject turns a module's reject into a logged reject_warning")
    t.like(log, r"check_verdict defer_if_permit compiled with 2 arguments",
           "an optional argument is taken when it is no restriction")
    t.like(log, r"check_verdict dunno compiled with 1 argument\b", "a restriction name ends the optional arguments")

    c = Smtp(ports["hook"])
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "451 4.3.0 Error: internal filter failure",
          "DEFER_IF_PERMIT from a hook is refused as an invalid answer")
    t.like(p.log(), r"module verdictmod: verdict DEFER_IF_PERMIT outside a restriction", "and the module is named")
    c.close()

# More words than max_args: the extra word is an unknown restriction.
with Petrel(t, start=False, main_cf=dict(main_cf, smtpd_recipient_restrictions="check_verdict dunno 451 extra")) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
    t.ok(r.returncode != 0, "petreld -n refuses a word past max_args", r.stderr)
    t.like(r.stderr, r'unknown restriction "extra"', "naming it")
t.done()
