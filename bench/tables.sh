#!/usr/bin/env bash
# bench/tables.sh: RCPT throughput with virtual_mailbox_domains/_maps in PostgreSQL (and MariaDB): bench/filters.sh tables
exec "$(dirname "$0")/filters.sh" tables "$@"
