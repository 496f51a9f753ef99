#!/usr/bin/env bash
# bench/relay.sh - end-to-end relay benchmark: Postfix vs petreld, same machine, same run.
#
# usage: bench/relay.sh [--petreld PATH] [--messages N] [--sizes "1 50"]
#                       [--concurrency "20 100"] [--repeat R] [--dest-concurrency C]
#                       [--timeout S] [--ports "PF PT SINK"] [--raw FILE] [--keep]
#
# smtp-source -> server -> smtp-sink, all on 127.0.0.1. The server (a private
# Postfix instance, then petreld, alternating order over R repetitions) relays
# every message to smtp-sink (relayhost = [127.0.0.1]:SINK). Per run: time from
# the client's first connection until the sink has received all N messages
# (-> messages/s), CPU of all the server's processes (cgroup) from just before
# the client starts until the queue is empty and the server is quiet (-> CPU s
# per 1,000 messages), peak PSS/RSS of the server. See bench/README.md.
set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
. "$BENCH_DIR/lib.sh"

PETRELD=""
MESSAGES=3000
SIZES="1 50"
CONCS="20 100"
REPEAT=3
DEST_CONC=20          # default_destination_concurrency_limit, both servers
TIMEOUT=300           # per run: client, then waiting for the sink
SETTLE_MAX=30         # per run, waiting for an empty queue and a quiet server after the sink
PORTS="42535 42536 42537"
RAW=""
MAXPROC=1024
RCPT=to@example.net   # not in mydestination: relayed (client in mynetworks)
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-0.5}

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
	case $1 in
	--petreld) PETRELD=$2; shift 2 ;;
	--messages) MESSAGES=$2; shift 2 ;;
	--sizes) SIZES=$2; shift 2 ;;
	--concurrency) CONCS=$2; shift 2 ;;
	--repeat) REPEAT=$2; shift 2 ;;
	--dest-concurrency) DEST_CONC=$2; shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--ports) PORTS=$2; shift 2 ;;
	--raw) RAW=$2; shift 2 ;;
	--keep) BENCH_KEEP=1; shift ;;
	-h|--help) usage 0 ;;
	*) say "unknown option: $1"; usage ;;
	esac
done

[ "$(id -u)" = 0 ] || die "run as root: 'postfix start' of the private instance needs root (see bench/README.md)"
for t in postfix postconf postsuper smtp-source smtp-sink ss bc "$PYTHON"; do
	command -v "$t" >/dev/null || die "missing $t (Debian: apt-get install postfix iproute2 python3 bc)"
done
set -- $PORTS; PF_PORT=$1; PT_PORT=${2:-$((PF_PORT + 1))}; SINK_PORT=${3:-$((PF_PORT + 2))}
for p in "$PF_PORT" "$PT_PORT" "$SINK_PORT"; do port_free "$p" || die "port $p is in use (use --ports)"; done

WITH_PETREL=0
if [ -z "$PETRELD" ]; then
	say "note: --petreld not given: Petrel side skipped (Postfix only)"
elif [ ! -x "$PETRELD" ]; then
	say "note: $PETRELD is not executable: Petrel side skipped (Postfix only)"
else
	WITH_PETREL=1
fi

SINK_PID=""
relay_cleanup() {
	[ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null
	bench_cleanup
}
trap relay_cleanup EXIT
trap 'exit 130' INT TERM
bench_tmp_init
bench_cgroup_init
check_somaxconn 1024
raise_nofile 65536

# Postfix: the ingest instance, but delivering: relayhost = the sink, no defer_transports
pf_setup "$PF_PORT" "$MAXPROC" defer
postconf -c "$PF_ETC" -X defer_transports
postconf -c "$PF_ETC" -e "relayhost = [127.0.0.1]:$SINK_PORT" \
	"default_destination_concurrency_limit = $DEST_CONC"
# petreld: the ingest instance plus the queue manager and the same relayhost
if [ $WITH_PETREL = 1 ]; then
	pt_setup "$PETRELD" "$PT_PORT" "$MAXPROC"
	cat >>"$PT_ETC/main.cf" <<EOF
relayhost = [127.0.0.1]:$SINK_PORT
default_destination_concurrency_limit = $DEST_CONC
EOF
	echo "qmgr unix n - n 300 1 qmgr" >>"$PT_ETC/master.cf"
fi

TSV=$BENCH_TMP/runs.tsv
printf 'server\tsize_kib\tconc\trep\tclient_s\te2e_s\tmsgs_per_s\tcpu_s\tcpu_s_per_1000\tpeak_pss_mb\tpeak_rss_mb\tmax_procs\tsink_count\tsent_logged\tleft_in_queue\tsink_cpu_s\texpected\tstatus\n' >"$TSV"

case $CG_METHOD in
proc-tree) CPU_METHOD="fallback: /proc/PID/schedstat run time of the server's live process tree + cutime/cstime of reaped children" ;;
cgroup2:*) CPU_METHOD="cgroup v2 cpu.stat usage_usec, one cgroup per server run (${CG_METHOD#cgroup2:})" ;;
cgroup1-cpuacct:*) CPU_METHOD="cgroup v1 cpuacct.usage, one cgroup per server run (${CG_METHOD#*:})" ;;
esac
say "== relay benchmark: N=$MESSAGES sizes(KiB)=[$SIZES] concurrency=[$CONCS] repeat=$REPEAT dest-concurrency=$DEST_CONC"
say "== smtp-source -> 127.0.0.1:{$PF_PORT postfix, $PT_PORT petreld} -> smtp-sink 127.0.0.1:$SINK_PORT"
say "== CPU method: $CPU_METHOD"
say "== machine: $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(postconf -d -h mail_version 2>/dev/null | sed 's/^/Postfix /')"

# the sink: fresh per run (its counters start at 0), outside the server's cgroup.
# smtp-sink -c writes "sess=N quit=N mesg=N\r" whenever a message ends ("." received).
sink_start() {
	SINK_OUT=$1
	smtp-sink -c -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$SINK_OUT" 2>&1 &
	SINK_PID=$!
	wait_banner "$SINK_PORT" 10 || die "smtp-sink: no banner on $SINK_PORT"
}
sink_stop() {
	[ -n "$SINK_PID" ] || return 0
	kill -TERM "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; SINK_PID=""
}

SERVER=""
srv_start() { if [ "$SERVER" = postfix ]; then pf_start "$1"; else pt_start "$1"; fi; }
srv_stop() { if [ "$SERVER" = postfix ]; then pf_stop; else pt_stop; fi; }
srv_clear() { if [ "$SERVER" = postfix ]; then pf_clear; else pt_clear; fi; }
srv_count() { if [ "$SERVER" = postfix ]; then pf_count; else pt_count; fi; }
srv_port() { if [ "$SERVER" = postfix ]; then echo "$PF_PORT"; else echo "$PT_PORT"; fi; }
srv_log() { if [ "$SERVER" = postfix ]; then echo "$PF_LOG"; else echo "$PT_LOG"; fi; }
srv_target() {
	if [ -n "$CUR_CG" ]; then echo "--cgroup $CUR_CG"
	elif [ "$SERVER" = postfix ]; then echo "--root $(pf_root_pid)"
	else echo "--root $(pt_root_pid)"; fi
}

RUN_ID=0
# one_run SERVER SIZE_KIB CONC REP
one_run() {
	SERVER=$1; local size=$2 conc=$3 rep=$4
	local bytes=$((size * 1024)) port status=ok sel c0 c1 t0 t1 tdone rc left i prev cur
	local sent0 sent1 sinkn sc0 sc1 waiter
	RUN_ID=$((RUN_ID + 1))
	port=$(srv_port)
	srv_clear
	sink_start "$BENCH_TMP/sink.$RUN_ID"
	CUR_CG=$(bench_cg_new "relay-$SERVER-$RUN_ID")
	if ! srv_start "$CUR_CG"; then
		srv_stop; sink_stop
		printf '%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\tstart-failed\n' "$SERVER" "$size" "$conc" "$rep" "$MESSAGES" >>"$TSV"
		return
	fi
	sleep 1
	sel=$(srv_target)
	sent0=$(grep -c 'status=sent' "$(srv_log)" 2>/dev/null); sent0=${sent0:-0}
	$BENCHLIB sample $sel --out "$BENCH_TMP/mem.$RUN_ID" --interval "$SAMPLE_INTERVAL" &
	local sampler=$!
	$BENCHLIB sinkwait --file "$BENCH_TMP/sink.$RUN_ID" --count "$MESSAGES" --timeout "$TIMEOUT" \
		>"$BENCH_TMP/done.$RUN_ID" &
	waiter=$!
	BENCH_RUN_PIDS="$sampler $waiter"
	sc0=$($BENCHLIB cpu --root "$SINK_PID")
	c0=$($BENCHLIB cpu $sel)
	t0=$(now)
	timeout "$TIMEOUT" smtp-source -s "$conc" -m "$MESSAGES" -l "$bytes" \
		-f from@example.com -t "$RCPT" "127.0.0.1:$port" >"$BENCH_TMP/client.$RUN_ID" 2>&1
	rc=$?
	t1=$(now)
	[ $rc = 124 ] && status=client-timeout
	[ $rc != 0 ] && [ $rc != 124 ] && status="client-rc$rc"
	if [ "$status" != ok ]; then kill -TERM "$waiter" 2>/dev/null; fi
	wait "$waiter"
	tdone=$(cat "$BENCH_TMP/done.$RUN_ID")
	case $tdone in timeout*|"") [ "$status" = ok ] && status=sink-timeout; tdone="" ;; esac
	# settle: queue empty and the server's CPU quiet (<10 ms per 0.5 s)
	prev=$($BENCHLIB cpu $sel)
	for i in $(seq 1 $((SETTLE_MAX * 2))); do
		sleep 0.5
		cur=$($BENCHLIB cpu $sel)
		left=$(srv_count)
		[ "$left" -eq 0 ] && [ $((cur - prev)) -lt 10000 ] && break
		prev=$cur
	done
	c1=$($BENCHLIB cpu $sel)
	sc1=$($BENCHLIB cpu --root "$SINK_PID")
	left=$(srv_count)
	kill -TERM "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; BENCH_RUN_PIDS=""
	sinkn=$($BENCHLIB sinkcount "$BENCH_TMP/sink.$RUN_ID")
	sent1=$(grep -c 'status=sent' "$(srv_log)" 2>/dev/null); sent1=${sent1:-0}
	[ "$status" = ok ] && [ "$left" != 0 ] && status="queue-not-empty"
	[ "$status" = ok ] && [ "$sinkn" -gt "$MESSAGES" ] && status="sink-too-many"
	local cwall e2e mps cpus cpk pss rss np scpu
	cwall=$(printf '%.3f' "$(echo "$t1 - $t0" | bc -l)")
	if [ -n "$tdone" ]; then
		e2e=$(printf '%.3f' "$(echo "$tdone - $t0" | bc -l)")
		mps=$(echo "scale=1; $MESSAGES / $e2e" | bc -l)
	else e2e=-; mps=-; fi
	cpus=$(printf '%.3f' "$(echo "scale=3; ($c1 - $c0) / 1000000" | bc -l)")
	cpk=$(printf '%.3f' "$(echo "scale=3; $cpus * 1000 / $MESSAGES" | bc -l)")
	scpu=$(printf '%.3f' "$(echo "scale=3; ($sc1 - $sc0) / 1000000" | bc -l)")
	read -r rss pss np <"$BENCH_TMP/mem.$RUN_ID" 2>/dev/null || { rss=0 pss=0 np=0; }
	pss=$(echo "scale=1; $pss / 1024" | bc -l); rss=$(echo "scale=1; $rss / 1024" | bc -l)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$SERVER" "$size" "$conc" "$rep" \
		"$cwall" "$e2e" "$mps" "$cpus" "$cpk" "$pss" "$rss" "$np" "$sinkn" "$((sent1 - sent0))" "$left" "$scpu" "$MESSAGES" "$status" >>"$TSV"
	printf '%-8s %3s KiB conc %-4s rep %s  client %7ss  e2e %7ss  %7s msg/s  CPU %6ss (%5s s/1000)  PSS %6s MB  RSS %6s MB  procs %-3s sink %s sent %s left %s  sink CPU %ss  %s\n' \
		"$SERVER" "$size" "$conc" "$rep" "$cwall" "$e2e" "$mps" "$cpus" "$cpk" "$pss" "$rss" "$np" "$sinkn" "$((sent1 - sent0))" "$left" "$scpu" "$status" >&2
	[ "$status" != ok ] && { sed -n '1,5p' "$BENCH_TMP/client.$RUN_ID" >&2; tail -3 "$(srv_log)" >&2; }
	srv_stop
	sink_stop
}

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
echo "### Relay: $(date -u +%Y-%m-%d), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(postconf -d -h mail_version 2>/dev/null | sed 's/^/Postfix /')"
echo
echo "Command: \`bench/relay.sh ${PETRELD:+--petreld $PETRELD }--messages $MESSAGES --sizes \"$SIZES\" --concurrency \"$CONCS\" --repeat $REPEAT --dest-concurrency $DEST_CONC\`"
echo "(smtp-source, one connection per message -> server -> smtp-sink on 127.0.0.1; relayhost = [127.0.0.1]:SINK, default_destination_concurrency_limit = $DEST_CONC on both; CPU: $CPU_METHOD)"
echo
$BENCHLIB summarize-relay "$TSV"
