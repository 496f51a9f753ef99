"""The content scanners Petrel's modules will talk to, through our protocol
layers (t/tools/scan-drive), all started privately by this script: spamd
(shared by spamass-milter and the direct spamd client), clamd (shared by
clamav-milter and the direct clamd client), and OpenDKIM.

- spamass-milter + spamd: GTUBE rejected with -r -1, tagged (and rewritten
  as SpamAssassin's report, a real REPLBODY) without it; a clean message passes.
- clamav-milter + clamd: EICAR, a signature of our own (.ndb) and an
  attachment hash of our own (.hdb) found, rejected or quarantined; a clean
  message passes with X-Virus-Status.
- OpenDKIM: signs mail from 127.0.0.1, then verifies it from elsewhere:
  Authentication-Results dkim=pass; a changed body is dkim=fail.
- spamd directly (SPAMC/SPAMD): CHECK, SYMBOLS, REPORT, PROCESS, HEADERS, PING,
  the size limit, spamd down, a hostile spamd.
- clamd directly (INSTREAM): EICAR, our signatures, clean, PING, VERSION,
  clamd's StreamMaxLength, our size limit, clamd down, a hostile clamd, and a
  20 MiB message streamed with the driver's memory measured.

Start-up times of every peer are printed as TAP comments."""
import base64
import os
import re
import socket
import subprocess
import tempfile
import threading

from harness import Tap, CLEANUP_DIRS, refused_port
from peers import (Clamd, ClamavMilter, EICAR, GTUBE, OWN_ATTACHMENT, OWN_SIGNATURE, OpenDKIM, PeerError,
                   SCAN_DRIVE, Spamd, SpamassMilter, scan_drive, shared, stop_all, write_message)

t = Tap(timeout=900)
work = tempfile.mkdtemp(prefix="petrel-scanners-")
CLEANUP_DIRS.append(work)
MACROS = ["--macro", "j=mx.petrel.test", "--macro", "i=4F2A9C01B", "--macro", "{mail_addr}=sender@example.com",
          "--macro", "{rcpt_addr}=rcpt@example.org"]
HEADERS = [("From", "Sender <sender@example.com>"), ("To", "rcpt@example.org"),
           ("Date", "Thu, 03 Dec 2026 07:00:00 +0000"), ("Message-ID", "<test-1@example.com>")]


def msg(name, subject, body, extra=()):
    return write_message(work, name, HEADERS + [("Subject", subject)] + list(extra), body, eol="\r\n")


def milter(peer, message, *opts):
    return scan_drive("milter", *(MACROS + list(opts) + [peer.endpoint, message]))


def edits(lines):
    return [ln for ln in lines if ln.startswith("edit:")]


gtube = msg("gtube.eml", "gtube", "This is spam.\r\n" + GTUBE + "\r\n")
ham = msg("ham.eml", "lunch", "Shall we meet for lunch on Thursday at noon?\r\nBest, Sender\r\n")
eicar = msg("eicar.eml", "eicar", EICAR + "\r\n")
own_sig = msg("own.eml", "own signature", "Some text with " + OWN_SIGNATURE + " inside.\r\n")
boundary = "PETREL-BOUNDARY"
attach = msg("attach.eml", "attachment",
             "--%s\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--%s\r\nContent-Type: application/octet-stream\r\n"
             "Content-Disposition: attachment; filename=payload.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n"
             "--%s--\r\n" % (boundary, boundary, base64.b64encode(OWN_ATTACHMENT).decode(), boundary),
             extra=[("MIME-Version", "1.0"), ("Content-Type", 'multipart/mixed; boundary="%s"' % boundary)])
starts = []

try:
    spamd = shared(Spamd)
    starts.append(("spamd", spamd.start_seconds))
    clamd = shared(Clamd, stream_max="25M")
    starts.append(("clamd", clamd.start_seconds))

    # ------------------------------------------------------------------
    # spamass-milter + spamd
    with SpamassMilter(spamd, reject=True) as sm:
        starts.append(("spamass-milter", sm.start_seconds))
        rc, lines = milter(sm, gtube)
        t.ok("eom: reject 550 5.7.1 Blocked by SpamAssassin" in lines, "spamass-milter -r -1: GTUBE rejected",
             "\n".join(lines))
        t.ok(any(e.startswith("edit: add_header X-Spam-Flag= YES") for e in edits(lines)), "  with X-Spam-Flag")
        rc, lines = milter(sm, ham)
        t.ok("eom: continue" in lines or "eom: accept" in lines, "  a clean message passes", "\n".join(lines))
        t.ok(any(re.match(r"edit: add_header X-Spam-Status= No, score=", e) for e in edits(lines)),
             "  with X-Spam-Status: No", "\n".join(edits(lines)))
    with SpamassMilter(spamd, reject=False) as sm:
        out = os.path.join(work, "tagged.eml")
        rc, lines = milter(sm, gtube, "--write-message", out)
        t.ok(("eom: continue" in lines or "eom: accept" in lines) and not any("reject" in ln for ln in lines
                                                                                  if ln.startswith("eom")),
             "spamass-milter without -r: GTUBE accepted, tagged", "\n".join(lines))
        with open(out, "rb") as f:
            tagged = f.read()
        t.ok(b"X-Spam-Flag: YES\r\n" in tagged and re.search(rb"X-Spam-Status: Yes, score=1\d\d\d", tagged),
             "  X-Spam-Flag: YES and X-Spam-Status: Yes, score=... in the message", tagged[:600])
        t.ok(any(e.startswith("edit: body_chunk") for e in edits(lines)) and b"GTUBE" in tagged
             and b"Spam detection software" in tagged,
             "  and the body replaced by SpamAssassin's report (REPLBODY from a real milter)", tagged[-400:])

    # ------------------------------------------------------------------
    # clamav-milter + clamd
    with ClamavMilter(clamd, on_infected="Reject") as cm:
        starts.append(("clamav-milter", cm.start_seconds))
        for name, path, virus in (("EICAR", eicar, "Eicar-Signature.UNOFFICIAL"),
                                  ("our .ndb signature", own_sig, "Petrel.Test.Signature.UNOFFICIAL"),
                                  ("our .hdb attachment hash", attach, "Petrel.Test.Attachment.UNOFFICIAL")):
            rc, lines = milter(cm, path)
            t.ok(any(ln.startswith("eom: reject 5") for ln in lines)
                 and "edit: add_header X-Virus-Status= Infected (%s)" % virus in lines,
                 "clamav-milter OnInfected Reject: %s found (%s) and rejected" % (name, virus), "\n".join(lines))
        rc, lines = milter(cm, ham)
        t.ok("edit: add_header X-Virus-Status= Clean" in lines and "eom: accept" in lines,
             "  a clean message: X-Virus-Status: Clean, accepted", "\n".join(lines))
    with ClamavMilter(clamd, on_infected="Quarantine") as cm:
        rc, lines = milter(cm, eicar)
        t.ok(any(ln.startswith("edit: quarantine") for ln in lines)
             and any(ln.startswith("eom: ") and "quarantine=" in ln for ln in lines),
             "clamav-milter OnInfected Quarantine: the message is to be held", "\n".join(lines))

    # ------------------------------------------------------------------
    # OpenDKIM: sign from 127.0.0.1, verify from outside
    with OpenDKIM(domain="example.com") as dk:
        starts.append(("opendkim", dk.start_seconds))
        signed = os.path.join(work, "signed.eml")
        rc, lines = milter(dk, ham, "--client", "localhost,127.0.0.1,40000,4", "--write-message", signed)
        t.ok(any(e.startswith("edit: insert_header 0 DKIM-Signature=") for e in edits(lines)),
             "OpenDKIM signs mail from 127.0.0.1 (DKIM-Signature inserted at the top)", "\n".join(lines))
        rc, lines = milter(dk, signed, "--client", "mx.example.net,198.51.100.7,40001,4")
        ar = [e for e in edits(lines) if "Authentication-Results=" in e]
        t.ok(len(ar) == 1 and "petrel.test;" in ar[0] and "dkim=pass" in ar[0] and "header.d=example.com" in ar[0],
             "OpenDKIM verifies it: Authentication-Results: petrel.test; dkim=pass", "\n".join(lines))
        with open(signed, "rb") as f:
            tampered_text = f.read().replace(b"Thursday", b"Friday")
        tampered = os.path.join(work, "tampered.eml")
        with open(tampered, "wb") as f:
            f.write(tampered_text)
        rc, lines = milter(dk, tampered, "--client", "mx.example.net,198.51.100.7,40002,4")
        ar = [e for e in edits(lines) if "Authentication-Results=" in e]
        t.ok(len(ar) == 1 and "dkim=fail" in ar[0], "  a changed body: dkim=fail", "\n".join(lines))

    # ------------------------------------------------------------------
    # spamd directly
    body = os.path.join(work, "spamd.body")
    rc, lines = scan_drive("spamd", spamd.endpoint, gtube)
    t.like(lines[0], r"^result: ok code=0 EX_OK spam=yes score=1\d\d\d\.\d threshold=5\.0 body=0$",
           "spamd CHECK: GTUBE is spam, with score and threshold")
    rc, lines = scan_drive("spamd", spamd.endpoint, ham)
    t.like(lines[0], r"^result: ok code=0 EX_OK spam=no score=-?\d+\.\d threshold=5\.0", "spamd CHECK: ham is not")
    rc, lines = scan_drive("spamd", "--command", "SYMBOLS", spamd.endpoint, gtube)
    t.ok(lines[1].startswith("symbols: ") and "GTUBE" in lines[1].split(" ", 1)[1].split(","),
         "spamd SYMBOLS: GTUBE among the rules hit", "\n".join(lines))
    rc, lines = scan_drive("spamd", "--command", "REPORT", "--body-out", body, spamd.endpoint, gtube)
    with open(body, "rb") as f:
        report = f.read()
    t.ok(b"GTUBE" in report and "body pieces: 1" in lines, "spamd REPORT: the report text streamed", report[:300])
    rc, lines = scan_drive("spamd", "--command", "PROCESS", "--body-out", body, spamd.endpoint, gtube)
    with open(body, "rb") as f:
        processed = f.read()
    m = re.search(r"body=(\d+)", lines[0])
    t.ok(m and int(m.group(1)) == len(processed) and b"X-Spam-Flag: YES" in processed,
         "spamd PROCESS: the rewritten message streamed to the caller (%d bytes)" % len(processed), lines[0])
    rc, lines = scan_drive("spamd", "--command", "HEADERS", "--body-out", body, spamd.endpoint, gtube)
    with open(body, "rb") as f:
        hdrs = f.read()
    t.ok(b"X-Spam-Status: Yes" in hdrs and hdrs.endswith(b"\r\n\r\n") and GTUBE.encode() not in hdrs,
         "spamd HEADERS: only the new header section", hdrs[-200:])
    rc, lines = scan_drive("spamd", "--command", "PING", spamd.endpoint, gtube)
    t.is_(lines[0], "result: ok code=0 PONG body=0", "spamd PING")
    rc, lines = scan_drive("spamd", "--user", "alice", spamd.endpoint, gtube)
    t.like(lines[0], r"^result: ok code=0 EX_OK spam=yes", "spamd with a User header")
    rc, lines = scan_drive("spamd", "--max-size", "100", spamd.endpoint, gtube)
    t.is_(lines[0], "result: skipped size=%d" % os.path.getsize(gtube), "a message over the size limit is not sent")
    port = refused_port()   # refuses for as long as the test runs: no other test can bind it
    rc, lines = scan_drive("spamd", "127.0.0.1:%d" % port, gtube)
    t.ok(lines[-2].startswith("result: failed code=-1 cannot connect to spamd")
         and "log: warning spamd 127.0.0.1:%d: connect: Connection refused" % port in lines,
         "spamd down: failed, logged", "\n".join(lines))

    # ------------------------------------------------------------------
    # clamd directly
    for name, path, want in (("EICAR", eicar, "found Eicar-Signature.UNOFFICIAL"),
                             ("our .ndb signature", own_sig, "found Petrel.Test.Signature.UNOFFICIAL"),
                             ("our .hdb attachment hash", attach, "found Petrel.Test.Attachment.UNOFFICIAL"),
                             ("a clean message", ham, "clean")):
        rc, lines = scan_drive("clamd", clamd.endpoint, path)
        t.ok(lines[0].startswith("result: " + want + " "), "clamd INSTREAM, %s: %s" % (name, want), lines[0])
    rc, lines = scan_drive("clamd", "--chunk", "7", clamd.endpoint, eicar)
    t.ok(lines[0].startswith("result: found Eicar-Signature.UNOFFICIAL"), "  in 7-byte chunks too", lines[0])
    rc, lines = scan_drive("clamd", "--command", "PING", clamd.endpoint, ham)
    t.is_(lines[0], "result: pong reply=\"PONG\" sent=0", "clamd PING")
    rc, lines = scan_drive("clamd", "--command", "VERSION", clamd.endpoint, ham)
    t.like(lines[0], r'^result: version reply="ClamAV \d', "clamd VERSION")
    big = os.path.join(work, "big.eml")
    with open(big, "wb") as f:
        f.write(b"Subject: big\r\n\r\n" + b"0123456789abcdef" * (2 * 1024 * 1024 // 16))
    with Clamd(stream_max="1M") as small:
        starts.append(("clamd (second)", small.start_seconds))
        rc, lines = scan_drive("clamd", small.endpoint, big)
        t.ok(lines[0].startswith('result: size_limit reply="INSTREAM size limit exceeded. ERROR"'),
             "past clamd's StreamMaxLength (1M): its own answer, not a broken pipe", "\n".join(lines))
    rc, lines = scan_drive("clamd", "--max-size", "1000", clamd.endpoint, big)
    t.is_(lines[0], "result: skipped sent=0", "our size limit with the size known: not sent")
    rc, lines = scan_drive("clamd", "--max-size", "100000", "--unknown-size", clamd.endpoint, big)
    t.ok(lines[0].startswith("result: skipped sent=65536"), "  with the size unknown: stops at the limit", lines[0])
    port = refused_port()
    rc, lines = scan_drive("clamd", "127.0.0.1:%d" % port, eicar)
    t.ok("result: failed cannot connect to clamd" in lines, "clamd down: failed", "\n".join(lines))

    # 20 MiB through clamd: the driver streams it (its memory stays small).
    twenty = os.path.join(work, "twenty.eml")
    with open(twenty, "wb") as f:
        f.write(b"Subject: twenty\r\n\r\n")
        line = b"a line of a long message, to see that nothing is held in memory....\r\n"
        f.write(line * (20 * 1024 * 1024 // len(line)))
    p = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M", SCAN_DRIVE, "clamd", clamd.endpoint, twenty],
                       capture_output=True, text=True, timeout=300)
    rss = int(re.search(r"maxrss_kb=(\d+)", p.stderr).group(1))
    # 20 MiB held anywhere would show; 16 MiB leaves room for a sanitizer build.
    t.ok(p.stdout.startswith("result: clean ") and rss < 16 * 1024,
         "20 MiB streamed to clamd: clean, driver max RSS %d KiB" % rss, p.stdout + p.stderr)
    t.diag("20 MiB INSTREAM: scan-drive max RSS %d KiB" % rss)
except PeerError as e:
    t.ok(False, "a peer could not start", str(e))


# ----------------------------------------------------------------------
# hostile spamd and clamd: a server that reads the request and answers junk

def hostile_server(answer, until=None):
    """Reads the request (to EOF, or until it ends with `until`), answers, closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(10)
        request = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                request += data
                if until is not None and request.endswith(until):
                    break
        except OSError:
            pass
        conn.sendall(answer)
        conn.close()
        srv.close()
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


for answer, want in ((b"HTTP/1.0 200 OK\r\n\r\n", "not a spamd response: \"HTTP/1.0 200 OK\""),
                     (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 100\r\nSpam: True ; 1 / 5\r\n\r\nshort",
                      "connection closed after 5 of 100 body bytes"),
                     (b"SPAMD/1.1 0 EX_OK\r\n" + b"X: y\r\n" * 40, "more than 32 response headers"),
                     (b"SPAMD/1.1 0 EX_OK\r\n\r\n", "no Spam header in spamd's answer"),
                     (b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n",
                      "spamd answered 76 Bad header line: (Content-Length mismatch)")):
    port = hostile_server(answer)
    rc, lines = scan_drive("spamd", "127.0.0.1:%d" % port, ham, timeout=30)
    t.ok(rc == 0 and ("log: warning spamd 127.0.0.1:%d: %s" % (port, want)) in lines,
         "hostile spamd: %s" % want, "\n".join(lines))

for answer, want in ((b"x" * 2000, "reply longer than 1024 bytes"),
                     (b"stream: Evil\r\nX-Injected: yes FOUND\0", "virus name with a character that is not allowed (0x0d)"),
                     (b"stream: OK\0extra", "5 bytes after the reply"),
                     (b"", "connection closed without a reply")):
    port = hostile_server(answer, until=b"\0\0\0\0")    # the zero-length chunk ends the stream
    rc, lines = scan_drive("clamd", "127.0.0.1:%d" % port, ham, timeout=30)
    t.ok(rc == 0 and ("log: warning clamd 127.0.0.1:%d: %s" % (port, want)) in lines,
         "hostile clamd: %s" % want, "\n".join(lines))

for name, seconds in starts:
    t.diag("start: %s ready after %.2f s" % (name, seconds))
stop_all()
t.done()
