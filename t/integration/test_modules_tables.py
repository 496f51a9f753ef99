"""Tables for modules (Module API 1.1): tablemod opens tablemod_sender_map with petrel_table_open
and looks senders up with petrel_table_lookup from its mail hook. With a socketmap: table (the
socketmap module, a real socketmap server) and with an inline: table (the core): found continues,
not found is the module's 550, the server down is the module's 451, and every answer reaches the
module after petrel_table_lookup has returned. fini closes the table (petrel_table_close): a lookup
and a second close through it are then logged refusals. A table that cannot be opened is refused by
petreld -n and the start, through the module's check() (petrel_table_check), with its reason."""
import os
import shutil
import subprocess

from harness import PETRELD, TOP_BUILDDIR, Petrel, Tap
from modlib import module_dir
from socketmaplib import SocketmapServer

t = Tap(timeout=120)
MODS = module_dir("tablemod")
shutil.copyfile(os.path.join(TOP_BUILDDIR, "modules", "socketmap", ".libs", "socketmap.so"),
                os.path.join(MODS, "socketmap.so"))
os.chmod(os.path.join(MODS, "socketmap.so"), 0o644)

server = SocketmapServer({"senders": {b"known@example.org": b"OK"}})
tables = {"socketmap": "socketmap:inet:127.0.0.1:%d:senders" % server.port,
          "inline": "inline:{ known@example.org=OK }"}

for kind, spec in tables.items():
    with Petrel(t, main_cf={"modules": "socketmap tablemod", "module_directory": MODS,
                            "socketmap_timeout": "2s", "tablemod_sender_map": spec}) as p:
        c = p.connect()
        c.ehlo("client.test")
        t.is_(c.cmd("MAIL FROM:<KNOWN@example.org>"), "250 2.1.0 Ok", "%s: a known sender continues" % kind)
        c.cmd("RSET")
        t.is_(c.cmd("MAIL FROM:<stranger@example.org>"), "550 5.7.1 Sender unknown here",
              "%s: an unknown sender gets the module's refusal" % kind)
        t.ok(p.wait_log(r"tablemod: answer status=1 value=OK early=0"), "%s: found, after the call returned" % kind)
        t.ok(p.wait_log(r"tablemod: answer status=0 value=\(none\) early=0"), "%s: not found, likewise" % kind)
        if kind == "socketmap":
            t.ok(b"known@example.org" in server.seen("senders"),
                 "socketmap: the module's key was folded (PETREL_TABLE_FOLD_CASE) and sent to the server")
            server.stop()
            t.is_(c.cmd("MAIL FROM:<known@example.org>"), "451 4.3.0 Temporary lookup failure",
                  "socketmap: the server down is PETREL_TABLE_RETRY: the module defers")
            t.ok(p.wait_log(r"tablemod: answer status=-1 value=\(none\) early=0"), "socketmap: retry, after the call")
            server.restart()
            t.is_(c.cmd("MAIL FROM:<known@example.org>"), "250 2.1.0 Ok", "socketmap: the server is back")
        c.close()
        p.stop()
        log = p.log()
        t.ok("tablemod: closed; a lookup after the close returned -1" in log,
             "%s: fini closed the table; a lookup through it is refused" % kind, log[-1500:])
        t.ok("module tablemod: petrel_table_lookup: the table is closed" in log and
             "module tablemod: petrel_table_close: the table is closed already" in log,
             "%s: the lookup and the second close are logged" % kind)

with Petrel(t, start=False, main_cf={"modules": "tablemod", "module_directory": MODS,
                                     "tablemod_sender_map": "nosuch:thing"}) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
    t.ok(r.returncode != 0, "petreld -n refuses a table the module cannot open (petrel_table_check in its check)",
         r.stderr)
    t.like(r.stderr, r"main\.cf:\d+: tablemod_sender_map: nosuch:thing: unsupported dictionary type: nosuch",
           "naming main.cf's line, the parameter and the reason")
    p.start(wait=False)
    t.ok(p.wait_log(r"tablemod_sender_map: nosuch:thing: unsupported dictionary type: nosuch"),
         "the start is refused too", p.log()[-2000:])

server.stop()
t.done()
