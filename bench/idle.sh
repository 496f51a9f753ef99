#!/usr/bin/env bash
# bench/idle.sh - memory per idle SMTP session: Postfix smtpd vs petreld.
#
# usage: bench/idle.sh [--petreld PATH] [--sessions "1000 10000"]
#                      [--postfix-sessions "100 1000"] [--ports "P1 P2"] [--keep]
#
# For each count, the server is started fresh in its own cgroup, bench/idle.py
# opens that many sessions (banner + EHLO, then idle), and reports the server's
# memory (sum of PSS/RSS of all its processes) per session. Postfix runs one smtpd
# process per session, so it is measured at the smaller --postfix-sessions counts
# (the listener's maxproc is raised to the count; default_process_limit=100 would
# otherwise cap it). See bench/README.md.
set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
. "$BENCH_DIR/lib.sh"

PETRELD=""
SESSIONS="1000 10000"
PF_SESSIONS="100 1000"
PORTS="42527 42528"
CLIENT_TIMEOUT=600    # hard limit on each idle.py run

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--petreld) PETRELD=$2; shift 2 ;;
	--sessions) SESSIONS=$2; shift 2 ;;
	--postfix-sessions) PF_SESSIONS=$2; shift 2 ;;
	--ports) PORTS=$2; shift 2 ;;
	--keep) BENCH_KEEP=1; shift ;;
	-h|--help) usage 0 ;;
	*) say "unknown option: $1"; usage ;;
	esac
done

[ "$(id -u)" = 0 ] || die "run as root: 'postfix start' of the private instance needs root"
for t in postfix smtp-source ss "$PYTHON"; do command -v "$t" >/dev/null || die "missing $t"; done
set -- $PORTS; PF_PORT=$1; PT_PORT=${2:-$((PF_PORT + 1))}
port_free "$PF_PORT" || die "port $PF_PORT is in use (use --ports)"
port_free "$PT_PORT" || die "port $PT_PORT is in use (use --ports)"
WITH_PETREL=0
if [ -z "$PETRELD" ]; then say "note: --petreld not given: Petrel side skipped"
elif [ ! -x "$PETRELD" ]; then say "note: $PETRELD is not executable: Petrel side skipped"
else WITH_PETREL=1; fi

trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_tmp_init
bench_cgroup_init
check_somaxconn 1024
# the client and both servers inherit this (servers need one descriptor per session)
raise_nofile 65536
say "== idle sessions; RLIMIT_NOFILE=$(ulimit -n) for client and servers; process selection: $CG_METHOD"
say "== machine: $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"

RESULTS=$BENCH_TMP/idle.txt
: >"$RESULTS"
RUN=0
# measure SERVER COUNT
measure() {
	local server=$1 n=$2 cg sel out port maxproc
	RUN=$((RUN + 1))
	maxproc=$((n + 10)); [ "$maxproc" -lt 1024 ] && maxproc=1024
	cg=$(bench_cg_new "idle-$server-$RUN")
	if [ "$server" = postfix ]; then
		rm -rf "$BENCH_TMP/pf-etc"; pf_setup "$PF_PORT" "$maxproc" defer
		# sessions stay idle well past the measurement (default smtpd_timeout is 300s)
		pf_start "$cg" || { pf_stop; return; }
		port=$PF_PORT
		sel=${cg:+--cgroup $cg}; sel=${sel:---root $(pf_master_pid)}
	else
		rm -rf "$BENCH_TMP/pt-etc"; pt_setup "$PETRELD" "$PT_PORT" "$maxproc"
		# one client IP holds all the sessions: no per-client connection limit for loopback
		# (Postfix's default smtpd_client_event_limit_exceptions = $mynetworks does the same)
		printf '%s\n' "smtpd_client_connection_count_limit = 0" \
			"smtpd_client_event_limit_exceptions = 127.0.0.0/8" >>"$PT_ETC/main.cf"
		pt_start "$cg" || { pt_stop; return; }
		port=$PT_PORT
		sel=${cg:+--cgroup $cg}; sel=${sel:---root $PT_PID}
	fi
	sleep 1
	say "-- $server, $n sessions (listener maxproc $maxproc, backlog $(listen_backlog "$port"))"
	out=$(timeout "$CLIENT_TIMEOUT" $PYTHON "$BENCH_DIR/idle.py" --port "$port" --sessions "$n" $sel)
	echo "server=$server $out" >>"$RESULTS"
	if [ "$server" = postfix ]; then pf_stop; else pt_stop; fi
}

for n in $PF_SESSIONS; do measure postfix "$n"; done
if [ $WITH_PETREL = 1 ]; then for n in $SESSIONS; do measure petrel "$n"; done; fi

echo
echo "### Idle sessions: $(date -u +%Y-%m-%d), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
echo
echo "Command: \`bench/idle.sh ${PETRELD:+--petreld $PETRELD }--sessions \"$SESSIONS\" --postfix-sessions \"$PF_SESSIONS\"\`"
echo
echo "| server | sessions asked | established | processes | PSS MB total | PSS KiB/session (total/N) | PSS KiB/session (delta/N) | RSS KiB/session (delta/N) | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
while read -r line; do
	# shellcheck disable=SC2086
	( eval "$(echo $line | tr ' ' '\n' | sed "s/=\(.*\)/='\1'/")"
	  printf '| %s | %s | %s | %s | %.1f | %s | %s | %s | %s |\n' "$server" "$requested" "$alive_after_settle" \
		"$server_procs" "$(echo "$pss_kb / 1024" | bc -l)" "$pss_kb_per_session" "$delta_pss_kb_per_session" \
		"$delta_rss_kb_per_session" "$errors" )
done <"$RESULTS"
echo
echo "delta/N = (memory with N idle sessions - memory before the first session) / N."
