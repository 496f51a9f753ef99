"""Real-world Postfix configurations (issue 17): each directory of t/corpus
holds a main.cf and a master.cf as published (SOURCE says where from), an
`expect` file, and under files/ the small tables and files the configuration
names (published ones copied, the others written for the test).

Each configuration is loaded with path and port changes only, made
mechanically here and nowhere else:

- every absolute path under /etc, /var, /opt, /run, /home or /dev/shm in main.cf and
  master.cf moves under the test's own directory ROOT (files/ is copied
  there; a certificate or key the configuration names gets the test's
  self-signed pair, a directory parameter gets a directory, any other file
  an empty file), and every hash:/lmdb: table is built as postmap would;
- every inet listener of master.cf moves to a free port on 127.0.0.1, and
  every loopback next hop (localhost:10025, [127.0.0.1]:10024) to the same
  port its number was given;
- main.cf gets a marked block at its end: the queue and data directories,
  inet_interfaces = 127.0.0.1, the module directory of the build, and a DNS
  resolver of the test's own that knows only localhost (nothing leaves the
  machine); Postfix's default paths that main.cf does not set move too
  (alias_maps and alias_database hash:/etc/aliases, mail_spool_directory).

An expect file may list `edit` lines: main.cf lines (paths and ports moved
the same way) that the configuration needs in Petrel, such as a `modules`
line; then it is checked as published and with them (check+/out+ lines),
and the edited one is started.

Then `petreld -n` must print exactly what `expect` records (its `check` and
`out` lines, paths and ports written as @ROOT@, @CONF@, @PORT:N@), so that a
change of meaning shows up as a diff; a configuration that passes is started,
and every inet listener it defines gets the sessions `expect` lists, each
with the final reply it records. `filter A B` starts our own SMTP content
filter on the port given A, handing mail back to the port given B.

PETREL_CORPUS_UPDATE=1 rewrites the check/out lines of every expect file from
what petreld says now (read the diff before committing it).
"""
import os
import re
import shlex
import shutil
import subprocess

from harness import Dnsmasq, PETRELCTL, PETRELD, Petrel, Smtp, Tap, TOP_BUILDDIR, TOP_SRCDIR, free_port, make_cert, wait_for
from modlib import bundled_module_dir
from smtpfilter import SmtpFilter

t = Tap(timeout=int(os.environ.get("PETREL_TEST_TIMEOUT", "600")))
# A DNS server of our own that knows only localhost (FILTER_README's
# content_filter = scan:localhost:10025 looks it up): nothing leaves the machine.
DNS = Dnsmasq(["--address=/localhost/127.0.0.1", "--mx-host=localhost,localhost,10"])
# Every module the build made, where an installation keeps them.
MODULES = bundled_module_dir(*sorted(n for n in os.listdir(os.path.join(TOP_BUILDDIR, "modules"))
                                     if os.path.exists(os.path.join(TOP_BUILDDIR, "modules", n, ".libs", n + ".so"))))
CORPUS = os.path.join(TOP_SRCDIR, "t", "corpus")
UPDATE = bool(os.environ.get("PETREL_CORPUS_UPDATE"))
PATH_RE = re.compile(r"(?<![\w.\]-])(/(?:etc|var|opt|run|home|dev/shm)/[^\s,]*)")
LOOPBACK_HOP_RE = re.compile(r"((?:^|[\s=:,\[])(?:localhost|127\.0\.0\.1)\]?:)(\d+)\b")
CERT_PARAMS = ("_cert_file", "_dcert_file", "_eccert_file", "_CAfile")
KEY_PARAMS = ("_key_file", "_dkey_file", "_eckey_file")
DIR_PARAMS = ("_CApath", "_directory", "_base")
CACHE_PARAMS = ("_cache_database", "_cache_map", "address_verify_map", "_cache_name")
SERVICE_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465}


def logical_lines(text):
    """(first line number, joined text) of each logical line: a line that
    starts with white space continues the one before, as in Postfix."""
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        else:
            out.append((n, line.strip()))
    return out


class Instance:
    """One corpus configuration, moved into a test directory."""

    def __init__(self, name, p, edits=()):
        self.name = name
        self.src = os.path.join(CORPUS, name)
        self.p = p
        self.root = os.path.join(p.dir, "root")
        self.ports = {}        # original port number -> free port
        self.listeners = []    # (service name as written, free port)
        self.paths = {}        # original path -> what the test put there
        shutil.copytree(os.path.join(self.src, "files"), self.root) if os.path.isdir(
            os.path.join(self.src, "files")) else os.mkdir(self.root)
        self.cert, self.key = make_cert(p.dir)
        with open(os.path.join(self.src, "main.cf")) as f:
            main_cf = f.read()
        with open(os.path.join(self.src, "master.cf")) as f:
            master_cf = f.read()
        master_cf = "\n".join(self._listener(line) for line in master_cf.split("\n"))
        main_cf = self._rewrite(main_cf)
        data = os.path.join(self.root, "var", "lib", "postfix")
        os.makedirs(data, exist_ok=True)
        main_cf += ("\n# --- t/integration/test_corpus.py: the test's directories, loopback only ---\n"
                    "queue_directory = %s\ndata_directory = %s\ninet_interfaces = 127.0.0.1\n"
                    "dns_resolver = %s\nmodule_directory = %s\n" % (p.queue, data, DNS.server, MODULES))
        # Postfix's default alias_maps and alias_database name /etc/aliases:
        # that path moves too.
        names = set(line.split("=", 1)[0].strip() for _, line in logical_lines(main_cf) if "=" in line)
        for param in ("alias_maps", "alias_database"):
            if param not in names:
                main_cf += "%s = hash:%s/etc/aliases\n" % (param, self.root)
        if "mail_spool_directory" not in names:
            main_cf += "mail_spool_directory = %s/var/mail\n" % self.root
            os.makedirs(os.path.join(self.root, "var", "mail"), exist_ok=True)
        if not os.path.exists(os.path.join(self.root, "etc", "aliases")) and \
                ("alias_maps" not in names or "/etc/aliases" in main_cf):
            os.makedirs(os.path.join(self.root, "etc"), exist_ok=True)
            with open(os.path.join(self.root, "etc", "aliases"), "w") as f:
                f.write("postmaster: root\n")
        for edit in edits:
            main_cf += self._rewrite(edit) + "\n"
        with open(os.path.join(p.conf, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(p.conf, "master.cf"), "w") as f:
            f.write(master_cf)
        self._make_files(main_cf, master_cf)
        p._chown()

    def port(self, number):
        number = int(number)
        if number not in self.ports:
            self.ports[number] = free_port()
        return self.ports[number]

    def _listener(self, line):
        """An inet service line: its address moves to 127.0.0.1 and a free
        port; loopback next hops and paths move in every line."""
        fields = line.split()
        if len(fields) < 8 or line[0] in " \t#" or fields[1] != "inet":
            return self._rewrite(line)
        line = fields[0] + self._rewrite(line[len(fields[0]):])
        service = fields[0]
        port = service.rsplit(":", 1)[-1]
        number = int(port) if port.isdigit() else SERVICE_PORTS.get(port)
        if number is None:
            t.ok(False, "%s: master.cf service %s: the test knows no port for it" % (self.name, service))
            return line
        new = self.port(number)
        self.listeners.append((service, new))
        return line.replace(service, "127.0.0.1:%d" % new, 1)

    def _rewrite(self, text):
        text = LOOPBACK_HOP_RE.sub(lambda m: m.group(1) + str(self.port(m.group(2))), text)
        return PATH_RE.sub(lambda m: self.root + m.group(1), text)

    def _make_files(self, main_cf, master_cf):
        """Every path a parameter names exists: certificates, keys,
        directories, and empty files for the rest; hash: tables are built."""
        settings = []
        for _, line in logical_lines(main_cf):
            if "=" in line:
                name, value = line.split("=", 1)
                settings.append((name.strip(), value.strip()))
        for _, line in logical_lines(master_cf):
            settings.extend(tuple(o.split("=", 1)) for o in re.findall(r"-o\s+(\S+=\S*)", line))
        tables = []
        for name, value in settings:
            for path in re.findall(r"\$\{?config_directory\}?(/[^\s,]*)", value):
                self._make(name, self.p.conf + path)
            if name.endswith(CACHE_PARAMS):
                continue   # written by the daemon, not built
            for path in re.findall(re.escape(self.root) + r"/[^\s,]*", value):
                kind = self._make(name, path)
                if kind == "file":
                    tables.extend(m.group(1) + path for m in
                                  re.finditer(r"(?:^|[\s,])(?:proxy:)?((?:hash|lmdb):)" + re.escape(path), value))
        for table in sorted(set(tables)):
            if os.path.basename(table.split(":", 1)[1]) == "aliases":
                continue   # built by newaliases below, from its own format
            self._build("map", "build", table)
        self._build("newaliases")

    def _build(self, *args):
        """What the admin runs after postmap-ing: its failure shows in
        petreld -n's output too, which expect records."""
        r = subprocess.run([PETRELCTL, "-c", self.p.conf] + list(args), capture_output=True, text=True)
        t.diag("%s: petrelctl %s: %s" % (self.name, self.normalize(" ".join(args)),
                                          "ok" if r.returncode == 0 else self.normalize(r.stderr.strip()
                                                                                          .split("\n")[-1])))

    def _make(self, name, path):
        if os.path.exists(path):
            return "dir" if os.path.isdir(path) else "file"
        base = os.path.basename(path)
        if name.endswith(DIR_PARAMS) or path.endswith("/"):
            os.makedirs(path, exist_ok=True)
            return "dir"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if re.search(r"_dh\d*_param_file$", name):
            subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
                            "-out", path], check=True, capture_output=True)
            return "dh"
        if name.endswith(KEY_PARAMS) or (name.endswith("_chain_files") and "key" in base):
            shutil.copy(self.key, path)
            return "key"
        if name.endswith(CERT_PARAMS) or name.endswith("_chain_files"):
            shutil.copy(self.cert, path)
            return "cert"
        open(path, "w").close()
        return "file"

    def _show(self, text):
        return self.normalize(text)

    def normalize(self, text):
        text = text.replace(self.root, "@ROOT@").replace(self.p.conf, "@CONF@").replace(self.p.queue, "@QUEUE@")
        for number, port in sorted(self.ports.items(), key=lambda x: -len(str(x[1]))):
            text = re.sub(r"\b%d\b" % port, "@PORT:%d@" % number, text)
        return re.sub(r"^petrel/(\w+)\[\d+\]: ", r"\1: ", text)


def read_expect(path):
    """{"check": N, "out": [...], "check+": N, "out+": [...]} and the other lines."""
    got, rest = {"out": [], "out+": []}, []
    with open(path) as f:
        for line in f.read().split("\n"):
            word = line.split(" ", 1)[0]
            if word in ("check", "check+"):
                got[word] = int(line.split()[1])
            elif word in ("out", "out+"):
                got[word].append(line[len(word) + 1:])
            elif line.strip():
                rest.append(line)
    return got, rest


def write_expect(path, got, rest):
    head = [line for line in rest if line.startswith("#")]
    body = [line for line in rest if not line.startswith("#")]
    lines = head + ["check %d" % got["check"]] + ["out " + line for line in got["out"]]
    if "check+" in got:
        lines += [line for line in body if line.startswith("edit ")]
        lines += ["check+ %d" % got["check+"]] + ["out+ " + line for line in got["out+"]]
    lines += [line for line in body if not line.startswith("edit ")]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def session(inst, spec):
    """One SMTP session of an expect line; returns "STAGE reply"."""
    words = shlex.split(spec)
    service = words[0]
    opts = dict(w.split("=", 1) if "=" in w else (w, True) for w in words[1:])
    ports = [port for name, port in inst.listeners if name == service]
    if not ports:
        return "NO SUCH LISTENER %s" % service
    try:
        if opts.get("tls"):
            import ssl
            ctx = ssl._create_unverified_context()
            s = Smtp(ports[0], read_greeting=False, timeout=30)
            s.sock = ctx.wrap_socket(s.sock, server_hostname="localhost")
            r = s.read_reply()
        else:
            s = Smtp(ports[0], timeout=30)
            r = s.lines[-1]
        if s.code != 220:
            return "CONNECT " + r
        if not opts.get("nohelo"):
            r = s.ehlo(opts.get("helo", "client.example.com"))
            if s.code != 250:
                return "EHLO " + r
        if opts.get("starttls"):
            r = s.cmd("STARTTLS")
            if s.code != 220:
                return "STARTTLS " + r
            s.starttls()
            s.ehlo(opts.get("helo", "client.example.com"))
        r = s.cmd("MAIL FROM:<%s>" % opts.get("from", "sender@example.com"))
        if s.code != 250:
            return "MAIL " + r
        for rcpt in opts.get("to", "postmaster@example.org").split(","):
            r = s.cmd("RCPT TO:<%s>" % rcpt)
            if s.code != 250:
                return "RCPT " + r
        r = s.cmd("DATA")
        if s.code != 354:
            return "DATA " + r
        header = opts.get("header", "")
        s.send("From: <%s>\r\nSubject: corpus %s %s\r\n%s\r\nA message from test_corpus.\r\n.\r\n"
               % (opts.get("from", "sender@example.com"), inst.name, service,
                  header + "\r\n" if header else ""))
        r = s.read_reply()
        s.cmd("QUIT")
        s.close()
        if opts.get("mailbox") and r.startswith("250"):
            # mailbox=NAME: the message reaches NAME's mailbox in mail_spool_directory.
            mbox = os.path.join(inst.root, "var", "mail", opts["mailbox"])
            subject = "Subject: corpus %s %s" % (inst.name, service)

            def delivered():
                try:
                    with open(mbox, errors="replace") as f:
                        return subject in f.read()
                except OSError:
                    return False
            if not wait_for(delivered, 30):
                return "DOT %s, but not in mailbox %s" % (r, opts["mailbox"])
            r += " (in mailbox %s)" % opts["mailbox"]
        return "DOT " + r
    except (OSError, ConnectionError) as e:
        return "ERROR %s" % e


def load(name, p, edits, want, key, got):
    """Moves the configuration into p (with edits, main.cf lines, at its
    end) and checks what petreld -n says. Returns the Instance and the exit
    status."""
    inst = Instance(name, p, edits)
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)
    out = [inst.normalize(line) for line in (r.stdout + r.stderr).splitlines()]
    got["check" + key], got["out" + key] = r.returncode, out
    if UPDATE:
        want["check" + key], want["out" + key] = r.returncode, out
    stage = "as published" if not key else "with its edits"
    t.is_(r.returncode, want.get("check" + key), "%s %s: petreld -n exits %s" % (name, stage, want.get("check" + key)))
    t.ok(out == want["out" + key], "%s %s: petreld -n says exactly what expect records (%d lines)"
         % (name, stage, len(want["out" + key])), "\n".join(["got:"] + out + ["want:"] + want["out" + key]))
    return inst, r.returncode


def run(name):
    expect_path = os.path.join(CORPUS, name, "expect")
    want, rest = read_expect(expect_path)
    edits = [line.split(" ", 1)[1] for line in rest if line.startswith("edit ")]
    sessions = [line.split(None, 1)[1] for line in rest if line.startswith("session ")]
    filters = [line.split()[1:] for line in rest if line.startswith("filter ")]
    got = {}
    with Petrel(t, start=False) as p:
        inst, status = load(name, p, [], want, "", got)
    if edits:
        p = Petrel(t, start=False)
        inst, status = load(name, p, edits, want, "+", got)
    if UPDATE:
        write_expect(expect_path, got, rest)
    if not edits:
        p = Petrel(t, start=False)
        inst = Instance(name, p)
    with p:
        if status != 0:
            t.ok(not sessions, "%s: refused, so no sessions are expected" % name)
            return
        missing = sorted(set(s for s, _ in inst.listeners) - set(spec.split()[0] for spec in sessions))
        t.ok(not missing, "%s: expect has a session for every listener (%s)"
             % (name, ", ".join(s for s, _ in inst.listeners)), "missing: %s" % missing)
        running = [SmtpFilter(port=inst.port(a), reinject_port=inst.port(b)) for a, b in filters]
        try:
            p.port = inst.listeners[0][1]
            p.start()
            for _, port in inst.listeners:
                p.wait_listening(port)
            t.ok(True, "%s: starts and binds its %d listeners" % (name, len(inst.listeners)))
            for spec in sessions:
                spec, want_reply = [x.strip() for x in spec.rsplit("=>", 1)]
                got_reply = inst.normalize(session(inst, spec))
                t.like(got_reply, want_reply, "%s: %s => %s" % (name, spec, want_reply))
            for f in running:
                # a transaction the filter is still receiving has data None (smtpfilter.py)
                t.ok(wait_for(lambda: [tx for tx in f.transactions() if b"Subject: corpus " + name.encode()
                                       in (tx["data"] or b"")], 30),
                     "%s: the content filter on the port given %s got the mail" % (name, inst.normalize(str(f.port))),
                     p.log()[-3000:])
            p.stop()
            log = p.log()
            t.ok(not re.search(r"panic|fatal|sanitizer", log, re.I), "%s: no panic or fatal in the log" % name,
                 log[-3000:])
        finally:
            for f in running:
                f.stop()


names = sorted(n for n in os.listdir(CORPUS) if os.path.isfile(os.path.join(CORPUS, n, "main.cf")))
# PETREL_CORPUS_ONLY=name,name: only those (while working on one configuration).
if os.environ.get("PETREL_CORPUS_ONLY"):
    names = [n for n in names if n in os.environ["PETREL_CORPUS_ONLY"].split(",")]
t.ok(len(names) >= (6 if not os.environ.get("PETREL_CORPUS_ONLY") else 1), "the corpus has %d configurations" % len(names))
for name in names:
    try:
        run(name)
    except Exception as e:   # one configuration's failure must not hide the others'
        t.ok(False, "%s: %s" % (name, e))
DNS.stop()
t.done()
