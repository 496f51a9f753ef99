#!/bin/sh
# Installs what is missing, builds Petrel and runs the whole test suite
# (`make check`: unit tests, fuzz-corpus replays and integration tests that
# start petreld on loopback ports). Run from the top of the source tree, as
# root on Debian 12; tests drop petreld to the unprivileged user `petrel`.
#
# It builds in _build (configured without a prefix: nothing is installed);
# scripts/quickstart.sh builds in its own directory, so the two can run in
# either order.
#
# Two more runs, on by default in CI (CI=true) and optional locally
# (doc/testing.md):
#   PETREL_TEST_SANITIZERS=1   also builds _build-asan (clang, configure
#                              --enable-sanitizers) and runs make check there:
#                              any ASan/UBSan/LSan report fails its test
#   PETREL_TEST_SANITIZERS=ci  the same build, but only the CI part of the
#                              suite (make check-sanitizer-ci: every unit
#                              test and fuzz replay, a chosen third of the
#                              integration tests, t/include.am); CI's default
#   PETREL_TEST_FUZZ_SECONDS=N also runs every fuzz target for N seconds
#                              (make fuzz, in _build/fuzz-build)
set -eu
cd "$(dirname "$0")/.."
if [ "${CI:-}" = true ]; then
    # The whole suite under sanitizers would take CI past half an hour
    # (doc/testing.md, "The sanitizer run", has the timings): CI runs its
    # CI part; PETREL_TEST_SANITIZERS=1 runs all of it.
    : "${PETREL_TEST_SANITIZERS:=ci}"
    : "${PETREL_TEST_FUZZ_SECONDS:=20}"
fi
PETREL_TEST_SANITIZERS=${PETREL_TEST_SANITIZERS:-0}
PETREL_TEST_FUZZ_SECONDS=${PETREL_TEST_FUZZ_SECONDS:-0}
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
jobs=$(nproc)

# Shows the end of every failed test's log of the build tree in $1.
failed_logs=
show_failures() {
    for log in $(find "$1" -name '*.log' -path '*t/*'); do
        if grep -q '^not ok\|^ERROR\|^FAIL' "$log" 2>/dev/null; then
            echo "==== $log"
            tail -n 60 "$log"
            failed_logs="$failed_logs $log"
        fi
    done
}

# Test directories live under /tmp; the build tree must be readable by the
# test user that petreld runs as.
status=0
mkdir -p _build
(cd _build && ../configure -q && make -j"$jobs")
(cd _build && make -j"$jobs" check) || { status=1; show_failures _build; }

case "$PETREL_TEST_SANITIZERS" in
0) ;;
1|ci)
    target=check
    [ "$PETREL_TEST_SANITIZERS" = ci ] && target=check-sanitizer-ci
    echo "test.sh: make $target with AddressSanitizer and UndefinedBehaviorSanitizer (_build-asan)"
    mkdir -p _build-asan
    (cd _build-asan && ../configure -q CC=clang --enable-sanitizers && make -j"$jobs")
    (cd _build-asan && make -j"$jobs" "$target") || { status=1; show_failures _build-asan; }
    ;;
*)
    echo "test.sh: PETREL_TEST_SANITIZERS must be 0, ci or 1" >&2
    exit 2
    ;;
esac

if [ "$PETREL_TEST_FUZZ_SECONDS" -gt 0 ]; then
    echo "test.sh: every fuzz target for $PETREL_TEST_FUZZ_SECONDS s (make fuzz)"
    (cd _build && make -j"$jobs" fuzz FUZZ_SECONDS="$PETREL_TEST_FUZZ_SECONDS") ||
        { status=1; fuzz_failed=1; }
fi
# The failures again, last: a CI report that keeps only the end of the
# output still names them.
if [ $status -ne 0 ]; then
    echo "test.sh: FAILED"
    [ -n "${fuzz_failed:-}" ] && echo "== make fuzz (logs in _build/fuzz-build/t/fuzz/work)"
    for log in $failed_logs; do
        echo "== $log"
        # each failure with its diagnostics (the "# got:/# want:" lines after it)
        grep -A4 '^not ok' "$log" 2>/dev/null | grep '^not ok\|^#' | head -n 24
        grep '^ERROR' "$log" 2>/dev/null | head -n 3
    done
fi
exit $status
