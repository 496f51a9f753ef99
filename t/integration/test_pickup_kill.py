"""The pickup role killed between queueing a maildrop file and removing it (rule 3: nothing is
delivered twice). The pickup removes the maildrop file only after the queue file is committed; a
SIGKILL in between (the master's stop timeout, the OOM killer) used to leave both, and the next
pickup role queued the message a second time.

strace holds the pickup role inside exactly that window: in the unlinkat(2) of the maildrop file,
after the message's "250 queued as". The queue manager is SIGSTOPped meanwhile, so the queue file
is still in incoming/ and the duplicate, if any, would come from maildrop/ and nowhere else.

1. The pickup role is SIGKILLed there; the master starts a new one, which must notice that the
   file was queued already (its queue file names it: doc/queue-format.md, Maildrop origin).
2. petreld is stopped there; the master kills the held pickup role after its stop timeout; at the
   next start the recovery scan must notice it.
Each message must be delivered exactly once; a later message shows the new pickup role has run."""
import os
import re
import signal
import subprocess

from harness import Petrel, Tap, _runnable_copy, TOP_BUILDDIR, holds_listener, maildir_messages as maildir, wait_for

t = Tap()
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
SERVICES = "pickup unix n - n 1 1 pickup\nqmgr unix n - n 300 1 qmgr\n"

with Petrel(t, extra_services=SERVICES, start=False) as p:
    mail = p.virtual_mailboxes({"a@vmail.test": "a/"},
                               {"myorigin": "vmail.test", "command_directory": os.path.dirname(POSTDROP)})
    p.start()
    drop = os.path.join(p.queue, "maildrop")
    box = os.path.join(mail, "a")

    def sendmail(subject, wait=True):
        r = subprocess.run(p.command(SENDMAIL, "-C", p.conf, "-f", "s@vmail.test", "a@vmail.test"),
                           input=("Subject: %s\n\nbody of %s\n" % (subject, subject)).encode(),
                           capture_output=True, timeout=60)
        t.is_(r.returncode, 0, "petrel-sendmail %s exits 0" % subject)
        return r

    def copies(subject):
        return sum(1 for m in maildir(box) if ("Subject: %s\n" % subject).encode() in m.replace(b"\r\n", b"\n"))

    def role_pid(role, after=0):
        """The PID of the newest process of the role that logged after offset `after`."""
        found = re.findall(r"%s\[(\d+)\]" % role, p.log()[after:])
        return int(found[-1]) if found else None

    def hold_pickup(subject):
        """Sends a message and returns (strace, maildrop name) with the pickup role held in the
        unlinkat of the maildrop file, its message queued (in incoming/, the qmgr stopped)."""
        pickup = role_pid("pickup")
        trace = os.path.join(p.dir, "strace-%s.out" % subject)
        st = subprocess.Popen(["strace", "-f", "-p", str(pickup), "-o", trace, "-e", "trace=unlinkat", "-e",
                               "inject=unlinkat:delay_enter=60000000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Every thread of the role is traced (TracerPid) before the message is sent.
        def traced():
            tasks = os.listdir("/proc/%d/task" % pickup)
            for task in tasks:
                with open("/proc/%d/task/%s/status" % (pickup, task)) as f:
                    tracer = [ln.split()[1] for ln in f if ln.startswith("TracerPid:")]
                if tracer != [str(st.pid)]:
                    return False
            return bool(tasks)
        attached = wait_for(lambda: st.poll() is None and traced(), timeout=30)
        sendmail(subject)
        held = wait_for(lambda: re.search(r'unlinkat\(\d+, "(\w+)"', open(trace).read()), timeout=30)
        t.ok(attached and held, "%s: strace holds the pickup role in the unlinkat of its maildrop file" % subject,
             open(trace).read()[-2000:] if os.path.exists(trace) else "no trace")
        name = held.group(1) if held else None
        t.ok(name and os.path.exists(os.path.join(drop, name)), "%s: the maildrop file is still there" % subject)
        t.ok(len(p.queue_files("incoming")) == 1, "%s: and its queue file is committed in incoming/" % subject)
        return st, pickup, name

    def dead(pid):
        """Killed: gone, a zombie, or with SIGKILL pending. A tracee that strace holds in a
        delayed syscall entry keeps its 't' state until strace lets go, and then dies without
        making the call."""
        try:
            with open("/proc/%d/status" % pid) as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except FileNotFoundError:
            return True
        sigkill = 1 << (signal.SIGKILL - 1)
        return (status.get("State", "").split() or ["?"])[0] in ("Z", "X") or any(
            int(status.get(k, "0").strip(), 16) & sigkill for k in ("SigPnd", "ShdPnd"))

    def gone(pid, st):
        """Waits for the pickup role to be killed, then ends its strace, which would sit out its
        delay before letting it die."""
        t.ok(wait_for(lambda: dead(pid), timeout=30), "the held pickup role is dead")
        st.kill()
        st.wait(timeout=30)

    # Warm-up: the roles have logged, so their PIDs are known.
    sendmail("first")
    t.ok(wait_for(lambda: copies("first") == 1, timeout=30), "a first message is delivered")
    qmgr = role_pid("qmgr")
    t.ok(qmgr is not None and role_pid("pickup") is not None, "the pickup role and the queue manager have logged")
    # Only smtpd workers accept SMTP connections: the other roles keep no copy of the listener.
    roles = (qmgr, role_pid("pickup"))
    t.ok(any(holds_listener(pid, p.port) for pid in p.worker_pids() if pid not in roles)
         and not any(holds_listener(pid, p.port) for pid in roles if pid),
         "the smtpd workers hold the SMTP listener, the queue manager and the pickup role do not",
         [(pid, holds_listener(pid, p.port)) for pid in p.worker_pids()])

    # --- 1. the pickup role is SIGKILLed --------------------------------------
    os.kill(qmgr, signal.SIGSTOP)
    st, pickup, name = hold_pickup("second")
    os.kill(pickup, signal.SIGKILL)
    gone(pickup, st)
    t.ok(p.wait_log(r"pickup\[\d+\]: \w+: removed maildrop file %s: its message was already queued" % name,
                    timeout=30) is not None,
         "the next pickup role finds the queue file that names the maildrop file, and removes the file")
    os.kill(qmgr, signal.SIGCONT)
    sendmail("third")
    t.ok(wait_for(lambda: copies("third") == 1, timeout=30), "a later message is delivered by the new pickup role")
    t.ok(wait_for(lambda: copies("second") >= 1, timeout=30), "the held message is delivered")
    t.ok(wait_for(lambda: os.listdir(drop) == [] and p.queue_files() == [], timeout=30),
         "maildrop/ and the queue are empty")
    t.is_(copies("second"), 1, "the message is delivered exactly once")

    # --- 2. petreld stops while the pickup role is held ---------------------------
    qmgr = role_pid("qmgr")
    os.kill(qmgr, signal.SIGSTOP)
    st, pickup, name = hold_pickup("fourth")
    p.proc.send_signal(signal.SIGTERM)
    t.ok(p.wait_log(r"killing the pickup role pid %d" % pickup, timeout=60) is not None,
         "the master kills the held pickup role after its stop timeout")
    gone(pickup, st)
    p.stop()
    t.ok(name and os.path.exists(os.path.join(drop, name)) and len(p.queue_files("incoming")) == 1,
         "both the maildrop file and the queue file are left")
    p.start()
    t.ok(p.wait_log(r"\w+: removed maildrop file %s: its message was already queued" % name, timeout=30)
         is not None, "the recovery scan at the next start removes the maildrop file")
    sendmail("fifth")
    t.ok(wait_for(lambda: copies("fifth") == 1 and copies("fourth") >= 1, timeout=30),
         "the held message and a later one are delivered")
    t.ok(wait_for(lambda: os.listdir(drop) == [] and p.queue_files() == [], timeout=30),
         "maildrop/ and the queue are empty")
    t.is_(copies("fourth"), 1, "the message is delivered exactly once")
    t.ok(p.wait_log(r"pickup\[\d+\]: .*(panic|fatal)", timeout=0.5) is None, "the pickup role never crashed")

t.done()
