#!/usr/bin/env bash
# bench/policy.sh: bench/filters.sh policy (see its header and bench/README.md)
exec "$(dirname "$0")/filters.sh" policy "$@"
