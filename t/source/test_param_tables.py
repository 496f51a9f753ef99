"""Every parameter the core's code names is in a binding table.

The binding tables (core/config/bind.h, all listed by core/master/bindings.c)
say which parameters each role binds into its settings or reads itself.
This test keeps them true: any string literal in core/ (comments aside, the
parameter tables core/config/params.c, params_postscreen.c and params_smtp.c aside) that is the name of a declared
parameter must be covered by some table entry. A parameter read ad hoc
without being registered fails here, naming the file.

It also prints, as a note, the declared parameters that no table covers:
the starting point for classifying every parameter as implemented, no
effect or not implemented.

t/tools/param-readers prints the schema and the tables.
"""
import glob
import os
import re
import subprocess
import sys

TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOP_BUILDDIR = os.environ.get("top_builddir") or TOP_SRCDIR

plan = 0
failed = 0


def ok(cond, name, diag=()):
    global plan, failed
    plan += 1
    if not cond:
        failed += 1
    print("%s %d - %s" % ("ok" if cond else "not ok", plan, name))
    if not cond:
        for line in diag:
            print("# " + line)


def covers(entry, name):
    if entry.startswith("*"):
        return name.endswith(entry[1:]) and len(name) > len(entry) - 1
    return entry == name


def literals(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return set(re.findall(r'"([A-Za-z0-9_]+)"', text))


def main():
    tool = os.path.join(TOP_BUILDDIR, "t", "tools", "param-readers")
    out = subprocess.run([tool], capture_output=True, text=True, check=True).stdout
    declared, entries = set(), []
    for line in out.splitlines():
        f = line.split("\t")
        if f[0] == "declared":
            declared.add(f[1])
        elif f[0] == "read":
            entries.append((f[1], f[2], f[3]))
    ok(len(declared) > 100, "the schema has its parameters (%d)" % len(declared))
    ok(len(entries) > 100, "the binding tables have their entries (%d)" % len(entries))
    names = [e[1] for e in entries]

    unregistered = []
    files = sorted(glob.glob(os.path.join(TOP_SRCDIR, "core", "*", "*.c")))
    for path in files:
        rel = os.path.relpath(path, TOP_SRCDIR)
        if rel in (os.path.join("core", "config", "params.c"), os.path.join("core", "config", "params_postscreen.c"),
                   os.path.join("core", "config", "params_smtp.c")):
            continue
        for lit in sorted(literals(path) & declared):
            if not any(covers(n, lit) for n in names):
                unregistered.append("%s: \"%s\" is a parameter no binding table lists" % (rel, lit))
    ok(len(files) > 50, "core/ has its C files (%d)" % len(files))
    ok(not unregistered, "every parameter the code names is in a binding table", unregistered)

    unknown = sorted(set(n for n in names if not n.startswith("*") and n not in declared))
    ok(not unknown, "every table entry names a declared parameter", unknown)

    unread = sorted(p for p in declared if not any(covers(n, p) for n in names))
    print("# %d of %d declared parameters are in no binding table:" % (len(unread), len(declared)))
    for i in range(0, len(unread), 6):
        print("#   " + " ".join(unread[i:i + 6]))
    print("1..%d" % plan)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
