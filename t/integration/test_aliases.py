"""The aliases file end to end: a Debian-style /etc/aliases (name: value lines, continuation
lines, comments, :include:, a quoted command, a Maildir file) built by petrel-sendmail -bi (and
by a newaliases link, and petrelctl newaliases), then mail to its names delivered through the
alias rules: to mailboxes, to the command and to the Maildir. An alias table that was never
built stops the start with the command to run; a rebuilt one is used without a reload.

As root, also Postfix's default alias_maps = hash:/etc/aliases, in a private mount namespace
whose /etc is an overlay (the host's /etc is never touched): no aliases file at all is a
warning and mail goes to the users; an /etc/aliases without /etc/aliases.lmdb stops the start
naming petrelctl newaliases; after it, the default table works."""
import os
import shutil
import subprocess
import tempfile

from harness import (CLEANUP_DIRS, PETRELCTL, PETRELD, TOP_BUILDDIR, Petrel, Tap, _runnable_copy,
                     maildir_messages, wait_for)

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))


def petreld_check(p):
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


with Petrel(t, extra_services=QMGR, start=False) as p:
    mail = os.path.join(p.dir, "mail")
    out = os.path.join(p.dir, "out")
    trap = os.path.join(p.dir, "trap")
    for d in (mail, out, trap):
        os.mkdir(d)
        os.chmod(d, 0o777)
    record = p.write_file("record.sh", "#!/bin/sh\ncat > %s/cmd.$$\necho \"$1\" > %s/arg.$$\n" % (out, out), 0o755)
    staff = p.write_file("staff.list", "# people\nbox@vmail.test\n\nother@vmail.test\n")
    aliases = p.write_file("aliases", (
        "# See man 5 aliases for format\n"
        "mailer-daemon: postmaster\n"
        "postmaster:    root\n"
        "nobody: root\n"
        "Root: box@vmail.test\n"
        "team: box@vmail.test,\n"
        "      other@vmail.test\n"
        "# the robot\n"
        "runner: \"|%s first-arg\"\n"
        "archive: %s/archive/\n"
        "staff: :include:%s\n"
        "broken line without a colon\n" % (record, mail, staff)))
    conf = dict(p.settings)
    conf.update({"alias_maps": "hash:" + aliases, "alias_database": "hash:" + aliases,
                 "myorigin": "petrel.test", "command_directory": os.path.dirname(PETRELCTL),
                 "virtual_mailbox_domains": "vmail.test", "virtual_mailbox_base": mail,
                 "virtual_mailbox_maps": "inline:{ {box@vmail.test = box/}, {other@vmail.test = other/} }"})
    p.write_main_cf(conf)

    rc, text = petreld_check(p)
    t.ok(rc != 0 and "alias_maps: hash:%s: open database %s.lmdb: No such file or directory; build it with "
         "`petrelctl newaliases`" % (aliases, aliases) in text,
         "an alias database never built stops petreld -n, naming petrelctl newaliases", text)

    r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-bi"), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0 and os.path.exists(aliases + ".lmdb"), "petrel-sendmail -bi builds it", r.stderr)
    t.ok("line 12: need name:value pair" in r.stderr, "warning about the broken line as postalias does", r.stderr)
    t.is_(p.petrelctl("alias", "query", "hash:" + aliases, "ROOT").stdout, "box@vmail.test\n",
          "names are case-insensitive")
    t.is_(p.petrelctl("alias", "query", "hash:" + aliases, "team").stdout, "box@vmail.test, other@vmail.test\n",
          "a continued entry is one value")
    os.unlink(aliases + ".lmdb")
    links = tempfile.mkdtemp(prefix="petrel-newaliases-")
    CLEANUP_DIRS.append(links)
    os.chmod(links, 0o755)
    os.symlink(SENDMAIL, os.path.join(links, "newaliases"))
    r = subprocess.run(p.command(os.path.join(links, "newaliases"), "-C", p.conf), capture_output=True, text=True,
                       timeout=30)
    t.ok(r.returncode == 0 and os.path.exists(aliases + ".lmdb"), "petrel-sendmail invoked as newaliases builds it",
         r.stderr)
    r = p.petrelctl("newaliases")
    t.ok(r.returncode == 0, "petrelctl newaliases rebuilds it", r.stderr)
    rc, text = petreld_check(p)
    t.ok(rc == 0 and "writable by group or others" not in text, "petreld -n accepts the built alias database", text)
    os.chmod(aliases + ".lmdb", 0o664)
    rc, text = petreld_check(p)
    t.ok(rc == 0 and "alias_maps: hash:%s: %s.lmdb is writable by group or others (mode 0664): whoever can write it "
         "decides which commands and files mail is delivered to" % (aliases, aliases) in text,
         "an alias table others may write is warned about", text)
    os.chmod(aliases + ".lmdb", 0o644)
    p.start()

    c = p.connect()
    for rcpt in ("root", "ROOT", "postmaster", "MAILER-DAEMON", "nobody", "team", "runner", "archive", "staff"):
        reply = c.send_message("sender@example.org", ["%s@petrel.test" % rcpt], "Subject: to %s\r\n\r\nbody\r\n" % rcpt)
        t.like(reply, r"^250 2\.0\.0 Ok: queued", "mail to %s@petrel.test is accepted" % rcpt)
    hostile = c.send_message("sender@example.org", ['"|touch %s/r1"@petrel.test' % trap], "Subject: x\r\n\r\nx\r\n")
    c.close()

    def box(name):
        return maildir_messages(os.path.join(mail, name))
    # box: root, ROOT, postmaster, MAILER-DAEMON, nobody, team, staff = 7; other: team, staff = 2
    # ten deliveries through the queue manager: slow under the sanitizers on a loaded machine
    t.ok(wait_for(lambda: len(box("box")) == 7 and len(box("other")) == 2, timeout=120),
         "the aliases deliver to the mailboxes (chains, lists, continuation lines, :include:)",
         "%d %d" % (len(box("box")), len(box("other"))))

    def command_done():
        """The command's files once it has finished: the shell creates cmd.PID
        before cat fills it, and writes arg.PID (created empty first) last."""
        args = [f for f in os.listdir(out) if f.startswith("arg.")]
        return args if args and os.path.getsize(os.path.join(out, args[0])) > 0 else None
    arg = wait_for(command_done, timeout=120)
    body = open(os.path.join(out, "cmd." + arg[0][4:])).read() if arg else ""
    t.ok("Subject: to runner" in body, "the quoted command gets the message on its standard input")
    t.is_(open(os.path.join(out, arg[0])).read() if arg else None, "first-arg\n", "with its arguments from the alias")
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(mail, "archive"))) == 1, timeout=120),
         "a path ending in / is a Maildir")
    t.ok(not hostile.startswith("250") or os.listdir(trap) == [], "a command-looking recipient never runs")
    t.is_(os.listdir(trap), [], "nothing ran in the trap directory")

    # Rebuilt while running: used without a reload.
    with open(aliases, "a") as f:
        f.write("late: other@vmail.test\n")
    r = p.petrelctl("newaliases")
    t.is_(r.returncode, 0, "petrelctl newaliases while petreld runs")

    def late_delivered():
        c = p.connect()
        c.send_message("sender@example.org", ["late@petrel.test"], "Subject: late\r\n\r\nx\r\n")
        c.close()
        return wait_for(lambda: any(b"Subject: late" in m for m in box("other")), timeout=5)
    # a delivery can take longer than one round under the sanitizers on a loaded machine:
    # any round's message counts
    t.ok(wait_for(late_delivered, timeout=90), "an alias added by a rebuild works without a reload")

# Postfix's default alias_maps = hash:/etc/aliases, in a private /etc.
if os.geteuid() != 0:
    t.ok(False, "the default alias_maps tests need root for a private mount namespace (CI and scripts/test.sh run "
         "as root)")
    t.done()

# An alias table that root does not own: Postfix would run its commands as
# the owner; Petrel says that it uses default_privs.
with Petrel(t, start=False) as p:
    aliases = p.write_file("aliases", "runner: \"|/bin/true\"\n")
    conf = dict(p.settings)
    conf.update({"alias_maps": "hash:" + aliases, "alias_database": "hash:" + aliases})
    p.write_main_cf(conf)
    t.is_(p.petrelctl("newaliases").returncode, 0, "the test user builds an alias table")
    r = subprocess.run([PETRELD, "-n", "-c", p.conf], capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0 and ("%s.lmdb is owned by %s" % (aliases, p.pw.pw_name)) in r.stderr and
         "Petrel runs them as default_privs (nobody)" in r.stderr,
         "started as root, petreld warns that an alias table owned by another user runs as default_privs", r.stderr)

with Petrel(t, start=False) as p:
    settings = dict(p.settings)
    del settings["alias_maps"]
    del settings["alias_database"]
    settings["local_recipient_maps"] = "$alias_maps texthash:%s/conf/local_users" % p.dir
    p.write_main_cf(settings)
    upper = os.path.join(p.dir, "etc-upper")
    work = os.path.join(p.dir, "etc-work")
    os.mkdir(upper)
    os.mkdir(work)
    script = p.write_file("namespace.sh", """#!/bin/sh
set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir=%(upper)s,workdir=%(work)s /etc
rm -f /etc/aliases /etc/aliases.lmdb
echo "== no aliases file"
%(petreld)s -n -c %(conf)s 2>&1 && echo "rc=0" || echo "rc=$?"
printf 'postmaster: root\\nroot: box\\n' > /etc/aliases
echo "== source only"
%(petreld)s -n -c %(conf)s 2>&1 && echo "rc=0" || echo "rc=$?"
echo "== newaliases"
%(petrelctl)s -c %(conf)s newaliases 2>&1 && echo "rc=0" || echo "rc=$?"
%(petrelctl)s -c %(conf)s alias query hash:/etc/aliases root
echo "== built"
%(petreld)s -n -c %(conf)s 2>&1 && echo "rc=0" || echo "rc=$?"
""" % {"upper": upper, "work": work, "petreld": PETRELD, "petrelctl": PETRELCTL, "conf": p.conf}, 0o755)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", script], capture_output=True, text=True,
                       timeout=60)
    sections = {}
    for part in r.stdout.split("== ")[1:]:
        title, _, rest = part.partition("\n")
        sections[title] = rest
    t.ok(r.returncode == 0 and len(sections) == 4, "the private /etc was set up", r.stdout + r.stderr)
    none = sections.get("no aliases file", "")
    t.ok("rc=0" in none and "alias_maps: hash:/etc/aliases: there is no aliases file: local aliases are not used" in none,
         "default alias_maps, no /etc/aliases: a warning, and petreld starts", none)
    src = sections.get("source only", "")
    t.ok("rc=0" not in src and "hash:/etc/aliases: open database /etc/aliases.lmdb: No such file or directory; "
         "build it with `petrelctl newaliases`" in src,
         "default alias_maps, /etc/aliases without /etc/aliases.lmdb: the start is refused, naming newaliases", src)
    built = sections.get("newaliases", "")
    t.ok("rc=0" in built and "box" in built, "petrelctl newaliases builds the default alias_database", built)
    t.ok("rc=0" in sections.get("built", ""), "then petreld -n passes", sections.get("built"))
    t.ok(not os.path.exists("/etc/aliases.lmdb") or os.stat("/etc/aliases.lmdb").st_mtime < os.stat(upper).st_mtime,
         "the host's /etc was not touched")

t.done()
