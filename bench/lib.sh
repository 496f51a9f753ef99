# Shared shell functions for bench/ingest.sh and bench/idle.sh (sourced, not run).
#
# A private Postfix instance (own config_directory, queue_directory, data_directory,
# maillog_file, all under $BENCH_TMP; the system instance is never touched) and a
# petreld instance, each started inside its own cgroup when cgroup v2 is usable.
# Every process started here is stopped by PID in bench_cleanup (trap EXIT).

BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
PYTHON=${PYTHON:-python3}
BENCHLIB="$PYTHON $BENCH_DIR/benchlib.py"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

now() { date +%s.%N; }

# ---------------------------------------------------------------- temp dir
bench_tmp_init() {
	# short path: Postfix's UNIX sockets live under the queue directory (108-byte limit)
	BENCH_TMP=$(mktemp -d /tmp/pbench.XXXXXX) || die "mktemp failed"
	chmod 755 "$BENCH_TMP"
	bench_fs_init
}

# BENCH_FS=loop (the default as root): everything under $BENCH_TMP (both
# servers' queues) lives on a fresh ext4 file system with a journal, made for
# this run on a loop device. Why: an ext4 without a journal (this VM's root
# file system is one) makes every inode allocation skip the inodes deleted in
# the last 60-360 s (ext4_find_inode_bit -> recently_deleted(), only when there
# is no journal), so each run pays for the files the runs before it deleted,
# more with every run (petreld's CPU per message went 0.56 -> 1.31 ms over six
# identical runs). A Debian install's ext4 has a journal. BENCH_FS=plain keeps
# the old behaviour (files under /tmp as they are).
BENCH_IMG="" BENCH_LOOP="" BENCH_MOUNTED=""
bench_fs_init() {
	[ "${BENCH_FS:-loop}" = plain ] && return 0
	if [ "$(id -u)" != 0 ] || ! command -v mkfs.ext4 >/dev/null; then
		say "BENCH_FS=loop needs root and mkfs.ext4: using $BENCH_TMP as it is"
		return 0
	fi
	BENCH_IMG=$BENCH_TMP.img
	# allocated in full and attached with direct I/O, so that a flush of the
	# loop device is one fdatasync of a file whose blocks never change: the
	# closest a file can get to a disk of its own
	fallocate -l 4G "$BENCH_IMG" || die "fallocate $BENCH_IMG failed"
	BENCH_LOOP=$(losetup --direct-io=on -f --show "$BENCH_IMG") || die "losetup $BENCH_IMG failed"
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$BENCH_LOOP" \
		|| die "mkfs.ext4 $BENCH_LOOP failed"
	mount "$BENCH_LOOP" "$BENCH_TMP" || die "mount $BENCH_LOOP failed"
	BENCH_MOUNTED=1
	chmod 755 "$BENCH_TMP"
	rmdir "$BENCH_TMP/lost+found" 2>/dev/null
	say "== file system: fresh ext4 with a journal on $BENCH_LOOP (direct I/O to $BENCH_IMG) for both servers"
}

bench_fs_cleanup() {
	[ -n "$BENCH_MOUNTED" ] || return 0
	umount "$BENCH_TMP" 2>/dev/null || { sleep 1; umount -l "$BENCH_TMP"; }
	BENCH_MOUNTED=""
	[ -n "$BENCH_LOOP" ] && losetup -d "$BENCH_LOOP" 2>/dev/null
	rm -f "$BENCH_IMG"
}

# ---------------------------------------------------------------- cgroups
# CG_METHOD is "cgroup2:DIR", "cgroup1-cpuacct:DIR" or "proc-tree" (fallback).
CG_PARENT=""
CG_METHOD="proc-tree"
bench_cgroup_init() {
	local root=""
	CG_METHOD="proc-tree"
	# BENCH_CGROUP=none|v1|v2 forces a method (default: v2, else v1 cpuacct, else proc-tree)
	[ "${BENCH_CGROUP:-}" = none ] && return 0
	if [ "${BENCH_CGROUP:-}" = v1 ]; then
		:
	elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		root=/sys/fs/cgroup                    # pure cgroup v2
	elif [ -f /sys/fs/cgroup/unified/cgroup.procs ]; then
		root=/sys/fs/cgroup/unified            # hybrid: v2 tree next to v1 controllers
	fi
	if [ -n "$root" ] && mkdir "$root/petrel-bench.$$" 2>/dev/null; then
		CG_PARENT="$root/petrel-bench.$$"
		if grep -q '^usage_usec' "$CG_PARENT/cpu.stat" 2>/dev/null; then
			# memory.peak needs the memory controller delegated; best effort
			echo "+memory" >"$CG_PARENT/cgroup.subtree_control" 2>/dev/null || true
			CG_METHOD="cgroup2:$root"
			return 0
		fi
		rmdir "$CG_PARENT"; CG_PARENT=""
	fi
	# cgroup v1 cpuacct hierarchy (hybrid setups without v2 cpu.stat)
	for root in /sys/fs/cgroup/cpuacct /sys/fs/cgroup/cpu,cpuacct; do
		if [ -f "$root/cpuacct.usage" ] && mkdir "$root/petrel-bench.$$" 2>/dev/null; then
			CG_PARENT="$root/petrel-bench.$$"
			CG_METHOD="cgroup1-cpuacct:$root"
			return 0
		fi
	done
}

# bench_cg_new NAME -> prints the new cgroup directory (empty in proc-tree mode)
bench_cg_new() {
	[ -n "$CG_PARENT" ] || { echo ""; return 0; }
	local d="$CG_PARENT/$1"
	mkdir "$d" || die "cannot create cgroup $d"
	echo "$d"
}

# kill, by PID, whatever is still in a cgroup we created, then remove it
bench_cg_remove() {
	local d=$1 p i
	[ -n "$d" ] && [ -d "$d" ] || return 0
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ -s "$d/cgroup.procs" ] || break
		for p in $(cat "$d/cgroup.procs"); do kill -TERM "$p" 2>/dev/null; done
		sleep 0.3
	done
	for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
	for i in 1 2 3 4 5 6 7 8 9 10; do rmdir "$d" 2>/dev/null && return 0; sleep 0.2; done
	say "warning: could not remove cgroup $d"
}

# ---------------------------------------------------------------- helpers
# wait until a 220 banner is read from 127.0.0.1:PORT (max $2 seconds)
wait_banner() {
	local port=$1 max=${2:-20} t=0 b
	while [ "$t" -lt $((max * 5)) ]; do
		b=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c 3 <&3" 2>/dev/null)
		[ "$b" = "220" ] && return 0
		sleep 0.2; t=$((t + 1))
	done
	return 1
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# listen backlog as the kernel reports it (Send-Q of the LISTEN socket)
listen_backlog() { ss -Hltn "sport = :$1" 2>/dev/null | awk '{print $3; exit}'; }

# raise RLIMIT_NOFILE of this shell (inherited by what it starts): 65536, else the hard limit
raise_nofile() {
	local want=${1:-65536} hard
	ulimit -n "$want" 2>/dev/null && return 0
	hard=$(ulimit -Hn)
	ulimit -n "$hard" 2>/dev/null
	say "note: RLIMIT_NOFILE could not be raised to $want (no CAP_SYS_RESOURCE?); using the hard limit $(ulimit -n)"
}

check_somaxconn() {
	local want=${1:-1024} cur
	cur=$(cat /proc/sys/net/core/somaxconn)
	if [ "$cur" -lt "$want" ]; then
		if [ "$(id -u)" = 0 ] && sysctl -qw net.core.somaxconn="$want"; then
			say "note: raised net.core.somaxconn from $cur to $want (sysctl -w; not persistent)"
		else
			say "warning: net.core.somaxconn=$cur < $want: listen backlogs are capped at $cur"
		fi
	fi
}

# ---------------------------------------------------------------- Postfix
PF_ETC="" PF_Q="" PF_LOG="" PF_CG=""
# pf_setup PORT MAXPROC MODE   (MODE: defer = qmgr runs and defers every message;
#                                     hold  = cleanup puts every message on hold, qmgr idle)
pf_setup() {
	local port=$1 maxproc=$2 mode=${3:-defer}
	PF_ETC=$BENCH_TMP/pf-etc PF_Q=$BENCH_TMP/pf-queue PF_LOG=$BENCH_TMP/postfix.log
	mkdir -p "$PF_ETC" "$PF_Q" "$BENCH_TMP/pf-data"
	chown postfix "$BENCH_TMP/pf-data"     # master.lock is created by mail_owner
	cp /etc/postfix/dynamicmaps.cf "$PF_ETC/" 2>/dev/null
	[ -d /etc/postfix/dynamicmaps.cf.d ] && cp -r /etc/postfix/dynamicmaps.cf.d "$PF_ETC/"
	# stock master.cf, chroot off everywhere (no chroot jail to populate; Petrel runs
	# without chroot too), stock "smtp inet" commented out, smtpd on 127.0.0.1:PORT.
	# maxproc also sets Postfix's listen backlog (master uses max(maxproc, default_process_limit)).
	awk -v port="$port" -v maxproc="$maxproc" '
		/^smtp[ \t]+inet/ { print "#" $0; print "127.0.0.1:" port " inet n - n - " maxproc " smtpd"; next }
		/^[^# \t]/ && NF >= 8 { $5 = "n"; print; next }
		{ print }' /etc/postfix/master.cf >"$PF_ETC/master.cf"
	cat >"$PF_ETC/main.cf" <<EOF
# private benchmark instance, written by bench/lib.sh
compatibility_level = 3.6
queue_directory = $PF_Q
data_directory = $BENCH_TMP/pf-data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.example.net
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination = example.com
# accept any local part of example.com (no passwd lookup per recipient)
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
# nothing leaves: every transport is deferred, and a relayhost that is never contacted
relayhost = [127.0.0.1]:9
defer_transports = local smtp relay virtual lmtp
maillog_file = $PF_LOG
maillog_file_prefixes = $BENCH_TMP
biff = no
EOF
	if [ "$mode" = hold ]; then
		echo "smtpd_data_restrictions = check_client_access static:HOLD" >>"$PF_ETC/main.cf"
	fi
	postfix -c "$PF_ETC" check >>"$BENCH_TMP/postfix-check.out" 2>&1 ||
		die "postfix check failed: $(cat "$BENCH_TMP/postfix-check.out")"
}

pf_master_pid() { [ -s "$PF_Q/pid/master.pid" ] && awk '{print $1}' "$PF_Q/pid/master.pid"; }

# pf_start CGROUP_DIR(or "")  -- returns when the banner is served
# PF_RESOLV_CONF=FILE: Postfix (its libc resolver: reject_rbl_client, MX
# lookups) reads FILE as /etc/resolv.conf: the instance is started in a private
# mount namespace (unshare -m) where FILE is bind-mounted over /etc/resolv.conf;
# master and every daemon it forks inherit it, the rest of the machine does not.
PF_RESOLV_CONF=${PF_RESOLV_CONF:-}
pf_start() {
	PF_CG=$1
	(
		[ -n "$PF_CG" ] && echo "$BASHPID" >"$PF_CG/cgroup.procs"
		if [ -n "$PF_RESOLV_CONF" ]; then
			exec unshare -m --propagation private sh -c \
				'mount --bind "$1" /etc/resolv.conf && exec postfix -c "$2" start' sh "$PF_RESOLV_CONF" "$PF_ETC"
		fi
		exec postfix -c "$PF_ETC" start
	) >>"$BENCH_TMP/postfix-start.out" 2>&1 || { say "postfix start failed:"; tail -5 "$PF_LOG" >&2; return 1; }
	wait_banner "$PF_PORT" 30 || { say "postfix: no banner on port $PF_PORT"; tail -5 "$PF_LOG" >&2; return 1; }
}

pf_stop() {
	local pid i
	pid=$(pf_master_pid)
	[ -n "$pid" ] || { bench_cg_remove "$PF_CG"; PF_CG=""; return 0; }
	postfix -c "$PF_ETC" stop >>"$BENCH_TMP/postfix-start.out" 2>&1
	for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	bench_cg_remove "$PF_CG"; PF_CG=""
	rm -f "$PF_Q/pid/master.pid"
}

pf_count() {
	local n=0 d
	for d in incoming active deferred hold; do
		[ -d "$PF_Q/$d" ] && n=$((n + $(find "$PF_Q/$d" -type f | wc -l)))
	done
	echo "$n"
}

pf_clear() {
	postsuper -c "$PF_ETC" -d ALL >/dev/null 2>&1
	rm -rf "$PF_Q/defer" "$PF_Q/bounce" "$PF_Q/trace" 2>/dev/null
	mkdir -p "$PF_Q/defer" "$PF_Q/bounce" "$PF_Q/trace"
	chown postfix "$PF_Q/defer" "$PF_Q/bounce" "$PF_Q/trace"
	chmod 700 "$PF_Q/defer" "$PF_Q/bounce" "$PF_Q/trace"
}

pf_root_pid() { pf_master_pid; }

# ---------------------------------------------------------------- Petrel
PT_ETC="" PT_Q="" PT_LOG="" PT_CG="" PT_PID=""
PT_QUEUE_SUBDIRS=${PT_QUEUE_SUBDIRS:-"incoming active deferred"}
# pt_dns PORT: a private dnsmasq answering from /etc/hosts only. smtpd names
# every client from /etc/hosts first, as Postfix's smtpd does through
# getnameinfo() (127.0.0.1 is localhost: no DNS query); what the file does
# not list (and any other lookup) goes to dns_resolver, this dnsmasq, not to
# the machine's resolver, which may not answer here (each session would
# wait out the resolver's timeout before its greeting).
PT_DNS_PID=""
pt_dns() {
	[ -n "$PT_DNS_PID" ] && return 0
	PT_DNS_PORT=$1
	dnsmasq --keep-in-foreground --no-daemon --port="$PT_DNS_PORT" --listen-address=127.0.0.1 \
		--bind-interfaces --no-resolv --no-poll --pid-file= --user=root >/dev/null 2>&1 &
	PT_DNS_PID=$!
	BENCH_EXTRA_PIDS="$BENCH_EXTRA_PIDS $PT_DNS_PID"
}

# pt_setup PETRELD PORT MAXPROC
pt_setup() {
	PETRELD=$1; local port=$2 maxproc=$3
	PT_ETC=$BENCH_TMP/pt-etc PT_Q=$BENCH_TMP/petrel-queue PT_LOG=$BENCH_TMP/petrel.log
	mkdir -p "$PT_ETC" "$PT_Q"
	pt_dns "$((port + 1000))"
	cat >"$PT_ETC/main.cf" <<EOF
# benchmark instance, written by bench/lib.sh
queue_directory = $PT_Q
mynetworks = 127.0.0.0/8
mydestination = example.com
maillog_file = $PT_LOG
inet_interfaces = 127.0.0.1
dns_resolver = 127.0.0.1:$PT_DNS_PORT
# As the Postfix instance: any local part is accepted, no aliases (an
# unbuilt /etc/aliases would stop the start).
local_recipient_maps =
alias_maps =
alias_database =
EOF
	if [ "$(id -u)" = 0 ] && ! getent passwd petrel >/dev/null; then
		# root start drops privileges to mail_owner (default "petrel", missing here)
		echo "mail_owner = postfix" >>"$PT_ETC/main.cf"
		chown postfix "$PT_Q"
	fi
	# PT_MAIN_CF: "name = value" lines for petreld's main.cf only (a tuning
	# compared against the defaults, e.g. PT_MAIN_CF="smtpd_workers = 1");
	# the scripts print it with their results.
	[ -n "${PT_MAIN_CF:-}" ] && printf '%s\n' "$PT_MAIN_CF" >>"$PT_ETC/main.cf"
	echo "127.0.0.1:$port inet n - n - $maxproc smtpd" >"$PT_ETC/master.cf"
}

pt_start() {
	PT_CG=$1
	(
		[ -n "$PT_CG" ] && echo "$BASHPID" >"$PT_CG/cgroup.procs"
		exec "$PETRELD" -c "$PT_ETC"
	) >>"$BENCH_TMP/petreld.out" 2>&1 &
	PT_PID=$!
	wait_banner "$PT_PORT" 30 || {
		say "petreld: no banner on port $PT_PORT; last output:"; tail -5 "$BENCH_TMP/petreld.out" >&2
		return 1
	}
}

pt_stop() {
	local i
	if [ -n "$PT_PID" ] && kill -0 "$PT_PID" 2>/dev/null; then
		kill -TERM "$PT_PID"
		for i in $(seq 1 50); do kill -0 "$PT_PID" 2>/dev/null || break; sleep 0.2; done
		kill -0 "$PT_PID" 2>/dev/null && kill -KILL "$PT_PID"
		wait "$PT_PID" 2>/dev/null
	fi
	PT_PID=""
	bench_cg_remove "$PT_CG"; PT_CG=""
}

pt_count() {
	local n=0 d
	for d in $PT_QUEUE_SUBDIRS; do
		[ -d "$PT_Q/$d" ] && n=$((n + $(find "$PT_Q/$d" -type f | wc -l)))
	done
	echo "$n"
}

pt_clear() {   # only while petreld is stopped
	local d
	for d in $PT_QUEUE_SUBDIRS hold corrupt bounce defer; do
		[ -d "$PT_Q/$d" ] && find "$PT_Q/$d" -type f -delete
	done
}

pt_root_pid() { echo "$PT_PID"; }

# ---------------------------------------------------------------- cleanup
# BENCH_EXTRA_PIDS: helpers that live for the whole script (pt_dns's dnsmasq);
# BENCH_RUN_PIDS: those of one run (samplers, waiters), reset after each run.
BENCH_EXTRA_PIDS=""
BENCH_RUN_PIDS=""
bench_cleanup() {
	local p
	for p in $BENCH_RUN_PIDS $BENCH_EXTRA_PIDS; do kill -TERM "$p" 2>/dev/null; done
	[ -n "$PT_PID" ] && pt_stop
	[ -n "$PF_ETC" ] && pf_stop
	[ -n "$CG_PARENT" ] && rmdir "$CG_PARENT" 2>/dev/null
	if [ -n "${BENCH_TMP:-}" ]; then
		if [ -n "${BENCH_KEEP:-}" ]; then say "kept $BENCH_TMP${BENCH_MOUNTED:+ (mounted from $BENCH_IMG)}"
		else bench_fs_cleanup; rm -rf "$BENCH_TMP"; fi
	fi
}
