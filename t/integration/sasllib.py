"""Helpers for the SASL tests: a private Dovecot auth service (passwd-file users, its own
base_dir and log, a unix auth-client socket and a loopback port; never the system instance),
a SCRAM-SHA-256 client (RFC 5802/7677; smtplib has none), and the password grep."""
import base64
import hashlib
import hmac
import os

import dovecotlib

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
