#!/usr/bin/env bash
# bench/filters.sh - ingest with filters in the path: Postfix vs petreld, same run.
#
# usage: bench/filters.sh CASE [--petreld PATH] [--modules DIR] [--messages N]
#                        [--size KIB] [--concurrency "1 20"] [--repeat R]
#                        [--variants "V1 V2 ..."] [--timeout S] [--raw FILE] [--keep]
#
# CASE (bench/milter.sh, spamd.sh, dkim.sh, policy.sh and metrics.sh call this):
#   milter   an accept-all libmilter filter (bench/acceptall-milter.c) on
#            smtpd_milters of both servers, and both without it
#   spamd    spamass-milter + spamd on both servers, and Petrel's spamassassin
#            module talking to the same spamd directly
#   dkim     rsa-2048 signing: Postfix + opendkim (milter) vs Petrel's dkim module
#            (DKIM_ED25519=1: an Ed25519 key instead, on both)
#   policy   reject_rbl_client on two lists (a local dnsmasq zone: not listed),
#            greylisting (postgrey / Petrel's greylist on Redis, triplet passed)
#            and a rate limit (Postfix: anvil's smtpd_client_message_rate_limit;
#            Petrel: check_rate_limit), all passing
#   metrics  Petrel alone: metrics_listen off vs on and scraped every second
#   tables   virtual_mailbox_domains, virtual_mailbox_maps and
#            virtual_alias_maps (1,000 aliases; the recipient is not one) in
#            PostgreSQL (a private cluster): Postfix pgsql: direct and through proxy:,
#            Petrel's pgsql module without and with its result cache
#            (cache_ttl); with "pf-mysql pt-mysql" in --variants, the same in
#            MariaDB (a private mariadbd). Queries per message from the
#            servers' own statistics. With "pf-lmdb pf-proxy-lmdb pt-lmdb
#            pt-hash" in --variants: the same three tables
#            as lmdb files (Postfix's built by postmap, Petrel's by petrelctl
#            map build); Petrel's lookups counted by its metrics endpoint.
# Each run is ingest.sh's run (same cgroup CPU, PSS sampling, queue count)
# plus: the CPU of the peers (milter, spamd, opendkim, postgrey, redis,
# dnsmasq; one cgroup of their own), and a per-run proof that the filter ran.
# See bench/README.md (section filters.sh).
set -u

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
. "$BENCH_DIR/lib.sh"

CASE=${1:-}; [ $# -gt 0 ] && shift
PETRELD="" MODSRC=""
MESSAGES="" SIZE=1 CONCS="" REPEAT=3 VARIANTS="" TIMEOUT=300 RAW=""
SETTLE_MAX=60
# servers: BASE, BASE+1; peers: BASE+10..; petreld's /etc/hosts dnsmasq: BASE+1001.
# Below net.ipv4.ip_local_port_range (32768-60999 here): inside it, a client's
# source port can take a listener's port between two runs ("bind: Address
# already in use", seen twice with 43526). Below 20000 too: from there up to
# that range the integration tests reserve their ports (t/integration/portlib.py),
# and a test running alongside could take one of these between two runs.
PORTS_BASE=${PORTS_BASE:-15525}
MAXPROC=1024
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-0.5}

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
	case $1 in
	--petreld) PETRELD=$2; shift 2 ;;
	--modules) MODSRC=$2; shift 2 ;;
	--messages) MESSAGES=$2; shift 2 ;;
	--size) SIZE=$2; shift 2 ;;
	--concurrency) CONCS=$2; shift 2 ;;
	--repeat) REPEAT=$2; shift 2 ;;
	--variants) VARIANTS=$2; shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--raw) RAW=$2; shift 2 ;;
	--keep) BENCH_KEEP=1; shift ;;
	-h|--help) usage 0 ;;
	*) say "unknown option: $1"; usage ;;
	esac
done

# per case: default variants, message count, concurrency, and the pairs compared
case $CASE in
milter)  : "${VARIANTS:=pf-plain pt-plain pf-milter pt-milter}" "${MESSAGES:=1000}" "${CONCS:=1 20}"
         PAIRS="pt-milter/pf-milter pt-plain/pf-plain pf-milter/pf-plain pt-milter/pt-plain" ;;
spamd)   : "${VARIANTS:=pf-spamass pt-spamass pt-spamd}" "${MESSAGES:=200}" "${CONCS:=1 20}"
         PAIRS="pt-spamass/pf-spamass pt-spamd/pf-spamass pt-spamd/pt-spamass" ;;
dkim)    : "${VARIANTS:=pf-plain pt-plain pf-opendkim pt-dkim}" "${MESSAGES:=1000}" "${CONCS:=20}"
         PAIRS="pt-dkim/pf-opendkim pt-plain/pf-plain pf-opendkim/pf-plain pt-dkim/pt-plain" ;;
policy)  : "${VARIANTS:=pf-plain pt-plain pf-policy pt-policy}" "${MESSAGES:=1000}" "${CONCS:=20 100}"
         PAIRS="pt-policy/pf-policy pt-plain/pf-plain pf-policy/pf-plain pt-policy/pt-plain" ;;
metrics) : "${VARIANTS:=pt-plain pt-metrics}" "${MESSAGES:=2000}" "${CONCS:=100}"
         PAIRS="pt-metrics/pt-plain" ;;
tables)  : "${VARIANTS:=pf-pgsql pf-proxy-pgsql pt-pgsql pt-pgsql-cache}" "${MESSAGES:=1000}" "${CONCS:=20 100}"
         PAIRS="pt-pgsql/pf-pgsql pt-pgsql/pf-proxy-pgsql pt-pgsql-cache/pf-proxy-pgsql pt-mysql/pf-mysql pt-mysql/pf-proxy-mysql"
         PAIRS="$PAIRS pt-lmdb/pf-lmdb pt-lmdb/pf-proxy-lmdb pt-hash/pf-lmdb pt-hash/pt-lmdb" ;;
*) say "unknown or missing CASE: '$CASE'"; usage ;;
esac

[ "$(id -u)" = 0 ] || die "run as root: 'postfix start' of the private instance needs root (see bench/README.md)"
for t in postfix postsuper smtp-source ss bc "$PYTHON"; do
	command -v "$t" >/dev/null || die "missing $t"
done
PF_PORT=$PORTS_BASE PT_PORT=$((PORTS_BASE + 1))
for p in $PF_PORT $PT_PORT; do port_free "$p" || die "port $p is in use (set PORTS_BASE)"; done
case " $VARIANTS " in *" pt-"*)
	[ -x "$PETRELD" ] || die "--petreld PATH is needed for the Petrel variants ($VARIANTS)"
	# the modules, as built: BUILD/modules/NAME/.libs/NAME.so next to BUILD/core/master/petreld
	[ -n "$MODSRC" ] || MODSRC=$(cd "$(dirname "$PETRELD")/../.." && pwd)/modules ;;
esac

trap bench_cleanup_filters EXIT
trap 'exit 130' INT TERM
bench_tmp_init
bench_cgroup_init
check_somaxconn 1024
raise_nofile 65536

PEERS_CG=$(bench_cg_new peers)
# start_peer LOGFILE CMD...: a peer in the peers cgroup (CPU counted apart from the servers)
start_peer() {
	local log=$1; shift
	(
		[ -n "$PEERS_CG" ] && echo "$BASHPID" >"$PEERS_CG/cgroup.procs"
		exec "$@"
	) >>"$log" 2>&1 &
	BENCH_EXTRA_PIDS="$BENCH_EXTRA_PIDS $!"
}
peers_cpu() { if [ -n "$PEERS_CG" ]; then $BENCHLIB cpu --cgroup "$PEERS_CG"; else echo 0; fi; }
wait_tcp() {   # wait_tcp PORT SECONDS
	local i
	for i in $(seq 1 $(($2 * 5))); do
		timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
		sleep 0.2
	done
	return 1
}
bench_cleanup_filters() {
	[ -n "${SCRAPER_PID:-}" ] && kill "$SCRAPER_PID" 2>/dev/null
	# the peers (and what they forked: spamd's children) first: their cgroup
	# must be gone before bench_cleanup removes the parent cgroup
	[ -n "${PEERS_CG:-}" ] && bench_cg_remove "$PEERS_CG"
	bench_cleanup
}

# ---------------------------------------------------------------- instances
pf_setup "$PF_PORT" "$MAXPROC" hold     # pure ingest: cleanup files every message in hold/
cp "$PF_ETC/main.cf" "$PF_ETC/main.cf.base"
if [ -x "$PETRELD" ]; then
	pt_setup "$PETRELD" "$PT_PORT" "$MAXPROC"
	MODDIR=$BENCH_TMP/modules
	install -d -m 0755 "$MODDIR"
	for m in milter spamassassin dkim dnsbl greylist ratelimit pgsql mysql lmdb; do
		[ -f "$MODSRC/$m/.libs/$m.so" ] && install -m 0644 "$MODSRC/$m/.libs/$m.so" "$MODDIR/$m.so"
	done
	# ratelimit keeps its state file in data_directory (default /var/lib/petrel)
	install -d -m 0700 -o "$(getent passwd petrel >/dev/null && echo petrel || echo postfix)" "$BENCH_TMP/pt-data"
	echo "data_directory = $BENCH_TMP/pt-data" >>"$PT_ETC/main.cf"
	cp "$PT_ETC/main.cf" "$PT_ETC/main.cf.base"
fi

# ---------------------------------------------------------------- peers per case
P=$((PORTS_BASE + 10))
MILTER_PORT=$P SPAMD_PORT=$((P + 1)) SPAMASS_PORT=$((P + 2)) OPENDKIM_PORT=$((P + 3))
POSTGREY_PORT=$((P + 4)) REDIS_PORT=$((P + 5)) METRICS_PORT=$((P + 6))
ZONE_DNS=127.0.0.1 ZONE_DNS_PORT=53
MARKER=""     # a header every filtered message must carry in the queue
PEERLOG=""    # a peer's log, with one PEERLINE per filtered message

case $CASE in
milter)
	cc -O2 -o "$BENCH_TMP/acceptall-milter" "$BENCH_DIR/acceptall-milter.c" -lmilter -lpthread ||
		die "cannot build bench/acceptall-milter.c (apt-get install libmilter-dev)"
	# MILTER_NOHEADER=1: the filter adds no header (ACCEPT alone at end of message)
	if [ -n "${MILTER_NOHEADER:-}" ]; then
		start_peer "$BENCH_TMP/milter.out" "$BENCH_TMP/acceptall-milter" "inet:$MILTER_PORT@127.0.0.1" noheader
	else
		start_peer "$BENCH_TMP/milter.out" "$BENCH_TMP/acceptall-milter" "inet:$MILTER_PORT@127.0.0.1"
		MARKER="X-Bench-Milter: accepted"
	fi
	wait_tcp "$MILTER_PORT" 10 || die "acceptall-milter did not start" ;;
spamd)
	mkdir -p "$BENCH_TMP/sa-site" "$BENCH_TMP/sa-home"
	# local rules only: nothing here looks anything up on the network (as t/integration/peers.py)
	printf '%s\n' "loadplugin Mail::SpamAssassin::Plugin::Check" "loadplugin Mail::SpamAssassin::Plugin::HeaderEval" \
		"loadplugin Mail::SpamAssassin::Plugin::BodyEval" "loadplugin Mail::SpamAssassin::Plugin::MIMEEval" \
		"loadplugin Mail::SpamAssassin::Plugin::MIMEHeader" "loadplugin Mail::SpamAssassin::Plugin::RelayEval" \
		"loadplugin Mail::SpamAssassin::Plugin::URIEval" "loadplugin Mail::SpamAssassin::Plugin::HTMLEval" \
		"loadplugin Mail::SpamAssassin::Plugin::WLBLEval" "loadplugin Mail::SpamAssassin::Plugin::ReplaceTags" \
		>"$BENCH_TMP/sa-site/init.pre"
	printf '%s\n' "use_bayes 0" "bayes_auto_learn 0" "dns_available no" "skip_rbl_checks 1" "required_score 5.0" \
		>"$BENCH_TMP/sa-site/local.cf"
	chown -R nobody "$BENCH_TMP/sa-home"
	SPAMD_CHILDREN=${SPAMD_CHILDREN:-5}   # spamd's default --max-children
	start_peer "$BENCH_TMP/spamd.out" spamd --listen="127.0.0.1:$SPAMD_PORT" --allowed-ips=127.0.0.1 \
		-C /usr/share/spamassassin --siteconfigpath="$BENCH_TMP/sa-site" -L -x -u nobody \
		--helper-home-dir="$BENCH_TMP/sa-home" --syslog=stderr \
		--min-children="$SPAMD_CHILDREN" --max-children="$SPAMD_CHILDREN"
	for i in $(seq 1 120); do
		r=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SPAMD_PORT; printf 'PING SPAMC/1.5\r\n\r\n' >&3; head -c 40 <&3" 2>/dev/null)
		case $r in *PONG*) break ;; esac; sleep 0.5
	done
	case $r in *PONG*) ;; *) die "spamd did not answer PING" ;; esac
	start_peer "$BENCH_TMP/spamass-milter.out" spamass-milter -p "inet:$SPAMASS_PORT@127.0.0.1" \
		-P "$BENCH_TMP/spamass-milter.pid" -- -d 127.0.0.1 -p "$SPAMD_PORT"
	wait_tcp "$SPAMASS_PORT" 10 || die "spamass-milter did not start"
	MARKER="X-Spam-Status:" ;;
dkim)
	mkdir -p "$BENCH_TMP/dkim"
	DKIM_ALG=rsa-sha256
	if [ "${DKIM_ED25519:-0}" = 1 ]; then
		# Ed25519 on both servers (the signature costs ~0.1 ms: what is left is the rest)
		DKIM_ALG=ed25519-sha256
		openssl genpkey -algorithm ed25519 -out "$BENCH_TMP/dkim/bench.private" || die "openssl genpkey failed"
	else
		opendkim-genkey -b 2048 -D "$BENCH_TMP/dkim" -d example.com -s bench || die "opendkim-genkey failed"
	fi
	chmod 0644 "$BENCH_TMP/dkim/bench.private"   # petreld reads it as mail_owner (test key)
	cat >"$BENCH_TMP/dkim/opendkim.conf" <<EOF
Syslog no
Background no
Socket inet:$OPENDKIM_PORT@127.0.0.1
PidFile $BENCH_TMP/dkim/opendkim.pid
Mode s
Domain example.com
Selector bench
KeyFile $BENCH_TMP/dkim/bench.private
RequireSafeKeys false
Canonicalization relaxed/relaxed
SignatureAlgorithm $DKIM_ALG
InternalHosts 127.0.0.0/8
EOF
	start_peer "$BENCH_TMP/opendkim.out" opendkim -x "$BENCH_TMP/dkim/opendkim.conf" -f
	wait_tcp "$OPENDKIM_PORT" 10 || die "opendkim did not start"
	MARKER="DKIM-Signature:" ;;
policy)
	# the DNSBL zones: not listed (NXDOMAIN) for every client; /etc/hosts answers
	# petreld's client-name lookup. Port 53 because Postfix's resolver cannot be
	# given another port; it reads this through PF_RESOLV_CONF (lib.sh).
	port_free 53 || die "127.0.0.1:53 is in use: the DNSBL zone's dnsmasq needs it"
	start_peer "$BENCH_TMP/dnsmasq.out" dnsmasq --keep-in-foreground --no-daemon --port=53 \
		--listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-poll --pid-file= --user=root \
		--local=/list1.bench.test/ --local=/list2.bench.test/ \
		--log-queries --log-facility="$BENCH_TMP/dnsmasq.log"
	echo "nameserver 127.0.0.1" >"$BENCH_TMP/resolv.conf"
	PF_RESOLV_CONF=$BENCH_TMP/resolv.conf
	[ -f "$PT_ETC/main.cf.base" ] && sed -i "s/^dns_resolver = .*/dns_resolver = 127.0.0.1:53/" "$PT_ETC/main.cf.base"
	install -d -o postgrey -m 0700 "$BENCH_TMP/postgrey"
	start_peer "$BENCH_TMP/postgrey.log" postgrey --inet="127.0.0.1:$POSTGREY_PORT" --dbdir="$BENCH_TMP/postgrey" \
		--pidfile="$BENCH_TMP/postgrey/postgrey.pid" --delay=2 --auto-whitelist-clients=0
	start_peer "$BENCH_TMP/redis.out" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
		--appendonly no --dir "$BENCH_TMP"
	wait_tcp "$POSTGREY_PORT" 20 || die "postgrey did not start"
	wait_tcp "$REDIS_PORT" 10 || die "redis-server did not start"
	wait_tcp 53 5 || true ;;
metrics)
	MARKER="" ;;
tables)
	PG_PORT=$((P + 7)) MY_PORT=$((P + 8))
	case " $VARIANTS " in *" pf-lmdb "*|*" pf-proxy-lmdb "*|*" pt-lmdb "*|*" pt-hash "*)
		# the same content as the SQL tables, plus virtual_alias_maps (1,000
		# aliases aliasN -> userN; the bench's recipient to@ is not one, so
		# every message is also looked up there and not found). Postfix's
		# files are built by postmap lmdb:, Petrel's by petrelctl map build
		# hash: (Petrel's hash: is the lmdb format: lmdb:NAME reads the same
		# NAME.lmdb, so pt-lmdb and pt-hash read one file through the lmdb
		# module and through the core's built-in type).
		PETRELCTL=${PETRELCTL:-$(dirname "$PETRELD")/../tools/petrelctl}
		[ -x "$PETRELCTL" ] || die "petrelctl not found beside petreld (set PETRELCTL)"
		mkdir -p "$BENCH_TMP/lmdb-src"
		echo "example.com OK" >"$BENCH_TMP/lmdb-src/domains"
		{ seq 1 10000 | awk '{printf "user%d@example.com example.com/user%d/\n", $1, $1}'
		  echo "to@example.com example.com/to/"; } >"$BENCH_TMP/lmdb-src/mailboxes"
		seq 1 1000 | awk '{printf "alias%d@example.com user%d@example.com\n", $1, $1}' >"$BENCH_TMP/lmdb-src/aliases"
		for d in pf-maps pt-maps; do
			install -d -m 0755 "$BENCH_TMP/$d"; cp "$BENCH_TMP"/lmdb-src/* "$BENCH_TMP/$d/"
			chmod 0644 "$BENCH_TMP/$d"/*
		done
		for t in domains mailboxes aliases; do
			postmap -c "$PF_ETC" "lmdb:$BENCH_TMP/pf-maps/$t" || die "postmap lmdb:$t failed"
			"$PETRELCTL" -c "$PT_ETC" map build "hash:$BENCH_TMP/pt-maps/$t" || die "petrelctl map build hash:$t failed"
		done
		[ -f "$BENCH_TMP/pf-maps/mailboxes.lmdb" ] && [ -f "$BENCH_TMP/pt-maps/mailboxes.lmdb" ] ||
			die "the lmdb files were not built"
		# proof that both sides answer the same way before anything is timed
		[ "$(postmap -c "$PF_ETC" -q user77@example.com "lmdb:$BENCH_TMP/pf-maps/mailboxes")" = example.com/user77/ ] ||
			die "postmap -q on Postfix's mailboxes.lmdb"
		[ "$("$PETRELCTL" -c "$PT_ETC" map query "hash:$BENCH_TMP/pt-maps/mailboxes" user77@example.com)" = example.com/user77/ ] ||
			die "petrelctl map query on Petrel's mailboxes.lmdb" ;;
	esac
	case " $VARIANTS " in *sql*) ;; *) MARKER=""; PG_BIN=""; VARIANTS_NO_PG=1 ;; esac
	if [ -z "${VARIANTS_NO_PG:-}" ]; then
	# PostgreSQL: a private cluster (trust on loopback), the usual virtual-hosting schema
	PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
	[ -x "$PG_BIN/initdb" ] || die "PostgreSQL is not installed (postgresql)"
	install -d -o postgres -m 0700 "$BENCH_TMP/pg"
	runuser -u postgres -- "$PG_BIN/initdb" -D "$BENCH_TMP/pg" -A trust -U postgres >"$BENCH_TMP/initdb.out" 2>&1 ||
		die "initdb failed: $(tail -3 "$BENCH_TMP/initdb.out")"
	start_peer "$BENCH_TMP/postgres.out" runuser -u postgres -- "$PG_BIN/postgres" -D "$BENCH_TMP/pg" -p "$PG_PORT" \
		-k "$BENCH_TMP/pg" -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off
	wait_tcp "$PG_PORT" 30 || die "postgres did not start"
	pg() { runuser -u postgres -- "$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
	pg -c "CREATE DATABASE mail" >/dev/null
	pg -d mail -c "CREATE TABLE domains (domain text PRIMARY KEY, active boolean NOT NULL DEFAULT true);
		CREATE TABLE mailboxes (email text PRIMARY KEY, maildir text NOT NULL, active boolean NOT NULL DEFAULT true);
		CREATE TABLE aliases (address text PRIMARY KEY, goto text NOT NULL, active boolean NOT NULL DEFAULT true);
		INSERT INTO domains VALUES ('example.com');
		INSERT INTO aliases SELECT 'alias' || i || '@example.com', 'user' || i || '@example.com' FROM generate_series(1, 1000) i;
		INSERT INTO mailboxes SELECT 'user' || i || '@example.com', 'example.com/user' || i || '/' FROM generate_series(1, 10000) i;
		INSERT INTO mailboxes VALUES ('to@example.com', 'example.com/to/');" >/dev/null || die "the schema did not load"
	for t in domains mailboxes aliases; do
		case $t in domains) q="SELECT domain FROM domains WHERE domain = '%s' AND active" ;;
		           aliases) q="SELECT goto FROM aliases WHERE address = '%s' AND active" ;;
		           *) q="SELECT maildir FROM mailboxes WHERE email = '%s' AND active" ;; esac
		printf 'hosts = 127.0.0.1:%s\nuser = postgres\ndbname = mail\nquery = %s\n' "$PG_PORT" "$q" >"$BENCH_TMP/pgsql-$t.cf"
		cp "$BENCH_TMP/pgsql-$t.cf" "$BENCH_TMP/pgsql-$t-cache.cf"
		echo "cache_ttl = 60s" >>"$BENCH_TMP/pgsql-$t-cache.cf"
	done
	chmod 0644 "$BENCH_TMP"/pgsql-*.cf
	case " $VARIANTS " in *" pf-mysql "*|*" pt-mysql "*|*"-proxy-mysql "*)
		install -d -o mysql -m 0700 "$BENCH_TMP/my"
		mariadb-install-db --no-defaults --user=mysql --datadir="$BENCH_TMP/my" --auth-root-authentication-method=normal \
			--skip-test-db >"$BENCH_TMP/mariadb-install.out" 2>&1 || die "mariadb-install-db failed"
		start_peer "$BENCH_TMP/mariadbd.out" mariadbd --no-defaults --user=mysql --datadir="$BENCH_TMP/my" \
			--socket="$BENCH_TMP/my/sock" --port="$MY_PORT" --bind-address=127.0.0.1 --skip-log-bin \
			--skip-name-resolve --max-connections=300 --pid-file="$BENCH_TMP/my/pid" --log-error="$BENCH_TMP/my/err"
		wait_tcp "$MY_PORT" 60 || die "mariadbd did not start"
		my() { mariadb --no-defaults -S "$BENCH_TMP/my/sock" -u root -N -B "$@"; }
		my -e "CREATE DATABASE mail; CREATE USER 'bench'@'127.0.0.1' IDENTIFIED BY 'bench';
			GRANT SELECT ON mail.* TO 'bench'@'127.0.0.1';" || die "mariadb setup failed"
		my mail -e "CREATE TABLE domains (domain VARCHAR(255) PRIMARY KEY, active BOOLEAN NOT NULL DEFAULT TRUE);
			CREATE TABLE mailboxes (email VARCHAR(255) PRIMARY KEY, maildir VARCHAR(255) NOT NULL,
			                        active BOOLEAN NOT NULL DEFAULT TRUE);
			CREATE TABLE aliases (address VARCHAR(255) PRIMARY KEY, goto VARCHAR(255) NOT NULL,
			                      active BOOLEAN NOT NULL DEFAULT TRUE);
			INSERT INTO domains (domain) VALUES ('example.com');
			INSERT INTO aliases (address, goto) SELECT CONCAT('alias', seq, '@example.com'),
				CONCAT('user', seq, '@example.com') FROM seq_1_to_1000;
			INSERT INTO mailboxes (email, maildir) SELECT CONCAT('user', seq, '@example.com'),
				CONCAT('example.com/user', seq, '/') FROM seq_1_to_10000;
			INSERT INTO mailboxes (email, maildir) VALUES ('to@example.com', 'example.com/to/');" || die "the MariaDB schema did not load"
		for t in domains mailboxes aliases; do
			case $t in domains) q="SELECT domain FROM domains WHERE domain = '%s' AND active" ;;
			           aliases) q="SELECT goto FROM aliases WHERE address = '%s' AND active" ;;
			           *) q="SELECT maildir FROM mailboxes WHERE email = '%s' AND active" ;; esac
			printf 'hosts = 127.0.0.1:%s\nuser = bench\npassword = bench\ndbname = mail\nquery = %s\n' \
				"$MY_PORT" "$q" >"$BENCH_TMP/mysql-$t.cf"
		done
		chmod 0644 "$BENCH_TMP"/mysql-*.cf ;;
	esac
	fi
	MARKER="" ;;
esac

# ---------------------------------------------------------------- variants
# variant_config VARIANT: (re)writes the server's main.cf for VARIANT
variant_config() {
	case $1 in pf-*) cp "$PF_ETC/main.cf.base" "$PF_ETC/main.cf" ;; pt-*) cp "$PT_ETC/main.cf.base" "$PT_ETC/main.cf" ;; esac
	case $1 in
	pf-plain|pt-plain) ;;
	pf-milter) printf 'smtpd_milters = inet:127.0.0.1:%s\nmilter_default_action = tempfail\n' "$MILTER_PORT" >>"$PF_ETC/main.cf" ;;
	pt-milter) printf 'modules = milter\nmodule_directory = %s\nsmtpd_milters = inet:127.0.0.1:%s\nmilter_default_action = tempfail\n' \
			"$MODDIR" "$MILTER_PORT" >>"$PT_ETC/main.cf" ;;
	pf-spamass) printf 'smtpd_milters = inet:127.0.0.1:%s\nmilter_default_action = tempfail\n' "$SPAMASS_PORT" >>"$PF_ETC/main.cf" ;;
	pt-spamass) printf 'modules = milter\nmodule_directory = %s\nsmtpd_milters = inet:127.0.0.1:%s\nmilter_default_action = tempfail\n' \
			"$MODDIR" "$SPAMASS_PORT" >>"$PT_ETC/main.cf" ;;
	pt-spamd) printf 'modules = spamassassin\nmodule_directory = %s\nspamassassin_spamd = 127.0.0.1:%s\nspamassassin_failure_action = tempfail\n' \
			"$MODDIR" "$SPAMD_PORT" >>"$PT_ETC/main.cf" ;;
	pf-opendkim) printf 'smtpd_milters = inet:127.0.0.1:%s\nmilter_default_action = tempfail\n' "$OPENDKIM_PORT" >>"$PF_ETC/main.cf" ;;
	pt-dkim) printf 'modules = dkim\nmodule_directory = %s\ndkim_domain = example.com\ndkim_selector = bench\ndkim_key_file = %s\n' \
			"$MODDIR" "$BENCH_TMP/dkim/bench.private" >>"$PT_ETC/main.cf" ;;
	pf-policy) cat >>"$PF_ETC/main.cf" <<EOF
smtpd_recipient_restrictions = reject_unauth_destination,
    reject_rbl_client list1.bench.test, reject_rbl_client list2.bench.test,
    check_policy_service inet:127.0.0.1:$POSTGREY_PORT
# anvil: the only rate limit Postfix has (per client IP, in memory); counted
# for 127.0.0.1 only when it is not an event-limit exception, which also
# subjects it to the connection count limit (50 by default): lifted
smtpd_client_message_rate_limit = 1000000
smtpd_client_event_limit_exceptions =
smtpd_client_connection_count_limit = 0
EOF
		;;
	pt-policy) cat >>"$PT_ETC/main.cf" <<EOF
modules = dnsbl greylist ratelimit
module_directory = $MODDIR
smtpd_recipient_restrictions = reject_unauth_destination,
    reject_rbl_client list1.bench.test, reject_rbl_client list2.bench.test,
    check_greylist, check_rate_limit ${PT_RATELIMIT:-1000000/1h}
greylist_redis = 127.0.0.1:$REDIS_PORT
greylist_delay = 2s
greylist_auto_whitelist_count = 0
ratelimit_exclude_mynetworks = no
EOF
		;;
	pt-metrics) printf 'metrics_listen = 127.0.0.1:%s\n' "$METRICS_PORT" >>"$PT_ETC/main.cf" ;;
	pf-pgsql|pf-proxy-pgsql|pf-mysql|pf-proxy-mysql)
		local db=${1##*-} proxy=""
		case $1 in *-proxy-*) proxy="proxy:" ;; esac
		printf 'mydestination =\nvirtual_mailbox_domains = %s%s:%s\nvirtual_mailbox_maps = %s%s:%s\nvirtual_alias_maps = %s%s:%s\nvirtual_mailbox_base = %s\n' \
			"$proxy" "$db" "$BENCH_TMP/$db-domains.cf" "$proxy" "$db" "$BENCH_TMP/$db-mailboxes.cf" \
			"$proxy" "$db" "$BENCH_TMP/$db-aliases.cf" "$BENCH_TMP" >>"$PF_ETC/main.cf" ;;
	pf-lmdb|pf-proxy-lmdb)
		local proxy="" m=$BENCH_TMP/pf-maps
		case $1 in *-proxy-*) proxy="proxy:" ;; esac
		printf 'mydestination =\nvirtual_mailbox_domains = %slmdb:%s/domains\nvirtual_mailbox_maps = %slmdb:%s/mailboxes\nvirtual_alias_maps = %slmdb:%s/aliases\nvirtual_mailbox_base = %s\n' \
			"$proxy" "$m" "$proxy" "$m" "$proxy" "$m" "$BENCH_TMP" >>"$PF_ETC/main.cf" ;;
	pt-lmdb|pt-hash)
		local ty=lmdb m=$BENCH_TMP/pt-maps
		[ "$1" = pt-hash ] && ty=hash
		# metrics_listen: the only place Petrel counts its lookups in files
		printf 'modules = lmdb\nmodule_directory = %s\nmetrics_listen = 127.0.0.1:%s\nmydestination =\nvirtual_mailbox_domains = %s:%s/domains\nvirtual_mailbox_maps = %s:%s/mailboxes\nvirtual_alias_maps = %s:%s/aliases\nvirtual_mailbox_base = %s\n' \
			"$MODDIR" "$METRICS_PORT" "$ty" "$m" "$ty" "$m" "$ty" "$m" "$BENCH_TMP" >>"$PT_ETC/main.cf" ;;
	pt-pgsql|pt-pgsql-cache|pt-mysql)
		local db=pgsql suffix=""
		case $1 in pt-mysql) db=mysql ;; pt-pgsql-cache) suffix=-cache ;; esac
		printf 'modules = %s\nmodule_directory = %s\nmydestination =\nvirtual_mailbox_domains = %s:%s\nvirtual_mailbox_maps = %s:%s\nvirtual_alias_maps = %s:%s\nvirtual_mailbox_base = %s\n' \
			"$db" "$MODDIR" "$db" "$BENCH_TMP/$db-domains$suffix.cf" "$db" "$BENCH_TMP/$db-mailboxes$suffix.cf" \
			"$db" "$BENCH_TMP/$db-aliases$suffix.cf" "$BENCH_TMP" >>"$PT_ETC/main.cf" ;;
	*) die "unknown variant $1" ;;
	esac
}

server_of() { case $1 in pf-*) echo postfix ;; *) echo petrel ;; esac; }

# per-run proof that the filter ran: what the peers saw during the run
peer_probe() {   # prints "name=value ..." counters (cumulative); compare before/after
	case $CASE in
	policy)
		printf 'dnsbl_queries=%s postgrey_pass=%s redis_cmds=%s' \
			"$(grep -c 'query\[A\] 1\.0\.0\.127\.list[12]\.bench\.test' "$BENCH_TMP/dnsmasq.log" 2>/dev/null)" \
			"$(grep -c 'action=pass' "$BENCH_TMP/postgrey.log" 2>/dev/null)" \
			"$(redis-cli -p "$REDIS_PORT" info stats 2>/dev/null | awk -F: '/^total_commands_processed/{print $2+0}')" ;;
	metrics) printf 'scrapes=%s' "$(grep -c '^200$' "$BENCH_TMP/scrapes.out" 2>/dev/null)" ;;
	tables)   # the index and table scans of the two tables: one per query the servers answered
		# lmdb/hash: Petrel's own count of its lookups (petrel_table_lookups_total, all tables),
		# and of its DNS queries (petrel_dns_queries_total: the client-name lookup's PTR and A
		# when /etc/hosts does not answer them)
		case ${PROBE_VARIANT:-} in pt-lmdb|pt-hash)
			# the total, then per table file (domains, mailboxes, aliases)
			curl -s "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | awk '
				/^petrel_table_lookups_total[{ ]/ {
					n += $NF
					if (match($0, /table="[^"]*"/)) { t = substr($0, RSTART + 7, RLENGTH - 8); sub(/.*\//, "", t); per[t] += $NF }
				}
				/^petrel_dns_queries_total[{ ]/ { dns += $NF }
				END { printf "pt_lookups=%d pt_dns=%d", n, dns; for (t in per) printf " pt_%s=%d", t, per[t] }'
			return ;;
		esac
		[ -n "$PG_BIN" ] || { printf -- '-'; return; }
		printf 'pg_queries=%s' "$(pg -d mail -c "SELECT sum(coalesce(idx_scan, 0) + seq_scan)
			FROM pg_stat_user_tables WHERE relname IN ('domains', 'mailboxes', 'aliases')" 2>/dev/null | tail -1)"
		[ -S "$BENCH_TMP/my/sock" ] && printf ' my_queries=%s' "$(my -e "SHOW GLOBAL STATUS LIKE 'Com_select'" 2>/dev/null | awk '{print $2}')" ;;
	*) printf '-' ;;
	esac
}
probe_delta() {   # probe_delta "BEFORE" "AFTER" -> "name=+d ..."
	"$PYTHON" - "$1" "$2" <<'EOF'
import sys
def kv(s): return dict(x.split("=", 1) for x in s.split() if "=" in x)
a, b = kv(sys.argv[1]), kv(sys.argv[2])
print(" ".join("%s=%d" % (k, int(b[k] or 0) - int(a.get(k) or 0)) for k in b) or "-")
EOF
}

count_marker() {   # queue files of SERVER holding MARKER
	local dirs d
	if [ "$1" = postfix ]; then dirs="$PF_Q/incoming $PF_Q/active $PF_Q/deferred $PF_Q/hold"
	else dirs=""; for d in $PT_QUEUE_SUBDIRS; do dirs="$dirs $PT_Q/$d"; done; fi
	# shellcheck disable=SC2086
	grep -rlF -- "$MARKER" $dirs 2>/dev/null | wc -l
}

# warm-up for the greylist: the first attempt is greylisted (450), the second
# after the delay passes; afterwards the triplet (127.0.0.1, from@example.com,
# to@example.com) is known and every benchmark message passes the greylist.
WARMED=""
warm_up() {   # VARIANT PORT
	case $1 in *-policy) ;; *) return 0 ;; esac
	case " $WARMED " in *" $1 "*) return 0 ;; esac
	smtp-source -m 1 -f from@example.com -t to@example.com "127.0.0.1:$2" >"$BENCH_TMP/warm.$1.1" 2>&1
	sleep 3
	smtp-source -m 1 -f from@example.com -t to@example.com "127.0.0.1:$2" >"$BENCH_TMP/warm.$1.2" 2>&1 ||
		{ say "warning: $1: the greylist warm-up message was refused again: $(head -2 "$BENCH_TMP/warm.$1.2")"; }
	say "== $1 greylist warm-up: first attempt: $(head -1 "$BENCH_TMP/warm.$1.1" | cut -c1-100)"
	WARMED="$WARMED $1"
	return 1    # the queue holds the warm-up message: the caller restarts with an empty one
}

SCRAPER_PID=""
scraper_start() {
	[ "$1" = pt-metrics ] || return 0
	( while :; do curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$METRICS_PORT/metrics"; sleep 1; done ) \
		>>"$BENCH_TMP/scrapes.out" 2>/dev/null &
	SCRAPER_PID=$!
}
scraper_stop() { [ -n "$SCRAPER_PID" ] && kill "$SCRAPER_PID" 2>/dev/null; wait "$SCRAPER_PID" 2>/dev/null; SCRAPER_PID=""; }

# ---------------------------------------------------------------- one run
TSV=$BENCH_TMP/runs.tsv
printf 'variant\tserver\tconc\trep\twall_s\tmsgs_per_s\tcpu_s\tcpu_s_per_1000\tpeer_cpu_s_per_1000\tpeak_pss_mb\tpeak_rss_mb\tmax_procs\tqueued\tfiltered\texpected\tpeer_counts\tstatus\n' >"$TSV"

RUN_ID=0
srv() {   # srv ACTION: start/stop/clear/count for $SERVER
	case $SERVER:$1 in
	postfix:start) pf_start "$2" ;; petrel:start) pt_start "$2" ;;
	postfix:stop) pf_stop ;; petrel:stop) pt_stop ;;
	postfix:clear) pf_clear ;; petrel:clear) pt_clear ;;
	postfix:count) pf_count ;; petrel:count) pt_count ;;
	esac
}

one_run() {   # VARIANT CONC REP
	local variant=$1 conc=$2 rep=$3 port status=ok sel c0 c1 p0 p1 t0 t1 wall rc queued filtered="-" i prev cur pr0 pr1
	SERVER=$(server_of "$variant")
	if [ "$SERVER" = postfix ]; then port=$PF_PORT; else port=$PT_PORT; fi
	variant_config "$variant"
	RUN_ID=$((RUN_ID + 1))
	srv clear
	CUR_CG=$(bench_cg_new "$variant-$RUN_ID")
	if ! srv start "$CUR_CG"; then
		srv stop
		printf '%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\t-\tstart-failed\n' "$variant" "$SERVER" "$conc" "$rep" "$MESSAGES" >>"$TSV"
		say "$variant: start failed"; return
	fi
	if ! warm_up "$variant" "$port"; then
		srv stop; srv clear
		CUR_CG=$(bench_cg_new "$variant-$RUN_ID-b")
		srv start "$CUR_CG" || { srv stop; say "$variant: restart failed"; return; }
	fi
	sleep 1
	if [ -n "$CUR_CG" ]; then sel="--cgroup $CUR_CG"
	elif [ "$SERVER" = postfix ]; then sel="--root $(pf_root_pid)"
	else sel="--root $(pt_root_pid)"; fi
	$BENCHLIB sample $sel --out "$BENCH_TMP/mem.$RUN_ID" --interval "$SAMPLE_INTERVAL" &
	local sampler=$!
	scraper_start "$variant"
	PROBE_VARIANT=$variant
	pr0=$(peer_probe)
	c0=$($BENCHLIB cpu $sel); p0=$(peers_cpu)
	t0=$(now)
	timeout "$TIMEOUT" smtp-source -s "$conc" -m "$MESSAGES" -l $((SIZE * 1024)) \
		-f from@example.com -t to@example.com "127.0.0.1:$port" >"$BENCH_TMP/client.$RUN_ID" 2>&1
	rc=$?
	t1=$(now)
	[ $rc = 124 ] && status=client-timeout
	[ $rc != 0 ] && [ $rc != 124 ] && status="client-rc$rc"
	prev=$($BENCHLIB cpu $sel)
	for i in $(seq 1 $((SETTLE_MAX * 2))); do
		sleep 0.5
		cur=$($BENCHLIB cpu $sel)
		queued=$(srv count)
		[ "$queued" -ge "$MESSAGES" ] && [ $((cur - prev)) -lt 10000 ] && break
		prev=$cur
	done
	c1=$($BENCHLIB cpu $sel); p1=$(peers_cpu)
	scraper_stop
	queued=$(srv count)
	kill -TERM "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
	# tables: the database's statistics are complete once the server's
	# connections are gone (a backend reports its counts when it ends)
	# (the lmdb variants: Petrel's counters are read from the running server)
	case $variant in pt-lmdb|pt-hash) pr1=$(peer_probe) ;; esac
	[ "$CASE" = tables ] && { srv stop; sleep 1; }
	case $variant in pt-lmdb|pt-hash) ;; *) pr1=$(peer_probe) ;; esac
	[ "$status" = ok ] && [ "$queued" != "$MESSAGES" ] && status="queued-mismatch"
	if [ -n "$MARKER" ] && [ "${variant#*-}" != plain ]; then
		filtered=$(count_marker "$SERVER")
		[ "$status" = ok ] && [ "$filtered" != "$MESSAGES" ] && status="unfiltered"
	fi
	local pc; pc=$(probe_delta "$pr0" "$pr1")
	wall=$(echo "$t1 - $t0" | bc -l)
	local mps cpk pcpk pss rss np cpus
	mps=$(echo "scale=1; $MESSAGES / $wall" | bc -l)
	cpus=$(echo "scale=3; ($c1 - $c0) / 1000000" | bc -l)
	cpk=$(echo "scale=3; $cpus * 1000 / $MESSAGES" | bc -l)
	pcpk=$(echo "scale=3; ($p1 - $p0) / 1000 / $MESSAGES" | bc -l)
	read -r rss pss np <"$BENCH_TMP/mem.$RUN_ID" 2>/dev/null || { rss=0 pss=0 np=0; }
	pss=$(echo "scale=1; $pss / 1024" | bc -l); rss=$(echo "scale=1; $rss / 1024" | bc -l)
	wall=$(printf '%.3f' "$wall"); cpus=$(printf '%.3f' "$cpus"); cpk=$(printf '%.3f' "$cpk"); pcpk=$(printf '%.3f' "$pcpk")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$SERVER" "$conc" "$rep" \
		"$wall" "$mps" "$cpus" "$cpk" "$pcpk" "$pss" "$rss" "$np" "$queued" "$filtered" "$MESSAGES" "${pc// /,}" "$status" >>"$TSV"
	printf '%-12s conc %-4s rep %s  %7ss %8s msg/s  CPU %6s s/1000  peers %6s s/1000  PSS %6s MB  queued %s/%s filtered %s  %s  %s\n' \
		"$variant" "$conc" "$rep" "$wall" "$mps" "$cpk" "$pcpk" "$pss" "$queued" "$MESSAGES" "$filtered" "$pc" "$status" >&2
	[ "$status" != ok ] && sed -n '1,5p' "$BENCH_TMP/client.$RUN_ID" >&2
	srv stop
}

say "== filters benchmark: case=$CASE variants=[$VARIANTS] N=$MESSAGES size=${SIZE}KiB concurrency=[$CONCS] repeat=$REPEAT"
[ -n "${PT_MAIN_CF:-}" ] && say "== petreld's main.cf adds: $PT_MAIN_CF"
say "== CPU: $CG_METHOD (servers and peers in separate cgroups); Postfix in hold mode, petreld receive-only"
say "== machine: $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(postconf -d -h mail_version 2>/dev/null | sed 's/^/Postfix /')"

for conc in $CONCS; do
	for rep in $(seq 1 "$REPEAT"); do
		# alternate the order: forward on odd repetitions, reversed on even ones
		order=$VARIANTS
		[ $((rep % 2)) = 0 ] && order=$(echo "$VARIANTS" | tr ' ' '\n' | tac | tr '\n' ' ')
		for v in $order; do one_run "$v" "$conc" "$rep"; done
	done
done

[ -n "$RAW" ] && cp "$TSV" "$RAW" && say "raw per-run figures: $RAW"

echo
echo "### $CASE: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(postconf -d -h mail_version 2>/dev/null | sed 's/^/Postfix /')"
echo
echo "Command: \`${PT_MAIN_CF:+PT_MAIN_CF=\"$PT_MAIN_CF\" }${MILTER_NOHEADER:+MILTER_NOHEADER=1 }bench/filters.sh $CASE ${PETRELD:+--petreld $PETRELD }--messages $MESSAGES --size $SIZE --concurrency \"$CONCS\" --repeat $REPEAT --variants \"$VARIANTS\"\`"
echo
$BENCHLIB summarize-variants "$TSV" --pairs "$PAIRS"
