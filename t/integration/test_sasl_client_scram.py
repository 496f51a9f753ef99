"""The SMTP client's SCRAM-SHA-256 and CRAM-MD5 with what the old fixed buffers broke
(core/deliver/smtp_scram.c): a 1500-byte user name from smtp_sasl_password_maps against a
Dovecot relayhost (SCRAM and CRAM-MD5 log in as that user; the name used to be read past a
600- and a 1024-byte buffer); and a SCRAM server on loopback (Python, RFC 5802/7677 server
side) sending a 1500-byte nonce and a 900-byte salt (taken whole: it used to be cut at 600
bytes), an m= mandatory extension, a server-first past the 4096-byte bound, an e= error and a
wrong server signature: each a deferral whose log line names why, with "*" sent to cancel."""
import base64
import hashlib
import hmac
import os
import time

from harness import Tap
from modlib import bundled_module_dir
from dovecotlib import require_dovecot
from sasllib import DovecotAuth, auth_relay, b64, relaying_client, submit_far as submit
from serverlib import LoopbackServer

t = Tap(timeout=300)
PASSWORD = "Long-Pw-19"
LONG_USER = "u" * 1490 + "@long.test"


class ScramServer(LoopbackServer):
    """An SMTP server offering AUTH SCRAM-SHA-256 for one user; self.mode says how to answer:
    "long" (a 1500-byte server nonce part, a 900-byte salt: a good exchange), "m" (m= first),
    "huge" (a 5000-byte server-first), "e" (e= in the server-final), "badsig" (a wrong v=)."""

    def __init__(self, user, password):
        self.user, self.password, self.mode = user, password, "long"
        self.seen = []
        super().__init__()

    def session(self, conn):
        f = conn.makefile("rb")

        def send(line):
            conn.sendall(line.encode() + b"\r\n")

        def read():
            line = f.readline(65536).decode("latin-1").rstrip("\r\n")
            self.seen.append(line[:80])
            return line

        try:
            send("220 scram.test ESMTP")
            authed = False
            while True:
                line = read()
                if not line:
                    return
                verb = line.split(" ")[0].upper()
                if verb == "EHLO":
                    send("250-scram.test")
                    send("250 AUTH SCRAM-SHA-256")
                elif verb == "AUTH":
                    authed = self.scram(line, send, read)
                elif verb in ("MAIL", "RCPT") and authed:
                    send("250 2.1.0 Ok")
                elif verb == "DATA" and authed:
                    send("354 go")
                    while read() != ".":
                        pass
                    send("250 2.0.0 Ok: queued")
                elif verb == "QUIT":
                    send("221 bye")
                    return
                else:
                    send("530 5.7.0 Authentication required")
        except OSError:
            return
        finally:
            conn.close()

    def scram(self, line, send, read):
        words = line.split(" ")
        if len(words) == 2:
            # no initial response: the AUTH line would pass 512 octets (RFC 4954 4)
            self.seen.append("AUTH without initial response")
            send("334 ")
            words.append(read())
        first = base64.b64decode(words[2]).decode()
        self.seen.append("client-first " + first)
        first_bare = first[3:]
        attrs = dict(a.split("=", 1) for a in first_bare.split(","))
        nonce = attrs["r"] + ("abcdefgh" * 200)[:1500]
        salt = os.urandom(900)
        server_first = "r=%s,s=%s,i=4096" % (nonce, b64(salt))
        if self.mode == "m":
            server_first = "m=must-know," + server_first
        elif self.mode == "huge":
            server_first = "r=%s,s=%s,i=4096" % (attrs["r"] + "n" * 5000, b64(salt))
        send("334 " + b64(server_first))
        final = read()
        if final == "*":
            send("501 5.7.0 Authentication aborted")
            return False
        final = base64.b64decode(final).decode()
        without_proof, proof = final.rsplit(",p=", 1)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, 4096)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        auth_message = ",".join((first_bare, server_first, without_proof)).encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, hashlib.sha256).digest()
        got_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        if attrs["n"] != self.user or without_proof != "c=biws,r=" + nonce or got_key != client_key:
            self.seen.append("bad proof or user")
            send("535 5.7.8 Error: authentication failed")
            return False
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        verifier = b64(hmac.new(server_key, auth_message, hashlib.sha256).digest())
        if self.mode == "e":
            send("334 " + b64("e=other-error"))
        elif self.mode == "badsig":
            send("334 " + b64("v=" + b64(b"\0" * 32)))
        else:
            send("334 " + b64("v=" + verifier))
        if read() != "":
            send("501 5.7.0 Authentication aborted")
            return False
        send("235 2.7.0 Authentication successful")
        return True


def sender(port, user, password, **extra):
    return relaying_client(t, port, user, password,
                           **dict({"smtp_tls_security_level": "none", "smtp_sasl_security_options": "noanonymous"},
                                  **extra))


def lines(p):
    return [l for l in p.log().splitlines() if "far.example" in l or "SASL" in l][:4]


# the hostile and the long-but-legal SCRAM server
srv = ScramServer(LONG_USER, PASSWORD)
DESC = r"127\.0\.0\.1\[127\.0\.0\.1\]"
with sender(srv.port, LONG_USER, PASSWORD) as a:
    t.like(submit(a, "long"), r"^250 ", "mail for the SCRAM relayhost accepted")
    t.ok(a.wait_log(r"to=<someone@far\.example>, relay=%s:%d, .*status=sent" % (DESC, srv.port), timeout=30)
         is not None, "a 1500-byte server nonce and a 900-byte salt, and a 1500-byte user name: "
         "the exchange completes and the mail is sent", lines(a) + srv.seen[-6:])
    t.ok(any(s.startswith("client-first n,,n=" + LONG_USER + ",r=") for s in srv.seen),
         "the client-first message carried the whole user name")
    t.ok("AUTH without initial response" in srv.seen,
         "after an AUTH line without it: the line would have passed 512 octets (RFC 4954 4)")
for mode, why in (("m", "the server requires a SCRAM extension \\(m=\\) that we do not support"),
                  ("huge", "the SCRAM server-first message is longer than 4096 bytes"),
                  ("e", "the server's SCRAM error: other-error"),
                  ("badsig", "the server's SCRAM signature is wrong")):
    srv.mode = mode
    before = len(srv.seen)
    with sender(srv.port, LONG_USER, PASSWORD) as a:
        submit(a, mode)
        t.ok(a.wait_log(r"to=<someone@far\.example>, relay=%s:%d, .*dsn=4\.7\.0, status=deferred "
                        r"\(SASL authentication failed; cannot authenticate to server %s: %s\)"
                        % (DESC, srv.port, DESC, why), timeout=30) is not None,
             "SCRAM %s: deferred, the log line naming why" % mode, lines(a))
        # the deferral is logged when the client has sent "*", maybe before this
        # server's thread has read it: wait for the line, not for the log
        deadline = time.time() + 30
        while "*" not in srv.seen[before:] and time.time() < deadline:
            time.sleep(0.05)
        t.ok("*" in srv.seen[before:], "SCRAM %s: the client cancelled the exchange with '*'" % mode,
             srv.seen[before:])
        # the session's end (QUIT, or the close the server reads as "") comes after any MAIL
        deadline = time.time() + 30
        while not any(s in ("QUIT", "") for s in srv.seen[before:]) and time.time() < deadline:
            time.sleep(0.05)
        t.ok(any(s in ("QUIT", "") for s in srv.seen[before:]) and
             not any(s.startswith("MAIL") for s in srv.seen[before:]), "SCRAM %s: and sent no MAIL" % mode,
             srv.seen[before:])
srv.sock.close()

# a real relayhost: Dovecot checks SCRAM-SHA-256 and CRAM-MD5 for the long name
require_dovecot(t)
dc = DovecotAuth({LONG_USER: PASSWORD})
dc.start()
try:
    sink = auth_relay(t, dc, bundled_module_dir("sasl"), tls=False)
    with sink:
        for mech in ("SCRAM-SHA-256", "CRAM-MD5"):
            with sender(sink.port, LONG_USER, PASSWORD, smtp_sasl_mechanism_filter=mech.lower()) as a:
                t.like(submit(a, mech), r"^250 ", "mail for the Dovecot relayhost accepted (%s)" % mech)
                # (the log line is bounded: the name's start is enough; the relay's
                # permit_sasl_authenticated let the mail through)
                t.ok(sink.wait_log(r"sasl_method=%s, sasl_username=u{200}" % mech, timeout=30)
                     is not None, "%s with a 1500-byte user name: the relayhost saw that user" % mech,
                     "\n".join([l for l in sink.log().splitlines() if "sasl" in l.lower()][-3:]) + "\n" +
                     dc.logs()[-800:])
                t.ok(a.wait_log(r"to=<someone@far\.example>, .*status=sent", timeout=30) is not None,
                     "%s: and the mail is sent" % mech, lines(a))
finally:
    dc.cleanup()
t.done()
