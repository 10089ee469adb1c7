#!/usr/bin/env bash
# What at-most-once and the reply log cost in pipelined throughput (docs/PERFORMANCE.md,
# "At-most-once and the reply log"). Window 256, 16-byte payload, loopback tcp, pool and
# inline handlers; configurations: --amo off, --amo on, and --amo on with a reply log at
# --fsync batch, always and off.
#
#   scripts/bench_amo.sh [ROUNDS [CALLS]]      default: 7 rounds of 1,000,000 calls
#
# Runs are interleaved: every round runs each configuration once, in an order rotated from
# round to round, so machine noise hits all of them alike. Prints, per configuration, the
# median calls/s, the range, the ratio of medians to --amo off with the same handlers, and
# the median of the per-round ratios. With FSYNCS=1 it then runs each log configuration once
# more under `perf stat` to count fdatasync/fsync calls per 1000 calls (a separate run: a
# syscall tracepoint slows every syscall of the traced process).
# Environment: ARPC_BENCH (default build/bench/arpc-bench), LOGDIR (default: mktemp -d),
# OLD_BENCH: an arpc-bench built from an earlier commit (one without --amo), run in every
# round as configuration "old-build" with the same flags otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-7}
CALLS=${2:-1000000}
B=${ARPC_BENCH:-build/bench/arpc-bench}
LOGDIR=${LOGDIR:-$(mktemp -d)}
OUT=$(mktemp /tmp/bench_amo.XXXXXX.jsonl)
COMMON=(throughput --calls "$CALLS" --window 256 --payload 16 --transport tcp --no-memory --quiet)
CONFIGS=("amo-off|--amo off" "amo-on|--amo on" "log-batch|--log $LOGDIR --fsync batch"
         "log-always|--log $LOGDIR --fsync always" "log-off|--log $LOGDIR --fsync off")
HANDLERS=("pool|" "inline|--inline")
[ -n "${OLD_BENCH:-}" ] && CONFIGS+=("old-build|")

echo "load before: $(uptime)" >&2
n=${#CONFIGS[@]}
for ((r = 0; r < ROUNDS; r++)); do
    for ((k = 0; k < n; k++)); do
        cfg=${CONFIGS[$(((k + r) % n))]}
        for h in "${HANDLERS[@]}"; do
            bin=$B
            [ "${cfg%%|*}" = old-build ] && bin=$OLD_BENCH
            # shellcheck disable=SC2086 # the flags are words on purpose
            line=$("$bin" "${COMMON[@]}" ${cfg#*|} ${h#*|} 2>"$OUT.err" | tail -n 1) ||
                { cat "$OUT.err" >&2; exit 1; }
            printf '{"round":%d,"config":"%s","handlers":"%s","run":%s}\n' \
                "$r" "${cfg%%|*}" "${h%%|*}" "$line" >>"$OUT"
        done
    done
    echo "round $((r + 1))/$ROUNDS done" >&2
done
rm -f "$OUT.err"
echo "load after:  $(uptime)" >&2
echo "raw results: $OUT" >&2

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["run"]["errors"] == 0 for r in rows), "a run had errors"
cps = {}
for r in rows:
    cps.setdefault((r["handlers"], r["config"]), {})[r["round"]] = r["run"]["calls_per_s"]
print("| handlers | configuration | calls/s median | range | ratio to amo off | paired ratio |")
print("|---|---|---|---|---|---|")
for (h, c), byround in cps.items():
    base = cps[(h, "amo-off")]
    med = statistics.median(byround.values())
    paired = statistics.median(v / base[k] for k, v in byround.items())
    print(f"| {h} | {c} | {med:,.0f} | {min(byround.values()):,.0f}–{max(byround.values()):,.0f} "
          f"| {med / statistics.median(base.values()):.2f} | {paired:.2f} |")
EOF

if [ "${FSYNCS:-0}" = 1 ]; then
    echo "| handlers | configuration | fdatasync per 1000 calls | fsync per 1000 calls |"
    echo "|---|---|---|---|"
    for cfg in "${CONFIGS[@]:2:3}"; do
        for h in "${HANDLERS[@]}"; do
            # shellcheck disable=SC2086
            perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync \
                "$B" "${COMMON[@]}" ${cfg#*|} ${h#*|} 2>"$OUT.perf" | tail -n 1 >"$OUT.json"
            python3 - "$OUT.perf" "$OUT.json" "${h%%|*}" "${cfg%%|*}" <<'EOF'
import json, sys
count = {l.split(",")[2]: int(l.split(",")[0]) for l in open(sys.argv[1]) if "syscalls:" in l}
d = json.load(open(sys.argv[2]))
per = lambda k: 1000.0 * count[k] / (d["calls"] + d["warmup"])
print(f"| {sys.argv[3]} | {sys.argv[4]} | {per('syscalls:sys_enter_fdatasync'):.2f} "
      f"| {per('syscalls:sys_enter_fsync'):.3f} |")
EOF
        done
    done
    rm -f "$OUT.perf" "$OUT.json"
fi
rmdir "$LOGDIR" 2>/dev/null || true # only if empty: the bench removes its own subdirectories
