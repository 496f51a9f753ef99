"""check_policy_service with the policy servers Postfix sites run, unchanged
(Debian's packages): postgrey (greylisting: the first attempt is deferred,
a retry after the delay passes with postgrey's X-Greylist: header) and
policyd-spf from postfix-policyd-spf-python (SPF fail refused with its
550 5.7.23 text, pass accepted with its Received-SPF: header), each on a
private socket. policyd-spf resolves through the system's resolver: it runs
in a private network and mount namespace whose /etc/resolv.conf points at a
dnsmasq serving the test's SPF records, under a spawn(8)-like launcher
(policy_spawn.py) as Postfix would run it; petreld reaches it through a
UNIX socket in a shared directory. The host's resolver is never touched."""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from harness import CLEANUP_DIRS, Petrel, Tap, free_port

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$"
HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"   # policyd-spf's own interpreter and modules


def attempt(p, source, sender, rcpt, helo="client.example.org"):
    """One delivery attempt; returns (RCPT reply, final reply or None)."""
    c = p.connect(source=source, timeout=30)
    c.ehlo(helo)
    c.cmd("MAIL FROM:<%s>" % sender)
    r = c.cmd("RCPT TO:<%s>" % rcpt)
    final = None
    if c.code == 250:
        c.cmd("DATA")
        c.send(b"Subject: policy peers\r\n\r\nbody\r\n.\r\n")
        final = c.read_reply()
    c.close()
    return r, final


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- postgrey ----------------------------------------------------------------------------------------
gdir = tempfile.mkdtemp(prefix="petrel-postgrey-")
CLEANUP_DIRS.append(gdir)
os.chmod(gdir, 0o755)
for name in ("db", ):
    os.mkdir(os.path.join(gdir, name))
for name in ("whitelist_clients", "whitelist_recipients"):
    open(os.path.join(gdir, name), "w").close()
pg = pwd.getpwnam("postgrey")
os.chown(os.path.join(gdir, "db"), pg.pw_uid, pg.pw_gid)
gport = free_port()
postgrey = subprocess.Popen(
    ["postgrey", "--inet=127.0.0.1:%d" % gport, "--dbdir=" + os.path.join(gdir, "db"), "--delay=3",
     "--user=postgrey", "--group=postgrey", "--auto-whitelist-clients=0", "--hostname=mx.petrel.test",
     "--whitelist-clients=" + os.path.join(gdir, "whitelist_clients"),
     "--whitelist-recipients=" + os.path.join(gdir, "whitelist_recipients")],
    stdout=subprocess.DEVNULL, stderr=open(os.path.join(gdir, "postgrey.log"), "w"), start_new_session=True)
try:
    t.ok(wait_port(gport), "postgrey listens on its private port")
    conf = {"mynetworks": "127.0.0.1/32",
            "smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service inet:127.0.0.1:%d" % gport}
    with Petrel(t, main_cf=conf) as p:
        r, _ = attempt(p, "127.0.0.2", "friend@example.org", "user@petrel.test")
        t.like(r, r"^450 4\.2\.0 <user@petrel\.test>: Recipient address rejected: Greylisted, see "
                  r"http://postgrey\.schweikert\.ch/help/petrel\.test\.html$",
               "postgrey: the first attempt is greylisted (DEFER_IF_PERMIT with postgrey's 4.2.0 text)")
        t.ok(p.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: 450 4\.2\.0 <user@petrel\.test>: "
                        r"Recipient address rejected: Greylisted"), "postgrey: Postfix's reject line")
        r, _ = attempt(p, "127.0.0.2", "friend@example.org", "user@petrel.test")
        t.like(r, r"^450 4\.2\.0 .*Greylisted", "postgrey: a retry before the delay is still greylisted")
        time.sleep(4)
        r, final = attempt(p, "127.0.0.2", "friend@example.org", "user@petrel.test")
        t.is_(r, "250 2.1.5 Ok", "postgrey: a retry after the delay passes")
        m = re.match(OK_RE, final or "")
        t.ok(m, "postgrey: and the message is queued", final)
        shown = p.petrelctl("queue", "show", m.group(1)).stdout if m else ""
        t.like(shown, r"X-Greylist: delayed \d+ seconds by postgrey-[\d.]+ at mx\.petrel\.test; .*\nReceived: from",
               "postgrey: its X-Greylist: header (PREPEND) is above our Received:")
        r, _ = attempt(p, "127.0.0.2", "friend@example.org", "user2@petrel.test")
        t.like(r, r"^450 4\.2\.0 <user2@petrel\.test>: .*Greylisted", "postgrey: another triplet is greylisted anew")
        r, _ = attempt(p, "127.0.0.2", "friend@example.org", "user@petrel.test")
        t.is_(r, "250 2.1.5 Ok", "postgrey: the passed triplet stays passed")
finally:
    stop(postgrey)

# --- policyd-spf in its own network namespace ---------------------------------------------------------
sdir = tempfile.mkdtemp(prefix="petrel-spf-")
CLEANUP_DIRS.append(sdir)
os.chmod(sdir, 0o755)
with open(os.path.join(sdir, "resolv.conf"), "w") as f:
    f.write("nameserver 127.0.0.1\n")
with open(os.path.join(sdir, "policyd-spf.conf"), "w") as f:
    # Debian's defaults, except that loopback clients are checked (the
    # test's clients are 127.0.0.2).
    f.write("debugLevel = 1\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\nPermError_reject = False\n"
            "TempError_Defer = False\nskip_addresses = 192.0.2.0/24\n")
records = ["--local=/test/", "--txt-record=pass.test,v=spf1 ip4:127.0.0.2 -all",
           "--txt-record=fail.test,v=spf1 ip4:192.0.2.1 -all", "--txt-record=soft.test,v=spf1 ip4:192.0.2.1 ~all"]
with open(os.path.join(sdir, "dnsmasq.args"), "w") as f:
    f.write("\n".join(records) + "\n")
sock_path = os.path.join(sdir, "policyd-spf.sock")
script = ("ip link set lo up && mount --bind %(d)s/resolv.conf /etc/resolv.conf && "
          "xargs -d '\\n' -a %(d)s/dnsmasq.args dnsmasq --port=53 --listen-address=127.0.0.1 --bind-interfaces "
          "--no-resolv --no-hosts --no-poll --pid-file=%(d)s/dnsmasq.pid --user=root --keep-in-foreground & "
          "exec %(py)s %(spawn)s %(sock)s policyd-spf %(d)s/policyd-spf.conf") % {
    "d": sdir, "py": SYSTEM_PYTHON, "spawn": os.path.join(HERE, "policy_spawn.py"), "sock": sock_path}
spf = subprocess.Popen(["unshare", "-m", "-n", "sh", "-c", script], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, start_new_session=True)
try:
    t.is_(spf.stdout.readline().decode().strip(), "listening", "policyd-spf is reachable on a UNIX socket")
    conf = {"mynetworks": "127.0.0.1/32",
            "smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service unix:%s" % sock_path}
    with Petrel(t, main_cf=conf) as p:
        r, _ = attempt(p, "127.0.0.2", "someone@fail.test", "user@petrel.test")
        t.is_(r, "550 5.7.23 <user@petrel.test>: Recipient address rejected: Message rejected due to: SPF fail - "
                 "not authorized. Please see http://www.openspf.net/Why?s=mfrom;id=someone@fail.test;ip=127.0.0.2;"
                 "r=petrel.test", "policyd-spf: SPF fail is refused with its 550 5.7.23 text")
        r, final = attempt(p, "127.0.0.2", "someone@pass.test", "user@petrel.test")
        t.is_(r, "250 2.1.5 Ok", "policyd-spf: SPF pass is accepted")
        m = re.match(OK_RE, final or "")
        shown = p.petrelctl("queue", "show", m.group(1)).stdout if m else ""
        t.like(shown, r"Received-SPF: Pass \(mailfrom\) identity=mailfrom; client-ip=127\.0\.0\.2; "
                      r"helo=client\.example\.org; envelope-from=someone@pass\.test; receiver=petrel\.test *\n"
                      r"Received: from", "policyd-spf: its Received-SPF: header is above our Received:")
        r, final = attempt(p, "127.0.0.2", "someone@soft.test", "user@petrel.test")
        t.is_(r, "250 2.1.5 Ok", "policyd-spf: a softfail is accepted (Debian's defaults)")
        m = re.match(OK_RE, final or "")
        shown = p.petrelctl("queue", "show", m.group(1)).stdout if m else ""
        t.like(shown, r"Received-SPF: Softfail \(mailfrom\)", "policyd-spf: with a Softfail header")
        r, _ = attempt(p, "127.0.0.2", "someone@unknown.test", "user@petrel.test")
        t.is_(r, "250 2.1.5 Ok", "policyd-spf: no SPF record: accepted")
        r, _ = attempt(p, "127.0.0.2", "someone@fail.test", "user@petrel.test")
        t.like(r, r"^550 5\.7\.23 ", "policyd-spf: still answering after several sessions")
finally:
    stop(spf)

t.done()
