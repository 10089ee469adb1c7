#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz) for SECONDS each under ASan+UBSan, starting from
# the committed seed corpus; fails on the first crash, leak, sanitizer report or timeout (the
# input that did it is left in build-fuzz/crashes/). Needs clang and libFuzzer's runtime
# (Debian: clang libclang-rt-dev); skipped with a message where they are missing.
#
#   scripts/fuzz.sh SECONDS          (CI: scripts/test.sh runs it with 60)
#   scripts/fuzz.sh --corpus         rewrites tests/fuzz/corpus from the frame encoders
# Environment: BUILD (default build-fuzz), JOBS (build parallelism), FUZZ_TARGETS (a subset).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build-fuzz}
JOBS=${JOBS:-$(nproc)}
TARGETS=${FUZZ_TARGETS:-frame_fuzz server_stream_fuzz client_stream_fuzz hello_fuzz}

if [ $# -ne 1 ] || { [ "$1" != --corpus ] && ! [[ "$1" =~ ^[0-9]+$ ]]; }; then
    echo "usage: $0 SECONDS | --corpus" >&2
    exit 2
fi
if ! command -v clang >/dev/null; then
    echo "fuzz: skipped: clang is not installed (Debian: apt-get install clang libclang-rt-dev)" >&2
    exit 0
fi

CC=clang cmake -S . -B "$BUILD" -DARPC_FUZZ=ON -DARPC_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DARPC_WERROR=ON >"$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log" >&2; exit 1; }
if ! grep -q "^ARPC_HAVE_LIBFUZZER:INTERNAL=1$" "$BUILD/CMakeCache.txt"; then
    echo "fuzz: skipped: clang cannot link libFuzzer (Debian: apt-get install libclang-rt-dev)" >&2
    exit 0
fi
cmake --build "$BUILD" -j"$JOBS" --target arpc_fuzz >/dev/null
bin=$BUILD/tests/fuzz

if [ "$1" = --corpus ]; then
    rm -rf tests/fuzz/corpus
    "$bin/fuzz_make_corpus" tests/fuzz/corpus
    echo "fuzz: corpus written to tests/fuzz/corpus" >&2
    exit 0
fi

secs=$1
mkdir -p "$BUILD/crashes"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in $TARGETS; do
    work=$BUILD/corpus/$t # what this run finds; the committed seeds are read, never written
    mkdir -p "$work"
    log=$BUILD/$t.log
    echo "== fuzz $t for ${secs}s" >&2
    # hello_fuzz: side byte + a HELLO body up to ARPC_HELLO_BODY_MAX + 1 (a token over its limit)
    max_len=4096
    [ "$t" = hello_fuzz ] && max_len=8194
    if ! "$bin/$t" -max_total_time="$secs" -max_len="$max_len" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$BUILD/crashes/$t-" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $t FAILED; the input is in $BUILD/crashes/ (replay: $bin/$t FILE)" >&2
        exit 1
    fi
    # The last status line and libFuzzer's final stats: executions, speed, coverage.
    done_line=$(grep -E "^#[0-9]+.*DONE" "$log" | tail -n 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(echo "$done_line" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$done_line" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$done_line" | sed -n 's/.*corp: \([0-9]*\).*/\1/p')
    echo "fuzz $t ok: $execs inputs, $rate/s, cov $cov, ft $ft, corpus $corp"
done
