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
# bounded), and a kill happens with the server frozen (SIGSTOP), after checking that the client
# is still running and cannot finish without the server: it can only complete the calls the
# server had already answered, at most its window. While a kill is due the server runs in
# slices of a few ms between looks at the client's progress (from before the client starts, and
# again from each restart), and the client is frozen while a new server starts, so the client
# cannot run far past the point chosen for a kill, however slowly this script is scheduled.
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
# Frozen before the client starts: the client makes progress only in the server's slices below
# (a loaded machine may otherwise let it run to the end before this script looks).
kill -STOP "$SERVER"
STEP=$(( TRANSFERS / 100 > 0 ? TRANSFERS / 100 : 1 ))
"$BIN/bank_client" --connect "$ADDR" --transfers "$TRANSFERS" --window "$WINDOW" --seed "$SEED" \
    --progress-every "$STEP" >"$WORK/client.out" 2>"$WORK/client.err" &
CLIENT=$!

KILLED=0 LAST=0
for i in $(seq "$KILLS"); do
    # The i-th kill at a random point of the i-th slice of 5%..60% of the transfers, and after
    # some transfers on the restarted server.
    lo=$(( TRANSFERS * (5 + 55 * (i - 1) / KILLS) / 100 ))
    hi=$(( TRANSFERS * (5 + 55 * i / KILLS) / 100 ))
    at=$(( lo + RANDOM % (hi - lo + 1) ))
    [ "$at" -ge $(( LAST + WINDOW + STEP )) ] || at=$(( LAST + WINDOW + STEP ))
    # The server is frozen here but for short slices, so the client's progress is looked at often.
    while :; do
        done_now=$(progress)
        if ! kill -0 "$CLIENT" 2>/dev/null || [ "$done_now" -ge $(( TRANSFERS - WINDOW - STEP )) ]; then
            kill -CONT "$SERVER"; break 2 # the client is (nearly) done: no kill can land in its run
        fi
        [ "$done_now" -ge "$at" ] && break
        kill -CONT "$SERVER"
        sleep 0.005
        kill -STOP "$SERVER" 2>/dev/null || fail "bank_server died"
    done
    kill_server
    KILLED=$((KILLED + 1)) LAST=$done_now
    echo "bank-crash: kill -9 #$KILLED after $done_now of $TRANSFERS transfers" >&2
    # The client meets the dead server (and tries to reconnect) for up to 40 ms, and is frozen
    # while the new one starts: it can make no progress without a server, so none goes unseen.
    sleep "0.0$(( RANDOM % 5 ))"
    kill -STOP "$CLIENT"
    start_server
    kill -STOP "$SERVER" # frozen again before the client runs: see above
    kill -CONT "$CLIENT"
done
kill -CONT "$SERVER" 2>/dev/null || true # the last restarted server serves the rest of the run

# Until the client ends (paced; bash's wait -n forgets a job that ended earlier), failing at
# once if the server dies under it.
while kill -0 "$CLIENT" 2>/dev/null; do
    kill -0 "$SERVER" 2>/dev/null || fail "bank_server exited while the client ran"
    sleep 0.05
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
