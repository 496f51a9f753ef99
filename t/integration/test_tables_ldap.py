"""ldap: tables (the ldap module, libldap's asynchronous searches) against a private slapd on
loopback, with ldap_table(5) files as Postfix admins write them: virtual_alias_maps at RCPT end
to end over SMTP, a group whose members are DNs (special_result_attribute), keys with filter
syntax in them ("*", "(", ")", "\\") that reach the directory only as data (RFC 4515), a search
base built from the key (RFC 4514), the server slow (timeout: 451), down at start and going down
mid-run (451 4.3.0, never "User unknown") and back, delivery through the queue manager (the
blocking lookup), petrelctl map query, and bad files that petreld -n names with their line."""
import os
import re
import subprocess

from harness import PETRELD, Dnsmasq, Petrel, Tap, maildir_messages, unread_at, wait_for
from ldaplib import (ROOT_DN, ROOT_ENTRY, ROOT_PW, SUFFIX, Slapd, alias_session, alias_table,
                     check_config)
from tablelib import WaitingRcpt, bundled_module_dir

t = Tap(timeout=300)
QMGR = "qmgr unix n - n 300 1 qmgr\n"
MODULES = bundled_module_dir("ldap")

LDIF = ROOT_ENTRY + """dn: ou=people,{s}
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,{s}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: A
mail: alice@ldap.test
mailLocalAddress: alice@ldap.test
mailLocalAddress: sales@ldap.test
mailRoutingAddress: box@vmail.test

dn: uid=bob,ou=people,{s}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: bob
cn: Bob
sn: B
mail: bob@ldap.test
mailLocalAddress: bob@ldap.test
mailRoutingAddress: other@vmail.test

dn: uid=star,ou=people,{s}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: star
cn: Star
sn: S
mailLocalAddress: "s*(x)\\\\y"@ldap.test
mailRoutingAddress: box@vmail.test

dn: cn=staff,{s}
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: staff
mailLocalAddress: staff@ldap.test
member: uid=alice,ou=people,{s}
member: uid=bob,ou=people,{s}

dn: cn=lists,{s}
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: lists
mailLocalAddress: lists@ldap.test
mailRoutingAddress: owner@vmail.test
member: uid=alice,ou=people,{s}
member: uid=fwd,ou=people,{s}

dn: uid=fwd,ou=people,{s}
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: fwd
cn: Forward
sn: F
mailRoutingAddress: fwd-own@vmail.test
labeledURI: ldap:///uid=bob,ou=people,{s}??base?(objectClass=*)
""".format(s=SUFFIX)

slapd = Slapd(LDIF)
t.ok("star" in slapd.search('(mailLocalAddress="s\\2a\\28x\\29\\5c\\5cy"@ldap.test)', "uid").stdout,
     "slapd holds the entry with filter characters in its address")

with Petrel(t, extra_services=QMGR, start=False, workers=1) as p:
    common = ("server_host = 127.0.0.1:%d\nsearch_base = %s\nversion = 3\nbind = yes\nbind_dn = %s\n"
              "bind_pw = %s\ntimeout = 5\n" % (slapd.port, SUFFIX, ROOT_DN, ROOT_PW))
    valias = p.write_file("ldap-valias.cf", "# as in LDAP_README\n" + common +
                          "query_filter = (mailLocalAddress=%s)\nresult_attribute = mailRoutingAddress\n"
                          "special_result_attribute = member\n", mode=0o640)
    # An anonymous, unbound (LDAPv3) search with the key in the search base.
    bybase = p.write_file("ldap-base.cf", "server_host = ldap://127.0.0.1:%d/\nversion = 3\nbind = no\n"
                          "search_base = uid=%%u, ou=people, %s\nscope = base\nquery_filter = (objectClass=*)\n"
                          "result_attribute = mailRoutingAddress\nresult_format = <%%s>\n" % (slapd.port, SUFFIX))
    mail = p.virtual_mailboxes({"box@vmail.test": "box/", "other@vmail.test": "other/"}, {
        "modules": "ldap", "module_directory": MODULES,
        "virtual_alias_domains": "ldap.test", "virtual_alias_maps": "proxy:ldap:" + valias})
    r = subprocess.run(p.command(PETRELD, "-n", "-c", p.conf), capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0, "petreld -n accepts ldap: tables", r.stdout + r.stderr)
    p.start()

    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@ldap.test>"), "250 2.1.5 Ok", "virtual_alias_maps: an address in the directory")
    t.is_(c.cmd("RCPT TO:<SALES@LDAP.TEST>"), "250 2.1.5 Ok", "in any case (the key is folded, as Postfix does)")
    t.is_(c.cmd("RCPT TO:<staff@ldap.test>"), "250 2.1.5 Ok", "a group: its members' addresses (special attribute)")
    t.is_(c.cmd("RCPT TO:<nobody@ldap.test>"),
          "550 5.1.1 <nobody@ldap.test>: Recipient address rejected: User unknown in virtual alias table",
          "an address not in the directory is not found")
    # Injection attempts: data, never filter syntax (unescaped, each would match every entry).
    for addr in ('"*"@ldap.test', '"x)(mailLocalAddress=*"@ldap.test', '"*)(|(uid=*"@ldap.test',
                 '"\\\\2a"@ldap.test', '"s*"@ldap.test'):
        reply = c.cmd("RCPT TO:<%s>" % addr)
        t.ok(reply.startswith("550 5.1.1 ") and "User unknown in virtual alias table" in reply,
             "a key with filter syntax in it matches nothing: %s" % addr, reply)
    t.is_(c.cmd('RCPT TO:<"s*(x)\\\\y"@ldap.test>'), "250 2.1.5 Ok",
          "a key with *, (, ) and \\ finds its own entry, exactly")

    # A slow server: another session of the same (only) worker is not held up, and the
    # lookup ends at timeout with 451.
    c.cmd("RSET")
    c.cmd("MAIL FROM:<sender@example.org>")
    slapd.pause()
    waiting = WaitingRcpt(p, "bob@ldap.test")
    # the search was sent to the stopped slapd; it must still be waiting after
    # the NOOP below: the file's timeout is 5 s, not 2, for a loaded machine
    wait_for(lambda: unread_at(slapd.port), timeout=30)
    t.is_(c.cmd("NOOP"), "250 2.0.0 Ok",
          "another session is answered while a search waits for a stopped server (the loop never blocks)")
    t.ok(waiting.reply is None, "before the slow one has finished")
    t.is_(waiting.result(), "451 4.3.0 <bob@ldap.test>: Temporary lookup failure",
          "the search ends at the file's timeout with 451 4.3.0")
    slapd.resume()
    t.is_(c.cmd("RCPT TO:<bob@ldap.test>"), "250 2.1.5 Ok", "the server answers again: found (a new connection)")
    c.cmd("RSET")
    c.close()

    c = p.connect()
    reply = c.send_message("sender@example.org", ["staff@ldap.test"], "Subject: via ldap\r\n\r\nx\r\n")
    t.like(reply, r"^250 2\.0\.0 Ok: queued", "mail to a group from the directory is accepted")
    c.close()
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(mail, "box"))) == 1 and
                  len(maildir_messages(os.path.join(mail, "other"))) == 1, timeout=30),
         "and delivered to both members' mailboxes (the queue manager's blocking lookup)")
    r = p.petrelctl("map", "query", "ldap:" + valias, "staff@ldap.test")
    t.ok((r.returncode, sorted(r.stdout.strip().split(","))) == (0, ["box@vmail.test", "other@vmail.test"]),
         "petrelctl map query ldap:... follows the members' DNs", r.stdout + r.stderr)
    r = p.petrelctl("map", "query", "ldap:" + bybase, "alice@anything.test")
    t.ok((r.returncode, r.stdout.strip()) == (0, "<box@vmail.test>"),
         "search_base = uid=%u,...: the key's local part names the entry; result_format", r.stdout + r.stderr)
    for key in ("nobody@anything.test", "alice,ou=people@anything.test", "alice+cn=Alice@anything.test"):
        r = p.petrelctl("map", "query", "ldap:" + bybase, key)
        t.ok(r.returncode == 1 and r.stdout == "",
             "a key-built base that does not exist is not found, DN syntax in the key is data: %s" % key,
             "%d %s" % (r.returncode, r.stdout + r.stderr))

    slapd.stop()
    c = p.connect()
    c.ehlo("client.test")
    c.cmd("MAIL FROM:<sender@example.org>")
    t.is_(c.cmd("RCPT TO:<sales@ldap.test>"), "451 4.3.0 <sales@ldap.test>: Temporary lookup failure",
          "the server gone mid-run: 451 4.3.0 Temporary lookup failure, never User unknown")
    r = p.petrelctl("map", "query", "ldap:" + valias, "sales@ldap.test")
    t.ok(r.returncode == 2, "petrelctl map query with the server down: a lookup error",
         "%d %s" % (r.returncode, r.stdout + r.stderr))
    slapd.start()
    t.is_(c.cmd("RCPT TO:<sales@ldap.test>"), "250 2.1.5 Ok", "the server back: found again")
    c.close()
    t.ok(p.wait_log(re.escape("ldap:%s" % valias)) is not None, "the failures are logged with the file's name",
         p.log()[-1500:])
    # the read loop's failure (ldap_read_ready): the connection that broke, named
    t.ok(p.wait_log(r"ldap:%s: connection to ldap://127\.0\.0\.1:%d: Can't contact LDAP server"
                    % (re.escape(valias), slapd.port)) is not None,
         "the server going away is logged as the connection's end, with the server's URL", p.log()[-1500:])

# Down at start: petreld starts, answers 451, then finds the server when it comes up.
slapd.stop()
with Petrel(t, start=False, workers=1) as p:
    cf = alias_table(p, "v.cf", "127.0.0.1:%d" % slapd.port, "bind = no\n")
    c = alias_session(p, MODULES, cf)
    t.is_(c.cmd("RCPT TO:<sales@ldap.test>"), "451 4.3.0 <sales@ldap.test>: Temporary lookup failure",
          "the server down at start: 451 4.3.0")
    slapd.start()
    t.is_(c.cmd("RCPT TO:<sales@ldap.test>"), "250 2.1.5 Ok", "it comes up: found")
    c.close()

# A server named by a host name: resolved through petreld's resolver (dns_resolver, here a
# private dnsmasq) on the loop, not by libldap's blocking getaddrinfo; the DNS not answering is a
# lookup error.
with Dnsmasq(["--address=/ldap.dns.test/127.0.0.1"]) as dns:
    for resolver, want, name in ((dns.server, "250 2.1.5 Ok", "a server host name resolved by dns_resolver: found"),
                                 ("127.0.0.1:9", "451 4.3.0 <sales@ldap.test>: Temporary lookup failure",
                                  "the DNS not answering: 451 4.3.0")):
        with Petrel(t, start=False, workers=1) as p:
            cf = alias_table(p, "byname.cf", "ldap.dns.test:%d" % slapd.port, "bind = no\n")
            c = alias_session(p, MODULES, cf, dns_resolver=resolver)
            t.is_(c.cmd("RCPT TO:<sales@ldap.test>"), want, name)
            c.close()
            if resolver == dns.server:
                t.ok("ldap.dns.test" in open(dns.log_path).read(), "the name was asked of dns_resolver")
            else:
                t.ok(p.wait_log(r"ldap:%s: cannot resolve ldap\.dns\.test" % re.escape(cf)) is not None,
                     "and logged", p.log()[-1500:])

# A wrong bind password: a lookup error (451), logged with the server's reason, never "not found".
with Petrel(t, start=False, workers=1) as p:
    cf = alias_table(p, "badbind.cf", "127.0.0.1:%d" % slapd.port, "bind_dn = %s\nbind_pw = wrong\n" % ROOT_DN)
    c = alias_session(p, MODULES, cf)
    t.is_(c.cmd("RCPT TO:<sales@ldap.test>"), "451 4.3.0 <sales@ldap.test>: Temporary lookup failure",
          "a bind that fails: 451 4.3.0")
    t.is_(c.cmd("RCPT TO:<sales@ldap.test>"), "451 4.3.0 <sales@ldap.test>: Temporary lookup failure",
          "and again on the next lookup (it tries the lone server again)")
    c.close()
    t.ok(p.wait_log(r"ldap:%s: bind as \"%s\" to ldap://127\.0\.0\.1:%d: Invalid credentials"
                    % (re.escape(cf), ROOT_DN, slapd.port)) is not None, "the server's reason is logged",
         p.log()[-1500:])
    r = p.petrelctl("map", "query", "ldap:" + cf, "sales@ldap.test")
    t.ok(r.returncode == 2 and "Invalid credentials" in r.stdout + r.stderr,
         "petrelctl map query: a lookup error with the reason", "%d %s" % (r.returncode, r.stdout + r.stderr))

# terminal_result_attribute and leaf_result_attribute, as Postfix's ldap_table(5) describes them,
# and a member given as an LDAP URL.
with Petrel(t, start=False) as p:
    base = ("server_host = 127.0.0.1:%d\nsearch_base = %s\nversion = 3\nbind = no\n"
            "query_filter = (mailLocalAddress=%%s)\nresult_attribute = mailHost\n"
            "special_result_attribute = member, labeledURI\n"
            % (slapd.port, SUFFIX))
    leaf = p.write_file("leaf.cf", base + "leaf_result_attribute = mailRoutingAddress\n")
    term = p.write_file("term.cf", base + "terminal_result_attribute = mailRoutingAddress\n")
    conf = dict(p.settings)
    conf.update({"modules": "ldap", "module_directory": MODULES})
    p.write_main_cf(conf)
    for cf, key, want, name in (
            (leaf, "lists@ldap.test", ["box@vmail.test", "other@vmail.test"],
             "leaf_result_attribute: the group's own value is skipped, its members' returned (DNs, then an LDAP URL)"),
            (leaf, "alice@ldap.test", ["box@vmail.test"], "leaf_result_attribute: an entry without members is a leaf"),
            (term, "lists@ldap.test", ["owner@vmail.test"],
             "terminal_result_attribute: an entry that has it stops the recursion")):
        r = p.petrelctl("map", "query", "ldap:" + cf, key)
        t.ok((r.returncode, sorted(r.stdout.strip().split(","))) == (0, want), name,
             "%d %s" % (r.returncode, r.stdout + r.stderr))

# Limits: size_limit and expansion_limit make a lookup error, as in Postfix.
with Petrel(t, start=False) as p:
    base = "server_host = 127.0.0.1:%d\nsearch_base = %s\nversion = 3\nbind = no\n" % (slapd.port, SUFFIX)
    sizecf = p.write_file("size.cf", base + "query_filter = (&(objectClass=inetOrgPerson)(uid=*%s*))\n"
                          "result_attribute = uid\nsize_limit = 1\n")
    expcf = p.write_file("exp.cf", base + "query_filter = (mailLocalAddress=%s)\nresult_attribute = "
                         "mailRoutingAddress\nspecial_result_attribute = member\nexpansion_limit = 1\n")
    conf = dict(p.settings)
    conf.update({"modules": "ldap", "module_directory": MODULES})
    p.write_main_cf(conf)
    r = p.petrelctl("map", "query", "ldap:" + sizecf, "a")
    t.ok(r.returncode == 2 and "size limit" in r.stderr + r.stdout, "more entries than size_limit: a lookup error",
         "%d %s" % (r.returncode, r.stdout + r.stderr))
    r = p.petrelctl("map", "query", "ldap:" + sizecf, "alic")
    t.ok((r.returncode, r.stdout.strip()) == (0, "alice"), "one entry within size_limit: found",
         "%d %s" % (r.returncode, r.stdout + r.stderr))
    r = p.petrelctl("map", "query", "ldap:" + expcf, "staff@ldap.test")
    t.ok(r.returncode == 2 and "expansion limit" in r.stderr + r.stdout,
         "more results than expansion_limit: a lookup error", "%d %s" % (r.returncode, r.stdout + r.stderr))

# Bad files: petreld -n names the file and line.
with Petrel(t, start=False) as p:
    tls = p.write_file("tls.cf", "server_host = 127.0.0.1\nsearch_base = dc=x\nstart_tls = maybe\n")
    sasl = p.write_file("sasl.cf", "server_host = 127.0.0.1\nbind = sasl\nsasl_minssf = 5000\n")
    scope = p.write_file("scope.cf", "server_host = 127.0.0.1\nscope = subtree\n")
    pct = p.write_file("pct.cf", "query_filter = (mail=%x)\n")
    for cf, want in ((tls, "ldap:%s line 3: start_tls = maybe: yes or no" % tls),
                     (sasl, "ldap:%s line 3: sasl_minssf = 5000: 0 to 4096" % sasl),
                     (scope, "ldap:%s line 2: scope = subtree: the scopes are sub, one and base" % scope),
                     (pct, "ldap:%s line 1: query_filter: invalid %%x" % pct)):
        r = check_config(p, MODULES, cf)
        t.ok(r.returncode != 0 and want in r.stdout + r.stderr, "petreld -n: " + want.split(": ", 1)[1],
             r.stdout + r.stderr)

slapd.stop()
t.done()
