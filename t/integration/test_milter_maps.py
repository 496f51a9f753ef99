"""Postfix's smtpd_milter_maps (3.2) in the milter module: the client's IP
address looked up in the tables at connect gives the session's milter
list (smtpd_milters' syntax, replacing smtpd_milters) or DISABLE; not
found: smtpd_milters. Real peers: two of our libmilter filters, told
apart by their replies and their logs."""
import os
import subprocess

from harness import PETRELD, Petrel, Smtp, Tap, refused_port
from modlib import bundled_module_dir
from peers import TestFilter

t = Tap(timeout=300)
mods = bundled_module_dir("milter")


def start(milters, table_lines, **extra):
    c = {"modules": "milter", "module_directory": mods, "smtpd_milters": milters}
    c.update(extra)
    p = Petrel(t, main_cf=c, start=False)
    path = os.path.join(p.conf, "milter_map")
    with open(path, "w") as fh:
        fh.write("".join(line + "\n" for line in table_lines))
    p.settings["smtpd_milter_maps"] = "cidr:" + path
    p.write_main_cf(p.settings)
    p.start()
    return p


def mail(p):
    c = Smtp(p.port)
    c.ehlo()
    r = c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("QUIT")
    c.close()
    return r


def connects(f):
    return sum(1 for ln in f.log() if ln.startswith("connect "))


A_NO = "554 5.7.1 A says no"
B_NO = "554 5.7.1 B says no"
with TestFilter(verdicts={"mail": "reply:554:5.7.1:A says no"}) as a, \
        TestFilter(verdicts={"mail": "reply:554:5.7.1:B says no"}) as b:
    p = start(a.endpoint, ["127.0.0.0/8 DISABLE"])
    try:
        t.like(mail(p), r"^250 ", "the map says DISABLE for the client: no milter")
        t.is_(connects(a), 0, "  smtpd_milters' milter was not asked")
    finally:
        p.stop()
    p = start(a.endpoint, ["127.0.0.1 disable"])
    try:
        t.like(mail(p), r"^250 ", "DISABLE in any case")
    finally:
        p.stop()
    p = start(a.endpoint, ["127.0.0.0/8 " + b.endpoint])
    try:
        t.is_(mail(p), B_NO, "the map's list replaces smtpd_milters for the client")
        t.is_(connects(a), 0, "  smtpd_milters' milter was not asked")
        t.is_(mail(p), B_NO, "  and again (the list built once)")
    finally:
        p.stop()
    p = start(a.endpoint, ["10.0.0.0/8 DISABLE"])
    try:
        t.is_(mail(p), A_NO, "not in the map: smtpd_milters")
    finally:
        p.stop()
    p = start("", ["127.0.0.0/8 %s, %s" % (b.endpoint, a.endpoint)])
    try:
        t.is_(mail(p), B_NO, "smtpd_milters empty, the map names two milters: the first one answers")
    finally:
        p.stop()
    p = start(a.endpoint, ["127.0.0.0/8 { inet:127.0.0.1:%d, default_action=accept }" % refused_port()])
    try:
        t.like(mail(p), r"^250 ", "the { address, name=value } form: that milter's default_action (accept)")
    finally:
        p.stop()
    p = start(a.endpoint, ["127.0.0.0/8 bogus:127.0.0.1:10"])
    before = connects(a)
    try:
        c = Smtp(p.port, read_greeting=False)
        greeting = c.read_reply()
        c.close()
        t.like(greeting, r"^421 4\.3\.5 .*Server configuration problem - try again later",
               "an answer that is not a milter list: 421 4.3.5 at connect, no mail let through")
        t.ok(p.wait_log(r"smtpd_milter_maps: the answer \"bogus:127\.0\.0\.1:10\" for 127\.0\.0\.1: .*bogus")
             is not None, "  and logged with the table's answer")
        t.is_(connects(a), before, "  smtpd_milters' milter was not asked")
    finally:
        p.stop()

# a table that cannot be opened stops the start
p = Petrel(t, main_cf={"modules": "milter", "module_directory": mods, "smtpd_milters": "inet:127.0.0.1:9",
                       "smtpd_milter_maps": "cidr:/nonexistent/milter_map"}, start=False)
r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=60)
t.ok(r.returncode != 0 and "smtpd_milter_maps: " in r.stdout + r.stderr and "/nonexistent/milter_map" in
     r.stdout + r.stderr, "smtpd_milter_maps naming a table that does not open: refused, named",
     r.stdout + r.stderr)

t.done()
