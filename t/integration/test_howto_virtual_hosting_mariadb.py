"""doc/howto/virtual-hosting.md's MariaDB variant, run as written (see howtolib.py)."""
from howtolib import Mariadb, run

run(Mariadb())
