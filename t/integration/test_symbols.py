"""Symbol hygiene: petreld exports the plugin API and nothing else.

1. The functions declared in the headers `make install` puts into
   $includedir/petrel (core/include/include.am names them) are parsed from
   the headers, and compared both ways with `nm -D --defined-only petreld`:
   every declared function is exported, every exported symbol is declared
   (symbols that other libraries define, versioned NAME@LIB, are libc's
   copy relocations and not ours). In a clang sanitizer build petreld also
   exports what the sanitizer runtime linked into it exports (its dynamic
   lists, configure's SAN_DYNAMIC_LISTS): modules built with the sanitizers
   need __asan_* and the runtime's malloc; those, and only those, are set
   aside.
2. clashmod, a module with global functions of its own called xmalloc,
   log_init, buf_new and dns_lookup (names of core internals), is loaded:
   each of its calls reaches its own function, and the worker keeps logging
   as petrel/smtpd and resolving through the core's dns_lookup.
"""
import fnmatch
import os
import re
import subprocess

from harness import PETRELD, TOP_BUILDDIR, TOP_SRCDIR, Dnsmasq, Petrel, Tap
from modlib import module_dir

t = Tap()


def installed_headers():
    text = open(os.path.join(TOP_SRCDIR, "core", "include", "include.am")).read().replace("\\\n", " ")
    headers = []
    for var, root in (("petrelinclude_HEADERS", TOP_SRCDIR), ("nodist_petrelinclude_HEADERS", TOP_BUILDDIR)):
        m = re.search(r"^%s\s*\+?=\s*(.*)$" % var, text, re.M)
        for name in (m.group(1).split() if m else []):
            headers.append(os.path.join(root, name))
    return headers


def strip_blocks(text):
    """Removes comments, preprocessor lines and every {...} block (struct and enum bodies)."""
    text = re.sub(r"#ifdef __cplusplus.*?#endif", " ", text, flags=re.S)   # extern "C" { ... }
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^\s*#.*?(?<!\\)$", " ", text, flags=re.M | re.S)
    out, depth = [], 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def declared_functions(paths):
    functions, unmarked = set(), []
    for path in paths:
        for statement in strip_blocks(open(path).read()).split(";"):
            statement = " ".join(statement.split())
            if not statement or statement.startswith("typedef") or statement.startswith('extern "C"'):
                continue
            m = re.search(r"\b(petrel_\w+)\s*\(", statement)
            if m is None:
                continue   # a variable (petrel_module_descriptor, defined by modules)
            functions.add(m.group(1))
            if not statement.startswith("PETREL_API "):
                unmarked.append(m.group(1))
    return functions, unmarked


headers = installed_headers()
t.ok(len(headers) >= 4 and all(os.path.isfile(h) for h in headers),
     "the installed headers are known (plugin.h, pool.h, sasl.h, version.h)", headers)
declared, unmarked = declared_functions(headers)
t.ok(len(declared) > 50, "the headers declare the API's functions (%d)" % len(declared))
t.is_(unmarked, [], "every declared function is marked PETREL_API (default visibility)")

def sanitizer_runtime_patterns():
    """The entries (names and patterns such as __asan_*) of the sanitizer runtime's dynamic lists."""
    patterns = []
    for path in os.environ.get("PETREL_SAN_DYNAMIC_LISTS", "").split():
        for line in open(path):
            entry = line.strip().rstrip(";").strip()
            if entry and entry not in ("{", "}"):
                patterns.append(entry)
    return patterns


runtime = sanitizer_runtime_patterns()
runtime_exact = {p for p in runtime if not any(c in p for c in "*?[")}
runtime_globs = [p for p in runtime if any(c in p for c in "*?[")]


def from_runtime(name):
    return name in runtime_exact or any(fnmatch.fnmatchcase(name, g) for g in runtime_globs)


# petrelctl loads modules too (to check and describe them): it exports the same.
for program in (("core", "master", "petreld"), ("core", "tools", "petrelctl")):
    binary = os.path.join(TOP_BUILDDIR, *program)
    what = program[-1]
    nm = subprocess.run(["nm", "-D", "--defined-only", binary], capture_output=True, text=True)
    t.ok(nm.returncode == 0, "nm -D --defined-only %s runs" % what, nm.stderr)
    exported, functions, other, runtime_exported = set(), set(), [], set()
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) < 3 or "@" in parts[2]:
            continue
        kind, name = parts[1], parts[2]
        if from_runtime(name):
            runtime_exported.add(name)
            continue   # the sanitizer build's runtime (configure --enable-sanitizers, clang)
        exported.add(name)
        if kind in ("T", "t", "W", "i"):
            functions.add(name)
        else:
            other.append(line)
    t.is_(sorted(declared - functions), [], "every function the headers declare is exported by %s" % what)
    t.is_(sorted(exported - declared), [], "%s exports nothing the headers do not declare" % what)
    t.is_(other, [], "and no data symbols")
    if runtime:
        # Hidden, an instrumented module cannot load (__asan_* unresolved)
        # or binds to libc's malloc and free instead of the runtime's.
        t.is_(sorted({"__asan_init", "__asan_report_load8", "malloc", "free"} - runtime_exported), [],
              "%s exports the sanitizer runtime's symbols that instrumented modules bind to" % what)

# --- a module with functions named like the core's internals -------------------
mods = module_dir("clashmod")
with Dnsmasq(["--local=/test/", "--address=/resolves.test/127.0.0.7"]) as dns:
    with Petrel(t, main_cf={"modules": "clashmod", "module_directory": mods, "dns_resolver": dns.server,
                            "smtpd_workers": "1"}) as p:
        t.ok(p.wait_log(r"module clashmod: initialised; own log_init called 1 time") is not None,
             "the module's log_init call at init reached its own log_init")
        c = p.connect()
        c.ehlo()
        t.is_(c.cmd("MAIL FROM:<a@resolves.test>"), "250 2.1.0 Ok",
              "the core's resolver answers the module (the core's dns_lookup is the core's)")
        t.like(c.cmd("MAIL FROM:<b@nowhere.test>"), r"^503 ", "(a second MAIL in the same transaction)")
        c.cmd("RSET")
        t.is_(c.cmd("MAIL FROM:<b@nowhere.test>"), "550 5.1.8 clashmod: sender domain does not resolve",
              "and says when a domain does not resolve")
        c.close()
        line = p.wait_log(r"clashmod: own xmalloc: \w+, own log_init: \w+, own buf_new: \w+, own dns_lookup: \w+")
        t.is_(line and line.group(0).split("clashmod: ", 1)[1],
              "own xmalloc: yes, own log_init: yes, own buf_new: yes, own dns_lookup: yes",
              "each of the module's calls reached the module's own function")
        log = p.log()
        t.ok(re.search(r"petrel/smtpd\[\d+\]: NOQUEUE: clashmod: own xmalloc", log) is not None,
             "the worker still logs as petrel/smtpd after the module called log_init (the core's log_init "
             "was not replaced)", log[-2000:])
        t.ok("clashmod/clash" not in log, "nothing is logged under the module's log_init name")
        t.ok(p.wait_log(r"module clashmod: core resolver answered status 0 with 1 address") is not None,
             "the core's DNS answered the lookup")
        t.ok("panic" not in log and "killed by signal" not in log, "nothing crashed")
t.done()
