"""The clamd and spamd clients (through t/tools/scan-drive, the code the
clamav and spamassassin modules run) against a daemon that accepts the
connection, takes the whole request and never answers: the client gives up
with its timeout, says so in the log and in its result, and the driver
still ends normally. This is the wait shared by both clients
(modules/common/peer_connect.c: the timer re-armed for the rest of the wait
after progress, the wait over when there was none).

Then the modules in petreld, with a connect timeout far longer than the
timeout: once connected, the shorter wait is the one that counts (the timer
armed for connecting is brought forward), so the message gets the
failure action's reply within the SMTP client's patience."""
import socket
import tempfile
import threading

from harness import CLEANUP_DIRS, Petrel, Smtp, Tap
from modlib import bundled_module_dir
from peers import scan_drive, write_message

t = Tap(timeout=300)
work = tempfile.mkdtemp(prefix="petrel-stalls-")
CLEANUP_DIRS.append(work)
message = write_message(work, "ham.eml", [("From", "a@example.com"), ("To", "b@example.org"),
                                          ("Subject", "stall")], "hello\n")


def stalled_server():
    """Accepts one connection, reads until the client stops sending, then holds it open without a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(120)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        done.wait(120)
        conn.close()
        srv.close()
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], done


for kind, waiting in (("spamd", "waiting for the answer"), ("clamd", "waiting for the reply")):
    port, done = stalled_server()
    rc, lines = scan_drive(kind, "--timeout", "1000", "127.0.0.1:%d" % port, message, timeout=120)
    done.set()
    want = "timeout after 1000 ms %s" % waiting
    t.ok(rc == 0 and ("log: warning %s 127.0.0.1:%d: %s" % (kind, port, want)) in lines,
         "a %s that never answers: the client times out and logs it" % kind, "\n".join(lines))
    t.ok(any(line.startswith("result: failed") and line.endswith(want) for line in lines),
         "  and its result is a failure naming the timeout", "\n".join(lines))

def send(p, body):
    """One message; the DATA reply. The client waits 60 s, far below the 600 s connect timeout."""
    c = Smtp(p.port, timeout=60)
    c.ehlo()
    c.cmd("MAIL FROM:<sender@example.org>")
    c.cmd("RCPT TO:<u@petrel.test>")
    c.cmd("DATA")
    c.send(body.encode() + b"\r\n.\r\n")
    try:
        r = c.read_reply()
    except OSError as e:
        r = "no reply: %s" % e
    c.close()
    return r


for module, extra in (("clamav", {}), ("spamassassin", {"spamassassin_failure_action": "tempfail"})):
    port, done = stalled_server()
    main_cf = {"modules": module, "module_directory": bundled_module_dir(module),
               module + ("_clamd" if module == "clamav" else "_spamd"): "127.0.0.1:%d" % port,
               module + "_connect_timeout": "600s", module + "_timeout": "1s"}
    main_cf.update(extra)
    with Petrel(t, main_cf=main_cf) as p:
        r = send(p, "Subject: stall\r\n\r\nhello")
        done.set()
        t.is_(r, "451 4.7.1 Service unavailable - try again later",
              "%s: %s_timeout = 1s counts once connected, though %s_connect_timeout is 600s"
              % (module, module, module))
        t.ok(p.wait_log(r"%s: cannot scan the message: .*timeout after 1000 ms" % module) is not None,
             "  and the timeout is logged")

t.done()
