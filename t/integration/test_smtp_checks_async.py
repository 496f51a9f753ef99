"""smtp_header_checks and smtp_body_checks in a remote table (socketmap:, against a real
socketmap server on loopback): the SMTP client's transfer waits for the answer without blocking
the queue manager.

- REPLACE, IGNORE, PREPEND (headers and body lines) from the remote table are applied exactly in
  what the next hop (our own SMTP sink) gets; the LMTP client with lmtp_header_checks too.
- A header whose lookup the server holds stops only its own delivery: another message to the
  same next hop and one to another next hop are delivered meanwhile; the order is decided by the
  test (the server holds the answer until told), and shown by what the sinks and the socketmap
  server saw, not by timing. Then the held delivery goes on, its content in order.
- A long body: every line asked exactly once, the changes at the right places.
- The server down: the delivery is deferred with Postfix's "4.3.0 local data error while talking
  to HOST[ADDR]" and warning, the next hop gets nothing; delivered once the server is back.
- petreld stops cleanly while a delivery waits for its answer."""
import re
import threading

from harness import Petrel, Tap, wait_for
from smtpfilter import SmtpFilter
from socketmaplib import SocketmapServer
from tablelib import bundled_module_dir

t = Tap(timeout=300)
MODULES = bundled_module_dir("socketmap")
QMGR = "qmgr unix n - n 300 1 qmgr\n"

# socketmap: is a pattern type: the server gets the header ("Name: value") or line as it is.
server = SocketmapServer({
    "hdr": {b"Subject: replace me": b"REPLACE Subject: replaced by the table",
            b"X-Secret: 42": b"IGNORE",
            b"X-Tag: prepend": b"PREPEND X-Prepended: from the table",
            b"Subject: held": b"DUNNO",
            b"Subject: stop held": b"DUNNO"},
    "body": {b"password: hunter2": b"REPLACE password: [removed]",
             b"drop this line": b"IGNORE",
             b"line 1500": b"REPLACE line 1500 replaced",
             b"line 2999": b"IGNORE",
             b"line 7": b"PREPEND before line 7"},
})
sink = SmtpFilter()        # remote.test: keeps what it gets
other = SmtpFilter()       # other.test
lmtp = SmtpFilter(lmtp=True)   # lmtp.test

with Petrel(t, main_cf={}, start=False) as p:
    local = p.write_file("local_body.regexp", "/^local drop$/ IGNORE\n")
    conf = dict(p.settings)
    conf.update({
        "modules": "socketmap", "module_directory": MODULES, "socketmap_timeout": "60s",
        "relay_domains": "remote.test other.test lmtp.test",
        "transport_maps": "inline:{ {remote.test = smtp:[127.0.0.1]:%d}, {other.test = smtp:[127.0.0.1]:%d}, "
                          "{lmtp.test = lmtp:inet:127.0.0.1:%d} }" % (sink.port, other.port, lmtp.port),
        "lmtp_header_checks": "socketmap:inet:127.0.0.1:%d:hdr" % server.port,
        "smtp_header_checks": "socketmap:inet:127.0.0.1:%d:hdr" % server.port,
        # a local table first, then the remote one (the first that finds decides, as in Postfix)
        "smtp_body_checks": "regexp:%s, socketmap:inet:127.0.0.1:%d:body" % (local, server.port),
        "minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s",
    })
    p.write_main_cf(conf)
    p.master_cf += "smtp unix - - n - - smtp\n" + "lmtp unix - - n - - lmtp\n" + QMGR
    with open(p.conf + "/master.cf", "w") as f:
        f.write(p.master_cf)
    p._chown()
    p.start()

    def submit(rcpt, text):
        c = p.connect()
        r = c.send_message("sender@example.org", [rcpt], text)
        c.close()
        m = re.search(r"queued as (\S+)", r)
        return m.group(1) if m else None

    def data_with(s, tag):
        return [tx["data"] for tx in s.transactions() if tx["data"] and tag in tx["data"]]

    def got(s, tag, timeout=30):
        found = wait_for(lambda: data_with(s, tag), timeout=timeout)
        return found[0] if found else b""

    def sent(qid, rcpt, timeout=30):
        return p.wait_log(r"%s: to=<%s>, relay=\S+, .*status=sent" % (qid, re.escape(rcpt)), timeout=timeout)

    # ---- the actions, applied exactly ----
    qid = submit("a@remote.test", "Subject: replace me\r\nX-Secret: 42\r\nX-Tag: prepend\r\nX-Keep: 1\r\n\r\n"
                 "first\r\npassword: hunter2\r\ndrop this line\r\nlocal drop\r\nbody actions")
    data = got(sink, b"body actions")
    t.ok(sent(qid, "a@remote.test"), "a message whose every header and line is asked of the server is sent",
         p.log()[-2000:])
    t.is_(data[data.index(b"Subject: replaced"):],
          b"Subject: replaced by the table\r\nX-Prepended: from the table\r\nX-Tag: prepend\r\nX-Keep: 1\r\n\r\n"
          b"first\r\npassword: [removed]\r\nbody actions\r\n",
          "REPLACE, IGNORE, PREPEND from the remote table: exactly what the next hop got")
    t.ok(b"hunter2" not in data and b"X-Secret" not in data and b"local drop" not in data,
         "(nothing of what was removed; \"local drop\" by the local table before the remote one)")
    t.ok(b"local drop" not in server.seen("body") and b"body actions" in server.seen("body"),
         "a line the local table decided is not asked of the remote one; the others are")
    t.ok(p.wait_log(r"%s: replace: header Subject: replace me: Subject: replaced by the table" % qid),
         "logged as Postfix's smtp logs it")
    mine = (b"Subject: replace me", b"X-Secret: 42", b"X-Tag: prepend", b"X-Keep: 1")
    t.is_(sorted(k for k in server.seen("hdr") if k in mine), sorted(mine),
          "each header asked once (a window's lookups run in parallel on several connections, so the server "
          "sees them in any order; the order that matters is what the next hop got, above)")

    # ---- LMTP: lmtp_header_checks (and no lmtp_body_checks) ----
    qid = submit("l@lmtp.test", "Subject: replace me\r\nX-Secret: 42\r\n\r\npassword: hunter2\r\nbody lmtp")
    data = got(lmtp, b"body lmtp")
    t.ok(sent(qid, "l@lmtp.test"), "LMTP: sent", p.log()[-2000:])
    t.ok(data.endswith(b"Subject: replaced by the table\r\n\r\npassword: hunter2\r\nbody lmtp\r\n"),
         "the LMTP client applies the remote lmtp_header_checks, and not smtp_body_checks", data[-200:])

    # ---- a held header stops only its own delivery ----
    gate = threading.Event()
    server.slow[b"Subject: held"] = gate
    held = submit("h@remote.test", "Subject: held\r\nX-After: 1\r\n\r\nheld body\r\npassword: hunter2")
    t.ok(wait_for(lambda: b"Subject: held" in server.seen("hdr"), timeout=30),
         "a header lookup of the first message waits at the server")
    t.ok(wait_for(lambda: [tx for tx in sink.transactions() if tx["mail"] and tx["data"] is None
                           and any("h@remote.test" in r for r in tx["rcpts"])], timeout=30),
         "its transaction at the next hop is open, its content not sent", sink.transactions()[-1:])
    same = submit("s@remote.test", "Subject: same next hop\r\n\r\nbody same")
    t.ok(got(sink, b"body same"), "another message to the same next hop is delivered meanwhile")
    t.ok(sent(same, "s@remote.test"), "(logged sent)")
    far = submit("o@other.test", "Subject: other next hop\r\n\r\nbody other")
    t.ok(got(other, b"body other"), "and one to another next hop")
    t.ok(sent(far, "o@other.test"), "(logged sent)")
    t.ok(not data_with(sink, b"held body"), "while the first one still waits for its answer")
    t.ok(b"held body" in server.seen("body") and b"password: hunter2" in server.seen("body"),
         "its body lines, in the same window as the held header, were asked meanwhile (in parallel)")
    t.ok(p.wait_log(r"%s: to=<h@remote\.test>.*status=" % held, timeout=1) is None, "no result for it yet")
    gate.set()
    data = got(sink, b"held body")
    t.ok(sent(held, "h@remote.test"), "the answer in, the held delivery goes on and is sent", p.log()[-2000:])
    t.ok(data.endswith(b"Subject: held\r\nX-After: 1\r\n\r\nheld body\r\npassword: [removed]\r\n"),
         "with its content in order and the checks applied", data[-200:])
    hdr_seen = server.seen("hdr")
    t.ok(hdr_seen.index(b"Subject: held") < hdr_seen.index(b"Subject: same next hop"), "the server's log: the held "
         "header was asked before the other messages' headers, which were answered first")
    del server.slow[b"Subject: held"]

    # ---- a long body ----
    before = len(server.seen("body"))
    lines = ["line %d" % i for i in range(3000)]
    qid = submit("long@remote.test", "Subject: long\r\n\r\n" + "\r\n".join(lines) + "\r\nend of long")
    data = got(sink, b"end of long", timeout=60)
    t.ok(sent(qid, "long@remote.test"), "a 3000-line body through remote smtp_body_checks is sent")
    m = re.search(r"%s: to=<long@remote\.test>, .*delays=([\d./]+)" % qid, p.log())
    t.diag("3001 body lines through socketmap smtp_body_checks: delays=%s (the last: the transfer)"
           % (m.group(1) if m else "?"))
    want = []
    for line in lines:
        if line == "line 7":
            want.append("before line 7")
        if line == "line 1500":
            want.append("line 1500 replaced")
        elif line != "line 2999":
            want.append(line)
    want.append("end of long")
    t.is_(data[data.index(b"\r\n\r\n") + 4:], ("\r\n".join(want) + "\r\n").encode(),
          "every line in order, PREPEND, REPLACE and IGNORE where the table said")
    asked = server.seen("body")[before:]
    t.is_(len(asked), 3001, "every body line asked once")
    t.is_(sorted(asked), sorted([x.encode() for x in lines] + [b"end of long"]),
          "(each line once: a window's lookups run in parallel, so the server sees them in any order)")

    # ---- the server down ----
    server.stop()
    down = submit("d@remote.test", "Subject: server down\r\n\r\nbody down")
    t.ok(p.wait_log(r"%s: to=<d@remote\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*dsn=4\.3\.0, "
                    r"status=deferred \(local data error while talking to 127\.0\.0\.1\[127\.0\.0\.1\]\)"
                    % (down, sink.port), timeout=30),
         "server down: deferred 4.3.0 \"local data error while talking to HOST[ADDR]\" (Postfix)", p.log()[-2000:])
    t.ok(p.wait_log(r"warning: %s: smtp header checks lookup error" % down, timeout=30),
         "with Postfix's warning \"ID: smtp header checks lookup error\"")
    t.ok(not data_with(sink, b"body down"), "the next hop got nothing")
    server.restart()
    t.ok(sent(down, "d@remote.test", timeout=60), "the server back: delivered")
    t.ok(got(sink, b"body down"), "(the next hop has it)")

    # ---- stopping while a delivery waits ----
    gate = threading.Event()
    server.slow[b"Subject: stop held"] = gate
    submit("stop@remote.test", "Subject: stop held\r\n\r\nbody stop")
    t.ok(wait_for(lambda: b"Subject: stop held" in server.seen("hdr"), timeout=30), "a delivery waits")
    rc = p.stop()
    gate.set()
    t.is_(rc, 0, "petreld stops cleanly meanwhile")
    t.ok(not re.search(r"killed by signal|fatal|panic|AddressSanitizer", p.log()),
         "the queue manager ends without a crash (the wait is cancelled before the modules stop)", p.log()[-2000:])

server.stop()
sink.stop()
other.stop()
lmtp.stop()
t.done()
