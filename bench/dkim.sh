#!/usr/bin/env bash
# bench/dkim.sh: bench/filters.sh dkim (see its header and bench/README.md)
exec "$(dirname "$0")/filters.sh" dkim "$@"
