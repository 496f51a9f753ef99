#!/usr/bin/env python3
"""The SMTP server's TLS parameters, seen from real clients (Python ssl and
openssl s_client) on the wire: smtpd_tls_chain_files (and its precedence
over smtpd_tls_cert_file), smtpd_tls_protocols and _mandatory_protocols,
smtpd_tls_ciphers, _exclude_ciphers, _mandatory_exclude_ciphers,
tls_preempt_cipherlist, smtpd_tls_CAfile/_CApath with smtpd_tls_ask_ccert
and _req_ccert (and the client certificate's facts: Received:, the log,
permit_tls_clientcerts, permit_tls_all_clientcerts, check_ccert_access and
the policy protocol's ccert_* attributes),
smtpd_tls_loglevel, smtpd_tls_received_header, smtpd_tls_dh1024_param_file,
the legacy smtpd_use_tls, smtpd_starttls_timeout,
smtpd_client_new_tls_session_rate_limit, and resumption across the two
smtpd workers: session tickets sealed with the keys the master shares (and
rotates at reload), session IDs in smtpd_tls_session_cache_database."""
import os
import re
import shutil
import signal
import ssl
import subprocess
import warnings

from harness import Petrel, Smtp, Tap, make_cert, PETRELD, wait_for

t = Tap(timeout=280)
warnings.simplefilter("ignore", DeprecationWarning)
OK_RE = r"^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$"
TLS12 = ssl.TLSVersion.TLSv1_2
WORK = __import__("tempfile").mkdtemp(prefix="petrel-tlssrv-")
os.chmod(WORK, 0o755)


def certs(name, cn):
    d = os.path.join(WORK, name)
    os.mkdir(d)
    os.chmod(d, 0o755)
    cert, key = make_cert(d, cn)
    os.chmod(key, 0o644)
    return cert, key


SRV_CERT, SRV_KEY = certs("srv", "legacy.petrel.test")
CH_CERT, CH_KEY = certs("chain", "chain.petrel.test")
CHAIN = os.path.join(WORK, "chain", "chain.pem")
with open(CHAIN, "w") as f:
    f.write(open(CH_KEY).read() + open(CH_CERT).read())
# an ECDSA key and certificate: a second key in the same chain files
EC_DIR = os.path.join(WORK, "ec")
os.mkdir(EC_DIR)
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-days", "2", "-subj", "/CN=ecdsa.petrel.test", "-keyout", os.path.join(EC_DIR, "key.pem"), "-out",
                os.path.join(EC_DIR, "cert.pem")], check=True, capture_output=True)
EC_CHAIN = os.path.join(EC_DIR, "ec-chain.pem")
with open(EC_CHAIN, "w") as f:
    f.write(open(os.path.join(EC_DIR, "key.pem")).read() + open(os.path.join(EC_DIR, "cert.pem")).read())
CL_CERT, CL_KEY = certs("client", "client.petrel.test")
OTHER_CERT, OTHER_KEY = certs("other", "other.petrel.test")
CAPATH = os.path.join(WORK, "capath")
os.mkdir(CAPATH)
shutil.copy(CL_CERT, os.path.join(CAPATH, "client-ca.pem"))
subprocess.run(["openssl", "rehash", CAPATH], check=True, capture_output=True)
for root, dirs, files in os.walk(WORK):
    for n in dirs:
        os.chmod(os.path.join(root, n), 0o755)
    for n in files:
        os.chmod(os.path.join(root, n), 0o644)


def fingerprint(cert, pubkey=False):
    if pubkey:
        der = subprocess.run("openssl x509 -in %s -pubkey -noout | openssl pkey -pubin -outform DER" % cert,
                             shell=True, capture_output=True, check=True).stdout
        out = subprocess.run(["openssl", "dgst", "-sha256", "-c"], input=der, capture_output=True,
                             check=True).stdout.decode()
        return out.split("= ")[-1].strip().upper()
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.split("=", 1)[1].strip()


def tls_petrel(settings=None, workers=None, master_extra=""):
    conf = {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": SRV_CERT, "smtpd_tls_key_file": SRV_KEY}
    conf.update(settings or {})
    return Petrel(t, main_cf=conf, workers=workers, extra_services=master_extra)


def client_ctx(minimum=None, maximum=None, ciphers=None, cert=None, key=None, tickets=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if ciphers:
        ctx.set_ciphers(ciphers)
    if cert:
        ctx.load_cert_chain(cert, key)
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def starttls(p, ctx=None, session=None, port=None):
    """A session up to TLS; returns (Smtp, error text or None)."""
    c = Smtp(port or p.port)
    c.ehlo()
    r = c.cmd("STARTTLS")
    if not r.startswith("220"):
        return c, r
    try:
        c.sock = (ctx or client_ctx()).wrap_socket(c.sock, server_hostname="localhost", session=session)
    except (ssl.SSLError, OSError) as e:
        c.close()
        return c, "handshake failed: %s" % e
    c.buf = b""
    return c, None


def peer_cn(c):
    der = c.sock.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"], input=pem,
                         capture_output=True, text=True).stdout
    m = re.search(r"CN=([^,\n]+)", out)
    return m.group(1) if m else None


def check(p):
    return subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True)


# ---- smtpd_tls_chain_files ----
with tls_petrel({"smtpd_tls_chain_files": CHAIN + ", " + EC_CHAIN}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
    t.is_((err, peer_cn(c) if not err else None), (None, "chain.petrel.test"),
          "smtpd_tls_chain_files: its RSA key and certificate, not smtpd_tls_cert_file's")
    c.close()
    c, err = starttls(p, client_ctx(maximum=TLS12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
    t.is_((err, peer_cn(c) if not err else None), (None, "ecdsa.petrel.test"),
          "smtpd_tls_chain_files: a second (ECDSA) key serves an ECDSA-only client")
    c.close()
with tls_petrel() as p:
    c, err = starttls(p)
    t.is_(peer_cn(c) if not err else err, "legacy.petrel.test", "without chain files: smtpd_tls_cert_file")
    c.close()
bad = Petrel(t, start=False, main_cf={"smtpd_tls_security_level": "may",
                                      "smtpd_tls_chain_files": os.path.join(WORK, "srv", "cert.pem")})
r = check(bad)
t.ok(r.returncode != 0 and re.search(r"smtpd_tls_chain_files: .*cert.pem: a certificate before any private key",
                                     r.stderr), "chain files without a key first: petreld -n names the parameter",
     r.stderr)
bad.__exit__(None, None, None)

# ---- protocols ----
with tls_petrel({"smtpd_tls_protocols": ">=TLSv1.3"}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12))
    t.ok(err is not None and "handshake failed" in err, "smtpd_tls_protocols >=TLSv1.3: a TLS 1.2 client fails", err)
    c, err = starttls(p)
    t.is_(c.sock.version() if not err else err, "TLSv1.3", "a TLS 1.3 client is served")
    c.close()
with tls_petrel({"smtpd_tls_security_level": "encrypt", "smtpd_tls_protocols": ">=TLSv1.3",
                 "smtpd_tls_mandatory_protocols": "!TLSv1.3"}) as p:
    c, err = starttls(p)
    t.is_(c.sock.version() if not err else err, "TLSv1.2",
          "level encrypt: smtpd_tls_mandatory_protocols !TLSv1.3 applies, smtpd_tls_protocols does not")
    c.close()
with tls_petrel({"smtpd_tls_protocols": "TLSv1.2"}) as p:
    c, err = starttls(p)
    t.is_(c.sock.version() if not err else err, "TLSv1.2", "smtpd_tls_protocols as an include list: TLSv1.2 only")
    c.close()
bad = Petrel(t, start=False, main_cf={"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": SRV_CERT,
                                      "smtpd_tls_protocols": "!TLSv1.2 TLSv2"})
r = check(bad)
t.ok(r.returncode != 0 and 'smtpd_tls_protocols: unknown TLS protocol "TLSv2"' in r.stderr,
     "an unknown protocol: petreld -n names it", r.stderr)
bad.__exit__(None, None, None)

# ---- ciphers ----
with tls_petrel({"smtpd_tls_exclude_ciphers": "AESGCM"}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
    t.ok(err is not None, "smtpd_tls_exclude_ciphers AESGCM: an AES-GCM-only TLS 1.2 client fails", err)
    c, err = starttls(p, client_ctx(maximum=TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305"))
    t.is_(c.sock.cipher()[0] if not err else err, "ECDHE-RSA-CHACHA20-POLY1305", "another cipher is used")
    c.close()
with tls_petrel({"smtpd_tls_mandatory_exclude_ciphers": "AESGCM"}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
    t.is_(err, None, "smtpd_tls_mandatory_exclude_ciphers does not apply at may")
    c.close()
with tls_petrel({"smtpd_tls_security_level": "encrypt", "smtpd_tls_mandatory_exclude_ciphers": "AESGCM"}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
    t.ok(err is not None, "smtpd_tls_mandatory_exclude_ciphers at encrypt: excluded", err)
with tls_petrel({"smtpd_tls_ciphers": "null"}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12))
    t.ok(err is not None, "smtpd_tls_ciphers null: no usual TLS 1.2 cipher", err)
with tls_petrel({"smtpd_tls_mandatory_ciphers": "null"}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12))
    t.is_(err, None, "smtpd_tls_mandatory_ciphers does not apply at may")
    c.close()
with tls_petrel({"tls_high_cipherlist": "ECDHE-RSA-AES256-GCM-SHA384", "smtpd_tls_ciphers": "high"}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12))
    t.is_(c.sock.cipher()[0] if not err else err, "ECDHE-RSA-AES256-GCM-SHA384",
          "smtpd_tls_ciphers high uses tls_high_cipherlist")
    c.close()
# the client lists AES128 first; the server's list (@STRENGTH) puts AES256 first
order = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
with tls_petrel() as p:
    c, err = starttls(p, client_ctx(maximum=TLS12, ciphers=order))
    t.is_(c.sock.cipher()[0] if not err else err, "ECDHE-RSA-AES128-GCM-SHA256",
          "tls_preempt_cipherlist = no (default): the client's order wins")
    c.close()
with tls_petrel({"tls_preempt_cipherlist": "yes"}) as p:
    c, err = starttls(p, client_ctx(maximum=TLS12, ciphers=order))
    t.is_(c.sock.cipher()[0] if not err else err, "ECDHE-RSA-AES256-GCM-SHA384",
          "tls_preempt_cipherlist = yes: the server's order wins")
    c.close()

# ---- client certificates ----
ccert = {"smtpd_tls_ask_ccert": "yes", "smtpd_tls_CAfile": CL_CERT, "smtpd_tls_loglevel": "1",
         "smtpd_tls_received_header": "yes"}
with tls_petrel(ccert) as p:
    c, err = starttls(p, client_ctx(cert=CL_CERT, key=CL_KEY))
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: ccert\r\n\r\nx\r\n")
    m = re.match(OK_RE, r)
    t.ok(m is not None and b'\t(Client CN "client.petrel.test", Issuer "client.petrel.test" (verified OK))\r\n'
         in p.queued_content(m.group(1)), "smtpd_tls_ask_ccert + CAfile: Received: names the verified client CN", r)
    t.ok(p.wait_log(r"Trusted TLS connection established from unknown\[127\.0\.0\.1\]") is not None,
         "log: Trusted TLS connection")
    t.ok(p.wait_log(r"unknown\[127\.0\.0\.1\]: Trusted: subject_CN=client\.petrel\.test, issuer=client\.petrel\.test, "
                    r"fingerprint=%s, pkey_fingerprint=%s" % (re.escape(fingerprint(CL_CERT)),
                                                              re.escape(fingerprint(CL_CERT, True)))) is not None,
         "log: the certificate's subject, issuer and fingerprints")
    c.close()
    c, err = starttls(p, client_ctx(cert=OTHER_CERT, key=OTHER_KEY))
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: ccert\r\n\r\nx\r\n")
    m = re.match(OK_RE, r)
    t.ok(m is not None and b'(Client CN "other.petrel.test", Issuer "other.petrel.test" (not verified))'
         in p.queued_content(m.group(1)), "a certificate no CA vouches for: not verified (the session goes on)", r)
    t.ok(p.wait_log(r"Untrusted TLS connection established from") is not None, "log: Untrusted TLS connection")
    c.close()
    c, err = starttls(p)
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: ccert\r\n\r\nx\r\n")
    m = re.match(OK_RE, r)
    t.ok(m is not None and b"\t(Client did not present a certificate)\r\n" in p.queued_content(m.group(1)),
         "no certificate: (Client did not present a certificate)")
    c.close()
with tls_petrel({"smtpd_tls_ask_ccert": "yes", "smtpd_tls_CApath": CAPATH, "smtpd_tls_loglevel": "1"}) as p:
    c, err = starttls(p, client_ctx(cert=CL_CERT, key=CL_KEY))
    c.ehlo()
    t.ok(p.wait_log(r"Trusted TLS connection established from") is not None,
         "smtpd_tls_CApath: a hashed directory verifies the client certificate")
    c.close()
with tls_petrel({"smtpd_tls_received_header": "yes"}) as p:
    c, err = starttls(p, client_ctx(cert=CL_CERT, key=CL_KEY))
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: noask\r\n\r\nx\r\n")
    m = re.match(OK_RE, r)
    t.ok(m is not None and b"\t(No client certificate requested)\r\n" in p.queued_content(m.group(1)),
         "without smtpd_tls_ask_ccert no certificate is asked for", r)
    c.close()
with tls_petrel() as p:
    c, err = starttls(p)
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: nohdr\r\n\r\nx\r\n")
    m = re.match(OK_RE, r)
    t.ok(m is not None and b"(using " not in p.queued_content(m.group(1)) and b"with ESMTPS" in p.queued_content(m.group(1)),
         "smtpd_tls_received_header = no (default): no TLS comment in Received:", r)
    t.ok(p.wait_log(r"TLS connection established", timeout=1) is None, "smtpd_tls_loglevel 0 (default): no TLS summary")
    c.close()
req = {"smtpd_tls_security_level": "encrypt", "smtpd_tls_req_ccert": "yes", "smtpd_tls_CAfile": CL_CERT}
with tls_petrel(req) as p:
    c, err = starttls(p)
    t.is_(c.cmd("EHLO x.example.org"), "421 4.7.1 mx.petrel.test Error: No client certificate presented",
          "smtpd_tls_req_ccert: no certificate: 421 4.7.1 after the handshake")
    t.ok(c.closed(), "and the session ends")
    t.ok(p.wait_log(r"NOQUEUE: abort: TLS from unknown\[127\.0\.0\.1\]: No client certificate presented") is not None,
         "logged as Postfix logs it")
    c, err = starttls(p, client_ctx(cert=OTHER_CERT, key=OTHER_KEY))
    t.is_(c.cmd("EHLO x.example.org"), "421 4.7.1 mx.petrel.test Error: Client certificate not trusted",
          "smtpd_tls_req_ccert: an untrusted certificate: 421 4.7.1")
    c, err = starttls(p, client_ctx(cert=CL_CERT, key=CL_KEY))
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: req\r\n\r\nx\r\n")
    t.like(r, OK_RE, "smtpd_tls_req_ccert: a trusted certificate: mail is accepted")
    c.close()
with tls_petrel({"smtpd_tls_req_ccert": "yes", "smtpd_tls_CAfile": CL_CERT}) as p:
    r = check(p)
    t.ok("smtpd_tls_req_ccert = yes needs smtpd_tls_security_level = encrypt" in r.stderr,
         "smtpd_tls_req_ccert at level may: petreld -n warns that nothing is required", r.stderr)
    c, err = starttls(p)
    t.like(c.cmd("EHLO x.example.org"), "^250", "and a client without a certificate is served")
    c.close()

# restrictions on the client certificate
fp, pk = fingerprint(CL_CERT), fingerprint(CL_CERT, True)
relay = os.path.join(WORK, "relay_clientcerts")
with open(relay, "w") as f:
    f.write("%s client.petrel.test\n" % pk)
access = os.path.join(WORK, "ccert_access")
with open(access, "w") as f:
    f.write("%s REJECT certificate %s is banned\n" % (fingerprint(OTHER_CERT), "other"))
rules = dict(ccert, smtpd_relay_restrictions="check_ccert_access texthash:%s, permit_tls_clientcerts, "
             "reject_unauth_destination" % access, relay_clientcerts="texthash:" + relay, mynetworks="192.0.2.0/24")
with tls_petrel(rules) as p:
    c, err = starttls(p, client_ctx(cert=CL_CERT, key=CL_KEY))
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.like(c.cmd("RCPT TO:<someone@elsewhere.example>"), "^250",
           "permit_tls_clientcerts: a public key fingerprint in relay_clientcerts may relay")
    c.close()
    c, err = starttls(p, client_ctx(cert=OTHER_CERT, key=OTHER_KEY))
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<someone@elsewhere.example>"),
          "554 5.7.1 <other.petrel.test>: Client certificate rejected: certificate other is banned",
          "check_ccert_access: the certificate's fingerprint is looked up as an access map")
    c.close()
    c, err = starttls(p)
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<someone@elsewhere.example>"), "554 5.7.1 <someone@elsewhere.example>: Relay access denied",
          "no certificate: neither matches")
    c.close()
# relay_clientcerts in a remote table (socketmap): the lookup is asynchronous (the step
# runs again once the answer is in) and a round without an answer is no error.
from socketmaplib import SocketmapServer, netstring
from modlib import bundled_module_dir
sm = SocketmapServer({"certs": {pk.encode(): b"client.petrel.test"}})
sm.special[fingerprint(OTHER_CERT, True).encode()] = (b"certs", netstring(b"TEMP resting"))
with tls_petrel(dict(ccert, smtpd_relay_restrictions="permit_tls_clientcerts, reject_unauth_destination",
                     relay_clientcerts="socketmap:inet:127.0.0.1:%d:certs" % sm.port,
                     modules="socketmap", module_directory=bundled_module_dir("socketmap"),
                     mynetworks="192.0.2.0/24")) as p:
    c, err = starttls(p, client_ctx(cert=CL_CERT, key=CL_KEY))
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.like(c.cmd("RCPT TO:<someone@elsewhere.example>"), "^250",
           "permit_tls_clientcerts with a socketmap relay_clientcerts: the listed key may relay")
    c.close()
    t.ok(pk.encode() in sm.seen("certs"), "  the public key's fingerprint was asked remotely", sm.requests)
    t.ok("lookup error" not in p.log(), "  and no lookup error is logged for a lookup that merely had to wait", p.log())
    c, err = starttls(p, client_ctx(cert=OTHER_CERT, key=OTHER_KEY))
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.is_(c.cmd("RCPT TO:<someone@elsewhere.example>"),
          "451 4.3.0 <%s>: Temporary lookup failure" % fingerprint(OTHER_CERT, True),
          "a relay_clientcerts table that fails defers")
    c.close()
    t.ok(p.wait_log(r"warning: relay_clientcerts: socketmap:\S+: lookup error for \"%s\""
                    % re.escape(fingerprint(OTHER_CERT, True))) is not None,
         "  the real failure is logged, naming the table", p.log())
    c = Smtp(p.port)
    t.like(c.ehlo(), "^250", "  the server keeps serving")
    c.close()
sm.stop()
with tls_petrel(dict(ccert, smtpd_relay_restrictions="permit_tls_all_clientcerts, reject_unauth_destination",
                     mynetworks="192.0.2.0/24")) as p:
    c, err = starttls(p, client_ctx(cert=CL_CERT, key=CL_KEY))
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.like(c.cmd("RCPT TO:<someone@elsewhere.example>"), "^250",
           "permit_tls_all_clientcerts: any verified certificate may relay")
    c.close()
    c, err = starttls(p, client_ctx(cert=OTHER_CERT, key=OTHER_KEY))
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    t.like(c.cmd("RCPT TO:<someone@elsewhere.example>"), "^554", "permit_tls_all_clientcerts: not an unverified one")
    c.close()

# ---- the client certificate in policy requests (Postfix's attributes) ----
from policylib import PolicyServer
with PolicyServer(lambda req: "DUNNO") as ps:
    with tls_petrel(dict(ccert, smtpd_recipient_restrictions="check_policy_service " + ps.endpoint)) as p:
        got = []
        for cert, key in ((CL_CERT, CL_KEY), (OTHER_CERT, OTHER_KEY)):
            c, err = starttls(p, client_ctx(cert=cert, key=key))
            c.ehlo()
            c.cmd("MAIL FROM:<a@example.org>")
            c.cmd("RCPT TO:<user@petrel.test>")
            c.close()
            req = ps.last("RCPT") or {}
            got.append(tuple(req.get(k) for k in ("ccert_subject", "ccert_issuer", "ccert_fingerprint",
                                                  "ccert_pubkey_fingerprint")))
        t.is_(got[0], ("client.petrel.test", "client.petrel.test", fingerprint(CL_CERT), fingerprint(CL_CERT, True)),
              "policy: a trusted certificate's subject and issuer CN and fingerprints")
        t.is_(got[1], ("", "", fingerprint(OTHER_CERT), fingerprint(OTHER_CERT, True)),
              "policy: an untrusted one: only the fingerprints, as Postfix sends them")

# ---- smtpd_tls_dh1024_param_file, seen by openssl s_client ----
dh = os.path.join(WORK, "dh3072.pem")
subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "dh_param:ffdhe3072", "-out", dh],
               check=True, capture_output=True)
os.chmod(dh, 0o644)


def dhe_bits(p):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % p.port, "-starttls", "smtp", "-tls1_2",
                        "-cipher", "DHE-RSA-AES128-GCM-SHA256"], input="QUIT\n", capture_output=True, text=True,
                       timeout=30)
    m = re.search(r"Server Temp Key: DH, (\d+) bits", r.stdout)
    return m.group(1) if m else r.stdout[-300:] + r.stderr[-300:]


with tls_petrel({"smtpd_tls_dh1024_param_file": dh}) as p:
    t.is_(dhe_bits(p), "3072", "smtpd_tls_dh1024_param_file: its 3072-bit group is used for DHE")
with tls_petrel() as p:
    t.is_(dhe_bits(p), "2048", "empty (default): OpenSSL's choice for a 2048-bit RSA key")
bad = Petrel(t, start=False, main_cf={"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": SRV_CERT,
                                      "smtpd_tls_dh1024_param_file": SRV_CERT})
r = check(bad)
t.ok(r.returncode != 0 and "smtpd_tls_dh1024_param_file: cannot load DH parameters from" in r.stderr,
     "a file without DH parameters: petreld -n names the parameter", r.stderr)
bad.__exit__(None, None, None)

# ---- legacy switch, handshake timeout, new TLS session rate ----
with Petrel(t, main_cf={"smtpd_use_tls": "yes", "smtpd_tls_cert_file": SRV_CERT, "smtpd_tls_key_file": SRV_KEY}) as p:
    c = p.connect()
    c.ehlo()
    t.ok("250-STARTTLS" in c.lines, "smtpd_use_tls = yes with an empty level: STARTTLS offered (level may)")
    c.close()
with tls_petrel({"smtpd_starttls_timeout": "1s", "smtpd_timeout": "60s"}) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("STARTTLS")
    t.ok(c.closed(wait=30), "smtpd_starttls_timeout: a client silent in the handshake is dropped after it")
    t.ok(p.wait_log(r"timeout after STARTTLS from unknown\[127\.0\.0\.1\]") is not None, "and logged")
with tls_petrel({"smtpd_client_new_tls_session_rate_limit": "2", "smtpd_client_event_limit_exceptions": ""}) as p:
    ctx = client_ctx(tickets=False)
    first, err = starttls(p, ctx)
    first.ehlo()
    session = first.sock.session
    first.close()
    c, err = starttls(p, ctx)
    second = c.sock.getsockname()[1]
    c.close()
    # The server counts a new session when it has read the client's Finished,
    # which the client sends last; the third session may go to the other
    # worker and finish its handshake first. Once petreld has closed its end
    # of this one, the worker has read everything before the client's close.
    p.wait_closed([second])
    c, err = starttls(p, ctx)
    t.is_(c.cmd("EHLO x.example.org"), "421 4.7.0 mx.petrel.test Error: too many new TLS sessions from "
          "unknown[127.0.0.1]", "smtpd_client_new_tls_session_rate_limit 2: the third new session gets 421 4.7.0")
    t.ok(p.wait_log(r"New TLS session rate limit exceeded: 3 from unknown\[127\.0\.0\.1\] for service 127\.0\.0\.1:%d"
                    % p.port) is not None, "logged as Postfix logs it")
    c = Smtp(p.port)
    c.ehlo()
    t.is_(c.cmd("STARTTLS"), "454 4.7.0 Error: too many new TLS sessions from unknown[127.0.0.1]",
          "the next STARTTLS is refused with 454 4.7.0 before any handshake")
    c.close()

# ---- resumption across the two workers ----
def resume_all(p, ctx, session, n=16, most=400):
    """At least n connections resuming session, more (up to most) until both
    workers have taken some. Which worker accepts a connection is the
    kernel's choice, and on a busy machine one may take every one of them (a
    loaded CI run once ended this with one worker only): after n connections
    taken by one worker, it is paused (SIGSTOP) so that the other accepts
    the next, and let go on (SIGCONT) at the end.
    Returns (connections, resumed count, PIDs that logged a reuse)."""
    resumed = tries = 0
    since = len(p.log())
    served = pids = set()
    paused = []
    try:
        while tries < n or (len(served) < 2 and tries < most):
            if tries >= n and len(served) == 1 and not paused:
                paused.append(int(next(iter(served))))
                t.diag("worker %d took all %d connections: paused" % (paused[0], tries))
                os.kill(paused[0], signal.SIGSTOP)
            c, err = starttls(p, ctx, session=session)
            if err is None:
                c.ehlo()
                resumed += c.sock.session_reused
                c.cmd("QUIT")
            c.close()
            tries += 1
            log = p.log()[since:]
            served = set(re.findall(r"smtpd\[(\d+)\]: \w+ TLS connection established from unknown\[127\.0\.0\.1\]",
                                    log))
            pids = set(re.findall(r"smtpd\[(\d+)\]: unknown\[127\.0\.0\.1\]: Reusing old session", log))
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    return tries, resumed, pids


with tls_petrel({"smtpd_tls_loglevel": "2"}, workers=2) as p:
    workers = p.worker_pids(at_least=3)
    ctx = client_ctx()
    c, err = starttls(p, ctx)
    c.ehlo()
    c.cmd("NOOP")   # TLS 1.3 tickets arrive after the handshake
    session = c.sock.session
    c.cmd("QUIT")
    c.close()
    tries, resumed, pids = resume_all(p, ctx, session)
    t.is_(resumed, tries, "TLS 1.3 tickets: every one of %d connections resumes, whichever worker takes it" % tries)
    t.ok(len(pids) == 2, "both workers resumed sessions (shared ticket keys)", pids)
    r = p.petrelctl("reload")
    wait_for(lambda: len(set(p.worker_pids()) - set(workers)) >= 2, timeout=20)
    c, err = starttls(p, ctx, session=session)
    c.ehlo()
    t.ok(err is None and c.sock.session_reused, "after a reload (keys rotated) a ticket of the previous key resumes")
    c.close()
    previous = set(p.worker_pids())
    p.petrelctl("reload")
    # Until the previous generation's workers have drained and exited, one of
    # them (which still has the ticket's key) may take the connection: wait
    # for them, not a fixed second.
    t.ok(wait_for(lambda: p.log().count("reload -- version") >= 2 and not set(p.worker_pids()) & previous,
                  timeout=60), "the second reload's new workers replace the old ones", p.worker_pids())
    c, err = starttls(p, ctx, session=session)
    c.ehlo()
    t.ok(err is None and not c.sock.session_reused, "after a second reload it is too old: a full handshake")
    c.close()

with tls_petrel({"smtpd_tls_loglevel": "2",
                 "smtpd_tls_session_cache_database": "btree:" + os.path.join(WORK, "smtpd_scache")}, workers=2) as p:
    os.chmod(WORK, 0o777)
    ctx = client_ctx(maximum=TLS12, tickets=False)
    c, err = starttls(p, ctx)
    c.ehlo()
    session = c.sock.session
    c.close()
    tries, resumed, pids = resume_all(p, ctx, session)
    t.is_(resumed, tries, "TLS 1.2 session IDs (no tickets) in smtpd_tls_session_cache_database: all %d resume"
          % tries)
    t.ok(len(pids) == 2, "in both workers", pids)
    t.ok(os.path.exists(os.path.join(WORK, "smtpd_scache.lmdb")), "the database is PATH.lmdb")
with tls_petrel({"smtpd_tls_loglevel": "2"}, workers=2) as p:
    ctx = client_ctx(maximum=TLS12, tickets=False)
    c, err = starttls(p, ctx)
    c.ehlo()
    session = c.sock.session
    c.close()
    tries, resumed, pids = resume_all(p, ctx, session)
    t.ok(resumed < tries,
         "without the database a session ID resumes only on the worker that made it", (tries, resumed, pids))

shutil.rmtree(WORK, ignore_errors=True)
t.done()
