"""The installed Petrel with its own sample configuration delivers mail
(issue 8, findings 22 and 23).

  1. `make install DESTDIR=STAGE` installs the sample main.cf and master.cf
     and creates module_directory (0755: the module loader refuses a
     directory writable by group or others).
  2. The samples are used as installed, with only what a test must change:
     the paths (queue, mail spool, the staged program and module
     directories) and the smtp service's listen address (a test cannot
     bind port 25). `petreld -n` accepts them without warnings.
  3. The staged petreld receives a message for a local user and delivers it
     into that user's mailbox: the sample master.cf has the queue manager.
  4. A master.cf without the qmgr line gets a loud warning from
     `petreld -n` (mail would be queued and never delivered).
"""
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile

from harness import TOP_BUILDDIR, Smtp, Tap, free_port, run_as_user, wait_for

t = Tap(timeout=int(os.environ.get("PETREL_TEST_TIMEOUT", "600")))
work = tempfile.mkdtemp(prefix="petrel-install-")
os.chmod(work, 0o755)
prefix, pw = run_as_user()
user = pw.pw_name if pw else pwd.getpwuid(os.getuid()).pw_name


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def finish():
    if not os.environ.get("PETREL_KEEP_TEST_DIRS"):
        shutil.rmtree(work, ignore_errors=True)
    t.done()


def owned(path):
    if pw:
        os.chown(path, pw.pw_uid, pw.pw_gid)


# --- 1. make install into a staging tree ------------------------------------
stage = os.path.join(work, "stage")
r = run(["make", "-C", TOP_BUILDDIR, "install", "DESTDIR=" + stage])
if not t.ok(r.returncode == 0, "make install DESTDIR=stage succeeds", r.stdout[-2000:] + r.stderr[-2000:]):
    finish()


def staged(pattern):
    for root, dirs, files in os.walk(stage):
        for name in dirs + files:
            path = os.path.join(root, name)
            if re.search(pattern, path[len(stage):]):
                return path
    return None


petreld = staged(r"/sbin/petreld$")
main_cf = staged(r"/petrel/main\.cf$")
master_cf = staged(r"/petrel/master\.cf$")
moddir = staged(r"/lib/petrel/modules$")
t.ok(petreld and main_cf and master_cf, "petreld, main.cf and master.cf are installed", (petreld, main_cf, master_cf))
t.ok(moddir and os.path.isdir(moddir), "module_directory (PREFIX/lib/petrel/modules) is created")
if moddir:
    t.is_(stat.S_IMODE(os.stat(moddir).st_mode), 0o755, "module_directory is 0755")
if not (petreld and main_cf and master_cf and moddir):
    finish()
main_text = open(main_cf).read()
master_text = open(master_cf).read()
t.like(main_text, r"(?m)^module_directory = %s$" % re.escape(moddir[len(stage):]),
       "the sample main.cf names this build's module_directory")
t.like(master_text, r"(?m)^qmgr\s+unix\s+n\s+-\s+n\s+300\s+1\s+qmgr$", "the sample master.cf has the queue manager")

# --- 2. the samples, paths adjusted only -----------------------------------
root = os.path.join(work, "run")
conf = os.path.join(root, "conf")
queue = os.path.join(root, "queue")
spool = os.path.join(root, "spool")
for d in (root, conf, spool):
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    owned(d)
port = free_port()
sbindir = os.path.dirname(petreld)


def setting(text, name, value):
    new, n = re.subn(r"(?m)^%s = .*$" % name, "%s = %s" % (name, value), text)
    if n == 0:
        new = text + "%s = %s\n" % (name, value)
    return new


main_text = setting(main_text, "queue_directory", queue)
main_text = setting(main_text, "command_directory", sbindir)
main_text = setting(main_text, "daemon_directory", sbindir)
main_text = setting(main_text, "module_directory", moddir)
main_text = setting(main_text, "mail_spool_directory", spool)
# The default alias_maps and alias_database, hash:/etc/aliases, moved here.
aliases = os.path.join(root, "aliases")
with open(aliases, "w") as f:
    f.write("# aliases(5)\npostmaster: %s\n" % user)
owned(aliases)
main_text = setting(main_text, "alias_maps", "hash:" + aliases)
main_text = setting(main_text, "alias_database", "hash:" + aliases)
master_text, n = re.subn(r"(?m)^smtp(\s+inet\s)", r"127.0.0.1:%d\1" % port, master_text)
t.is_(n, 1, "the smtp service's listen address is the only master.cf change")
with open(os.path.join(conf, "main.cf"), "w") as f:
    f.write(main_text)
with open(os.path.join(conf, "master.cf"), "w") as f:
    f.write(master_text)
for name in ("main.cf", "master.cf"):
    owned(os.path.join(conf, name))

petrelctl = os.path.join(sbindir, "petrelctl")
r = run(prefix + [petreld, "-c", conf, "-n"])
t.ok(r.returncode != 0 and "build it with `petrelctl newaliases`" in r.stderr,
     "before newaliases, petreld -n says the alias database must be built", r.stderr)
r = run(prefix + [petrelctl, "-c", conf, "newaliases"])
t.ok(r.returncode == 0 and os.path.exists(aliases + ".lmdb"), "the installed petrelctl newaliases builds it", r.stderr)
r = run(prefix + [petreld, "-c", conf, "-n"])
t.ok(r.returncode == 0, "petreld -n accepts the installed sample configuration", r.stderr)
t.ok("warning" not in r.stderr and "error" not in r.stderr, "without a warning", r.stderr)

# --- 3. it delivers ----------------------------------------------------------
log_path = os.path.join(root, "petreld.log")
logf = open(log_path, "wb")
proc = subprocess.Popen(prefix + [petreld, "-c", conf], stdout=logf, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL)


def log():
    return open(log_path, "rb").read().decode("utf-8", "replace")


try:
    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return proc.poll() is not None
    wait_for(listening, timeout=30)   # at once on a quiet machine
    t.ok(proc.poll() is None, "the staged petreld runs with the sample configuration", log())
    c = Smtp(port)
    reply = c.send_message("sender@example.org", ["%s@localhost" % user],
                           "Subject: installed sample\r\n\r\ndelivered by the installed sample configuration\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "a message for %s@localhost is accepted" % user)
    c.cmd("QUIT")
    c.close()
    mbox = os.path.join(spool, user)
    delivered = wait_for(lambda: os.path.exists(mbox) and b"delivered by the installed sample" in open(mbox, "rb").read(),
                         timeout=30)
    t.ok(delivered, "and delivered into %s's mailbox (the queue manager runs)" % user, log())
    t.ok(wait_for(lambda: "status=sent" in log(), timeout=30), "the log has Postfix's delivery line", log())
finally:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    logf.close()

# --- 4. no queue manager: a loud warning -------------------------------------
noqmgr = os.path.join(work, "noqmgr")
os.mkdir(noqmgr)
os.chmod(noqmgr, 0o755)
shutil.copy(os.path.join(conf, "main.cf"), noqmgr)
with open(os.path.join(noqmgr, "master.cf"), "w") as f:
    f.write(re.sub(r"(?m)^qmgr\s.*\n", "", master_text))
for name in ("", "main.cf", "master.cf"):
    owned(os.path.join(noqmgr, name))
r = run(prefix + [petreld, "-c", noqmgr, "-n"])
t.like(r.stderr, r"warning: .*/master\.cf: no qmgr service: mail will be received and queued but NEVER delivered",
       "petreld -n warns loudly when master.cf has no qmgr service")
t.like(r.stderr, r"qmgr\s+unix\s+n\s+-\s+n\s+300\s+1\s+qmgr", "and says which line to add")

finish()
