"""The dmarc module's evaluation component (modules/dmarc/dmarc_eval.c, with
libopendmarc) through its driver (modules/dmarc/t/dmarc-driver), the
_dmarc records served by dnsmasq: pass through aligned SPF or DKIM, fail
with p=reject/quarantine/none, strict and relaxed alignment, the
organizational domain's record and sp=, pct sampling, no record, a broken
record, DNS down, and the history record in opendmarc's format."""
import os
import subprocess
import tempfile

from harness import CLEANUP_DIRS, TOP_BUILDDIR, Dnsmasq, Tap

t = Tap()
DRIVER = os.path.join(TOP_BUILDDIR, "modules", "dmarc", "t", "dmarc-driver")
PSL = "/usr/share/publicsuffix/public_suffix_list.dat"
work = tempfile.mkdtemp(prefix="petrel-dmarc-")
CLEANUP_DIRS.append(work)

RECORDS = [
    "--local=/com/", "--local=/net/", "--local=/org/", "--local=/de/", "--local=/uk/", "--local=/fr/",
    "--local=/it/", "--local=/nl/", "--local=/se/", "--local=/at/",
    "--txt-record=_dmarc.example.com,v=DMARC1; p=reject; rua=mailto:agg@example.com",
    "--txt-record=_dmarc.example.net,v=DMARC1; p=quarantine",
    "--txt-record=_dmarc.example.org,v=DMARC1; p=none",
    "--txt-record=_dmarc.example.de,v=DMARC1; p=reject; adkim=s; aspf=s",
    "--txt-record=_dmarc.example.co.uk,v=DMARC1; p=reject; sp=quarantine",
    "--txt-record=_dmarc.example.fr,v=DMARC1; p=reject; pct=50",
    "--txt-record=_dmarc.example.it,v=DMARC1; p=sometimes",
    "--txt-record=_dmarc.example.nl,v=spf1 -all",
]


def run(dns, *args):
    r = subprocess.run([DRIVER, "--dns", dns, "--psl", PSL] + list(args), capture_output=True, text=True)
    return r.stdout.strip().splitlines() + ([r.stderr.strip()] if r.stderr.strip() else [])


with Dnsmasq(RECORDS) as dns:
    server = dns.server
    out = run(server, "--from", "example.com", "--spf", "example.com", "pass")
    t.is_(out, ["queries: _dmarc.example.com",
                "result=pass p=r pct=100 dkim_aligned=0 spf_aligned=1 disposition=none sampled_out=0 "
                "policy_domain=example.com",
                "dmarc=pass (p=reject dis=none) header.from=example.com"], "aligned SPF pass: dmarc=pass")
    out = run(server, "--from", "example.com", "--spf", "example.se", "pass",
              "--dkim", "example.com", "sel", "pass")
    t.like(out[1], r"^result=pass .*dkim_aligned=1 spf_aligned=0 ", "aligned DKIM pass: dmarc=pass")
    out = run(server, "--from", "example.com", "--spf", "example.se", "pass",
              "--dkim", "example.se", "sel", "pass")
    t.is_(out[1:], ["result=fail p=r pct=100 dkim_aligned=0 spf_aligned=0 disposition=reject sampled_out=0 "
                    "policy_domain=example.com", "dmarc=fail (p=reject dis=reject) header.from=example.com"],
          "nothing aligned, p=reject: fail, disposition reject")
    out = run(server, "--from", "example.com", "--spf", "example.com", "fail", "--dkim", "example.com", "s", "fail")
    t.like(out[1], r"^result=fail .*disposition=reject ", "failing SPF and DKIM of the From domain: fail")
    out = run(server, "--from", "example.net", "--spf", "example.se", "pass")
    t.like(out[1], r"^result=fail p=q .*disposition=quarantine ", "p=quarantine: quarantine")
    out = run(server, "--from", "example.org", "--spf", "example.se", "pass")
    t.like(out[1], r"^result=fail p=n .*disposition=none ", "p=none: fail, but nothing done")
    t.is_(out[2], "dmarc=fail (p=none dis=none) header.from=example.org", "and Authentication-Results says so")

    # --- alignment: relaxed by default, strict when the record says so -----------------------
    out = run(server, "--from", "example.com", "--spf", "bounces.example.com", "pass")
    t.like(out[1], r"^result=pass .*spf_aligned=1 ", "relaxed: a subdomain's SPF pass aligns")
    out = run(server, "--from", "example.de", "--spf", "bounces.example.de", "pass")
    t.like(out[1], r"^result=fail .*spf_aligned=0 disposition=reject ", "aspf=s: a subdomain's SPF pass does not")
    out = run(server, "--from", "example.de", "--dkim", "mail.example.de", "s", "pass")
    t.like(out[1], r"^result=fail .*dkim_aligned=0 ", "adkim=s: a subdomain's signature does not")
    out = run(server, "--from", "example.de", "--dkim", "example.de", "s", "pass")
    t.like(out[1], r"^result=pass .*dkim_aligned=1 ", "adkim=s: the exact domain's signature does")
    out = run(server, "--from", "news.example.at", "--spf", "example.at", "pass")
    t.like(out[1], r"^result=none ", "no record anywhere: dmarc=none")
    # libopendmarc knows organizational domains only under suffixes of the
    # Public Suffix List: these tests use RFC 2606's example names under
    # listed suffixes, served by our dnsmasq only (doc/modules/dmarc.md).

    # --- the organizational domain's record (sp=) ------------------------------------------------
    out = run(server, "--from", "mail.example.co.uk", "--spf", "example.se", "pass")
    t.is_(out[0], "queries: _dmarc.mail.example.co.uk _dmarc.example.co.uk",
          "no record at the From domain: the organizational domain's is asked for")
    t.like(out[1], r"^result=fail p=q .*disposition=quarantine .*policy_domain=example\.co\.uk$",
           "and its sp= applies to the subdomain")
    out = run(server, "--from", "mail.example.co.uk", "--spf", "example.co.uk", "pass")
    t.like(out[1], r"^result=pass ", "relaxed alignment across the organizational domain")

    # --- pct ------------------------------------------------------------------------------------
    out = run(server, "--from", "example.fr", "--spf", "example.se", "pass", "--random", "10")
    t.like(out[1], r"^result=fail p=r pct=50 .*disposition=reject sampled_out=0 ", "pct=50, drawn 10: reject")
    out = run(server, "--from", "example.fr", "--spf", "example.se", "pass", "--random", "75")
    t.like(out[1], r"^result=fail p=r pct=50 .*disposition=quarantine sampled_out=1 ",
           "pct=50, drawn 75: the next lighter policy, quarantine (RFC 7489 6.6.4)")

    # --- bad records and DNS trouble --------------------------------------------------------------
    out = run(server, "--from", "example.it", "--spf", "example.it", "fail")
    t.like(out[1], r"^result=permerror p=- .*disposition=none ", "p=sometimes: permerror, no policy applied")
    out = run(server, "--from", "example.nl")
    t.like(out[1], r"^result=none ", "a TXT record that is not DMARC: none")
    out = run("127.0.0.1:1", "--from", "example.com", "--spf", "example.se", "pass")
    t.like(out[1], r"^result=temperror .*disposition=none ", "DNS down: temperror, no policy applied")
    t.ok("queries: _dmarc.example.com" == out[0], "a temporary failure does not fall back to another domain")

    # --- the history file in opendmarc's format ----------------------------------------------------
    hist = os.path.join(work, "history")
    run(server, "--from", "example.com", "--ip", "198.51.100.7", "--spf", "example.se", "softfail",
        "--dkim", "example.com", "sel1", "fail", "--dkim", "example.nl", "sel2", "pass",
        "--history", hist, "--job", "4F3QA1B2C3D4E5F6G7H", "--reporter", "mx.petrel.test", "--mfrom", "example.se")
    run(server, "--from", "example.com", "--spf", "example.com", "pass", "--history", hist, "--job", "J2")
    text = open(hist).read()
    first = text.split("job J2\n")[0]
    t.is_(first, "job 4F3QA1B2C3D4E5F6G7H\n"
                 "reporter mx.petrel.test\n"
                 "received 1796284800\n"
                 "ipaddr 198.51.100.7\n"
                 "from example.com\n"
                 "mfrom example.se\n"
                 "dkim example.com sel1 7\n"
                 "dkim example.nl sel2 0\n"
                 "spf 2\n"
                 "pdomain example.com\n"
                 "policy 16\n"
                 "rua mailto:agg@example.com\n"
                 "pct 100\n"
                 "adkim 114\n"
                 "aspf 114\n"
                 "p 114\n"
                 "sp 0\n"
                 "align_dkim 5\n"
                 "align_spf 5\n"
                 "arc 7\n"
                 "arc_policy 2 json:[]\n"
                 "action 0\n",
          "a history record with opendmarc 1.4's keys, order and codes")
    t.ok(text.count("job ") == 2 and text.endswith("action 2\n"), "records are appended; a pass is accepted (2)")
t.done()
