"""The stored message as a stream (ABI 1.1): streammod (t/modules/streammod.c)
reads a 50 MiB message at end of message with petrel_message_read() from timer
callbacks, and streams a new 50 MiB body with petrel_body_replace_*(). The smtpd
worker's peak RSS (VmHWM, reset through /proc/PID/clear_refs before each
message) stays far below the message size, and the messages reach a Maildir
intact (CRC-32 of what the module read and of what was delivered). A write the
disk refuses while a new body is written (faultfs: ENOSPC on the body's file)
fails the transaction with 451 even when the module ignores the error; handles
kept past end of message, or asked for before it, are logged no-ops."""
import os
import re
import zlib

from harness import Petrel, Tap, maildir_messages, wait_for, SANITIZED
from faultlib import Faults, QMGR
from modlib import module_dir, smtpd_worker_pids

t = Tap(timeout=600)
MIB = 1024 * 1024
SIZE = 50 * MIB
# The worker's peak RSS while it receives, reads, rewrites and commits a
# 50 MiB message: its buffers are 64 KiB each, so 16 MiB is room for the
# process itself and the event loop's input buffers (a sanitizer build's
# shadow memory and quarantine need more).
BOUND_KB = (48 if SANITIZED else 16) * 1024


def body_of(size):
    """size bytes of mixed-case lines, CRLF line ends, none starting with a dot."""
    line = b"The quick brown fox jumps over the lazy dog %08d and Petrel streams it.\r\n"
    out = []
    n = 0
    i = 0
    while n < size:
        piece = line % i
        out.append(piece)
        n += len(piece)
        i += 1
    return b"".join(out)


def status_kb(pids, field):
    """The largest value of field (VmRSS, VmHWM) among the smtpd workers:
    the one serving the test's connection."""
    out = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            out = max(out, int(re.search(field + r":\s+(\d+)", f.read()).group(1)))
    return out


def reset_peak(pids):
    for pid in pids:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")   # VmHWM starts again from VmRSS


def send(c, mode, body, rcpt="u@vmail.test"):
    head = b"From: s@example.org\r\nSubject: stream %s\r\nX-Stream: %s\r\n\r\n" % (mode.encode(), mode.encode())
    for line, want in (("MAIL FROM:<s@example.org>", 250), ("RCPT TO:<%s>" % rcpt, 250), ("DATA", 354)):
        r = c.cmd(line)
        if c.code != want:
            return r, head
    c.send(head)
    view = memoryview(body)
    for off in range(0, len(body), MIB):
        c.send(bytes(view[off:off + MIB]))
    c.send(b".\r\n")
    return c.read_reply(), head


def delivered_content(m):
    """The message as queued, from a Maildir file: without the Return-Path and
    Delivered-To lines delivery puts first, CRLF line ends again."""
    for prefix in (b"Return-Path: ", b"Delivered-To: "):
        if m.startswith(prefix):
            m = m[m.index(b"\n") + 1:]
    return m.replace(b"\n", b"\r\n")


mods = module_dir("streammod")
conf = {"modules": "streammod", "module_directory": mods, "message_size_limit": str(200 * MIB), "mailbox_size_limit": str(400 * MIB), "virtual_mailbox_limit": str(400 * MIB),
        "virtual_mailbox_domains": "vmail.test", "smtpd_reject_unlisted_recipient": "no",
        "queue_run_delay": "1s"}
with Petrel(t, main_cf=conf, extra_services=QMGR, workers=1, start=False) as p:
    mail = p.make_dir()
    conf = dict(p.settings)
    conf["virtual_mailbox_base"] = mail
    conf["virtual_mailbox_maps"] = "inline:{ {u@vmail.test = vmail.test/u/}, {v@vmail.test = vmail.test/v/} }"
    conf["maillog_file"] = p.log_path
    p.write_main_cf(conf)
    faults = Faults(p)
    faults.start()
    worker = smtpd_worker_pids(p)
    body = body_of(SIZE)
    body_crc = zlib.crc32(body)

    # 1. Reading the whole message, from a suspended end_of_message.
    c = p.connect(timeout=120)
    c.ehlo()
    rss_before = status_kb(worker, "VmRSS")
    reset_peak(worker)
    r, head = send(c, "read", body)
    peak = status_kb(worker, "VmHWM")
    t.like(r, r"^250 2\.0\.0 Ok: queued as ", "a 50 MiB message that streammod reads is accepted")
    qid = first_qid = r.split()[-1]
    m = p.wait_log(r"%s: streammod: read message=(\d+)/(\d+) crc=(\w+) body=(\d+)/(\d+) crc=(\w+)" % qid)
    t.ok(m is not None, "streammod read the message and the body from timer callbacks")
    got = m.groups() if m else ("0",) * 6
    t.is_(int(got[3]), len(body), "it read the whole body")
    t.is_(got[4], got[3], "as many bytes as petrel_message_size() said")
    t.is_(got[5], "%08x" % body_crc, "the body it read is the body sent (CRC-32)")
    t.is_(got[1], got[0], "the whole message: as many bytes as petrel_message_size() said")
    t.diag("read: worker VmRSS before %d KiB, peak during the message %d KiB (bound %d KiB, message %d KiB)"
           % (rss_before, peak, BOUND_KB, len(body) // 1024))
    t.ok(peak < BOUND_KB, "the worker's peak RSS stays under %d MiB for a 50 MiB message" % (BOUND_KB // 1024),
         "VmHWM %d KiB" % peak)
    msgs = wait_for(lambda: maildir_messages(os.path.join(mail, "vmail.test/u")), timeout=120)
    t.is_(len(msgs), 1, "the message is delivered")
    content = delivered_content(msgs[0]) if msgs else b""
    t.is_(len(content), int(got[0]), "the delivered message is as long as the one streammod read")
    t.is_("%08x" % zlib.crc32(content), got[2], "and is the same (CRC-32): the stream is the message as queued")
    t.ok(content.endswith(head + body), "the delivered message ends with the headers and the body as sent")
    del msgs, content

    # 2. Replacing the body in 64 KiB pieces: a-z become A-Z.
    reset_peak(worker)
    r, head = send(c, "upper", body, rcpt="v@vmail.test")
    peak = status_kb(worker, "VmHWM")
    t.like(r, r"^250 2\.0\.0 Ok: queued as ", "a 50 MiB message whose body streammod replaces is accepted")
    qid = r.split()[-1]
    t.ok(p.wait_log(r"%s: streammod: replaced the body: %d bytes" % (qid, len(body))) is not None,
         "streammod wrote the whole new body")
    m = p.wait_log(r"%s: streammod: reads back: body=(\d+)/(\d+) crc=(\w+)" % qid)
    t.ok(m is not None and m.group(1) == m.group(2) == str(len(body)) and m.group(3) == "%08x" % zlib.crc32(body.upper()),
         "a body reader opened after the commit reads the new body", m and m.group(0))
    t.ok(p.wait_log(r"%s: edited by modules in place \(1 change\)" % qid) is not None,
         "a new body alone is applied in place: the message keeps its queue ID")
    t.diag("replace: worker peak RSS during the message %d KiB" % peak)
    t.ok(peak < BOUND_KB, "the worker's peak RSS stays under %d MiB while the body is replaced"
         % (BOUND_KB // 1024), "VmHWM %d KiB" % peak)
    msgs = wait_for(lambda: maildir_messages(os.path.join(mail, "vmail.test/v")), timeout=120)
    t.is_(len(msgs), 1, "the message with the new body is delivered")
    content = delivered_content(msgs[0]) if msgs else b""
    upper = body.upper()
    t.ok(content.endswith(head + upper), "its headers are kept and its body is the new one")
    t.is_("%08x" % zlib.crc32(content[len(content) - len(upper):]), "%08x" % zlib.crc32(upper),
          "the delivered body is the one written (CRC-32)")
    del msgs, content, upper
    # their queue files go after the mailbox files: 3. counts what is queued
    for done in (first_qid, qid):
        p.wait_log(r"%s: removed" % done, timeout=60)

    # 3. The disk refuses the new body (ENOSPC on its file in incoming/).
    small = body_of(MIB)
    faults.set("op=write path=/incoming/# errno=ENOSPC")
    r, _ = send(c, "upper", small)
    t.is_(r, "451 4.3.0 streammod: cannot write the new body", "a module that sees the write fail answers 451")
    r, _ = send(c, "careless", small)
    t.is_(r, "451 4.3.0 Error: queue file write error",
          "a module that ignores the failed write (aborts, answers CONTINUE): the core answers 451 all the same")
    t.ok(p.wait_log(r"streammod: cannot write the new body: No space left on device") is not None,
         "the failed write is logged")
    # (faults.fired() wants 4 words a line: an unnamed file's path, "/.../incoming/#N (deleted)", has 5.)
    with open(faults.log) as f:
        fired = [line for line in f if " write " in line and "/incoming/#" in line and line.endswith("ENOSPC\n")]
    t.ok(len(fired) >= 2, "the faults fired on the body's unnamed file in incoming/")
    faults.clear()
    t.is_(p.queue_files(), [], "nothing was queued: no truncated body")
    r, _ = send(c, "upper", small, rcpt="v@vmail.test")
    t.like(r, r"^250 2\.0\.0 Ok: queued as ", "with the disk back, the same message is accepted")

    # 4. Handles outside their time.
    r, _ = send(c, "early", small)
    t.like(r, r"^250 ", "a message whose end_of_headers asks for the message")
    t.ok(p.wait_log(r"streammod: open in end_of_headers: refused") is not None,
         "petrel_message_open() before end_of_message gives NULL")
    t.ok(p.wait_log(r"module streammod: petrel_message_open outside end_of_message: ignored") is not None,
         "and logs why")
    r, _ = send(c, "keep", small)
    t.like(r, r"^250 ", "a message whose handle streammod keeps")
    t.ok(p.wait_log(r"streammod: kept a handle; read now: 16") is not None, "the handle reads during end_of_message")
    c.cmd("MAIL FROM:<s@example.org>")
    t.ok(p.wait_log(r"streammod: read through the kept handle: -1, size -1") is not None,
         "after end of message the kept handle reads -1")
    t.ok(p.wait_log(r"module streammod: petrel_message_read: the message handle is no longer valid") is not None,
         "and the stale handle is logged")
    c.cmd("QUIT")
    c.close()
t.done()
