"""A real amavisd-new (Debian's package, run privately on loopback: see peers.Amavisd) as the
content filter, set up the way amavis' documentation and Postfix's FILTER_README do it:
content_filter = smtp-amavis:[127.0.0.1]:PORT on the public listener, a master.cf smtp-amavis
transport, and the return listener 127.0.0.1:PORT with -o content_filter= and
receive_override_options. A clean message goes out to amavisd, comes back and is delivered
exactly once, with amavis' headers; a message with the EICAR test virus (found by our private
clamd) is discarded by amavisd and never delivered; with the filter unreachable mail waits in
the queue and is delivered once it is back. Then the same amavisd as a before-queue filter
(smtpd_proxy_filter): the client gets amavis' own reply.

amavisd-new and clamd are slow to start: each is started once for this file. "The filter is
down" is a loopback port in front of amavisd that refuses connections until a relay to amavisd
listens on it (Gate)."""
import os
import re
import socket
import threading

from harness import Petrel, Tap, free_port, maildir_messages, refused_port, revive_port, wait_for
from peers import EICAR, Amavisd, Clamd, shared, stop_all
from serverlib import pump

t = Tap(timeout=500)


class Gate:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target, in threads of this script;
    nothing listens on port before open() or after close(). Before open() the port
    is a refused_port(): another test cannot bind it and take the mail meant for the
    filter that is down."""

    def __init__(self, target):
        self.port = refused_port()
        self.target = target
        self.sock = None
        self.conns = []

    def open(self):
        revive_port(self.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                a, _ = listener.accept()
                b = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self.conns += [a, b]
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=pump, args=(src, dst), daemon=True).start()

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
        for c in self.conns:
            c.close()
        self.conns = []


QMGR = "qmgr unix n - n 300 1 qmgr\n"
ret_port = free_port()
proxy_port = free_port()
down_port = free_port()
clamd = shared(Clamd)
amavis = Amavisd(ret_port, clamd=clamd)
amavis.start()
t.ok(True, "a private amavisd-new is up on 127.0.0.1:%d (started in %.1f s)" % (amavis.port, amavis.start_seconds))
gate = Gate(amavis.port)

with Petrel(t, main_cf={}, start=False) as p:
    mail = p.virtual_mailboxes({"u@vmail.test": "vmail.test/u/"}, {
        "content_filter": "smtp-amavis:[127.0.0.1]:%d" % amavis.port,
        "receive_override_options": "no_address_mappings",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "queue_run_delay": "1s",
        "maillog_file": p.log_path,
    })
    master = p.master_cf
    master += "127.0.0.1:%d inet n - n - - smtpd\n  -o smtpd_proxy_filter=127.0.0.1:%d\n  -o content_filter=\n" % (
        proxy_port, amavis.port)
    # The same content filter through the gate, for the filter-down case.
    master += "127.0.0.1:%d inet n - n - - smtpd\n  -o content_filter=smtp-amavis:[127.0.0.1]:%d\n" % (
        down_port, gate.port)
    master += ("smtp-amavis unix - - n - 2 smtp\n  -o smtp_data_done_timeout=1200\n"
               "  -o smtp_send_xforward_command=yes\n"
               "127.0.0.1:%d inet n - n - - smtpd\n"
               "  -o content_filter=\n"
               "  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters\n"
               "  -o smtpd_helo_restrictions=\n  -o smtpd_client_restrictions=\n  -o smtpd_sender_restrictions=\n"
               "  -o smtpd_relay_restrictions=\n  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n"
               "  -o mynetworks=127.0.0.0/8\n  -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n" % ret_port) + QMGR
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(master)
    p._chown()
    p.start()

    def inbox():
        return maildir_messages(os.path.join(mail, "vmail.test", "u"))

    HEADERS = "From: <sender@example.org>\r\nTo: <u@vmail.test>\r\nDate: Thu, 3 Dec 2026 10:00:00 +0000\r\n"

    def send(body, port=None):
        """The reply to the end of data, or the first refusal on the way."""
        from harness import Smtp
        c = Smtp(port or p.port, timeout=120)
        c.ehlo()
        for cmd, want in (("MAIL FROM:<sender@example.org>", 250), ("RCPT TO:<u@vmail.test>", 250), ("DATA", 354)):
            reply = c.cmd(cmd)
            if c.code != want:
                c.close()
                return "%s -> %s" % (cmd, reply)
        c.send((HEADERS + body).encode() + b"\r\n.\r\n")
        reply = c.read_reply()
        c.close()
        return reply

    # 1. Clean mail: out to amavisd, back, delivered once.
    r = send("Subject: clean\r\nMessage-ID: <clean@example.org>\r\n\r\nbody clean message")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "a clean message is accepted")
    qid = r.split()[-1]
    got = wait_for(lambda: [m for m in inbox() if b"body clean message" in m], timeout=60)
    t.is_(len(got), 1, "it comes back from amavisd-new and is delivered exactly once")
    m = got[0] if got else b""
    t.ok(re.search(rb"\nX-Virus-Scanned: amavis at petrel\.test\n", m), "amavisd scanned it (X-Virus-Scanned)", m)
    t.ok(re.search(rb"\nReceived: from mx\.petrel\.test \(\[127\.0\.0\.1\]\)\n by localhost \(amavis\.test "
                   rb"\[127\.0\.0\.1\]\) \(amavis, port %d\)" % amavis.port, m),
         "and its Received header is there", m[:600])
    first = p.wait_log(r"petrel/smtp-amavis\[\d+\]: %s: to=<u@vmail\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, "
                       r".*status=sent \(250 2\.0\.0 from MTA\(smtp:\[127\.0\.0\.1\]:%d\): 250 2\.0\.0 Ok: queued as "
                       r"(\w+)\)" % (qid, amavis.port, ret_port), timeout=30)
    t.ok(first is not None, "the first pass is logged as sent to amavis, with the ID it came back under")
    if first:
        t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, relay=virtual, .*status=sent" % first.group(1)) is not None,
             "the second pass is delivered to the mailbox")
        # smtp_send_xforward_command on smtp-amavis: amavisd passes the original
        # client and queue ID on to the return listener (XFORWARD both ways)
        t.ok(p.wait_log(r"%s: client=\S+\[127\.0\.0\.1\], orig_queue_id=%s, orig_client=unknown\[127\.0\.0\.1\]:\d+"
                        % (first.group(1), qid)) is not None,
             "XFORWARD through amavisd: the return listener logs orig_queue_id= and orig_client=", p.log()[-3000:])
    # amavisd writes its own log: wait for its line, then count
    wait_for(lambda: re.search(r"Passed CLEAN \{RelayedInbound\}", amavis.log()), timeout=30)
    t.is_(len(re.findall(r"Passed CLEAN \{RelayedInbound\}", amavis.log())), 1, "amavisd saw the message once: no loop")

    # 2. A virus: amavisd discards it.
    r = send("Subject: eicar\r\n\r\n" + EICAR + "\r\nbody virus message")
    t.like(r, r"^250 ", "a message with a virus is accepted by petreld (amavisd decides after the queue)")
    qid = r.split()[-1]
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent \(250 2\.7\.0 Ok, "
                    r"discarded, id=[^ ]+ - INFECTED: Eicar-Signature\.UNOFFICIAL\)" % (qid, amavis.port), timeout=60)
         is not None,
         "amavisd answers 250 2.7.0 Ok, discarded ... INFECTED: Eicar-Signature")
    t.ok(wait_for(lambda: re.search(r"Blocked INFECTED \(Eicar-Signature\.UNOFFICIAL\)", amavis.log())),
         "amavisd logs it as blocked")
    t.ok(not [m for m in inbox() if b"body virus message" in m], "and it is never delivered")

    # 3. The filter unreachable: the message waits; back: delivered once.
    r = send("Subject: while down\r\n\r\nbody while amavis down", port=down_port)
    qid = r.split()[-1]
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, .*status=deferred \(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
                    r"Connection refused\)" % (qid, gate.port), timeout=30) is not None,
         "with the filter unreachable the message is deferred")
    gate.open()
    p.petrelctl("queue", "flush")
    got = wait_for(lambda: [m for m in inbox() if b"body while amavis down" in m], timeout=60)
    t.is_(len(got), 1, "once the filter is back the message is delivered, once")
    gate.close()

    # 4. The same amavisd before the queue (smtpd_proxy_filter).
    r = send("Subject: proxied\r\n\r\nbody proxied through amavis", port=proxy_port)
    t.like(r, r"^250 2\.0\.0 from MTA\(smtp:\[127\.0\.0\.1\]:%d\): 250 2\.0\.0 Ok: queued as \w+$" % ret_port,
           "as a before-queue filter, amavisd's own reply goes to the client")
    got = wait_for(lambda: [m for m in inbox() if b"body proxied through amavis" in m], timeout=60)
    t.is_(len(got), 1, "and the message is delivered once")
    t.ok(p.wait_log(r"proxy-accept: END-OF-MESSAGE: 250 2\.0\.0 from MTA") is not None, "logged as proxy-accept")
    # XFORWARD: our proxy tells amavisd the client, amavisd tells the return
    # listener (authorized for 127.0.0.0/8): its Received: header and log name
    # the original client, not amavisd.
    back = re.search(r"queued as (\w+)$", r)
    m = got[0] if got else b""
    t.is_(m.count(b"Received: from client.example.org (unknown [127.0.0.1])"), 2,
          "XFORWARD from amavisd: the return listener's Received: names the original client's HELO too")
    t.ok(back is not None and p.wait_log(r"%s: client=\S+\[127\.0\.0\.1\].*, orig_client=unknown\[127\.0\.0\.1\]"
                                         % back.group(1)) is not None,
         "  and its log line has orig_client=", p.log()[-3000:])
    r = send("Subject: proxied virus\r\n\r\n" + EICAR + "\r\n", port=proxy_port)
    t.like(r, r"^250 2\.7\.0 Ok, discarded, id=[^ ]+ - INFECTED: Eicar-Signature\.UNOFFICIAL$",
           "a virus: amavisd's verdict is the client's reply")

amavis.stop()
stop_all()
t.done()
