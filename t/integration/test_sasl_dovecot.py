"""smtpd_sasl_type = dovecot against a PRIVATE Dovecot auth service (passwd-file users; own
base_dir and log; started and stopped by PID): every mechanism Dovecot advertises (PLAIN,
LOGIN, CRAM-MD5, SCRAM-SHA-256) through the core's AUTH exchange, for Python smtplib, swaks
and a SCRAM client of our own; submission (587-style STARTTLS with smtpd_tls_auth_only) and
submissions (465-style implicit TLS); what Dovecot is told (addresses, ports, "secured");
Postfix's failure line as fail2ban's postfix-sasl filter reads it; bad base64, "*",
over-long responses, AUTH in a transaction, AUTH twice; the security options (with and
without TLS); Dovecot down (454 4.7.0) and back; inet:host:port; a back-end that never
answers (454 after sasl_hook_timeout); and no password in the log or the queue."""
import os
import pwd
import re
import smtplib
import socket
import ssl
import subprocess
import threading

from harness import Petrel, Smtp, Tap, free_port, make_cert, wait_for
from modlib import bundled_module_dir
from sasllib import DOVECOT, DovecotAuth, b64, files_containing, scram_sha256

t = Tap(timeout=300)
USERS = {"alice": "Zq7-sasl-Pw1", "bob": "Bob-Pw-42x"}

# fail2ban 1.0's filter.d/postfix.conf, mode "auth" (Debian 12), as one Python regex:
# __prefix_line + _daemon "postfix(-\w+)?/\w+(?:/smtp[ds])?" + mdpr-auth "warning:" + mdre-auth.
FAIL2BAN_AUTH = re.compile(
    r"postfix(-\w+)?/\w+(?:/smtp[ds])?\[\d+\]: warning: [^[]*\[(?P<host>[^\]]+)\](?::\d+)?: "
    r"SASL ((?i:LOGIN|PLAIN|(?:CRAM|DIGEST)-MD5)) authentication failed:"
    r"(?! Connection lost to authentication server| Invalid authentication mechanism)")


def bail(reason, diag=None):
    t.ok(False, "private Dovecot auth service: " + reason, diag)
    t.done()


if os.geteuid() != 0:
    bail("must run as root (Dovecot drops to its own users)")
if not os.access(DOVECOT, os.X_OK):
    bail("dovecot not installed (dovecot-core: PETREL_WITH_TESTS=1 scripts/install-deps.sh)")
try:
    pwd.getpwnam("dovecot")
    pwd.getpwnam("dovenull")
except KeyError as e:
    bail("missing system user: %s" % e)

dc = DovecotAuth(USERS, extra="auth_debug = yes\n")   # logs each request's fields (resp=<hidden>)
try:
    handshake = dc.start()
except Exception as e:   # noqa: BLE001 - reported, then the script fails
    dc.cleanup()
    bail("dovecot did not start", str(e))
t.like(handshake, r"MECH\tSCRAM-SHA-256", "the private Dovecot advertises SCRAM-SHA-256")

mods = bundled_module_dir("sasl")
sub_port, subs_port = free_port(), free_port()


def plain_requests(dovecot):
    """The AUTH PLAIN requests Dovecot logged (auth_debug), oldest first."""
    return re.findall(r"client in: (AUTH\t\d+\tPLAIN\t[^\n]*)", dovecot.logs())


def smtplib_login(port, mech, user, password, starttls=True, implicit=False):
    ctx = ssl._create_unverified_context()
    s = smtplib.SMTP_SSL("127.0.0.1", port, timeout=15, context=ctx) if implicit else \
        smtplib.SMTP("127.0.0.1", port, timeout=15)
    s.ehlo("client.example.org")
    if starttls:
        s.starttls(context=ctx)
        s.ehlo("client.example.org")
    s.user, s.password = user, password
    fn = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}[mech]
    try:
        code, text = s.auth(mech, fn, initial_response_ok=(mech != "LOGIN"))
    except smtplib.SMTPAuthenticationError as e:
        code, text = e.smtp_code, e.smtp_error
    return s, code, text.decode() if isinstance(text, bytes) else text


try:
    base = {"modules": "sasl", "module_directory": mods, "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot", "smtpd_sasl_path": dc.socket, "mynetworks": "192.0.2.0/24",
            "syslog_name": "postfix", "smtpd_sasl_failure_delay": "0s", "sasl_hook_timeout": "5s"}
    with Petrel(t, main_cf=base, start=False) as p:
        cert, key = make_cert(p.dir)
        os.chmod(key, 0o644)
        conf = dict(p.settings, smtpd_tls_cert_file=cert, smtpd_tls_key_file=key, smtpd_tls_security_level="may")
        p.write_main_cf(conf)
        with open(os.path.join(p.conf, "master.cf"), "a") as f:
            f.write("127.0.0.1:%d inet n - n - - smtpd\n"
                    "  -o smtpd_tls_security_level=encrypt\n  -o smtpd_tls_auth_only=yes\n" % sub_port)
            f.write("127.0.0.1:%d inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n" % subs_port)
        p.start()
        p.wait_listening(sub_port)
        p.wait_listening(subs_port)

        c = p.connect()
        c.ehlo()
        auth = [l for l in c.lines if l.startswith("250-AUTH ")]
        t.ok(auth and set(auth[0][9:].split()) == {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"},
             "EHLO offers every mechanism Dovecot advertises", auth)
        t.is_(scram_sha256(c, "alice", USERS["alice"]), "235 2.7.0 Authentication successful",
              "SCRAM-SHA-256 through the core (challenges both ways, the server's final message checked)")
        r = c.send_message("alice@example.org", ["x@elsewhere.example"], "Subject: scram\r\n\r\nx", ehlo=False)
        qid = r.split()[-1]
        t.ok(p.wait_log(r"%s: client=unknown\[127\.0\.0\.1\], sasl_method=SCRAM-SHA-256, sasl_username=alice"
                        % qid) is not None, "the client= line names the method and the login pflogsumm reads")
        t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0" + USERS["alice"])), "503 5.5.1 Error: already authenticated",
              "AUTH twice: 503")
        c.close()

        # submission: STARTTLS then AUTH (smtpd_tls_auth_only), Thunderbird-style
        c = Smtp(sub_port)
        c.ehlo()
        t.ok(not any("AUTH" in l for l in c.lines), "port 587-style: no AUTH before STARTTLS")
        for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
            s, code, text = smtplib_login(sub_port, mech, "bob", USERS["bob"])
            t.is_(code, 235, "smtplib AUTH %s after STARTTLS" % mech)
            if mech == "LOGIN":
                s.sendmail("bob@example.org", ["y@elsewhere.example"], "Subject: sub\r\n\r\nvia 587\r\n")
            s.quit()
        t.ok(p.wait_log(r"client=unknown\[127\.0\.0\.1\], sasl_method=LOGIN, sasl_username=bob") is not None,
             "bob's message was accepted after AUTH LOGIN")
        s, code, text = smtplib_login(sub_port, "CRAM-MD5", "bob", "wrong")
        t.is_((code, text), (535, "5.7.8 Error: authentication failed: authentication failure"),
              "a wrong CRAM-MD5 answer gets Postfix's 535 5.7.8")
        s.close()

        # submissions: implicit TLS, swaks as the client
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(subs_port), "--tlsc",
                            "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", USERS["alice"],
                            "--from", "alice@example.org", "--to", "z@elsewhere.example", "--timeout", "20"],
                           capture_output=True, text=True, timeout=60)
        t.ok(r.returncode == 0 and "235 2.7.0 Authentication successful" in r.stdout,
             "swaks over implicit TLS (465-style) with AUTH LOGIN", r.stdout[-2000:] + r.stderr[-500:])
        s, code, text = smtplib_login(subs_port, "PLAIN", "alice", USERS["alice"], starttls=False, implicit=True)
        t.is_(code, 235, "smtplib over implicit TLS with AUTH PLAIN")
        s.quit()
        # Dovecot's log process may write the request after its reply reached us
        tls_request = wait_for(lambda: [r for r in plain_requests(dc) if "\tlport=%d\t" % subs_port in r], timeout=30)
        requests = plain_requests(dc)
        t.ok(tls_request and re.search(r"\tservice=smtp\tnologin\tlip=127\.0\.0\.1\trip=127\.0\.0\.1\t"
                                       r"lport=%d\trport=\d+\tsecured\tsession=\S+" % subs_port, tls_request[-1]),
             "Dovecot is told the service, both addresses and ports, and 'secured' under TLS", requests[-3:])

        # failures and hostile input, in plaintext on the main port
        c = p.connect()
        c.ehlo()
        t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0nope")), "535 5.7.8 Error: authentication failed: authentication failure",
              "a wrong password: 535 5.7.8")
        plain = wait_for(lambda: [r for r in plain_requests(dc) if "\tlport=%d\t" % p.port in r], timeout=30)
        t.ok(plain and "\tsecured" not in plain[-1], "and not 'secured' without TLS", plain[-1:])
        line = p.wait_log(r"warning: unknown\[127\.0\.0\.1\]: SASL PLAIN authentication failed: "
                          r"authentication failure, sasl_username=alice")
        t.ok(line is not None, "Postfix's warning line with sasl_username=")
        fails = [l for l in p.log().splitlines() if FAIL2BAN_AUTH.search(l)]
        t.ok(fails and FAIL2BAN_AUTH.search(fails[0]).group("host") == "127.0.0.1",
             "fail2ban's postfix-sasl regex matches it and finds the client's address", fails[:2])
        t.is_(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6", "Dovecot's LOGIN challenge, passed through")
        t.is_(c.cmd("not base64!"), "501 5.5.2 Cannot decode response", "bad base64 in a response: 501 5.5.2")
        t.is_(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6", "a new exchange")
        t.is_(c.cmd("*"), "501 5.7.0 Authentication aborted", "* cancels it")
        t.ok(p.wait_log(r"warning: unknown\[127\.0\.0\.1\]: SASL LOGIN authentication aborted") is not None,
             "and is logged as Postfix logs it")
        t.is_(c.cmd("AUTH CRAM-MD5"), "334 " + c.lines[-1][4:], "CRAM-MD5 sends a challenge")
        c.send("A" * 13000 + "\r\n")
        t.is_(c.read_reply(), "500 5.5.6 SASL response limit exceeded", "an over-long response: 500 5.5.6")
        t.is_(c.cmd("AUTH FOO-BAR"), "504 5.5.4 Unrecognized authentication type", "an unknown mechanism: 504")
        t.is_(c.cmd("AUTH PLAIN =junk"), "501 5.5.2 Cannot decode response", "bad base64 in the initial response")
        c.cmd("MAIL FROM:<a@example.org>")
        t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0" + USERS["alice"])), "503 5.5.1 Error: MAIL transaction in progress",
              "AUTH during a transaction: 503")
        c.cmd("RSET")
        t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "the session goes on after all of that")
        t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0" + USERS["alice"])), "235 2.7.0 Authentication successful",
              "and still authenticates")
        c.close()

        # Dovecot goes away: 454, and comes back: 235
        dc.stop()
        c = p.connect()
        c.ehlo()
        t.ok(any(l.startswith("250-AUTH ") for l in c.lines), "with Dovecot down, EHLO still offers its list")
        t.like(c.cmd("AUTH PLAIN " + b64("\0alice\0" + USERS["alice"])), r"^454 4\.7\.0 Temporary authentication failure: ",
               "AUTH while Dovecot is down: 454 4.7.0")
        c.close()
        dc.start()
        c = p.connect()
        c.ehlo()
        t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0" + USERS["alice"])), "235 2.7.0 Authentication successful",
              "Dovecot back: the module connects again by itself")
        c.close()
        p.stop()
        leaks = files_containing([p.dir], [pw.encode() for pw in USERS.values()] +
                                 [b64("\0alice\0" + USERS["alice"]).encode()])
        t.is_(leaks, [], "no password (nor its base64) in the log, the queue or anything else petreld wrote")

    # security options: noplaintext drops PLAIN and LOGIN; inet:host:port reaches Dovecot too
    with Petrel(t, main_cf=dict(base, smtpd_sasl_path="inet:127.0.0.1:%d" % dc.port,
                                smtpd_sasl_security_options="noanonymous, noplaintext",
                                smtpd_sasl_tls_security_options="noanonymous"), start=False) as p:
        cert, key = make_cert(p.dir)
        os.chmod(key, 0o644)
        p.write_main_cf(dict(p.settings, smtpd_tls_cert_file=cert, smtpd_tls_key_file=key,
                             smtpd_tls_security_level="may"))
        p.start()
        c = p.connect()
        c.ehlo()
        c.cmd("STARTTLS")
        c.starttls()
        c.ehlo()
        auth = [l for l in c.lines if l.startswith("250-AUTH ")]
        t.ok(auth and "PLAIN" in auth[0].split(), "smtpd_sasl_tls_security_options applies under TLS: PLAIN offered",
             auth)
        t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0" + USERS["alice"])), "235 2.7.0 Authentication successful",
              "and accepted")
        c.close()
        c = p.connect()
        c.ehlo()
        auth = [l for l in c.lines if l.startswith("250-AUTH ")]
        t.ok(auth and "PLAIN" not in auth[0].split() and "CRAM-MD5" in auth[0].split(),
             "noplaintext keeps PLAIN and LOGIN off the list", auth)
        t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0" + USERS["alice"])), "504 5.5.4 Unrecognized authentication type",
              "and refuses them")
        t.is_(scram_sha256(c, "alice", USERS["alice"]), "235 2.7.0 Authentication successful",
              "smtpd_sasl_path = inet:host:port")
        c.close()
    with Petrel(t, main_cf=dict(base, smtpd_sasl_mechanism_filter="plain, login", broken_sasl_auth_clients="yes")) as p:
        c = p.connect()
        c.ehlo()
        t.ok("250-AUTH PLAIN LOGIN" in c.lines and "250-AUTH=PLAIN LOGIN" in c.lines,
             "smtpd_sasl_mechanism_filter and broken_sasl_auth_clients (AUTH=)", c.lines)
        c.close()
finally:
    dc.cleanup()

# A Dovecot-speaking server that finishes the handshake, then never answers an AUTH.
lsock = socket.socket()
lsock.bind(("127.0.0.1", 0))
lsock.listen(8)
stuck = []


def silent_server():
    while True:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        stuck.append(conn)
        conn.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\t00\nDONE\n")


th = threading.Thread(target=silent_server, daemon=True)
th.start()
with Petrel(t, main_cf={"modules": "sasl", "module_directory": mods, "smtpd_sasl_auth_enable": "yes",
                        "smtpd_sasl_type": "dovecot", "mynetworks": "192.0.2.0/24", "sasl_hook_timeout": "2s",
                        "smtpd_sasl_path": "inet:127.0.0.1:%d" % lsock.getsockname()[1]}) as p:
    c = p.connect()
    c.ehlo()
    t.ok("250-AUTH PLAIN" in c.lines, "the stuck server's handshake gives its list")
    t.is_(c.cmd("AUTH PLAIN " + b64("\0alice\0x")),
          "454 4.7.0 Temporary authentication failure: authentication server did not answer",
          "a back-end that never answers: 454 4.7.0 after sasl_hook_timeout")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "and the session goes on")
    c.close()
lsock.close()
for conn in stuck:
    conn.close()

# The client certificate's verification reaches Dovecot as valid-client-cert
# on a service that asks for certificates (smtpd_tls_ask_ccert): a Dovecot
# with auth_ssl_require_client_cert = yes then authenticates only clients
# whose certificate verified.
dc = DovecotAuth(USERS, extra="auth_debug = yes\nauth_ssl_require_client_cert = yes\n")
try:
    dc.start()
    with Petrel(t, main_cf=dict(base, smtpd_sasl_path=dc.socket), start=False) as p:
        cert, key = make_cert(p.dir)
        ccdir = os.path.join(p.dir, "cc")
        os.mkdir(ccdir)
        os.chmod(ccdir, 0o755)
        cl_cert, cl_key = make_cert(ccdir, "client.petrel.test")
        other_dir = os.path.join(p.dir, "other")
        os.mkdir(other_dir)
        other_cert, other_key = make_cert(other_dir, "other.petrel.test")
        p.write_main_cf(dict(p.settings, smtpd_tls_cert_file=cert, smtpd_tls_key_file=key,
                             smtpd_tls_security_level="may", smtpd_tls_ask_ccert="yes", smtpd_tls_CAfile=cl_cert))
        p._chown()
        p.start()

        def cert_login(client_cert=None, client_key=None):
            ctx = ssl._create_unverified_context()
            if client_cert:
                ctx.load_cert_chain(client_cert, client_key)
            s = smtplib.SMTP("127.0.0.1", p.port, timeout=15)
            s.ehlo("client.example.org")
            s.starttls(context=ctx)
            s.ehlo("client.example.org")
            s.user, s.password = "alice", USERS["alice"]
            try:
                code, _ = s.auth("PLAIN", s.auth_plain)
            except smtplib.SMTPAuthenticationError as e:
                code = e.smtp_code
            s.quit()
            return code

        def cert_login_request(client_cert=None, client_key=None):
            """cert_login's reply code and the AUTH request Dovecot logged for it.
            Dovecot's auth process hands its lines to its log process, which may
            write them after the reply has reached us: wait for the new one."""
            before = len(plain_requests(dc))
            code = cert_login(client_cert, client_key)
            reqs = wait_for(lambda: plain_requests(dc)[before:], timeout=30)
            return code, reqs[-1] if reqs else ""

        code, request = cert_login_request(cl_cert, cl_key)
        t.is_(code, 235, "a client certificate that verifies: Dovecot authenticates")
        t.like(request, r"\tsecured\tvalid-client-cert\tsession=", "Dovecot was told valid-client-cert")
        code, request = cert_login_request()
        t.is_(code, 535, "no client certificate: Dovecot (auth_ssl_require_client_cert) refuses")
        t.ok(request and "valid-client-cert" not in request, "and was not told valid-client-cert", request)
        code, request = cert_login_request(other_cert, other_key)
        t.is_(code, 535, "a certificate that does not verify: refused too")
        t.ok(request and "valid-client-cert" not in request, "and not told valid-client-cert", request)
finally:
    dc.cleanup()
t.done()
