"""Run by test_config_longtail.py inside a private mount namespace (unshare -m)
as root: /etc gets an overlay whose services(5) maps a made-up name to the
port of a local smtp-sink, and petreld with relayhost = [127.0.0.1]:NAME must
deliver there. Prints "namespace: delivered" when it did."""
import os
import shutil
import subprocess
import tempfile

from harness import Petrel, Tap, free_port, wait_for
from serverlib import Sink

NAME = "petrel-sink-test"

upper = tempfile.mkdtemp(prefix="petrel-etc-upper-")
work = tempfile.mkdtemp(prefix="petrel-etc-work-")
os.chmod(upper, 0o755)   # the upper directory's mode becomes /etc's: petreld runs as the test user
port = free_port()
with open(os.path.join(upper, "services"), "w") as f:
    with open("/etc/services") as orig:
        f.write(orig.read())
    f.write("%s\t%d/tcp\n" % (NAME, port))
subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=/etc,upperdir=%s,workdir=%s" % (upper, work),
                "/etc"], check=True)

sink = Sink(port, keep=True, backlog=10)
t = Tap()
try:
    with Petrel(t, extra_services="qmgr unix n - n 300 1 qmgr\n",
                main_cf={"relayhost": "[127.0.0.1]:%s" % NAME}) as p:
        c = p.connect()
        reply = c.send_message("s@petrel.test", ["r@far.example"], "Subject: by service name\r\n\r\nx")
        c.close()

        def delivered():
            return any("Subject: by service name" in m for m in sink.messages())
        if reply.startswith("250 ") and wait_for(delivered, 30):
            print("namespace: delivered")
        else:
            print("namespace: not delivered (%s)\n%s" % (reply, p.log()))
finally:
    sink.stop()
    subprocess.run(["umount", "/etc"])
    shutil.rmtree(upper, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
