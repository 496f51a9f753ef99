#!/bin/sh
# Quick start: installs what is missing, builds Petrel, installs it under
# ./_install and runs petreld in the foreground with a ready local
# configuration listening on 127.0.0.1:2525 that delivers mail for
# example.com into Maildirs under ./run/mail (stop it with Ctrl-C).
# Run from the top of the source tree, as root on Debian 12.
#
# It builds in its own directory, _build-quickstart (configured for
# ./_install), so it never reuses the build tree that scripts/test.sh or a
# developer configured for another prefix. Its configuration is the
# installed sample main.cf and master.cf with a few settings changed by
# petrelctl, so the quick start runs what `make install` ships.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
if [ -f config.status ]; then
    echo "quickstart: the source tree itself is configured (./configure was run here):" >&2
    echo "quickstart: run 'make distclean' first; the quick start builds in _build-quickstart" >&2
    exit 1
fi
./scripts/install-deps.sh
if ! getent passwd petrel >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin petrel
fi
[ -x configure ] || ./autogen.sh
inst="$top/_install"
mkdir -p _build-quickstart
cd _build-quickstart
# Configure when never configured, or configured for another prefix.
if [ ! -f Makefile ] || ! grep -qxF "S[\"prefix\"]=\"$inst\"" config.status; then
    ../configure -q --prefix="$inst" --sysconfdir="$inst/etc" --localstatedir="$inst/var"
fi
make -j"$(nproc)"
make install
cd "$top"
run="$top/run"
conf="$run/conf"
mkdir -p "$conf" "$run/mail"
if [ ! -f "$conf/main.cf" ]; then
    # The installed samples, with what this quick start needs changed.
    cp "$inst/etc/petrel/main.cf" "$inst/etc/petrel/master.cf" "$conf/"
    # Every user@example.com gets the Maildir example.com/user/.
    printf '/^([^@+]+)(\\+[^@]*)?@example\\.com$/ example.com/$1/\n' > "$conf/virtual_mailbox"
    "$inst/sbin/petrelctl" -c "$conf" config \
        "myhostname=petrel.localdomain" \
        "mydestination=localhost" \
        "mynetworks=127.0.0.0/8" \
        "inet_interfaces=127.0.0.1" \
        "queue_directory=$run/queue" \
        "virtual_mailbox_domains=example.com" \
        "virtual_mailbox_base=$run/mail" \
        "virtual_mailbox_maps=pcre:$conf/virtual_mailbox" \
        "alias_maps=hash:$conf/aliases" \
        "alias_database=hash:$conf/aliases"
    # Local postmaster mail goes to postmaster@example.com's Maildir.
    printf '# aliases(5)\npostmaster: postmaster@example.com\n' > "$conf/aliases"
    "$inst/sbin/petrelctl" -c "$conf" newaliases
    # The SMTP service on 127.0.0.1:2525 instead of port 25.
    sed -i 's/^smtp\([[:space:]][[:space:]]*inet[[:space:]]\)/127.0.0.1:2525\1/' "$conf/master.cf"
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
echo "petreld: configuration in $conf, queue in $run/queue, mail in $run/mail"
echo "petreld: try: swaks --server 127.0.0.1:2525 --to user@example.com"
echo "petreld: then: ls $run/mail/example.com/user/new/"
exec "$inst/sbin/petreld" -c "$conf"
