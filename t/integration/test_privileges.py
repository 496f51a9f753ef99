"""Privilege separation: started as root, petreld binds its ports as root and runs its
network-facing processes as mail_owner; the queue belongs to mail_owner; root as mail_owner
and a missing user are refused with a clear message."""
import os
import pwd
import subprocess
import time

from harness import PETRELD, Petrel, Tap

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


dead = __import__("harness").free_port()
# Mail goes to a dead next hop: it stays queued, so its file can be inspected.
with RootPetrel(t, extra_services="qmgr unix n - n 300 1 qmgr\n",
                main_cf={"relay_domains": "dead.test",
                         "transport_maps": "inline:{ {dead.test = smtp:[127.0.0.1]:%d} }" % dead}) as p:
    t.is_(uid_of(p.proc.pid), 0, "the master runs as root")
    time.sleep(0.5)
    children = p.worker_pids()
    t.is_(len(children), 3, "two smtpd workers and the queue manager")
    t.ok(children and all(uid_of(pid) == owner.pw_uid for pid in children),
         "every worker and the queue manager run as mail_owner (petrel)")
    st = os.stat(os.path.join(p.queue, "incoming"))
    t.ok(st.st_uid == owner.pw_uid and (st.st_mode & 0o777) == 0o700, "queue directories belong to mail_owner, mode 0700")
    c = p.connect()
    reply = c.send_message("a@example.org", ["u@dead.test"], "Subject: as root\r\n\r\nx\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "mail is accepted by the unprivileged workers")
    qid = reply.split()[-1]
    time.sleep(0.5)
    files = [f for f in p.queue_files() if f.endswith(qid)]
    t.ok(files and os.stat(files[0]).st_uid == owner.pw_uid, "queue files are owned by mail_owner")
    c.close()

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
