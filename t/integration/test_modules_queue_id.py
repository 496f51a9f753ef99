"""Edits at end of message keep the queue ID, and the message can be read
after end of message.

1. Header and envelope edits (a real libmilter filter's ADDHEADER,
   CHGHEADER, CHGFROM, ADDRCPT, DELRCPT; a plugin's petrel_header_add,
   petrel_header_change, petrel_sender_change) make the core write the queue
   file again before its commit, under the same queue ID: the ID of the
   "250 2.0.0 Ok: queued as ID" reply is the one the milter was given as {i},
   the one the plugin logged at end of message, the one in the delivered
   message's Received header, and the only one in the log.
2. The queued hook (petrel_message_open) and the delivery hook
   (petrel_delivery_message_open) read the message as it was queued: the same
   bytes (size, CRC-32) as the delivered message's content, body included;
   handles they keep go stale when the hook returns (a logged -1, no crash),
   and a delivery result other than the hook's own is refused.
3. A plugin whose descriptor says ABI 1.0 and that calls 1.1 streaming
   functions gets NULL / -1 and a clear error naming the function and the
   ABI; its 1.0 restriction keeps working. A 1.1 plugin of the restriction
   layout before max_args streams normally and its restriction is read with
   its own stride."""
import os
import re
import shutil
import zlib

from harness import Petrel, Smtp, Tap, maildir_messages, queue_id, wait_for
from modlib import module_dir
from peers import TestFilter

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
QID = r"[0-9A-Z]{19}"
QUEUED_QID = r"^250 2\.0\.0 Ok: queued as (%s)$" % QID   # the reply names an ID of that form


def with_milter(d):
    """d (a module directory) with the bundled milter module copied in."""
    from harness import TOP_BUILDDIR
    dst = os.path.join(d, "milter.so")
    shutil.copyfile(os.path.join(TOP_BUILDDIR, "modules", "milter", ".libs", "milter.so"), dst)
    os.chmod(dst, 0o644)
    return d


def start(conf):
    p = Petrel(t, main_cf=conf, extra_services=QMGR, start=False, workers=1)   # one process: kept handles
    mail = p.make_dir()
    c = dict(p.settings)
    c.update({"virtual_mailbox_domains": "vmail.test", "virtual_mailbox_base": mail,
              "virtual_mailbox_maps": "inline:{ {u@vmail.test = vmail.test/u/}, {added@vmail.test = vmail.test/a/} }",
              "smtpd_reject_unlisted_recipient": "no", "maillog_file": p.log_path})
    p.write_main_cf(c)
    p.start()
    p.mail = mail
    return p


def send(p, body, sender="sender@example.org", rcpts=("u@vmail.test",)):
    c = Smtp(p.port)
    c.ehlo()
    c.cmd("MAIL FROM:<%s>" % sender)
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r)
    c.cmd("DATA")
    c.send(body.encode())
    c.send(b"\r\n.\r\n")
    reply = c.read_reply()
    c.cmd("QUIT")
    c.close()
    return reply


def delivered(p, tag, box="u"):
    found = wait_for(lambda: [m for m in maildir_messages(os.path.join(p.mail, "vmail.test", box))
                              if tag.encode() in m], timeout=60)
    return found[0] if found else None


def content_of(delivered_message):
    """The queued content in a delivered message: from our Received header on, CRLF line ends."""
    at = delivered_message.find(b"Received: from ")
    return delivered_message[at:].replace(b"\n", b"\r\n") if at >= 0 else b""


def ids_in_log(p):
    return set(re.findall(r"\b(%s): " % QID, p.log()))


# --- 1. a real libmilter filter's header and envelope edits ------------------------
with TestFilter() as f:
    with start({"modules": "milter", "module_directory": with_milter(module_dir()), "smtpd_milters": f.endpoint,
                "milter_macro_daemon_name": "petrel"}) as p:
        r = send(p, "Subject: do: addheader chgheader chgfrom addrcpt delrcpt\r\nFrom: a@example.org\r\n\r\n"
                 "milter body\r\n", rcpts=("u@vmail.test", "rcpt@example.org"))
        qid = queue_id(r, QUEUED_QID)
        t.ok(qid is not None, "a message the milter edits (headers and envelope) is accepted", r)
        got = delivered(p, "milter body")
        t.ok(got is not None and b"X-Test-Added: added by the test filter" in got
             and b"Subject: changed subject" in got, "delivered with the milter's header edits", got and got[:600])
        t.ok(got is not None and b"Return-Path: <new-sender@example.net>" in got,
             "and its new envelope sender", got and got[:300])
        t.ok(got is not None and re.search(rb"\bid " + qid.encode() + rb"\b", got[:800]) is not None,
             "the delivered Received header names the ID of the 250 reply", got and got[:600])
        t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, .*status=sent" % qid) is not None,
             "the queue manager delivers it under that ID")
        t.ok(p.wait_log(r"%s: edited by modules \(\d+ changes\)" % qid) is not None,
             "the edit is logged under that ID")
        t.ok(p.wait_log(r"%s: client=" % qid) is not None, "as is the first line of the transaction")
        t.is_(sorted(ids_in_log(p)), [qid], "no other queue ID appears in the log")
        macros = [ln for ln in f.log() if re.search(r"macro \S+ i=", ln)]
        t.ok(macros and all(ln.endswith("i=" + qid) for ln in macros),
             "the milter was given that ID as {i}", macros)

# --- 1 and 2. a plugin's edits; the message read in the queued and delivery hooks --------
mods = module_dir("archivemod")
with start({"modules": "archivemod", "module_directory": mods}) as p:
    body = "Subject: original\r\nX-Archive-Edit: yes\r\n\r\n" + "".join(
        "archive line %05d with some text to make the body longer than one buffer\r\n" % i for i in range(2000))
    r = send(p, body)
    qid = queue_id(r, QUEUED_QID)
    t.ok(qid is not None, "a message the plugin edits is accepted", r)
    t.ok(p.wait_log(r"%s: archivemod: end of message: queue id %s" % (qid, qid)) is not None,
         "the plugin saw at end of message the ID of the 250 reply")
    got = delivered(p, "archive line 01999")
    t.ok(got is not None and b"X-Archived: by archivemod" in got and b"Subject: edited by archivemod" in got,
         "delivered with the plugin's header edits")
    t.ok(got is not None and b"Return-Path: <archived-sender@example.net>" in got, "and its new sender")
    t.ok(got is not None and re.search(rb"\bid " + qid.encode() + rb"\b", got[:600]) is not None,
         "the delivered Received header names the ID of the 250 reply")
    t.ok(p.wait_log(r"%s: edited by modules \(3 changes\)" % qid) is not None, "the edit is logged under that ID")
    content = content_of(got or b"")
    body_part = content[content.find(b"\r\n\r\n") + 4:]
    m = p.wait_log(r"%s: archivemod: queued %s: whole (\d+) bytes crc (\w+), body (\d+) bytes crc (\w+)" % (qid, qid))
    t.ok(m is not None, "the queued hook read the message whole and its body alone")
    t.ok(m and int(m.group(1)) == len(content) and int(m.group(2), 16) == zlib.crc32(content),
         "the queued hook read the bytes that were delivered (edits applied)",
         m and (m.group(1), m.group(2), len(content), "%08x" % zlib.crc32(content)))
    t.ok(m and int(m.group(3)) == len(body_part) and int(m.group(4), 16) == zlib.crc32(body_part),
         "and the body alone from after the empty line")
    d = p.wait_log(r"archivemod: delivery %s to=<u@vmail\.test>: whole (\d+) bytes crc (\w+), body (\d+) bytes "
                   r"crc (\w+)" % qid)
    t.ok(d is not None, "the delivery hook read the message")
    t.ok(d and m and d.groups() == m.groups(), "the same bytes as the queued hook", d and d.groups())
    t.ok(p.wait_log(r"archivemod: another result: refused") is not None
         and p.wait_log(r"petrel_delivery_message_open outside its delivery hook, or for another delivery") is not None,
         "a delivery result that is not the hook's own is refused, logged")
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, .*status=sent" % qid) is not None, "delivered under that ID")
    t.is_(sorted(ids_in_log(p)), [qid], "no other queue ID appears in the log")

    # Handles kept past their hook: stale, a logged -1.
    r2 = send(p, "Subject: second\r\n\r\nsecond body\r\n")
    t.ok(queue_id(r2, QUEUED_QID) is not None, "a second message is accepted")
    t.ok(p.wait_log(r"archivemod: kept queued handle reads -1") is not None,
         "a handle kept from the queued hook is stale at the next MAIL (-1)",
         [ln for ln in p.log().splitlines() if "archivemod" in ln][-8:])
    t.ok(p.wait_log(r"archivemod: kept delivery handle reads -1") is not None,
         "a handle kept from the delivery hook is stale at the next delivery (-1)")
    t.ok(p.wait_log(r"module archivemod: petrel_message_read: stale") is not None
         or p.wait_log(r"archivemod.*petrel_message_read.*(stale|no longer)") is not None, "and logged")
    t.ok(delivered(p, "second body") is not None, "the second message is delivered")
    t.ok("panic" not in p.log() and "signal" not in p.log(), "nothing crashed")

# --- 3. old binaries that call streaming functions ----------------------------------
old = module_dir("oldstream", built_in="abi10")
with start({"modules": "oldstream", "module_directory": old,
            "smtpd_sender_restrictions": "check_oldstream"}) as p:
    c = Smtp(p.port)
    c.ehlo()
    c.cmd("MAIL FROM:<old-reject@example.org>")
    t.is_(c.cmd("RCPT TO:<u@vmail.test>"), "550 5.7.1 oldstream rejects this sender",
          "a 1.0 plugin's restriction works (1.0 layout)")
    c.close()
    r = send(p, "Subject: old\r\n\r\nold body\r\n")
    qid = queue_id(r, QUEUED_QID)
    t.ok(qid is not None, "a 1.0 plugin that calls 1.1 streaming functions does not stop the message", r)
    t.ok(p.wait_log(r"%s: oldstream: oldstream: open NULL, body writer NULL, read of a made-up handle -1" % qid)
         is not None, "its calls get NULL and -1")
    t.ok(p.wait_log(r"module oldstream: petrel_message_open is plugin ABI 1\.1, but the module was built for ABI "
                    r"1\.0: call refused \(rebuild it against the 1\.1 headers") is not None,
         "and a clear error names the function and both ABIs")
    t.ok(p.wait_log(r"module oldstream: petrel_body_replace_begin is plugin ABI 1\.1") is not None,
         "for the body writer too")
    t.ok(delivered(p, "old body") is not None, "the message is delivered unchanged")
    t.ok("panic" not in p.log(), "nothing crashed")

pre = module_dir("premaxmod")
with start({"modules": "premaxmod", "module_directory": pre,
            "smtpd_sender_restrictions": "check_premax bad-, permit"}) as p:
    c = Smtp(p.port)
    c.ehlo()
    c.cmd("MAIL FROM:<bad-sender@example.org>")
    t.is_(c.cmd("RCPT TO:<u@vmail.test>"), "550 5.7.1 premaxmod rejects this sender",
          "a 1.1 module of the layout before max_args: its restriction takes exactly its one word")
    c.close()
    r = send(p, "Subject: pre\r\n\r\n" + "x" * 1000 + "\r\n")
    qid = queue_id(r, QUEUED_QID)
    t.ok(qid is not None, "its message is accepted", r)
    t.ok(p.wait_log(r"%s: premaxmod: premax: read 1004 body bytes \(to the end\), new body committed" % qid)
         is not None, "it read the body through petrel_message_* and committed a new one",
         [ln for ln in p.log().splitlines() if "premax" in ln])
    got = delivered(p, "premax was here")
    t.ok(got is not None and b"premax was here (old body 1004 bytes)" in got and b"xxxx" not in got,
         "the streamed body is delivered")
t.done()
