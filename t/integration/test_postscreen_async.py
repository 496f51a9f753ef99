"""postscreen's tables in remote tables, against real servers on loopback (a socketmap server,
a private PostgreSQL, dnsmasq for the DNS lists): postscreen_access_list (permit, reject and
dunno from the table, a lookup error and a server that is down: Postfix's warning, and the
rest of the list ignored), postscreen_forbidden_commands (the command waits for its answer, a
failing table means "not forbidden" with Postfix's warning) and postscreen_dnsbl_reply_map
(the reply shows the table's name for the list; a failing table never shows the secret name).
The screened client waits for its answer; another client on the same (only) worker completes
a whole mail transaction meanwhile. The order is decided by the test (the server holds an
answer until the test lets it go), not by timing."""
import select
import threading

from harness import Dnsmasq, Tap, wait_for
from pglib import PgCluster
from psclib import BANNER, PASSED_BANNER, client_port, connect, postscreen
from socketmaplib import SocketmapServer, netstring
from tablelib import bundled_module_dir

t = Tap(timeout=400)
MODULES = bundled_module_dir("socketmap", "pgsql")
TEMP = netstring(b"TEMP resting")
NSMTP_DROP = "521 5.7.0 Error: I can break rules, too. Goodbye."


def silent(c, wait=0.5):
    """Whether the server has said nothing to c (within wait seconds)."""
    ready, _, _ = select.select([c.sock], [], [], wait)
    return not ready


def whole_transaction(p, src, what):
    """A client the access list permits at once: smtpd greets it, and it sends a message."""
    c = connect(p.port, src)
    t.is_(c.lines, ["220 " + PASSED_BANNER], "%s: another client is allowlisted and greeted by smtpd" % what)
    r = c.send_message("sender@example.org", ["user@petrel.test"], "Subject: meanwhile\r\n\r\nhi\r\n")
    t.like(r, r"^250 2\.0\.0 Ok: queued as \S+$", "%s: and its whole transaction completes" % what)
    c.cmd("QUIT")
    c.close()


# --- socketmap: access list and forbidden commands ---
server = SocketmapServer({
    "acl": {b"127.0.0.2": b"permit", b"127.0.0.3": b"reject", b"127.0.0.4": b"dunno", b"127.0.0.6": b"permit",
            b"127.0.0.9": b"dunno"},
    "cmds": {b"xyzzy": b"forbidden"},
})
acl_gate, cmd_gate = threading.Event(), threading.Event()
server.slow[b"127.0.0.2"] = acl_gate
server.slow[b"xyzzy"] = cmd_gate
gone_gate = threading.Event()
server.slow[b"127.0.0.8"] = gone_gate
server.special[b"127.0.0.5"] = (b"acl", TEMP)
server.special[b"plugh"] = (b"cmds", TEMP)
ACL = "socketmap:inet:127.0.0.1:%d:acl" % server.port
CMDS = "socketmap:inet:127.0.0.1:%d:cmds" % server.port
ACL_ERROR = (r"petrel/postscreen\[\d+\]: warning: postscreen_access_list: %s: table lookup error -- ignoring the "
             r"remainder of this access list\n" % ACL.replace(".", r"\."))

with postscreen(t, start=False, main_cf={
        "modules": "socketmap", "module_directory": MODULES, "smtpd_workers": "1",
        "postscreen_denylist_action": "drop",
        "postscreen_non_smtp_command_enable": "yes", "postscreen_non_smtp_command_action": "drop",
        "postscreen_forbidden_commands": CMDS}) as p:
    cidr = p.write_file("psc_access.cidr", "127.0.0.5 permit\n127.0.0.7 permit\n")
    p.settings["postscreen_access_list"] = "permit_mynetworks, %s, cidr:%s" % (ACL, cidr)
    p.write_main_cf(p.settings)
    p.start()

    # A slow answer: the client waits, the worker does not.
    c = connect(p.port, "127.0.0.2", read=False)
    t.ok(wait_for(lambda: b"127.0.0.2" in server.seen("acl"), timeout=20),
         "the client's address is asked, and the answer waits at the server")
    whole_transaction(p, "127.0.0.6", "while the first client's lookup waits")
    t.ok(not acl_gate.is_set() and silent(c), "the first client has heard nothing yet")
    acl_gate.set()
    c.read_reply()
    t.is_(c.lines, ["220 " + PASSED_BANNER], "then its answer (permit) sends it to smtpd, without a teaser")
    t.ok(p.wait_log(r"ALLOWLISTED \[127\.0\.0\.2\]:%d\n" % client_port(c)) is not None, "ALLOWLISTED [addr]:port")
    c.close()

    c = connect(p.port, "127.0.0.3")
    t.is_(c.lines, ["521 5.3.2 Service currently unavailable"], "reject from the table: drop, 521 5.3.2")
    t.ok(c.closed(), "and closed")
    t.ok(p.wait_log(r"DENYLISTED \[127\.0\.0\.3\]:%d\n" % client_port(c)) is not None, "DENYLISTED [addr]:port")

    c = connect(p.port, "127.0.0.4")
    t.is_(c.lines[0], "220-" + BANNER, "dunno from the table: the tests go on")
    c.close()

    c = connect(p.port, "127.0.0.7")
    t.is_(c.lines, ["220 " + PASSED_BANNER], "not found in the remote table: the rest of the list (cidr:) decides")
    c.close()

    c = connect(p.port, "127.0.0.5")
    t.is_(c.lines[0], "220-" + BANNER,
          "a lookup error: the rest of the list is ignored (its cidr: would permit), the client is screened")
    t.ok(p.wait_log(ACL_ERROR) is not None, "with Postfix's warning", p.log()[-1500:])
    c.close()

    # postscreen_forbidden_commands: the command waits for its answer.
    c = connect(p.port, "127.0.0.9")
    t.is_(c.lines, ["220-" + BANNER, "220 " + BANNER], "a screened client meets the after-220 engine")
    cp = client_port(c)
    c.sock.sendall(b"XYZZY now\r\n")
    t.ok(wait_for(lambda: b"xyzzy" in server.seen("cmds"), timeout=20),
         "an unknown command is looked up (lowercased, as Postfix) in the remote table, and the answer waits")
    whole_transaction(p, "127.0.0.6", "while a command's lookup waits")
    t.ok(silent(c), "the waiting client has no reply yet")
    cmd_gate.set()
    t.is_(c.read_reply(), NSMTP_DROP, "then the table's answer makes it a non-SMTP command: 521, dropped")
    t.ok(p.wait_log(r"NON-SMTP COMMAND from \[127\.0\.0\.9\]:%d after CONNECT: XYZZY now\n" % cp) is not None,
         "NON-SMTP COMMAND logged as Postfix logs it", p.log()[-1500:])
    c.close()

    c = connect(p.port, "127.0.0.9")
    c.sock.sendall(b"PLUGH\r\n")
    t.is_(c.read_reply(), "502 5.5.2 Error: command not recognized",
          "a forbidden-commands table that cannot answer: not forbidden, as in Postfix")
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: warning: postscreen_forbidden_commands: %s: table lookup problem\n"
                    % CMDS.replace(".", r"\.")) is not None, "with Postfix's warning")
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok", "and the session goes on")
    c.close()

    # A client that leaves while its lookup waits: the worker serves on.
    c = connect(p.port, "127.0.0.8", read=False)
    cp = client_port(c)
    t.ok(wait_for(lambda: b"127.0.0.8" in server.seen("acl"), timeout=20), "a lookup waits")
    c.sock.close()
    gone_gate.set()
    t.ok(p.wait_log(r"DISCONNECT \[127\.0\.0\.8\]:%d\n" % cp) is not None,
         "the client that left while its lookup waited is ended when the answer comes")
    whole_transaction(p, "127.0.0.6", "after a client left while its lookup waited")

    # The server goes down: every lookup is an error, never "not found".
    server.stop()
    before = len(p.log().split("postscreen_access_list: socketmap"))
    c = connect(p.port, "127.0.0.7")
    t.is_(c.lines[0], "220-" + BANNER,
          "server down: the list's remainder is ignored (its cidr: would permit), the client is screened")
    t.ok(wait_for(lambda: len(p.log().split("postscreen_access_list: socketmap")) > before),
         "and the same warning is logged")
    c.close()
    c = connect(p.port, "127.0.0.6")
    t.is_(c.lines[0], "220-" + BANNER, "a client the table would permit is screened too")
    c.close()
    t.ok("panic" not in p.log() and "fatal" not in p.log(), "nothing went wrong in the worker", p.log()[-2000:])

# --- PostgreSQL: the access list in a database ---
pg = PgCluster()
pg.psql("CREATE ROLE postfix LOGIN PASSWORD 'pfpw'")
pg.psql("CREATE DATABASE mail OWNER postfix")
pg.psql("CREATE TABLE screen(address text PRIMARY KEY, action text NOT NULL);"
        "INSERT INTO screen VALUES ('127.0.0.2', 'permit'), ('127.0.0.3', 'reject'), ('127.0.0.4', 'dunno');"
        "GRANT SELECT ON screen TO postfix", db="mail")
with postscreen(t, start=False, main_cf={
        "modules": "pgsql", "module_directory": MODULES, "smtpd_workers": "1",
        "postscreen_denylist_action": "drop", "pgsql_timeout": "30s"}) as p:
    cf = p.write_file("psc-access.cf", "hosts = inet:127.0.0.1:%d\nuser = postfix\npassword = pfpw\ndbname = mail\n"
                      "query = SELECT action FROM screen WHERE address = '%%s'\n" % pg.port, mode=0o640)
    cidr = p.write_file("psc_access.cidr", "127.0.0.5 permit\n")
    p.settings["postscreen_access_list"] = "pgsql:%s, cidr:%s" % (cf, cidr)
    p.write_main_cf(p.settings)
    p.start()
    c = connect(p.port, "127.0.0.2")
    t.is_(c.lines, ["220 " + PASSED_BANNER], "pgsql: permit from the database: smtpd at once")
    c.close()
    c = connect(p.port, "127.0.0.3")
    t.is_(c.lines, ["521 5.3.2 Service currently unavailable"], "pgsql: reject: drop, 521 5.3.2")
    c = connect(p.port, "127.0.0.4")
    t.is_(c.lines[0], "220-" + BANNER, "pgsql: dunno: the tests go on")
    c.close()
    c = connect(p.port, "127.0.0.5")
    t.is_(c.lines, ["220 " + PASSED_BANNER], "pgsql: not in the database: the cidr: table decides")
    c.close()
    pg.stop()
    c = connect(p.port, "127.0.0.5")
    t.is_(c.lines[0], "220-" + BANNER, "pgsql: the database is down: the rest of the list is ignored, the client "
          "is screened")
    t.ok(p.wait_log(r"petrel/postscreen\[\d+\]: warning: postscreen_access_list: pgsql:%s: table lookup error -- "
                    r"ignoring the remainder of this access list\n" % cf.replace(".", r"\.")) is not None,
         "with Postfix's warning", p.log()[-1500:])
    c.close()

# --- postscreen_dnsbl_reply_map in a remote table ---
rbl = SocketmapServer({"rbl": {b"bl.test": b"public-list.example"}})
records = ["--local=/bl.test/", "--host-record=2.0.0.127.bl.test,127.0.0.2", "--local-ttl=600"]
with Dnsmasq(records) as dns:
    def conf(action):
        return {"modules": "socketmap", "module_directory": MODULES, "dns_resolver": dns.server,
                "postscreen_dnsbl_sites": "bl.test", "postscreen_dnsbl_threshold": "1",
                "postscreen_dnsbl_action": action, "postscreen_greet_wait": "2s",
                "postscreen_dnsbl_reply_map": "socketmap:inet:127.0.0.1:%d:rbl" % rbl.port}

    name_gate = threading.Event()
    rbl.slow[b"bl.test"] = name_gate
    with postscreen(t, main_cf=dict(conf("enforce"), smtpd_workers="1")) as p:
        c = connect(p.port, "127.0.0.2", read=False)
        t.ok(wait_for(lambda: b"bl.test" in rbl.seen("rbl"), timeout=30),
             "a listed client's reply needs the list's name: the remote map is asked, and the answer waits")
        other = connect(p.port, "127.0.0.3")
        t.is_(other.lines, ["220-" + BANNER, "220 " + PASSED_BANNER],
              "meanwhile another client on the same worker is screened and passes")
        t.like(other.send_message("sender@example.org", ["user@petrel.test"], "Subject: meanwhile\r\n\r\nhi\r\n"),
               r"^250 2\.0\.0 Ok: queued as \S+$", "and completes a whole transaction")
        other.close()
        name_gate.set()
        c.read_reply()
        t.is_(c.lines, ["220-" + BANNER, "220 " + BANNER], "then the listed client meets postscreen's engine")
        c.ehlo("x.example")
        c.cmd("MAIL FROM:<a@example.com>")
        t.is_(c.cmd("RCPT TO:<user@petrel.test>"),
              "550 5.7.1 Service unavailable; client [127.0.0.2] blocked using public-list.example",
              "postscreen_dnsbl_reply_map in a socketmap table: the reply shows the public name")
        t.ok(b"bl.test" in rbl.seen("rbl"), "asked when the reply needed it")
        c.close()

    rbl.special[b"bl.test"] = (b"rbl", TEMP)
    with postscreen(t, main_cf=conf("drop")) as p:
        c = connect(p.port, "127.0.0.2")
        t.is_(c.lines, ["220-" + BANNER, "421 4.3.0 Server local data error"],
              "a reply map that cannot answer: a temporary error, never the list's secret name")
        t.ok(c.closed(), "and the connection is closed")
        t.ok(p.wait_log(r"warning: postscreen_dnsbl_reply_map: socketmap:inet:127\.0\.0\.1:%d:rbl: lookup error for "
                        r"bl\.test\n" % rbl.port) is not None, "logged")
rbl.stop()
t.done()
