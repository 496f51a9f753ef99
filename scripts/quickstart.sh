#!/bin/sh
# Quick start: installs what is missing, builds Petrel, installs it under
# ./_install and runs petreld in the foreground with a ready local
# configuration listening on 127.0.0.1:2525 that delivers mail for
# example.com into Maildirs under ./run/mail (stop it with Ctrl-C).
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
mkdir -p "$run/conf" "$run/mail"
if [ ! -f "$run/conf/main.cf" ]; then
    cat > "$run/conf/main.cf" <<CONF
# Quick-start configuration: accepts mail from this host on 127.0.0.1:2525
# and delivers everything for example.com into the Maildir
# ./run/mail/example.com/<user>/ (one per recipient, created on first mail).
myhostname = petrel.localdomain
mydestination = localhost
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
queue_directory = $run/queue
virtual_mailbox_domains = example.com
virtual_mailbox_base = $run/mail
virtual_mailbox_maps = pcre:$run/conf/virtual_mailbox
CONF
    # Every user@example.com gets the Maildir example.com/user/.
    printf '/^([^@+]+)(\\+[^@]*)?@example\\.com$/ example.com/$1/\n' > "$run/conf/virtual_mailbox"
    cat > "$run/conf/master.cf" <<CONF
127.0.0.1:2525 inet n - n - - smtpd
qmgr unix n - n 300 1 qmgr
CONF
fi
if [ "$(id -u)" -eq 0 ]; then
    # Started as root, petreld runs its processes as the user petrel: it must
    # be able to reach ./run (search permission on the directories above it).
    chown -R petrel:petrel "$run/mail"
    dir="$top"
    while [ "$dir" != "/" ]; do
        if ! setpriv --reuid=petrel --regid=petrel --clear-groups test -x "$dir" 2>/dev/null; then
            echo "quickstart: giving the user petrel search permission on $dir (chmod o+x)"
            chmod o+x "$dir"
        fi
        dir=$(dirname "$dir")
    done
fi
echo "petreld: configuration in $run/conf, queue in $run/queue, mail in $run/mail"
echo "petreld: try: swaks --server 127.0.0.1:2525 --to user@example.com"
echo "petreld: then: ls $run/mail/example.com/user/new/"
exec "$top/_install/sbin/petreld" -c "$run/conf"
