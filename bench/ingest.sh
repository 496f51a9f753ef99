#!/usr/bin/env bash
# bench/ingest.sh - SMTP ingest benchmark: Postfix vs petreld, same machine, same run.
#
# usage: bench/ingest.sh [--petreld PATH] [--messages N] [--sizes "1 50"]
#                        [--concurrency "1 20 100"] [--repeat R] [--reuse]
#                        [--postfix-mode defer|hold] [--timeout S] [--ports "P1 P2"]
#                        [--raw FILE] [--keep]
#
# For each message size (KiB) and client concurrency, smtp-source (Postfix's test
# client) sends N messages to a private Postfix instance and to petreld, alternating
# which goes first (ABBA) over R repetitions. Per run: wall time of the client
# (-> messages/s), CPU used by all the server's processes from just before the
# client starts until the queue has settled (-> CPU seconds per 1,000 messages),
# peak memory (sum of PSS and RSS of the server's processes, sampled), and the
# number of messages actually in the queue (must equal N). Both servers are
# restarted with an empty queue for every run. See bench/README.md.
set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
. "$BENCH_DIR/lib.sh"

PETRELD=""
MESSAGES=2000
SIZES="1 50"
CONCS="1 20 100"
REPEAT=3
REUSE=0
PF_MODE=defer
TIMEOUT=300          # per smtp-source run
SETTLE_MAX=60        # per run, waiting for the queue to settle after the client
PORTS="42525 42526"
RAW=""
MAXPROC=1024         # master.cf maxproc of the listener; also Postfix's listen backlog
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-0.5}

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
	case $1 in
	--petreld) PETRELD=$2; shift 2 ;;
	--messages) MESSAGES=$2; shift 2 ;;
	--sizes) SIZES=$2; shift 2 ;;
	--concurrency) CONCS=$2; shift 2 ;;
	--repeat) REPEAT=$2; shift 2 ;;
	--reuse) REUSE=1; shift ;;
	--postfix-mode) PF_MODE=$2; shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--ports) PORTS=$2; shift 2 ;;
	--raw) RAW=$2; shift 2 ;;
	--keep) BENCH_KEEP=1; shift ;;
	-h|--help) usage 0 ;;
	*) say "unknown option: $1"; usage ;;
	esac
done

[ "$(id -u)" = 0 ] || die "run as root: 'postfix start' of the private instance needs root (see bench/README.md)"
for t in postfix postsuper smtp-source ss "$PYTHON"; do
	command -v "$t" >/dev/null || die "missing $t (Debian: apt-get install postfix iproute2 python3)"
done
case $PF_MODE in defer|hold) ;; *) die "--postfix-mode must be defer or hold" ;; esac
set -- $PORTS; PF_PORT=$1; PT_PORT=${2:-$((PF_PORT + 1))}
port_free "$PF_PORT" || die "port $PF_PORT is in use (use --ports)"
port_free "$PT_PORT" || die "port $PT_PORT is in use (use --ports)"

WITH_PETREL=0
if [ -z "$PETRELD" ]; then
	say "note: --petreld not given: Petrel side skipped (Postfix only)"
elif [ ! -x "$PETRELD" ]; then
	say "note: $PETRELD is not executable: Petrel side skipped (Postfix only)"
else
	WITH_PETREL=1
fi

trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_tmp_init
bench_cgroup_init
check_somaxconn 1024
raise_nofile 65536    # inherited by smtp-source and both servers

pf_setup "$PF_PORT" "$MAXPROC" "$PF_MODE"
[ $WITH_PETREL = 1 ] && pt_setup "$PETRELD" "$PT_PORT" "$MAXPROC"

TSV=$BENCH_TMP/runs.tsv
printf 'server\tsize_kib\tconc\trep\twall_s\tmsgs_per_s\tcpu_s\tcpu_s_per_1000\tpeak_pss_mb\tpeak_rss_mb\tmax_procs\tqueued\texpected\tstatus\n' >"$TSV"

case $CG_METHOD in
proc-tree) CPU_METHOD="fallback: /proc/PID/schedstat run time of the server's live process tree + cutime/cstime of reaped children" ;;
cgroup2:*) CPU_METHOD="cgroup v2 cpu.stat usage_usec, one cgroup per server run (${CG_METHOD#cgroup2:})" ;;
cgroup1-cpuacct:*) CPU_METHOD="cgroup v1 cpuacct.usage, one cgroup per server run (${CG_METHOD#*:})" ;;
esac
say "== ingest benchmark: N=$MESSAGES sizes(KiB)=[$SIZES] concurrency=[$CONCS] repeat=$REPEAT reuse=$REUSE postfix-mode=$PF_MODE"
say "== CPU method: $CPU_METHOD"
say "== memory: peak over ${SAMPLE_INTERVAL}s samples of the sum of Pss/Rss (/proc/PID/smaps_rollup) of the server's processes"
say "== machine: $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(postconf -d -h mail_version 2>/dev/null | sed 's/^/Postfix /')"

SERVER=""
srv_start() { if [ "$SERVER" = postfix ]; then pf_start "$1"; else pt_start "$1"; fi; }
srv_stop() { if [ "$SERVER" = postfix ]; then pf_stop; else pt_stop; fi; }
srv_clear() { if [ "$SERVER" = postfix ]; then pf_clear; else pt_clear; fi; }
srv_count() { if [ "$SERVER" = postfix ]; then pf_count; else pt_count; fi; }
srv_port() { if [ "$SERVER" = postfix ]; then echo "$PF_PORT"; else echo "$PT_PORT"; fi; }
srv_target() {   # benchlib.py selector for this server
	if [ -n "$CUR_CG" ]; then echo "--cgroup $CUR_CG"
	elif [ "$SERVER" = postfix ]; then echo "--root $(pf_root_pid)"
	else echo "--root $(pt_root_pid)"; fi
}

RUN_ID=0
BACKLOG_SHOWN=""
# one_run SERVER SIZE_KIB CONC REP
one_run() {
	SERVER=$1; local size=$2 conc=$3 rep=$4
	local bytes=$((size * 1024)) port status=ok sel c0 c1 t0 t1 wall rc queued i prev cur
	RUN_ID=$((RUN_ID + 1))
	port=$(srv_port)
	srv_clear
	CUR_CG=$(bench_cg_new "$SERVER-$RUN_ID")
	if ! srv_start "$CUR_CG"; then
		srv_stop
		printf '%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t%s\tstart-failed\n' "$SERVER" "$size" "$conc" "$rep" "$MESSAGES" >>"$TSV"
		return
	fi
	case " $BACKLOG_SHOWN " in *" $SERVER "*) ;; *)
		say "== $SERVER listen backlog on :$port = $(listen_backlog "$port")"
		BACKLOG_SHOWN="$BACKLOG_SHOWN $SERVER" ;;
	esac
	sleep 1    # let start-up work (postfix-script, first fork) finish before the baseline
	sel=$(srv_target)
	$BENCHLIB sample $sel --out "$BENCH_TMP/mem.$RUN_ID" --interval "$SAMPLE_INTERVAL" &
	local sampler=$!
	BENCH_RUN_PIDS="$sampler"
	c0=$($BENCHLIB cpu $sel)
	local dflag=""; [ "$REUSE" = 1 ] && dflag="-d"
	t0=$(now)
	timeout "$TIMEOUT" smtp-source $dflag -s "$conc" -m "$MESSAGES" -l "$bytes" \
		-f from@example.com -t to@example.com "127.0.0.1:$port" >"$BENCH_TMP/client.$RUN_ID" 2>&1
	rc=$?
	t1=$(now)
	[ $rc = 124 ] && status=client-timeout
	[ $rc != 0 ] && [ $rc != 124 ] && status="client-rc$rc"
	# settle: all N messages counted and the server's CPU use quiet (<10 ms per 0.5 s)
	prev=$($BENCHLIB cpu $sel)
	for i in $(seq 1 $((SETTLE_MAX * 2))); do
		sleep 0.5
		cur=$($BENCHLIB cpu $sel)
		queued=$(srv_count)
		[ "$queued" -ge "$MESSAGES" ] && [ $((cur - prev)) -lt 10000 ] && break
		prev=$cur
	done
	c1=$($BENCHLIB cpu $sel)
	queued=$(srv_count)
	kill -TERM "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; BENCH_RUN_PIDS=""
	[ "$status" = ok ] && [ "$queued" != "$MESSAGES" ] && status="queued-mismatch"
	wall=$(echo "$t1 - $t0" | bc -l)
	local mps cpus cpk pss rss np
	mps=$(echo "scale=1; $MESSAGES / $wall" | bc -l)
	cpus=$(echo "scale=3; ($c1 - $c0) / 1000000" | bc -l)
	cpk=$(echo "scale=3; $cpus * 1000 / $MESSAGES" | bc -l)
	read -r rss pss np <"$BENCH_TMP/mem.$RUN_ID" 2>/dev/null || { rss=0 pss=0 np=0; }
	pss=$(echo "scale=1; $pss / 1024" | bc -l); rss=$(echo "scale=1; $rss / 1024" | bc -l)
	wall=$(printf '%.3f' "$wall"); cpus=$(printf '%.3f' "$cpus"); cpk=$(printf '%.3f' "$cpk")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SERVER" "$size" "$conc" "$rep" \
		"$wall" "$mps" "$cpus" "$cpk" "$pss" "$rss" "$np" "$queued" "$MESSAGES" "$status" >>"$TSV"
	printf '%-8s %4s KiB  conc %-4s rep %s  %8ss  %8s msg/s  CPU %7ss (%6s s/1000)  peak PSS %7s MB  RSS %7s MB  procs %-4s queued %s/%s  %s\n' \
		"$SERVER" "$size" "$conc" "$rep" "$wall" "$mps" "$cpus" "$cpk" "$pss" "$rss" "$np" "$queued" "$MESSAGES" "$status" >&2
	[ "$status" != ok ] && sed -n '1,5p' "$BENCH_TMP/client.$RUN_ID" >&2
	srv_stop
}

command -v bc >/dev/null || die "missing bc (apt-get install bc)"

for size in $SIZES; do
	for conc in $CONCS; do
		for rep in $(seq 1 "$REPEAT"); do
			if [ $WITH_PETREL = 0 ]; then order="postfix"
			elif [ $((rep % 2)) = 1 ]; then order="postfix petrel"
			else order="petrel postfix"; fi
			for s in $order; do one_run "$s" "$size" "$conc" "$rep"; done
		done
	done
done

[ -n "$RAW" ] && cp "$TSV" "$RAW" && say "raw per-run figures: $RAW"

echo
echo "### Ingest: $(date -u +%Y-%m-%d), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(postconf -d -h mail_version 2>/dev/null | sed 's/^/Postfix /')"
echo
echo "Command: \`bench/ingest.sh ${PETRELD:+--petreld $PETRELD }--messages $MESSAGES --sizes \"$SIZES\" --concurrency \"$CONCS\" --repeat $REPEAT$([ $REUSE = 1 ] && echo ' --reuse') --postfix-mode $PF_MODE\`"
echo "(smtp-source $([ $REUSE = 1 ] && echo 'reusing connections (-d)' || echo 'one connection per message'); CPU: $CPU_METHOD)"
echo
$BENCHLIB summarize "$TSV"
