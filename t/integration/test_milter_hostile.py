"""What no libmilter filter sends: malformed, hostile, lying, slow and dying
milters (t/integration/peers.py ScriptedMilter) against the MTA side of the
milter protocol, through t/tools/scan-drive. Every case must end in a clear
log line and milter_default_action's verdict (or the documented reply), never
a crash, a hang or a desynchronised conversation; the driver must exit 0.
Also SHUTDOWN (libmilter cannot send it) and a milter speaking version 2."""
import struct
import tempfile
import time

from harness import Tap, CLEANUP_DIRS
from peers import ScriptedMilter, scan_drive, write_message, milter_packet as pkt

t = Tap(timeout=300)
work = tempfile.mkdtemp(prefix="petrel-milter-hostile-")
CLEANUP_DIRS.append(work)
message = write_message(work, "m.eml", [("From", "a@example.com"), ("Subject", "hi")], "body\n")
FAILED = "tempfail 451 4.7.1 Service unavailable - try again later connection failed"
CONF_FAILED = "tempfail 451 4.3.5 Server configuration problem - try again later connection failed"


def run(milter, *opts):
    rc, lines = scan_drive("milter", "--timeouts", "3000,3000,3000", *(list(opts) + [milter.endpoint, message]),
                           timeout=60)
    return rc, lines


def check(name, milter, want_lines, want_log, *opts):
    rc, lines = run(milter, *opts)
    t.is_(rc, 0, name + ": the driver ran to the end")
    missing = [w for w in want_lines if w not in lines]
    t.ok(not missing, name + ": " + "; ".join(want_lines), "missing: %r\n%s" % (missing, "\n".join(lines)))
    if want_log is not None:
        log = "log: warning milter %s: %s" % (milter.endpoint, want_log)
        t.ok(log in lines, name + ": logged as \"%s\"" % want_log, "\n".join(lines))
    return lines


# ----------------------------------------------------------------------
# framing
with ScriptedMilter(replies={"R": b"\0\0\0\0c"}) as m:
    check("length 0", m, ["rcpt <rcpt@example.org>: " + FAILED, "mail: " + FAILED],
          "bad packet length: 0; default_action tempfail", "--messages", "2")
with ScriptedMilter(replies={"H": b"\x7f\xff\xff\xf0c"}) as m:
    check("a 2 GB reply", m, ["helo: " + FAILED],
          "unreasonable packet length: 2147483631 > 1048576 (SMFIR_CONTINUE); default_action tempfail")
with ScriptedMilter(replies={"H": pkt("h", b"X-Big\0" + b"v" * 70000 + b"\0")}) as m:
    check("a reply above --max-reply", m, ["helo: " + FAILED],
          "unreasonable packet length: 70007 > 65536 (SMFIR_ADDHEADER); default_action tempfail",
          "--max-reply", "65536")
with ScriptedMilter(replies={"M": [b"\0\0\0\x09cabc", "close"]}) as m:   # 3 of 8 bytes, then closes
    m.replies["M"] = b"\0\0\0\x09cabc"
    check("a packet cut short", m, ["mail: " + FAILED], None)
with ScriptedMilter(replies={"M": "close"}) as m:
    check("the milter dies while we wait", m, ["mail: " + FAILED],
          "connection closed by the milter while waiting for the reply to SMFIC_MAIL; default_action tempfail")
with ScriptedMilter(replies={"H": pkt("c", b"xyz")}) as m:
    check("CONTINUE with data", m, ["helo: " + FAILED],
          "reply SMFIR_CONTINUE was followed by 3 data bytes; default_action tempfail")
with ScriptedMilter(replies={"H": pkt("c") + pkt("c")}) as m:
    lines = check("a stray packet after a reply", m, ["helo: continue", "mail: " + FAILED],
                  "unexpected SMFIR_CONTINUE from the milter while no reply was due; default_action tempfail")
with ScriptedMilter(replies={"C": pkt("Z")}) as m:
    check("an unknown reply", m, ["connect: " + FAILED],
          "unexpected filter response (unknown filter reply) after event SMFIC_CONNECT; default_action tempfail")
with ScriptedMilter(replies={"M": pkt("f")}) as m:
    check("CONN_FAIL", m, ["mail: " + FAILED],
          "unexpected filter response SMFIR_CONN_FAIL after event SMFIC_MAIL; default_action tempfail")

# ----------------------------------------------------------------------
# replies in the wrong place, and modifications that would break the message
with ScriptedMilter(replies={"M": pkt("h", b"X-Early\0yes\0")}) as m:
    check("a modification before end of message", m, ["mail: " + FAILED],
          "unexpected filter response SMFIR_ADDHEADER after event SMFIC_MAIL; default_action tempfail")
with ScriptedMilter(replies={"R": pkt("b", b"new body")}) as m:
    check("a body replacement at RCPT", m, ["rcpt <rcpt@example.org>: " + FAILED],
          "unexpected filter response SMFIR_REPLBODY after event SMFIC_RCPT; default_action tempfail")
with ScriptedMilter(replies={"E": pkt("h", b"X-Ok\0fine\nInjected: header\0") + pkt("a")}) as m:
    check("a header injection", m, ["eom: " + CONF_FAILED],
          "SMFIR_ADDHEADER: value of X-Ok: a continuation line that does not start with white space; "
          "default_action tempfail")
with ScriptedMilter(replies={"E": pkt("h", b"Bad Name\0v\0") + pkt("a")}) as m:
    check("a header name with a space", m, ["eom: " + CONF_FAILED],
          "SMFIR_ADDHEADER: header name \"Bad Name\" has a character that is not allowed (0x20); "
          "default_action tempfail")
with ScriptedMilter(replies={"E": pkt("m", b"\0\0\0\1\0v\0") + pkt("a")}) as m:
    check("CHGHEADER without a name", m, ["eom: " + CONF_FAILED],
          "SMFIR_CHGHEADER: empty header name; default_action tempfail")
with ScriptedMilter(replies={"E": pkt("+", b"<a@b>\r\nRCPT TO:<evil@example.net>\0") + pkt("a")}) as m:
    check("a recipient with a line end", m, ["eom: " + CONF_FAILED],
          "SMFIR_ADDRCPT: the address has a control character (0x0d); default_action tempfail")
with ScriptedMilter(replies={"E": pkt("h", b"X-A\0v") + pkt("a")}) as m:
    check("a value without its NUL", m, ["eom: " + CONF_FAILED],
          "SMFIR_ADDHEADER: header name or value without its terminating NUL; default_action tempfail")
with ScriptedMilter(replies={"E": pkt("b", b"one\r\n") + pkt("h", b"X-A\0v\0") + pkt("b", b"two\r\n") + pkt("a")}) as m:
    check("body replacement mixed with other requests", m, ["edit: body_end 5", "eom: " + CONF_FAILED],
          "body replacement requests can't be mixed with other requests; default_action tempfail")
with ScriptedMilter(replies={"E": struct.pack(">I", 50000001) + b"b" + b"x" * 100}) as m:
    check("a replacement body claimed above --max-body", m, ["eom: " + FAILED],
          "unreasonable packet length: 50000000 > 1000000 (SMFIR_REPLBODY); default_action tempfail",
          "--max-body", "1000000")
with ScriptedMilter(replies={"E": pkt("+", b"\0") + pkt("c")}) as m:
    check("an empty recipient to add", m, ["eom: continue"], "ignoring SMFIR_ADDRCPT with an empty address")

# ----------------------------------------------------------------------
# custom replies
for name, text, err in (
        ("a 2xx", b"250 2.0.0 fine\0", "line 1 is not \"4xx \" or \"5xx \" followed by text"),
        ("a CRLF line then a line that is not a reply", b"550-5.7.1 first\r\nEVIL: injected\0",
         "line 2 is not \"4xx \" or \"5xx \" followed by text"),
        ("codes that differ", b"550-5.7.1 a\r\n250 2.0.0 b\0", "line 2 is not \"4xx \" or \"5xx \" followed by text"),
        ("a bare LF", b"550-5.7.1 a\n550 5.7.1 b\0", "line 1 does not end with CRLF"),
        ("a 4xx with a 5.x.x code", b"451 5.7.1 mismatch\0", "line 1: enhanced status code class 5 with reply code 451")):
    with ScriptedMilter(replies={"R": pkt("y", text)}) as m:
        shown = text.rstrip(b"\0").decode().replace("\r", "?").replace("\n", "?")
        check("REPLYCODE %s" % name, m, ["rcpt <rcpt@example.org>: " + CONF_FAILED],
              "malformed reply: %s: \"%s\"; default_action tempfail" % (err, shown))
with ScriptedMilter(replies={"R": pkt("y", b"550 5.7.1 No\x07 way, 100%% sure\0")}) as m:
    check("REPLYCODE made safe", m, ["rcpt <rcpt@example.org>: reject 550 5.7.1 No? way, 100% sure"], None)

# ----------------------------------------------------------------------
# verdicts libmilter cannot give, and QUARANTINE before end of message
with ScriptedMilter(replies={"M": pkt("4")}) as m:
    lines = check("SHUTDOWN", m, ["mail: shutdown 421 4.7.0 Server closing connection connection"], None)
    t.ok("quit" in lines and not any(ln.startswith("rcpt") for ln in lines), "  the session ends there")
with ScriptedMilter(replies={"R": pkt("q", b"suspicious recipient\0") + pkt("c")}) as m:
    check("QUARANTINE at RCPT holds the message", m, ["edit: quarantine suspicious recipient",
                                                      "eom: continue quarantine=suspicious recipient"], None)
with ScriptedMilter(replies={"H": pkt("q", b"bad helo\0") + pkt("c")}) as m:
    lines = check("QUARANTINE at HELO holds every message of the session", m,
                  ["eom: continue quarantine=bad helo"], None, "--messages", "2")
    t.is_(lines.count("eom: continue quarantine=bad helo"), 2, "  both messages")
with ScriptedMilter(replies={"L": pkt("s")}) as m:
    run(m)
    t.is_([c for c in m.events() if c == "L"], ["L"], "SKIP at the first header: the others are not sent (Postfix)")

# ----------------------------------------------------------------------
# option negotiation
for name, optneg, log in (
        ("a newer version", struct.pack(">III", 7, 0x1ff, 0), "protocol version 7 conflict with MTA protocol version 6"),
        ("version 1", struct.pack(">III", 1, 0, 0), "protocol version 1 is older than 2"),
        ("actions we do not have", struct.pack(">III", 6, 0x3ff, 0),
         "request mask 0x3ff conflict with MTA request mask 0x1ff"),
        ("a short reply", b"\0\0\0\6\0\0", "bad option negotiation reply: option negotiation reply too short: "
                                           "6 bytes (need 12)"),
        ("a bad macro list", struct.pack(">III", 6, 0x1ff, 0) + b"\0\0\0\1{bad name}\0",
         "bad option negotiation reply: macro list for stage 1: bad macro name \"{bad\" (a single character "
         "or {name})")):
    with ScriptedMilter(optneg=optneg) as m:
        check("OPTNEG: " + name, m, ["open: " + FAILED, "connect: " + FAILED], log + "; default_action tempfail")
with ScriptedMilter(replies={"O": pkt("c")}) as m:
    check("OPTNEG answered with CONTINUE", m, ["open: " + FAILED],
          "unexpected reply SMFIR_CONTINUE in the initial handshake; default_action tempfail")
with ScriptedMilter(version=2, steps=0) as m:
    rc, lines = run(m, "--unknown", "XYZZY")
    t.ok("open: ok version=2 actions=0x1ff steps=0x0" in lines and "eom: continue" in lines
         and "T" not in m.events() and "U" not in m.events() and "E" in m.events(),
         "a version 2 milter gets no DATA or UNKNOWN, and a normal conversation", "\n".join(lines))
    t.ok(struct.unpack(">III", m.received[0][1])[0] == 6, "  we offered version 6 first")
# It says NR_RCPT, then answers RCPT anyway. Its answer can only be caught
# once it has arrived: --pause-ms gives the driver the idle loop an MTA has
# between two SMTP commands. The milter is a thread of this script: on a loaded
# machine its answer may take a few hundred milliseconds to be sent, and one that
# came after DATA would be read as DATA's reply, so the pause is generous.
with ScriptedMilter(steps=0x8000) as m:
    m.replies["R"] = pkt("c")
    check("a milter that promised not to reply, and replies", m, ["rcpt <rcpt@example.org>: continue",
                                                                  "data: " + FAILED],
          "unexpected SMFIR_CONTINUE from the milter while no reply was due; default_action tempfail",
          "--pause-ms", "1500")

# ----------------------------------------------------------------------
# slow milters
with ScriptedMilter(replies={"R": "hang"}) as m:
    began = time.monotonic()
    check("no reply at all", m, ["rcpt <rcpt@example.org>: " + FAILED],
          "timeout after 3000 ms waiting for the reply to SMFIC_RCPT; default_action tempfail")
    t.ok(time.monotonic() - began < 30, "  the command timeout ended it")
with ScriptedMilter(replies={"E": pkt("p") * 3 + pkt("a")}) as m:
    check("PROGRESS then ACCEPT", m, ["eom: accept"], None)
with ScriptedMilter(replies={"E": pkt("p", b"x")}) as m:
    check("PROGRESS with data", m, ["eom: " + FAILED],
          "reply SMFIR_PROGRESS was followed by 1 data bytes; default_action tempfail")

# ----------------------------------------------------------------------
# default actions after a protocol error (Postfix's conf_error replies)
for action, want in (("accept", "continue connection failed"),
                     ("reject", "tempfail 451 4.3.5 Server configuration problem - try again later connection failed"),
                     ("shutdown", "shutdown 421 4.3.5 Server configuration problem - try again later connection failed"),
                     ("quarantine", "continue connection failed quarantine=milter default_action")):
    with ScriptedMilter(replies={"R": pkt("y", b"200 nope\0")}) as m:
        check("malformed reply with default_action %s" % action, m, ["rcpt <rcpt@example.org>: " + want], None,
              "--default-action", action)

t.done()
