"""The dmarc module end to end: petreld with modules = spf dkim dmarc (that
order), check_spf at RCPT, a private dnsmasq serving the SPF, _domainkey
and _dmarc records (dns_resolver), real SMTP sessions from a client outside
mynetworks (127.0.0.2). A spoofed From under p=reject gets the exact reply;
SPF-aligned and DKIM-aligned mail passes (the DKIM signature made by the
dkim component's driver, verified by the dkim module, its result read by
dmarc from the dkim.results note); p=quarantine holds; p=none only reports;
dmarc_reject_action = quarantine holds instead of rejecting; a DNS server
that never answers gets the documented 451 (dmarc_temperror_action =
defer) or a dmarc=temperror header (accept); opendmarc's history file is
written; a message that header_checks PASSed is not evaluated (as no
milter sees it). The test domains are RFC 2606 names under suffixes of the Public
Suffix List (libopendmarc aligns domains under unknown suffixes such as
.test with each other), served by our dnsmasq only."""
import os
import re
import subprocess
import tempfile

from harness import CLEANUP_DIRS, PETRELD, TEST_USER, TOP_BUILDDIR, Dnsmasq, Petrel, Tap, maildir_messages, wait_for
from modlib import UdpBlackhole, bundled_module_dir, smtp_from

t = Tap(timeout=300)
work = tempfile.mkdtemp(prefix="petrel-dmarc-mod-")
os.chmod(work, 0o755)
CLEANUP_DIRS.append(work)
MODS = bundled_module_dir("spf", "dkim", "dmarc")
DRIVER = os.path.join(TOP_BUILDDIR, "modules", "dkim", "t", "dkim-driver")
QMGR = "qmgr unix n - n 300 1 qmgr\n"
HOSTNAME = "mx.petrel.example"


def path(name):
    return os.path.join(work, name)


def txt(name, text):
    return "--txt-record=%s,%s" % (name, ",".join(text[i:i + 250] for i in range(0, len(text), 250)))


subprocess.run(["opendkim-genkey", "-b", "1024", "-d", "example.org", "-s", "sel", "-D", work], check=True)
with open(path("sel.txt")) as f:
    KEY_TXT = "".join(re.findall(r'"([^"]*)"', f.read()))
KEY = path("sel.private")

RECORDS = ["--local=/com/", "--local=/net/", "--local=/org/", "--local=/se/", "--local=/nl/",
           txt("example.net", "v=spf1 ip4:127.0.0.0/8 -all"),
           txt("mail.example.com", "v=spf1 ip4:127.0.0.0/8 -all"),
           txt("sel._domainkey.example.org", KEY_TXT),
           txt("_dmarc.example.com", "v=DMARC1; p=reject"),
           txt("_dmarc.example.org", "v=DMARC1; p=reject"),
           txt("_dmarc.example.se", "v=DMARC1; p=quarantine"),
           txt("_dmarc.example.nl", "v=DMARC1; p=none")]


def instance(dns_server, mods=MODS, modules="spf dkim dmarc", restrictions="check_spf", **extra):
    cfg = {"modules": modules, "module_directory": mods, "dns_resolver": dns_server, "myhostname": HOSTNAME,
           "mynetworks": "127.0.0.1/32", "smtpd_recipient_restrictions": restrictions}
    cfg.update(extra)
    p = Petrel(t, main_cf=cfg, extra_services=QMGR, start=False)
    p.virtual_mailboxes({"u@vmail.example.com": "u/"})
    p.start()
    return p


def message(from_header, subject, body="Hello,\r\nthis is the body.\r\n"):
    return ("From: %s\r\nTo: u@vmail.example.com\r\nSubject: %s\r\nDate: Thu, 03 Dec 2026 07:00:00 +0000\r\n"
            "Message-ID: <%s@example.net>\r\n\r\n%s" % (from_header, subject, re.sub(r"\W", "", subject), body))


def send(p, text, sender, src="127.0.0.2"):
    data = re.sub(r"\r?\n", "\r\n", text)
    data = re.sub(r"^\.", "..", data, flags=re.M)
    if not data.endswith("\r\n"):
        data += "\r\n"
    c = smtp_from(p.port, src=src)
    c.ehlo("client.example.net")
    c.cmd("MAIL FROM:<%s>" % sender)
    r = c.cmd("RCPT TO:<u@vmail.example.com>")
    if c.code == 250:
        c.cmd("DATA")
        c.send(data.encode() + b".\r\n")
        r = c.read_reply()
    c.cmd("QUIT")
    c.close()
    return r


def delivered(p, subject, timeout=60):
    box = os.path.join(p.boxes, "u")
    m = wait_for(lambda: next((m for m in maildir_messages(box)
                               if re.search(rb"^Subject: " + re.escape(subject.encode()) + rb"\r?$", m, re.M)), None),
                 timeout)
    return m.decode("utf-8", "replace") if m else None


def auth_results(msg):
    head = re.split(r"\r?\n\r?\n", msg or "", 1)[0]
    return [re.sub(r"\r?\n[ \t]+", " ", m.group(1)).strip()
            for m in re.finditer(r"^Authentication-Results:(.*(?:\r?\n[ \t].*)*)", head, re.M)]


def held(p):
    return wait_for(lambda: p.queue_files("hold"), 30)


def signed_message(subject, tamper=False):
    src = path("s-%s.eml" % re.sub(r"\W", "", subject))
    with open(src, "w", newline="") as f:
        f.write(message("Org <news@example.org>", subject))
    r = subprocess.run([DRIVER, "--key", "example.org", "sel", KEY, src], capture_output=True, check=True)
    text = r.stdout.decode()
    return text.replace("this is the body", "this is the b0dy") if tamper else text


bh = UdpBlackhole()
try:
    with Dnsmasq(RECORDS) as dns:
        hist_dir = path("dmarc")
        os.mkdir(hist_dir)
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam(TEST_USER)
            os.chown(hist_dir, pw.pw_uid, pw.pw_gid)
        history = os.path.join(hist_dir, "history")
        with instance(dns.server, dmarc_history_file=history) as p:
            reply = send(p, message("The CEO <ceo@example.com>", "spoofed"), "x@example.net")
            t.is_(reply, "550 5.7.1 rejected by DMARC policy for example.com",
                  "p=reject: a spoofed From (SPF passes for another domain, no signature) is rejected")
            t.ok(p.wait_log(r"dmarc: example\.com: dmarc=fail \(p=reject dis=reject\) header\.from=example\.com"),
                 "the log says why")

            reply = send(p, message("The CEO <ceo@example.com>", "spf aligned"), "bounce@mail.example.com")
            t.like(reply, r"^250 ", "SPF pass for a subdomain of the From domain: accepted")
            ar = auth_results(delivered(p, "spf aligned"))
            t.ok("%s; dmarc=pass (p=reject dis=none) header.from=example.com" % HOSTNAME in ar,
                 "relaxed SPF alignment: dmarc=pass in Authentication-Results", "\n".join(ar))

            reply = send(p, signed_message("dkim aligned"), "x@example.net")
            t.like(reply, r"^250 ", "a message signed by the From domain, SPF for another: accepted")
            ar = auth_results(delivered(p, "dkim aligned"))
            t.ok(any(a.startswith("%s; dkim=pass" % HOSTNAME) and "header.d=example.org" in a for a in ar) and
                 "%s; dmarc=pass (p=reject dis=none) header.from=example.org" % HOSTNAME in ar,
                 "the dkim module's pass reaches dmarc (dkim.results note): dmarc=pass", "\n".join(ar))

            reply = send(p, signed_message("dkim broken", tamper=True), "x@example.net")
            t.is_(reply, "550 5.7.1 rejected by DMARC policy for example.org",
                  "the same message with a tampered body: dkim=fail, rejected by p=reject")

            reply = send(p, message("Shop <shop@example.se>", "quarantined"), "x@example.net")
            t.like(reply, r"^250 ", "p=quarantine: accepted")
            t.ok(held(p), "p=quarantine: the message is held (quarantine)")

            reply = send(p, message("<news@example.nl>", "monitor only"), "x@example.net")
            t.like(reply, r"^250 ", "p=none: accepted")
            ar = auth_results(delivered(p, "monitor only"))
            t.ok("%s; dmarc=fail (p=none dis=none) header.from=example.nl" % HOSTNAME in ar,
                 "p=none: delivered with dmarc=fail in Authentication-Results", "\n".join(ar))

            reply = send(p, message("a@example.net, ceo@example.com", "two domains"), "x@example.net")
            t.is_(reply, "550 5.7.1 several From domains: DMARC cannot apply",
                  "From addresses in two domains: rejected (RFC 7489 6.6.1)")

            reply = send(p, message("ceo@example.com;x", "bad from"), "x@example.net")
            t.is_(reply, "550 5.7.1 From address without a valid domain: DMARC cannot apply",
                  "a From value with a word that is no address: rejected")
            reply = send(p, message("The CEO <ceo@example.com>", "still serving"), "bounce@mail.example.com")
            t.like(reply, r"^250 ", "and the server keeps serving")

            reply = send(p, message("The CEO <ceo@example.com>", "from inside"), "x@example.net", src="127.0.0.1")
            t.like(reply, r"^250 ", "a client in mynetworks is not evaluated")
            ar = auth_results(delivered(p, "from inside"))
            t.ok(not any("dmarc=" in a for a in ar), "and gets no dmarc result", "\n".join(ar))

            def history_records():
                text = open(history).read() if os.path.exists(history) else ""
                return (re.search(r"^from example\.com$", text, re.M) and re.search(r"^reporter %s$"
                                                                                   % re.escape(HOSTNAME), text, re.M)
                        and re.search(r"^action 0$", text, re.M)), text
            # the records are written as they come: wait for all of them, not for the file
            t.ok(wait_for(lambda: history_records()[0], 30),
                 "dmarc_history_file gets opendmarc's records (the reject: action 0)", history_records()[1][:600])

        # header_checks PASS: no milter (opendmarc) would see the content, so no evaluation
        rules = path("header_checks")
        with open(rules, "w") as f:
            f.write("/^X-Act: pass$/ PASS\n")
        os.chmod(rules, 0o644)
        with instance(dns.server, header_checks="regexp:" + rules) as p:
            reply = send(p, "X-Act: pass\r\n" + message("The CEO <ceo@example.com>", "passed spoof"), "x@example.net")
            t.like(reply, r"^250 ", "header_checks PASS: the spoofed From under p=reject is not evaluated: accepted")
            msg = delivered(p, "passed spoof")
            t.ok(msg is not None and "X-Act: pass" in msg and not [a for a in auth_results(msg) if "dmarc=" in a],
                 "  delivered without a dmarc= Authentication-Results", msg)
            t.is_(send(p, message("The CEO <ceo@example.com>", "kept spoof"), "x@example.net"),
                  "550 5.7.1 rejected by DMARC policy for example.com",
                  "  the same message without the PASS is evaluated and rejected")

        with instance(dns.server, dmarc_reject_action="quarantine") as p:
            reply = send(p, message("The CEO <ceo@example.com>", "spoofed but held"), "x@example.net")
            t.like(reply, r"^250 ", "dmarc_reject_action = quarantine: a p=reject failure is accepted ...")
            t.ok(held(p), "... and held")

    # --- a DNS server that never answers ------------------------------------------------------
    # (no check_spf: the SPF check would time out first; no signature: no key lookup)
    with instance("127.0.0.1:%d" % bh.port, restrictions="permit", dmarc_lookup_timeout="2s") as p:
        reply = send(p, message("The CEO <ceo@example.com>", "dns down"), "x@example.net")
        t.is_(reply, "451 4.4.3 DMARC policy for example.com not available (temporary DNS failure), try again later",
              "the policy lookup times out: 451 4.4.3 (dmarc_temperror_action = defer)")
    with instance("127.0.0.1:%d" % bh.port, restrictions="permit", dmarc_lookup_timeout="2s",
                  dmarc_temperror_action="accept") as p:
        reply = send(p, message("The CEO <ceo@example.com>", "dns down accepted"), "x@example.net")
        t.like(reply, r"^250 ", "dmarc_temperror_action = accept: accepted ...")
        ar = auth_results(delivered(p, "dns down accepted"))
        t.ok("%s; dmarc=temperror (p=none dis=none) header.from=example.com" % HOSTNAME in ar,
             "... with dmarc=temperror in Authentication-Results", "\n".join(ar))

    # --- the order of the modules, and values petreld -n refuses -------------------------------
    for modules, param, value, want in [
            ("dkim dmarc", None, None, "modules: dmarc reads the results of the spf and dkim modules: list them "
             "before it (modules = spf dkim dmarc)"),
            ("spf dmarc dkim", None, None, "modules: dmarc reads the results of the spf and dkim modules"),
            ("spf dkim dmarc", "dmarc_reject_action", "drop", "dmarc_reject_action: drop: expected reject, "
             "quarantine or none")]:
        cfg = {"modules": modules, "module_directory": MODS}
        if param:
            cfg[param] = value
        p = Petrel(t, main_cf=cfg, start=False)
        r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
        t.ok(r.returncode != 0 and want in r.stderr + r.stdout,
             "petreld -n refuses modules = %s%s" % (modules, ", %s = %s" % (param, value) if param else ""),
             r.stderr + r.stdout)
finally:
    bh.close()
t.done()
