"""Services the plugin API gives modules: lookup-table types, asynchronous DNS through
dns_resolver (against a private dnsmasq), worker threads, fd watches, per-module parameters."""
import subprocess

from harness import PETRELD, Dnsmasq, Petrel, Tap
from modlib import module_dir

t = Tap()
mods = module_dir("testmod")
BASE = {"modules": "testmod", "module_directory": mods}


def conf(**extra):
    c = dict(BASE)
    c.update(extra)
    return c


def mail_rcpt(p, sender):
    c = p.connect()
    c.ehlo()
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if c.code == 250:
        r = c.cmd("RCPT TO:<u@petrel.test>")
    c.close()
    return r


# --- a module's table type in check_sender_access ------------------------------
with Petrel(t, main_cf=conf(smtpd_sender_restrictions="check_sender_access testmod:mytable")) as p:
    t.is_(mail_rcpt(p, "someone@good.example"), "250 2.1.5 Ok", "a module table answering OK permits")
    t.is_(mail_rcpt(p, "someone@bad.example"),
          "554 5.7.1 <someone@bad.example>: Sender address rejected: testmod table mytable refuses someone@bad.example",
          "a module table answering REJECT text refuses with it")
    t.is_(mail_rcpt(p, "someone@other.example"), "250 2.1.5 Ok", "not found: evaluation goes on")

with Petrel(t, start=False, main_cf=conf(smtpd_sender_restrictions="check_sender_access testmod:fail")) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.like(r.stderr, r"testmod:fail: testmod tables named fail cannot be opened",
           "a module table that cannot open fails the configuration check with its reason")

# --- asynchronous DNS through dns_resolver --------------------------------------
records = ["--local=/test/", "--address=/listed.test/127.0.0.2", "--address=/clean.test/127.0.0.9",
           "--mx-host=mx.test,mail2.mx.test,20", "--mx-host=mx.test,mail1.mx.test,10",
           "--txt-record=txt.test,hello dns world", "--ptr-record=1.0.0.127.in-addr.arpa,ptr.test"]
with Dnsmasq(records) as dns:
    with Petrel(t, main_cf=conf(dns_resolver=dns.server,
                                smtpd_sender_restrictions="check_testmod dnsa, check_testmod dnsmx, "
                                                          "check_testmod dnstxt, check_testmod dnsptr")) as p:
        t.is_(mail_rcpt(p, "a@listed.test"), "554 5.7.1 testmod: sender domain is listed",
              "an A lookup through dns_resolver decides (listed); a module's reply text is its own")
        t.is_(mail_rcpt(p, "a@clean.test"), "250 2.1.5 Ok", "and lets a clean domain pass")
        t.ok(p.wait_log(r"dns A status 0: 127\.0\.0\.9") is not None, "A answers reach the module")
        mail_rcpt(p, "a@mx.test")
        t.ok(p.wait_log(r"dns MX status 0: 10 mail1\.mx\.test 20 mail2\.mx\.test") is not None,
             "MX answers come sorted by preference")
        mail_rcpt(p, "a@txt.test")
        t.ok(p.wait_log(r"dns TXT status 0: hello dns world") is not None, "TXT answers are joined strings")
        t.ok(p.wait_log(r"dns PTR status 0: ptr\.test") is not None, "PTR lookups take an address")
        mail_rcpt(p, "a@nowhere.test")
        t.ok(p.wait_log(r"dns A status 1:") is not None, "NXDOMAIN is reported as such")
    t.ok("listed.test" in open(dns.log_path).read(), "the queries went to the configured resolver")

with Petrel(t, start=False, main_cf=conf(dns_resolver="not a server")) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.ok(r.returncode != 0, "a bad dns_resolver fails the configuration check")
    t.like(r.stderr, r"main\.cf:\d+: dns_resolver: bad server \"not a server\"", "naming file, line and parameter")

# --- worker threads and fd watches ------------------------------------------------
with Petrel(t, main_cf=conf(smtpd_recipient_restrictions="check_testmod blocking, reject",
                            smtpd_sender_restrictions="check_testmod pipe")) as p:
    t.is_(mail_rcpt(p, "a@example.org"), "250 2.1.5 Ok",
          "petrel_run_blocking completes on the loop, petrel_watch_fd fires, both answer OK")
t.done()
