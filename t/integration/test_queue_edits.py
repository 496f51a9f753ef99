"""Edits without a second copy (queue format version 2, doc/queue-format.md):
testmod edits the headers and the envelope of a 50 MiB message at end of
message. The queue file is the message once plus the edit (its size, and the
bytes the smtpd worker wrote by /proc/PID/io), under the queue ID of the 250
reply; petrelctl queue show and the deliveries (a Maildir for the original
recipient and for the one the module added) carry the edited headers
exactly and the body intact. An unedited message is still written as
version 1 and delivered."""
import os
import re
import zlib

from harness import Petrel, Tap, maildir_messages, queue_file_content, wait_for
from faultlib import QMGR
from modlib import module_dir, smtpd_worker_pids

t = Tap(timeout=600)
MIB = 1024 * 1024
SIZE = 50 * MIB


def body_of(size):
    line = b"Petrel keeps one copy of this line %08d, whatever the modules edit.\r\n"
    out, n, i = [], 0, 0
    while n < size:
        piece = line % i
        out.append(piece)
        n += len(piece)
        i += 1
    return b"".join(out)


def io_wchar(pids):
    """Bytes the workers passed to write(2) and friends so far."""
    total = 0
    for pid in pids:
        with open("/proc/%d/io" % pid) as f:
            total += int(re.search(r"wchar:\s+(\d+)", f.read()).group(1))
    return total


def send(c, head, body, rcpt):
    for line in ("MAIL FROM:<s@example.org>", "RCPT TO:<%s>" % rcpt, "DATA"):
        c.cmd(line)
    c.send(head)
    view = memoryview(body)
    for off in range(0, len(body), MIB):
        c.send(bytes(view[off:off + MIB]))
    c.send(b".\r\n")
    return c.read_reply()


def delivered(m):
    """A Maildir message as queued: without Return-Path and Delivered-To, CRLF again."""
    for prefix in (b"Return-Path: ", b"Delivered-To: "):
        if m.startswith(prefix):
            m = m[m.index(b"\n") + 1:]
    return m.replace(b"\n", b"\r\n")


def after_received(content):
    """The content after our Received header (its continuation lines included)."""
    lines = content.split(b"\r\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


conf = {"modules": "testmod", "module_directory": module_dir("testmod"),
        "message_size_limit": str(200 * MIB), "mailbox_size_limit": str(400 * MIB), "virtual_mailbox_limit": str(400 * MIB),
        "virtual_mailbox_domains": "vmail.test", "smtpd_reject_unlisted_recipient": "no",
        "queue_run_delay": "1s"}
with Petrel(t, main_cf=conf, extra_services=QMGR, workers=1, start=False) as p:
    mail = p.make_dir()
    conf = dict(p.settings)
    conf["virtual_mailbox_base"] = mail
    conf["virtual_mailbox_maps"] = "inline:{ {u@vmail.test = vmail.test/u/}, {v@vmail.test = vmail.test/v/} }"
    conf["maillog_file"] = p.log_path
    p.write_main_cf(conf)
    p.start()
    worker = smtpd_worker_pids(p)
    body = body_of(SIZE)
    head = (b"From: s@example.org\r\n"
            b"Subject: original\r\n"
            b"X-Remove-Me: gone\r\n"
            b"X-Testmod-Change: Subject\r\n"
            b"X-Testmod-Delete: X-Remove-Me\r\n"
            b"X-Testmod-Add: X-Added: by testmod\r\n"
            b"X-Testmod-Add-Rcpt: v@vmail.test\r\n"
            b"X-Testmod-Quarantine: look before delivery\r\n"
            b"\r\n")
    # What the module's edits make of the headers (after our Received header).
    want_head = (b"From: s@example.org\r\n"
                 b"Subject: changed by testmod\r\n"
                 b"X-Testmod-Change: Subject\r\n"
                 b"X-Testmod-Delete: X-Remove-Me\r\n"
                 b"X-Testmod-Add: X-Added: by testmod\r\n"
                 b"X-Testmod-Add-Rcpt: v@vmail.test\r\n"
                 b"X-Testmod-Quarantine: look before delivery\r\n"
                 b"X-Added: by testmod\r\n"
                 b"\r\n")

    c = p.connect(timeout=300)
    c.ehlo()
    written_before = io_wchar(worker)
    r = send(c, head, body, "u@vmail.test")
    written = io_wchar(worker) - written_before
    t.like(r, r"^250 2\.0\.0 Ok: queued as ", "a 50 MiB message whose headers and envelope testmod edits is accepted")
    qid = r.split()[-1] if r.startswith("250") else "none"
    t.ok(p.wait_log(r"%s: edited by modules \(\d+ changes\)" % qid) is not None, "the edit is logged under its ID")
    held = wait_for(lambda: [f for f in p.queue_files("hold") if os.path.basename(f) == qid], timeout=60)
    t.is_(len(held or []), 1, "the message is held (quarantine) under the queue ID of the 250 reply")
    path = held[0] if held else None
    size = os.path.getsize(path) if path else 0
    version = b""
    if path:
        with open(path, "rb") as f:
            version = f.read(9)[8:9]
    t.is_(version, b"\x02", "the queue file is format version 2")
    message = len(head) + len(body)
    t.diag("queue file %d bytes for a %d-byte message; the worker wrote %d bytes" % (size, message, written))
    t.ok(message < size < message + 8192,
         "the file holds the message once plus the edit: %d bytes for a %d-byte message (a copy would be %d more)"
         % (size, message, message))
    t.ok(message < written < message + 2 * MIB,
         "the worker wrote the message once: %d bytes by /proc/PID/io (a copy would double it)" % written)
    content = queue_file_content(path) if path else b""
    t.ok(content.startswith(b"Received: from ") and ("id %s" % qid).encode() in content[:400],
         "the content starts with our Received header, naming the queue ID")
    t.is_(after_received(content)[:len(want_head)], want_head, "the content map gives the edited headers exactly")
    t.is_(zlib.crc32(after_received(content)[len(want_head):]), zlib.crc32(body), "then the body as sent (CRC-32)")
    shown = p.petrelctl("queue", "show", qid, timeout=120)
    m = re.search(r"\*\*\* MESSAGE CONTENTS [^\n]*\*\*\*\n(.*)\*\*\* MESSAGE FILE END", shown.stdout, re.S)
    t.ok(shown.returncode == 0 and m is not None and m.group(1) == content.decode().replace("\r\n", "\n"),
         "petrelctl queue show prints the edited message exactly", shown.stderr[-300:])
    del shown, m

    rel = p.petrelctl("queue", "release", qid)
    t.ok(rel.returncode == 0, "released", rel.stderr)
    for who in ("u", "v"):
        msgs = wait_for(lambda: maildir_messages(os.path.join(mail, "vmail.test", who)), timeout=240)
        t.is_(len(msgs or []), 1, "delivered to %s@vmail.test (%s)" % (who, "the original recipient" if who == "u"
                                                                       else "added by the module"))
        got = delivered(msgs[0]) if msgs else b""
        t.ok(got == content, "the delivery to %s carries the queued message exactly (%d bytes, CRC %08x vs %08x)"
             % (who, len(got), zlib.crc32(got), zlib.crc32(content)))
        del msgs, got
    del content

    # A new body together with a header edit: the new body is appended after
    # the content as received, the old one is left unread.
    c.cmd("RSET")
    both = (b"Subject: both\r\nX-Testmod-Add: X-Also: added\r\nX-Testmod-Body: the new body\r\n\r\n"
            b"the old body, never delivered\r\n")
    for line in ("MAIL FROM:<s@example.org>", "RCPT TO:<u@vmail.test>", "DATA"):
        c.cmd(line)
    c.send(both + b".\r\n")
    r = c.read_reply()
    t.like(r, r"^250 ", "a message with a new body and a new header is accepted")
    msgs = wait_for(lambda: [m for m in maildir_messages(os.path.join(mail, "vmail.test", "u"))
                             if b"Subject: both" in m], timeout=60)
    got = after_received(delivered(msgs[0])) if msgs else b""
    t.is_(got, b"Subject: both\r\nX-Testmod-Add: X-Also: added\r\nX-Testmod-Body: the new body\r\n"
               b"X-Also: added\r\n\r\nthe new body\r\n",
          "delivered with the added header and the new body exactly")
    t.ok(p.wait_log(r"%s: edited by modules \(2 changes\)" % r.split()[-1]) is not None, "two changes logged")

    # An unedited message: still version 1, and delivered.
    c.cmd("RSET")
    small = b"Subject: plain\r\n\r\nno edits here\r\n"
    for line in ("MAIL FROM:<s@example.org>", "RCPT TO:<u@vmail.test>", "DATA"):
        c.cmd(line)
    c.send(small + b".\r\n")
    r = c.read_reply()
    t.like(r, r"^250 ", "an unedited message is accepted")
    msgs = wait_for(lambda: [m for m in maildir_messages(os.path.join(mail, "vmail.test", "u"))
                             if b"no edits here" in m], timeout=60)
    t.ok(msgs and delivered(msgs[0]).endswith(small), "and delivered from a version 1 file")
    t.ok(p.wait_log(r"%s: edited by" % r.split()[-1], timeout=1) is None, "with no edit")
    c.close()

t.done()
