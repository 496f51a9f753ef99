"""Postfix's milter macros that come from the session and from
milter_macro_defaults (Postfix 3.1), seen by our libmilter filter through
petreld: {client_ptr}, {client_resolve}, {client_connections}, "_", and
defaults for macros without a value (and only those)."""
import re

from harness import Petrel, Smtp, Tap
from modlib import bundled_module_dir
from peers import TestFilter

t = Tap(timeout=300)
mods = bundled_module_dir("milter")


def conf(milters, **extra):
    c = {"modules": "milter", "module_directory": mods, "smtpd_milters": milters}
    c.update(extra)
    return c


def macros(f, stage):
    return sorted(ln[len("macro %s " % stage):] for ln in f.log() if ln.startswith("macro %s " % stage))


CONNECT = "j {client_ptr} {client_resolve} {client_connections} _ {client_addr}"

# --- the client's facts ------------------------------------------------------------------
with TestFilter() as f:
    # smtpd_client_event_limit_exceptions empty: loopback is counted (Postfix's default exempts $mynetworks)
    with Petrel(t, main_cf=conf(f.endpoint, milter_connect_macros=CONNECT, smtpd_client_event_limit_exceptions="",
                                smtpd_workers="1")) as p:
        first = Smtp(p.port)
        first.ehlo()
        second = Smtp(p.port)
        second.ehlo()
        second.cmd("QUIT")
        second.close()
        first.cmd("QUIT")
        first.close()
        got = macros(f, "connect")
        # The test's dns_resolver refuses every query: the name lookup failed
        # temporarily, which Postfix calls TEMP.
        for want in ("{client_ptr}=unknown", "{client_resolve}=TEMP", "_=unknown [127.0.0.1]",
                     "{client_addr}=127.0.0.1", "{client_connections}=1", "{client_connections}=2"):
            t.ok(want in got, "CONNECT macro %s (Postfix's value)" % want, got)
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint, milter_connect_macros=CONNECT)) as p:
        c = Smtp(p.port)
        c.ehlo()
        c.cmd("QUIT")
        c.close()
        t.ok("{client_connections}=0" in macros(f, "connect"),
             "{client_connections} is 0 for a client exempt from the limits ($mynetworks), as in Postfix",
             macros(f, "connect"))

# --- milter_macro_defaults ----------------------------------------------------------------
DEFAULTS = "auth_type=none, { {petrel_test} = with spaces }, {mail_addr}=never, {cert_subject}=no-cert"
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint, milter_macro_defaults=DEFAULTS,
                                milter_mail_macros="i {auth_type} {mail_addr} {petrel_test}",
                                milter_helo_macros="{cert_subject} {tls_version}")) as p:
        c = Smtp(p.port)
        c.ehlo()
        t.like(c.cmd("MAIL FROM:<sender@example.org>"), r"^250 ", "MAIL")
        c.cmd("QUIT")
        c.close()
        mail, helo = macros(f, "mail"), macros(f, "helo")
        t.ok("{auth_type}=none" in mail, "a macro without a value gets its default (name=value form)", mail)
        t.ok("{petrel_test}=with spaces" in mail, "the { name = value } form, white space inside kept", mail)
        t.ok("{mail_addr}=sender@example.org" in mail, "a macro with a value keeps it: the default is not used",
             mail)
        t.ok("{cert_subject}=no-cert" in helo, "defaults at HELO too", helo)
        t.ok(not any(m.startswith("{tls_version}=") for m in helo), "a macro without value or default: not sent",
             helo)

# --- SMFIP_RCPT_REJ: rejected recipients, for the milters that ask -----------------------
with TestFilter(options="rcpt_rej") as asks, TestFilter() as not_asking:
    with Petrel(t, main_cf=conf("%s, %s" % (asks.endpoint, not_asking.endpoint))) as p:
        c = Smtp(p.port)
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.org>")
        refused = c.cmd("RCPT TO:<nobody-here@petrel.test>")
        t.like(refused, r"^550 5\.1\.1 <nobody-here@petrel\.test>: Recipient address rejected: ",
               "a recipient our checks refuse: our reply, unchanged")
        t.like(c.cmd("RCPT TO:<u@petrel.test>"), r"^250 ", "  and the session goes on")
        c.cmd("QUIT")
        c.close()
        log = asks.log()
        t.ok("envrcpt <nobody-here@petrel.test>" in log, "the milter that asked (SMFIP_RCPT_REJ) gets the refused "
             "recipient", log)
        why = refused.split(" ", 3)[3]
        rcpt = macros(asks, "rcpt")
        for want in ("{rcpt_mailer}=error", "{rcpt_host}=5.1.1", "{rcpt_addr}=" + why):
            t.ok(want in rcpt, "  with Postfix's macro %s" % want, rcpt)
        t.ok("envrcpt <u@petrel.test>" in log and "{rcpt_addr}=u@petrel.test" in rcpt,
             "  and the accepted one as usual", rcpt)
        t.ok(not any("nobody-here" in ln for ln in not_asking.log()),
             "the milter that did not ask does not see it", not_asking.log())
        t.ok(re.search(r"milter-reject", p.log()) is None, "nothing is logged as a milter's reject")
with TestFilter(options="rcpt_rej", verdicts={"rcpt": "reply:554:5.7.1:Milter says no"}) as f:
    with Petrel(t, main_cf=conf(f.endpoint)) as p:
        c = Smtp(p.port)
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.org>")
        t.like(c.cmd("RCPT TO:<nobody-here@petrel.test>"), r"^550 5\.1\.1 ",
               "a milter's reply to a refused recipient changes nothing (Postfix)")
        t.is_(c.cmd("RCPT TO:<u@petrel.test>"), "554 5.7.1 Milter says no", "  an accepted one gets it")
        c.cmd("QUIT")
        c.close()

# --- the configuration --------------------------------------------------------------------
import subprocess
from harness import PETRELD
for value, want in (("auth_type", "malformed default macro entry: missing '=' after attribute name"),
                    ("=x", "malformed default macro entry: missing attribute name"),
                    ("{auth_type", "malformed default macro entry: missing '}'")):
    p = Petrel(t, main_cf=conf("inet:127.0.0.1:9", milter_macro_defaults=value), start=False)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    t.ok(r.returncode != 0 and re.search(r"milter_macro_defaults: " + re.escape(want), out),
         "milter_macro_defaults = %s: refused, named" % value, out)
p = Petrel(t, main_cf=conf("inet:127.0.0.1:9", milter_macro_defaults="a=1 a=2"), start=False)
r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=60)
t.ok(r.returncode == 0 and "ignoring multiple default macro entries for {a}" in r.stdout + r.stderr,
     "a repeated name: a warning, as in Postfix", r.stdout + r.stderr)

t.done()
