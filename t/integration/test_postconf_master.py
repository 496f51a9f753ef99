"""petrelctl config -M / -F / -P (and -Mf, -X, -#) against Postfix's own postconf
on the same files: what it shows, byte for byte, and what its edits leave in
master.cf (issue 17, point 3). Postfix is the oracle (scripts/install-deps.sh
installs it); postconf only reads the copies this test makes."""
import os
import shutil
import subprocess
import tempfile

from harness import PETRELCTL, Tap

t = Tap()

POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"

SAMPLE = """\
# A master.cf with what real ones have: comments, continuation lines,
# -o in every form, { } values, daemon options, pipe and spawn arguments.
smtp      inet  n       -       y       -       -       smtpd
  -o smtpd_tls_security_level=may
#628       inet  n       -       y       -       -       qmqpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
  # a comment inside an entry
  -osmtpd_delay_reject=yes
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
smtps     inet  n       -       y       -       -       smtpd -v -o smtpd_tls_wrappermode=yes
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
smtp-amavis unix -      -       n       -       2       smtp
        -o smtp_data_done_timeout=1200
        -o smtp_send_xforward_command=yes
        -o disable_dns_lookups=yes
        -o max_use=20
127.0.0.1:10025 inet n  -       n       -       -       smtpd
        -o content_filter=
        -o local_recipient_maps=
        -o relay_recipient_maps=
        -o smtpd_restriction_classes=
        -o smtpd_delay_reject=no
        -o smtpd_client_restrictions=permit_mynetworks,reject
        -o receive_override_options=no_header_body_checks,no_unknown_recipient_checks
policyd-spf  unix  -       n       n       -       0       spawn
    user=policyd-spf argv=/usr/bin/policyd-spf
maildrop  unix  -       n       n       -       -       pipe
  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
uucp      unix  -       n       n       -       -       pipe
  flags=Fqhu user=uucp argv=uux -r -n -z -a$sender - $nexthop!rmail ($recipient)
dovecot   unix  -       n       n       -       -       pipe
  flags=DRhu user=vmail:vmail argv=/usr/lib/dovecot/deliver -f ${sender} -d ${user}@${nexthop} -a ${original_recipient} { -o some long argument with spaces }
"""


def setup(master_cf):
    d = tempfile.mkdtemp(prefix="petrel-postconf-")
    open(os.path.join(d, "main.cf"), "w").close()
    with open(os.path.join(d, "master.cf"), "w") as f:
        f.write(master_cf)
    return d


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


samples = [("a sample master.cf", SAMPLE)]
for path in ("/usr/share/postfix/master.cf.dist", "/etc/postfix/master.cf.proto", "/etc/postfix/master.cf"):
    if os.path.exists(path):
        with open(path) as f:
            samples.append(("Postfix's " + path, f.read()))
        break
t.ok(len(samples) == 2, "Postfix's own master.cf is installed to compare with")

for label, text in samples:
    d = setup(text)
    for args in (["-M"], ["-Mf"], ["-F"], ["-Ff"], ["-P"], ["-Pf"], ["-M", "smtp"], ["-M", "smtp/inet", "relay"],
                 ["-M", "*/unix"], ["-F", "submission/inet/command"], ["-F", "*/*/process_limit"],
                 ["-Fh", "smtp/inet/chroot"], ["-P", "submission/inet/smtpd_client_restrictions"],
                 ["-P", "*/*/syslog_name"], ["-Ph", "smtp-amavis"]):
        want = run([POSTCONF, "-c", d] + args)
        got = run([PETRELCTL, "-c", d, "config"] + args)
        t.ok(want.returncode == 0 and got.returncode == 0 and got.stdout == want.stdout,
             "%s: config %s prints what postconf %s prints" % (label, " ".join(args), " ".join(args)),
             "postconf:\n%s\npetrelctl:\n%s%s" % (want.stdout, got.stdout, got.stderr))
    shutil.rmtree(d)

EDITS = [
    ["-P", "submission/inet/smtpd_tls_security_level=may", "submission/inet/smtpd_tls_auth_only=yes"],
    ["-PX", "submission/inet/syslog_name", "smtp-amavis/unix/max_use"],
    ["-F", "smtp-amavis/unix/process_limit=4", "smtp/inet/chroot=n"],
    ["-F", "maildrop/unix/command=pipe flags=R user=vmail argv=/bin/cat ${recipient}"],
    ["-M", "new/unix=new unix - - n - - smtp -o smtp_helo_timeout=5", "pickup/unix=pickup unix n - n 30 1 pickup"],
    ["-M", "smtp/inet=2525 inet n - n - - smtpd -o { smtpd_banner = $myhostname ESMTP }"],
    ["-MX", "smtp-amavis/unix", "uucp/unix"],
    ["-M#", "qmgr/unix", "submission/inet"],
]
for args in EDITS:
    a, b = setup(SAMPLE), setup(SAMPLE)
    want = run([POSTCONF, "-c", a] + args)
    got = run([PETRELCTL, "-c", b, "config"] + args)
    with open(os.path.join(a, "master.cf")) as f:
        want_text = f.read()
    with open(os.path.join(b, "master.cf")) as f:
        got_text = f.read()
    t.ok(want.returncode == 0 and got.returncode == 0 and got_text == want_text,
         "config %s edits master.cf as postconf does" % " ".join(args),
         "postconf:\n%s\npetrelctl:\n%s%s" % (want_text, got_text, got.stderr))
    t.ok(got_text != SAMPLE, "and the edit changed the file (%s)" % args[0])
    shutil.rmtree(a)
    shutil.rmtree(b)

# main.cf: -# comments a definition out, continuation lines included.
d = setup(SAMPLE)
main_cf = "a = 1\nmyhostname = mx.example\n  .org\n# a comment\nb = 2\n"
for tool, base in ((POSTCONF, None), (PETRELCTL, None)):
    with open(os.path.join(d, "main.cf"), "w") as f:
        f.write(main_cf)
    r = run([tool, "-c", d, "-#", "myhostname", "b"] if tool == POSTCONF else [tool, "-c", d, "config", "-#", "myhostname", "b"])
    with open(os.path.join(d, "main.cf")) as f:
        if tool == POSTCONF:
            want_text = f.read()
        else:
            got_text = f.read()
t.is_(got_text, want_text, "config -# name comments out a main.cf definition as postconf -# does")
shutil.rmtree(d)

# Mistakes are refused with a message and the file is left alone.
d = setup(SAMPLE)
for args, pattern in ((["-P", "submission/inet/smtpd_banner=a b"], "cannot contain white space"),
                      (["-F", "smtp/inet/maxproc=2"], "unknown field \"maxproc\""),
                      (["-M", "smtp=smtp inet n - n - - smtpd"], "expected service_name/type"),
                      (["-FX", "smtp/inet/chroot"], "-X removes entries (-M) or parameters (-P), not fields"),
                      (["-M", "bad/unix=bad unix - -"], "at least 8 columns"),
                      (["-f", "myhostname"], "-f folds master.cf output only")):
    r = run([PETRELCTL, "-c", d, "config"] + args)
    t.ok(r.returncode != 0, "config %s is refused" % " ".join(args))
    t.ok(pattern in r.stderr, "saying why (%s)" % pattern, r.stderr)
with open(os.path.join(d, "master.cf")) as f:
    t.is_(f.read(), SAMPLE, "and master.cf is unchanged")
r = run([PETRELCTL, "-c", d, "config", "-F", "nothere/unix/wakeup=5"])
t.ok("unmatched service_name/type: \"nothere/unix/wakeup=5\"" in r.stderr, "an edit of no entry is warned about")
shutil.rmtree(d)

t.done()
