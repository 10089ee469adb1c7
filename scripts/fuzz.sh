#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz) for SECONDS each under ASan+UBSan, starting from
# the committed seed corpus; fails on the first crash, leak, sanitizer report or timeout (the
# input that did it is left in build-fuzz/crashes/). Needs clang and libFuzzer's runtime
# (Debian: clang libclang-rt-dev); skipped with a message where they are missing.
#
#   scripts/fuzz.sh SECONDS          (CI: scripts/test.sh runs it with 60)
#   scripts/fuzz.sh --corpus         rewrites tests/fuzz/corpus from the frame encoders
# Environment: BUILD (default build-fuzz), JOBS (build parallelism, and targets run at once),
# FUZZ_TARGETS (a subset).
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

CC=clang cmake -S . -B "$BUILD" -DARPC_FUZZ=ON -DARPC_BUILD_TESTS=OFF -DARPC_BUILD_EXAMPLES=OFF -DARPC_BUILD_BENCH=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DARPC_WERROR=ON >"$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log" >&2; exit 1; }
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

# One target for secs seconds, its output in $BUILD/TARGET.log; libFuzzer's status.
fuzz_run() {
    local t=$1 work=$BUILD/corpus/$1 max_len=4096 # work: what this run finds; the seeds are read, never written
    mkdir -p "$work"
    [ "$t" = hello_fuzz ] && max_len=8194
    "$bin/$t" -max_total_time="$secs" -max_len="$max_len" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$BUILD/crashes/$t-" "$work" "tests/fuzz/corpus/$t" >"$BUILD/$t.log" 2>&1
}

# Says how target $1 ended (status $2); fails on a failure.
fuzz_report() {
    local t=$1 log=$BUILD/$1.log
    if [ "$2" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz: $t FAILED; the input is in $BUILD/crashes/ (replay: $bin/$t FILE)" >&2
        return 1
    fi
    local done_line execs rate cov ft corp
    done_line=$(grep -E "^#[0-9]+.*DONE" "$log" | tail -n 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(echo "$done_line" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$done_line" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$done_line" | sed -n 's/.*corp: \([0-9]*\).*/\1/p')
    echo "fuzz $t ok: $execs inputs, $rate/s, cov $cov, ft $ft, corpus $corp"
}

# JOBS targets at a time (libFuzzer runs on one thread: each gets a core of its own for its
# seconds), reported in order once each batch ends.
read -r -a targets <<<"$TARGETS"
for ((i = 0; i < ${#targets[@]}; i += JOBS)); do
    batch=("${targets[@]:i:JOBS}")
    pids=()
    for t in "${batch[@]}"; do
        echo "== fuzz $t for ${secs}s" >&2
        fuzz_run "$t" &
        pids+=($!)
    done
    failed=0
    for k in "${!batch[@]}"; do
        status=0
        wait "${pids[$k]}" || status=$?
        fuzz_report "${batch[$k]}" "$status" || failed=1
    done
    [ "$failed" -eq 0 ] || exit 1
done
