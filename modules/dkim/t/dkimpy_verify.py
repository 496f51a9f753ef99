"""Verifies every DKIM signature of a message with dkimpy (Debian's
python3-dkim), the key records fetched from the test DNS server given.
Run with Debian's /usr/bin/python3. Prints one line per signature,
"d=DOMAIN s=SELECTOR ok" or "... fail", and exits 0 when all verify.

usage: dkimpy_verify.py DNS_PORT MESSAGE
"""
import sys

import dkim
import dns.resolver

port, path = int(sys.argv[1]), sys.argv[2]
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ["127.0.0.1"]
resolver.port = port


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    try:
        answer = resolver.resolve(name, "TXT", lifetime=timeout)
    except Exception:
        return b""
    for rr in answer:
        return b"".join(rr.strings)
    return b""


with open(path, "rb") as f:
    message = f.read()
d = dkim.DKIM(message)
signatures = [h for h in d.headers if h[0].lower() == b"dkim-signature"]
all_ok = bool(signatures)
for i, (_, value) in enumerate(signatures):
    tags = dict(t.strip().split(b"=", 1) for t in value.split(b";") if b"=" in t)
    ok = d.verify(idx=i, dnsfunc=dnsfunc)
    all_ok = all_ok and ok
    print("d=%s s=%s %s" % (tags[b"d"].decode(), tags[b"s"].decode(), "ok" if ok else "fail"))
sys.exit(0 if all_ok else 1)
