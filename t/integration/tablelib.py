"""Helpers for the lookup-table tests: the bundled table modules in a module
directory, petrelctl with a configuration that loads them, Postfix's own
postmap and postalias (the oracle for key forms and file formats), and a
petreld whose virtual_alias_maps is a table of a module (a session at RCPT)."""
import os
import shutil
import subprocess
import tempfile
import threading

from harness import CLEANUP_DIRS, PETRELCTL, run_as_user
from modlib import bundled_module_dir  # noqa: F401 (the table tests import it from here too)

TABLE_MODULES = ("lmdb", "cdb", "sqlite")


class Workspace:
    """A directory with a main.cf that loads the table modules, for running
    petrelctl without a daemon. As root, commands run as the test user and
    the directory belongs to that user, as in the daemon tests."""

    def __init__(self, extra_main_cf=""):
        self.dir = tempfile.mkdtemp(prefix="petrel-tables-")
        os.chmod(self.dir, 0o755)
        CLEANUP_DIRS.append(self.dir)
        self.conf = os.path.join(self.dir, "conf")
        os.mkdir(self.conf)
        self.modules = bundled_module_dir(*TABLE_MODULES)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("queue_directory = %s/queue\nmodules = %s\nmodule_directory = %s\n%s"
                    % (self.dir, " ".join(TABLE_MODULES), self.modules, extra_main_cf))
        self.prefix, self.pw = run_as_user()
        self.chown(self.dir)
        self.chown(self.conf)
        self.chown(os.path.join(self.conf, "main.cf"))

    def chown(self, path):
        if self.pw:
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text, mode=0o644):
        path = self.path(name)
        with open(path, "w" if isinstance(text, str) else "wb") as f:
            f.write(text)
        os.chmod(path, mode)
        self.chown(path)
        return path

    def petrelctl(self, *args, input=None, as_user=True):
        cmd = (self.prefix if as_user else []) + [PETRELCTL, "-c", self.conf] + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=60)


class Postfix:
    """Postfix's postmap and postalias with a private configuration directory.
    compatibility_level 3.6 turns smtputf8_enable on, as Petrel's default."""

    def __init__(self, extra_main_cf=""):
        for tool in ("postmap", "postalias"):
            if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
                raise RuntimeError("%s is missing: install postfix, postfix-lmdb, postfix-cdb, postfix-sqlite "
                                   "(scripts/install-deps.sh)" % tool)
        self.dir = tempfile.mkdtemp(prefix="petrel-postfix-conf-")
        CLEANUP_DIRS.append(self.dir)
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write("compatibility_level = 3.6\n" + extra_main_cf)

    def run(self, tool, *args, input=None):
        path = shutil.which(tool) or "/usr/sbin/" + tool
        return subprocess.run([path, "-c", self.dir] + list(args), capture_output=True, text=True, input=input,
                              timeout=60)

    def postmap(self, *args, input=None):
        return self.run("postmap", *args, input=input)

    def postalias(self, *args, input=None):
        return self.run("postalias", *args, input=input)


def dump_lines(text, drop=()):
    """The lines of a dump, sorted, without the keys in drop (Postfix's NIS entries)."""
    return sorted(line for line in text.splitlines() if line and line.split(None, 1)[0].rstrip(":") not in drop)


def alias_session(p, modules, spec, domain, **main_cf):
    """Starts p with virtual_alias_maps = spec ("TYPE:NAME", the module TYPE loaded from the
    directory modules) for domain, and main_cf's parameters (the type's timeout...); a connection
    in a mail transaction (after MAIL FROM), for RCPT TO (the caller closes it)."""
    conf = dict(p.settings)
    conf.update({"modules": spec.split(":", 1)[0], "module_directory": modules, "virtual_alias_domains": domain,
                 "virtual_alias_maps": spec})
    conf.update(main_cf)
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    return c


def rcpt_replies(p, addresses):
    """The replies to RCPT TO for each of addresses, in one transaction on a new session."""
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    replies = [c.cmd("RCPT TO:<%s>" % a) for a in addresses]
    c.close()
    return replies


class WaitingRcpt:
    """RCPT TO:<address> in a session of its own (EHLO, MAIL first) in a thread: the lookup
    a test keeps waiting while it checks that the worker serves other sessions meanwhile.
    reply is RCPT's reply once it came, None before."""

    def __init__(self, p, address):
        self.reply = None
        self.thread = threading.Thread(target=self._session, args=(p, address))
        self.thread.start()

    def _session(self, p, address):
        s = p.connect()
        s.ehlo("client.test")
        s.cmd("MAIL FROM:<sender@example.org>")
        self.reply = s.cmd("RCPT TO:<%s>" % address)
        s.close()

    def result(self, timeout=30):
        """The reply, once it came or timeout seconds passed (None then)."""
        self.thread.join(timeout)
        return self.reply


def alias_rcpt_replies(p, modules, spec, domain, addresses, **main_cf):
    """alias_session's replies to RCPT TO for each of addresses, in one transaction."""
    c = alias_session(p, modules, spec, domain, **main_cf)
    replies = [c.cmd("RCPT TO:<%s>" % a) for a in addresses]
    c.close()
    return replies
