"""Every parameter the core's code names is in a binding table.

The binding tables (core/config/bind.h, all listed by core/master/bindings.c)
say which parameters each role binds into its settings or reads itself.
This test keeps them true: any string literal in core/ (comments aside, the
parameter tables core/config/params.c, params_postscreen.c and params_smtp.c aside) that is the name of a declared
parameter must be covered by some table entry. A parameter read ad hoc
without being registered fails here, naming the file.

It also walks the classification of every parameter name,
core/config/parameters.txt (its header says the format): every name the
schema declares is there, and so is every name of Postfix's `postconf -d`
(when Postfix is installed); a name without a class must be read by some
table (implemented is derived, never claimed), and a name with a class
(ignored, warn, refuse) must be read by none, so a parameter that gains
code is flipped in the data in the same change. A declared parameter read
by no code therefore always has a class: a reason it cannot matter, or
the warning or refusal that says what will not happen.

t/tools/param-readers prints the schema and the tables.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

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


def tokens(rest):
    """White-space separated tokens of rest, "quoted parts" kept together."""
    out, cur, quoted, i = [], None, False, 0
    for i, ch in enumerate(rest):
        if ch == '"':
            quoted = not quoted
            cur = (cur or "")
        elif ch in " \t" and not quoted:
            if cur is not None:
                out.append((cur, i))
            cur = None
        else:
            cur = (cur or "") + ch
    if cur is not None:
        out.append((cur, len(rest)))
    return out


def read_classes(path):
    """parameters.txt as {name: {class, module, line}}, and its problems."""
    classes, problems = {}, []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            toks = tokens(line)
            if len(toks) < 2:
                problems.append("line %d: no version" % n)
                continue
            name, cls, module = toks[0][0], None, None
            if len(toks) > 2:
                cls, _, module = toks[2][0].partition("@")
                if cls not in ("ignored", "warn", "refuse"):
                    problems.append("line %d: %s: unknown class %s" % (n, name, cls))
                rest = [t for t, _ in toks[3:]]
                while rest and (rest[0].startswith("ok=") or rest[0].startswith("warn=")):
                    rest.pop(0)
                if not rest:
                    problems.append("line %d: %s: %s without a text" % (n, name, cls))
            if name in classes:
                problems.append("line %d: %s: listed twice" % (n, name))
            classes[name] = {"class": cls, "module": module or None, "line": n}
    return classes, problems


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

    classes, problems = read_classes(os.path.join(TOP_SRCDIR, "core", "config", "parameters.txt"))
    ok(not problems, "parameters.txt parses", problems)
    ok(len(classes) > 900, "parameters.txt classifies every name (%d)" % len(classes))

    missing = sorted(p for p in declared if p not in classes)
    ok(not missing, "every declared parameter is classified", missing)

    read = lambda p: any(covers(n, p) for n in names)
    unread = sorted(p for p, k in classes.items() if k["class"] is None and not read(p))
    ok(not unread, "every name given as implemented is read by some binding table", unread)
    # A name a module provides (NAME@MODULE) may be read by the core on the
    # module's behalf; its class applies while the module is not loaded.
    stale = sorted(p for p, k in classes.items() if k["class"] is not None and k["module"] is None and read(p))
    ok(not stale, "no name read by a binding table is still classified as not implemented", stale)

    modules = set(os.listdir(os.path.join(TOP_SRCDIR, "modules")))
    bad_modules = sorted("%s@%s" % (p, k["module"]) for p, k in classes.items()
                         if k["module"] and k["module"] not in modules)
    ok(not bad_modules, "every @module is a bundled module", bad_modules)

    postconf = shutil.which("postconf") or ("/usr/sbin/postconf" if os.path.exists("/usr/sbin/postconf") else None)
    ok(postconf is not None, "Postfix's postconf is installed (scripts/install-deps.sh)")
    if postconf:
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "main.cf"), "w").close()
            open(os.path.join(d, "master.cf"), "w").close()
            out = subprocess.run([postconf, "-c", d, "-d"], capture_output=True, text=True).stdout
        postfix = set(line.split(" =")[0] for line in out.splitlines() if " =" in line)
        ok(len(postfix) > 800, "postconf -d lists Postfix's parameters (%d)" % len(postfix))
        unclassified = sorted(postfix - set(classes))
        ok(not unclassified, "every name of postconf -d is in parameters.txt", unclassified)

    pending = sorted(p for p in declared if classes.get(p, {}).get("class") in ("warn", "refuse"))
    print("# %d of %d declared parameters are not implemented yet (warned about or refused when set):"
          % (len(pending), len(declared)))
    for i in range(0, len(pending), 6):
        print("#   " + " ".join(pending[i:i + 6]))
    print("1..%d" % plan)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
