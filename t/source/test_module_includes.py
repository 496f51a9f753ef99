"""Bundled modules include only <petrel/*.h>: t/source/check_module_includes.py
passes on the source tree's modules/ and on a tidy fixture, and on a
fixture that reaches into the core it reports each bad include with its
file and line, and fails."""
import os
import subprocess
import sys

TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
checker = os.path.join(TOP_SRCDIR, "t", "source", "check_module_includes.py")
fixtures = os.path.join(TOP_SRCDIR, "t", "source", "data", "module-includes")


class Tap:
    def __init__(self):
        self.count = self.failed = 0

    def ok(self, cond, desc, diag=None):
        self.count += 1
        self.failed += not cond
        print("%s %d - %s" % ("ok" if cond else "not ok", self.count, desc))
        if not cond and diag:
            for line in str(diag).splitlines():
                print("#   " + line)
        return cond

    def is_(self, got, want, desc):
        return self.ok(got == want, desc, "got:  %r\nwant: %r" % (got, want))

    def done(self):
        print("1..%d" % self.count)
        sys.exit(1 if self.failed else 0)


t = Tap()


def run(*args):
    return subprocess.run([sys.executable, checker, TOP_SRCDIR] + list(args), capture_output=True, text=True,
                          timeout=60)


r = run()
t.ok(r.returncode == 0, "modules/ includes nothing but the public API", r.stdout + r.stderr)
r = run(os.path.join(fixtures, "good"))
t.ok(r.returncode == 0 and r.stdout == "",
     "a module with system, <petrel/*.h>, its own and modules/common headers passes",
     r.stdout + r.stderr)
r = run(os.path.join(fixtures, "bad"))
t.is_(r.returncode, 1, "a module that reaches into the core fails the check")
rule = ": a module may include only <petrel/*.h> and its own headers"
t.is_(r.stdout.splitlines(), [
    'bad/sneaky/sneaky.c:6: includes "config.h", a project header' + rule,
    'bad/sneaky/sneaky.c:7: includes "lib/log.h", a project header' + rule,
    'bad/sneaky/sneaky.c:8: includes <smtpd/smtpd_int.h>, a project header' + rule,
    'bad/sneaky/sneaky.c:9: includes "../../../../../core/lib/xalloc.h", not a header of this module' + rule,
    'bad/sneaky/sneaky.c:10: includes <petrel/internal.h>, not a public header' + rule,
    'bad/sneaky/sneaky.c:11: includes "missing.h", not a header of this module' + rule,
    'bad/sneaky/sneaky.h:2: includes "module/module.h", a project header' + rule,
], "each bad include is named with its file and line")
t.done()
