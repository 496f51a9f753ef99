"""Every C code block of doc/plugin-guide.md compiles against the installed
headers (<petrel/plugin.h> from core/include), so the guide cannot drift
from the API.

A block is compiled alone, after `#include <petrel/plugin.h>`, with
warnings as errors. A block that shows a type of the header (`typedef
struct NAME {...} NAME;` or `typedef enum ...`), which cannot be declared
twice, is checked member by member instead: every field and every
enumerator it names must exist in the header's type (a field the guide
shows that the header no longer has fails here). The rest of such a block
(prototypes, #defines) is compiled as usual: a prototype that differs from
the header's is a conflicting declaration.

The check runs first on made-up blocks, so it is known to fail on a block
that does not compile and on a field the header does not have.
"""
import os
import re
import subprocess
import sys
import tempfile

TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOP_BUILDDIR = os.environ.get("top_builddir") or TOP_SRCDIR
CC = os.environ.get("CC") or "cc"
FLAGS = ["-std=gnu11", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function",
         "-Wno-unused-variable", "-Wno-unused-parameter",
         "-I" + os.path.join(TOP_SRCDIR, "core", "include"), "-I" + os.path.join(TOP_BUILDDIR, "core", "include")]

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


def blocks(text):
    """(line number, code) of every ```c block."""
    for m in re.finditer(r"^```c\n(.*?)^```", text, re.S | re.M):
        yield text.count("\n", 0, m.start()) + 2, m.group(1)


def strip_comments(code):
    return re.sub(r"/\*.*?\*/", " ", re.sub(r"//[^\n]*", " ", code, flags=re.S), flags=re.S)


def type_excerpts(code):
    """Cuts `typedef struct|enum X { ... } Y;` out of code: (rest, checks)."""
    checks = []
    out = ""
    pos = 0
    for m in re.finditer(r"typedef\s+(struct|enum)\s+\w+\s*\{", code):
        if m.start() < pos:
            continue
        depth, i = 0, m.end() - 1
        while i < len(code):
            depth += code[i] == "{"
            depth -= code[i] == "}"
            if depth == 0:
                break
            i += 1
        body = code[m.end():i]
        tail = re.match(r"\}\s*(\w+)\s*;", code[i:])
        if not tail:
            return None, None
        name = tail.group(1)
        clean = strip_comments(body)
        if m.group(1) == "enum":
            for item in clean.split(","):
                ident = item.split("=")[0].strip()
                if ident:
                    checks.append("(void)%s;" % ident)
        else:
            for stmt in clean.split(";"):
                stmt = stmt.strip()
                if not stmt:
                    continue
                fp = re.search(r"\(\s*\*\s*(\w+)\s*\)", stmt)
                field = fp.group(1) if fp else re.findall(r"(\w+)\s*(?:\[[^\]]*\])?\s*$", stmt)
                if not fp:
                    field = field[0] if field else None
                if field:
                    checks.append("(void)sizeof(((%s *)0)->%s);" % (name, field))
        out += code[pos:m.start()]
        pos = i + tail.end()
    out += code[pos:]
    return out, checks


def compile_block(code):
    """None when the block compiles (and its excerpts match the header), else the errors."""
    rest, checks = type_excerpts(code)
    if rest is None:
        return ["a typedef excerpt without its closing name"]
    source = "#include <petrel/plugin.h>\n" + rest + "\n"
    if checks:
        source += "void doc_excerpt_checks(void);\nvoid doc_excerpt_checks(void)\n{\n" + "\n".join(checks) + "\n}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".c", delete=False) as f:
        f.write(source)
        path = f.name
    try:
        r = subprocess.run([CC] + FLAGS + [path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode == 0:
        return None
    return (r.stderr.strip().splitlines() or ["%s failed" % CC])[:12]


# --- the check itself fails where it must --------------------------------
ok(compile_block("static int f(void) { return 0; }\n") is None, "self-check: a good block compiles")
ok(compile_block("static int f(void) { return undeclared_thing; }\n") is not None,
   "self-check: a block that does not compile fails")
ok(compile_block("typedef struct petrel_restriction {\n    size_t size;\n    const char *name;\n} "
                 "petrel_restriction;\n") is None, "self-check: an excerpt whose fields exist passes")
ok(compile_block("typedef struct petrel_restriction {\n    const char *name;\n    int no_such_field;\n} "
                 "petrel_restriction;\n") is not None, "self-check: an excerpt naming a field the header lacks fails")
ok(compile_block("typedef enum petrel_verdict { PETREL_CONTINUE, PETREL_NO_SUCH } petrel_verdict;\n") is not None,
   "self-check: an enumerator the header lacks fails")
ok(compile_block("int petrel_run_blocking(petrel_module *m, void (*work)(void *arg));\n") is not None,
   "self-check: a prototype that differs from the header's fails")

# --- the guide ----------------------------------------------------------------
guide = os.path.join(TOP_SRCDIR, "doc", "plugin-guide.md")
with open(guide, encoding="utf-8") as f:
    text = f.read()
found = list(blocks(text))
ok(len(found) > 20, "doc/plugin-guide.md has its C blocks (%d)" % len(found))
for line, code in found:
    errors = compile_block(code)
    first = code.strip().splitlines()[0][:70] if code.strip() else "(empty)"
    ok(errors is None, "doc/plugin-guide.md:%d: %s" % (line, first), errors or ())

print("1..%d" % plan)
sys.exit(1 if failed else 0)
