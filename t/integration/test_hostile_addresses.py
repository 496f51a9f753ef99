"""Hostile recipient and sender addresses against every delivery class (issue 8, finding 1).

An attacker controls the envelope: the sender, every recipient, the ORCPT of each recipient
and the HELO name. None of it may ever become a command, a file name or shell text. Commands
and files are delivery targets only when the admin's alias table names them (Postfix's
allow_mail_to_commands / allow_mail_to_files), the recipient address itself never is, and an
alias command gets the envelope only in censored environment variables.

The test sends every hostile form to every address class (local, alias, virtual alias, virtual
mailbox, relay, a master.cf pipe transport), from outside and from inside mynetworks, with
recipient validation at RCPT switched off so the router itself is tested (smtpd's checks are
the first line of defence, not the only one). Every hostile command tries to create a file
in a world-writable trap directory; afterwards the trap must be empty and nothing may have
been delivered to a command or file that the alias table did not name.
"""
import os
import re
import stat

from harness import Petrel, Tap, refused_port, maildir_messages, wait_for

t = Tap(timeout=400)
QMGR = "qmgr unix n - n 300 1 qmgr\n"


def xtext(s):
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else "+%02X" % ord(c) for c in s)


SAFE = set("1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def censor(s):
    """What Postfix's default command_expansion_filter leaves of s."""
    return "".join(c if c in SAFE else "_" for c in s)


def world_dir(path):
    os.mkdir(path)
    os.chmod(path, 0o777)
    return path


def settled(p):
    """Nothing left in incoming/ or active/ (dead relays wait in deferred/)."""
    return not p.queue_files("incoming", "active")


def run(mynetworks, round_name):
    with Petrel(t, main_cf={}, extra_services=QMGR, start=False) as p:
        trap = world_dir(os.path.join(p.dir, "trap"))
        out = world_dir(os.path.join(p.dir, "out"))
        mail = world_dir(os.path.join(p.dir, "mail"))
        record = p.write_file("record.sh", "#!/bin/sh\nenv > %s/env.$$\ncat > %s/msg.$$\n" % (out, out), 0o755)
        record_argv = p.write_file(
            "record-argv.sh",
            "#!/bin/sh\nfor a in \"$@\"; do printf '%%s\\n' \"$a\"; done > %s/argv.$$\ncat > /dev/null\n" % out, 0o755)
        # An include file an admin wrote, naming a command and a file: include
        # is not in allow_mail_to_commands / _files by default.
        include = p.write_file("include.list", "|touch %s/from-include\n%s/from-include-file\nu@vmail.test\n"
                               % (trap, trap))
        # A file an attacker might name: it must never be read as an include.
        p.write_file("trap-include.list", "|touch %s/attacker-include\n" % trap)
        aliases = p.write_file("aliases", "runner \"|%s\"\ninc :include:%s\narchive %s/archive.mbox\n"
                               % (record, include, out))
        valias = p.write_file("valias.regexp", "/^(.*)@valias\\.test$/ ${1}@local.test\n")
        dead = refused_port()
        conf = dict(p.settings)
        conf.update({
            "mynetworks": mynetworks,
            "myorigin": "local.test",
            "mydestination": "local.test, localhost",
            "alias_maps": "texthash:" + aliases,
            "virtual_alias_domains": "valias.test",
            "virtual_alias_maps": "regexp:" + valias,
            "virtual_mailbox_domains": "vmail.test",
            "virtual_mailbox_base": mail,
            "virtual_mailbox_maps": "inline:{ {u@vmail.test = vmail.test/u/} }",
            "relay_domains": "relay.test, pipe.test",
            "transport_maps": "inline:{ {relay.test = smtp:[127.0.0.1]:%d}, {pipe.test = mypipe:} }" % dead,
            "smtpd_reject_unlisted_recipient": "no",
            "local_recipient_maps": "",
            "maillog_file": p.log_path,
            "minimal_backoff_time": "300s",
        })
        p.write_main_cf(conf)
        with open(os.path.join(p.conf, "master.cf"), "a") as f:
            f.write("mypipe unix - n n - - pipe flags=R argv=%s ${sender} ${recipient} ${original_recipient}\n"
                    % record_argv)
        p.start()

        senders = [
            '"$(touch %s/s1)"@a.example' % trap,
            '"`touch %s/s2`"@a.example' % trap,
            '"|touch %s/s3"@a.example' % trap,
            '"; touch %s/s4 #"@a.example' % trap,
            "${sender}@a.example",
        ]
        locals_ = [
            '"|touch %s/r1"' % trap,
            "|${sender}",
            '"|$(touch %s/r3)"' % trap,
            '"|`touch %s/r4`"' % trap,
            "%s/r5" % trap,
            '"%s/r6"' % trap,
            '"%s/r7/"' % trap,
            '":include:%s/trap-include.list"' % p.dir,
            '"|touch %s/r9"+ext' % trap,
        ]
        domains = ["local.test", "localhost", "vmail.test", "valias.test", "relay.test", "pipe.test"]
        accepted = 0
        for n, sender in enumerate(senders):
            c = p.connect()
            c.ehlo("`touch %s/helo`.example" % trap)
            c.cmd("MAIL FROM:<%s>" % sender)
            if c.code != 250:
                t.ok(False, "%s: MAIL FROM:<%s> accepted (got %s)" % (round_name, sender, c.lines))
                continue
            good = 0
            for local in locals_:
                for domain in domains:
                    c.cmd("RCPT TO:<%s@%s>" % (local, domain))
                    good += c.code == 250
            # The real alias command and the pipe transport, with a hostile ORCPT.
            orcpt = xtext('rfc822;"|touch %s/o%d"@local.test' % (trap, n))
            for rcpt in ("runner@local.test", "user@pipe.test", "inc@local.test", "archive@local.test"):
                c.cmd("RCPT TO:<%s> ORCPT=%s" % (rcpt, orcpt))
                good += c.code == 250
            c.cmd("DATA")
            if c.code == 354:
                c.send("Subject: hostile %d\r\n\r\n$(touch %s/body)\r\n.\r\n" % (n, trap))
                c.read_reply()
                accepted += c.code == 250
            c.cmd("QUIT")
            c.close()
        t.is_(accepted, len(senders), "%s: every hostile message is accepted (the router is what is tested)" % round_name)
        t.ok(wait_for(lambda: settled(p), timeout=60), "%s: the queue manager finished every delivery" % round_name)
        wait_for(lambda: len([f for f in os.listdir(out) if f.startswith("argv.")]) >= len(senders), timeout=20)

        t.is_(sorted(os.listdir(trap)), [], "%s: nothing ran and nothing was written in the trap directory" % round_name)
        log = p.log()
        # Only the admin's alias names a command or a file: every other local
        # delivery that succeeded went to a mailbox (virtual) or a transport.
        sent = re.findall(r"to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=([^,]*),[^\n]*status=sent \(([^)]*)", log)
        odd = [(a, r, x) for a, r, x in sent if r not in ("virtual", "mypipe")
               and a not in ("runner@local.test", "archive@local.test")]
        t.is_(odd, [], "%s: only runner@ and archive@ went to a command or a file" % round_name)
        t.like(log, r"to=<runner@local\.test>[^\n]*relay=local,[^\n]*status=sent \(delivered to command: %s\)"
               % re.escape(record), "%s: the alias command is logged as Postfix's local(8) logs it" % round_name)
        for local in ('"|touch %s/r1"' % trap, "%s/r5" % trap):
            addr = local + "@local.test"
            t.like(log, r"to=<%s>[^\n]*status=bounced \([^)]*unknown user" % re.escape(addr),
                   "%s: %s bounces as an unknown user" % (round_name, addr[:24]))
        t.like(log, r"to=<inc@local\.test>[^\n]*status=bounced \(mail to command is restricted\)",
               "%s: a command in an :include: file is restricted (allow_mail_to_commands)" % round_name)
        t.like(log, r"to=<inc@local\.test>[^\n]*status=bounced \(mail to file is restricted\)",
               "%s: a file in an :include: file is restricted (allow_mail_to_files)" % round_name)
        t.ok(len(maildir_messages(os.path.join(mail, "vmail.test", "u"))) >= len(senders),
             "%s: the include file's plain address is delivered" % round_name)

        envs = [open(os.path.join(out, f)).read() for f in sorted(os.listdir(out)) if f.startswith("env.")]
        t.is_(len(envs), len(senders), "%s: the alias command ran once per message" % round_name)
        bad = []
        for e in envs:
            for var in ("SENDER", "ORIGINAL_RECIPIENT", "CLIENT_HELO", "RECIPIENT"):
                m = re.search(r"^%s=(.*)$" % var, e, re.M)
                if m and re.search(r"[^0-9A-Za-z!@%\-_=+:,./]", m.group(1)):
                    bad.append((var, m.group(1)))
        t.is_(bad, [], "%s: the alias command's environment is censored (command_expansion_filter)" % round_name)
        senders_seen = sorted(m.group(1) for m in (re.search(r"^SENDER=(.*)$", e, re.M) for e in envs) if m)
        t.is_(senders_seen, sorted(censor(s) for s in senders),
              "%s: SENDER reaches the command, each unsafe byte replaced by _" % round_name)
        orcpts_seen = sorted(m.group(1) for m in (re.search(r"^ORIGINAL_RECIPIENT=(.*)$", e, re.M) for e in envs) if m)
        t.is_(orcpts_seen, sorted(censor('"|touch %s/o%d"@local.test' % (trap, n)) for n in range(len(senders))),
              "%s: so does ORIGINAL_RECIPIENT (from ORCPT, without its type)" % round_name)
        argvs = [open(os.path.join(out, f)).read().split("\n") for f in sorted(os.listdir(out)) if f.startswith("argv.")]
        got_senders = sorted(set(a[0] for a in argvs if a))
        t.is_(got_senders, sorted(senders), "%s: a pipe transport gets ${sender} as one argument, unchanged, no shell" % round_name)
        arch = os.path.join(out, "archive.mbox")
        t.ok(os.path.exists(arch) and open(arch, "rb").read().count(b"\nSubject: hostile ") == len(senders),
             "%s: an alias's /file target is delivered (allow_mail_to_files = alias)" % round_name)
        mode = stat.S_IMODE(os.stat(trap).st_mode)
        t.is_(mode, 0o777, "%s: the trap was writable all along (the test has teeth)" % round_name)


run("192.0.2.0/24", "outside mynetworks")
run("127.0.0.0/8", "inside mynetworks")

# allow_mail_to_commands takes alias, forward, include; anything else is a configuration error.
with Petrel(t, main_cf={"allow_mail_to_commands": "alias, everything"}, extra_services=QMGR, start=False) as p:
    import subprocess
    from harness import PETRELD
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.ok(r.returncode != 0, "petreld -n refuses allow_mail_to_commands = everything")
    t.like(r.stderr + r.stdout, r'allow_mail_to_commands: unknown value "everything"', "and says which value")
t.done()
