"""Module loading: load, refuse (ABI, permissions, duplicate, unknown), parameters, petrelctl modules."""
import os
import shutil
import subprocess

from harness import PETRELD, Petrel, Tap
from modlib import module_dir

t = Tap()


def check(p):
    return subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)


mods = module_dir("testmod", "abimod")

with Petrel(t, start=False, main_cf={"modules": "testmod", "module_directory": mods}) as p:
    r = check(p)
    t.is_(r.returncode, 0, "a valid module loads (petreld -n)")
    r = p.petrelctl("modules")
    t.is_(r.returncode, 0, "petrelctl modules runs")
    t.like(r.stdout, r"testmod 1\.0 \(ABI 1\.1\) .*testmod\.so", "petrelctl modules names the module, version, ABI and file")
    t.like(r.stdout, r"hooks: connect helo mail rcpt data header end_of_headers body end_of_message queued delivery",
           "it lists the hooks the module implements")
    t.like(r.stdout, r"restrictions: check_testmod", "and the restrictions it provides")
    r = p.petrelctl("config", "-d", "testmod_delay", "testmod_default_action", "testmod_hook_timeout")
    t.like(r.stdout, r"testmod_delay = 1s", "petrelctl config -d shows a module parameter's default")
    t.like(r.stdout, r"testmod_default_action = continue", "and the per-module default action")
    t.like(r.stdout, r"testmod_hook_timeout = ", "and the per-module hook timeout")

# A table type's open may keep per-process state in the module's data where
# init never runs (petreld -n, petrelctl): the core calls fini there too,
# after closing the tables, or the state leaks.
stmods = module_dir("statemod")
with Petrel(t, start=False, main_cf={"modules": "statemod", "module_directory": stmods,
                                     "smtpd_recipient_restrictions": "check_recipient_access statemod:access, "
                                                                     "permit_mynetworks, reject_unauth_destination"}) as p:
    r = check(p)
    t.ok(r.returncode == 0, "petreld -n opens a module's table", r.stderr)
    t.like(r.stderr, r"module statemod: fini: init ran: no, tables opened: [1-9]",
           "petreld -n: fini frees the state a table open made, though init never ran")
    r = p.petrelctl("map", "query", "statemod:anything", "key")
    t.is_(r.stdout.strip(), "here", "petrelctl map query reads the module's table")
    t.like(r.stderr, r"module statemod: fini: init ran: no, tables opened: 1\n",
           "petrelctl: fini runs after the query's table is closed")

# The hook table: per phase, the modules in the order they run.
both = module_dir("apimod", "testmod")
with Petrel(t, start=False, main_cf={"modules": "apimod testmod", "module_directory": both}) as p:
    r = p.petrelctl("modules")
    listing = r.stdout[r.stdout.find("phases"):]
    t.like(listing, r"^phases \(modules run in this order\):\n", "petrelctl modules lists the phases")
    t.like(listing, r"\n  connect: apimod, testmod   \(smtpd, may suspend\)\n", "connect: both, in modules order")
    t.like(listing, r"\n  mail: apimod, testmod   \(smtpd, may suspend\)\n", "mail: both")
    t.like(listing, r"\n  rcpt: testmod   \(smtpd, may suspend\)\n", "rcpt: only the module that has the hook")
    t.like(listing, r"\n  header: testmod   \(smtpd\)\n", "content hooks do not suspend")
    t.like(listing, r"\n  queued: testmod   \(smtpd, informational\)\n", "informational hooks are marked")
    t.like(listing, r"\n  delivery: testmod   \(queue manager, informational\)\n", "delivery runs in the queue manager")
    t.ok("starttls:" not in listing and "auth:" not in listing, "phases nobody hooks are not listed")

with Petrel(t, start=False, main_cf={"modules": "testmod", "module_directory": mods, "testmod_delay": "soon"}) as p:
    r = check(p)
    t.ok(r.returncode != 0, "a bad module parameter value fails the check")
    t.like(r.stderr, r"main\.cf:\d+: testmod_delay: ", "the error names file, line and the module parameter")

for action, ok in (("accept", True), ("tempfail", True), ("reject", False)):
    with Petrel(t, start=False, main_cf={"modules": "testmod", "module_directory": mods,
                                          "testmod_default_action": action}) as p:
        r = check(p)
        if ok:
            t.ok(r.returncode == 0, "NAME_default_action = %s is taken" % action, r.stderr)
        else:
            t.like(r.stderr, r"main\.cf:\d+: testmod_default_action: .*reject",
                   "NAME_default_action = %s is refused, naming file, line and parameter" % action)

with Petrel(t, start=False, main_cf={"modules": "testmod", "module_directory": mods,
                                      "smtpd_sender_restrictions": "check_testmod sometimes"}) as p:
    r = check(p)
    t.ok(r.returncode != 0, "a module restriction with a bad argument fails the check")
    t.like(r.stderr, r"smtpd_sender_restrictions: restriction check_testmod \(module testmod\): unknown word \"sometimes\"",
           "the module's compile error is shown with the list and the module")

with Petrel(t, start=False, main_cf={"smtpd_sender_restrictions": "check_testmod ok"}) as p:
    r = check(p)
    t.like(r.stderr, r"unknown restriction \"check_testmod\"", "a module restriction without its module is refused")

with Petrel(t, start=False, main_cf={"modules": "abimod", "module_directory": mods}) as p:
    r = check(p)
    t.ok(r.returncode != 0, "a module built for another ABI major is refused")
    t.like(r.stderr, r"module abimod \(.*abimod\.so\) was built for plugin ABI 2\.0, this petreld provides 1\.1",
           "the message names the module, its ABI and ours")

with Petrel(t, start=False, main_cf={"modules": "nosuchmod", "module_directory": mods}) as p:
    r = check(p)
    t.ok(r.returncode != 0, "an unknown module is refused")
    t.like(r.stderr, r"unknown module \"nosuchmod\": no .*nosuchmod\.so", "the message names the missing file")

with Petrel(t, start=False, main_cf={"modules": "testmod testmod", "module_directory": mods}) as p:
    r = check(p)
    t.like(r.stderr, r"module \"testmod\" is listed twice", "a duplicate is refused")

with Petrel(t, start=False, main_cf={"modules": "../testmod", "module_directory": mods}) as p:
    r = check(p)
    t.like(r.stderr, r"\"\.\./testmod\" is not a valid module name", "a path is not a module name")

writable = module_dir("testmod", mode=0o666)
with Petrel(t, start=False, main_cf={"modules": "testmod", "module_directory": writable}) as p:
    r = check(p)
    t.ok(r.returncode != 0, "a group/other-writable module file is refused")
    t.like(r.stderr, r"testmod\.so is writable by group or others \(mode 0666\)", "the message says why")

open_dir = module_dir("testmod")
os.chmod(open_dir, 0o777)
with Petrel(t, start=False, main_cf={"modules": "testmod", "module_directory": open_dir}) as p:
    r = check(p)
    t.like(r.stderr, r"module_directory .* is writable by group or others", "a world-writable module directory is refused")

# The daemon itself refuses to start with a bad module, and says why.
with Petrel(t, start=False, main_cf={"modules": "abimod", "module_directory": mods}) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and "not starting" in r.stderr, "petreld does not start with a refused module")

# A module loaded by a running daemon: init runs in the workers.
with Petrel(t, main_cf={"modules": "testmod", "module_directory": mods}) as p:
    t.ok(p.wait_log(r"petrel/smtpd\[\d+\]: module testmod: initialised \(delay 1 s\)") is not None,
         "init runs in every smtpd worker with the module's parameters")

t.done()
