#!/usr/bin/env bash
# A few fast tests and two bench runs under valgrind's memcheck, on a build whose pools and
# caches are annotated (-DARPC_MEMCHECK=ON, base/memcheck.h): uninitialised or stale bytes
# written to a peer (sendmsg, send) or to the reply log (pwrite), and branches on them, which
# ASan and TSan do not look for. About three minutes (measured on a loaded 2-core machine).
# Needs valgrind and the optional parts (TLS, JSON-RPC, protobuf: scripts/deps.sh installs them).
# Usage: scripts/memcheck.sh [build-dir]   (default build-test-memcheck)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-test-memcheck}
tests="frame_test request_wire_test amo_wire_test goaway_words_test client_wire_refusals_test auth_test
       jsonrpc_bad_input_test second_reply_log_test protobuf_test tls_resumption_test reply_log_test"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DARPC_WERROR=ON -DARPC_MEMCHECK=ON >/dev/null
# shellcheck disable=SC2086
cmake --build "$dir" -j"$(nproc)" --target arpc-bench $tests >/dev/null
logs=$(mktemp -d)
supp=$PWD/tests/memcheck.supp
vg() { # name, command...
    local name=$1; shift
    # A forked child (a test's server, a misuse test's child that aborts) is followed and
    # logs apart (%p); exec'd programs are not (--trace-children: bash, python, slow).
    if ! valgrind --tool=memcheck --track-origins=yes --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --suppressions="$supp" --log-file="$logs/$name.%p.log" \
        "$@" >"$logs/$name.out" 2>&1; then
        echo "memcheck: $name failed (valgrind's reports: $logs/$name.*.log; output: $logs/$name.out)" >&2
        exit 1
    fi
    echo "memcheck: $name ok" >&2
}
for t in $tests; do
    (cd "$dir/tests" && CMOCKA_MESSAGE_OUTPUT=stdout vg "$t" "./$t")
done
scripts/tls-selfsigned.sh "$logs" >/dev/null
vg bench-tcp "$dir/bench/arpc-bench" throughput --calls 2000 --payload 3000 --transport tcp --no-memory --quiet
vg bench-tls-log "$dir/bench/arpc-bench" throughput --calls 2000 --payload 700 --transport tls --no-memory \
    --quiet --tls-cert "$logs/cert.pem" --tls-key "$logs/key.pem" --log "$logs"
rm -r "$logs"
