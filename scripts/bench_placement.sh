#!/usr/bin/env bash
# Where the threads of one `arpc-bench throughput` run are, and what that does to its figures
# (docs/PERFORMANCE.md, "The pool's two modes are where its threads run"). Each configuration
# pins the client's loop (arpc-cloop), the server's loop (arpc-loop) and its workers
# (arpc-worker-N) to the CPUs it names, as the threads appear; "free" leaves them to the
# scheduler, as users run.
#
#   scripts/bench_placement.sh [ROUNDS] [-- THROUGHPUT FLAGS...]
#        default: 5 rounds of throughput --calls 400000 --window 256 --payload 16
#        --transport tcp --no-memory (the pool)
#
# Runs are interleaved: every round runs each configuration once, so machine noise hits all
# of them alike. Prints per configuration the median calls/s (and range) and the medians of
# CPU per call: all threads, server loop, workers, client loop, and context switches per
# call. Needs 2 CPUs or more, `taskset` (util-linux) and python3. Run it as
# `nice -n -20 scripts/bench_placement.sh` (root) on a machine with nothing else to do.
# Environment: ARPC_BENCH (default build/bench/arpc-bench; build it RelWithDebInfo),
# CONFIGS (default below: "cloop-cpus loop-cpus worker-cpus" triples, ";"-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=5
if [ $# -gt 0 ] && [ "$1" != "--" ]; then ROUNDS=$1; shift; fi
[ "${1:-}" = "--" ] && shift
FLAGS=("$@")
[ ${#FLAGS[@]} -eq 0 ] && FLAGS=(--calls 400000 --window 256 --payload 16 --transport tcp --no-memory)
B=${ARPC_BENCH:-build/bench/arpc-bench}
CONFIGS=${CONFIGS:-"0 0 0;0 1 1;0 0 1;0 1 0;free"}
OUT=$(mktemp /tmp/bench_placement.XXXXXX.txt)
[ -x "$B" ] || { echo "bench_placement: no $B (build arpc-bench first)" >&2; exit 2; }

# One run with its threads pinned as the triple says ("free": not pinned). Prints the run's
# JSON line.
run_pinned() {
    local cfg=$1 json
    json=$(mktemp)
    "$B" throughput "${FLAGS[@]}" --quiet >"$json" 2>/dev/null &
    local pid=$! tid comm
    if [ "$cfg" != free ]; then
        read -r cl lp wk <<<"$cfg"
        # Every thread is looked at once (a builtin read, no fork); the polling stops once the
        # three kinds are pinned and no thread has appeared for ~0.5 s, so it does not compete
        # with the run it measures.
        declare -A seen=()
        local kinds=0 quiet=0
        while kill -0 "$pid" 2>/dev/null && { [ "$kinds" -ne 7 ] || [ "$quiet" -lt 250 ]; }; do
            quiet=$((quiet + 1))
            for t in /proc/"$pid"/task/*; do
                tid=${t##*/}
                [ -n "${seen[$tid]:-}" ] && continue
                comm=
                read -r comm <"$t/comm" 2>/dev/null || true
                [ -z "$comm" ] && continue
                seen[$tid]=1
                quiet=0
                case "$comm" in
                arpc-cloop*) taskset -pc "$cl" "$tid" >/dev/null 2>&1 && kinds=$((kinds | 1)) ;;
                arpc-loop*) taskset -pc "$lp" "$tid" >/dev/null 2>&1 && kinds=$((kinds | 2)) ;;
                arpc-worker*) taskset -pc "$wk" "$tid" >/dev/null 2>&1 && kinds=$((kinds | 4)) ;;
                esac
            done
            sleep 0.002
        done
    fi
    wait "$pid"
    tail -1 "$json"
    rm -f "$json"
}

IFS=';' read -r -a CFGS <<<"$CONFIGS"
for ((r = 1; r <= ROUNDS; r++)); do
    for cfg in "${CFGS[@]}"; do
        printf '%s\t%s\n' "$cfg" "$(run_pinned "$cfg")" >>"$OUT"
    done
    echo "round $r of $ROUNDS done" >&2
done

python3 - "$OUT" "${CFGS[@]}" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    cfg, js = line.rstrip("\n").split("\t", 1)
    rows.setdefault(cfg, []).append(json.loads(js))
print("placement (client loop | server loop | workers)   calls/s median (range)   CPU us per call: all / server loop / workers / client loop   switches per call")
for cfg in sys.argv[2:]:
    v = rows.get(cfg, [])
    if not v:
        continue
    med = lambda k: statistics.median(float(x[k]) for x in v)
    cps = [float(x["calls_per_s"]) for x in v]
    name = "free (not pinned)" if cfg == "free" else "cpu %s | cpu %s | cpu %s" % tuple(cfg.split())
    print("%-28s %5.2f M (%.2f-%.2f)   %.3f / %.3f / %.3f / %.3f   %.3f" % (
        name, med("calls_per_s") / 1e6, min(cps) / 1e6, max(cps) / 1e6, med("cpu_us_per_call"),
        med("server_loop_cpu_us_per_call"), med("workers_cpu_us_per_call"),
        med("client_loops_cpu_us_per_call"), med("ctx_switches_per_call")))
EOF
echo "raw runs: $OUT" >&2
