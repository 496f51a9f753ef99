#!/usr/bin/env bash
# bench/bigqueue.sh - petreld with a large deferred queue toward a dead next hop.
#
# usage: bench/bigqueue.sh --petreld PATH [--petrelctl PATH] [--make-queue PATH]
#                          [--messages N] [--size BYTES] [--observe S] [--drain-timeout S]
#                          [--queue-run-delay S] [--active-limit N] [--ports "PT DEAD"] [--keep]
#
# 1. t/tools/make-queue writes N valid queue files straight into deferred/ (due:
#    mtime an hour ago), pending recipient rcpt@example.net, relayhost = [127.0.0.1]:DEAD
#    where nothing listens. 2. petreld starts with its queue manager and works on
#    them for --observe seconds: queue manager RSS sampled every second (bounded by
#    qmgr_message_active_limit). 3. `petrelctl queue list | tail -1`, timed, max RSS.
# 4. smtp-sink starts on DEAD, `petrelctl queue flush`, time until the sink has all
#    N messages and the queue is empty (drain rate). See bench/README.md.
set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
. "$BENCH_DIR/lib.sh"

PETRELD=""
PETRELCTL=""
MAKE_QUEUE=""
MESSAGES=100000
SIZE=1024
OBSERVE=90
DRAIN_TIMEOUT=900
RUN_DELAY=""          # queue_run_delay; empty = petreld's default
ACTIVE_LIMIT=""       # qmgr_message_active_limit; empty = default (20000)
PORTS="42545 19546"   # the dead port is outside ip_local_port_range (see the check below) and below 20000,
                      # where no integration test reserves a port to start a server on (t/integration/portlib.py)
RSS_LIMIT_MB=128

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--petreld) PETRELD=$2; shift 2 ;;
	--petrelctl) PETRELCTL=$2; shift 2 ;;
	--make-queue) MAKE_QUEUE=$2; shift 2 ;;
	--messages) MESSAGES=$2; shift 2 ;;
	--size) SIZE=$2; shift 2 ;;
	--observe) OBSERVE=$2; shift 2 ;;
	--drain-timeout) DRAIN_TIMEOUT=$2; shift 2 ;;
	--queue-run-delay) RUN_DELAY=$2; shift 2 ;;
	--active-limit) ACTIVE_LIMIT=$2; shift 2 ;;
	--ports) PORTS=$2; shift 2 ;;
	--keep) BENCH_KEEP=1; shift ;;
	-h|--help) usage 0 ;;
	*) say "unknown option: $1"; usage ;;
	esac
done

[ "$(id -u)" = 0 ] || die "run as root (petreld drops to mail_owner; make-queue runs as mail_owner)"
[ -x "$PETRELD" ] || die "--petreld PATH is required (the built core/master/petreld)"
BUILD=$(cd "$(dirname "$PETRELD")/../.." && pwd)
PETRELCTL=${PETRELCTL:-$BUILD/core/tools/petrelctl}
MAKE_QUEUE=${MAKE_QUEUE:-$BUILD/t/tools/make-queue}
[ -x "$PETRELCTL" ] || die "no petrelctl at $PETRELCTL (--petrelctl)"
[ -x "$MAKE_QUEUE" ] || die "no make-queue at $MAKE_QUEUE: build it with 'make t/tools/make-queue' in the build directory"
for t in smtp-sink setpriv ss bc /usr/bin/time "$PYTHON"; do
	command -v "$t" >/dev/null || die "missing $t (Debian: postfix, util-linux, iproute2, bc, time, python3)"
done
set -- $PORTS; PT_PORT=$1; DEAD_PORT=${2:-$((PT_PORT + 1))}
port_free "$PT_PORT" || die "port $PT_PORT is in use (use --ports)"
port_free "$DEAD_PORT" || die "port $DEAD_PORT is in use: it must be closed (use --ports)"
# A connect() to a closed loopback port inside the ephemeral range can be given that
# very port as its source port and then connects to itself (TCP simultaneous open):
# the queue manager then waits for its own banner, and the TIME-WAIT left behind
# stops smtp-sink from binding the port later. Seen here with 42546.
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range
if [ "$DEAD_PORT" -ge "$EPH_LO" ] && [ "$DEAD_PORT" -le "$EPH_HI" ]; then
	die "dead port $DEAD_PORT is inside ip_local_port_range ($EPH_LO-$EPH_HI): pick one outside it (--ports)"
fi

SINK_PID="" SAMPLER=""
bq_cleanup() {
	[ -n "$SAMPLER" ] && kill -TERM "$SAMPLER" 2>/dev/null
	[ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null
	bench_cleanup
}
trap bq_cleanup EXIT
trap 'exit 130' INT TERM
bench_tmp_init
bench_cgroup_init
raise_nofile 65536

pt_setup "$PETRELD" "$PT_PORT" 100
cat >>"$PT_ETC/main.cf" <<EOF
relayhost = [127.0.0.1]:$DEAD_PORT
EOF
[ -n "$RUN_DELAY" ] && echo "queue_run_delay = $RUN_DELAY" >>"$PT_ETC/main.cf"
[ -n "$ACTIVE_LIMIT" ] && echo "qmgr_message_active_limit = $ACTIVE_LIMIT" >>"$PT_ETC/main.cf"
echo "qmgr unix n - n 300 1 qmgr" >>"$PT_ETC/master.cf"
PCTL="$PETRELCTL -c $PT_ETC"

say "== big queue: N=$MESSAGES x $SIZE bytes in deferred/, dead next hop [127.0.0.1]:$DEAD_PORT, observe ${OBSERVE}s, drain timeout ${DRAIN_TIMEOUT}s"
say "== machine: $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
say "== main.cf: $(grep -v '^#' "$PT_ETC/main.cf" | tr '\n' ';')"

# the queue manager: the child of petreld holding an inotify descriptor
find_qmgr() {
	local p
	for p in $($BENCHLIB pids --root "$PT_PID"); do
		[ "$p" = "$PT_PID" ] && continue
		ls -l "/proc/$p/fd" 2>/dev/null | grep -q 'anon_inode:inotify' && { echo "$p"; return 0; }
	done
	return 1
}

# --- 0. first start: petreld creates the queue directories with their owner
pt_start "" || die "petreld did not start"
pt_stop
OWNER=$(stat -c '%u:%g' "$PT_Q/deferred") || die "no $PT_Q/deferred after the first start"
pt_clear
# defer/ (the queue manager's reasons for deferred messages, read by `petrelctl queue
# list`): the master creates and chowns the other subdirectories but not this one, and
# the queue manager's own mkdir fails once it runs as mail_owner under a root-owned
# queue_directory; make-queue needs it too. Created here as the master would.
if [ ! -d "$PT_Q/defer" ]; then
	say "note: $PT_Q/defer was not created by petreld: creating it (owner $OWNER, 0700)"
	mkdir -m 0700 "$PT_Q/defer" && chown "$OWNER" "$PT_Q/defer"
fi

# --- 1. N queue files, straight into deferred/, due an hour ago. make-queue gives its
# first recipient NOTIFY=SUCCESS,FAILURE (a success DSN would reach the sink too), so
# that one is marked delivered already; rcpt@example.net is the pending recipient.
say "-- make-queue: $MESSAGES files into deferred/ as uid:gid $OWNER"
t0=$(now)
setpriv --reuid="${OWNER%:*}" --regid="${OWNER#*:}" --clear-groups \
	"$MAKE_QUEUE" "$PT_Q" -n "$MESSAGES" -d deferred -s "$SIZE" -a 3600 -m -3600 \
	-f from@example.org -r done@example.net -r rcpt@example.net -x 0:delivered:2.0.0 \
	>/dev/null || die "make-queue failed"
t1=$(now)
MADE=$(find "$PT_Q/deferred" -type f | wc -l)
MAKE_S=$(printf '%.1f' "$(echo "$t1 - $t0" | bc -l)")
QBYTES=$(du -sm "$PT_Q" | awk '{print $1}')
say "   $MADE files in ${MAKE_S}s, queue directory $QBYTES MB"

# --- 2. start with the queue manager, sample for OBSERVE seconds
SERIES=$BENCH_TMP/series.tsv
SINK_OUT=$BENCH_TMP/sink.out
CG=$(bench_cg_new bigqueue)
T_START=$(now)
pt_start "$CG" || die "petreld did not start with the big queue"
for i in $(seq 1 50); do QMGR=$(find_qmgr) && break; sleep 0.2; done
[ -n "${QMGR:-}" ] || die "no queue manager process found under petreld $PT_PID"
say "-- petreld $PT_PID, queue manager $QMGR; sampling every 1 s -> $SERIES"
$BENCHLIB qsample --pid "$QMGR" --root "$PT_PID" --qdir "$PT_Q" --out "$SERIES" --interval 1 --sink "$SINK_OUT" &
SAMPLER=$!
sleep "$OBSERVE"
kill -0 "$QMGR" 2>/dev/null || say "warning: queue manager $QMGR is gone (see $PT_LOG)"
OBS_LINE=$(tail -1 "$SERIES")
say "   after ${OBSERVE}s: $(echo "$OBS_LINE" | awk -F'\t' '{printf "qmgr RSS %.1f MiB (peak %.1f MiB), incoming %s active %s deferred %s", $2/1024, $3/1024, $5, $6, $7}')"
DEFERRED_LOGGED=$(grep -c 'status=deferred' "$PT_LOG")

# --- 3. petrelctl queue list | tail -1, timed, max RSS
say "-- petrelctl queue list"
/usr/bin/time -v -o "$BENCH_TMP/list.time" $PCTL queue list >"$BENCH_TMP/list.out" 2>"$BENCH_TMP/list.err"
LIST_RC=$?
LIST_TAIL=$(tail -1 "$BENCH_TMP/list.out")
LIST_S=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$BENCH_TMP/list.time")
LIST_RSS=$(awk -F': ' '/Maximum resident set size/{printf "%.1f", $2/1024}' "$BENCH_TMP/list.time")
say "   rc $LIST_RC, ${LIST_S} wall, max RSS ${LIST_RSS} MiB: $LIST_TAIL"

# --- 4. the next hop comes back: sink on DEAD, flush, time until all N are received
smtp-sink -c -u nobody "127.0.0.1:$DEAD_PORT" 1024 >"$SINK_OUT" 2>&1 &
SINK_PID=$!
wait_banner "$DEAD_PORT" 10 || die "smtp-sink did not start on $DEAD_PORT"
say "-- sink on $DEAD_PORT; petrelctl queue flush"
T_FLUSH=$(now)
$PCTL queue flush >"$BENCH_TMP/flush.out" 2>&1 || say "warning: flush: $(cat "$BENCH_TMP/flush.out")"
DONE=$($BENCHLIB sinkwait --file "$SINK_OUT" --count "$MESSAGES" --timeout "$DRAIN_TIMEOUT" --poll 0.5)
T_DONE=$(now)
RECEIVED=$($BENCHLIB sinkcount "$SINK_OUT")
case $DONE in
timeout*) DRAIN_S=$(printf '%.1f' "$(echo "$T_DONE - $T_FLUSH" | bc -l)"); DRAIN_STATUS="timeout after ${DRAIN_S}s" ;;
*) DRAIN_S=$(printf '%.1f' "$(echo "$DONE - $T_FLUSH" | bc -l)"); DRAIN_STATUS=ok ;;
esac
DRAIN_RATE=$(echo "scale=1; $RECEIVED / $DRAIN_S" | bc -l)
sleep 2
kill -TERM "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""
LEFT=$(( $(find "$PT_Q/incoming" "$PT_Q/active" "$PT_Q/deferred" -type f | wc -l) ))
QMGR_PEAK=$(awk -F'\t' 'NR>1 && $3>m {m=$3} END {printf "%.1f", m/1024}' "$SERIES")
QMGR_MAXRSS=$(awk -F'\t' 'NR>1 && $2>m {m=$2} END {printf "%.1f", m/1024}' "$SERIES")
TREE_PEAK=$(awk -F'\t' 'NR>1 && $4>m {m=$4} END {printf "%.1f", m/1024}' "$SERIES")
QMGR_ALIVE=yes; kill -0 "$QMGR" 2>/dev/null || QMGR_ALIVE=no
SENT_LOGGED=$(grep -c 'status=sent' "$PT_LOG")
say "   drain: $RECEIVED/$MESSAGES received in ${DRAIN_S}s ($DRAIN_STATUS), $DRAIN_RATE msg/s; left in queue: $LEFT"
# progress of the drain, every 30 s from the flush on
FLUSH_OFF=$(echo "$T_FLUSH - $T_START" | bc -l)
PROGRESS=$(awk -F'\t' -v f="$FLUSH_OFF" 'NR>1 && $1>=f { k=int(($1-f)/30); if (!(k in seen)) { seen[k]=1; printf "+%ds: sink %s, active %s, deferred %s, qmgr CPU %ss; ", $1-f, $8, $6, $7, $9 } }' "$SERIES")
CAP=ok; [ "$(echo "$QMGR_PEAK > $RSS_LIMIT_MB" | bc -l)" = 1 ] && CAP="OVER ${RSS_LIMIT_MB} MiB"
WARN=$(grep -ciE 'warning|fatal|panic|error' "$PT_LOG")

if [ -n "${BENCH_KEEP:-}" ]; then
	cp "$SERIES" "$BENCH_TMP/series.kept.tsv"
fi

echo
echo "### Big queue: $(date -u +%Y-%m-%d), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
echo
echo "Command: \`bench/bigqueue.sh --petreld $PETRELD --messages $MESSAGES --size $SIZE --observe $OBSERVE --drain-timeout $DRAIN_TIMEOUT${RUN_DELAY:+ --queue-run-delay $RUN_DELAY}${ACTIVE_LIMIT:+ --active-limit $ACTIVE_LIMIT}\`"
echo
echo "| measure | value |"
echo "| --- | --- |"
echo "| queue files written by make-queue (deferred/, due) | $MADE in ${MAKE_S} s, $QBYTES MB on disk |"
echo "| qmgr_message_active_limit | ${ACTIVE_LIMIT:-default (20000)} |"
echo "| queue manager peak RSS (VmHWM), whole run | $QMGR_PEAK MiB ($CAP) |"
echo "| queue manager max sampled RSS / petreld tree peak PSS | $QMGR_MAXRSS MiB / $TREE_PEAK MiB |"
echo "| after ${OBSERVE} s toward the dead hop: incoming / active / deferred | $(echo "$OBS_LINE" | awk -F'\t' '{print $5 " / " $6 " / " $7 "; queue manager CPU " $9 " s"}'); $DEFERRED_LOGGED status=deferred lines logged |"
echo "| \`petrelctl queue list \| tail -1\` | ${LIST_S} wall, max RSS ${LIST_RSS} MiB, rc $LIST_RC: \`$LIST_TAIL\` |"
echo "| drain after \`petrelctl queue flush\` (sink on the dead port) | $RECEIVED/$MESSAGES in ${DRAIN_S} s = **$DRAIN_RATE msg/s** ($DRAIN_STATUS); left in queue $LEFT; $SENT_LOGGED status=sent lines |"
echo "| queue manager still running at the end | $QMGR_ALIVE; CPU $(tail -1 "$SERIES" | cut -f9) s in all; warning/error lines in the log: $WARN |"
echo
echo "Drain progress: $PROGRESS"
