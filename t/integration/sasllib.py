"""Helpers for the SASL tests: a private Dovecot auth service (passwd-file users, its own
base_dir and log, a unix auth-client socket and a loopback port; never the system instance),
a SCRAM-SHA-256 client (RFC 5802/7677; smtplib has none), the password grep, and for the SMTP
client's AUTH: a relay that wants it (Dovecot behind it), a petreld that relays everything to a
server with the credentials of a password map, and a message submitted to that one. (Postfix's
smtp-sink as another next hop and the base of the tests' own hostile servers are serverlib.py's
Sink and LoopbackServer.)"""
import base64
import hashlib
import hmac
import os

import dovecotlib
from harness import QUEUED, Petrel, make_cert, queue_id

DOVECOT = dovecotlib.DOVECOT


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


class DovecotAuth(dovecotlib.Dovecot):
    """Dovecot with no mail protocol, serving only its auth service."""

    what = "auth socket"

    def __init__(self, users, mechanisms="plain login cram-md5 scram-sha-1 scram-sha-256", extra=""):
        super().__init__("petrel-dovecot-auth-", "auth-client")
        users_file = self.write_users(users)
        self.write_conf("""# Private Dovecot auth service for Petrel's SASL tests.
base_dir = {base}
state_dir = {state}
log_path = {log}
protocols =
ssl = no
default_login_user = dovenull
default_internal_user = dovecot
auth_mechanisms = {mechs}
auth_failure_delay = 0
auth_verbose = yes
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
  inet_listener {{
    address = 127.0.0.1
    port = {port}
  }}
}}
{extra}
""".format(base=self.base, state=self.state, log=self.log_path, mechs=mechanisms, users=users_file,
           port=self.port, extra=extra))

    def probe(self, s):
        """The auth-client handshake: ready when the server's handshake ends with DONE."""
        s.sendall(b"VERSION\t1\t2\nCPID\t1\n")
        data = b""
        while b"DONE" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if b"DONE" in data:
            return data.decode()
        self.last = data
        return None


def scram_sha256(conn, user, password, nonce=None):
    """Runs AUTH SCRAM-SHA-256 over a harness Smtp connection; returns the final reply."""
    nonce = nonce or b64(os.urandom(18))
    first_bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), nonce)
    reply = conn.cmd("AUTH SCRAM-SHA-256 " + b64("n,," + first_bare))
    if not reply.startswith("334 "):
        return reply
    server_first = base64.b64decode(reply[4:]).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    salt = base64.b64decode(fields["s"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    final_bare = "c=%s,r=%s" % (b64("n,,"), fields["r"])
    auth_message = ",".join((first_bare, server_first, final_bare)).encode()
    signature = hmac.new(stored, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    reply = conn.cmd(b64(final_bare + ",p=" + b64(proof)))
    if not reply.startswith("334 "):
        return reply
    server_final = base64.b64decode(reply[4:]).decode()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    expected = b64(hmac.new(server_key, auth_message, hashlib.sha256).digest())
    if server_final != "v=" + expected:
        return "bad server signature: " + server_final
    return conn.cmd("")


def files_containing(roots, needles):
    """Files under roots whose bytes contain any of needles (bytes)."""
    found = []
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                if any(n in data for n in needles):
                    found.append(path)
    return found


# A queue manager, for the relaying petreld that runs no master.cf of its own.
QMGR = "qmgr unix n - n 300 1 qmgr\n"


def auth_relay(t, dc, module_directory, tls_auth_only=False, tls=True, **main_cf):
    """A started petreld (the caller closes it) that relays for clients authenticated by the
    Dovecot auth service dc (the sasl module from module_directory) and for no one else (unless
    main_cf's smtpd_relay_restrictions say otherwise; main_cf adds or overrides parameters);
    with tls, a certificate for STARTTLS; AUTH only under TLS when tls_auth_only."""
    p = Petrel(t, start=False, main_cf=dict({
        "modules": "sasl", "module_directory": module_directory, "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot", "smtpd_sasl_path": dc.socket, "mynetworks": "192.0.2.0/24",
        "smtpd_relay_restrictions": "permit_sasl_authenticated, reject", "myhostname": "relay.sink.test",
        "smtpd_sasl_failure_delay": "0s", "smtpd_tls_auth_only": "yes" if tls_auth_only else "no"}, **main_cf))
    if tls:
        cert, key = make_cert(p.dir)
        os.chmod(key, 0o644)
        p.write_main_cf(dict(p.settings, smtpd_tls_cert_file=cert, smtpd_tls_key_file=key,
                             smtpd_tls_security_level="may"))
    p.start()
    return p


def relaying_client(t, port, user, password, more_credentials="", **main_cf):
    """A started petreld (the caller closes it) whose relayhost is [127.0.0.1]:port, with SMTP
    AUTH as user (smtp_sasl_password_maps: a texthash: map of that line and more_credentials,
    more lines of the map); main_cf adds or overrides parameters (TLS, mechanisms...)."""
    p = Petrel(t, start=False, master_cf=None, extra_services=QMGR)
    maps = p.write_file("sasl_passwd", "[127.0.0.1]:%d %s:%s\n%s" % (port, user, password, more_credentials),
                        0o600)
    conf = dict(p.settings, relayhost="[127.0.0.1]:%d" % port, smtp_sasl_auth_enable="yes",
                smtp_sasl_password_maps="texthash:" + maps, minimal_backoff_time="1s")
    conf.update(main_cf)
    p.write_main_cf(conf)
    p.start()
    return p


def submit_far(p, subject):
    """Submits a message from me@petrel.test to someone@far.example (the relayhost's) to p; the
    reply to the end of data."""
    c = p.connect()
    r = c.send_message("me@petrel.test", ["someone@far.example"], "Subject: %s\r\n\r\nbody\r\n" % subject)
    c.close()
    return r


def submit_queued(p, sender, rcpt, subject):
    """Submits a message from sender to rcpt to p; its queue ID (None when refused)."""
    c = p.connect()
    r = c.send_message(sender, [rcpt], "Subject: %s\r\n\r\nbody\r\n" % subject)
    c.close()
    return queue_id(r, QUEUED)
