"""The core's side of module control commands (plugin API 1.1
petrel_command), through cmdmod: arguments as given (--json, --), an answer
inside run and one after a timer, the deadline (NAME_hook_timeout) and a late
answer through the stale handle, a second answer, a worker that dies while
it runs a command (and its replacement serving the next), an answer cut at
the frame size, petrelctl modules listing commands, and a module declaring a
command twice refused at load."""
import json
import re
import subprocess
import time

from harness import PETRELD, Petrel, Tap, wait_for
from modlib import module_dir

t = Tap()
mods = module_dir("cmdmod", "badcmdmod")


def check(got, want, desc, extra=""):
    return t.ok(got == want, desc, "got:  %r\nwant: %r\n%s" % (got, want, extra))


def ctl(p, *args):
    r = p.petrelctl(*args)
    return r.returncode, r.stdout, r.stderr


with Petrel(t, main_cf={"modules": "cmdmod", "module_directory": mods, "cmdmod_hook_timeout": "1s",
                        "smtpd_workers": "2"}) as p:
    check(ctl(p, "cmdmod", "echo", "--x", "a b"), (2, "", "petrelctl cmdmod echo: unknown option \"--x\"\n"
                                                        "usage: petrelctl cmdmod echo [--json] [WORD...]\n"),
          "an unknown option before the arguments is refused")
    check(ctl(p, "cmdmod", "echo", "a b", "", "--x"), (0, "3: [a b] [] [--x]\n", ""),
          "after the first argument, words starting with -- are arguments")
    check(ctl(p, "cmdmod", "echo", "--", "--x", "a b", ""), (0, "3: [--x] [a b] []\n", ""),
          "arguments reach the handler as given (-- ends the options)")
    rc, out, err = ctl(p, "cmdmod", "echo", "--json", "quote\"", "back\\slash")
    check((rc, json.loads(out) if rc == 0 else out), (0, ["quote\"", "back\\slash"]),
          "--json is taken off; petrel_command_print_json_string escapes", err)
    check(ctl(p, "cmdmod", "echo", "tab\there"), (2, "", "petrelctl cmdmod echo: argument 1 is not printable text "
                                                   "(control characters)\nusage: petrelctl cmdmod echo [--json] "
                                                   "[WORD...]\n"), "control characters are refused")
    check(ctl(p, "cmdmod", "later"), (0, "answered after a timer\n", ""), "an answer from a later callback")
    rc, out, err = ctl(p, "cmdmod", "never")
    check((rc, err), (1, "module cmdmod did not answer command \"never\" within 1000 ms (cmdmod_hook_timeout); "
                         "see the log\n"), "no answer within the module's deadline: petrelctl is told")
    t.ok(p.wait_log(r"warning: module cmdmod: command never: no answer within 1000 ms") is not None,
         "the worker logs the timeout")
    t.ok(p.wait_log(r"module cmdmod: petrel_command_print: the command request is no longer valid \(already "
                    r"answered, timed out") is not None, "the late answer through the stale handle is logged, "
                                                          "and ignored")
    stale = r"module cmdmod: petrel_command_print: the command request is no longer valid"
    before = len(re.findall(stale, p.log()))
    check(ctl(p, "cmdmod", "twice"), (1, "", "first\n"), "the first answer counts")
    # a line of its own: the late answer of "never" above logged the same words
    t.ok(wait_for(lambda: len(re.findall(stale, p.log())) > before, timeout=30),
         "the second is logged and ignored")
    rc, out, err = ctl(p, "cmdmod", "big")
    t.ok(rc == 0 and out.endswith("(output cut at 1 MiB)\n") and 1000000 < len(out) < (1 << 20),
         "an answer past the frame size is cut and says so", "rc %d, %d bytes, err %r" % (rc, len(out), err))
    rc, out, err = ctl(p, "cmdmod", "die")
    check((rc, err), (1, "petrelctl cmdmod die: the smtpd worker running it exited before it answered\n"),
          "a worker that dies running a command: petrelctl is told at once")
    ok = False
    deadline = time.time() + 30
    while time.time() < deadline:
        rc, out, err = ctl(p, "cmdmod", "echo", "again")
        if rc == 0:
            ok = out == "1: [again]\n"
            break
        time.sleep(0.1)
    t.ok(ok, "the next command is served (by the other worker or the restarted one)", out + err)
    rc, out, err = ctl(p, "modules")
    t.like(out, r"(?m)^  commands \(petrelctl MODULE COMMAND\): echo later never twice die big$",
           "petrelctl modules lists a module's commands")

with Petrel(t, start=False, main_cf={"modules": "badcmdmod", "module_directory": mods}) as p:
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True)
    t.ok(r.returncode != 0, "a module that declares a command twice is refused (petreld -n)")
    t.like(r.stderr, r"module badcmdmod \(.*badcmdmod\.so\): commands: \"echo\" is declared twice", "naming it")
t.done()
