"""Helpers for the postscreen tests: a petreld whose master.cf is Debian's
postscreen setup (postscreen on the SMTP port, smtpd as a pass service,
dnsblog and tlsproxy lines), clients from chosen loopback addresses, and
the log lines postscreen writes."""
import os
import re
import tempfile
import time

from harness import CLEANUP_DIRS, Petrel, Smtp, free_port, run_as_user

# Debian's /etc/postfix/master.cf with postscreen enabled (as its comments
# and POSTSCREEN_README show), the SMTP port moved to a loopback test port.
# The pass service overrides its banner so that a test can tell the smtpd
# session (after the hand-off) from postscreen's own engine.
DEBIAN_POSTSCREEN = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
#smtp      inet  n       -       y       -       -       smtpd
{listen}      inet  n       -       y       -       1       postscreen
smtpd     pass  -       -       y       -       {pass_maxproc}       smtpd
  -o {{ smtpd_banner = $myhostname ESMTP passed }}{pass_extra}
dnsblog   unix  -       -       y       -       0       dnsblog
tlsproxy  unix  -       -       y       -       0       tlsproxy
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
trace     unix  -       -       y       -       0       bounce
verify    unix  -       -       y       -       1       verify
flush     unix  n       -       y       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
showq     unix  n       -       y       -       -       showq
error     unix  -       -       y       -       -       error
retry     unix  -       -       y       -       -       error
discard   unix  -       -       y       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       y       -       -       lmtp
anvil     unix  -       -       y       -       1       anvil
scache    unix  -       -       y       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

BANNER = "mx.petrel.test ESMTP Petrel"
PASSED_BANNER = "mx.petrel.test ESMTP passed"


def data_directory():
    """A data_directory the test user owns (postscreen's cache lives there)."""
    d = tempfile.mkdtemp(prefix="petrel-data-")
    _, pw = run_as_user()
    if pw:
        os.chown(d, pw.pw_uid, pw.pw_gid)
    CLEANUP_DIRS.append(d)
    return d


def postscreen(t, main_cf=None, pass_maxproc="-", pass_extra="", start=True, extra_services=""):
    """A Petrel instance with Debian's postscreen master.cf on a free port."""
    port = free_port()
    settings = {
        # mynetworks elsewhere: permit_mynetworks must not wave the tests' clients through
        "mynetworks": "192.0.2.0/24",
        "data_directory": data_directory(),
        "postscreen_greet_wait": "1s",
    }
    settings.update(main_cf or {})
    master = DEBIAN_POSTSCREEN.format(listen="127.0.0.1:%d" % port, pass_maxproc=pass_maxproc,
                                      pass_extra=pass_extra) + extra_services
    p = Petrel(t, main_cf=settings, master_cf=master, start=False)
    p.port = port
    if start:
        p.start()
        if not settings.get("postscreen_upstream_proxy_protocol"):
            probe_gone(p)
    return p


def probe_gone(p, timeout=30):
    """Waits until the harness's readiness probe (a connection from
    127.0.0.1 that closes at once) is over. p.start() returns once the port
    accepts connections, but the probe is screened like any client whenever
    a worker gets to it: on a loaded machine that can be after the test's
    own clients, and then it takes a place in the post-queue or the one smtpd
    slot of the pass service (a test's fifth waiting client was refused
    "421 4.3.2 All server ports are busy" that way). Postscreen ends it with
    DISCONNECT (its hangup in the greet wait), or hands it to smtpd, whose
    session sees it gone."""
    pattern = (r"postscreen\[\d+\]: DISCONNECT \[127\.0\.0\.1\]:%d\n|"
               r"smtpd\[\d+\]: disconnect from \S+\[127\.0\.0\.1\]" % p.probe_port)
    if p.wait_log(pattern, timeout) is None:
        log = p.log()
        p.stop()
        raise RuntimeError("the readiness probe [127.0.0.1]:%s did not end within %d s:\n%s"
                           % (p.probe_port, timeout, log[-4000:]))


def connect(port, src, read=True, timeout=20):
    """A raw client from loopback address src; with read, the whole first reply."""
    return Smtp(port, source=src, read_greeting=read, timeout=timeout)


def client_port(c):
    return c.sock.getsockname()[1]


def log_lines(p, pattern):
    return re.findall(pattern, p.log(), re.M)


def closed_after(c, wait=5.0):
    """The rest the server sent, and whether it closed the connection."""
    return c.closed(wait)


def wait_for_line(p, pattern, timeout=10.0):
    m = p.wait_log(pattern, timeout)
    return m.group(0) if m else None


def sleep(seconds):
    time.sleep(seconds)
