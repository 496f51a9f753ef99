"""The shape of core/: which folder may include which, and no circles.

Rules (doc/architecture.md, "Layout"):

1. Roles (smtpd, qmgr, deliver, master, tools) may include the shared
   folders (lib, mail, config, tables, queue, module, include) and their own
   headers. A role includes another role's header only where ROLE_ARROWS
   below says so, with the reason. A shared folder never includes a role.
2. No circle between folders: if a includes b, b does not (even through
   others) include a.
3. No circle between files: a file that calls a function of another file is
   below it. Measured on the built objects (nm), so a declaration that
   nobody calls is no arrow and a call through a header of a third file is.
   A state machine split into several files for size (its continuations
   call back into its loop) is one unit: ENGINES lists those, and a circle
   inside one is fine; a circle between units is not.

Every #include of core/ names its folder ("lib/log.h"); the only bare one
is autoconf's "config.h".

The checks run on the real tree and, first, on small made-up trees that
break each rule, so the test is known to fail when a rule is broken.
"""
import collections
import glob
import os
import re
import subprocess
import sys
import tempfile

TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOP_BUILDDIR = os.environ.get("top_builddir") or TOP_SRCDIR

ROLES = {"smtpd", "qmgr", "deliver", "master", "tools"}
SHARED = {"lib", "mail", "config", "tables", "queue", "module", "include", "tls"}

# Role -> role arrows that are allowed, by including folder and included
# header (a folder name allows every header of that folder), with the reason.
ROLE_ARROWS = {
    ("qmgr", "deliver"): "the queue manager runs the delivery agents in its own process "
                         "(SMTP/LMTP on its loop, mailbox and pipe on its threads): deliver/ is its library",
    ("master", "smtpd/smtpd.h"): "the master forks the smtpd workers and the pickup role: their entry points",
    ("master", "smtpd/anvil.h"): "the master maps the shared connection table before it forks the workers",
    ("master", "qmgr/qmgr.h"): "the master forks the queue manager: its entry point",
    ("master", "qmgr/mailbox_helper.h"): "the master forks the privileged mailbox helper: its entry point",
    ("master", "qmgr/route.h"): "every load builds the router once, so a bad routing map stops the load "
                                "instead of a running queue manager",
    ("tools", "master/master.h"): "petrelctl loads and checks a configuration generation as the master does",
}

# State machines split into files for size: one unit each for rule 3.
ENGINES = {
    "the smtpd session (its commands resume the input loop)":
        {"smtpd/session.c", "smtpd/commands.c", "smtpd/auth.c", "smtpd/sasl_glue.c", "smtpd/data.c",
         "smtpd/envelope.c", "smtpd/tls.c", "smtpd/rates.c", "smtpd/proxy.c", "smtpd/xforward.c"},
    "the restriction engine (a step that waits resumes its loop)":
        {"smtpd/restrict.c", "smtpd/restrict_compile.c", "smtpd/restrict_steps.c", "smtpd/restrict_dns.c",
         "smtpd/policy.c"},
    "the SMTP client (each step ends in the job's driver)":
        {"deliver/smtp_client.c", "deliver/smtp_addr.c", "deliver/smtp_connect.c", "deliver/smtp_proto.c",
         "deliver/smtp_content.c", "deliver/smtp_sasl.c"},
    "the module dispatcher (hook calls and SASL requests; a session closed during a call is destroyed "
    "when it returns, and destroying a session drops its calls)":
        {"module/dispatch.c", "module/sasl.c"},
    "postscreen (a screened connection moves between its tests and its verdict)":
        {"smtpd/postscreen.c", "smtpd/psc_smtpd.c"},
    "the queue manager (delivery results schedule the next jobs and finish messages)":
        {"qmgr/qmgr.c", "qmgr/intake.c", "qmgr/message.c", "qmgr/schedule.c", "qmgr/delivery.c",
         "qmgr/finish.c"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)

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


# ---- rules 1 and 2: include arrows between folders ----

def include_arrows(core):
    """(file, including folder, included path, included folder) for every
    #include of core/ that names a header of core/."""
    arrows = []
    for path in sorted(glob.glob(os.path.join(core, "*", "*.[ch]")) + glob.glob(os.path.join(core, "include", "*", "*.h"))):
        rel = os.path.relpath(path, core)
        folder = rel.split(os.sep)[0]
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for kind, name in INCLUDE.findall(text):
            if kind == "<":
                if name.startswith("petrel/"):
                    arrows.append((rel, folder, name, "include"))
                continue
            if "/" not in name:
                arrows.append((rel, folder, name, None))
                continue
            arrows.append((rel, folder, name, name.split("/")[0]))
    return arrows


def arrow_problems(arrows):
    problems = []
    for rel, folder, name, target in arrows:
        if target is None:
            if name != "config.h":
                problems.append("%s: #include \"%s\" does not name its folder" % (rel, name))
            continue
        if target == folder:
            continue
        if folder in SHARED and target in ROLES:
            problems.append("%s: shared folder %s/ includes role header %s" % (rel, folder, name))
        elif folder in ROLES and target in ROLES:
            if (folder, target) not in ROLE_ARROWS and (folder, name) not in ROLE_ARROWS:
                problems.append("%s: role %s/ includes another role's header %s" % (rel, folder, name))
        elif folder not in ROLES | SHARED or target not in ROLES | SHARED:
            problems.append("%s: %s/ -> %s: a folder the rules do not know (add it to ROLES or SHARED)"
                            % (rel, folder, name))
    return problems


def cycles(graph):
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def folder_cycles(arrows):
    graph = collections.defaultdict(set)
    for rel, folder, name, target in arrows:
        if target and target != folder:
            graph[folder].add(target)
    return cycles(graph)


# ---- rule 3: calls between files, from the objects ----

def objects(builddir):
    """source path (folder/stem.c) -> object file, from libtool's .lo files."""
    found = {}
    for lo in glob.glob(os.path.join(builddir, "core", "*", "libpetrelcore_la-*.lo")):
        folder = os.path.basename(os.path.dirname(lo))
        stem = os.path.basename(lo)[len("libpetrelcore_la-"):-3]
        with open(lo) as f:
            text = f.read()
        for key in ("pic_object", "non_pic_object"):
            m = re.search(r"^%s='([^']*)'" % key, text, re.M)
            if m and m.group(1) != "none":
                obj = os.path.join(os.path.dirname(lo), m.group(1))
                if os.path.exists(obj):
                    found["%s/%s.c" % (folder, stem)] = obj
                    break
    return found


def call_graph(objs):
    defined, used = {}, collections.defaultdict(set)
    for src, obj in objs.items():
        out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDRB":
                defined[parts[2]] = src
            elif len(parts) == 2 and parts[0] == "U":
                used[src].add(parts[1])
    graph = collections.defaultdict(set)
    why = {}
    for src, names in used.items():
        for name in names:
            dst = defined.get(name)
            if dst and dst != src:
                graph[src].add(dst)
                why.setdefault((src, dst), name)
    return graph, why


def unit_of(src):
    for name, files in ENGINES.items():
        if src in files:
            return name
    return src


def unit_cycles(graph, why):
    units = collections.defaultdict(set)
    for src, dsts in graph.items():
        for dst in dsts:
            a, b = unit_of(src), unit_of(dst)
            if a != b:
                units[a].add(b)
    found = cycles(units)
    diag = []
    for comp in found:
        for src, dsts in sorted(graph.items()):
            for dst in sorted(dsts):
                if unit_of(src) in comp and unit_of(dst) in comp and unit_of(src) != unit_of(dst):
                    diag.append("%s -> %s (%s)" % (src, dst, why[(src, dst)]))
    return found, diag


# ---- the checks, on made-up trees first ----

def fake_tree(files):
    top = tempfile.mkdtemp(prefix="petrel-arrows-")
    for rel, text in files.items():
        path = os.path.join(top, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return top


def self_tests():
    core = fake_tree({
        "deliver/client.c": '#include "config.h"\n#include "smtpd/smtp_parse.h"\n#include "lib/log.h"\n',
        "smtpd/content.c": '#include "qmgr/route.h"\n',
        "lib/log.c": '#include "mail/addr.h"\n#include "lib/log.h"\n',
        "mail/addr.c": '#include "lib/log.h"\n#include "log.h"\n',
        "qmgr/qmgr.c": '#include "deliver/deliver.h"\n',
        "master/master.c": '#include "smtpd/smtpd.h"\n#include "smtpd/smtpd_int.h"\n',
        "tables/t.c": '#include "smtpd/anvil.h"\n',
    })
    problems = arrow_problems(include_arrows(core))
    text = "\n".join(problems)
    ok("deliver/client.c: role deliver/ includes another role's header smtpd/smtp_parse.h" in problems,
       "self-test: an arrow from deliver/ into smtpd/ is reported", problems)
    ok("smtpd/content.c: role smtpd/ includes another role's header qmgr/route.h" in problems,
       "self-test: an arrow from smtpd/ into qmgr/ is reported")
    ok("master/master.c: role master/ includes another role's header smtpd/smtpd_int.h" in problems
       and "smtpd/smtpd.h" not in text, "self-test: an allowed arrow passes, the next header of that folder does not")
    ok("tables/t.c: shared folder tables/ includes role header smtpd/anvil.h" in problems,
       "self-test: a shared folder including a role is reported")
    ok("mail/addr.c: #include \"log.h\" does not name its folder" in problems,
       "self-test: an include without its folder is reported")
    ok(not any(p.startswith("qmgr/") or "config.h\"" in p for p in problems),
       "self-test: qmgr -> deliver and autoconf's config.h pass")
    fc = folder_cycles(include_arrows(core))
    ok(["lib", "mail"] in fc and ["deliver", "qmgr", "smtpd"] in fc,
       "self-test: circles between folders are found (lib <-> mail, deliver -> smtpd -> qmgr -> deliver)", [repr(fc)])
    graph = {"a/x.c": {"a/y.c"}, "a/y.c": {"a/x.c"}, "smtpd/session.c": {"smtpd/commands.c"},
             "smtpd/commands.c": {"smtpd/session.c", "smtpd/rcpt_maps.c"}, "smtpd/rcpt_maps.c": {"lib/log.c"}}
    why = {(s, d): "f" for s, ds in graph.items() for d in ds}
    found, _ = unit_cycles(graph, why)
    ok(found == [["a/x.c", "a/y.c"]], "self-test: a circle between two files is found, one inside an engine is not",
       [repr(found)])
    graph["smtpd/rcpt_maps.c"].add("smtpd/session.c")
    found, _ = unit_cycles(graph, {(s, d): "f" for s, ds in graph.items() for d in ds})
    ok(len(found) == 2 and any("smtpd/rcpt_maps.c" in c for c in found),
       "self-test: a circle between an engine and another file is found", [repr(found)])
    subprocess.run(["rm", "-rf", core], check=False)


def main():
    self_tests()
    core = os.path.join(TOP_SRCDIR, "core")
    arrows = include_arrows(core)
    ok(len(arrows) > 100, "core/ has its #include lines (%d)" % len(arrows))
    problems = arrow_problems(arrows)
    ok(not problems, "no role includes another role's header except the arrows written down here, "
                     "no shared folder includes a role", problems)
    fc = folder_cycles(arrows)
    ok(not fc, "no circle between folders", [" <-> ".join(c) for c in fc])
    for (folder, target), reason in sorted(ROLE_ARROWS.items()):
        used = any(a[1] == folder and (a[3] == target or a[2] == target) for a in arrows)
        ok(used, "allowed arrow %s -> %s is still used (%s)" % (folder, target, reason))
    objs = objects(TOP_BUILDDIR)
    ok(len(objs) > 50, "the core's objects are built (%d)" % len(objs))
    for files in ENGINES.values():
        missing = sorted(f for f in files if f not in objs)
        ok(not missing, "every file of an engine exists: %s" % ", ".join(sorted(files)), missing)
    graph, why = call_graph(objs)
    found, diag = unit_cycles(graph, why)
    ok(not found, "no circle between files (engines count as one)", diag)
    print("1..%d" % plan)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
