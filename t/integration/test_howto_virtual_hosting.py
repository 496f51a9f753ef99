"""doc/howto/virtual-hosting.md with PostgreSQL, run as written (see howtolib.py)."""
from howtolib import Postgres, run

run(Postgres())
