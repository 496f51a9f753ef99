#!/usr/bin/env bash
# bench/spamd.sh: bench/filters.sh spamd (see its header and bench/README.md)
exec "$(dirname "$0")/filters.sh" spamd "$@"
