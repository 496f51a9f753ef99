"""TLS on the SMTP server: STARTTLS, wrapper mode, security levels, protocol
floor, resumption, and the TLS part of the bad input catalogue (STARTTLS
injection, handshake garbage), with smtplib as a real client. (swaks --tls
would need Net::SSLeay, which the test dependencies do not install.)"""
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
import warnings

from harness import Petrel, Smtp, Tap, free_port, make_cert

t = Tap()
warnings.simplefilter("ignore", DeprecationWarning)   # ssl.TLSVersion.TLSv1_1, used on purpose
OK_RE = r"^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$"


def client_ctx(minimum=None, maximum=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def tls_petrel(settings=None, extra_services="", workers=None):
    p = Petrel(t, start=False, extra_services=extra_services, workers=workers)
    cert, key = make_cert(p.dir)
    conf = dict(p.settings)
    conf.update({"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key})
    conf.update(settings or {})
    p.write_main_cf(conf)
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(p.master_cf)
    p._chown()
    p.start()
    return p


def starttls(c, ctx=None):
    c.sock = (ctx or client_ctx()).wrap_socket(c.sock, server_hostname="localhost")
    c.buf = b""


def still_serves(p, what):
    c = p.connect()
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: after %s\r\n\r\nok\r\n" % what)
    t.like(r, OK_RE, "%s: a fresh connection still gets its message queued" % what)
    c.close()


wrap_port = free_port()
with tls_petrel({"smtpd_tls_loglevel": "1", "smtpd_tls_received_header": "yes"},
                extra_services="127.0.0.1:%d inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n" % wrap_port) as p:
    c = p.connect()
    c.ehlo()
    t.ok("250-STARTTLS" in c.lines, "EHLO offers STARTTLS with smtpd_tls_security_level=may", c.lines)
    t.is_(c.cmd("STARTTLS now"), "501 5.5.4 Syntax: STARTTLS", "STARTTLS with an argument: 501 5.5.4")
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("STARTTLS"), "503 5.5.1 Error: MAIL transaction in progress", "STARTTLS inside a transaction: 503")
    c.cmd("RSET")
    t.is_(c.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS", "STARTTLS: 220 2.0.0")
    starttls(c)
    t.is_(c.sock.version(), "TLSv1.3", "TLS 1.3 is negotiated")
    c.ehlo()
    t.ok("250-STARTTLS" not in c.lines, "no STARTTLS offered inside TLS", c.lines)
    t.is_(c.cmd("STARTTLS"), "554 5.5.1 Error: TLS already active", "STARTTLS twice: 554 5.5.1")
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<user@petrel.test>")
    c.cmd("DATA")
    c.send(b"Subject: over tls\r\n\r\nsecret\r\n.\r\n")
    r = c.read_reply()
    m = re.match(OK_RE, r)
    t.ok(m is not None, "a message over STARTTLS is queued", r)
    body = p.queued_content(m.group(1)).decode()
    t.like(body, r"^Received: from client\.example\.org \(unknown \[127\.0\.0\.1\]\)\r\n"
                 r"\t\(using TLSv1\.3 with cipher TLS_[A-Z0-9_]+ \(\d+/\d+ bits\)\)\r\n"
                 r"\t\(No client certificate requested\)\r\n"
                 r"\tby mx\.petrel\.test \(Petrel\) with ESMTPS id %s\r\n\tfor <user@petrel\.test>; " % m.group(1),
           "Received shows (using TLSv1.3 with cipher ...) and ESMTPS")
    t.ok(p.wait_log(r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: TLSv1\.3 with cipher ")
         is not None, "log: TLS connection established from")
    c.cmd("QUIT")
    c.close()

    # STARTTLS injection (CVE-2011-0411): plaintext after STARTTLS is dropped.
    c = p.connect()
    c.ehlo()
    c.send(b"STARTTLS\r\nRSET\r\n")
    t.is_(c.read_reply(), "220 2.0.0 Ready to start TLS", "injection: STARTTLS answered")
    starttls(c)
    c.sock.settimeout(1.0)
    try:
        leaked = c.sock.recv(4096)
    except (socket.timeout, TimeoutError, ssl.SSLError):
        leaked = b""
    c.sock.settimeout(10)
    t.is_(leaked, b"", "injection: the injected RSET is not answered inside TLS")
    c.ehlo()
    t.is_(c.lines[0], "250-mx.petrel.test", "injection: the first reply inside TLS is to our EHLO")
    t.ok(p.wait_log(r"discarding 6 bytes of plaintext sent after STARTTLS by unknown\[127\.0\.0\.1\]") is not None,
         "injection: the discarded bytes are logged")
    c.close()
    still_serves(p, "STARTTLS injection")

    c = p.connect()
    c.ehlo()
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@petrel.test>\r\n")
    c.read_reply()
    starttls(c)
    c.ehlo()
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "503 5.5.1 Error: need MAIL command",
          "injection: an injected MAIL did not start a transaction")
    c.close()
    still_serves(p, "STARTTLS MAIL injection")

    # Garbage instead of a TLS handshake.
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    c.send(b"GET / HTTP/1.0\r\n\r\n" + b"\x16\x03\x01\x00\x05garbage" * 10)
    t.ok(c.closed(), "handshake garbage: the server closes that session")
    still_serves(p, "TLS handshake garbage")

    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    c.close()   # a client that vanishes mid-handshake
    still_serves(p, "client vanishes in the handshake")

    # TLS 1.1 and lower are refused; TLS 1.2 works.
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    ctx = client_ctx(maximum=ssl.TLSVersion.TLSv1_1)
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    try:
        starttls(c, ctx)
        refused = False
    except (ssl.SSLError, OSError):
        refused = True
    t.ok(refused, "a TLS 1.1 client fails the handshake")
    c.close()
    still_serves(p, "TLS 1.1 client")

    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    starttls(c, client_ctx(maximum=ssl.TLSVersion.TLSv1_2))
    t.is_(c.sock.version(), "TLSv1.2", "TLS 1.2 is accepted")
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: tls12\r\n\r\nx\r\n")
    m = re.match(OK_RE, r)
    t.ok(m is not None and b"(using TLSv1.2 with cipher " in p.queued_content(m.group(1)),
         "Received records TLSv1.2", r)
    c.close()

    # Wrapper mode (implicit TLS) on a second listener via master.cf -o.
    raw = socket.create_connection(("127.0.0.1", wrap_port), timeout=10)
    tls = client_ctx().wrap_socket(raw, server_hostname="localhost")
    c = Smtp(sock=tls, read_greeting=False)
    t.like(c.read_reply(), r"^220 mx\.petrel\.test ESMTP", "wrapper mode: greeting inside TLS")
    c.ehlo()
    t.ok("250-STARTTLS" not in c.lines, "wrapper mode: no STARTTLS offered")
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: wrapped\r\n\r\nx\r\n", ehlo=False)
    m = re.match(OK_RE, r)
    t.ok(m is not None and b"with ESMTPS id" in p.queued_content(m.group(1)), "wrapper mode: message queued as ESMTPS", r)
    c.close()
    plain = socket.create_connection(("127.0.0.1", wrap_port), timeout=5)
    plain.sendall(b"EHLO plain.example.org\r\n")
    plain.settimeout(5)
    try:
        got = plain.recv(4096)
    except (socket.timeout, TimeoutError, ConnectionResetError):
        got = b""
    t.ok(not got.startswith(b"220") and not got.startswith(b"250"), "wrapper mode: a plaintext client gets no SMTP", got)
    plain.close()
    still_serves(p, "plaintext on the wrapper port")

    # Real clients: smtplib with starttls, swaks --tls.
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="smtplib.example.org", timeout=10) as s:
        s.ehlo()
        t.ok(s.has_extn("starttls"), "smtplib sees STARTTLS")
        code, _ = s.starttls(context=client_ctx())
        t.is_(code, 220, "smtplib: starttls")
        s.ehlo()
        t.is_(s.sendmail("a@example.org", ["user@petrel.test"], "Subject: smtplib tls\r\n\r\nx\r\n"), {},
              "smtplib: message over STARTTLS accepted")

# Closing replies inside TLS reach the client (they sit below the TLS filter
# when the session ends): 554 for pipelining, 421 for errors and timeouts.
# (smtpd_timeout 5 s: short for the timeout case below, long enough that a
# loaded machine's pause between two commands of the other cases ends nothing)
with tls_petrel({"smtpd_timeout": "5s", "smtpd_hard_error_limit": "2"}) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    starttls(c)
    c.send(b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n")
    t.is_(c.read_reply(), "554 5.5.0 Error: SMTP protocol synchronization", "inside TLS: pipelined EHLO gets 554 5.5.0")
    t.ok(c.closed(), "and the session is closed")
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    starttls(c)
    c.ehlo()
    c.cmd("BOGUS1")
    c.cmd("BOGUS2")
    t.is_(c.read_reply(), "421 4.7.0 mx.petrel.test Error: too many errors", "inside TLS: 421 4.7.0 at the error limit")
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    starttls(c)
    c.ehlo()
    c.sock.settimeout(30)
    t.is_(c.read_reply(), "421 4.4.2 mx.petrel.test Error: timeout exceeded", "inside TLS: 421 4.4.2 on timeout")
    t.ok(c.closed(), "and the session is closed")
    still_serves(p, "closing replies inside TLS")

# After STARTTLS, smtpd_timeout bounds the wait for the client, not the time
# since our last reply: a message whose content comes slowly but steadily is
# received, however long it takes. (libevent's TLS filter leaves a write timer
# armed after each reply; it fired smtpd_timeout after the 354 and cut the
# transfer with "timeout after DATA".)
with tls_petrel({"smtpd_timeout": "3s"}) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    starttls(c)
    c.ehlo()
    t.like(c.cmd("MAIL FROM:<slow@example.org>"), r"^250 ", "slow content over TLS: MAIL")
    t.like(c.cmd("RCPT TO:<user@petrel.test>"), r"^250 ", "RCPT")
    t.like(c.cmd("DATA"), r"^354 ", "DATA")
    started = time.monotonic()
    c.send(b"Subject: slow over TLS\r\n\r\n")
    for i in range(8):   # a line a second: 8 s, well past smtpd_timeout (3 s), no gap near it
        time.sleep(1)
        c.send(b"line %d\r\n" % i)
    c.send(b".\r\n")
    c.sock.settimeout(30)
    r = c.read_reply()
    t.like(r, OK_RE, "content that takes %.0f s, more than smtpd_timeout 3 s, arriving a line a second: "
           "queued" % (time.monotonic() - started))
    t.ok(p.wait_log(r"timeout after DATA", timeout=1) is None, "(no \"timeout after DATA\")")
    c.sock.settimeout(30)
    t.is_(c.read_reply(), "421 4.4.2 mx.petrel.test Error: timeout exceeded",
          "then idle: 421 4.4.2 after smtpd_timeout, inside TLS")

# smtpd_tls_security_level = encrypt: nothing before STARTTLS.
with tls_petrel({"smtpd_tls_security_level": "encrypt"}) as p:
    c = p.connect()
    c.ehlo()
    t.ok("250-STARTTLS" in c.lines, "encrypt: STARTTLS offered")
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "530 5.7.0 Must issue a STARTTLS command first",
          "encrypt: MAIL before STARTTLS: 530 5.7.0")
    t.is_(c.cmd("RCPT TO:<user@petrel.test>"), "530 5.7.0 Must issue a STARTTLS command first",
          "encrypt: RCPT before STARTTLS: 530 5.7.0")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "encrypt: NOOP is allowed")
    c.cmd("STARTTLS")
    starttls(c)
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: enc\r\n\r\nx\r\n")
    t.like(r, OK_RE, "encrypt: a message after STARTTLS is queued")
    c.close()

# Session resumption (one worker here; across workers: test_tls_server.py).
with tls_petrel({"smtpd_tls_loglevel": "2"}, workers=1) as p:
    ctx = client_ctx(maximum=ssl.TLSVersion.TLSv1_2)
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    starttls(c, ctx)
    c.ehlo()
    session = c.sock.session
    c.cmd("QUIT")
    c.close()
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost", session=session)
    c.buf = b""
    t.ok(c.sock.session_reused, "a TLS session is resumed")
    c.ehlo()
    t.is_(c.lines[0], "250-mx.petrel.test", "and the resumed session works")
    t.ok(p.wait_log(r"unknown\[127\.0\.0\.1\]: Reusing old session") is not None,
         "log (smtpd_tls_loglevel 2): Reusing old session")
    c.close()

# A missing certificate is a configuration error that names the parameter.
with Petrel(t, start=False, main_cf={"smtpd_tls_security_level": "may"}) as p:
    from harness import PETRELD
    r = subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)
    t.ok(r.returncode != 0 or "smtpd_tls_cert_file" in r.stderr, "TLS without a certificate is reported", r.stderr)

t.done()
