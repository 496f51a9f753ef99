"""Local lookup tables without a daemon: petrelctl map and alias against Postfix's own postmap
and postalias on the same source files.

For hash: (an LMDB file, Postfix's lmdb: format), lmdb: and cdb:, the same source is built by
petrelctl and by postmap; then every lookup key gives the same answer from both files, read by
either program (Postfix reads Petrel's files and the other way round), and both dumps list the
same entries. The source has the awkward cases: mixed case, quoted keys, continuation and
comment lines, duplicates, lines without a value, an unbalanced quote, non-UTF-8 bytes. Also
-n (no NUL bytes), -F (base64 of files), -i and -d, aliases(5) files against postalias,
sqlite_table(5) files with hostile keys against postmap -q sqlite:, file permissions, errors
that name the file and the command to run, and concurrent -i runs that must not lose updates.
"""
import os
import subprocess
import threading

from harness import Tap
from tablelib import Postfix, Workspace, dump_lines

t = Tap(timeout=300)
w = Workspace()
pf = Postfix()

SOURCE = (b"# a postmap(1) source file\n"
          b"   orphan text that continues nothing\n"
          b"Foo@Example.COM   Bar Value\n"
          b"\"quoted key\"   quoted value\n"
          b"user+ext@example.com   with extension\n"
          b"@example.org  catchall\n"
          b"multi   first\n"
          b"   continued line\n"
          b"# a comment inside a continued entry\n"
          b"\tmore\n"
          b"dup   one\n"
          b"DUP   two\n"
          b"novalue\n"
          b"\"unbalanced x\n"
          b"tabs\t\tand  spaces  \n"
          b"crlf value\r\n"
          b"key: colon\n"
          b"percent%s  literal%d\n"
          b"back\\ slash  v\n"
          b"j\xc3\xbcrgen  utf8 key\n"
          + "Stra\u00dfe  full case folding: ss\n\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3  greek\n"
            "\u00c4RGER  umlaut\n".encode() +
          b"bad\xff  not utf-8\n")
KEYS = ["foo@example.com", "FOO@EXAMPLE.COM", "Foo@Example.COM", "\"quoted key\"", "quoted key",
        "user+ext@example.com", "user@example.com", "@example.org", "multi", "dup", "DUP", "novalue", "tabs",
        "crlf", "key:", "key", "percent%s", "back\\ slash", "j\u00fcrgen", "J\u00dcRGEN", "bad\udcff", "missing", "orphan",
        "stra\u00dfe", "STRASSE", "strasse", "\u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2",
        "\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3", "\u00e4rger", "\u00c4RGER"]


def keys_for_cli():
    return [k for k in KEYS if "\udcff" not in k]


def answer(r):
    """(found?, output) of a query."""
    return (r.returncode == 0, r.stdout)


def compare_type(ptype, pftype, options=()):
    """Build SOURCE as ptype with petrelctl and as pftype with postmap; cross-check."""
    tag = ptype + "".join(options)
    ours = w.write("src-%s-ours" % tag, SOURCE)
    theirs = w.write("src-%s-theirs" % tag, SOURCE)
    r = w.petrelctl("map", "build", *options, "%s:%s" % (ptype, ours))
    t.is_(r.returncode, 0, "%s: petrelctl map build succeeds" % tag)
    if tag == "hash":
        for warning in ("line 2: logical line must not start with white space", "line 13: expected format",
                        "line 14: unbalanced '\"'", "duplicate entry: \"dup\"", "line 17: record is in \"key: value\"",
                        "line 24: non-UTF-8 input"):
            t.ok(warning in r.stderr, "hash: the build warns as postmap does: %s" % warning, r.stderr)
    p = pf.postmap(*options, "%s:%s" % (pftype, theirs))
    t.is_(p.returncode, 0, "%s: postmap builds the same source" % tag)
    suffix = ".cdb" if pftype == "cdb" else ".lmdb"
    t.ok(os.path.exists(ours + suffix), "%s: the compiled file is NAME%s" % (tag, suffix))
    mismatches = []
    for key in keys_for_cli():
        a = answer(w.petrelctl("map", "query", "%s:%s" % (ptype, ours), key))
        b = answer(pf.postmap("-q", key, "%s:%s" % (pftype, theirs)))
        c = answer(pf.postmap("-q", key, "%s:%s" % (pftype, ours)))
        d = answer(w.petrelctl("map", "query", "%s:%s" % (ptype, theirs), key))
        if not (a == b == c == d):
            mismatches.append((key, a, b, c, d))
    t.is_(mismatches, [], "%s: %d keys give the same answer from either file through either program"
          % (tag, len(keys_for_cli())))
    a = dump_lines(w.petrelctl("map", "dump", "%s:%s" % (ptype, ours)).stdout)
    b = dump_lines(w.petrelctl("map", "dump", "%s:%s" % (ptype, theirs)).stdout)
    want = 16 if "-f" in options else 15   # -f: DUP and dup are two keys
    t.ok(a == b and len(a) == want, "%s: both files hold the same %d entries" % (tag, want), "%r\n%r" % (a, b))
    if pftype == "lmdb":
        t.is_(dump_lines(pf.postmap("-s", "lmdb:" + ours).stdout), a, "%s: postmap -s lists our file as we do" % tag)


compare_type("hash", "lmdb")
compare_type("lmdb", "lmdb")
compare_type("cdb", "cdb")
compare_type("hash", "lmdb", ("-n",))
compare_type("cdb", "cdb", ("-n",))
compare_type("hash", "lmdb", ("-f",))

# -F: values name files whose contents are stored in base64.
w.write("cert1.pem", "-----BEGIN X-----\nAAAA\n-----END X-----\n")
w.write("cert2.pem", "second file\n")
line = "example.com %s, %s\n" % (w.path("cert1.pem"), w.path("cert2.pem"))
ours, theirs = w.write("sni-ours", line), w.write("sni-theirs", line)
w.petrelctl("map", "build", "-F", "hash:" + ours)
pf.postmap("-F", "lmdb:" + theirs)
a = w.petrelctl("map", "query", "-F", "hash:" + ours, "example.com")
b = pf.postmap("-F", "-q", "example.com", "lmdb:" + theirs)
t.ok(a.returncode == 0 and a.stdout == b.stdout and "AAAA\n-----END X-----\n\nsecond file" in a.stdout,
     "-F: file contents, base64 in the table, decoded by query -F as by postmap -F -q", "%r\n%r" % (a.stdout, b.stdout))
t.is_(w.petrelctl("map", "query", "hash:" + ours, "example.com").stdout,
      pf.postmap("-q", "example.com", "lmdb:" + theirs).stdout, "-F: the stored base64 is Postfix's")

# -i, -r, -d against postmap -i, -r, -d.
base = "one 1\ntwo 2\nthree 3\n"
ours, theirs = w.write("inc-ours", base), w.write("inc-theirs", base)
w.petrelctl("map", "build", "hash:" + ours)
pf.postmap("lmdb:" + theirs)
before = os.stat(ours + ".lmdb").st_ino
r1 = w.petrelctl("map", "build", "-i", "hash:" + ours, input="four 4\nONE changed\n")
pf.postmap("-i", "lmdb:" + theirs, input="four 4\nONE changed\n")
t.ok("duplicate entry: \"one\"" in r1.stderr, "-i warns about a duplicate and keeps the old value", r1.stderr)
w.petrelctl("map", "build", "-i", "-r", "hash:" + ours, input="two replaced\n")
pf.postmap("-i", "-r", "lmdb:" + theirs, input="two replaced\n")
d1 = w.petrelctl("map", "delete", "hash:" + ours, "THREE")
d2 = w.petrelctl("map", "delete", "hash:" + ours, "three")
pf.postmap("-d", "three", "lmdb:" + theirs)
t.ok(d1.returncode == 0 and d2.returncode == 1, "-d: 0 when the key was deleted, 1 when it was not there")
t.is_(dump_lines(w.petrelctl("map", "dump", "hash:" + ours).stdout),
      dump_lines(pf.postmap("-s", "lmdb:" + theirs).stdout), "-i, -r and -d leave the same entries as postmap's")
t.ok(os.stat(ours + ".lmdb").st_ino != before, "-i and -d replace the file (rename), never write it in place")
r = w.petrelctl("map", "delete", "hash:" + ours, "-", input="one\nfour\nnothere\n")
t.is_((r.returncode, dump_lines(w.petrelctl("map", "dump", "hash:" + ours).stdout)), (0, ["two\treplaced"]),
      "-d -: keys from standard input")

# Concurrent -i runs: every entry arrives (builds in a directory are serialised).
conc = w.write("concurrent", "seed 0\n")
w.petrelctl("map", "build", "cdb:" + conc)


def adder(prefix):
    for i in range(15):
        w.petrelctl("map", "build", "-i", "cdb:" + conc, input="%s%d %d\n" % (prefix, i, i))


threads = [threading.Thread(target=adder, args=(p,)) for p in ("a", "b")]
for th in threads:
    th.start()
for th in threads:
    th.join()
t.is_(len(dump_lines(w.petrelctl("map", "dump", "cdb:" + conc).stdout)), 31,
      "two concurrent -i runs of 15 entries each lose nothing")

# aliases(5): a Debian-style file against postalias.
ALIASES = ("# See man 5 aliases for format\n"
           "postmaster:    root\n"
           "Root: admin@example.com, \"|/usr/bin/procmail -a foo\", /var/mail/x\n"
           "list:\ta,\n"
           "\tb ,c\n"
           "  # comment inside\n"
           "\td\n"
           "cmd: \"|exec /usr/bin/vacation user\"\n"
           "inc: :include:/etc/mail/list.txt\n"
           "\"quoted name\": x\n"
           "q2: \"john smith\"@example.com\n"
           "paren: user (Real Name), other\n"
           "angle: Real Name <user@example.org>\n"
           "esc: \\root\n"
           "bad line without colon\n"
           "dom@example.com: x\n"
           "empty: \"\"\n"
           "multi:  x y z\n"
           "tab\t:\tt\n"
           "colon:in:value: a:b\n"
           "dup: one\n"
           "dup: two\n")
ours, theirs = w.write("aliases-ours", ALIASES), w.write("aliases-theirs", ALIASES)
r = w.petrelctl("alias", "build", "hash:" + ours)
p = pf.postalias("lmdb:" + theirs)
t.ok(r.returncode == 0 and "line 15: need name:value pair" in r.stderr and
     "line 16: name must be local" in r.stderr and "duplicate entry: \"dup\"" in r.stderr,
     "alias build warns as postalias does", r.stderr)
nis = ("YP_LAST_MODIFIED", "YP_MASTER_NAME")
ours_dump = dump_lines(w.petrelctl("alias", "dump", "hash:" + ours).stdout)
t.is_(ours_dump, dump_lines(pf.postalias("-s", "lmdb:" + theirs).stdout, drop=nis),
      "alias build stores what postalias stores (Postfix's NIS entries aside)")
t.ok("@:\t@" in ours_dump, "with sendmail's @ entry")
mismatches = []
for key in ("root", "ROOT", "postmaster", "list", "cmd", "quoted name", "q2", "esc", "colon", "dom@example.com",
            "nothere", "tab", "empty", "dup"):
    a = answer(w.petrelctl("alias", "query", "hash:" + ours, key))
    b = answer(pf.postalias("-q", key, "lmdb:" + theirs))
    c = answer(pf.postalias("-q", key, "lmdb:" + ours))
    if not a == b == c:
        mismatches.append((key, a, b, c))
t.is_(mismatches, [], "alias query answers as postalias -q, and postalias reads our file")

# sqlite_table(5) files, unchanged, against postmap -q sqlite:.
db = w.path("virtual.sqlite")
subprocess.run(["sqlite3", db,
                "CREATE TABLE aliases(address TEXT, target TEXT);"
                "INSERT INTO aliases VALUES ('user@example.com','u1@dest.example'),"
                "('user@example.com','u2@dest.example'),('o''brien@example.com','ob@dest.example'),"
                "('single@example.com','s@dest.example'),('x@other.example','other@dest.example'),"
                "('%','percent-row'),('\\','backslash-row');"
                "CREATE TABLE domains(name TEXT); INSERT INTO domains VALUES ('example.com'), ('mail.example.net');"],
               check=True)
w.chown(db)
plain = w.write("plain.cf", "dbpath = %s\n# a comment\nquery = SELECT target FROM aliases\n"
                "    WHERE address = '%%s'\n" % db)
limited = w.write("limited.cf", "dbpath = %s\nquery = SELECT target FROM aliases WHERE address = '%%s'\n"
                  "domain = example.com\nexpansion_limit = 1\n" % db)
parts = w.write("parts.cf", "dbpath = %s\nquery = SELECT name FROM domains WHERE name = '%%3.%%2.%%1'\n"
                "result_format = smtp:[%%s] for %%u\n" % db)
legacy = w.write("legacy.cf", "dbpath = %s\ntable = aliases\nselect_field = target\nwhere_field = address\n"
                 "additional_conditions = AND target <> ''\n" % db)
hostile = ["user@example.com", "USER@Example.Com", "o'brien@example.com", "x' OR '1'='1", "x' OR 1=1 --",
           "'; DROP TABLE aliases; --", "%", "%s", "%%", "%d@example.com", "\\", "a\\' OR '1'='1",
           "single@example.com", "x@other.example", "nobody@example.com", "", "@example.com",
           "u@mail.example.net", "u@example.net", "user"]
mismatches = []
for cf in (plain, limited, parts, legacy):
    for key in hostile:
        a = w.petrelctl("map", "query", "sqlite:" + cf, key)
        b = pf.postmap("-q", key, "sqlite:" + cf)
        if (a.returncode == 0, a.stdout) != (b.returncode == 0, b.stdout):
            mismatches.append((os.path.basename(cf), key, a.returncode, a.stdout, a.stderr, b.returncode, b.stdout))
t.is_(mismatches, [], "sqlite: %d keys (quotes, %%, backslashes, SQL) answer as postmap -q sqlite: does, "
      "for query, domain, %%1-%%3 with result_format, and the legacy fields" % len(hostile))
count = subprocess.run(["sqlite3", db, "SELECT count(*) FROM aliases"], capture_output=True, text=True).stdout
t.is_(count.strip(), "7", "sqlite: the table is intact after the injection attempts")
r = w.petrelctl("map", "query", "sqlite:" + limited, "user@example.com")
t.ok(r.returncode == 2 and "expansion limit exceeded" in r.stderr,
     "sqlite: more rows than expansion_limit is a lookup error, not an answer", r.stderr)
r = w.petrelctl("map", "query", "sqlite:" + plain, "\u00e9@example.com\udcff".encode("utf-8", "surrogateescape")
                .decode("latin-1"))
t.is_(r.returncode, 1, "sqlite: a key that is not UTF-8 is not looked up")
unquoted = w.write("unquoted.cf", "dbpath = %s\nquery = SELECT target FROM aliases WHERE address = %%s\n" % db)
r = w.petrelctl("map", "query", "sqlite:" + unquoted, "user@example.com")
t.ok("contains >%s< without the recommended '' quotes" in r.stderr, "sqlite: %s outside quotes is warned about",
     r.stderr)

# Errors name the file, the line and what to run.
r = w.petrelctl("map", "build", "hash:" + w.path("no-such-source"))
t.ok(r.returncode != 0 and "open %s: No such file or directory" % w.path("no-such-source") in r.stderr,
     "a missing source is named", r.stderr)
r = w.petrelctl("map", "query", "hash:" + w.path("never-built"), "x")
t.ok(r.returncode == 2 and "build it with `petrelctl map build hash:%s`" % w.path("never-built") in r.stderr,
     "a table that was never built says how to build it", r.stderr)
r = w.petrelctl("map", "build", "proxy:hash:" + w.path("inc-ours"))
t.ok(r.returncode != 0 and "cannot build tables through proxy:" in r.stderr, "proxy: tables are not built", r.stderr)
r = w.petrelctl("map", "build", "texthash:" + w.path("inc-ours"))
t.ok(r.returncode != 0 and "not built from a file" in r.stderr, "texthash: needs no build", r.stderr)
bad = w.write("bad.cf", "dbpath = %s\nquery = SELEKT target FROM aliases WHERE address = '%%s'\n" % db)
r = w.petrelctl("map", "query", "sqlite:" + bad, "x")
t.ok(r.returncode == 2 and "sqlite:%s line 2: query: near \"SELEKT\": syntax error" % bad in r.stderr,
     "sqlite: a bad query is reported with its file and line", r.stderr)
bare = Workspace()
r = bare.petrelctl("map", "build", "cdb:" + bare.write("x", "a b\n"))
bare_conf = open(os.path.join(bare.conf, "main.cf")).read().replace("modules = lmdb cdb sqlite", "modules =")
with open(os.path.join(bare.conf, "main.cf"), "w") as f:
    f.write(bare_conf)
r = bare.petrelctl("map", "build", "cdb:" + bare.path("x"))
t.ok(r.returncode != 0 and "provided by the cdb module: add cdb to `modules`" in r.stderr,
     "cdb: without the cdb module says which module to load", r.stderr)

# Permissions and ownership follow the source, as with postmap.
secret = w.write("secret", "user password\n", 0o640)
w.petrelctl("map", "build", "hash:" + secret)
t.is_(oct(os.stat(secret + ".lmdb").st_mode & 0o777), "0o640", "a source others cannot read gives a table they cannot")
w.petrelctl("map", "build", "-p", "hash:" + secret)
t.is_(oct(os.stat(secret + ".lmdb").st_mode & 0o777), "0o644", "-p: mode 0644")
if w.pw:
    r = w.petrelctl("map", "build", "hash:" + secret, as_user=False)
    st = os.stat(secret + ".lmdb")
    t.ok(r.returncode == 0 and st.st_uid == w.pw.pw_uid, "root building a user's source gives a table the user owns "
         "(postmap runs as the source's owner)")

t.done()
