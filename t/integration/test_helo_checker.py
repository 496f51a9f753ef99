"""plugins/helo-checker, the asynchronous example plugin, built by the tree
against <petrel/plugin.h> alone, against a private dnsmasq: each of its
ways of waiting decides one case.

  - a HELO name listed in helo_checker_deny_file (read on a worker thread):
    550 5.7.1 HELO name refused;
  - a name whose A record is the client's (a DNS lookup): passes (250);
  - a name without an address: after the tarpit (a timer; the optional
    argument sets it), DEFER_IF_PERMIT: 450 at the end of RCPT, or the
    rejection of a later restriction;
  - a client that leaves while its check waits: nothing breaks, the next
    session is served, and the RCPT counts as failed (rcpt=0/1)."""
import os
import shutil

import tempfile

from harness import CLEANUP_DIRS, TOP_BUILDDIR, Dnsmasq, Petrel, Smtp, Tap, free_port

t = Tap()
mods = tempfile.mkdtemp(prefix="petrel-modules-")
os.chmod(mods, 0o755)
CLEANUP_DIRS.append(mods)
shutil.copyfile(os.path.join(TOP_BUILDDIR, "plugins", "helo-checker", ".libs", "helo_checker.so"),
                os.path.join(mods, "helo_checker.so"))
os.chmod(os.path.join(mods, "helo_checker.so"), 0o644)

records = ["--local=/helo.test/", "--host-record=good.helo.test,127.0.0.1",
           "--host-record=elsewhere.helo.test,192.0.2.7"]


def rcpt(port, helo):
    c = Smtp(port, timeout=20)
    c.ehlo(helo)
    c.cmd("MAIL FROM:<a@example.org>")
    r = c.cmd("RCPT TO:<user@petrel.test>")
    c.cmd("QUIT")
    c.close()
    return r


with Dnsmasq(records) as dns:
    deny = tempfile.NamedTemporaryFile("w", suffix=".deny", delete=False)
    deny.write("# names we refuse\nbad.helo.test\n")
    deny.close()
    os.chmod(deny.name, 0o644)
    main_cf = {"modules": "helo_checker", "module_directory": mods, "dns_resolver": dns.server,
               "helo_checker_deny_file": deny.name, "mynetworks": "192.0.2.0/24",
               "smtpd_recipient_restrictions": "check_helo_checker 200, permit"}
    later = "127.0.0.1:%d inet n - n - - smtpd\n  -o smtpd_recipient_restrictions=check_helo_checker,reject\n"
    port2 = free_port()
    with Petrel(t, main_cf=main_cf, extra_services=later % port2, workers=1) as p:
        p.wait_listening(port2)
        t.is_(rcpt(p.port, "bad.helo.test"), "550 5.7.1 HELO name refused",
              "a HELO name in the deny file (scanned on a worker thread) is refused")
        t.is_(rcpt(p.port, "good.helo.test"), "250 2.1.5 Ok", "a HELO name that resolves to the client passes")
        t.ok(p.wait_log(r"helo_checker: HELO good\.helo\.test resolves to the client") is not None,
             "after a DNS lookup")
        t.is_(rcpt(p.port, "elsewhere.helo.test"), "250 2.1.5 Ok", "one that resolves elsewhere passes too")
        t.is_(rcpt(p.port, "nothing.helo.test"), "450 4.7.1 HELO name has no address",
              "a HELO name without an address is deferred (DEFER_IF_PERMIT, then permit)")
        t.ok(p.wait_log(r"helo_checker: HELO nothing\.helo\.test has no address: waiting 200 ms") is not None,
             "after the tarpit that the optional argument set")
        t.is_(rcpt(port2, "nothing.helo.test"), "554 5.7.1 <user@petrel.test>: Recipient address rejected: "
              "Access denied", "a later reject wins over DEFER_IF_PERMIT (Postfix's meaning)")
        t.ok(p.wait_log(r"waiting 1000 ms") is not None, "without the argument, helo_checker_delay (1000 ms)")
        c = Smtp(p.port, timeout=20)
        c.ehlo("nothing.helo.test")
        c.cmd("MAIL FROM:<a@example.org>")
        c.send("RCPT TO:<user@petrel.test>\r\n")
        c.close()   # gone while the check waits
        t.is_(rcpt(p.port, "good.helo.test"), "250 2.1.5 Ok", "a client leaving mid-check harms nothing")
        # the left session's end is logged when the worker has dealt with it, maybe after the next session
        p.wait_log(r"lost connection after RCPT from \S+\[127\.0\.0\.1\]")
        # its RCPT was never answered: in the total, not the successes (Postfix's rcpt=0/1)
        t.ok(p.wait_log(r"disconnect from \S+\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=0/1 commands=2/3\n")
             is not None, "the RCPT cut short counts as failed: rcpt=0/1 commands=2/3")
        log = p.log()
        t.ok("AddressSanitizer" not in log and "runtime error:" not in log and "panic" not in log,
             "no crash, no sanitizer report")
    os.unlink(deny.name)
t.done()
