#!/usr/bin/env bash
# bench/metrics.sh: bench/filters.sh metrics (see its header and bench/README.md)
exec "$(dirname "$0")/filters.sh" metrics "$@"
