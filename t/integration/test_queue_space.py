"""Queue file system space: queue_minfree refuses MAIL with 452 4.3.1; a disk that fills up
mid-DATA gives 451 4.3.0 (never 250), removes the partial file, and the server keeps serving."""
import os
import subprocess
import tempfile

from harness import Petrel, Tap, run_as_user

t = Tap()

# queue_minfree larger than any disk here: MAIL is refused before any data is taken.
with Petrel(t, main_cf={"queue_minfree": "1000000000000000"}) as p:
    c = p.connect()
    c.ehlo()
    t.is_(c.cmd("MAIL FROM:<a@example.org>"), "452 4.3.1 Insufficient system storage",
          "MAIL below queue_minfree gets 452 4.3.1")
    t.ok(p.wait_log(r"warning: not enough free space in the queue file system") is not None, "and a warning is logged")
    c.close()

# A queue on a 2 MiB tmpfs: a 3 MB message cannot fit (ENOSPC while writing).
if os.geteuid() != 0:
    t.ok(False, "this test mounts a small tmpfs and must run as root")
    t.done()
mnt = tempfile.mkdtemp(prefix="petrel-smallfs-")
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", mnt], check=True)
try:
    os.mkdir(os.path.join(mnt, "queue"))
    _, pw = run_as_user()
    if pw:
        os.chown(os.path.join(mnt, "queue"), pw.pw_uid, pw.pw_gid)
    # queue_minfree = 1 byte and a small message_size_limit keep the MAIL-time
    # check (1.5 x message_size_limit) from refusing first: the write must fail.
    with Petrel(t, main_cf={"queue_directory": os.path.join(mnt, "queue"), "queue_minfree": "1",
                            "message_size_limit": "1000000"}) as p:
        c = p.connect()
        c.ehlo()
        t.is_(c.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0 Ok", "MAIL is accepted while space remains")
        c.cmd("RCPT TO:<u@petrel.test>")
        c.cmd("DATA")
        # Fill the file system behind the daemon's back, then send a message that no longer fits.
        filler = os.path.join(mnt, "filler")
        subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k", "count=100"], capture_output=True)
        c.send(b"Subject: too big for the disk\r\n\r\n" + (b"y" * 998 + b"\r\n") * 900 + b".\r\n")
        reply = c.read_reply()
        t.is_(reply, "451 4.3.0 Error: queue file write error", "ENOSPC mid-DATA answers 451 4.3.0, never 250")
        t.ok(p.wait_log(r"queue file write error: No space left on device") is not None, "the log says why")
        t.is_(p.queue_files(), [], "the partial queue file is removed")
        os.unlink(filler)
        reply = c.send_message("a@example.org", ["u@petrel.test"], "Subject: small\r\n\r\nfits\r\n", ehlo=False)
        t.like(reply, r"^250 2\.0\.0 Ok: queued as ", "with space back, the same session delivers a message")
        c.close()
finally:
    subprocess.run(["umount", "-l", mnt])
    os.rmdir(mnt)
t.done()
