"""doc/howto/virtual-hosting.md's LDAP variant, run as written (see howtolib.py)."""
from howtolib import Ldap, run

run(Ldap())
