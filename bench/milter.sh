#!/usr/bin/env bash
# bench/milter.sh: bench/filters.sh milter (see its header and bench/README.md)
exec "$(dirname "$0")/filters.sh" milter "$@"
