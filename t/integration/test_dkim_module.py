"""The dkim module end to end (modules = dkim in petreld), against OpenDKIM
itself: a private opendkim milter (Debian's, its service masked) on a
loopback port, driven through t/tools/scan-drive, with its key lookups going
through libunbound to the same private dnsmasq that petreld's dns_resolver
names (the _domainkey TXT records). Both directions, relaxed/relaxed and
simple/simple:

- petreld signs mail from mynetworks (RSA from a KeyTable, Ed25519 from the
  same table, Ed25519 with simple/simple too) and OpenDKIM verifies the
  delivered message (dkim=pass), also with headers written without a space
  (or with a tab) after the colon, folded headers and trailing blank lines
  in the body; a tampered body fails (dkim=fail);
- OpenDKIM signs, the signed message is sent to petreld from a client
  outside mynetworks, and petreld's Authentication-Results says dkim=pass
  (dkim=fail once the body is tampered with).

Also: a SASL-authenticated client outside mynetworks is signed for, a
20 MiB message is signed and verified with the worker's memory flat,
petrelctl dkim keygen's keys work, no signature (dkim=none), a key that is not published (permerror),
a key server that never answers (temperror after dkim_lookup_timeout, the
message accepted), a forged Authentication-Results with our authserv-id
removed, the dkim.results note the dmarc module reads, no DKIM work on a
message that header_checks PASSed (as no milter sees it), and petreld -n
naming a broken KeyTable line."""
import os
import pwd
import re
import shutil
import subprocess
import tempfile

from harness import CLEANUP_DIRS, PETRELCTL, PETRELD, TEST_USER, Dnsmasq, Petrel, Tap, maildir_messages, wait_for
from modlib import UdpBlackhole, bundled_module_dir, smtp_from, smtpd_worker_pids
from peers import OpenDKIM, scan_drive

t = Tap(timeout=600)
work = tempfile.mkdtemp(prefix="petrel-dkim-mod-")
os.chmod(work, 0o755)
CLEANUP_DIRS.append(work)
MODS = bundled_module_dir("dkim", "sasl")
QMGR = "qmgr unix n - n 300 1 qmgr\n"
HOSTNAME = "mx.petrel.test"


def path(name):
    return os.path.join(work, name)


def rsa_key(domain, selector, bits=2048):
    subprocess.run(["opendkim-genkey", "-b", str(bits), "-d", domain, "-s", selector, "-D", work], check=True)
    key = path("%s.%s.private" % (selector, domain))
    os.rename(path(selector + ".private"), key)
    with open(path(selector + ".txt")) as f:
        record = "".join(re.findall(r'"([^"]*)"', f.read()))
    os.chmod(key, 0o644)   # petreld reads it as the test user
    return key, record


def ed25519_key(domain, selector):
    import base64
    key = path("%s.%s.private" % (selector, domain))
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    os.chmod(key, 0o644)
    return key, "v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:]).decode()


def txt_option(name, text):
    """dnsmasq splits a TXT record's strings on commas: 250-byte strings."""
    return "--txt-record=%s,%s" % (name, ",".join(text[i:i + 250] for i in range(0, len(text), 250)))


class DnsOpenDKIM(OpenDKIM):
    """OpenDKIM (Mode sv) signing for o.test with its own key, whose key
    lookups go to our dnsmasq: libunbound forwarding everything to it."""

    def __init__(self, dns_port, canonicalization):
        super().__init__(domain="o.test", selector="od", authserv_id="opendkim.test")
        with open(self.path("unbound.conf"), "w") as f:
            # unbound answers .test itself (RFC 6761) unless told not to
            f.write("server:\n    do-not-query-localhost: no\n    module-config: \"iterator\"\n"
                    "    local-zone: \"test.\" nodefault\n"
                    "forward-zone:\n    name: \".\"\n    forward-addr: 127.0.0.1@%d\n" % dns_port)
        conf = open(self.path("opendkim.conf")).read()
        conf = re.sub(r"^(TestPublicKeys|Nameservers|DNSTimeout) .*\n", "", conf, flags=re.M)
        conf += ("ResolverConfiguration %s\nCanonicalization %s\nDNSTimeout 5\n"
                 % (self.path("unbound.conf"), canonicalization))
        with open(self.path("opendkim.conf"), "w") as f:
            f.write(conf)
        with open(self.path("od.txt")) as f:
            self.record = "".join(re.findall(r'"([^"]*)"', f.read()))


# --- keys and records --------------------------------------------------------------------
rsa_a, rsa_a_txt = rsa_key("a.test", "rsa1")
ed_e, ed_e_txt = ed25519_key("e.test", "ed1")


def keygen(domain, selector, *opts):
    """petrelctl dkim keygen: the key file and the record text (its strings joined)."""
    r = subprocess.run([PETRELCTL, "-c", work, "dkim", "keygen"] + list(opts) + ["-D", work, domain, selector],
                       capture_output=True, text=True, timeout=60)
    key = path("%s.%s.private" % (selector, domain))
    return r, key, "".join(re.findall(r'"([^"]*)"', r.stdout))


r, kg_rsa, kg_rsa_txt = keygen("k.test", "kg1")
t.ok(r.returncode == 0 and re.match(r'^kg1\._domainkey\.k\.test\. IN TXT \( "v=DKIM1; k=rsa; p=[A-Za-z0-9+/]{1,255}" '
                                    r'"[A-Za-z0-9+/=]+" \)$', r.stdout),
     "petrelctl dkim keygen prints the RSA record in 255-byte strings", r.stdout + r.stderr)
st = os.stat(kg_rsa)
t.ok(st.st_mode & 0o777 == 0o600 and (os.geteuid() != 0 or st.st_uid == pwd.getpwnam(TEST_USER).pw_uid),
     "the key is 0600 and belongs to mail_owner", oct(st.st_mode))
r, kg_ed, kg_ed_txt = keygen("k2.test", "kg2", "--ed25519")
t.like(kg_ed_txt, r"^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$", "petrelctl dkim keygen --ed25519: the raw key")
r, _, _ = keygen("k.test", "kg1")
t.ok(r.returncode != 0 and "File exists (a key is never overwritten: choose a new selector)" in r.stderr,
     "an existing key is never overwritten", r.stderr)
r, _, _ = keygen("../etc", "x")
t.ok(r.returncode == 2 and "../etc: not a domain name" in r.stderr, "a domain that is not a name is refused",
     r.stderr)

KEYTABLE = path("KeyTable")
with open(KEYTABLE, "w") as f:
    f.write("rsa-a a.test:rsa1:%s\ned-e e.test:ed1:%s\nkg-rsa k.test:kg1:%s\nkg-ed k2.test:kg2:%s\n"
            % (rsa_a, ed_e, kg_rsa, kg_ed))
SIGNINGTABLE = path("SigningTable")
with open(SIGNINGTABLE, "w") as f:
    f.write("*@a.test rsa-a\n*@e.test ed-e\n*@k.test kg-rsa\n*@k2.test kg-ed\n")
for p_ in (KEYTABLE, SIGNINGTABLE):
    os.chmod(p_, 0o644)


def instance(dns_server, canon="relaxed/relaxed", **extra):
    cfg = {"modules": "dkim", "module_directory": MODS, "dns_resolver": dns_server,
           "myhostname": HOSTNAME, "mynetworks": "127.0.0.1/32",
           "dkim_key_table": KEYTABLE, "dkim_signing_table": "refile:" + SIGNINGTABLE,
           "dkim_canonicalization": canon}
    cfg.update(extra)
    p = Petrel(t, main_cf=cfg, extra_services=QMGR, start=False)
    p.virtual_mailboxes({"u@vmail.test": "u/"})
    p.start()
    return p


def message(from_addr, subject, body="Hello,\r\nthis is the body.\r\n", extra=""):
    return ("From: %s\r\nTo: u@vmail.test\r\nSubject: %s\r\nDate: Thu, 03 Dec 2026 07:00:00 +0000\r\n"
            "Message-ID: <%s@petrel.test>\r\n%s\r\n%s" % (from_addr, subject, re.sub(r"\W", "", subject), extra,
                                                            body))


def send(p, text, src="127.0.0.1", sender="sender@a.test"):
    """Sends text (a message, LF or CRLF) from the loopback address src; the final reply."""
    data = re.sub(r"\r?\n", "\r\n", text)
    data = re.sub(r"^\.", "..", data, flags=re.M)
    if not data.endswith("\r\n"):
        data += "\r\n"
    c = smtp_from(p.port, src=src)
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<%s>" % sender)
    c.cmd("RCPT TO:<u@vmail.test>")
    c.cmd("DATA")
    c.send(data.encode() + b".\r\n")
    reply = c.read_reply()
    c.cmd("QUIT")
    c.close()
    return reply


def delivered(p, subject, timeout=60):
    box = os.path.join(p.boxes, "u")
    m = wait_for(lambda: next((m for m in maildir_messages(box)
                               if re.search(rb"^Subject:[ \t]?" + re.escape(subject.encode()) + rb"\r?$", m, re.M)), None),
                 timeout)
    return m.decode("utf-8", "replace") if m else None


def head(msg):
    return re.split(r"\r?\n\r?\n", msg or "", 1)[0]


def headers_named(msg, name):
    """The values of a message's headers called name, unfolded."""
    out = []
    for m in re.finditer(r"^%s:(.*(?:\r?\n[ \t].*)*)" % re.escape(name), head(msg), re.M | re.I):
        out.append(re.sub(r"\r?\n[ \t]+", " ", m.group(1)).strip())
    return out


def to_file(name, text):
    p_ = path(name)
    with open(p_, "w", newline="") as f:
        f.write(text)
    return p_


def opendkim_verdict(dk, msg_file, port):
    """opendkim's Authentication-Results for msg_file, from a client outside its InternalHosts."""
    rc, lines = scan_drive("milter", "--macro", "j=opendkim.test", "--macro", "i=ABC%d" % port,
                           "--client", "mx.example.net,198.51.100.7,%d,4" % port, dk.endpoint, msg_file)
    ar = [ln for ln in lines if ln.startswith("edit:") and "Authentication-Results=" in ln]
    return ar[0] if ar else "\n".join(lines)


def hwm(pid):
    """A process's peak resident memory (VmHWM), KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def tamper(text):
    return text.replace("this is the body", "this is the b0dy")


bh = UdpBlackhole()
try:
    # one opendkim per canonicalization, both signing with the same o.test key
    records = ["--local=/test/", txt_option("rsa1._domainkey.a.test", rsa_a_txt),
               txt_option("ed1._domainkey.e.test", ed_e_txt), txt_option("kg1._domainkey.k.test", kg_rsa_txt),
               txt_option("kg2._domainkey.k2.test", kg_ed_txt)]
    od_key, od_txt = rsa_key("o.test", "od", bits=1024)
    records.append(txt_option("od._domainkey.o.test", od_txt))
    with Dnsmasq(records) as dns:
        peers = {}
        for canon in ("relaxed/relaxed", "simple/simple"):
            dk = DnsOpenDKIM(dns.port, canon)
            shutil.copyfile(od_key, dk.path("od.private"))
            peers[canon] = dk.start()
        port = 40000
        for canon in ("relaxed/relaxed", "simple/simple"):
            dk = peers[canon]
            with instance(dns.server, canon=canon) as p:
                # --- petreld signs, opendkim verifies ---------------------------------------
                for label, from_addr, d, s, alg in [("RSA", "alice@a.test", "a.test", "rsa1", "rsa-sha256"),
                                                    ("Ed25519", "eve@e.test", "e.test", "ed1", "ed25519-sha256"),
                                                    ("keygen RSA", "kim@k.test", "k.test", "kg1", "rsa-sha256"),
                                                    ("keygen Ed25519", "kim@k2.test", "k2.test", "kg2",
                                                     "ed25519-sha256"),
                                                    ("RSA tight", "alice@a.test", "a.test", "rsa1", "rsa-sha256"),
                                                    ("Ed25519 tight", "eve@e.test", "e.test", "ed1",
                                                     "ed25519-sha256")]:
                    subject = "signed %s %s" % (label, canon)
                    text = message("Alice <%s>" % from_addr, subject)
                    if label.endswith("tight"):
                        # headers without the space after the colon (or with a tab), folded
                        # ones, and blank lines ending the body: simple hashes them as they are
                        text = message("Alice <%s>" % from_addr, subject,
                                       body="Hello,  \r\n\tthis is the body.\t\r\n\r\n \r\n\r\n",
                                       extra="X-Tight:value\r\nX-Tab:\tvalue\r\nX-Folded: one\r\n\t two  three\r\n")
                        text = text.replace("To: u@vmail.test", "To:u@vmail.test")
                    reply = send(p, text)
                    t.like(reply, r"^250 ", "%s, %s: a message from mynetworks is accepted" % (canon, label))
                    msg = delivered(p, subject)
                    sigs = headers_named(msg, "DKIM-Signature")
                    t.ok(len(sigs) == 1 and ("a=%s;" % alg) in sigs[0] and ("c=%s;" % canon) in sigs[0]
                         and ("d=%s;" % d) in sigs[0] and ("s=%s;" % s) in sigs[0],
                         "%s, %s: petreld signed it (a=%s c=%s d=%s s=%s)" % (canon, label, alg, canon, d, s),
                         "\n".join(sigs) or head(msg))
                    t.ok(not headers_named(msg, "Authentication-Results"),
                         "%s, %s: mail we sign gets no Authentication-Results" % (canon, label))
                    port += 1
                    verdict = opendkim_verdict(dk, to_file("p-%d.eml" % port, msg), port)
                    t.like(verdict, r"dkim=pass .*header\.d=%s" % re.escape(d),
                           "%s, %s: OpenDKIM verifies petreld's signature" % (canon, label))
                    port += 1
                    verdict = opendkim_verdict(dk, to_file("p-%d.eml" % port, tamper(msg)), port)
                    t.like(verdict, r"dkim=fail reason=\"signature verification failed\"( \([^)]*\))? header\.d=%s" % re.escape(d),
                           "%s, %s: a tampered body fails OpenDKIM's verification" % (canon, label))

                # --- opendkim signs, petreld verifies ---------------------------------------
                subject = "opendkim signed %s" % canon
                src = to_file("o-%s.eml" % canon.replace("/", "-"), message("Olga <olga@o.test>", subject))
                signed = path("o-%s.signed" % canon.replace("/", "-"))
                port += 1
                rc, lines = scan_drive("milter", "--macro", "j=opendkim.test", "--macro", "i=DEF%d" % port,
                                       "--client", "localhost,127.0.0.1,%d,4" % port, "--write-message", signed,
                                       dk.endpoint, src)
                signed_text = open(signed, newline="").read()
                t.like(signed_text, r"DKIM-Signature: v=1; a=rsa-sha256; c=%s; d=o\.test; s=od;" % re.escape(canon),
                       "%s: OpenDKIM signed the message (from its InternalHosts)" % canon)
                reply = send(p, signed_text, src="127.0.0.2", sender="olga@o.test")
                t.like(reply, r"^250 ", "%s: petreld accepts OpenDKIM's signed message from outside" % canon)
                ar = headers_named(delivered(p, subject), "Authentication-Results")
                t.ok(len(ar) == 1 and re.match(r"%s; dkim=pass \(1024-bit key\) header\.d=o\.test header\.s=od "
                                               r"header\.a=rsa-sha256 header\.b=\S+$" % re.escape(HOSTNAME), ar[0]),
                     "%s: petreld verifies OpenDKIM's signature: dkim=pass" % canon, "\n".join(ar))
                subject2 = "opendkim tampered %s" % canon
                reply = send(p, tamper(signed_text).replace(subject, subject2).replace(
                    "Subject: " + subject2, "Subject: " + subject2), src="127.0.0.2", sender="olga@o.test")
                # the Subject is signed too: find the message by its new subject
                ar = headers_named(delivered(p, subject2), "Authentication-Results")
                t.ok(len(ar) == 1 and ar[0].startswith("%s; dkim=fail (" % HOSTNAME) and "header.d=o.test" in ar[0],
                     "%s: a tampered message fails petreld's verification: dkim=fail" % canon, "\n".join(ar))

                # headers written tightly ("Subject:x", a tab after the colon) and folded with
                # tabs: simple canonicalization hashes them byte for byte, so petreld must
                # verify the bytes as received, not headers rebuilt as "Name: value"
                subject = "tight opendkim %s" % canon
                tight = message("Olga <olga@o.test>", subject,
                                extra="X-Tab:\tvalue\r\nX-Folded: one\r\n\t two  three\r\n\tfour\r\n")
                tight = tight.replace("Subject: ", "Subject:").replace("To: ", "To:\t")
                src = to_file("t-%s.eml" % canon.replace("/", "-"), tight)
                signed = path("t-%s.signed" % canon.replace("/", "-"))
                port += 1
                rc, lines = scan_drive("milter", "--macro", "j=opendkim.test", "--macro", "i=TIG%d" % port,
                                       "--client", "localhost,127.0.0.1,%d,4" % port, "--write-message", signed,
                                       dk.endpoint, src)
                signed_text = open(signed, newline="").read()
                t.ok(("\r\nSubject:%s\r\n" % subject) in signed_text and "\r\nTo:\tu@vmail.test\r\n" in signed_text
                     and re.search(r"DKIM-Signature: v=1; a=rsa-sha256; c=%s; d=o\.test; s=od;" % re.escape(canon),
                                   signed_text),
                     "%s: OpenDKIM signed a message with Subject:x, To:<tab>x and tab-folded headers" % canon,
                     signed_text[:600])
                reply = send(p, signed_text, src="127.0.0.2", sender="olga@o.test")
                t.like(reply, r"^250 ", "%s: petreld accepts the tightly written signed message" % canon)
                msg = delivered(p, subject)
                t.like(msg or "", r"\nSubject:%s\r?\n" % re.escape(subject),
                       "%s: the Subject is delivered as written, without a space after the colon" % canon)
                ar = headers_named(msg, "Authentication-Results")
                t.ok(len(ar) == 1 and re.match(r"%s; dkim=pass \(1024-bit key\) header\.d=o\.test header\.s=od "
                                               r"header\.a=rsa-sha256 header\.b=\S+$" % re.escape(HOSTNAME), ar[0]),
                     "%s: petreld verifies OpenDKIM's signature over Subject:x and tab-folded headers: dkim=pass"
                     % canon, "\n".join(ar))
                subject2 = "tight tampered %s" % canon
                send(p, tamper(signed_text).replace(subject, subject2), src="127.0.0.2", sender="olga@o.test")
                ar = headers_named(delivered(p, subject2), "Authentication-Results")
                t.ok(len(ar) == 1 and ar[0].startswith("%s; dkim=fail (" % HOSTNAME) and "header.d=o.test" in ar[0],
                     "%s: the tightly written message tampered with: dkim=fail" % canon, "\n".join(ar))

                if canon != "relaxed/relaxed":
                    continue
                # --- no signature, no key, forged Authentication-Results ------------------
                reply = send(p, message("x@elsewhere.test", "unsigned", extra=(
                    "Authentication-Results: %s; dkim=pass header.d=elsewhere.test\r\n"
                    "Authentication-Results: (a comment) MX.Petrel.Test; spf=pass\r\n"
                    "Authentication-Results: other.example; dkim=pass header.d=elsewhere.test\r\n" % HOSTNAME)),
                    src="127.0.0.2", sender="x@elsewhere.test")
                msg = delivered(p, "unsigned")
                ar = headers_named(msg, "Authentication-Results")
                t.is_(ar, ["%s; dkim=none" % HOSTNAME, "other.example; dkim=pass header.d=elsewhere.test"],
                      "no signature: dkim=none; both forged Authentication-Results with our name are removed, "
                      "another host's is kept")
                nokey = re.sub(r"d=o\.test", "d=nokey.test", signed_text).replace(subject, "no key")
                send(p, nokey, src="127.0.0.2", sender="olga@o.test")
                ar = headers_named(delivered(p, "no key"), "Authentication-Results")
                t.ok(len(ar) == 1 and ar[0].startswith("%s; dkim=permerror (no key) header.d=nokey.test" % HOSTNAME),
                     "a signature whose key is not published: dkim=permerror (no key)", "\n".join(ar))
                # mail from a client outside mynetworks with our From domain is verified, not signed
                send(p, message("alice@a.test", "outsider"), src="127.0.0.2", sender="alice@a.test")
                msg = delivered(p, "outsider")
                t.ok(not headers_named(msg, "DKIM-Signature") and
                     headers_named(msg, "Authentication-Results") == ["%s; dkim=none" % HOSTNAME],
                     "mail from outside mynetworks is verified, never signed")
                t.ok(p.wait_log(r"dkim: verified: o\.test od pass"),
                     "the log (and the dkim.results note) carry DOMAIN SELECTOR RESULT")

        # --- header_checks PASS: no milter (opendkim) would see the content: no DKIM work ----------
        rules = to_file("header_checks", "/^X-Act: pass$/ PASS\n")
        os.chmod(rules, 0o644)
        with instance(dns.server, header_checks="regexp:" + rules) as p:
            send(p, message("alice@a.test", "passed signer", extra="X-Act: pass\r\n"))
            msg = delivered(p, "passed signer")
            t.ok(msg is not None and "X-Act: pass" in msg and not headers_named(msg, "DKIM-Signature"),
                 "header_checks PASS: mail from mynetworks is not signed (no DKIM-Signature)", head(msg))
            send(p, message("alice@a.test", "kept signer"))
            t.is_(len(headers_named(delivered(p, "kept signer"), "DKIM-Signature")), 1,
                  "  the same message without the PASS is signed")
            forged = "Authentication-Results: %s; dkim=pass header.d=elsewhere.test\r\n" % HOSTNAME
            send(p, message("x@elsewhere.test", "passed outsider", extra="X-Act: pass\r\n" + forged),
                 src="127.0.0.2", sender="x@elsewhere.test")
            t.is_(headers_named(delivered(p, "passed outsider"), "Authentication-Results"),
                  ["%s; dkim=pass header.d=elsewhere.test" % HOSTNAME],
                  "header_checks PASS: mail from outside is not verified: no Authentication-Results of ours, "
                  "the forged one left as opendkim would leave it")
            send(p, message("x@elsewhere.test", "kept outsider", extra=forged), src="127.0.0.2",
                 sender="x@elsewhere.test")
            t.is_(headers_named(delivered(p, "kept outsider"), "Authentication-Results"), ["%s; dkim=none" % HOSTNAME],
                  "  the same message without the PASS is verified (dkim=none, the forged one removed)")

        # --- a 20 MiB message signed, then verified: the worker's memory stays flat --------------
        with instance(dns.server, smtpd_workers="1", message_size_limit="30000000", mailbox_size_limit="0",
                      virtual_mailbox_limit="0") as p:
            send(p, message("alice@a.test", "warm up"))
            delivered(p, "warm up")
            workers = smtpd_worker_pids(p)
            before = max(hwm(pid) for pid in workers)
            line = "All work and no play makes Jack a dull boy. 0123456789 abcdefghijklmnopqrstuvw\r\n"
            big_body = line * (20 * 1024 * 1024 // len(line))
            reply = send(p, message("alice@a.test", "big signed", body=big_body))
            big = delivered(p, "big signed", timeout=60)
            t.ok(reply.startswith("250 ") and big and len(headers_named(big, "DKIM-Signature")) == 1,
                 "a 20 MiB message from mynetworks is signed", reply)
            # an unsigned header on top tells the second copy apart (the Subject is signed)
            reply = send(p, "X-Round: verify\r\n" + big, src="127.0.0.2")
            box = os.path.join(p.boxes, "u")
            again = wait_for(lambda: next((m for m in maildir_messages(box) if re.search(rb"^X-Round: verify\r?$", m,
                                                                                         re.M)), None), 60)
            ar = headers_named(again.decode("utf-8", "replace") if again else "", "Authentication-Results")
            t.ok(len(ar) == 1 and re.match(r"%s; dkim=pass \(2048-bit key\) header\.d=a\.test header\.s=rsa1 "
                                           r"header\.a=rsa-sha256 header\.b=\S+$" % re.escape(HOSTNAME), ar[0]),
                 "and verified again from outside: dkim=pass", "\n".join(ar))
            after = max(hwm(pid) for pid in workers)
            t.diag("smtpd worker peak RSS (VmHWM): %.1f MiB before, %.1f MiB after signing and verifying 20 MiB"
                   % (before / 1024.0, after / 1024.0))
            t.ok(after - before < 8 * 1024, "the worker's peak memory grew by less than 8 MiB (%.1f MiB)"
                 % ((after - before) / 1024.0))

        # --- a SASL-authenticated client outside mynetworks: signed, not verified ----------------
        users = path("sasl_passwd")
        with open(users, "w") as f:
            f.write("alice {PLAIN}secret\n")
        os.chmod(users, 0o644)
        with instance(dns.server, modules="sasl dkim", smtpd_sasl_auth_enable="yes", smtpd_sasl_type="table",
                      smtpd_sasl_path="texthash:" + users) as p:
            import base64
            c = smtp_from(p.port, src="127.0.0.2")
            c.ehlo("client.test")
            auth = c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode())
            c.cmd("MAIL FROM:<alice@a.test>")
            c.cmd("RCPT TO:<u@vmail.test>")
            c.cmd("DATA")
            c.send(message("alice@a.test", "authenticated").encode() + b".\r\n")
            reply = c.read_reply()
            c.cmd("QUIT")
            c.close()
            msg = delivered(p, "authenticated")
            sigs = headers_named(msg, "DKIM-Signature")
            t.ok(auth.startswith("235 ") and reply.startswith("250 ") and len(sigs) == 1 and "d=a.test;" in sigs[0]
                 and not headers_named(msg, "Authentication-Results"),
                 "a SASL-authenticated client outside mynetworks gets its mail signed", "%s / %s" % (auth, reply))

        # --- a key file changed under a running petreld: used at once (the key cache) -----------
        rot = path("rot.private")
        shutil.copyfile(rsa_a, rot)
        os.chmod(rot, 0o644)
        with instance(dns.server, dkim_key_table="", dkim_signing_table="", dkim_domain="a.test",
                      dkim_selector="rot", dkim_key_file=rot) as p:
            algs = []
            for i, source in enumerate([None, None, ed_e, rsa_a]):
                if source:
                    with open(source, "rb") as f_in, open(rot, "wb") as f_out:
                        f_out.write(f_in.read())   # the same file, rewritten in place
                send(p, message("alice@a.test", "rotation %d" % i))
                sigs = headers_named(delivered(p, "rotation %d" % i), "DKIM-Signature")
                algs.append(re.search(r"a=([a-z0-9-]+);", sigs[0]).group(1) if sigs else None)
            t.is_(algs, ["rsa-sha256", "rsa-sha256", "ed25519-sha256", "rsa-sha256"],
                  "a key file rewritten under a running petreld is used from the next message on (kept decoded "
                  "in between)")

        # --- a key server that does not answer: temperror, accepted -----------------------------
        with instance("127.0.0.1:%d" % bh.port, dkim_lookup_timeout="2s") as p:
            reply = send(p, signed_text.replace(subject, "slow dns"), src="127.0.0.2", sender="olga@o.test")
            t.like(reply, r"^250 ", "the key lookup times out: the message is still accepted")
            ar = headers_named(delivered(p, "slow dns"), "Authentication-Results")
            t.ok(len(ar) == 1 and ar[0].startswith("%s; dkim=temperror (key query failed) header.d=o.test" % HOSTNAME),
                 "after dkim_lookup_timeout the result is dkim=temperror", "\n".join(ar))
        for dk in peers.values():
            dk.stop()

    # --- petreld -n names a broken KeyTable line ---------------------------------------------
    bad = path("KeyTable.bad")
    with open(bad, "w") as f:
        f.write("rsa-a a.test:rsa1:%s\nbroken a.test\n" % rsa_a)
    os.chmod(bad, 0o644)
    p = Petrel(t, main_cf={"modules": "dkim", "module_directory": MODS, "dkim_key_table": bad,
                           "dkim_signing_table": SIGNINGTABLE}, start=False)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and ("%s:2: expected NAME DOMAIN:SELECTOR:KEY" % bad) in r.stderr + r.stdout,
         "petreld -n names the broken KeyTable line", r.stderr + r.stdout)
    # Postfix-style table specs: checked with the module API's petrel_table_check, naming the
    # parameter, then refused (only OpenDKIM's files are read).
    for param, spec, why in [
            ("dkim_signing_table", "hash:" + path("no-such-SigningTable"), "no-such-SigningTable"),
            ("dkim_key_table", "nosuchtype:" + path("KeyTable"), "nosuchtype"),
            ("dkim_signing_table", "texthash:" + SIGNINGTABLE, "is not supported here yet")]:
        settings = {"modules": "dkim", "module_directory": MODS, "dkim_key_table": KEYTABLE,
                    "dkim_signing_table": "refile:" + SIGNINGTABLE}
        settings[param] = spec
        p = Petrel(t, main_cf=settings, start=False)
        r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
        out = r.stderr + r.stdout
        t.ok(r.returncode != 0 and re.search(r"main\.cf:\d+: %s: .*%s" % (param, re.escape(why)), out),
             "petreld -n: %s = %s is refused naming the parameter (%s)" % (param, spec.split(":")[0], why), out)
    missing = path("missing.private")
    p = Petrel(t, main_cf={"modules": "dkim", "module_directory": MODS, "dkim_domain": "a.test",
                           "dkim_selector": "s", "dkim_key_file": missing}, start=False)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and ("dkim_key_file: %s: No such file or directory" % missing) in r.stderr + r.stdout,
         "petreld -n names a key file that does not exist", r.stderr + r.stdout)
    p = Petrel(t, main_cf={"modules": "dkim", "module_directory": MODS, "dkim_domain": "e.test",
                           "dkim_selector": "ed1", "dkim_key_file": ed_e, "dkim_canonicalization": "simple/simple"},
               start=False)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "petreld -n accepts an Ed25519 key with simple header canonicalization (our signer "
         "makes them right, libopendkim 2.11's did not)", r.stderr + r.stdout)
finally:
    bh.close()
t.done()
