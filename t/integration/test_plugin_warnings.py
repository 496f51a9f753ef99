"""Plugins compile warning-free against <petrel/plugin.h> with clang's
-Wmissing-variable-declarations: the header declares petrel_module_descriptor
extern, so the one symbol a plugin defines has a prior declaration. Every
example plugin (plugins/) is compiled with clang -std=c11 -Wall -Wextra
-Wmissing-variable-declarations -Werror (as their Makefiles do, plus the
warning), and every test module (t/modules/) with the flags the build uses
for them (-std=gnu11, unused parameters allowed) plus the warning; the
public headers are the only include directory."""
import glob
import os
import shutil
import subprocess

from harness import TOP_BUILDDIR, TOP_SRCDIR, Tap

t = Tap()
clang = shutil.which("clang")
if not t.ok(clang is not None, "clang is installed (scripts/install-deps.sh installs it)"):
    t.done()

plugins = sorted(glob.glob(os.path.join(TOP_SRCDIR, "plugins", "*", "*.c")))
modules = sorted(glob.glob(os.path.join(TOP_SRCDIR, "t", "modules", "*.c")))
t.ok(len(plugins) >= 2 and len(modules) >= 2, "plugins and test modules found", plugins + modules)
common = ["-fPIC", "-Wall", "-Wextra", "-Wmissing-variable-declarations", "-Werror", "-fsyntax-only",
          "-I" + os.path.join(TOP_SRCDIR, "core", "include"), "-I" + os.path.join(TOP_BUILDDIR, "core", "include")]
for src, extra in [(p, ["-std=c11"]) for p in plugins] + [(m, ["-std=gnu11", "-Wno-unused-parameter"]) for m in modules]:
    r = subprocess.run([clang] + common + extra + [src], capture_output=True, text=True, timeout=120)
    t.ok(r.returncode == 0, "clang -Wmissing-variable-declarations -Werror: %s" % os.path.relpath(src, TOP_SRCDIR),
         r.stderr)

# The warning is really on: a definition without the declaration fires it.
probe = os.path.join(TOP_BUILDDIR, "t", "missing-declaration-probe.c")
with open(probe, "w") as f:
    f.write("int petrel_probe_variable = 1;\n")
r = subprocess.run([clang, "-std=c11"] + common + [probe], capture_output=True, text=True, timeout=60)
os.unlink(probe)
t.ok(r.returncode != 0 and "missing-variable-declarations" in r.stderr,
     "(the warning fires on a variable defined without a declaration)", r.stderr)
t.done()
