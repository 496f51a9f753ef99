"""Local lookup tables in a running petreld: hash: (built in), lmdb:, cdb: and sqlite: (modules)
as virtual_alias_maps, each found, not found and case folded at RCPT and in delivery; and every
kind of bad table reported by petreld -n with the file (and line) to fix: a table never built,
a damaged compiled file, a bad sqlite query, a table type whose module is not loaded, and a
compiled file older than its source."""
import os
import subprocess
import time

from harness import PETRELD, Petrel, Tap, maildir_messages, wait_for
from tablelib import TABLE_MODULES, bundled_module_dir

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
MODULES = bundled_module_dir(*TABLE_MODULES)


def petreld_check(p):
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


with Petrel(t, extra_services=QMGR, start=False) as p:
    mail = p.make_dir()
    sources = {}
    for kind in ("hash", "lmdb", "cdb"):
        sources[kind] = p.write_file("valias-" + kind, "Sales@%s.test   box@vmail.test\n"
                                     "info@%s.test    box@vmail.test, other@vmail.test\n" % (kind, kind))
    db = os.path.join(p.dir, "valias.sqlite")
    subprocess.run(["sqlite3", db, "CREATE TABLE va(address TEXT, target TEXT);"
                    "INSERT INTO va VALUES ('sales@sqlite.test', 'box@vmail.test'),"
                    "('info@sqlite.test', 'box@vmail.test'), ('info@sqlite.test', 'other@vmail.test')"], check=True)
    if p.pw:
        os.chown(db, p.pw.pw_uid, p.pw.pw_gid)
    cf = p.write_file("valias-sqlite.cf", "dbpath = %s\nquery = SELECT target FROM va WHERE address = '%%s'\n" % db)
    conf = dict(p.settings)
    conf.update({"modules": "lmdb cdb sqlite", "module_directory": MODULES,
                 "virtual_alias_domains": "hash.test lmdb.test cdb.test sqlite.test",
                 "virtual_alias_maps": "hash:%s lmdb:%s cdb:%s sqlite:%s"
                                       % (sources["hash"], sources["lmdb"], sources["cdb"], cf),
                 "virtual_mailbox_domains": "vmail.test", "virtual_mailbox_base": mail,
                 "virtual_mailbox_maps": "inline:{ {box@vmail.test = box/}, {other@vmail.test = other/} }"})
    p.write_main_cf(conf)

    rc, out = petreld_check(p)
    t.ok(rc != 0 and "virtual_alias_maps: hash:%s: open database %s.lmdb: No such file or directory; "
         "build it with `petrelctl map build hash:%s`" % (sources["hash"], sources["hash"], sources["hash"]) in out,
         "petreld -n: a table never built names the command that builds it", out)
    t.ok("main.cf:" in out and ": virtual_alias_maps: " in out, "and the main.cf line that names the table", out)
    for kind in ("hash", "lmdb", "cdb"):
        r = p.petrelctl("map", "build", "%s:%s" % (kind, sources[kind]))
        t.is_(r.returncode, 0, "petrelctl map build %s: as the mail owner" % kind)
    rc, out = petreld_check(p)
    t.ok(rc == 0, "petreld -n accepts the built tables", out)
    p.start()

    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    for kind in ("hash", "lmdb", "cdb", "sqlite"):
        t.is_(c.cmd("RCPT TO:<sales@%s.test>" % kind), "250 2.1.5 Ok", "%s: a listed address is accepted" % kind)
        t.is_(c.cmd("RCPT TO:<SALES@%s.TEST>" % kind.upper()), "250 2.1.5 Ok",
              "%s: in any case (keys are folded)" % kind)
        t.is_(c.cmd("RCPT TO:<nobody@%s.test>" % kind),
              "550 5.1.1 <nobody@%s.test>: Recipient address rejected: User unknown in virtual alias table" % kind,
              "%s: an unlisted address is refused at RCPT" % kind)
    # Hostile keys reach the SQL table only as data; a NUL byte never reaches it.
    t.is_(c.cmd("RCPT TO:<\"x' OR '1'='1\"@sqlite.test>"),
          "550 5.1.1 <\"x' OR '1'='1\"@sqlite.test>: Recipient address rejected: User unknown in virtual alias "
          "table", "sqlite: a key with SQL in it matches nothing")
    t.is_(c.cmd("RCPT TO:<\"%s%%\"@sqlite.test>"),
          "550 5.1.1 <%s%%@sqlite.test>: Recipient address rejected: User unknown in virtual alias table",
          "sqlite: a key with % in it matches nothing")
    c.send(b"RCPT TO:<sales@sqlite.test\x00' OR '1'='1>\r\n")
    t.is_(c.read_reply(), "500 5.5.2 Error: bad syntax", "a NUL byte in RCPT never becomes part of a key")
    t.is_(c.cmd("RCPT TO:<sales@sqlite.test>"), "250 2.1.5 Ok", "and the session goes on")
    c.cmd("RSET")
    c.close()
    for kind in ("hash", "lmdb", "cdb", "sqlite"):
        c = p.connect()
        reply = c.send_message("sender@example.org", ["info@%s.test" % kind], "Subject: via %s\r\n\r\nx\r\n" % kind)
        t.like(reply, r"^250 2\.0\.0 Ok: queued", "%s: mail to a list address is accepted" % kind)
        c.close()
    got = wait_for(lambda: len(maildir_messages(os.path.join(mail, "box"))) == 4 and
                   len(maildir_messages(os.path.join(mail, "other"))) == 4, timeout=30)
    t.ok(got, "every table's list expands to both mailboxes",
         "%d %d" % (len(maildir_messages(os.path.join(mail, "box"))),
                    len(maildir_messages(os.path.join(mail, "other")))))
    t.ok("lookup error" not in p.log() and "lookup failure" not in p.log(), "no lookup errors logged")

    # Damage the cdb file: petreld -n names it; a reload is refused and the
    # running tables keep serving.
    with open(sources["cdb"] + ".cdb", "r+b") as f:
        f.truncate(100)
    rc, out = petreld_check(p)
    t.ok(rc != 0 and "cdb:%s: open database %s.cdb: not a cdb file (or a damaged one)" % (sources["cdb"], sources["cdb"])
         in out, "petreld -n: a damaged cdb file is named", out)

# One bad thing at a time, each reported by petreld -n with the file and the line to fix.
with Petrel(t, start=False) as p:
    db = os.path.join(p.dir, "x.sqlite")
    subprocess.run(["sqlite3", db, "CREATE TABLE t(k TEXT, v TEXT)"], check=True)
    bad_query = p.write_file("bad.cf", "# aliases\ndbpath = %s\n\nquery = SELECT v FROM nosuchtable WHERE k = '%%s'\n"
                             % db)
    bad_syntax = p.write_file("syntax.cf", "dbpath = %s\nquery\n" % db)
    bad_expansion = p.write_file("expansion.cf", "dbpath = %s\nquery = SELECT v FROM t WHERE k = '%%x'\n" % db)
    no_db = p.write_file("nodb.cf", "dbpath = %s/missing.sqlite\nquery = SELECT v FROM t WHERE k = '%%s'\n" % p.dir)
    garbage = p.write_file("garbage.lmdb", "this is not an LMDB file, whatever its name says........\n")
    cases = [
        ({"modules": "sqlite", "module_directory": MODULES, "virtual_alias_maps": "sqlite:" + bad_query},
         "sqlite:%s line 4: query: no such table: nosuchtable" % bad_query, "a query naming a missing table"),
        ({"modules": "sqlite", "module_directory": MODULES, "virtual_alias_maps": "sqlite:" + bad_syntax},
         "sqlite:%s line 2: missing '=' after attribute name" % bad_syntax, "a line without '='"),
        ({"modules": "sqlite", "module_directory": MODULES, "virtual_alias_maps": "sqlite:" + bad_expansion},
         "sqlite:%s line 2: query: invalid %%x" % bad_expansion, "an unknown % expansion"),
        ({"modules": "sqlite", "module_directory": MODULES, "virtual_alias_maps": "sqlite:" + no_db},
         "sqlite:%s line 1: dbpath: open database %s/missing.sqlite" % (no_db, p.dir), "a database that is not there"),
        ({"virtual_alias_maps": "lmdb:" + garbage[:-5]},
         "table type lmdb is not available: it is provided by the lmdb module: add lmdb to `modules`",
         "lmdb: without its module"),
        ({"virtual_alias_maps": "hash:" + garbage[:-5]},
         "hash:%s: open database %s: MDB_INVALID" % (garbage[:-5], garbage), "a file that is not LMDB"),
        ({"smtpd_recipient_restrictions": "check_recipient_access hash:%s/access, permit" % p.dir},
         "hash:%s/access: open database %s/access.lmdb: No such file or directory; the source file %s/access does "
         "not exist either" % (p.dir, p.dir, p.dir), "an access table with neither source nor compiled file"),
    ]
    base = dict(p.settings)
    for settings, want, what in cases:
        conf = dict(base)
        conf.update(settings)
        p.write_main_cf(conf)
        rc, out = petreld_check(p)
        t.ok(rc != 0 and want in out, "petreld -n: %s" % what, out)

    # A compiled file older than its source: Postfix's warning (not an error).
    src = p.write_file("transport", "example.com smtp:[127.0.0.1]:2525\n")
    r = p.petrelctl("map", "build", "hash:" + src)
    old = time.time() - 1000
    os.utime(src + ".lmdb", (old, old))
    os.utime(src, (old + 500, old + 500))
    conf = dict(base)
    conf["transport_maps"] = "hash:" + src
    p.write_main_cf(conf)
    rc, out = petreld_check(p)
    t.ok(rc == 0 and "database %s.lmdb is older than source file %s" % (src, src) in out,
         "petreld -n warns when the source changed after the last build", out)
    t.is_(out.count("is older than source file"), 1, "once, not once per process or per table list")
    r = p.petrelctl("map", "query", "hash:" + src, "example.com")
    t.ok("is older than source file" in r.stderr, "petrelctl map query warns too", r.stderr)

t.done()
