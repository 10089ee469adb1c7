#!/usr/bin/env bash
# Kills a bank_server with SIGKILL while a bank_client moves money through it, restarts it on
# the same data directory each time, and reports what the client saw. Used by crash-demo.sh
# (which builds first) and by ctest.
#   bank-crash.sh --bin DIR [--kills K] [--transfers N] [--window W] [--seed S]
#                 [--fsync always|batch|off] [--checkpoint-every C] [--check [--min-kills M]]
# DIR holds bank_server and bank_client. The K kills land at random points of the client's
# progress (between 5% and 60% of its transfers); then, with the client done, one more kill of
# the idle server checks that a restart brings back exactly the balances it had.
# Prints the client's JSON line last; exit status: the client's, or 1 if this script saw the
# server misbehave. --check (for tests) also requires balances_match true and unknown 0 in the JSON,
# and at least M kills (default K) during the client's run.
#
# Nothing waits on a timer: readiness is "a client can connect and read the balances" (retried,
# bounded), and the client runs in lockstep with this script: it stops itself after each
# progress line (--stop-at-progress: SIGSTOP, every 1% of its transfers) and goes on only when
# this script has looked and, at a kill's point, killed the server and started the next one.
# So a kill lands exactly where it was drawn, however slowly this script is scheduled (a frozen
# server run in timed slices let a loaded machine's client finish before the first look).
set -euo pipefail

BIN="" KILLS=4 MIN_KILLS="" TRANSFERS=3000 WINDOW=16 SEED=$$ FSYNC=always CHECKPOINT=500 CHECK=0
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift 2 ;;
    --kills) KILLS=$2; shift 2 ;;
    --min-kills) MIN_KILLS=$2; shift 2 ;;
    --transfers) TRANSFERS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --fsync) FSYNC=$2; shift 2 ;;
    --checkpoint-every) CHECKPOINT=$2; shift 2 ;;
    --check) CHECK=1; shift ;;
    *) sed -n '5,6s/^# *//p' "$0" >&2; exit 2 ;;
    esac
done
[ -x "$BIN/bank_server" ] && [ -x "$BIN/bank_client" ] || { echo "bank-crash: no bank_server/bank_client in '$BIN'" >&2; exit 2; }
RANDOM=$SEED

WORK=$(mktemp -d /tmp/arpc-bank-crash.XXXXXX)
ADDR=unix://$WORK/bank.sock
SERVER="" CLIENT=""
fail() { # keeps the work directory for a look
    KEEP=1
    echo "bank-crash: $*" >&2
    [ -z "${JSON:-}" ] || echo "--- the client's JSON line: $JSON" >&2
    echo "--- server log ($WORK/server.log):" >&2; tail -n 20 "$WORK/server.log" >&2 || true
    echo "--- client stderr ($WORK/client.err):" >&2; grep -v ' progress ' "$WORK/client.err" 2>/dev/null | tail -n 20 >&2 || true
    exit 1
}
cleanup() {
    for pid in $SERVER $CLIENT; do kill -KILL "$pid" 2>/dev/null || true; done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

balances() { "$BIN/bank_client" --connect "$ADDR" --balances 2>>"$WORK/ready.err"; }

start_server() {
    "$BIN/bank_server" --listen "$ADDR" --data "$WORK/data" --fsync "$FSYNC" --checkpoint-every "$CHECKPOINT" \
        >>"$WORK/server.log" 2>&1 &
    SERVER=$!
    # Ready when a client gets the balances; bounded (600 tries, paced by 50 ms).
    for _ in $(seq 600); do
        balances >/dev/null && return 0
        kill -0 "$SERVER" 2>/dev/null || fail "bank_server exited while starting"
        sleep 0.05
    done
    fail "bank_server did not answer within 600 tries"
}

kill_server() { # SIGKILL, and wait until it is gone (its directory lock goes with it)
    kill -KILL "$SERVER"
    wait "$SERVER" 2>/dev/null || true
    SERVER=""
}

progress() { # the client's completed calls so far
    local line last=0
    while read -r line; do
        case $line in "bank_client: progress "*) last=${line#bank_client: progress }; last=${last%/*} ;; esac
    done <"$WORK/client.err"
    echo "$last"
}

start_server
STEP=$(( TRANSFERS / 100 > 0 ? TRANSFERS / 100 : 1 ))
"$BIN/bank_client" --connect "$ADDR" --transfers "$TRANSFERS" --window "$WINDOW" --seed "$SEED" \
    --progress-every "$STEP" --stop-at-progress >"$WORK/client.out" 2>"$WORK/client.err" &
CLIENT=$!

# Waits until the client has stopped itself at a progress line (true) or ended (false),
# failing at once if the server dies under it. Paced polling of /proc: the client is our
# child, a zombie (Z) until waited for.
client_stopped() {
    local st
    while :; do
        st=$(cut -d' ' -f3 "/proc/$CLIENT/stat" 2>/dev/null) || return 1
        case $st in T | t) return 0 ;; Z | X) return 1 ;; esac
        kill -0 "$SERVER" 2>/dev/null || fail "bank_server exited while the client ran"
        sleep 0.002
    done
}

# The i-th kill at a random point of the i-th slice of 5%..60% of the transfers, and after
# some transfers on the restarted server.
KILLED=0 LAST=0 i=1 AT=0
next_kill_at() {
    [ "$i" -le "$KILLS" ] || return 0 # no kill left to place (or none asked)
    local lo=$(( TRANSFERS * (5 + 55 * (i - 1) / KILLS) / 100 )) hi=$(( TRANSFERS * (5 + 55 * i / KILLS) / 100 ))
    AT=$(( lo + RANDOM % (hi - lo + 1) ))
    [ "$AT" -ge $(( LAST + WINDOW + STEP )) ] || AT=$(( LAST + WINDOW + STEP ))
}
next_kill_at
while client_stopped; do
    done_now=$(progress)
    # Not in the last window's worth: the client could not finish without meeting the kill.
    if [ "$i" -le "$KILLS" ] && [ "$done_now" -ge "$AT" ] && [ "$done_now" -lt $(( TRANSFERS - WINDOW - STEP )) ]; then
        kill_server # calls of its window are in flight: the server may have run them, or not
        KILLED=$((KILLED + 1)) LAST=$done_now
        echo "bank-crash: kill -9 #$KILLED after $done_now of $TRANSFERS transfers" >&2
        start_server
        i=$((i + 1))
        next_kill_at
    fi
    kill -CONT "$CLIENT" 2>/dev/null || true # gone meanwhile: the next look says so
done
STATUS=0
wait "$CLIENT" || STATUS=$?
CLIENT=""
JSON=$(tail -n 1 "$WORK/client.out")

# The client is done: every transfer it saw succeed is on disk. An idle kill must lose nothing.
BEFORE=$(balances) || fail "cannot read the balances after the run"
kill_server
start_server
AFTER=$(balances) || fail "cannot read the balances after the idle restart"
[ "$BEFORE" = "$AFTER" ] || fail "an idle kill -9 and restart changed the balances"
kill -TERM "$SERVER"
wait "$SERVER" || fail "bank_server did not stop cleanly on SIGTERM (status $?)"
SERVER=""
grep -h "recovered" "$WORK/server.log" | sed 's/^/  /'
grep -v '^{' "$WORK/client.out" || true
echo "bank-crash: $KILLED kills during the run (of $KILLS asked), then an idle kill -9 and restart kept every balance; bank_client exit status $STATUS"
echo "$JSON"

if [ "$CHECK" = 1 ]; then
    [ "$KILLED" -ge "${MIN_KILLS:-$KILLS}" ] || fail "only $KILLED kills landed while the client ran"
    python3 -c 'import json, sys
d = json.loads(sys.argv[1])
assert d["balances_match"] is True and d["unknown"] == 0, "want balances_match true and unknown 0"' "$JSON" \
        || fail "the client's JSON fails the check"
fi
exit "$STATUS"
