#!/usr/bin/env bash
# bench/commit-probe.sh - durable commits per second of the benchmarks' file
# system: a new file per commit (what a queue commit is, Petrel's and
# Postfix's) against overwriting blocks of one preallocated file (an append
# log's commit). No MTA runs; this bounds what any queue design can get.
#
# usage: bench/commit-probe.sh [--threads "1 10 20"] [--count 4000]
# Runs bench/commit-probe.c (built here) on a fresh journaled ext4 on a loop
# device, as the other benchmarks' queues (bench/lib.sh, BENCH_FS). See
# bench/RESULTS.md 6j.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
. "$BENCH_DIR/lib.sh"

THREADS="1 10 20" COUNT=4000
while [ $# -gt 0 ]; do
	case $1 in
	--threads) THREADS=$2; shift 2 ;;
	--count) COUNT=$2; shift 2 ;;
	--keep) BENCH_KEEP=1; shift ;;
	*) die "usage: bench/commit-probe.sh [--threads \"1 10 20\"] [--count N] [--keep]" ;;
	esac
done

trap bench_cleanup EXIT
bench_tmp_init
cc -O2 -pthread -o "$BENCH_TMP/commit-probe" "$BENCH_DIR/commit-probe.c" || die "cannot build bench/commit-probe.c"
say "== machine: $(nproc) CPUs, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for th in $THREADS; do
	for mode in new-file overwrite; do
		d="$BENCH_TMP/$mode.$th"
		mkdir -p "$d"
		"$BENCH_TMP/commit-probe" "$mode" "$d" "$th" "$COUNT"
	done
done
