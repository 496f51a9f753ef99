"""Local submission with privilege separation (issue 8, finding 20), as root:

- `make install` (as root, into a scratch prefix) creates the setgid group and installs
  petrel-postdrop set-group-ID to it;
- the installed petreld, started as root, makes maildrop/ mail_owner:group mode 1730;
- a plain local user submits with the installed petrel-sendmail (exit 0, delivered), and the
  message carries that user's uid; a second user can neither list, read, remove nor rename the
  first user's waiting file (nor can its own owner, once submitted);
- the set-group-ID helper refuses a configuration directory that the default main.cf does not
  list in alternate_config_directories.

The installed helper reads the compiled-in configuration directory. Not to touch the real one,
each submission runs in a private mount namespace (unshare) where the test's configuration is
bound over it; setgid still works there. Where mount namespaces are not allowed (a container
without CAP_SYS_ADMIN), the test writes that directory itself if, and only if, it does not exist,
and removes it at the end."""
import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time

from harness import TOP_BUILDDIR, Tap, free_port, maildir_messages as maildir, wait_for

t = Tap(timeout=int(os.environ.get("PETREL_TEST_TIMEOUT", "600")))
if os.geteuid() != 0:
    t.ok(False, "privilege-separation tests must run as root (CI and scripts/test.sh do)")
    t.done()

GROUP = "petrtestdrop"
USERS = ["petrtesta", "petrtestb"]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


for u in USERS:
    if run(["getent", "passwd", u]).returncode != 0:
        run(["useradd", "--system", "--user-group", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", u])
if run(["getent", "group", GROUP]).returncode == 0:
    run(["groupdel", GROUP])   # a leftover: the install below must create it
ua, ub = pwd.getpwnam(USERS[0]), pwd.getpwnam(USERS[1])


def suid_capable_tmp():
    for base in (tempfile.gettempdir(), "/var/tmp"):
        if not os.statvfs(base).f_flag & os.ST_NOSUID:
            return base
    return None


base = suid_capable_tmp()
if base is None:
    t.ok(False, "no temporary directory without nosuid for the scratch install")
    t.done()
work = tempfile.mkdtemp(prefix="petrel-rootinst-", dir=base)
os.chmod(work, 0o755)
prefix = os.path.join(work, "prefix")
proc = None
created = []   # directories made outside work/ (the no-namespace fallback), removed at the end


def finish():
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
    if not os.environ.get("PETREL_KEEP_TEST_DIRS"):
        shutil.rmtree(work, ignore_errors=True)
    for d in reversed(created):
        shutil.rmtree(d, ignore_errors=True)
    run(["groupdel", GROUP])
    t.done()


r = run(["make", "-C", TOP_BUILDDIR, "install", "prefix=" + prefix, "SETGID_GROUP=" + GROUP])
if not t.ok(r.returncode == 0, "make install (as root, prefix=%s) succeeds" % prefix, r.stdout[-2000:] + r.stderr[-2000:]):
    finish()
t.ok(run(["getent", "group", GROUP]).returncode == 0, "make install creates the setgid group (%s)" % GROUP)
helper = os.path.join(prefix, "sbin", "petrel-postdrop")
st = os.stat(helper)
t.is_((oct(st.st_mode & 0o7777), st.st_uid, grp.getgrgid(st.st_gid).gr_name), (oct(0o2755), 0, GROUP),
      "petrel-postdrop is installed root:%s mode 2755 (set-group-ID)" % GROUP)

usage = run([helper, "-x"]).stderr
m = re.search(r"\(default (\S+)\)", usage)
if not t.ok(m is not None, "petrel-postdrop names its default configuration directory", usage):
    finish()
default_conf = m.group(1)

# The configuration: bound over default_conf in each private mount namespace.
shadow = os.path.join(work, "shadow")                  # mounted over dirname(default_conf)
conf = os.path.join(shadow, os.path.basename(default_conf))
os.makedirs(conf)
for d in (work, shadow, conf):
    os.chmod(d, 0o755)
queue = os.path.join(work, "queue")
mail = os.path.join(work, "mail")
os.mkdir(mail)
owner = pwd.getpwnam("petrel")
os.chown(mail, owner.pw_uid, owner.pw_gid)
port = free_port()
alternate = os.path.join(work, "alternate")
os.mkdir(alternate)
main_cf = {
    "queue_directory": queue, "command_directory": os.path.join(prefix, "sbin"),
    "setgid_group": GROUP, "myhostname": "mx.petrel.test", "mydomain": "petrel.test",
    "mydestination": "localhost", "mynetworks": "127.0.0.0/8", "inet_interfaces": "127.0.0.1",
    "smtpd_workers": "1", "myorigin": "vmail.test", "virtual_mailbox_domains": "vmail.test",
    "virtual_mailbox_base": mail, "virtual_mailbox_maps": "inline:{ {x@vmail.test = x/} }",
    "virtual_uid_maps": "static:%d" % owner.pw_uid, "virtual_gid_maps": "static:%d" % owner.pw_gid,
    "alternate_config_directories": alternate,
    # not the host's /etc/aliases (the default alias_maps), which may exist unbuilt
    "alias_maps": "", "alias_database": "",
}


def write_conf(directory, settings):
    with open(os.path.join(directory, "main.cf"), "w") as f:
        for k, v in settings.items():
            f.write("%s = %s\n" % (k, v))
    with open(os.path.join(directory, "master.cf"), "w") as f:
        f.write("127.0.0.1:%d inet n - n - - smtpd\npickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n"
                % port)


write_conf(conf, main_cf)
write_conf(alternate, main_cf)
use_namespace = (not os.environ.get("PETREL_TEST_NO_NAMESPACE") and
                 run(["unshare", "--mount", "--propagation", "private", "true"]).returncode == 0)
if not use_namespace:
    if os.path.exists(default_conf):
        t.ok(False, "mount namespaces are not allowed here and %s exists: cannot test the installed helper "
                    "without touching a real configuration" % default_conf)
        finish()
    top = default_conf
    while not os.path.exists(os.path.dirname(top)):
        top = os.path.dirname(top)
    os.makedirs(default_conf)
    created.append(top)
    write_conf(default_conf, main_cf)
    t.diag("no mount namespaces: using a temporary %s" % default_conf)


def as_user(user, args, text, namespace=True):
    """Runs args as user (no supplementary groups), optionally with conf bound over the default."""
    drop = ["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid, "--clear-groups"]
    if not namespace or not use_namespace:
        return subprocess.run(drop + args, input=text.encode(), capture_output=True, timeout=60)
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", shadow,
                           os.path.dirname(default_conf)] + drop + args, input=text.encode(), capture_output=True,
                          timeout=60)


sendmail = os.path.join(prefix, "sbin", "petrel-sendmail")
petreld = os.path.join(prefix, "sbin", "petreld")
log = open(os.path.join(work, "petreld.log"), "ab")


def start():
    global proc
    proc = subprocess.Popen([petreld, "-c", conf], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(os.path.join(queue, "private", "control")):
        time.sleep(0.1)


def stop():
    proc.terminate()
    proc.wait(timeout=45)


def logtext():
    with open(os.path.join(work, "petreld.log"), "rb") as f:
        return f.read().decode("utf-8", "replace")


try:
    start()
    drop = os.path.join(queue, "maildrop")
    st = os.stat(drop)
    t.is_((oct(st.st_mode & 0o7777), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name),
          (oct(0o1730), "petrel", GROUP), "maildrop/ is petrel:%s mode 1730" % GROUP)

    r = as_user(ua, [sendmail, "-f", "a@vmail.test", "x@vmail.test"], "Subject: from a plain user\n\nhello\n")
    t.is_(r.returncode, 0, "a plain user (%s) submits with the installed petrel-sendmail" % USERS[0]) or t.diag(r.stderr)
    box = os.path.join(mail, "x")
    got = wait_for(lambda: maildir(box), timeout=30)
    t.ok(got and b"Subject: from a plain user" in got[0], "and the message is delivered")
    t.ok(got and (b"(Petrel, from userid %d)" % ua.pw_uid) in got[0], "with the user's uid in the Received: header")
    t.ok(re.search(r"pickup\[\d+\]: \w+: uid=%d from=<a@vmail\.test>" % ua.pw_uid, logtext()) is not None,
         "and in the pickup's log line")

    # While petreld is down, a's file waits in maildrop/: b (and a) must not get at it.
    stop()
    r = as_user(ua, [sendmail, "-f", "a@vmail.test", "x@vmail.test"], "Subject: waiting\n\nsecret text\n")
    t.is_(r.returncode, 0, "with petreld stopped, the user's submission still succeeds")
    names = os.listdir(drop)
    t.is_(len(names), 1, "one file waits in maildrop/")
    name = names[0] if names else "none"
    path = os.path.join(drop, name)
    fst = os.stat(path)
    t.is_((fst.st_uid, grp.getgrgid(fst.st_gid).gr_name, oct(fst.st_mode & 0o7777)), (ua.pw_uid, GROUP, oct(0o744)),
          "it belongs to the submitting user, group %s, mode 0744 (complete)" % GROUP)
    probe = ("import os, sys\n"
             "d, p = sys.argv[1], sys.argv[2]\n"
             "for what, f in (('list', lambda: os.listdir(d)), ('read', lambda: open(p, 'rb').read()),\n"
             "                ('write', lambda: open(p, 'ab')), ('remove', lambda: os.unlink(p)),\n"
             "                ('rename', lambda: os.rename(p, p + 'x')), ('create', lambda: open(d + '/X', 'w'))):\n"
             "    try:\n"
             "        f()\n"
             "        print(what, 'ALLOWED')\n"
             "    except PermissionError:\n"
             "        print(what, 'denied')\n")
    for user, who in ((ub, "another user"), (ua, "even its owner")):
        r = as_user(user, ["python3", "-c", probe, drop, path], "", namespace=False)
        t.is_(r.stdout.decode().split("\n")[:6], ["list denied", "read denied", "write denied", "remove denied", "rename denied",
                                         "create denied"],
              "%s cannot list maildrop/, read, write, remove or rename the file, or create one directly" % who)
    r = as_user(ub, [sendmail, "-f", "b@vmail.test", "x@vmail.test"], "Subject: from b\n\nx\n")
    t.is_(r.returncode, 0, "the other user submits too")
    t.is_(len(os.listdir(drop)), 2, "into a file of its own")
    t.ok(open(path, "rb").read().find(b"secret text") > 0 and os.stat(path).st_uid == ua.pw_uid,
         "the first user's file is unchanged")

    # The set-group-ID helper and other configuration directories.
    os.makedirs(conf + "-elsewhere", exist_ok=True)
    write_conf(conf + "-elsewhere", main_cf)
    r = as_user(ua, [sendmail, "-C", conf + "-elsewhere", "x@vmail.test"], "Subject: c\n\nx\n")
    t.is_(r.returncode, 77, "a configuration directory not in alternate_config_directories: exit 77 (EX_NOPERM)")
    t.like(r.stderr.decode(), r"petrel-postdrop: configuration directory \S+ is not allowed: list it in "
                              r"alternate_config_directories", "with the reason")
    r = as_user(ua, [sendmail, "-C", alternate, "-f", "a@vmail.test", "x@vmail.test"], "Subject: alternate\n\nx\n")
    t.is_(r.returncode, 0, "a directory listed in alternate_config_directories is accepted")

    start()
    t.ok(wait_for(lambda: os.listdir(drop) == [], timeout=30), "when petreld starts, every waiting file is picked up")
    got = wait_for(lambda: len(maildir(box)) >= 4 and maildir(box), timeout=30)
    t.is_(len(got or []), 4, "and delivered")
    froms = sorted(int(x) for x in re.findall(rb"\(Petrel, from userid (\d+)\)", b"".join(got or [])))
    t.is_(froms, sorted([ua.pw_uid, ua.pw_uid, ua.pw_uid, ub.pw_uid]), "each with its own submitter's uid")
    t.ok(re.search(r"(panic|fatal)", logtext()) is None, "no fatal error in the log")
except Exception as e:   # report it, and still stop petreld and clean up
    import traceback
    t.ok(False, "the test script failed: %s" % e, traceback.format_exc())
finish()
