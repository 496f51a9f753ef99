#!/bin/sh
# Installs what is missing, builds Petrel and runs the whole test suite
# (`make check`: unit tests, fuzz-corpus replays and integration tests that
# start petreld on loopback ports). Run from the top of the source tree, as
# root on Debian 12; tests drop petreld to the unprivileged user `petrel`.
# It builds in _build (configured without a prefix: nothing is installed);
# scripts/quickstart.sh builds in its own directory, so the two can run in
# either order.
set -eu
cd "$(dirname "$0")/.."
if [ -f config.status ]; then
    echo "test.sh: the source tree itself is configured (./configure was run here):" >&2
    echo "test.sh: run 'make distclean' first; the tests build in _build" >&2
    exit 1
fi
PETREL_WITH_TESTS=1 ./scripts/install-deps.sh
if ! getent passwd petrel >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin petrel
    else
        echo "test.sh: the user 'petrel' is missing (create it as root)" >&2
        exit 1
    fi
fi
./autogen.sh >/dev/null
mkdir -p _build
cd _build
../configure -q
make -j"$(nproc)"
# Test directories live under /tmp; the build tree must be readable by the
# test user that petreld runs as.
status=0
make -j"$(nproc)" check || status=$?
if [ $status -ne 0 ]; then
    for log in $(find . -name '*.log' -path '*t/*'); do
        if grep -q '^not ok\|^ERROR\|^FAIL' "$log" 2>/dev/null; then
            echo "==== $log"
            tail -n 60 "$log"
        fi
    done
fi
exit $status
