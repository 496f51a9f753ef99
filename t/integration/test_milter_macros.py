"""Postfix's milter macros that come from the session and from
milter_macro_defaults (Postfix 3.1), seen by our libmilter filter through
petreld: {client_ptr}, {client_resolve}, {client_connections}, "_",
Postfix's address resolution ({mail_mailer} {mail_host} {rcpt_mailer}
{rcpt_host}) and defaults for macros without a value (and only those)."""
import re

from harness import Petrel, Smtp, Tap, refused_port
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

# --- Postfix's address resolution: {mail_mailer} {mail_host} {rcpt_mailer} {rcpt_host} ------
RELAYHOST = "[127.0.0.1]:%d" % refused_port()
RESOLVE = {
    "virtual_mailbox_domains": "vmail.test",
    "virtual_mailbox_maps": "inline:{ {v@vmail.test = vmail.test/v/} }",
    "relay_domains": "relay.test",
    "virtual_alias_domains": "valias.test",
    "virtual_alias_maps": "inline:{ {a@valias.test = u@petrel.test} }",
    "relayhost": RELAYHOST,
    "transport_maps": "inline:{ {special.test = relay:[127.0.0.1]:9925}, {bare.test = smtp:}, "
                      "{t@petrel.test = lmtp:inet:127.0.0.1:9924} }",
}
WANT = (("u@petrel.test", "local", "mx.petrel.test", "a local recipient: local_transport = local:$myhostname"),
        ("v@vmail.test", "virtual", "vmail.test", "a virtual mailbox: virtual_transport, the domain"),
        ("x@relay.test", "relay", RELAYHOST, "relay_domains: relay_transport via relayhost (Postfix's resolve.c)"),
        ("y@example.net", "smtp", RELAYHOST, "the default class: default_transport via relayhost"),
        ("w@special.test", "relay", "[127.0.0.1]:9925", "a transport_maps entry for the domain"),
        ("z@bare.test", "smtp", "bare.test", "a transport_maps entry without next hop: the domain, not "
                                             "relayhost (Postfix)"),
        ("t@petrel.test", "lmtp", "inet:127.0.0.1:9924", "a transport_maps entry for a local address"),
        ("a@valias.test", "error", "5.1.1 User unknown in virtual alias table",
         "a virtual alias domain: resolved before aliases, as in Postfix"))
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint, **RESOLVE), local_users=("t",)) as p:
        c = Smtp(p.port)
        c.ehlo()
        t.like(c.cmd("MAIL FROM:<sender@example.org>"), r"^250 ", "MAIL")
        for rcpt, _, _, _ in WANT:
            t.like(c.cmd("RCPT TO:<%s>" % rcpt), r"^250 ", "RCPT %s accepted" % rcpt)
        c.cmd("RSET")
        t.like(c.cmd("MAIL FROM:<>"), r"^250 ", "MAIL FROM:<>")
        c.cmd("QUIT")
        c.close()
        mail = macros(f, "mail")
        for want in ("{mail_mailer}=smtp", "{mail_host}=" + RELAYHOST, "{mail_mailer}=local",
                     "{mail_host}=mx.petrel.test"):
            t.ok(want in mail, "MAIL macro %s (the sender's resolution; <> is local, as in Postfix)" % want, mail)
        # the filter logs each RCPT's macros in order, after its envrcpt line
        log = f.log()
        for rcpt, mailer, host, why in WANT:
            at = log.index("envrcpt <%s>" % rcpt) if "envrcpt <%s>" % rcpt in log else -1
            got = []
            for ln in log[at + 1:] if at >= 0 else []:
                if not ln.startswith("macro rcpt "):
                    break
                got.append(ln[len("macro rcpt "):])
            t.ok("{rcpt_mailer}=%s" % mailer in got and "{rcpt_host}=%s" % host in got,
                 "%s: {rcpt_mailer}=%s {rcpt_host}=%s" % (why, mailer, host), got)

# A table the SMTP server would have to wait for (socketmap:): the macros are
# not sent rather than guessed; milter_macro_defaults still applies.
from socketmaplib import SocketmapServer
server = SocketmapServer({"transport": {}})
with TestFilter() as f:
    with Petrel(t, main_cf=conf(f.endpoint, transport_maps="socketmap:inet:127.0.0.1:%d:transport" % server.port,
                                milter_macro_defaults="{rcpt_host}=unresolved", modules="milter socketmap",
                                module_directory=bundled_module_dir("milter", "socketmap"))) as p:
        c = Smtp(p.port)
        c.ehlo()
        c.cmd("MAIL FROM:<sender@example.org>")
        t.like(c.cmd("RCPT TO:<u@petrel.test>"), r"^250 ", "RCPT with a remote transport_maps")
        c.cmd("QUIT")
        c.close()
        rcpt = macros(f, "rcpt")
        t.ok(not any(m.startswith("{rcpt_mailer}=") for m in rcpt) and "{rcpt_host}=unresolved" in rcpt,
             "a remote transport_maps: {rcpt_mailer} not sent, {rcpt_host} from milter_macro_defaults", rcpt)
        t.ok(not server.requests, "  and the remote table was not asked", server.requests)
server.stop()

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
