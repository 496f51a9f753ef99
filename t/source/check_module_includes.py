#!/usr/bin/env python3
"""Checks that bundled modules include nothing from the project but the
public API: every #include in a .c or .h file under DIR (default: the
source tree's modules/) must name <petrel/X.h> for a public header X, a
header of the module's own folder ("x.h"), a header of modules/common/
(support code the bundled modules share, itself bound by the same rule),
or a system header that is not also a project file. Anything else (a core header such as "lib/log.h" or
<smtpd/smtpd.h>, autoconf's "config.h", a path climbing out of the module)
is reported as FILE:LINE with the include, and the exit status is 1.

usage: check_module_includes.py TOP_SRCDIR [DIR]
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def project_headers(top):
    """Paths of the project's own headers, relative to the places the build
    puts on include paths (the top, core/, core/include/)."""
    names = {"config.h"}   # autoconf's, generated into the build tree
    for root, _, files in os.walk(os.path.join(top, "core")):
        for f in files:
            if f.endswith(".h") or f.endswith(".h.in"):
                path = os.path.relpath(os.path.join(root, f), top)
                if path.endswith(".in"):
                    path = path[:-3]
                names.add(path)                                         # core/lib/log.h
                names.add(os.path.relpath(path, "core"))                # lib/log.h
                if path.startswith("core/include/"):
                    names.add(os.path.relpath(path, "core/include"))    # petrel/plugin.h
    return names


def public_headers(top):
    d = os.path.join(top, "core", "include", "petrel")
    return {"petrel/" + (f[:-3] if f.endswith(".in") else f) for f in os.listdir(d)
            if f.endswith(".h") or f.endswith(".h.in")}


def check(top, modules_dir):
    project = project_headers(top)
    public = public_headers(top)
    problems = []
    for root, _, files in os.walk(modules_dir):
        rel = os.path.relpath(root, modules_dir)
        module_root = os.path.join(modules_dir, rel.split(os.sep)[0]) if rel != "." else modules_dir
        for f in sorted(files):
            if not (f.endswith(".c") or f.endswith(".h")):
                continue
            path = os.path.join(root, f)
            shown = os.path.relpath(path, os.path.dirname(modules_dir.rstrip("/")))
            with open(path, errors="replace") as fh:
                for n, line in enumerate(fh, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    kind, name = m.groups()
                    written = "%s%s%s" % (kind, name, ">" if kind == "<" else '"')
                    if kind == "<" and name in public:
                        continue
                    if kind == '"':
                        own = os.path.realpath(os.path.join(root, name))
                        if os.path.isfile(own) and own.startswith(os.path.realpath(module_root) + os.sep) \
                                and name not in project:
                            continue
                        if os.path.isfile(os.path.join(modules_dir, "common", name)) and name not in project:
                            continue   # modules/common: MODULE_COMMON_INCLUDES
                        why = "a project header" if name in project else "not a header of this module"
                    else:
                        if name.startswith("petrel/"):
                            why = "not a public header"
                        elif name in project:
                            why = "a project header"
                        else:
                            continue   # a system header
                    problems.append("%s:%d: includes %s, %s: a module may include only <petrel/*.h> "
                                    "and its own headers" % (shown, n, written, why))
    return problems


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    top = sys.argv[1]
    modules_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(top, "modules")
    problems = check(top, modules_dir)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
