#!/bin/sh
# Quick start: installs what is missing, builds Petrel, installs it under
# ./_install and runs petreld in the foreground with a ready local
# configuration listening on 127.0.0.1:2525 (stop it with Ctrl-C).
# Run from the top of the source tree, as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
./scripts/install-deps.sh
if ! getent passwd petrel >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin petrel
fi
[ -x configure ] || ./autogen.sh
mkdir -p _build
cd _build
[ -f Makefile ] || ../configure --prefix="$top/_install" --sysconfdir="$top/_install/etc" \
    --localstatedir="$top/_install/var"
make -j"$(nproc)"
make install
cd "$top"
run="$top/run"
mkdir -p "$run/conf"
if [ ! -f "$run/conf/main.cf" ]; then
    cat > "$run/conf/main.cf" <<CONF
# Quick-start configuration: accepts mail for example.com and localhost from
# this host on 127.0.0.1:2525 and keeps it in the queue under ./run/queue.
myhostname = petrel.localdomain
mydestination = example.com, localhost, \$myhostname
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
queue_directory = $run/queue
CONF
    cat > "$run/conf/master.cf" <<CONF
127.0.0.1:2525 inet n - n - - smtpd
CONF
fi
echo "petreld: configuration in $run/conf, queue in $run/queue"
echo "petreld: try: swaks --server 127.0.0.1:2525 --to user@example.com"
exec "$top/_install/sbin/petreld" -c "$run/conf"
