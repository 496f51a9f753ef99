"""The plugin SDK end to end: install the SDK into a staging tree, build the
example plugins in plugins/ out of tree with `pkg-config petrel-plugin` only,
load them into petreld and check what they do on the wire and in the queue.

  1. `make install DESTDIR=STAGE` of the build tree; PKG_CONFIG_PATH points at
     the staged petrel-plugin.pc and PKG_CONFIG_SYSROOT_DIR=STAGE makes its
     -I resolve into the staged include directory (pkgconf and pkg-config
     both honour it).
  2. plugins/ is copied to a temporary directory (no path back into the
     source or build tree) and each plugin is built with its own Makefile,
     warnings as errors, then installed with its `make install` into a
     module directory (0755, files 0644).
  3. petreld loads `modules = subject_tagger attachment_blocker`:
     - X-Spam-Flag: YES gets "Subject: [SPAM] ..." in the queued file; a
       message without the flag is untouched; a flagged message without a
       Subject gets one;
     - multipart messages with an .exe attachment (quoted filename=, name=
       only, RFC 2231 filename*=, and one sent in many small TCP writes so
       that lines are split across body chunks) are refused 554 5.7.1 and not
       queued; a .pdf passes; the session goes on after a refusal.
"""
import glob
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time

from harness import PETRELD, TOP_BUILDDIR, TOP_SRCDIR, Petrel, Smtp, Tap, queue_file_bytes

t = Tap(timeout=int(os.environ.get("PETREL_TEST_TIMEOUT", "600")))
work = tempfile.mkdtemp(prefix="petrel-sdk-")
os.chmod(work, 0o755)   # petreld runs as the test user when the suite runs as root


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def finish():
    if not os.environ.get("PETREL_KEEP_TEST_DIRS"):
        shutil.rmtree(work, ignore_errors=True)
    t.done()


# --- 1. the SDK, installed into a staging tree ----------------------------
stage = os.path.join(work, "stage")
r = run(["make", "-C", TOP_BUILDDIR, "install", "DESTDIR=" + stage])
if not t.ok(r.returncode == 0, "make install DESTDIR=stage succeeds", r.stdout[-2000:] + r.stderr[-2000:]):
    finish()
pcs = glob.glob(os.path.join(stage, "**", "pkgconfig", "petrel-plugin.pc"), recursive=True)
if not t.is_(len(pcs), 1, "petrel-plugin.pc is installed"):
    finish()
env = dict(os.environ)
env["PKG_CONFIG_PATH"] = os.path.dirname(pcs[0])
env["PKG_CONFIG_SYSROOT_DIR"] = stage
env.pop("PKG_CONFIG_LIBDIR", None)
# Under `make check` the parent make's flags would leak in (and its -w prints
# the build tree's path): a plugin author runs a plain make.
for var in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS"):
    env.pop(var, None)
r = run(["pkg-config", "--cflags", "--libs", "petrel-plugin"], env=env)
t.is_(r.returncode, 0, "pkg-config finds petrel-plugin")
incdirs = [w[2:] for w in r.stdout.split() if w.startswith("-I")]
t.ok(incdirs and all(d.startswith(stage) for d in incdirs), "--cflags points into the staged tree", r.stdout)
t.ok(any(os.path.isfile(os.path.join(d, "petrel", "plugin.h")) for d in incdirs),
     "petrel/plugin.h is found through --cflags", r.stdout)
t.ok(any(os.path.isfile(os.path.join(d, "petrel", "version.h")) for d in incdirs),
     "the generated petrel/version.h is installed too", r.stdout)
t.like(r.stdout, r"-shared", "--libs asks for a shared object")

# --- 2. the example plugins, built out of tree ----------------------------
src = os.path.join(work, "plugins")
shutil.copytree(os.path.join(TOP_SRCDIR, "plugins"), src,
                ignore=shutil.ignore_patterns("*.so", "*.o", "include.am"))
moddir = os.path.join(work, "modules")
built = {}
for plugin, module in (("subject-tagger", "subject_tagger"), ("attachment-blocker", "attachment_blocker"),
                       ("helo-checker", "helo_checker")):
    d = os.path.join(src, plugin)
    t.ok(os.path.isfile(os.path.join(d, "README.md")), "%s has a README" % plugin)
    r = run(["make", "-C", d, "CFLAGS=-O2 -g -Wall -Wextra -Werror"], env=env)
    t.ok(r.returncode == 0, "%s builds out of tree against the installed SDK, warning-free" % plugin,
         r.stdout[-3000:] + r.stderr[-3000:])
    t.ok(TOP_SRCDIR not in r.stdout and TOP_BUILDDIR not in r.stdout,
         "%s's build uses nothing from the source or build tree" % plugin, r.stdout)
    r = run(["make", "-C", d, "install", "MODULEDIR=" + moddir], env=env)
    t.ok(r.returncode == 0, "%s: make install into a module directory" % plugin, r.stdout + r.stderr)
    path = os.path.join(moddir, module + ".so")
    built[module] = path
    t.ok(os.path.isfile(path) and stat.S_IMODE(os.stat(path).st_mode) == 0o644, "%s.so installed with mode 0644"
         % module)
t.ok(stat.S_IMODE(os.stat(moddir).st_mode) == 0o755, "the module directory is 0755")
nm = run(["nm", "-D", "--defined-only", built["attachment_blocker"]])
exported = [line.split()[-1] for line in nm.stdout.splitlines() if " T " in line or " D " in line or " R " in line]
t.is_([e for e in exported if e.startswith("petrel")], ["petrel_module_descriptor"],
      "the descriptor is the plugin's only exported petrel symbol")

if not all(os.path.isfile(p) for p in built.values()):
    finish()

# --- 3. loaded into petreld ----------------------------------------------
main_cf = {
    "modules": "subject_tagger attachment_blocker",
    "module_directory": moddir,
}

with Petrel(t, main_cf=main_cf, start=False) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
    t.is_(r.returncode, 0, "petreld -n accepts the configuration with both plugins")
    if r.returncode:
        t.diag(r.stderr)
    r = p.petrelctl("modules")
    t.like(r.stdout, r"subject_tagger 1\.0 \(ABI \d+\.\d+\)", "petrelctl modules lists subject_tagger")
    t.like(r.stdout, r"attachment_blocker 1\.0 \(ABI \d+\.\d+\)", "petrelctl modules lists attachment_blocker")
    t.like(r.stdout, r"hooks: header body end_of_message", "and the hooks it implements")
    r = p.petrelctl("config", "-d", "attachment_blocker_extensions", "subject_tagger_tag")
    t.like(r.stdout, r"attachment_blocker_extensions = exe com bat scr js vbs cmd pif",
           "petrelctl config -d shows a plugin parameter's default")
    t.like(r.stdout, r"subject_tagger_tag = \[SPAM\]", "and the tagger's")

    # A module directory others can write to is refused.
    unsafe = os.path.join(work, "unsafe")
    os.mkdir(unsafe)
    shutil.copy(built["subject_tagger"], unsafe)
    os.chmod(unsafe, 0o777)
    p.write_main_cf(dict(p.settings, module_directory=unsafe, modules="subject_tagger"))
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
    t.ok(r.returncode != 0, "a group/other-writable module directory is refused")
    t.like(r.stderr, r"writable by group or others", "with a message that says why")

BASE_HEADERS = ("From: sender@example.org\r\nTo: user@petrel.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                "Message-ID: <%s@example.org>\r\n")


def plain(mid, extra_headers, subject="hello world"):
    h = BASE_HEADERS % mid
    if subject is not None:
        h += "Subject: %s\r\n" % subject
    return h + extra_headers + "\r\nJust a line of text.\r\n"


def multipart(mid, part_headers, boundary="=_petrel_b0undary"):
    return (BASE_HEADERS % mid + "Subject: with attachment\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed;\r\n\tboundary=\"%s\"\r\n\r\n"
            "This is a multi-part message in MIME format.\r\n"
            "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee the attachment.\r\n"
            "--%s\r\n%s\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
            "AAAAAAAAAAAAgAAAAA4fug4AtAnNIbgBTM0hVGhpcyBwcm9ncmFtIGNhbm5vdCBiZSBydW4gaW4g\r\n"
            "--%s--\r\nepilogue\r\n") % (boundary, boundary, boundary, part_headers, boundary)


def new_files(before, p):
    return sorted(set(p.queue_files()) - before)


def content_of(path):
    # as the queue's readers see it (an edited file also holds the bytes its
    # edits superseded: queue format 2)
    return queue_file_bytes(path)


def transaction(c, body, chunk=None):
    """MAIL, RCPT, DATA, the content (in chunk-byte writes when asked); returns the final reply."""
    c.cmd("MAIL FROM:<sender@example.org>")
    if c.code != 250:
        return "MAIL: " + " ".join(c.lines)
    c.cmd("RCPT TO:<user@petrel.test>")
    if c.code != 250:
        return "RCPT: " + " ".join(c.lines)
    c.cmd("DATA")
    if c.code != 354:
        return "DATA: " + " ".join(c.lines)
    data = (body + "\r\n.\r\n").encode()
    if chunk is None:
        c.send(data)
    else:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), chunk):
            c.send(data[i:i + chunk])
            time.sleep(0.002)
    return c.read_reply()


with Petrel(t, main_cf=main_cf) as p:
    c = p.connect()
    c.ehlo()

    # --- subject_tagger ---
    before = set(p.queue_files())
    reply = transaction(c, plain("spam1", "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=9.1\r\n"))
    t.like(reply, r"^250 ", "a flagged message is accepted")
    files = new_files(before, p)
    t.is_(len(files), 1, "and queued")
    body = content_of(files[0]) if files else b""
    t.ok(b"\r\nSubject: [SPAM] hello world\r\n" in body, "its Subject is tagged in the queued file",
         body[-600:])
    t.ok(body.count(b"Subject:") == 1, "there is still exactly one Subject")

    before = set(p.queue_files())
    reply = transaction(c, plain("ham1", "X-Spam-Flag: NO\r\n"))
    t.like(reply, r"^250 ", "an unflagged message is accepted")
    files = new_files(before, p)
    body = content_of(files[0]) if files else b""
    t.ok(b"\r\nSubject: hello world\r\n" in body and b"[SPAM]" not in body, "its Subject is untouched", body[-600:])

    before = set(p.queue_files())
    reply = transaction(c, plain("spam2", "x-spam-flag: yes\r\n", subject=None))
    t.like(reply, r"^250 ", "a flagged message without a Subject is accepted")
    files = new_files(before, p)
    body = content_of(files[0]) if files else b""
    t.ok(b"\r\nSubject: [SPAM]\r\n" in body, "it gets a Subject with the tag (header name in any case)",
         body[-600:])

    before = set(p.queue_files())
    reply = transaction(c, plain("spam3", "X-Spam-Flag: YES\r\n", subject="[SPAM] already"))
    files = new_files(before, p)
    body = content_of(files[0]) if files else b""
    t.ok(b"\r\nSubject: [SPAM] already\r\n" in body and b"[SPAM] [SPAM]" not in body,
         "an already tagged Subject is not tagged twice", body[-600:])

    # --- attachment_blocker ---
    cases = [
        ("a quoted filename=", 'Content-Type: application/octet-stream\r\n'
         'Content-Disposition: attachment; filename="Invoice 2024.EXE"', None),
        ("name= only", 'Content-Type: application/x-msdownload; name=setup.exe', None),
        ("an RFC 2231 filename*=", "Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n"
         " filename*=UTF-8''r%C3%A9sum%C3%A9%2Eexe", None),
        ("many small TCP writes", 'Content-Type: application/octet-stream\r\n'
         'Content-Disposition: attachment;\r\n\tfilename="split-across-chunks.exe"', 3),
    ]
    for desc, part, chunk in cases:
        before = set(p.queue_files())
        reply = transaction(c, multipart("att-" + desc.replace(" ", "-"), part), chunk=chunk)
        t.like(reply, r"^554 5\.7\.1 Attachment type \.exe not allowed", "an .exe attachment (%s) is refused" % desc)
        t.is_(new_files(before, p), [], "and not queued (%s)" % desc)

    before = set(p.queue_files())
    reply = transaction(c, multipart("att-scr", 'Content-Type: application/octet-stream; NAME="x.scr"'), chunk=7)
    t.like(reply, r"^554 5\.7\.1 Attachment type \.scr not allowed", "the reply names the extension found")

    before = set(p.queue_files())
    reply = transaction(c, multipart("att-pdf", 'Content-Type: application/pdf; name="report.pdf"\r\n'
                                                'Content-Disposition: attachment; filename="report.pdf"'))
    t.like(reply, r"^250 ", "a .pdf attachment passes (in the same session, after refusals)")
    t.is_(len(new_files(before, p)), 1, "and is queued")

    before = set(p.queue_files())
    reply = transaction(c, plain("mentions", "", subject="about setup.exe") +
                        'Content-Disposition: attachment; filename="a.exe" is only text here\r\n')
    t.like(reply, r"^250 ", "a text body that only mentions file names passes")

    c.cmd("QUIT")
    c.close()

    # A fresh session: the split message again, one byte per write.
    c = Smtp(p.port)
    c.ehlo()
    before = set(p.queue_files())
    reply = transaction(c, multipart("att-bytes", 'Content-Disposition: attachment; filename=tiny.exe',
                                     boundary="b"), chunk=1)
    t.like(reply, r"^554 5\.7\.1 ", "one byte per write: still refused")
    t.is_(new_files(before, p), [], "and not queued")
    c.cmd("QUIT")
    c.close()

    log = p.log()
    t.ok(re.search(r"attachment_blocker: reject: attachment \"Invoice 2024\.EXE\"", log),
         "petrel_log names the module and the attachment", log[-3000:])
    t.ok(re.search(r"subject_tagger: changed the Subject", log), "the tagger logs what it did", log[-3000:])
    t.ok("panic" not in log, "no worker crashed", log[-3000:])

finish()
