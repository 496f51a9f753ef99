"""Transaction and session notes (ABI 1.1): apimod sets apimod.client for the
session and apimod.sender for a transaction; notemod reads them in its rcpt
and end_of_message hooks. RSET ends the transaction's notes, not the
session's; a module may set only names in its own namespace."""
from harness import Petrel, Tap, queue_file_bytes
from modlib import module_dir

t = Tap()
mods = module_dir("apimod", "notemod")
# smtpd_reject_unlisted_recipient = no: the recipients are made up (a new one per transaction).
with Petrel(t, main_cf={"modules": "apimod notemod", "module_directory": mods,
                        "smtpd_reject_unlisted_recipient": "no"}) as p:
    c = p.connect()
    c.ehlo()
    t.ok(p.wait_log(r"apimod: transaction note before MAIL: -1") is not None,
         "a transaction note outside a transaction is refused")
    t.ok(p.wait_log(r"module apimod: petrel_note_set: note \"apimod\.helo\" is a transaction note outside a "
                    r"transaction: ignored") is not None, "and logged")
    t.is_(c.cmd("MAIL FROM:<note-a@example.org>"), "250 2.1.0 Ok", "MAIL")
    t.ok(p.wait_log(r"apimod: note in another module's namespace: -1") is not None,
         "a module cannot set a note in another module's namespace")
    t.is_(c.cmd("RCPT TO:<u@petrel.test>"), "250 2.1.5 Ok", "RCPT")
    t.ok(p.wait_log(r"notemod: saw apimod\.sender=note-a@example\.org apimod\.client=127\.0\.0\.1 "
                    r"notemod\.forged=\(unset\) notemod\.seen=u@petrel\.test \(overwriting apimod's note: -1\)")
         is not None, "another module reads the transaction and session notes; nobody overwrites apimod's")
    c.cmd("RSET")
    c.cmd("MAIL FROM:<plain@example.org>")
    c.cmd("RCPT TO:<v@petrel.test>")
    t.ok(p.wait_log(r"notemod: saw apimod\.sender=\(unset\) apimod\.client=127\.0\.0\.1 notemod\.forged=\(unset\) "
                    r"notemod\.seen=v@petrel\.test") is not None,
         "RSET clears the transaction's notes; the session's stay")
    c.cmd("RSET")
    r = c.send_message("note-b@example.org", ["w@petrel.test"], "Subject: notes\r\n\r\nbody\r\n", ehlo=False)
    t.like(r, r"^250 2\.0\.0 Ok: queued as ", "a message is accepted")
    qid = r.split()[-1]
    data = b"".join(queue_file_bytes(f) for f in p.queue_files() if f.endswith(qid))
    t.ok(b"\r\nX-Notes: sender=note-b@example.org; client=127.0.0.1\r\n" in data,
         "end_of_message sees the notes (X-Notes header)", data[-300:])
    c.cmd("MAIL FROM:<plain@example.org>")
    c.cmd("RCPT TO:<x@petrel.test>")
    t.ok(p.wait_log(r"notemod: saw apimod\.sender=\(unset\) apimod\.client=127\.0\.0\.1 notemod\.forged=\(unset\) "
                    r"notemod\.seen=x@petrel\.test") is not None, "a new transaction after DATA starts without notes")
    c.close()
    c = p.connect()
    c.ehlo()
    c.cmd("MAIL FROM:<plain@example.org>")
    c.cmd("RCPT TO:<y@petrel.test>")
    t.ok(p.wait_log(r"notemod: saw apimod\.sender=\(unset\) apimod\.client=127\.0\.0\.1 notemod\.forged=\(unset\) "
                    r"notemod\.seen=y@petrel\.test") is not None, "a new session has its own session notes")
    c.close()
t.done()
