"""ABI 1.x compatibility: plugins built against the ABI 1.0 headers (kept
verbatim in t/abi-1.0/: testmod and the example subject_tagger, as they were
then) load into today's petreld and work: their parameters, hooks,
suspension, restrictions, table types, SASL back-ends and edits are read
through the 1.0 layouts. A 1.1 module whose elements lack their size is
refused with a message that says what to do, and one built for a newer
minor is refused too, as is one that calls a function this petreld lacks."""
import base64
import subprocess
import time

from harness import PETRELD, Petrel, Tap, queue_file_bytes
from modlib import module_dir

t = Tap()
old = module_dir("testmod", "subject_tagger", built_in="abi10")
BASE = {"modules": "testmod subject_tagger", "module_directory": old, "testmod_delay": "1s",
        "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "testmod", "smtpd_sasl_path": "private/auth"}


def check(p):
    return subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)


with Petrel(t, start=False, main_cf=dict(BASE, smtpd_sender_restrictions="check_testmod reject")) as p:
    r = check(p)
    t.ok(r.returncode == 0, "petreld -n accepts modules built against ABI 1.0", r.stderr)
    r = p.petrelctl("modules")
    t.like(r.stdout, r"testmod 1\.0 \(ABI 1\.0\) ", "petrelctl modules says testmod was built for ABI 1.0")
    t.like(r.stdout, r"subject_tagger 1\.0 \(ABI 1\.0\) ", "and subject_tagger")
    t.like(r.stdout, r"restrictions: check_testmod\n", "its restriction is read through the 1.0 layout")
    t.like(r.stdout, r"table types: testmod:\n", "its table type")
    t.like(r.stdout, r"SASL back-ends: testmod\n", "its SASL back-end")
    t.like(r.stdout, r"parameters: testmod_log_hooks testmod_delay testmod_connect_reject\n", "and its parameters")
    r = p.petrelctl("config", "-d", "testmod_delay", "subject_tagger_tag")
    t.like(r.stdout, r"testmod_delay = 1s\nsubject_tagger_tag = \[SPAM\]", "1.0 parameter defaults are known")

with Petrel(t, start=False, main_cf=dict(BASE, testmod_delay="soon")) as p:
    r = check(p)
    t.like(r.stderr, r"main\.cf:\d+: testmod_delay: bad time value \"soon\"", "and their types are checked")

main_cf = dict(BASE, smtpd_sender_restrictions="check_sender_access testmod:abi",
               smtpd_recipient_restrictions="check_testmod slowok, reject", testmod_hook_timeout="1s")
with Petrel(t, main_cf=main_cf) as p:
    c = p.connect()
    t.is_(c.cmd("EHLO reject.helo.test"), "550 5.7.1 testmod rejects this HELO", "a 1.0 hook rejects")
    c.ehlo()
    c.cmd("MAIL FROM:<x@bad.example>")
    t.is_(c.cmd("RCPT TO:<u@petrel.test>"),
          "554 5.7.1 <x@bad.example>: Sender address rejected: testmod table abi refuses x@bad.example",
          "a 1.0 table type answers (at RCPT: smtpd_delay_reject)")
    c.cmd("RSET")
    t.is_(c.cmd("MAIL FROM:<reject-a@example.org>"), "550 5.7.1 testmod rejects this address",
          "a 1.0 mail hook rejects with its reply (petrel_set_reply)")
    start = time.time()
    t.is_(c.cmd("MAIL FROM:<slow-a@example.org>"), "250 2.1.0 Ok", "a 1.0 hook suspends and resumes")
    t.ok(time.time() - start >= 0.9, "after its delay")
    t.is_(c.cmd("RCPT TO:<u@petrel.test>"), "250 2.1.5 Ok", "a 1.0 restriction suspends and permits")
    c.cmd("RSET")
    t.is_(c.cmd("MAIL FROM:<hang-a@example.org>"), "250 2.1.0 Ok", "a 1.0 hook that never answers times out")
    c.cmd("RSET")
    t.is_(c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode()), "235 2.7.0 Authentication successful",
          "a 1.0 SASL back-end authenticates")
    r = c.send_message("sender@example.org", ["u@petrel.test"],
                       "Subject: hello\r\nX-Spam-Flag: YES\r\nX-Testmod-Add: X-Added: by testmod 1.0\r\n\r\nbody\r\n",
                       ehlo=False)
    t.like(r, r"^250 2\.0\.0 Ok: queued as ", "a message through both 1.0 plugins is accepted")
    qid = r.split()[-1]
    data = b"".join(queue_file_bytes(f) for f in p.queue_files() if f.endswith(qid))
    t.ok(b"\r\nSubject: [SPAM] hello\r\n" in data, "the 1.0 subject_tagger tagged the Subject", data[-400:])
    t.ok(b"\r\nX-Added: by testmod 1.0\r\n" in data, "the 1.0 testmod's header edit is applied", data[-400:])
    c.close()
    t.ok("panic" not in p.log(), "nothing crashed")

sized = module_dir("sizemod")
with Petrel(t, start=False, main_cf={"modules": "sizemod", "module_directory": sized}) as p:
    r = check(p)
    t.ok(r.returncode != 0, "a 1.1 module whose elements carry no size is refused")
    t.like(r.stderr, r"module sizemod \(.*sizemod\.so\): params\[0\] has size 0 where \d+ was expected: start each "
           r"entry with its PETREL_\.\.\._INIT macro", "naming the array, the entry and the fix")

future = module_dir("futuremod")
with Petrel(t, start=False, main_cf={"modules": "futuremod", "module_directory": future}) as p:
    r = check(p)
    t.ok(r.returncode != 0, "a module built for a newer ABI minor is refused")
    t.like(r.stderr, r"module futuremod \(.*futuremod\.so\) needs plugin ABI 1\.2, newer than this petreld's 1\.1: "
           r"upgrade Petrel", "saying which ABI it needs and ours")

# A 1.1 module built before petrel_sasl_server grew check_path: its shorter
# entries are read with their own stride (the second back-end is found).
old = module_dir("oldsaslmod")
with Petrel(t, main_cf={"modules": "oldsaslmod", "module_directory": old, "smtpd_sasl_auth_enable": "yes",
                        "smtpd_sasl_type": "oldsasl2"}) as p:
    r = check(p)
    t.ok(r.returncode == 0, "petreld -n accepts a 1.1 module with the first 1.1 petrel_sasl_server layout", r.stderr)
    c = p.connect()
    c.ehlo()
    t.ok("250-AUTH PLAIN" in c.lines, "and its second back-end serves AUTH", c.lines)
    c.close()

# A module that calls an API function this core lacks is refused when it
# is loaded (with lazy binding it loaded, and its first call killed the
# process), and the reason is the dynamic linker's, not "file not found".
undef = module_dir("undefmod")
with Petrel(t, start=False, main_cf={"modules": "undefmod", "module_directory": undef}) as p:
    r = check(p)
    t.ok(r.returncode != 0, "a module that needs a function this petreld lacks is refused (petreld -n)")
    t.like(r.stderr, r"module undefmod: cannot load .*undefmod\.so: .*undefined symbol: petrel_function_from_the_future",
           "naming the missing symbol")
    r = p.petrelctl("modules")
    t.like(r.stderr, r"undefined symbol: petrel_function_from_the_future", "petrelctl modules says the same")
t.done()
