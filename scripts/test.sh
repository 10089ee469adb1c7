#!/usr/bin/env bash
# The whole test suite: the cmocka tests under a normal -Werror build, under ASan+UBSan (with
# the leak checker), and under TSan; then a smoke run of the benchmark whose JSON must parse,
# a downstream project built against a staged install (scripts/downstream.sh), a generation with
# a multi-config generator, and every fuzz target for 60 s under ASan+UBSan (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
arpc_install_deps

# One way to watch an fd and to arm a timer in the library: through the loop (async/loop_internal.h:
# arpc_loop_io_start/stop mirror watchers for pollable loops; every timer is a deadline on the
# loop's heap, so arpc_loop_run_nowait knows when the loop next needs to run).
if grep -rnE "ev_io_(start|stop)|ev_timer_(start|again|set)|ev_timer_init" core transport; then
    echo "core/ and transport/ must use arpc_loop_io_start/stop and arpc_deadline, not libev directly" >&2
    exit 1
fi

# Every descriptor arpc opens is close-on-exec, so a child the application execs holds none of
# its sockets, log segments or locks: no dup/dup2/pipe/epoll_create/accept, which cannot say so.
cloexec_rc=0
grep -rnP "(^|[^_a-zA-Z>.])(dup2?|pipe|epoll_create|accept)\((?!2\))" core transport async base || cloexec_rc=$? # not "accept(2)"
if [ "$cloexec_rc" -ne 1 ]; then # 0: found; 2: grep could not look (no -P)
    echo "core/, transport/, async/, base/: use F_DUPFD_CLOEXEC, pipe2, epoll_create1, accept4 with their CLOEXEC flags (grep rc $cloexec_rc)" >&2
    exit 1
fi

JOBS=$(nproc)
PASSED=0
run_suite() { # name, extra cmake args...
    local name=$1; shift
    local dir=build-test-$name
    local t0=$SECONDS
    echo "== [$name] configure + build" >&2
    cmake -S . -B "$dir" -DARPC_WERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j"$JOBS" 2>&1 | grep -E "warning:|error:" >&2 || true
    cmake --build "$dir" -j"$JOBS" >/dev/null
    echo "== [$name] ctest (built in $((SECONDS - t0)) s)" >&2
    t0=$SECONDS
    # As many tests at once as cores: the tests are written for a loaded machine (latches and
    # futures, never sleeps), and one at a time the three suites took ~25 of CI's 30 minutes.
    (cd "$dir" && ctest --output-on-failure -j"$JOBS" --timeout 600) | tee "$dir/ctest.log"
    echo "== [$name] ctest took $((SECONDS - t0)) s (the whole run so far: $SECONDS s; CI allows 1800)" >&2
    local n
    n=$(sed -n 's/^100% tests passed, 0 tests failed out of \([0-9]*\)$/\1/p' "$dir/ctest.log")
    PASSED=$((PASSED + ${n:-0}))
}

run_suite release -DCMAKE_BUILD_TYPE=RelWithDebInfo
run_suite asan -DCMAKE_BUILD_TYPE=Debug -DARPC_SANITIZE=address
run_suite tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DARPC_SANITIZE=thread

echo "== benchmark smoke run (JSON must parse)" >&2
for mode in latency throughput; do
    extra=""; [ "$mode" = throughput ] && extra="--window 64"
    out=$(build-test-release/bench/arpc-bench "$mode" --calls 3000 $extra --payload 16 --transport tcp --quiet)
    echo "$out" | tail -n 1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["calls"] > 0 and d["p50_us"] > 0 and d["ctx_switches_per_call"] > 0 and d["amo"] is True and d["log"] is None and d["fsync"] is None, d; print("bench", d["mode"], "ok: p50", d["p50_us"], "us,", round(d["calls_per_s"]), "calls/s")'
    PASSED=$((PASSED + 1))
done
out=$(build-test-release/bench/arpc-bench latency --rate 2000 --calls 2000 --arrivals poisson --payload 16 --transport tcp --quiet)
echo "$out" | tail -n 1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); p=d["rate_sweep"][0]; assert d["calls"] == 2000 and d["errors"] == 0 and 0 < d["p50_us"] <= d["p99_us"] and p["offered_per_s"] == 2000 and d["ctx_switches_per_call"] > 0, d; print("bench latency --rate ok: p50", d["p50_us"], "us, p99", d["p99_us"], "us at", round(d["calls_per_s"]), "calls/s")'
PASSED=$((PASSED + 1))
logdir=$(mktemp -d)
out=$(build-test-release/bench/arpc-bench throughput --calls 3000 --window 64 --payload 16 --transport tcp --no-memory --quiet --log "$logdir" --fsync batch)
rmdir "$logdir" # fails if the bench left its log behind
echo "$out" | tail -n 1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["calls"] > 0 and d["amo"] is True and d["log"] and d["fsync"] == "batch", d; print("bench throughput with reply log ok:", round(d["calls_per_s"]), "calls/s, fsync", d["fsync"])'
PASSED=$((PASSED + 1))
tlsdir=$(mktemp -d) # tls:// with a self-signed pair (deps.sh installs libssl-dev and openssl)
scripts/tls-selfsigned.sh "$tlsdir" >/dev/null
out=$(build-test-release/bench/arpc-bench throughput --calls 3000 --window 64 --payload 1000 --transport tls --no-memory --quiet --tls-cert "$tlsdir/cert.pem" --tls-key "$tlsdir/key.pem")
rm -r "$tlsdir"
echo "$out" | tail -n 1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["calls"] > 0 and d["errors"] == 0 and d["transport"] == "tls", d; print("bench throughput over tls ok:", round(d["calls_per_s"]), "calls/s")'
PASSED=$((PASSED + 1))
# Bulk: 1 MiB payloads take the read-apart path (core/conn_body.c) in a release build; the bench
# checks each reply's length (tests/bulk_test.c checks the bytes).
out=$(build-test-release/bench/arpc-bench throughput --calls 200 --window 16 --payload 1048576 --transport tcp --no-memory --quiet)
echo "$out" | tail -n 1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["calls"] > 0 and d["errors"] == 0 and d["mb_per_s"] > 0 and d["baseline_mb_per_s"] > 0 and d["cpu_us_per_call"] > 0 and d["baseline_cpu_us_per_call"] > 0, d; print("bench throughput 1 MiB ok:", round(d["mb_per_s"]), "MB/s, raw", round(d["baseline_mb_per_s"]), "MB/s, CPU per call", round(d["cpu_us_per_call"]), "us")'
PASSED=$((PASSED + 1))
out=$(build-test-release/bench/arpc-bench handoff --threads 4 --calls 20000 --quiet) # every job counted
echo "$out" | tail -n 1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["ok"] is True and d["producers"] == 4 and d["actor_posts_s"] > 0 and d["loop_submits_s"] > 0, d; print("bench handoff ok: 4 x 20000 actor posts", d["actor_posts_s"], "s, loop submits", d["loop_submits_s"], "s")'
PASSED=$((PASSED + 1))
BUILD=build-test-downstream JOBS=$JOBS scripts/downstream.sh; PASSED=$((PASSED + 1)) # staged /usr install, used by another project
# A multi-config generator (one build tree, a directory per configuration) generates: only the
# configure step, a few seconds; each configuration gets its own arpc-uninstalled.pc.
rm -rf build-test-multiconfig
cmake -S . -B build-test-multiconfig -G "Ninja Multi-Config" -DARPC_BUILD_TESTS=OFF >/dev/null
for c in Debug Release; do
    grep -q "^libdir=.*/build-test-multiconfig/$c\$" "build-test-multiconfig/$c/arpc-uninstalled.pc" ||
        { echo "multi-config: no $c/arpc-uninstalled.pc naming its own directory" >&2; exit 1; }
done
echo "multi-config generation ok" >&2
PASSED=$((PASSED + 1))
echo "== fuzzing from $SECONDS s" >&2
BUILD=build-test-fuzz JOBS=$JOBS scripts/fuzz.sh 60; PASSED=$((PASSED + 1)) # each libFuzzer target 60 s, ASan+UBSan
echo "== the whole run took $SECONDS s" >&2
# Every failure above stops the script (set -e, pipefail), so reaching here means none failed.
echo "tests: $PASSED passed, 0 failed"
