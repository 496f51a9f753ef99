"""doc/architecture.md's layout names the folders that exist, and all of them.

The "## Layout" section's code block lists folders, one per line starting
at the first column ("core/smtpd/   SMTP server: ..."). The folders that must
be there are the tree's own (files tracked by git, or, outside a git
checkout, the source tree's): every top-level folder but hidden ones, and
every folder one level down in core/ and t/. A listed folder counts for its
parents too ("core/include/petrel/" lists core/include/).

The check runs first on a made-up page and tree, so it is known to fail
when a folder is missing from the page or the page names one that is gone.
"""
import os
import re
import subprocess
import sys
import tempfile

TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEEP = ("core", "t")   # folders whose subfolders are listed one by one
IGNORED = {"autom4te.cache", "build-aux", "_build"}   # generated, never tracked

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


def listed_folders(text):
    m = re.search(r"^## Layout\n(.*?)^## ", text, re.S | re.M)
    if not m:
        return None
    block = re.search(r"^```\n(.*?)^```", m.group(1), re.S | re.M)
    if not block:
        return None
    folders = []
    for line in block.group(1).splitlines():
        word = line.split(" ", 1)[0]
        if word.endswith("/"):
            folders.append(word.rstrip("/"))
    return folders


def tree_files(top):
    try:
        out = subprocess.run(["git", "-C", top, "ls-files"], capture_output=True, text=True, check=True).stdout
        files = out.splitlines()
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    files = []
    for root, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in IGNORED]
        for n in names:
            files.append(os.path.relpath(os.path.join(root, n), top))
    return files


def tree_folders(files):
    need = set()
    for f in files:
        parts = f.split("/")
        if len(parts) < 2 or parts[0].startswith(".") or parts[0] in IGNORED:
            continue
        need.add(parts[0])
        if parts[0] in DEEP and len(parts) >= 3:
            need.add(parts[0] + "/" + parts[1])
    return need


def problems(top, text, files):
    listed = listed_folders(text)
    if listed is None:
        return ["doc/architecture.md has no code block under \"## Layout\""]
    out = []
    for folder in listed:
        if not os.path.isdir(os.path.join(top, folder)):
            out.append("the layout names %s/, which does not exist" % folder)
    covered = set()
    for folder in listed:
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            covered.add("/".join(parts[:i]))
    for folder in sorted(tree_folders(files)):
        if folder not in covered and folder not in DEEP:
            out.append("%s/ exists but the layout does not name it" % folder)
    return out


def self_test():
    top = tempfile.mkdtemp(prefix="petrel-layout-")
    files = ["core/lib/a.c", "core/smtpd/b.c", "core/include/petrel/p.h", "t/unit/c.c", "doc/x.md", "bench/r.sh"]
    for f in files:
        os.makedirs(os.path.join(top, os.path.dirname(f)), exist_ok=True)
        open(os.path.join(top, f), "w").close()
    page = ("# A\n\n## Layout\n\n```\ncore/include/petrel/  api\ncore/lib/  lib\n"
            "core/gone/  old\n                      core/smtpd/ is only mentioned here\n"
            "t/unit/  tests\ndoc/  docs\n```\n\n## Next\n")
    p = problems(top, page, files)
    ok("the layout names core/gone/, which does not exist" in p, "self-test: a listed folder that is gone is reported", p)
    ok("core/smtpd/ exists but the layout does not name it" in p and
       "bench/ exists but the layout does not name it" in p,
       "self-test: folders missing from the layout are reported (a mention inside a description does not count)", p)
    ok(len(p) == 3, "self-test: nothing else (core/include/ counts as listed through core/include/petrel/)", p)
    subprocess.run(["rm", "-rf", top], check=False)


def main():
    self_test()
    with open(os.path.join(TOP_SRCDIR, "doc", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    listed = listed_folders(text) or []
    ok(len(listed) > 15, "the layout lists its folders (%d)" % len(listed))
    p = problems(TOP_SRCDIR, text, tree_files(TOP_SRCDIR))
    ok(not p, "doc/architecture.md's layout names every folder that exists and no other", p)
    print("1..%d" % plan)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
