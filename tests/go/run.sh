#!/usr/bin/env bash
# The Go interop test (issue #11): Go's net/rpc/jsonrpc client against examples/kv_server, and
# arpc's JSON-RPC client against Go's jsonrpc server. Skipped (exit 77) when go is not installed.
#   run.sh --kv-server PATH --go-client PATH --work DIR
set -euo pipefail
while [ $# -gt 0 ]; do
    case $1 in
    --kv-server) KV_SERVER=$2; shift 2 ;;
    --go-client) GO_CLIENT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if ! command -v go >/dev/null; then
    echo "SKIPPED: go is not installed (Debian: apt-get install golang-go); the Go interop test did not run"
    exit 77
fi
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"
# Everything Go writes stays in the build tree (CI runs as root with no usable HOME).
export GOCACHE="$WORK/gocache" GOPATH="$WORK/gopath" GOFLAGS=-mod=mod GOTOOLCHAIN=local GOPROXY=off
(cd "$HERE" && go build -o "$WORK/interop" .)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# 1. Go's client -> arpc's kv_server.
coproc KV { exec "$KV_SERVER" --listen tcp://127.0.0.1:0; }
pids+=("$KV_PID")
read -r line <&"${KV[0]}"
kv_addr=${line##* }
"$WORK/interop" client "$kv_addr"

# 2. arpc's client -> Go's jsonrpc server (it serves until its stdin closes).
coproc GOSRV { exec "$WORK/interop" server; }
pids+=("$GOSRV_PID")
read -r line <&"${GOSRV[0]}"
go_addr=${line##* }
"$GO_CLIENT" "$go_addr"
echo "ok - Go interop"
