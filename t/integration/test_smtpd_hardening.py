"""Regression tests for the SMTP server faults of issue 8: junk commands
(Postfix's smtpd_junk_command_limit), BDAT and DATA in one transaction, BDAT
through smtpd_data_restrictions and the modules' data hooks, the replies to
chunks after a refused one, the HELO name in Received: and the log, NUL bytes
in rewritten headers, and overlong AUTH response lines. Every hostile session
is followed by a check that the server still serves."""
import os
import re
import socket

from harness import Petrel, Smtp, Tap
from modlib import module_dir

t = Tap()
OK_RE = r"^250 2\.0\.0 Ok: queued as [0-9A-Z]+$"
MODS = module_dir("testmod")
SASL = {"modules": "testmod", "module_directory": MODS, "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "testmod", "smtpd_sasl_path": "private/auth"}


class section:
    """Runs one scenario; a session that breaks off (the fault under test)
    fails that scenario instead of ending the script."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, typ, val, tb):
        if typ is not None and issubclass(typ, (OSError, ValueError, IndexError)):
            t.ok(False, "%s: the session broke off" % self.name, repr(val))
            return True
        return False


def still_serves(p, what):
    c = p.connect()
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: after %s\r\n\r\nok\r\n" % what)
    t.like(r, OK_RE, "%s: a fresh connection still gets its message queued" % what)
    c.close()


def reply_or_hang(c, timeout=30):
    """The next reply, or 'NO REPLY' when the server says nothing (the client would hang)."""
    c.sock.settimeout(timeout)
    try:
        return c.read_reply()
    except (socket.timeout, TimeoutError):
        return "NO REPLY"
    except ConnectionError:
        return "CONNECTION CLOSED"


def incoming(p):
    return len(p.queue_files("incoming"))


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def tx(c, rcpt="user@petrel.test", sender="sender@example.org"):
    t_ok = c.cmd("MAIL FROM:<%s>" % sender) == "250 2.1.0 Ok"
    return t_ok and c.cmd("RCPT TO:<%s>" % rcpt) == "250 2.1.5 Ok"


# --- Finding 3: smtpd_junk_command_limit as Postfix counts it ------------
# HELO, EHLO, NOOP, VRFY, ETRN and RSET are junk: once more than the limit
# were sent, each one counts as an error, and the error limits end the flood.
with section("junk commands"), Petrel(t, main_cf={"smtpd_junk_command_limit": "3", "smtpd_hard_error_limit": "2"}) as p:
    c = p.connect()
    for i in range(6):
        c.ehlo("flood%d.example.org" % i)
        if c.code != 250:
            break
    t.is_(c.code, 250, "EHLO 1-6 are answered (4 within the junk limit of 3, then 2 errors)")
    t.is_(reply_or_hang(c, 30), "421 4.7.0 mx.petrel.test Error: too many errors",
          "an EHLO flood counts as junk: past smtpd_junk_command_limit each EHLO is an error, then 421 4.7.0")
    t.ok(c.closed(), "and the server disconnects")
    t.ok(p.wait_log(r"too many errors after EHLO from unknown\[127\.0\.0\.1\]") is not None, "logged as Postfix does")

    c = p.connect()
    replies = [c.cmd("HELO flood.example.org") for _ in range(6)]
    t.is_(replies, ["250 mx.petrel.test"] * 6, "HELO 1-6 answered")
    t.is_(reply_or_hang(c, 30), "421 4.7.0 mx.petrel.test Error: too many errors", "a HELO flood: 421 4.7.0")

    c = p.connect()
    c.ehlo()
    replies = [c.cmd(x) for x in ("RSET", "VRFY u@petrel.test", "NOOP", "NOOP", "RSET")]
    t.is_(replies, ["250 2.0.0 Ok", "252 2.0.0 Send some mail, I'll try my best", "250 2.0.0 Ok", "250 2.0.0 Ok",
                    "250 2.0.0 Ok"], "EHLO, RSET, VRFY, NOOP, NOOP, RSET: all answered")
    t.is_(reply_or_hang(c, 30), "421 4.7.0 mx.petrel.test Error: too many errors",
          "RSET, VRFY and NOOP count with EHLO toward the same limit")

    # HELP is no junk command in Postfix either: it is answered, never counted.
    c = p.connect()
    replies = set(c.cmd("HELP") for _ in range(30))
    t.is_(replies, {"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS"},
          "30 HELP are answered (HELP is not a junk command, as in Postfix)")
    t.is_(c.cmd("QUIT"), "221 2.0.0 Bye", "and the session goes on")

    # A message received forgives the junk (and errors), as in Postfix.
    c = p.connect()
    c.ehlo()
    t.is_([c.cmd("NOOP") for _ in range(3)], ["250 2.0.0 Ok"] * 3, "EHLO + 3 NOOP: at the junk limit")
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: junk reset\r\n\r\nx\r\n", ehlo=False)
    t.like(r, OK_RE, "a message is received")
    t.is_([c.cmd("NOOP") for _ in range(4)], ["250 2.0.0 Ok"] * 4, "4 more NOOPs after it: the count started again")
    t.is_(c.cmd("QUIT"), "221 2.0.0 Bye", "no error limit was reached")
    still_serves(p, "junk floods")

# --- Finding 4: BDAT 0, then DATA, leaked a queue file and a descriptor ---
with section("BDAT 0 + DATA"), Petrel(t, workers=1, main_cf={"smtpd_hard_error_limit": "100000",
                                   "smtpd_junk_command_limit": "100000"}) as p:
    c = p.connect()
    c.ehlo()
    worker = p.worker_pids()[0]
    fds, files = open_fds(worker), incoming(p)
    t.ok(tx(c), "a transaction")
    t.is_(c.cmd("BDAT 0"), "551 5.7.1 Null BDAT request", "BDAT 0 (not LAST): 551 5.7.1, as Postfix")
    t.is_(c.cmd("DATA"), "503 5.5.1 Error: DATA after BDAT", "then DATA: 503 5.5.1 Error: DATA after BDAT")
    t.is_(c.cmd("RSET"), "250 2.0.0 Ok", "RSET ends it")
    t.ok(p.wait_log(r"NOQUEUE: null BDAT request from unknown\[127\.0\.0\.1\]") is not None, "logged as Postfix does")
    tx(c)
    c.send(b"BDAT 3\r\nabc")
    t.is_(c.read_reply(), "250 2.0.0 Ok: 3 bytes", "a real chunk")
    t.is_(c.cmd("DATA"), "503 5.5.1 Error: DATA after BDAT", "DATA after a chunk: 503 5.5.1")
    t.is_(c.cmd("RCPT TO:<other@petrel.test>"), "503 5.5.1 Error: RCPT after BDAT",
          "RCPT after a chunk (the envelope is written): 503 5.5.1 Error: RCPT after BDAT")
    c.send(b"BDAT 3 LAST\r\ndef")
    t.like(c.read_reply(), OK_RE, "the message still ends with BDAT LAST")
    files += 1
    bad = []
    for i in range(200):
        c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<user@petrel.test>\r\nBDAT 0\r\n")
        got = [c.read_reply() for _ in range(3)] + [c.cmd("DATA"), c.cmd("RSET")]
        if got != ["250 2.1.0 Ok", "250 2.1.5 Ok", "551 5.7.1 Null BDAT request", "503 5.5.1 Error: DATA after BDAT",
                   "250 2.0.0 Ok"]:
            bad.append(got)
    t.is_(bad[:1], [], "200 rounds of BDAT 0 + DATA: each answered 551, 503")
    t.is_(incoming(p), files, "no queue file is left behind")
    grown = open_fds(worker) - fds
    t.ok(grown <= 2, "the worker holds no more descriptors than before", "%d more" % grown)
    c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<user@petrel.test>\r\nBDAT 0 LAST\r\n")
    t.is_([c.read_reply() for _ in range(2)], ["250 2.1.0 Ok", "250 2.1.5 Ok"], "a transaction")
    t.like(c.read_reply(), OK_RE, "BDAT 0 LAST is an empty message, queued")
    c.close()
    still_serves(p, "BDAT 0 + DATA")

# --- Finding 5: BDAT goes through smtpd_data_restrictions ------------------
with section("BDAT and smtpd_data_restrictions"), Petrel(t, main_cf={"smtpd_data_restrictions": "reject"}) as p:
    c = p.connect()
    c.ehlo()
    tx(c)
    data_reply = c.cmd("DATA")
    t.is_(data_reply, "554 5.7.1 <DATA>: Data command rejected: Access denied",
          "smtpd_data_restrictions = reject: DATA gets 554")
    c.send(b"BDAT 5 LAST\r\nhello")
    t.is_(reply_or_hang(c), data_reply, "BDAT n LAST gets the same 554 (it was 250 and delivered)")
    t.ok(p.wait_log(r"NOQUEUE: reject: BDAT from unknown\[127\.0\.0\.1\]: 554 5\.7\.1 <DATA>: Data command rejected")
         is not None, "the reject is logged for BDAT")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "the refused chunk was read: the session is in step")
    # --- Finding 19: later chunks of a refused transaction are answered ---
    t.is_(c.cmd("MAIL FROM:<sender@example.org>"), "250 2.1.0 Ok", "a new transaction after BDAT LAST")
    c.cmd("RCPT TO:<user@petrel.test>")
    c.send(b"BDAT 3\r\nabc")
    t.is_(reply_or_hang(c), data_reply, "first chunk: refused by the data restrictions")
    c.send(b"BDAT 4\r\ndefg")
    t.is_(reply_or_hang(c), "551 5.0.0 Discarded 4 bytes after earlier error",
          "a later chunk is read and answered 551 5.0.0 (it was read and never answered)")
    t.is_(c.cmd("MAIL FROM:<sender@example.org>"), "503 5.5.1 Error: MAIL after BDAT",
          "MAIL before BDAT LAST or RSET: 503 5.5.1 Error: MAIL after BDAT")
    c.send(b"BDAT 2 LAST\r\nhi")
    t.is_(reply_or_hang(c), "551 5.0.0 Discarded 2 bytes after earlier error", "and so is BDAT LAST: 551 5.0.0")
    t.is_(c.cmd("MAIL FROM:<sender@example.org>"), "250 2.1.0 Ok", "after BDAT LAST a new transaction starts")
    c.cmd("RCPT TO:<user@petrel.test>")
    c.send(b"BDAT 1\r\nx")
    reply_or_hang(c)
    t.is_(c.cmd("RSET"), "250 2.0.0 Ok", "RSET")
    c.send(b"BDAT 1 LAST\r\nx")
    t.is_(reply_or_hang(c), "503 5.5.1 Error: need MAIL command", "RSET ends the discarding too")
    t.is_(incoming(p), 0, "nothing was queued")
    c.close()

with section("refused chunks"), Petrel(t, main_cf={"message_size_limit": "1000", "smtpd_data_restrictions": "reject_unauth_pipelining"}) as p:
    c = p.connect()
    c.ehlo()
    tx(c)
    c.send(b"BDAT 10\r\n0123456789BDAT 10\r\n0123456789")
    t.is_([reply_or_hang(c), reply_or_hang(c)], ["250 2.0.0 Ok: 10 bytes"] * 2,
          "pipelined chunks are no unauthorized pipelining (reject_unauth_pipelining in smtpd_data_restrictions)")
    # Postfix (smtpd.c): a chunk that would pass message_size_limit is
    # refused before it is read, then read and dropped to stay in step...
    c.send(b"BDAT 1100\r\n" + b"y" * 1100)
    t.is_(reply_or_hang(c), "552 5.3.4 Chunk exceeds message size limit", "a chunk over message_size_limit: 552")
    c.send(b"BDAT 10\r\n0123456789BDAT 5 LAST\r\nabcde")
    t.is_([reply_or_hang(c), reply_or_hang(c)], ["551 5.0.0 Discarded 10 bytes after earlier error",
                                                "551 5.0.0 Discarded 5 bytes after earlier error"],
          "the chunks after it, pipelined: each answered 551 5.0.0")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "in step")
    c.cmd("MAIL FROM:<sender@example.org>")
    c.send(b"BDAT 4 LAST\r\nabcd")
    t.is_(reply_or_hang(c), "554 5.5.1 Error: no valid recipients", "a chunk without recipients: 554 5.5.1")
    c.close()
    # ...unless it is far past the limit (beyond about 1.5 times): then it
    # is not read at all and the session ends after the 552.
    c = p.connect()
    c.ehlo()
    tx(c)
    c.send(b"BDAT 2000\r\n")
    t.is_(reply_or_hang(c), "552 5.3.4 Chunk exceeds message size limit", "a chunk far over the limit: 552")
    t.ok(c.closed(wait=10), "and the session ends without reading it")
    still_serves(p, "refused chunks")

# --- Finding 5: BDAT runs the modules' data hook ---------------------------
with section("BDAT and the data hook"), Petrel(t, main_cf={"modules": "testmod", "module_directory": MODS}) as p:
    c = p.connect()
    c.ehlo()
    tx(c, rcpt="datareject@petrel.test")
    data_reply = c.cmd("DATA")
    t.is_(data_reply, "554 5.7.1 testmod rejects DATA", "the module's data hook refuses DATA")
    c.send(b"BDAT 5 LAST\r\nhello")
    t.is_(reply_or_hang(c), data_reply, "and BDAT the same way")
    t.is_(incoming(p), 0, "nothing was queued")
    c.close()
    still_serves(p, "data hook")

# --- Finding 9: the HELO name in Received: and the log ----------------------
with section("HELO name"), Petrel(t, main_cf={"mynetworks": "192.0.2.0/24"}) as p:
    c = p.connect()
    c.cmd("EHLO a\rb\x1bc\x07d<e>(f)\"g\\h;i@j  k")
    t.is_(c.code, 250, "an EHLO with control bytes and specials is answered")
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: helo\r\n\r\nx\r\n", ehlo=False)
    t.like(r, OK_RE, "and its message queued")
    content = p.queued_content(r.split()[-1])
    t.ok(content.startswith(b"Received: from a?b?c?d?e??f??g?h?i?j?k (unknown [127.0.0.1])\r\n"),
         "Received: carries the HELO name printable and neutered, as Postfix does", content[:120])
    t.ok(re.search(rb"\r(?!\n)|(?<!\r)\n", content) is None, "no bare CR or LF anywhere in the stored message",
         content[:200])
    c.cmd("MAIL FROM:<sender@example.org>")
    t.like(c.cmd("RCPT TO:<x@elsewhere.example>"), r"^454 4\.7\.1 ", "a refused recipient, to log the HELO")
    t.ok(p.wait_log(r"helo=<a\?b\?c\?d\?e\?\?f\?\?g\?h\?i\?j\?k>") is not None, "the log shows the same name")
    log = p.log().encode("utf-8", "surrogateescape")
    t.ok(b"\x1b" not in log and b"\x07" not in log and b"a\rb" not in log, "no control byte reaches the log")
    c.close()

    c = p.connect()
    c.cmd("HELO  b\u00fccher.example ")
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: helo\r\n\r\nx\r\n", ehlo=False)
    t.ok(p.queued_content(r.split()[-1]).startswith("Received: from b\u00fccher.example (unknown".encode()),
         "valid UTF-8 is kept (smtputf8_enable = yes), surrounding blanks dropped")
    c.close()
    c = Smtp(p.port)
    c.send(b"HELO bad\xff\xc3name\r\n")
    c.read_reply()
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: helo\r\n\r\nx\r\n", ehlo=False)
    t.ok(p.queued_content(r.split()[-1]).startswith(b"Received: from bad??name (unknown"),
         "invalid UTF-8 becomes ?", p.queued_content(r.split()[-1])[:60])
    c.close()
    still_serves(p, "hostile HELO")

# --- Finding 11: NUL bytes in header values survive rewriting ---------------
with section("NUL with a module"), Petrel(t, main_cf={"modules": "testmod", "module_directory": MODS}) as p:
    c = p.connect()
    body = (b"Subject: before\x00after\r\nX-Long: one\x00two\r\n\tthree\x00four\r\n"
            b"X-Testmod-Add: X-Added: yes\r\n\r\nbody\x00text\r\n")
    r = c.send_message("sender@example.org", ["user@petrel.test"], body)
    t.like(r, OK_RE, "a message with NUL bytes in headers, edited by a module")
    m = p.queued_content(r.split()[-1])
    t.ok(b"\r\nSubject: before\x00after\r\n" in m, "the header value keeps its NUL and what follows", m[:300])
    t.ok(b"\r\nX-Long: one\x00two\r\n\tthree\x00four\r\n" in m, "so does a folded one")
    t.ok(b"\r\nX-Added: yes\r\n" in m and b"\r\n\r\nbody\x00text\r\n" in m, "the module's header and the body are there")
    c.close()

with section("NUL with a canonical map"), Petrel(t, main_cf={"sender_canonical_maps": "inline:{ {old@example.org = new@example.org} }"}) as p:
    c = p.connect()
    r = c.send_message("sender@example.org", ["user@petrel.test"],
                       b"From: Old\x00Name <old@example.org>\r\nSubject: a\x00b\r\n\r\nx\r\n")
    m = p.queued_content(r.split()[-1])
    t.ok(b"\r\nFrom: Old\x00Name <new@example.org>\r\n" in m, "a canonical map rewrites From: and keeps the NUL",
         m[:300])
    t.ok(b"\r\nSubject: a\x00b\r\n" in m, "the other headers keep theirs")
    c.close()
    still_serves(p, "NUL in headers")

# --- Finding 13: an overlong AUTH response line -----------------------------
with section("overlong AUTH line"), Petrel(t, main_cf=SASL) as p:
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("AUTH PLAIN"), "334 ", "AUTH PLAIN without an initial response: 334")
    c.send(b"A" * 15000)           # more than smtpd_sasl_response_limit (12288), no line end yet
    t.is_(reply_or_hang(c, 1), "NO REPLY", "nothing is answered before the line ends")
    c.send(b"B" * 5000 + b" NOOP\r\n")
    t.is_(reply_or_hang(c), "500 5.5.6 SASL response limit exceeded",
          "at the line end: 500 5.5.6 SASL response limit exceeded (Postfix's reply)")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "the rest of the line was never taken for a command")
    t.ok(p.wait_log(r"warning: unknown\[127\.0\.0\.1\]: SASL response longer than 12288 bytes") is not None,
         "logged")
    t.is_(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6", "AUTH LOGIN")
    c.send(b"QUJD" * 5000 + b"\r\n")
    t.is_(reply_or_hang(c), "500 5.5.6 SASL response limit exceeded", "a whole overlong line at once: 500 5.5.6")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "in step")
    c.close()
    still_serves(p, "overlong AUTH line")

with section("smtpd_sasl_response_limit"), Petrel(t, main_cf=dict(SASL, smtpd_sasl_response_limit="100")) as p:
    c = p.connect()
    c.ehlo()
    c.cmd("AUTH LOGIN")
    t.is_(c.cmd("x" * 101), "500 5.5.6 SASL response limit exceeded", "smtpd_sasl_response_limit = 100: 101 bytes refused")
    c.cmd("AUTH LOGIN")
    t.is_(c.cmd("!" * 100), "501 5.5.2 Cannot decode response", "100 bytes are read as a response")
    c.close()

t.done()
