"""SMTP protocol features: EHLO keywords, BDAT (CHUNKING), DSN parameters
stored in the queue file, the Received header, and real clients (Python's
smtplib, swaks) talking to petreld."""
import os
import re
import smtplib
import struct
import subprocess

from harness import Petrel, Tap

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as ([0-9A-Z]+)$"


def queue_file(p, qid):
    for path in p.queue_files():
        if os.path.basename(path) == qid:
            with open(path, "rb") as f:
                return f.read()
    return None


def parse_queue_file(data):
    """Envelope records and content, per doc/queue-format.md."""
    assert data[:8] == b"PETRELQ1", data[:16]
    pos, records = 16, []
    while True:
        kind = data[pos:pos + 1].decode()
        (length,) = struct.unpack(">I", data[pos + 1:pos + 5])
        payload = data[pos + 5:pos + 5 + length]
        pos += 5 + length
        if kind == "M":
            break
        records.append((kind, payload))
    content = data[pos:len(data) - 41]
    return records, content


def rcpt_records(records):
    out = []
    for kind, payload in records:
        if kind != "R":
            continue
        notify = payload[5]
        (olen,) = struct.unpack(">I", payload[6:10])
        if olen == 0xFFFFFFFF:
            orcpt, addr = None, payload[10:]
        else:
            orcpt, addr = payload[10:10 + olen], payload[10 + olen:]
        out.append((addr.decode(), notify, orcpt.decode() if orcpt is not None else None))
    return out


def record(records, kind):
    for k, payload in records:
        if k == kind:
            return payload
    return None


with Petrel(t) as p:
    # --- EHLO ---
    c = p.connect()
    c.ehlo("client.example.org")
    kw = [l[4:] for l in c.lines]
    t.is_(c.lines[0], "250-mx.petrel.test", "EHLO first line is our name")
    for k in ("PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN", "VRFY"):
        t.ok(k in kw, "EHLO offers %s" % k, kw)
    t.ok("STARTTLS" not in kw, "no STARTTLS without TLS configured", kw)
    t.ok(not any(k.startswith("AUTH") for k in kw), "no AUTH without SASL", kw)
    t.is_(c.lines[-1][:4], "250 ", "the last EHLO line has a space")
    t.is_(c.cmd("HELO other.example.org"), "250 mx.petrel.test", "HELO: 250 with our name")
    c.close()

    # --- BDAT ---
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")
    c.cmd("RCPT TO:<user@petrel.test>")
    body = b"Subject: one chunk\r\n\r\nHello \xc3\xa9\r\n.leading dot stays\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(body) + body)
    r = c.read_reply()
    m = re.match(OK_RE, r)
    t.ok(m is not None, "BDAT n LAST: one chunk is queued", r)
    records, content = parse_queue_file(queue_file(p, m.group(1)))
    t.ok(content.endswith(body), "the chunk is stored byte-identical (no dot-unstuffing in BDAT)", content[-80:])
    t.is_(struct.unpack(">I", record(records, "F")[:4])[0] & 1, 1, "BODY=8BITMIME is recorded in the flags")

    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<user@petrel.test>")
    parts = [b"Subject: three chunks\r\n", b"\r\nfirst part, ", b"second part\r\n"]
    c.send(b"BDAT %d\r\n" % len(parts[0]) + parts[0])
    t.is_(c.read_reply(), "250 2.0.0 Ok: %d bytes" % len(parts[0]), "BDAT chunk 1: 250 with its size")
    c.send(b"BDAT %d\r\n" % len(parts[1]) + parts[1])
    t.is_(c.read_reply(), "250 2.0.0 Ok: %d bytes" % len(parts[1]), "BDAT chunk 2")
    c.send(b"BDAT %d LAST\r\n" % len(parts[2]) + parts[2])
    r = c.read_reply()
    m = re.match(OK_RE, r)
    t.ok(m is not None, "BDAT chunk 3 LAST: queued", r)
    records, content = parse_queue_file(queue_file(p, m.group(1)))
    t.ok(content.endswith(b"".join(parts)), "the chunks are joined in order", content[-80:])

    # The line that ends the headers split across chunks: a CR in one chunk,
    # its LF in the next; a non-header line cut in two. Stored as sent (the
    # part in the earlier chunk was once read from before the chunk's start:
    # a garbage byte in the file, a sanitizer report).
    for desc, parts in (("the empty line's CR and LF in two chunks", [b"Subject: split\r\n\r", b"\nbody\r\n"]),
                        ("a body line with no empty line before it, in two chunks",
                         [b"Subject: split\r\nno header, a body li", b"ne\r\nmore\r\n"]),
                        ("the same line's CR and LF in two chunks", [b"Subject: split\r\nno header\r", b"\nmore\r\n"])):
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<user@petrel.test>")
        c.send(b"BDAT %d\r\n" % len(parts[0]) + parts[0])
        c.read_reply()
        c.send(b"BDAT %d LAST\r\n" % len(parts[1]) + parts[1])
        r = c.read_reply()
        m = re.match(OK_RE, r)
        t.ok(m is not None, "BDAT, %s: queued" % desc, r)
        content = parse_queue_file(queue_file(p, m.group(1)))[1] if m else b""
        t.ok(content.endswith(b"".join(parts)), "BDAT, %s: stored as sent" % desc, content[-80:])

    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<user@petrel.test>")
    chunk = b"Subject: then zero\r\n\r\nbody\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    c.read_reply()
    t.like(c.cmd("BDAT 0 LAST"), OK_RE, "BDAT 0 LAST ends a message")
    t.is_(c.cmd("DATA"), "503 5.5.1 Error: need MAIL command", "DATA after the BDAT transaction ended: 503")

    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<user@petrel.test>")
    c.send(b"BDAT 5\r\nabcde")
    c.read_reply()
    t.is_(c.cmd("DATA"), "503 5.5.1 Error: DATA after BDAT", "DATA in the middle of a BDAT transaction: 503 5.5.1")
    t.is_(c.cmd("RSET"), "250 2.0.0 Ok", "RSET abandons the BDAT transaction")

    c.cmd("MAIL FROM:<a@example.org>")
    c.send(b"BDAT 4 LAST\r\nabcd")
    t.is_(c.read_reply(), "554 5.5.1 Error: no valid recipients", "BDAT without RCPT: 554 5.5.1")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "the chunk was read and discarded: in sync")
    c.cmd("RSET")
    c.send(b"BDAT 8 LAST\r\nQUIT\r\n\r\n")
    t.is_(c.read_reply(), "503 5.5.1 Error: need MAIL command", "BDAT without MAIL: 503 5.5.1")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "a chunk that looks like QUIT is discarded, not executed")
    c.close()

    # BDAT with bare CR and LF inside: normalised as DATA is.
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<user@petrel.test>")
    raw = b"Subject: stray\r\n\r\na\rb\nc\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(raw) + raw)
    r = c.read_reply()
    m = re.match(OK_RE, r)
    t.ok(m is not None, "BDAT with a bare CR and a bare LF is accepted", r)
    _, content = parse_queue_file(queue_file(p, m.group(1)))
    t.ok(content.endswith(b"a b\r\nc\r\n"), "bare CR becomes a space, bare LF becomes CRLF", content[-20:])
    c.close()

    # --- DSN parameters are parsed, validated and stored ---
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<a@example.org> RET=HDRS ENVID=env+2Bid+3D42"), "250 2.1.0 Ok", "MAIL with RET and ENVID")
    t.is_(c.cmd("RCPT TO:<user@petrel.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;orig+2Buser@example.org"),
          "250 2.1.5 Ok", "RCPT with NOTIFY and ORCPT")
    t.is_(c.cmd("RCPT TO:<user2@petrel.test> NOTIFY=NEVER"), "250 2.1.5 Ok", "RCPT with NOTIFY=NEVER")
    t.is_(c.cmd("RCPT TO:<user3@petrel.test>"), "250 2.1.5 Ok", "RCPT without DSN parameters")
    c.cmd("DATA")
    c.send(b"Subject: dsn\r\n\r\ndsn\r\n.\r\n")
    r = c.read_reply()
    m = re.match(OK_RE, r)
    t.ok(m is not None, "the DSN message is queued", r)
    data = queue_file(p, m.group(1))
    records, content = parse_queue_file(data)
    t.is_(record(records, "E"), b"env+id=42", "ENVID stored xtext-decoded")
    t.is_(record(records, "F")[4], 2, "RET=HDRS stored")
    t.is_(rcpt_records(records), [("user@petrel.test", 1 | 4, "rfc822;orig+user@example.org"),
                                  ("user2@petrel.test", 8, None), ("user3@petrel.test", 0, None)],
          "recipients stored in order with NOTIFY bits and decoded ORCPT")
    t.is_(record(records, "S"), b"a@example.org", "the sender is stored")
    t.is_(record(records, "h"), b"client.example.org", "the HELO name is stored")
    t.is_(record(records, "a"), b"127.0.0.1", "the client address is stored")
    t.is_(record(records, "P"), b"ESMTP", "the protocol is stored")
    t.like(content.split(b"\r\n")[0].decode(), r"^Received: from client\.example\.org \(unknown \[127\.0\.0\.1\]\)$",
           "the content starts with our Received header")
    t.like(content.decode(), r"\tby mx\.petrel\.test \(Petrel\) with ESMTP id %s;\r\n\t\w{3}, " % m.group(1),
           "Received: by mx.petrel.test (Petrel) with ESMTP id <queue id> (no 'for' with 3 recipients)")
    c.close()

    # 21Nails: CR/LF smuggled through xtext never reaches the queue file.
    c = p.connect()
    c.ehlo()
    t.like(c.cmd("MAIL FROM:<a@example.org> ENVID=x+0D+0AR+00+00+00+09evil"), r"^501 5\.5\.4 ",
           "ENVID decoding to CR LF / NUL: 501 5.5.4")
    c.cmd("MAIL FROM:<a@example.org>")
    t.like(c.cmd("RCPT TO:<user@petrel.test> ORCPT=rfc822;x+0D+0Aevil@example.org"), r"^501 5\.5\.4 ",
           "ORCPT decoding to CR LF: 501 5.5.4")
    t.like(c.cmd("MAIL FROM:<a@example.org> RET=FULL RET=HDRS"), r"^50[13] 5\.5\.[14] ", "nested MAIL refused")
    c.cmd("RSET")
    t.like(c.cmd("MAIL FROM:<a@example.org> RET=FULL RET=HDRS"), r"^501 5\.5\.4 ", "RET given twice: 501 5.5.4")
    c.close()
    c = p.connect()
    c.cmd("HELO client.example.org")
    t.like(c.cmd("MAIL FROM:<a@example.org> RET=FULL"), r"^5\d\d 5\.\d\.\d ", "DSN parameters in a HELO session are refused")
    c.close()

    # --- Received header with one recipient ---
    c = p.connect()
    r = c.send_message("a@example.org", ["user@petrel.test"], "Subject: rcvd\r\n\r\nx\r\n")
    qid = re.match(OK_RE, r).group(1)
    _, content = parse_queue_file(queue_file(p, qid))
    lines = content.decode().split("\r\n")
    t.like(lines[0], r"^Received: from client\.example\.org \(unknown \[127\.0\.0\.1\]\)$", "Received line 1")
    t.is_(lines[1], "\tby mx.petrel.test (Petrel) with ESMTP id %s" % qid, "Received line 2: by ... with ESMTP id")
    t.like(lines[2], r"^\tfor <user@petrel\.test>; \w{3}, \d{2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)$",
           "Received line 3: for <rcpt>; RFC 5322 date")
    t.is_(lines[3], "Subject: rcvd", "the message follows the Received header")
    t.ok(p.wait_log(r"smtpd\[\d+\]: %s: client=unknown\[127\.0\.0\.1\]" % qid) is not None, "log: ID: client=")
    t.ok(p.wait_log(r"%s: from=<a@example\.org>, size=\d+, nrcpt=1 \(queued\)" % qid) is not None,
         "log: ID: from=<...>, size=, nrcpt=")
    c.close()

    # Long lines in DATA are accepted and stored byte-identical; dot-stuffing is undone.
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd("RCPT TO:<user@petrel.test>")
    c.cmd("DATA")
    longline = b"L" * 100000
    c.send(b"Subject: long\r\n\r\n" + longline + b"\r\n..dot\r\n.\r\n")
    r = c.read_reply()
    m = re.match(OK_RE, r)
    t.ok(m is not None, "a 100000-byte line in DATA is accepted", r)
    _, content = parse_queue_file(queue_file(p, m.group(1)))
    t.ok(content.endswith(b"\r\n\r\n" + longline + b"\r\n.dot\r\n"), "stored byte-identical, dot-unstuffed")
    c.close()

    # --- real clients ---
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="smtplib.example.org", timeout=10) as s:
        code, _ = s.ehlo()
        t.is_(code, 250, "smtplib: EHLO")
        t.ok(s.has_extn("pipelining") and s.has_extn("chunking") and s.has_extn("smtputf8"), "smtplib sees the extensions")
        refused = s.sendmail("a@example.org", ["user@petrel.test", "other@petrel.test"],
                             "Subject: smtplib\r\n\r\nsent by smtplib\r\n")
        t.is_(refused, {}, "smtplib: sendmail accepted both recipients")
        refused = s.sendmail("jörg@example.org", ["jürgen@petrel.test"], "Subject: utf8\r\n\r\nhällo\r\n".encode(),
                             mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        t.is_(refused, {}, "smtplib: an SMTPUTF8 message is accepted")
        try:
            s.sendmail("a@example.org", ["bad address@petrel.test"], "x")
            t.ok(False, "smtplib: a bad recipient is refused")
        except smtplib.SMTPRecipientsRefused as e:
            code, msg = list(e.recipients.values())[0]
            t.is_((code, msg.decode()[:5]), (501, "5.1.3"), "smtplib: a bad recipient is refused with 501 5.1.3")
    t.ok(p.wait_log(r"from=<j\xf6rg@example\.org>|from=<jörg@example\.org>") is not None, "the UTF-8 sender is logged")

    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(p.port), "--from", "swaks@example.org",
                        "--to", "user@petrel.test", "--helo", "swaks.example.org", "--header", "Subject: swaks",
                        "--body", "sent by swaks", "--pipeline", "--timeout", "10"],
                       capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "swaks --pipeline delivers a message", r.stdout[-1500:] + r.stderr[-500:])
    m = re.search(r"<-  250 2\.0\.0 Ok: queued as ([0-9A-Z]+)", r.stdout)
    t.ok(m is not None and queue_file(p, m.group(1)) is not None, "swaks' message is in the queue", r.stdout[-800:])
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(p.port), "--from", "swaks@example.org",
                        "--to", "user@petrel.test", "--protocol", "ESMTP", "--timeout", "10",
                        "--quit-after", "RCPT"],
                       capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0 and "<-  250 2.1.5 Ok" in r.stdout, "swaks: RCPT accepted", r.stdout[-800:])

t.done()
