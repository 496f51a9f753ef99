#!/bin/sh
# Installs, on Debian 12, what building and testing Petrel needs, when missing.
# Service packages (postfix, redis, dnsmasq, dovecot...) must not start their own daemons:
# tests start private instances on loopback high ports, so a policy-rc.d forbids
# service starts for the duration of the install and the units are masked after.
set -eu

BUILD_PKGS="build-essential autoconf automake libtool libltdl-dev pkg-config \
libevent-dev libssl-dev libpcre2-dev libc-ares-dev libspf2-dev libopendkim-dev libopendmarc-dev libhiredis-dev \
liblmdb-dev libcdb-dev libsqlite3-dev libpq-dev libmariadb-dev libicu-dev libsasl2-dev libcrypt-dev libldap-dev"
# clang + libclang-rt-14-dev: the sanitizer build and libFuzzer (make fuzz; clang-14 only
# recommends the runtime, and --no-install-recommends skips it); llvm: llvm-symbolizer, so
# sanitizer reports name source lines.
TEST_PKGS="python3 swaks postfix strace openssl procps util-linux time dnsmasq-base pflogsumm \
dovecot-core dovecot-lmtpd opendkim-tools python3-dkim python3-nacl python3-dnspython iproute2 redis-server redis-sentinel \
postfix-lmdb postfix-cdb postfix-sqlite postfix-pgsql postfix-mysql sqlite3 tinycdb lmdb-utils postgresql mariadb-server slapd ldap-utils \
libmilter-dev spamassassin spamd spamc spamass-milter clamav-daemon clamav-milter opendkim amavisd-new \
sasl2-bin libsasl2-modules libsasl2-modules-db dovecot-imapd dovecot-pop3d dovecot-pgsql dovecot-mysql dovecot-ldap clang libclang-rt-14-dev llvm postgrey postfix-policyd-spf-python \
publicsuffix prometheus chromium"

want=""
for p in $BUILD_PKGS ${PETREL_WITH_TESTS:+$TEST_PKGS}; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want="$want $p"
done
[ -z "$want" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages:$want (run as root to install them)" >&2
    exit 1
fi

echo "install-deps: installing$want"
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
policy=/usr/sbin/policy-rc.d
had_policy=0
[ -e "$policy" ] && had_policy=1
if [ $had_policy -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
fi
if ! apt-get install -y -q --no-install-recommends $want; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends $want
fi
[ $had_policy -eq 0 ] && rm -f "$policy"
# The content scanners' units too: tests run private spamd, clamd, milters and
# OpenDKIM and amavisd-new on loopback; clamd's socket activation, freshclam and sa-update
# (the maintenance timer) would reach for the network. The SASL tests run a
# private saslauthd and a private Dovecot auth service. The observability tests run a
# private Prometheus on a loopback port (its Debian unit would scrape and keep data).
for unit in postfix.service redis-server.service redis-sentinel.service dnsmasq.service dovecot.service \
    spamd.service spamassassin.service spamassassin-maintenance.timer spamass-milter.service \
    clamav-daemon.service clamav-daemon.socket clamav-freshclam.service clamav-freshclam-once.timer \
    clamav-clamonacc.service clamav-milter.service opendkim.service opendmarc.service postgrey.service \
    amavis.service amavis-mc.service amavisd-snmp-subagent.service saslauthd.service \
    postgresql.service mariadb.service slapd.service \
    prometheus.service prometheus-node-exporter.service; do
    if systemctl list-unit-files "$unit" >/dev/null 2>&1; then
        systemctl stop "$unit" >/dev/null 2>&1 || true
        systemctl mask "$unit" >/dev/null 2>&1 || true
    fi
done
exit 0
