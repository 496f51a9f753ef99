#!/usr/bin/env python3
"""The SMTP/LMTP client's TLS parameters against a Python ssl server (what
it negotiated is read on the server's side of the wire), through
t/tools/smtp-deliver --config DIR: smtp_tls_protocols and
_mandatory_protocols, smtp_tls_ciphers, _mandatory_ciphers,
_exclude_ciphers, _mandatory_exclude_ciphers, smtp_tls_CApath,
smtp_tls_loglevel, smtp_tls_session_cache_database (resumption across two
processes), smtp_tls_cert_file/_key_file/_chain_files (client
certificates), smtp_tls_note_starttls_offer, the fingerprint level with
smtp_tls_fingerprint_cert_match and _digest, smtp_tls_verify_cert_match,
and the dane levels refused."""
import os
import shutil
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dnsmasq, make_cert  # noqa: E402
from scripted_smtp import Env, T, TOOL, hop, one  # noqa: E402

BODY = b"From: a@src.test\r\nTo: b@dst.test\r\nSubject: tls\r\n\r\nhello\r\n"


def fingerprint(cert, digest, pubkey=False):
    if pubkey:
        der = subprocess.run("openssl x509 -in %s -pubkey -noout | openssl pkey -pubin -outform DER" % cert,
                             shell=True, capture_output=True, check=True).stdout
        out = subprocess.run(["openssl", "dgst", "-" + digest, "-c"], input=der, capture_output=True,
                             check=True).stdout.decode()
        return out.split("= ")[-1].strip().upper()
    out = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint", "-" + digest],
                         capture_output=True, text=True, check=True).stdout
    return out.split("=", 1)[1].strip()


def main():
    t = T(timeout=200)
    e = Env()
    certdir = os.path.join(e.dir, "certs")
    os.mkdir(certdir)
    cert, key = make_cert(certdir, "mx.tls.test")
    ccdir = os.path.join(e.dir, "client")
    os.mkdir(ccdir)
    ccert, ckey = make_cert(ccdir, "client.petrel.test")
    chain = os.path.join(ccdir, "chain.pem")
    c2dir = os.path.join(e.dir, "client2")
    os.mkdir(c2dir)
    c2cert, c2key = make_cert(c2dir, "chain.petrel.test")
    with open(chain, "w") as f:
        f.write(open(c2key).read() + open(c2cert).read())
    both_ca = os.path.join(e.dir, "clients-ca.pem")
    with open(both_ca, "w") as f:
        f.write(open(ccert).read() + open(c2cert).read())
    q1 = e.qfile(["a@dst.test"], BODY)
    TLS12 = ssl.TLSVersion.TLSv1_2

    # ---- protocols ----
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may"))
    t.is_((one(res).get("status"), s.sessions[0].get("tls_version")), ("sent", "TLSv1.2"),
          "a TLS 1.2 server: TLS 1.2 with the default protocols", e.last_out)
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_protocols=">=TLSv1.3"))
    t.ok(one(res).get("status") == "sent" and len(s.sessions) == 2 and not s.sessions[0]["tls"]
         and not s.sessions[1]["tls"],
         "smtp_tls_protocols >=TLSv1.3 at may: the handshake with a TLS 1.2 server fails, plaintext follows",
         [x.get("tls_error") for x in s.sessions])
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="encrypt", smtp_tls_protocols=">=TLSv1.3"))
    t.is_((one(res).get("status"), s.sessions[0].get("tls_version")), ("sent", "TLSv1.2"),
          "smtp_tls_protocols does not apply at encrypt")
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="encrypt",
                                            smtp_tls_mandatory_protocols="!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.2"))
    t.is_((one(res).get("status"), one(res).get("dsn")), ("deferred", "4.7.5"),
          "smtp_tls_mandatory_protocols without TLS 1.2 at encrypt: the TLS 1.2 server is deferred 4.7.5", e.last_out)
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="encrypt",
                                              smtp_tls_mandatory_protocols="<=TLSv1.2"))
    t.is_(s.sessions[0].get("tls_version"), "TLSv1.2", "smtp_tls_mandatory_protocols <=TLSv1.2: a TLS 1.3 server "
          "speaks 1.2")
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_protocols="TLSv1.2"))
    t.is_(s.sessions[0].get("tls_version"), "TLSv1.2", "smtp_tls_protocols as an include list")
    r = subprocess.run([TOOL] + e.conf(smtp_tls_security_level="may", smtp_tls_protocols="TLSv9") + [q1, hop(s)],
                       capture_output=True, text=True, timeout=30)
    t.like(r.stderr, r'smtp_tls_protocols: unknown TLS protocol "TLSv9"', "an unknown protocol is refused")
    r = subprocess.run([TOOL] + e.conf(smtp_tls_security_level="may", smtp_tls_protocols="!TLSv1 !TLSv1.1 !TLSv1.2 "
                                     "!TLSv1.3") + [q1, hop(s)], capture_output=True, text=True, timeout=30)
    t.like(r.stderr, r"smtp_tls_protocols: .* leaves no TLS protocol that can be used", "no protocol left: refused")

    # ---- ciphers ----
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may"))
    t.like(s.sessions[0].get("cipher", ""), "GCM", "TLS 1.2 default: an AES-GCM cipher")
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_exclude_ciphers="AESGCM"))
    t.ok(one(res).get("status") == "sent" and "GCM" not in s.sessions[0].get("cipher", "GCM"),
         "smtp_tls_exclude_ciphers AESGCM: no GCM cipher on the wire", s.sessions[0].get("cipher"))
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may",
                                            smtp_tls_mandatory_exclude_ciphers="AESGCM"))
    t.like(s.sessions[0].get("cipher", ""), "GCM", "smtp_tls_mandatory_exclude_ciphers does not apply at may")
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="encrypt",
                                            smtp_tls_mandatory_exclude_ciphers="AESGCM, CHACHA20"))
    t.ok(one(res).get("status") == "sent" and "GCM" not in s.sessions[0].get("cipher", "GCM")
         and "CHACHA" not in s.sessions[0].get("cipher", ""),
         "smtp_tls_mandatory_exclude_ciphers at encrypt: excluded", s.sessions[0].get("cipher"))
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_ciphers="null"))
    t.ok(one(res).get("status") == "sent" and not any(x["tls"] for x in s.sessions) and len(s.sessions) == 2,
         "smtp_tls_ciphers null: no cipher in common with a TLS 1.2 server, plaintext follows")
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_mandatory_ciphers="null"))
    t.is_(s.sessions[0].get("tls_version"), "TLSv1.2", "smtp_tls_mandatory_ciphers does not apply at may")
    s = e.server(tls=(cert, key), tls_max=TLS12)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may",
                                              tls_medium_cipherlist="ECDHE-RSA-AES128-SHA256"))
    t.is_(s.sessions[0].get("cipher"), "ECDHE-RSA-AES128-SHA256", "tls_medium_cipherlist is grade medium's list")
    r = subprocess.run([TOOL] + e.conf(smtp_tls_security_level="may", smtp_tls_exclude_ciphers="!RC4") + [q1, hop(s)],
                       capture_output=True, text=True, timeout=30)
    t.like(r.stderr, r"smtp_tls_exclude_ciphers: invalid unary '!\+-@' in cipher exclusion \"!RC4\"",
           "an exclusion with a modifier is refused")

    # ---- loglevel, note_starttls_offer ----
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_loglevel="1"))
    t.like(e.last_out, r"Untrusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: TLSv1\.3 with "
           r"cipher TLS_\w+ \(\d+/\d+ bits\)" % s.port, "smtp_tls_loglevel 1: the summary line")
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_loglevel="1",
                                              smtp_tls_CAfile=cert))
    t.like(e.last_out, r"Trusted TLS connection established to", "a chain the CAfile verifies: Trusted")
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may"))
    t.ok("TLS connection established" not in e.last_out, "smtp_tls_loglevel 0: no summary")
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_note_starttls_offer="yes"))
    t.ok("Host offered STARTTLS: [127.0.0.1]" in e.last_out and not s.sessions[0]["tls"],
         "smtp_tls_note_starttls_offer at level none: logged, TLS not used", e.last_out)
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s))
    t.ok("Host offered STARTTLS" not in e.last_out, "(not logged by default)")

    # ---- session cache database: resumption across processes ----
    ctx13 = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx13.load_cert_chain(cert, key)
    s = e.server(tls=(cert, key), tls_ctx=ctx13)
    db = "btree:" + os.path.join(e.dir, "smtp_scache")
    cached = e.conf(smtp_tls_security_level="may", smtp_tls_session_cache_database=db, smtp_tls_loglevel="2")
    e.deliver(q1, hop(s), *cached)
    e.deliver(q1, hop(s), *cached)
    t.ok(len(s.sessions) == 2 and s.sessions[0]["tls"] and not s.sessions[0]["reused"] and s.sessions[1]["reused"],
         "smtp_tls_session_cache_database: the second delivery (another process) resumes the TLS 1.3 session",
         [(x.get("tls_version"), x.get("reused")) for x in s.sessions])
    t.ok(os.path.exists(os.path.join(e.dir, "smtp_scache.lmdb")), "the cache is PATH.lmdb")
    t.like(e.last_out, r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: Reusing old session" % s.port,
           "smtp_tls_loglevel 2: Reusing old session")
    s = e.server(tls=(cert, key), tls_ctx=ctx13)
    nocache = e.conf(smtp_tls_security_level="may")
    e.deliver(q1, hop(s), *nocache)
    e.deliver(q1, hop(s), *nocache)
    t.ok(not s.sessions[1]["reused"], "without it: no resumption")

    # ---- client certificates ----
    s = e.server(tls=(cert, key), client_ca=both_ca)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_cert_file=ccert,
                                            smtp_tls_key_file=ckey))
    t.is_((one(res).get("status"), s.sessions[0].get("client_cn")), ("sent", "client.petrel.test"),
          "smtp_tls_cert_file/_key_file: the server sees the client certificate", e.last_out)
    s = e.server(tls=(cert, key), client_ca=both_ca)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_chain_files=chain))
    t.is_(s.sessions[0].get("client_cn"), "chain.petrel.test", "smtp_tls_chain_files: key and certificate in one file")
    s = e.server(tls=(cert, key), client_ca=both_ca)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may", smtp_tls_chain_files=chain,
                                            smtp_tls_cert_file=ccert, smtp_tls_key_file=ckey))
    t.is_(s.sessions[0].get("client_cn"), "chain.petrel.test", "smtp_tls_chain_files wins over smtp_tls_cert_file")
    s = e.server(tls=(cert, key), client_ca=both_ca)
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="may"))
    t.is_(s.sessions[0].get("client_cn"), None, "no client certificate configured: none sent")
    r = subprocess.run([TOOL] + e.conf(smtp_tls_security_level="may", smtp_tls_cert_file=ccert, smtp_tls_key_file=c2key)
                       + [q1, hop(s)], capture_output=True, text=True, timeout=30)
    t.like(r.stderr, r"smtp_tls_key_file: cannot load the private key .*: .*key values mismatch",
           "a key that does not match its certificate is refused")
    badchain = os.path.join(ccdir, "bad-chain.pem")
    with open(badchain, "w") as f:
        f.write(open(c2cert).read() + open(c2key).read())
    r = subprocess.run([TOOL] + e.conf(smtp_tls_security_level="may", smtp_tls_chain_files=badchain) + [q1, hop(s)],
                       capture_output=True, text=True, timeout=30)
    t.like(r.stderr, r"smtp_tls_chain_files: .*bad-chain.pem: a certificate before any private key",
           "chain files: a certificate before its key is refused")

    # ---- fingerprint ----
    fp = fingerprint(cert, "sha256")
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="fingerprint",
                                            smtp_tls_fingerprint_cert_match=fp))
    t.is_((one(res).get("status"), s.sessions[0]["tls"]), ("sent", True),
          "fingerprint: the certificate's sha256 fingerprint matches", e.last_out)
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="fingerprint",
                                            smtp_tls_fingerprint_cert_match=fingerprint(cert, "sha256", True).lower()))
    t.is_(one(res).get("status"), "sent", "fingerprint: the public key's fingerprint matches (any case)", e.last_out)
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="fingerprint",
                                            smtp_tls_fingerprint_digest="md5",
                                            smtp_tls_fingerprint_cert_match=fingerprint(cert, "md5")))
    t.is_(one(res).get("status"), "sent", "smtp_tls_fingerprint_digest md5", e.last_out)
    s = e.server(tls=(cert, key))
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="fingerprint",
                                            smtp_tls_fingerprint_cert_match=fingerprint(ccert, "sha256")))
    t.is_((one(res).get("status"), one(res).get("dsn"), one(res).get("text")),
          ("deferred", "4.7.5", "Server certificate not verified: 127.0.0.1[127.0.0.1]: no fingerprint match"),
          "fingerprint: another certificate's fingerprint: deferred 4.7.5", e.last_out)
    s = e.server()
    res, _, _ = e.deliver(q1, hop(s), *e.conf(smtp_tls_security_level="fingerprint",
                                            smtp_tls_fingerprint_cert_match=fp))
    t.is_((one(res).get("status"), one(res).get("dsn")), ("deferred", "4.7.4"),
          "fingerprint: a server without STARTTLS: deferred 4.7.4")
    r = subprocess.run([TOOL] + e.conf(smtp_tls_security_level="fingerprint") + [q1, hop(s)],
                       capture_output=True, text=True, timeout=30)
    t.like(r.stderr, r"smtp_tls_fingerprint_cert_match: empty at security level fingerprint",
           "fingerprint without fingerprints is refused")

    # ---- dane is refused, not taken for something else ----
    for level in ("dane", "dane-only"):
        r = subprocess.run([TOOL] + e.conf(smtp_tls_security_level=level) + [q1, hop(s)],
                           capture_output=True, text=True, timeout=30)
        t.like(r.stderr, r'smtp_tls_security_level: "%s" is not supported: Petrel has no DNSSEC-validated TLSA '
               r'lookups' % level, "smtp_tls_security_level = %s refuses to load" % level)
    r = subprocess.run([TOOL, "--lmtp"] + e.conf(lmtp_tls_security_level="dane") + [q1, hop(s)],
                       capture_output=True, text=True, timeout=30)
    t.like(r.stderr, r'lmtp_tls_security_level: "dane" is not supported', "lmtp_tls_security_level = dane too")

    # ---- CApath and the verify match ----
    capath = os.path.join(e.dir, "capath")
    os.mkdir(capath)
    shutil.copy(cert, os.path.join(capath, "ca.pem"))
    subprocess.run(["openssl", "rehash", capath], check=True, capture_output=True)
    dns = Dnsmasq(["--local=/test/", "--mx-host=tls.test,mx.tls.test,10", "--host-record=mx.tls.test,127.0.0.1"])
    try:
        d = ["--dns", dns.server]
        s = e.server(tls=(cert, key))
        res, _, _ = e.deliver(q1, "tls.test:%d" % s.port, *d, *e.conf(smtp_tls_security_level="verify",
                                                                   smtp_tls_CApath=capath))
        t.is_(one(res).get("status"), "sent", "smtp_tls_CApath: verify passes with the CA in a hashed directory",
              e.last_out)
        res, _, _ = e.deliver(q1, "tls.test:%d" % s.port, *d, *e.conf(smtp_tls_security_level="verify"))
        t.is_((one(res).get("status"), one(res).get("dsn")), ("deferred", "4.7.5"),
              "without it (the system's CAs): not verified")
        res, _, _ = e.deliver(q1, "tls.test:%d" % s.port, *d, *e.conf(smtp_tls_security_level="verify",
                                                                   smtp_tls_CApath=capath,
                                                                   smtp_tls_verify_cert_match="nexthop"))
        t.is_(one(res).get("status"), "deferred", "smtp_tls_verify_cert_match = nexthop: mx.tls.test is not tls.test")
        res, _, _ = e.deliver(q1, "tls.test:%d" % s.port, *d, *e.conf(smtp_tls_security_level="verify",
                                                                   smtp_tls_CApath=capath,
                                                                   smtp_tls_verify_cert_match="nexthop, .tls.test"))
        t.is_(one(res).get("status"), "sent", "smtp_tls_verify_cert_match = nexthop, .tls.test: a subdomain matches")
        res, _, _ = e.deliver(q1, "tls.test:%d" % s.port, *d, *e.conf(smtp_tls_security_level="secure",
                                                                   smtp_tls_CApath=capath,
                                                                   smtp_tls_secure_cert_match="nexthop"))
        t.is_(one(res).get("status"), "deferred", "smtp_tls_secure_cert_match = nexthop: no subdomains")
    finally:
        dns.stop()

    e.finish(t)


if __name__ == "__main__":
    main()
