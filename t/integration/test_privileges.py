"""Privilege separation: started as root, petreld binds its ports as root and runs its
network-facing processes as mail_owner; the queue belongs to mail_owner; root as mail_owner
and a missing user are refused with a clear message."""
import os
import pwd
import subprocess
import time

from harness import PETRELD, Petrel, Tap, wait_for
from metricslib import parse_metrics

t = Tap()
if os.geteuid() != 0:
    t.ok(False, "privilege-separation tests must run as root (CI and scripts/test.sh do)")
    t.done()

owner = pwd.getpwnam("petrel")


class RootPetrel(Petrel):
    """petreld started as root itself (no setpriv)."""

    def command(self, *args, user=True):
        return list(args)


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


dead = __import__("harness").refused_port()   # no other test can bind it and take the mail
# Mail goes to a dead next hop: it stays queued, so its file can be inspected.
with RootPetrel(t, extra_services="qmgr unix n - n 300 1 qmgr\n",
                main_cf={"relay_domains": "dead.test",
                         "transport_maps": "inline:{ {dead.test = smtp:[127.0.0.1]:%d} }" % dead}) as p:
    t.is_(uid_of(p.proc.pid), 0, "the master runs as root")
    children = p.worker_pids(at_least=3)
    t.is_(len(children), 3, "two smtpd workers and the queue manager")
    t.ok(children and all(uid_of(pid) == owner.pw_uid for pid in children),
         "every worker and the queue manager run as mail_owner (petrel)")
    st = os.stat(os.path.join(p.queue, "incoming"))
    t.ok(st.st_uid == owner.pw_uid and (st.st_mode & 0o777) == 0o700, "queue directories belong to mail_owner, mode 0700")
    c = p.connect()
    reply = c.send_message("a@example.org", ["u@dead.test"], "Subject: as root\r\n\r\nx\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "mail is accepted by the unprivileged workers")
    qid = reply.split()[-1]
    # (in deferred/ once the dead next hop was tried: not between two directories)
    files = wait_for(lambda: [f for f in p.queue_files("deferred") if f.endswith(qid)], timeout=30)
    t.ok(files and os.stat(files[0]).st_uid == owner.pw_uid, "queue files are owned by mail_owner")
    c.close()

# Mailboxes are written as their owners (the privileged mailbox helper).
BOXUSER = "petrelbox"
if subprocess.run(["getent", "passwd", BOXUSER], capture_output=True).returncode != 0:
    subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", BOXUSER], check=True)
box = pwd.getpwnam(BOXUSER)
with RootPetrel(t, extra_services="qmgr unix n - n 300 1 qmgr\n", start=False) as p:
    # An alias's command and file run as default_privs (nobody), never as
    # root or mail_owner, and nothing of the envelope is pasted into them.
    aliasout = os.path.join(p.dir, "aliasout")
    os.mkdir(aliasout)
    os.chmod(aliasout, 0o777)
    aliascmd = p.write_file("alias.sh", "#!/bin/sh\nprintf '%%s' \"$SENDER\" > %s/sender\nid -u > %s/uid.new && mv %s/uid.new %s/uid\n"
                            % ((aliasout,) * 4), 0o755)
    piped = os.path.join(p.dir, "piped")
    os.mkdir(piped)
    os.chown(piped, box.pw_uid, box.pw_gid)
    script = p.write_file("pipe.sh", "#!/bin/sh\ncat > %s/out\n" % piped, 0o755)
    with open(os.path.join(p.conf, "master.cf"), "a") as f:
        f.write("boxpipe unix - n n - - pipe flags=R user=%s argv=%s\n" % (BOXUSER, script))
    home = os.path.join(p.dir, "home-" + BOXUSER)
    os.mkdir(home)
    os.chown(home, box.pw_uid, box.pw_gid)
    vbase = os.path.join(p.dir, "vmail")
    os.mkdir(vbase)
    os.chown(vbase, box.pw_uid, box.pw_gid)
    subprocess.run(["usermod", "--home", home, BOXUSER], check=True)
    conf = dict(p.settings)
    conf.update({"home_mailbox": "Maildir/", "mydestination": "petrel.test, $myhostname, localhost",
                 "virtual_mailbox_domains": "vbox.test", "virtual_mailbox_base": vbase,
                 "virtual_mailbox_maps": "inline:{ {v@vbox.test = vbox.test/v/} }",
                 "virtual_uid_maps": "static:%d" % box.pw_uid, "virtual_gid_maps": "static:%d" % box.pw_gid,
                 "alias_maps": "inline:{ {root = %s}, {runner = \"|%s\"}, {archive = %s/archive} }"
                               % (BOXUSER, aliascmd, aliasout),
                 "transport_maps": "inline:{ {piped.test = boxpipe:} }", "relay_domains": "piped.test"})
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    c.send_message("a@example.org", [BOXUSER + "@petrel.test"], "Subject: local\r\n\r\nx\r\n")
    c.send_message("a@example.org", ["v@vbox.test"], "Subject: virtual\r\n\r\nx\r\n", ehlo=False)
    c.send_message("a@example.org", ["root@petrel.test"], "Subject: to root\r\n\r\nx\r\n", ehlo=False)
    c.send_message("a@example.org", ["x@piped.test"], "Subject: piped\r\n\r\nx\r\n", ehlo=False)
    c.send_message('"$(id>%s/pwned)"@example.org' % aliasout, ["runner@petrel.test", "archive@petrel.test"],
                   "Subject: alias\r\n\r\nx\r\n", ehlo=False)
    c.close()

    def files_in(d):
        return [os.path.join(d, f) for f in os.listdir(d)] if os.path.isdir(d) else []
    deadline = time.time() + 60
    while time.time() < deadline and (len(files_in(os.path.join(home, "Maildir", "new"))) < 2 or
                                      not files_in(os.path.join(vbase, "vbox.test", "v", "new"))):
        time.sleep(0.1)
    local = files_in(os.path.join(home, "Maildir", "new"))
    virt = files_in(os.path.join(vbase, "vbox.test", "v", "new"))
    t.is_(len(local), 2, "a local user's mail (and root's, through an alias) lands in ~/Maildir")
    t.ok(local and all(os.stat(f).st_uid == box.pw_uid for f in local), "written as the local user, not mail_owner")
    t.ok(virt and os.stat(virt[0]).st_uid == box.pw_uid, "a virtual mailbox is written as virtual_uid_maps says")
    t.ok(p.wait_log(r"status=sent \(delivered to maildir\)") is not None, "logged as sent")
    out = os.path.join(piped, "out")
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(out):
        time.sleep(0.1)
    t.ok(os.path.exists(out) and os.stat(out).st_uid == box.pw_uid, "a pipe transport's command runs as its user=")
    nobody = pwd.getpwnam("nobody")
    uidfile, archive = os.path.join(aliasout, "uid"), os.path.join(aliasout, "archive")
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(uidfile) and os.path.exists(archive)):
        time.sleep(0.1)
    t.is_(open(uidfile).read().strip() if os.path.exists(uidfile) else None, str(nobody.pw_uid),
          "an alias's |command runs as default_privs (nobody)")
    t.ok(os.path.exists(archive) and os.stat(archive).st_uid == nobody.pw_uid,
         "an alias's /file is written as default_privs")
    # The mailbox helper's results carry the time its fsyncs took.
    def fsyncs():
        m = parse_metrics(p.petrelctl("metrics").stdout)
        return tuple(m.get('petrel_mailbox_fsync_duration_seconds_count{transport="%s",format="%s"}' % k)
                     for k in (("local", "maildir"), ("virtual", "maildir"), ("local", "mbox")))
    wait_for(lambda: fsyncs() == (2, 1, 1), timeout=60)
    t.is_(fsyncs(), (2, 1, 1), "the mailbox helper's deliveries are in the fsync histogram: two local Maildirs, "
          "one virtual, one alias /file")
    t.ok(not os.path.exists(os.path.join(aliasout, "pwned")), "the sender's shell text did not run")
    sender = os.path.join(aliasout, "sender")
    t.is_(open(sender).read() if os.path.exists(sender) else None, "___id_%s/pwned__@example.org" % aliasout,
          "it reached the command only as censored $SENDER")

with RootPetrel(t, start=False, main_cf={"mail_owner": "root"}) as p:
    r = subprocess.run([PETRELD, "-c", p.conf], capture_output=True, text=True, timeout=20)
    t.ok(r.returncode != 0, "mail_owner = root is refused")
    t.like(r.stderr, r"mail_owner: user \"root\" has privileged user ID 0", "with a clear message")

with RootPetrel(t, start=False, main_cf={"mail_owner": "no-such-user-here"}) as p:
    r = subprocess.run([PETRELD, "-c", p.conf], capture_output=True, text=True, timeout=20)
    t.ok(r.returncode != 0, "a missing mail_owner is refused")
    t.like(r.stderr, r"mail_owner: user \"no-such-user-here\" does not exist \(create it: useradd",
           "and the message says how to create it")
t.done()
