"""More routing and scheduling: always_bcc, sender_bcc_maps, sender_canonical_maps,
masquerade_domains, delay warnings, and fairness (a dead-slow destination does not
hold up the others)."""
import os
import re
import time

from harness import Petrel, Tap, refused_port, maildir_messages as maildir, wait_for
from serverlib import Blackhole, Sink

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"


def setup(p, extra):
    boxes = p.virtual_mailboxes({"a@vmail.test": "a/", "bcc@vmail.test": "bcc/", "sbcc@vmail.test": "sbcc/",
                                 "v@vmail.test": "v/"}, extra)
    p.start()
    return boxes


with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"always_bcc": "bcc@vmail.test",
                      "sender_bcc_maps": "inline:{ {watched@example.org = sbcc@vmail.test} }",
                      "sender_canonical_maps": "inline:{ {old@example.org = new@example.org} }",
                      "masquerade_domains": "example.net",
                      "masquerade_exceptions": "root"})
    c = p.connect()
    c.send_message("someone@example.org", ["a@vmail.test"], "Subject: one\r\n\r\nx\r\n")
    t.ok(wait_for(lambda: maildir(os.path.join(boxes, "a"))), "the recipient gets the message")
    t.ok(wait_for(lambda: maildir(os.path.join(boxes, "bcc"))), "always_bcc gets a copy")
    c.send_message("watched@example.org", ["a@vmail.test"], "Subject: two\r\n\r\nx\r\n", ehlo=False)
    t.ok(wait_for(lambda: maildir(os.path.join(boxes, "sbcc"))), "sender_bcc_maps adds its recipient for that sender")
    c.send_message("old@example.org", ["a@vmail.test"], "Subject: three\r\n\r\nx\r\n", ehlo=False)
    c.send_message("user@host.example.net", ["a@vmail.test"], "Subject: four\r\n\r\nx\r\n", ehlo=False)
    c.send_message("root@host.example.net", ["a@vmail.test"], "Subject: five\r\n\r\nx\r\n", ehlo=False)
    msgs = wait_for(lambda: len(maildir(os.path.join(boxes, "a"))) >= 5 and maildir(os.path.join(boxes, "a")))
    joined = b"\n".join(msgs or [])
    t.ok(b"Return-Path: <new@example.org>" in joined, "sender_canonical_maps rewrites the envelope sender")
    t.ok(b"Return-Path: <user@example.net>" in joined, "masquerade_domains strips the host from the sender")
    t.ok(b"Return-Path: <root@host.example.net>" in joined, "masquerade_exceptions keeps root as it is")
    c.close()

# Header rewriting (Postfix's header_sender / header_recipient classes)
with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"sender_canonical_maps": "inline:{ {old@example.org = new@example.org} }",
                      "recipient_canonical_maps": "inline:{ {alias-a@vmail.test = a@vmail.test} }",
                      "masquerade_domains": "example.net"})
    c = p.connect()
    c.send_message("old@example.org", ["a@vmail.test"],
                   "From: Old Name <old@example.org>\r\nReply-To: user@host.example.net\r\n"
                   "To: alias-a@vmail.test, Other <other@elsewhere.test>\r\nSubject: rewrite\r\n\r\nbody\r\n")
    msgs = wait_for(lambda: maildir(os.path.join(boxes, "a")))
    m = msgs[0] if msgs else b""
    t.ok(b"From: Old Name <new@example.org>\n" in m, "sender_canonical_maps rewrites From: (display name kept)")
    t.ok(b"Reply-To: user@example.net\n" in m, "masquerade_domains rewrites a sender header")
    t.ok(b"To: a@vmail.test, Other <other@elsewhere.test>\n" in m, "recipient_canonical_maps rewrites To:, others untouched")
    t.ok(b"Subject: rewrite\n" in m and b"body\n" in m, "the rest of the message is intact")
    c.close()

dead = refused_port()
with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"transport_maps": "inline:{ {dead.test = smtp:[127.0.0.1]:%d} }" % dead,
                      "relay_domains": "dead.test", "delay_warning_time": "1s",
                      "minimal_backoff_time": "1s", "maximal_backoff_time": "1s", "queue_run_delay": "1s"})
    c = p.connect()
    reply = c.send_message("v@vmail.test", ["x@dead.test"], "Subject: slow\r\n\r\nx\r\n")
    qid = reply.split()[-1]
    t.ok(p.wait_log(r"%s: sender delay notification: \w+" % qid, timeout=20) is not None,
         "past delay_warning_time the sender is told the mail is delayed")
    notes = wait_for(lambda: maildir(os.path.join(boxes, "v")))
    t.ok(notes and b"Delayed Mail" in notes[0] and b"Action: delayed" in notes[0],
         "with a delay report (Action: delayed)")
    # two more attempts (each a second apart) after the notice: a second notice
    # would have been made at one of them
    notice = p.log().find("%s: sender delay notification" % qid)
    wait_for(lambda: len(re.findall(r"%s: to=<x@dead\.test>, .*status=deferred" % qid, p.log()[notice:])) >= 2,
             timeout=30)
    t.is_((len(maildir(os.path.join(boxes, "v"))), p.log().count("%s: sender delay notification" % qid)), (1, 1),
          "only once")
    c.close()

hole = Blackhole(backlog=512)
sink = Sink(options=("-c",))
sink_port = sink.port
with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"transport_maps": "inline:{ {slow.test = smtp:[127.0.0.1]:%d}, {fast.test = smtp:[127.0.0.1]:%d} }"
                                        % (hole.port, sink_port),
                      "relay_domains": "slow.test fast.test"})
    c = p.connect()
    c.ehlo()
    for i in range(30):
        c.send_message("s@example.org", ["r%d@slow.test" % i], "Subject: stuck %d\r\n\r\nx\r\n" % i, ehlo=False)
    start = time.time()
    qids = []
    for i in range(3):
        qids.append(c.send_message("s@example.org", ["r%d@fast.test" % i], "Subject: fast\r\n\r\nx\r\n", ehlo=False).split()[-1])
    # The slow destination's sessions wait out smtp_helo_timeout (300 s): mail that waited
    # for them would take minutes. Promptly is well within that on a loaded machine too.
    done = wait_for(lambda: all(p.wait_log(r"%s: to=<r\d@fast\.test>.*status=sent" % q, timeout=0.05) for q in qids), timeout=60)
    t.ok(done, "mail to a healthy destination flows while a dead-slow one holds its own slots")
    t.ok(time.time() - start < 60, "promptly (%.1f s, far less than the slow sessions' 300 s)" % (time.time() - start))
    t.ok(len(hole.conns) <= 20, "the slow destination gets at most its concurrency limit (%d connections)" % len(hole.conns))
    c.close()
hole.close()

# smtp_tls_policy_maps, per-transport concurrency and rate delay
hole2 = Blackhole(backlog=512)
with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"transport_maps": "inline:{ {tls.test = smtp:[127.0.0.1]:%d}, {plain.test = smtp:[127.0.0.1]:%d}, {slow.test = smtp:[127.0.0.1]:%d} }"
                                        % (sink_port, sink_port, hole2.port),
                      "relay_domains": "tls.test plain.test slow.test",
                      "smtp_tls_policy_maps": "inline:{ {[127.0.0.1]:%d = encrypt} }" % sink_port,
                      "smtp_destination_concurrency_limit": "2",
                      "minimal_backoff_time": "300s"})
    c = p.connect()
    c.ehlo()
    q1 = c.send_message("s@example.org", ["r@tls.test"], "Subject: must encrypt\r\n\r\nx\r\n", ehlo=False).split()[-1]
    t.ok(p.wait_log(r"%s: to=<r@tls\.test>.*dsn=4\.7\.4, status=deferred" % q1) is not None,
         "smtp_tls_policy_maps = encrypt: a next hop without STARTTLS defers (4.7.4)")
    hung = [c.send_message("s@example.org", ["x%d@slow.test" % i], "Subject: hang\r\n\r\nx\r\n", ehlo=False).split()[-1]
            for i in range(6)]
    # all six taken by the queue manager and two connections made: a third would
    # come at once; a second more to see it
    wait_for(lambda: all(re.search(r"%s: from=<s@example\.org>, .*\(queue active\)" % q, p.log()) for q in hung)
             and len(hole2.conns) >= 2, timeout=30)
    time.sleep(1)
    t.ok(len(hole2.conns) <= 2, "smtp_destination_concurrency_limit = 2 holds (%d connections)" % len(hole2.conns))
    c.close()
hole2.close()

with Petrel(t, extra_services=QMGR, start=False) as p:
    boxes = setup(p, {"transport_maps": "inline:{ {paced.test = smtp:[127.0.0.1]:%d} }" % sink_port,
                      "relay_domains": "paced.test", "smtp_destination_rate_delay": "1s"})
    c = p.connect()
    c.ehlo()
    start = time.time()
    qids = [c.send_message("s@example.org", ["p%d@paced.test" % i], "Subject: paced\r\n\r\nx\r\n", ehlo=False).split()[-1]
            for i in range(3)]
    done = wait_for(lambda: all(p.wait_log(r"%s: to=<p\d@paced\.test>.*status=sent" % q, timeout=0.05) for q in qids), timeout=20)
    t.ok(done, "rate-delayed deliveries all complete")
    t.ok(time.time() - start >= 1.8, "smtp_destination_rate_delay = 1s spaces them (%.1f s for 3)" % (time.time() - start))
    c.close()

# A master.cf pipe transport: argv with macros, flags, no shell
with Petrel(t, start=False, extra_services="") as p:
    outdir = p.make_dir("piped")
    script = p.write_file("deliver.sh", "#!/bin/sh\ncat > %s/\"$1\"\necho \"$2 $3\" > %s/\"$1.args\"\n" % (outdir, outdir), 0o755)
    master = p.master_cf + QMGR + "mypipe unix - n n - - pipe flags=R user=petrel argv=%s ${recipient} ${sender} ${extension}\n" % script
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(master)
    conf = dict(p.settings)
    conf.update({"transport_maps": "inline:{ {piped.test = mypipe:} }", "relay_domains": "piped.test",
                 "recipient_delimiter": "+"})
    p.write_main_cf(conf)
    p.start()
    c = p.connect()
    reply = c.send_message("s@example.org", ["u+tag@piped.test"], "Subject: piped\r\n\r\nthrough a pipe\r\n")
    qid = reply.split()[-1]
    # the shell creates the .args file before echo writes to it: wait for its line
    out = wait_for(lambda: os.path.exists(os.path.join(outdir, "u+tag@piped.test.args")) and
                   open(os.path.join(outdir, "u+tag@piped.test.args")).read().endswith("\n") and
                   open(os.path.join(outdir, "u+tag@piped.test"), "rb").read())
    t.ok(out and b"through a pipe\n" in out, "a master.cf pipe transport gets the message on stdin")
    t.ok(out and out.startswith(b"Return-Path: <s@example.org>"), "flags=R adds Return-Path")
    args = open(os.path.join(outdir, "u+tag@piped.test.args")).read() if out else ""
    t.is_(args.strip(), "s@example.org tag", "argv= macros ${sender} and ${extension} are expanded, no shell")
    t.ok(p.wait_log(r"%s: to=<u\+tag@piped\.test>, relay=mypipe, .*status=sent" % qid) is not None,
         "logged with relay=mypipe")
    c.close()

sink.stop()
t.done()
