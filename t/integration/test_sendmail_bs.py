"""petrel-sendmail -bs: SMTP on standard input/output (issue 8, finding 16). Real clients over a
subprocess's pipes: Python's smtplib, a raw client that pipelines (RFC 2920), and swaks --pipe
with and without --pipeline; exact replies for bad input; and messages accepted while petreld is
down are delivered when it starts."""
import os
import smtplib
import subprocess

from harness import Petrel, Tap, _runnable_copy, TOP_BUILDDIR, maildir_messages as maildir, wait_for

t = Tap()
SENDMAIL = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-sendmail"))
POSTDROP = _runnable_copy(os.path.join(TOP_BUILDDIR, "core", "tools", "petrel-postdrop"))
SERVICES = "pickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n"


class PipeSocket:
    """What smtplib needs from a socket, on top of a child's stdin/stdout."""

    def __init__(self, proc):
        self.proc = proc

    def sendall(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def makefile(self, mode):
        return self.proc.stdout

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=30)


class PipeSMTP(smtplib.SMTP):
    def __init__(self, command):
        self.command = command
        super().__init__()

    def connect(self, host="", port=0, source_address=None):
        proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.sock = PipeSocket(proc)
        self.file = None
        return self.getreply()


class Raw:
    """A client that writes whole pipelined groups and reads replies one by one."""

    def __init__(self, command):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, text):
        self.proc.stdin.write(text.encode() if isinstance(text, str) else text)
        self.proc.stdin.flush()

    def reply(self):
        lines = []
        while True:
            line = self.proc.stdout.readline().decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines[-1]

    def close(self):
        self.proc.stdin.close()
        rest = self.proc.stdout.read().decode()
        return self.proc.wait(timeout=30), rest


with Petrel(t, extra_services=SERVICES, start=False) as p:
    mail = p.virtual_mailboxes({"a@vmail.test": "a/", "b@vmail.test": "b/", "c@vmail.test": "c/"},
                               {"myorigin": "vmail.test", "command_directory": os.path.dirname(POSTDROP)})
    p.start()
    bs = p.command(SENDMAIL, "-C", p.conf, "-bs")

    def box(name, count=1):
        # a delivery through pickup, the queue manager and virtual(8): the sanitizer build
        # on a loaded machine takes many seconds (the wait ends as soon as it is there)
        return wait_for(lambda: len(maildir(os.path.join(mail, name))) >= count and maildir(os.path.join(mail, name)),
                        timeout=60)

    s = PipeSMTP(bs)
    code, banner = s.connect()
    t.is_(code, 220, "smtplib over the pipes: greeting")
    code, _ = s.ehlo("client.example")
    t.ok(code == 250 and s.has_extn("pipelining") and s.has_extn("8bitmime"), "EHLO offers PIPELINING and 8BITMIME")
    refused = s.sendmail("s@vmail.test", ["a@vmail.test", "b@vmail.test"], b"Subject: smtplib 1\r\n\r\none\r\n")
    t.is_(refused, {}, "smtplib: first message accepted")
    code, text = s.mail("s@vmail.test")
    s.rcpt("c@vmail.test")
    code, text = s.data(b"Subject: smtplib 2\r\n\r\n.leading dot\r\ntwo\r\n")
    t.is_(code, 250, "smtplib: second message in the same session: 250")
    t.like(text.decode(), r"^2\.0\.0 Ok: queued as [0-9A-Z]{19}$", "after the file is in the maildrop")
    t.is_(s.quit()[0], 221, "QUIT: 221")
    t.ok(box("a") and box("b"), "the first message is delivered to both recipients")
    c = box("c")
    t.ok(c and b"Subject: smtplib 2" in c[0] and b"\n.leading dot\n" in c[0],
         "the second one too, dot-stuffing undone exactly once")

    # A script that writes the whole session at once (sendmail -bs < file): the old relay to
    # the pickup socket answered "554 5.5.0 Error: SMTP protocol synchronization" here.
    r = subprocess.run(bs, capture_output=True, timeout=60, input=(
        b"EHLO script.example\r\nMAIL FROM:<s@vmail.test>\r\nRCPT TO:<b@vmail.test>\r\nDATA\r\n"
        b"Subject: all at once\r\n\r\nx\r\n.\r\nQUIT\r\n"))
    lines = [l for l in r.stdout.decode().split("\r\n") if l and l[3:4] == " "]
    t.is_([l[:3] for l in lines], ["220", "250", "250", "250", "354", "250", "221"],
          "a whole session written at once gets every reply in order (354, then 250 queued)")
    t.ok(r.returncode == 0 and "554" not in r.stdout.decode(), "no synchronization error, exit 0")

    raw = Raw(bs)
    t.like(raw.reply(), r"^220 ", "raw pipelining client: greeting")
    raw.send("EHLO pipeline.example\r\n")
    t.like(raw.reply(), r"^250 ENHANCEDSTATUSCODES", "EHLO")
    raw.send("MAIL FROM:<s@vmail.test>\r\nRCPT TO:<a@vmail.test>\r\nRCPT TO:<nobody-here>\r\nDATA\r\n")
    replies = [raw.reply() for _ in range(4)]
    t.is_(replies, ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"],
          "a pipelined MAIL/RCPT/RCPT/DATA group is answered in order, 354 last (no synchronization error)")
    raw.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<b@vmail.test>\r\nDATA\r\n")
    replies = [raw.reply() for _ in range(4)]
    t.like(replies[0], r"^250 2\.0\.0 Ok: queued as ", "the message and the next group pipelined behind it")
    t.is_(replies[1:], ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"],
          "the next transaction's replies follow in order")
    raw.send("Subject: null sender\r\n\r\nx\r\n.\r\n")
    t.like(raw.reply(), r"^250 2\.0\.0 Ok: queued as ", "a null-sender message")
    # Bad input: exact replies, and the session goes on.
    raw.send("RCPT TO:<a@vmail.test>\r\n")
    t.is_(raw.reply(), "503 5.5.1 Error: need MAIL command", "RCPT without MAIL")
    raw.send("MAIL FROM:<s@vmail.test>\r\nRCPT TO:<bad address@vmail.test>\r\nDATA\r\n")
    t.is_([raw.reply() for _ in range(3)],
          ["250 2.1.0 Ok", "501 5.1.3 Bad recipient address syntax", "554 5.5.1 Error: no valid recipients"],
          "a bad recipient, then DATA without recipients")
    raw.send("MAIL FROM:<s@vmail.test>\r\n")
    t.is_(raw.reply(), "503 5.5.1 Error: nested MAIL command", "nested MAIL")
    raw.send("RSET\r\nBDAT 10 LAST\r\nSTARTTLS\r\nAUTH PLAIN\r\nXYZZY\r\n" + "NOOP " + "x" * 5000 + "\r\nNOOP\r\n")
    t.is_([raw.reply() for _ in range(7)],
          ["250 2.0.0 Ok", "502 5.5.1 Error: command not implemented", "502 5.5.1 Error: command not implemented",
           "503 5.5.1 Error: authentication not enabled", "502 5.5.2 Error: command not recognized",
           "500 5.5.2 Error: line too long", "250 2.0.0 Ok"],
          "RSET, BDAT, STARTTLS, AUTH, an unknown command, an overlong line: each answered, the session goes on")
    raw.send("QUIT\r\n")
    t.is_(raw.reply(), "221 2.0.0 Bye", "QUIT")
    status, rest = raw.close()
    t.is_((status, rest), (0, ""), "-bs exits 0 after QUIT")
    t.ok(box("a", 2) and box("b", 3), "the pipelined messages are delivered")

    for extra, what in (([], "swaks --pipe"), (["--pipeline"], "swaks --pipe --pipeline")):
        r = subprocess.run(["swaks", "--pipe", " ".join(bs), "--from", "s@vmail.test", "--to", "c@vmail.test",
                            "--header", "Subject: " + what] + extra, capture_output=True, text=True, timeout=60)
        t.ok(r.returncode == 0 and "queued as" in r.stdout, "%s: accepted" % what, r.stdout[-1500:] + r.stderr)
    c = box("c", 3)
    t.ok(c and any(b"Subject: swaks --pipe --pipeline" in m for m in c), "swaks' messages are delivered")

    p.stop()
    s = PipeSMTP(bs)
    s.connect()
    refused = s.sendmail("s@vmail.test", ["a@vmail.test"], b"Subject: bs while down\r\n\r\nx\r\n")
    s.quit()
    t.is_(refused, {}, "-bs accepts mail while petreld is down")
    p.start()
    a = box("a", 3)
    t.ok(a and any(b"Subject: bs while down" in m for m in a), "and it is delivered when petreld starts")
t.done()
