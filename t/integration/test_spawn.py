#!/usr/bin/env python3
"""master.cf spawn(8) services run by petreld's master, as Postfix runs them.

The real policyd-spf (Debian's postfix-policyd-spf-python) is spawned per
connection on $queue_directory/private/policyd-spf and asked through
check_policy_service unix:private/policyd-spf, as Debian documents it. It
resolves through /etc/resolv.conf only, so its argv wraps it in
`unshare -r -m` (an unprivileged user and mount namespace: the command
still runs as the spawn user) that bind-mounts a resolv.conf naming a
dnsmasq on a loopback address, serving the test's SPF records. The host's
resolver is never touched.

Then, with small policy servers of our own (in argv, as an admin writes
them): maxproc is respected (at most that many commands at once, the
others wait), a command past NAME_time_limit is killed and the check gets
the policy's temporary failure, and an argv naming a missing program is
logged and gives the temporary failure too, not a hang."""
import grp
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from harness import CLEANUP_DIRS, PETRELD, TEST_USER, Petrel, Smtp, Tap, free_port, wait_for

t = Tap()
SYSTEM_PYTHON = "/usr/bin/python3"


def spawn_user():
    """Who the commands can run as: petreld runs as the test user when the
    suite runs as root (single-user mode), so only as that user."""
    return TEST_USER if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name


def attempt(p, sender, rcpt="user@petrel.test", helo="client.example.org"):
    c = Smtp(p.port, timeout=60)
    c.ehlo(helo)
    c.cmd("MAIL FROM:<%s>" % sender)
    r = c.cmd("RCPT TO:<%s>" % rcpt)
    c.cmd("QUIT")
    c.close()
    return r


def shared_dir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    CLEANUP_DIRS.append(d)
    os.chmod(d, 0o777)
    return d


USER = spawn_user()

# --- the real policyd-spf, spawned ------------------------------------------------------------------------
sdir = shared_dir("petrel-spawn-spf-")
# Port 53 of a loopback address of its own, named after a port reserved for this process (harness.free_port):
# no other test running alongside has the same one (a random one would, once in a while).
dns_addr = "127.53.%d.%d" % divmod(free_port(), 256)
with open(os.path.join(sdir, "resolv.conf"), "w") as f:
    f.write("nameserver %s\n" % dns_addr)
with open(os.path.join(sdir, "policyd-spf.conf"), "w") as f:
    f.write("debugLevel = 1\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\nPermError_reject = False\n"
            "TempError_Defer = False\nskip_addresses = 192.0.2.0/24\n")
for name in os.listdir(sdir):
    os.chmod(os.path.join(sdir, name), 0o644)
dnsmasq = subprocess.Popen(
    ["dnsmasq", "--port=53", "--listen-address=" + dns_addr, "--bind-interfaces", "--no-resolv", "--no-hosts",
     "--no-poll", "--pid-file=" + os.path.join(sdir, "dnsmasq.pid"), "--user=root", "--keep-in-foreground",
     "--local=/test/", "--txt-record=pass.test,v=spf1 ip4:127.0.0.1 -all",
     "--txt-record=fail.test,v=spf1 ip4:192.0.2.1 -all", "--log-facility=" + os.path.join(sdir, "dnsmasq.log")],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def dnsmasq_started():
    """dnsmasq logs "started" once its sockets are bound (as harness.Dnsmasq waits for it)."""
    try:
        with open(os.path.join(sdir, "dnsmasq.log")) as f:
            return "started" in f.read()
    except FileNotFoundError:
        return False


try:
    wait_for(lambda: dnsmasq.poll() is not None or dnsmasq_started(), timeout=15)
    t.ok(dnsmasq.poll() is None, "dnsmasq serves the SPF records on %s:53" % dns_addr)
    spf_argv = ("argv=/usr/bin/unshare -r -m /bin/sh -c { mount --bind %(d)s/resolv.conf /etc/resolv.conf && "
                "exec %(py)s /usr/bin/policyd-spf %(d)s/policyd-spf.conf }") % {"d": sdir, "py": SYSTEM_PYTHON}
    conf = {"mynetworks": "127.0.0.2/32",
            "smtpd_recipient_restrictions":
                "reject_unauth_destination, check_policy_service unix:private/policyd-spf"}
    services = "policyd-spf  unix  -  n  n  -  0  spawn user=%s %s\n" % (USER, spf_argv)
    with Petrel(t, main_cf=conf, extra_services=services) as p:
        t.ok(os.path.exists(os.path.join(p.queue, "private", "policyd-spf")),
             "the master listens on $queue_directory/private/policyd-spf")
        r = attempt(p, "someone@fail.test")
        t.is_(r, "550 5.7.23 <user@petrel.test>: Recipient address rejected: Message rejected due to: SPF fail - "
                 "not authorized. Please see http://www.openspf.net/Why?s=mfrom;id=someone@fail.test;ip=127.0.0.1;"
                 "r=petrel.test", "spawned policyd-spf: SPF fail is refused with its 550 5.7.23 text")
        t.is_(attempt(p, "someone@pass.test"), "250 2.1.5 Ok", "spawned policyd-spf: SPF pass is accepted")
        t.like(attempt(p, "someone@fail.test"), r"^550 5\.7\.23 ", "spawned policyd-spf: still answering")
        t.ok(not re.search(r"service policyd-spf: command pid \d+ (exit status|killed)", p.log()),
             "policyd-spf's commands ended cleanly (no exit status logged)", p.log()[-2000:])
finally:
    dnsmasq.terminate()
    dnsmasq.wait(timeout=10)

# --- maxproc: at most that many commands at once -----------------------------------------------------------
mdir = shared_dir("petrel-spawn-max-")
counter = os.path.join(mdir, "policy.py")
with open(counter, "w") as f:
    f.write('''import os, sys, time
d = sys.argv[1]
mine = os.path.join(d, "alive.%d" % os.getpid())
open(mine, "w").close()
alive = len([n for n in os.listdir(d) if n.startswith("alive.")])
with open(os.path.join(d, "seen.%d" % os.getpid()), "w") as f:
    f.write(str(alive))
try:
    for line in sys.stdin:
        if line.strip() == "":
            time.sleep(0.5)
            sys.stdout.write("action=DUNNO\\n\\n")
            sys.stdout.flush()
finally:
    os.unlink(mine)
''')
os.chmod(counter, 0o755)
conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service unix:private/counted",
        "smtpd_policy_service_max_idle": "1s", "smtpd_policy_service_max_ttl": "2s"}
services = "counted unix - n n - 1 spawn user=%s argv=%s %s %s\n" % (USER, SYSTEM_PYTHON, counter, mdir)
with Petrel(t, main_cf=conf, extra_services=services, workers=3) as p:
    results = []

    def one(i):
        results.append(attempt(p, "s%d@example.org" % i))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=90)
    t.is_(sorted(results), ["250 2.1.5 Ok"] * 4, "maxproc 1: every concurrent session's policy check is answered")
    seen = [int(open(os.path.join(mdir, n)).read()) for n in os.listdir(mdir) if n.startswith("seen.")]
    t.ok(len(seen) >= 2, "several commands were spawned, one after another (%d)" % len(seen))
    t.is_(max(seen or [0]), 1, "maxproc 1: never more than one command at once")

# --- NAME_time_limit kills a command; a missing program fails cleanly -------------------------------------
conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service unix:private/slow",
        "slow_time_limit": "2s", "smtpd_policy_service_try_limit": "1"}
services = ("slow unix - n n - 0 spawn user=%s argv=/bin/sleep 300\n"
            "nosuch unix - n n - 0 spawn user=%s argv=/nonexistent/policy-server --flag\n" % (USER, USER))
with Petrel(t, main_cf=conf, extra_services=services) as p:
    start = time.time()
    r = attempt(p, "someone@example.org")
    t.is_(r, "451 4.3.5 <user@petrel.test>: Recipient address rejected: Server configuration problem",
          "a command killed at slow_time_limit: the policy check's temporary failure")
    t.ok(p.wait_log(r"warning: service slow: command pid \d+ killed: time limit exceeded"),
         "the kill is logged with the service's name")
    t.ok(time.time() - start < 60, "the session did not wait for the command's own end")
    p.write_main_cf(dict(p.settings, smtpd_recipient_restrictions=
                         "reject_unauth_destination, check_policy_service unix:private/nosuch"))
    previous = set(p.worker_pids())
    t.is_(p.petrelctl("reload").returncode, 0, "reload to the missing program's service")
    # until they have exited, a worker of the old generation may take the next client
    wait_for(lambda: not set(p.worker_pids()) & previous, timeout=30)
    r = attempt(p, "someone@example.org")
    t.is_(r, "451 4.3.5 <user@petrel.test>: Recipient address rejected: Server configuration problem",
          "argv naming a missing program: the policy check's temporary failure")
    t.ok(p.wait_log(r"service nosuch: cannot execute /nonexistent/policy-server: No such file or directory"),
         "the failed exec is logged")
    t.ok(p.wait_log(r"warning: service nosuch: command pid \d+ exit status 127"), "and its exit status")
    t.is_(attempt(p, "again@example.org")[:3], "451", "the server keeps serving")

# --- started as root: user= and user:group, public/, an inet spawn line, mail_owner refused ----------------
class RootPetrel(Petrel):
    """petreld started as root itself (no setpriv), as in production."""

    def command(self, *args, user=True):
        return list(args)


WHO = r'''import os, sys
with open(os.path.join(sys.argv[1], "%s.%d" % (sys.argv[2], os.getpid())), "w") as f:
    f.write("%d %d %s" % (os.getuid(), os.getgid(), ",".join(map(str, sorted(os.getgroups())))))
for line in sys.stdin:
    if line.strip() == "":
        sys.stdout.write("action=DUNNO\n\n")
        sys.stdout.flush()
'''

if os.geteuid() == 0:
    wdir = shared_dir("petrel-spawn-root-")
    who = os.path.join(wdir, "who.py")
    with open(who, "w") as f:
        f.write(WHO)
    os.chmod(who, 0o755)
    iport = free_port()
    run = "%s %s %s" % (SYSTEM_PYTHON, who, wdir)
    services = ("priv unix - n n - 0 spawn user=nobody argv=%s priv\n"
                "pub unix n n n - 0 spawn user=nobody:daemon argv=%s pub\n"
                "127.0.0.1:%d inet n n n - 2 spawn user=nobody argv=%s inet\n" % (run, run, iport, run))
    conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service unix:private/priv, "
            "check_policy_service unix:public/pub, check_policy_service inet:127.0.0.1:%d" % iport}
    with RootPetrel(t, main_cf=conf, extra_services=services) as p:
        t.is_(attempt(p, "a@example.org"), "250 2.1.5 Ok", "as root: three spawn services answer")
        nobody = pwd.getpwnam("nobody")
        daemon_gid = grp.getgrnam("daemon").gr_gid
        got = {}
        for n in os.listdir(wdir):
            if "." in n and not n.endswith(".py"):
                got[n.split(".")[0]] = open(os.path.join(wdir, n)).read()
        t.is_(got.get("priv"), "%d %d %d" % (nobody.pw_uid, nobody.pw_gid, nobody.pw_gid),
              "user=nobody: the command runs as nobody, with nobody's groups only")
        t.is_(got.get("pub", "").split(" ")[:2], [str(nobody.pw_uid), str(daemon_gid)],
              "user=nobody:daemon: with group daemon")
        t.is_(got.get("inet", "").split(" ")[0], str(nobody.pw_uid), "an inet host:port spawn line works too")
        t.ok(os.path.exists(os.path.join(p.queue, "public", "pub")), "a public service listens in public/")
    with RootPetrel(t, start=False, extra_services="mo unix - n n - 0 spawn user=petrel argv=/bin/true\n") as p:
        p.start(wait=False)
        t.ok(p.wait_log(r"service mo: user=petrel is mail_owner: refusing to run a command with the mail system's "
                        r"privileges"), "user= naming mail_owner is refused at start")
        t.ok(p.proc.wait(timeout=30) != 0, "and petreld does not start")

# --- load-time checks ----------------------------------------------------------------------------------------
for line, why in (("bad unix - n n - 0 spawn argv=/bin/true", r"user= is required"),
                  ("bad unix - n n - 0 spawn user=root argv=/bin/true", r"user=root: refusing to run a command with root privileges"),
                  ("bad unix - n n - 0 spawn user=%s" % USER, r"argv= is required")):
    p = Petrel(t, extra_services=line + "\n", start=False)
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
    t.ok(r.returncode != 0 and re.search(r"service bad \(command spawn\): " + why, r.stderr),
         "petreld -n refuses: %s" % why.replace("\\", ""), r.stderr[-1500:])

t.done()
