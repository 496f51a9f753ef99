"""Certificates made at test time with openssl for the TLS tests of the database and LDAP tables: a CA,
another CA (that vouches for nothing the servers show), a server certificate from the CA for
localhost and 127.0.0.1, one from the CA for another name, and a client certificate from the CA. Keys belong to owner (a passwd
entry, or None) with mode 0600, as the servers (mariadbd, postgres) and libpq demand."""
import os
import subprocess
import tempfile

from harness import CLEANUP_DIRS


class TestCerts:
    def __init__(self, owner=None, client_cn="postfix"):
        self.dir = tempfile.mkdtemp(prefix="petrel-certs-")
        os.chmod(self.dir, 0o755)
        CLEANUP_DIRS.append(self.dir)
        self.owner = owner
        self.ca, self.ca_key = self._ca("ca")
        self.other_ca, _ = self._ca("other-ca")
        self.server, self.server_key = self._signed("server", "localhost",
                                                    "subjectAltName = DNS:localhost, IP:127.0.0.1\n")
        # From the same CA, for a name the tests never connect to.
        self.misnamed, self.misnamed_key = self._signed("misnamed", "elsewhere.test",
                                                        "subjectAltName = DNS:elsewhere.test\n")
        self.client, self.client_key = self._signed("client", client_cn, "extendedKeyUsage = clientAuth\n")

    def _openssl(self, *args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)

    def _own(self, path, mode):
        if self.owner:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        os.chmod(path, mode)

    def _ca(self, name):
        key, pem = os.path.join(self.dir, name + ".key"), os.path.join(self.dir, name + ".pem")
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                      "/CN=Petrel test " + name, "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", key, "-out", pem)
        self._own(pem, 0o644)
        self._own(key, 0o600)
        return pem, key

    def _signed(self, name, cn, extensions):
        key, csr, pem, ext = (os.path.join(self.dir, name + e) for e in (".key", ".csr", ".pem", ".ext"))
        with open(ext, "w") as f:
            f.write(extensions)
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + cn, "-keyout", key, "-out", csr)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                      "-days", "2", "-extfile", ext, "-out", pem)
        self._own(pem, 0o644)
        self._own(key, 0o600)
        return pem, key
