"""No map result that names a mailbox path, a user or group ID or a next hop may
copy text from the recipient address. With virtual_mailbox_maps =
regexp:{/^(.+)@virtual.test$/ virtual.test/$1/}, a client chooses the directory
its mail is written to (RCPT TO:<.@virtual.test> wrote into the domain's own
directory, "bob/cur@virtual.test" inside another user's Maildir); with
transport_maps the next hop. Postfix opens these maps with DICT_FLAG_NO_REGSUB
("that would open a security hole", virtual(8)); Petrel refuses such a table
when the configuration loads, naming the parameter, the file and the line.
virtual_alias_maps and canonical maps keep $1 (their result is an address).
Found by the address/router fuzz target (t/fuzz/fuzz_address.c)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PETRELD, Petrel, Tap  # noqa: E402

t = Tap()
QMGR = "qmgr unix n - n 300 1 qmgr\n"


def check_config(p, settings, files):
    for name, text in files.items():
        p.write_file(name, text)
    merged = dict(p.settings)
    merged.update(settings)
    p.write_main_cf(merged)
    return subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)


cases = [
    ("virtual_mailbox_maps", {"virtual_mailbox_domains": "virtual.test", "virtual_mailbox_base": "/nonexistent"},
     "/^(.+)@virtual\\.test$/ virtual.test/$1/\n"),
    ("virtual_uid_maps", {"virtual_mailbox_domains": "virtual.test", "virtual_mailbox_base": "/nonexistent",
                          "virtual_mailbox_maps": "inline:{ {a@virtual.test = virtual.test/a/} }"},
     "/^uid-([0-9]+)@virtual\\.test$/ $1\n"),
    ("transport_maps", {}, "/^(.*)@relay\\.test$/ smtp:[$1.example]\n"),
    ("sender_dependent_relayhost_maps", {}, "/^(.*)@sender\\.test$/ [${1}.example]\n"),
]
for param, extra, rules in cases:
    with Petrel(t, start=False, extra_services=QMGR) as p:
        path = os.path.join(p.dir, "map.regexp")
        settings = dict(extra)
        settings[param] = "regexp:" + path
        r = check_config(p, settings, {"map.regexp": rules})
        t.ok(r.returncode != 0, "%s with $1: the configuration is refused" % param, r.stderr)
        t.like(r.stderr, r"main\.cf:\d+: %s: regexp:%s line 1: \$number is not allowed in this table" % (param, path),
               "%s: the error names the parameter, the file and the line" % param)
        # The same map without substitution is fine.
        r = check_config(p, settings, {"map.regexp": rules.replace("$1", "x").replace("${1}", "x")})
        t.is_(r.returncode, 0, "%s: a regexp without $number loads" % param)

# Maps whose result is an address keep $1.
with Petrel(t, start=False, extra_services=QMGR) as p:
    path = os.path.join(p.dir, "valias.regexp")
    r = check_config(p, {"virtual_alias_maps": "regexp:" + path,
                         "canonical_maps": "regexp:" + path},
                     {"valias.regexp": "/^(.*)@old\\.test$/ $1@petrel.test\n"})
    t.is_(r.returncode, 0, "virtual_alias_maps and canonical_maps may use $1")
t.done()
