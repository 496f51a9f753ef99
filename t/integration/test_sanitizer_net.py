"""The sanitizer net itself: in a sanitizer build (configure --enable-sanitizers),
a report from any process a test starts reaches the harness, which names it
and fails the test. t/tools/sanitizer-probe commits one fault per run; each
report must be found, attributed and (here, deliberately) cleared. The daemon's
roles must run with the options that send their reports to the harness.
In a normal build there is nothing to check: the script skips."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SANITIZED, Petrel, Tap, TOP_BUILDDIR, _runnable_copy  # noqa: E402

if not SANITIZED:
    print("1..0 # SKIP not a sanitizer build (configure --enable-sanitizers)")
    sys.exit(0)

t = Tap()
PROBE = _runnable_copy(os.path.join(TOP_BUILDDIR, "t", "tools", "sanitizer-probe"))


def take_reports():
    """The reports written since the last call (and removes them, so that this
    script's own final check sees only what was not expected)."""
    found = harness.sanitizer_reports()
    for name in os.listdir(harness.SANITIZER_DIR):
        os.unlink(os.path.join(harness.SANITIZER_DIR, name))
    return found


take_reports()
r = subprocess.run([PROBE, "clean"], capture_output=True, text=True, timeout=60)
t.ok(r.returncode == 0 and take_reports() == [], "a clean run leaves no report", r.stderr)

cases = [
    ("heap-overflow", "ERROR: AddressSanitizer: heap-buffer-overflow"),
    ("use-after-free", "ERROR: AddressSanitizer: heap-use-after-free"),
    ("shift", "runtime error: shift exponent 40 is too large"),
    ("leak", "ERROR: LeakSanitizer: detected memory leaks"),
]
for fault, marker in cases:
    r = subprocess.run([PROBE, fault], capture_output=True, text=True, timeout=60)
    t.ok(r.returncode != 0, "%s: the process fails (UBSan halts, ASan and LSan exit non-zero)" % fault,
         "exit %d" % r.returncode)
    reports = take_reports()
    if not reports and fault == "shift" and marker in r.stderr:
        # gcc's libubsan (next to libasan) ignores log_path: say so, don't pass.
        t.skip("%s: the report reaches the harness" % fault,
               "gcc's UBSan writes to stderr only; build the sanitizer tree with clang, as CI does")
        continue
    t.is_(len(reports), 1, "%s: exactly one report reaches the harness" % fault)
    text = reports[0][1] if reports else ""
    t.ok(marker in text, "%s: the report says what it is" % fault, text[:2000])
    t.ok("sanitizer_probe.c" in text, "%s: with a stack that names the source file" % fault, text[:2000])
    t.ok(r.stderr.strip() == "" or marker not in r.stderr,
         "%s: the report goes to the harness's directory, not to a stderr a test may swallow" % fault)

# A report that does reach a petreld log (stderr) is found there too.
log = os.path.join(harness.SANITIZER_DIR, "..", "petrel-san-probe-%d.log" % os.getpid())
with open(log, "w") as f:
    env = dict(os.environ, ASAN_OPTIONS=os.environ["ASAN_OPTIONS"] + ":log_path=stderr",
               UBSAN_OPTIONS=os.environ["UBSAN_OPTIONS"] + ":log_path=stderr")
    subprocess.run([PROBE, "heap-overflow"], stdout=f, stderr=f, env=env, timeout=60)
harness.SANITIZER_LOGS.append(log)
found = [w for w, _ in harness.sanitizer_reports() if w == log]
harness.SANITIZER_LOGS.remove(log)
os.unlink(log)
t.ok(found == [log], "a report in a daemon log is found and named by the log's path")

# The daemon's processes carry the options.
with Petrel(t) as p:
    kids = p.worker_pids(at_least=1)   # the master listens before it forks them
    envs = []
    for pid in [p.proc.pid] + kids:
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                envs.append(dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x))
        except OSError:
            pass
    want = ("log_path=%s/report" % harness.SANITIZER_DIR).encode()
    t.ok(len(envs) >= 2 and all(want in e.get(b"ASAN_OPTIONS", b"") for e in envs),
         "petreld's master and roles send their reports to the harness")
    t.ok(all(b"halt_on_error=1" in e.get(b"UBSAN_OPTIONS", b"") for e in envs),
         "and UBSan halts at its first report")
t.done()
