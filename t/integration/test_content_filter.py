"""After-queue content filters (Postfix's FILTER_README), end to end, with an SMTP filter of our
own (t/integration/smtpfilter.py) that sends mail back into petreld the way amavisd-new does:
content_filter on a listener, the return listener with "-o content_filter=" and
receive_override_options, delivered exactly once with no loop; no_address_mappings (the filter
sees the original recipient, the mapping happens after it); a filter that is down (deferred, then
delivered by a flush), that rejects (a bounce), that defers; the FILTER action of header_checks and
of access maps; default_filter_nexthop; and a content_filter that names no transport is refused
at start."""
import os
import re
import subprocess

from harness import PETRELD, Petrel, Tap, free_port, refused_port, revive_port, maildir_messages, wait_for
from smtpfilter import SmtpFilter

t = Tap(timeout=400)

QMGR = "qmgr unix n - n 300 1 qmgr\n"
ret_port = free_port()
filt = SmtpFilter(reinject_port=ret_port)
rejecting = SmtpFilter(replies={"dot": "554 5.7.1 Virus found by the filter"})
deferring = SmtpFilter(replies={"dot": "451 4.3.2 Filter busy, try later"})
dead_port = refused_port()
ports = {name: free_port() for name in ("mapped", "plain", "dead", "reject", "defer", "nexthop", "pipe")}

with Petrel(t, main_cf={}, start=False) as p:
    mail = p.make_dir()
    hc = p.write_file("header_checks", "/^Subject: filter-me/ FILTER scan:[127.0.0.1]:%d\n"
                                       "/^Subject: redirect-me/ REDIRECT v@vmail.test\n" % filt.port)
    # A pipe content filter (FILTER_README's simple filter), here one that keeps what it gets.
    piped = p.make_dir("piped")
    pipe_script = p.write_file("pfilter.sh", "#!/bin/sh\ncat > %s/msg\necho \"$@\" > %s/args\n" % (piped, piped), 0o755)
    conf = dict(p.settings)
    conf.update({
        "virtual_mailbox_domains": "vmail.test",
        "virtual_mailbox_base": mail,
        "virtual_mailbox_maps": "inline:{ {u@vmail.test = vmail.test/u/}, {v@vmail.test = vmail.test/v/}, "
                                "{filtered@vmail.test = vmail.test/filtered/} }",
        "virtual_alias_maps": "inline:{ {alias@vmail.test = u@vmail.test} }",
        "header_checks": "regexp:" + hc,
        "smtpd_recipient_restrictions": "check_recipient_access inline:{ {filtered@vmail.test = FILTER "
                                        "scan:[127.0.0.1]:%d} }, permit_mynetworks, reject_unauth_destination"
                                        % filt.port,
        "default_filter_nexthop": "[127.0.0.1]:%d" % filt.port,
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "queue_run_delay": "1s",
        "maillog_file": p.log_path,
    })
    p.write_main_cf(conf)

    def listener(port, *opts):
        return "127.0.0.1:%d inet n - n - - smtpd\n" % port + "".join("  -o %s\n" % o for o in opts)

    master = listener(p.port, "content_filter=scan:[127.0.0.1]:%d" % filt.port,
                      "receive_override_options=no_address_mappings")
    master += listener(ports["mapped"], "content_filter=scan:[127.0.0.1]:%d" % filt.port)
    master += listener(ports["plain"])
    master += listener(ports["dead"], "content_filter=scan:[127.0.0.1]:%d" % dead_port)
    master += listener(ports["reject"], "content_filter=scan:[127.0.0.1]:%d" % rejecting.port)
    master += listener(ports["defer"], "content_filter=scan:[127.0.0.1]:%d" % deferring.port)
    master += listener(ports["nexthop"], "content_filter=scan:")
    master += listener(ports["pipe"], "content_filter=pfilter:dummy")
    master += "pfilter unix - n n - 10 pipe flags=Rq user=petrel argv=%s -f ${sender} -- ${recipient}\n" % pipe_script
    # The return path, as FILTER_README has it.
    master += listener(ret_port, "content_filter=",
                       "receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters",
                       "smtpd_helo_restrictions=", "smtpd_client_restrictions=", "smtpd_sender_restrictions=",
                       "smtpd_relay_restrictions=", "smtpd_recipient_restrictions=permit_mynetworks,reject",
                       "mynetworks=127.0.0.0/8")
    master += "scan unix - - n - 10 smtp\n  -o smtp_data_done_timeout=1200\n" + QMGR
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(master)
    p._chown()
    p.start()

    def inbox(user="u"):
        return maildir_messages(os.path.join(mail, "vmail.test", user))

    def delivered(tag, user="u"):
        found = wait_for(lambda: [m for m in inbox(user) if tag.encode() in m], timeout=60)
        return found

    def send(body, rcpts=("u@vmail.test",), port=None, sender="sender@example.org"):
        return p.send_message(sender, rcpts, body, port=port)

    # 1. The whole round trip, no_address_mappings before the filter.
    r = send("Subject: round trip\r\n\r\nbody round trip", rcpts=("alias@vmail.test",))
    t.like(r, r"^250 2\.0\.0 Ok: queued as \w+", "a message for a filtered listener is accepted")
    qid = r.split()[-1]
    got = delivered("body round trip")
    t.is_(len(got), 1, "it is delivered exactly once after the filter")
    m = got[0] if got else b""
    t.is_(m.count(b"X-Filtered-By: smtpfilter"), 1, "having passed the filter once (no loop)")
    t.is_(len([tx for tx in filt.transactions() if tx["data"] and b"body round trip" in tx["data"]]), 1,
          "the filter saw it once")
    tx = [x for x in filt.transactions() if x["data"] and b"body round trip" in x["data"]]
    t.ok(tx and tx[0]["rcpts"] == ["RCPT TO:<alias@vmail.test>"],
         "no_address_mappings: the filter sees the recipient as it was sent", tx and tx[0]["rcpts"])
    m1 = p.wait_log(r"petrel/scan\[\d+\]: %s: to=<alias@vmail\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*"
                    r"status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)" % (qid, filt.port))
    t.ok(m1 is not None, "the queue manager hands it to the scan transport (logged as petrel/scan)")
    if m1:
        t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, orig_to=<alias@vmail\.test>, relay=virtual, .*status=sent"
                        % m1.group(1)) is not None,
             "the message that came back is mapped (virtual alias) and delivered")
    t.ok(b"Received: from filter.test" in m and b"Received: from client.example.org" in m,
         "both passes left their Received header")

    # 2. Mappings before the filter (no receive_override_options).
    send("Subject: mapped\r\n\r\nbody mapped first", rcpts=("alias@vmail.test",), port=ports["mapped"])
    t.ok(delivered("body mapped first"), "mapped before the filter: delivered")
    tx = [x for x in filt.transactions() if x["data"] and b"body mapped first" in x["data"]]
    t.ok(tx and tx[0]["rcpts"] == ["RCPT TO:<u@vmail.test>"],
         "without no_address_mappings the filter sees the mapped recipient", tx and tx[0]["rcpts"])

    # 3. A filter that is down: deferred, with the filter kept; then delivered.
    r = send("Subject: filter down\r\n\r\nbody filter down", port=ports["dead"])
    qid = r.split()[-1]
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, .*status=deferred \(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
                    r"Connection refused\)" % (qid, dead_port)) is not None,
         "a filter that is down defers the message")
    show = wait_for(lambda: p.petrelctl("queue", "show", qid).stdout if any(
        f.endswith("/" + qid) for f in p.queue_files("deferred")) else None)
    t.like(show or "", r"content_filter: scan:\[127\.0\.0\.1\]:%d" % dead_port,
           "the queue file keeps its content filter (petrelctl queue show)")
    revive_port(dead_port)
    late = SmtpFilter(reinject_port=ret_port, port=dead_port)
    p.petrelctl("queue", "flush")
    t.ok(delivered("body filter down"), "once the filter is back, a flush sends it through and it is delivered")
    late.stop()

    # 4. A filter that rejects: the sender gets a bounce, the recipient nothing.
    r = send("Subject: infected\r\n\r\nbody infected", sender="v@vmail.test", port=ports["reject"])
    qid = r.split()[-1]
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*dsn=5\.7\.1, status=bounced "
                    r"\(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 554 5\.7\.1 Virus found by the filter "
                    r"\(in reply to end of DATA command\)\)" % (qid, rejecting.port)) is not None,
         "the filter's rejection bounces the message")
    bounce = wait_for(lambda: [m for m in inbox("v") if b"Virus found by the filter" in m])
    t.ok(bounce, "the sender gets the non-delivery notice")
    t.ok(not [m for m in inbox("u") if b"body infected" in m], "the recipient gets nothing")

    # 5. A filter that defers.
    r = send("Subject: busy\r\n\r\nbody busy", port=ports["defer"])
    qid = r.split()[-1]
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, .*status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 451 4\.3\.2 "
                    r"Filter busy, try later" % qid) is not None, "a filter's 4xx defers the message")

    # 6. FILTER from header_checks and from an access map, on a listener without content_filter.
    before = len(filt.transactions())
    r = send("Subject: filter-me please\r\n\r\nbody header filter", port=ports["plain"])
    qid = r.split()[-1]
    m1 = p.wait_log(r"(\w+): filter: header Subject: filter-me please from unknown\[127\.0\.0\.1\]; "
                    r"from=<sender@example\.org> to=<u@vmail\.test> proto=ESMTP helo=<client\.example\.org>: "
                    r"scan:\[127\.0\.0\.1\]:%d" % filt.port)
    t.ok(m1 is not None, "header_checks FILTER is logged as Postfix's cleanup logs it")
    t.ok(m1 and m1.group(1) == qid and p.wait_log(r"%s: edited by header/body checks \(1 change\)" % qid) is not None,
         "the queue file, already open, is written again with the filter, under the same queue ID")
    got = delivered("body header filter")
    t.ok(got and got[0].count(b"X-Filtered-By: smtpfilter") == 1, "the message went through that filter, once")
    r = send("Subject: access\r\n\r\nbody access filter", rcpts=("filtered@vmail.test",), port=ports["plain"])
    t.ok(p.wait_log(r"filter: RCPT from unknown\[127\.0\.0\.1\]: <filtered@vmail\.test>: Recipient address "
                    r"triggers FILTER scan:\[127\.0\.0\.1\]:%d" % filt.port) is not None,
         "an access map's FILTER is logged")
    got = delivered("body access filter", "filtered")
    t.ok(got and b"X-Filtered-By: smtpfilter" in got[0], "and the message goes through the filter")
    t.is_(len(filt.transactions()) - before, 2, "each FILTER sent one message to the filter")

    # 7. An empty filter next hop: default_filter_nexthop.
    send("Subject: nexthop\r\n\r\nbody default nexthop", port=ports["nexthop"])
    got = delivered("body default nexthop")
    t.ok(got and b"X-Filtered-By: smtpfilter" in got[0], "content_filter = scan: goes to default_filter_nexthop")

    # 8. REDIRECT overrides the content filter (Postfix's queue manager).
    before = len(filt.transactions())
    r = send("Subject: redirect-me\r\n\r\nbody redirect no filter")
    got = delivered("body redirect no filter", "v")
    t.ok(got and b"X-Filtered-By" not in got[0], "a REDIRECT of header_checks overrides content_filter: the target "
         "gets the message without the filter", got and got[0][:300])
    t.is_(len(filt.transactions()) - before, 0, "and the filter never saw it")

    # 9. A pipe transport as the content filter.
    r = send("Subject: piped\r\n\r\nbody to the pipe filter", rcpts=("alias@vmail.test",), port=ports["pipe"])
    qid = r.split()[-1]
    # the shell creates args before echo writes to it: wait for its line
    got = wait_for(lambda: os.path.exists(os.path.join(piped, "args")) and
                   open(os.path.join(piped, "args")).read().endswith("\n") and
                   open(os.path.join(piped, "msg"), "rb").read())
    t.ok(got and b"body to the pipe filter" in got, "content_filter = pfilter:dummy hands the message to a pipe "
         "transport on stdin")
    args = open(os.path.join(piped, "args")).read().strip() if got else ""
    t.is_(args, "-f sender@example.org -- u@vmail.test",
          "with the sender and the recipient (after virtual alias mapping) as its argv")
    t.ok(p.wait_log(r"%s: to=<u@vmail\.test>, orig_to=<alias@vmail\.test>, relay=pfilter, .*status=sent" % qid)
         is not None or p.wait_log(r"%s: to=<u@vmail\.test>, relay=pfilter, .*status=sent" % qid, timeout=1)
         is not None, "logged as delivered to the pfilter transport")
    t.ok(not [m for m in inbox() if b"body to the pipe filter" in m],
         "and nothing reaches the mailbox but what the filter sends back")

    # 10. A content filter that names no transport stops the start.
    with open(os.path.join(p.conf, "master.cf")) as f:
        good = f.read()
    with open(os.path.join(p.conf, "master.cf"), "a") as f:
        f.write(listener(free_port(), "content_filter=nosuch:[127.0.0.1]:1"))
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True)
    t.ok(r.returncode != 0 and re.search(r"content_filter: transport nosuch is not a master\.cf service",
                                         r.stdout + r.stderr),
         "petreld -n refuses a content_filter whose transport does not exist", r.stdout + r.stderr)
    with open(os.path.join(p.conf, "master.cf"), "w") as f:
        f.write(good)
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True)
    t.is_(r.returncode, 0, "and accepts the configuration without it")

for f in (filt, rejecting, deferring):
    f.stop()
t.done()
