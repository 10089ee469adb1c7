#!/usr/bin/env bash
# The main job: build arpc, then run the examples against embedded/started servers and a short
# latency + throughput benchmark against an embedded server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
arpc_build_release

echo "== toy: procedure 22 returns its argument + 1"
"$BUILD"/examples/toy

echo
echo "== kv_proto: a typed protobuf-c call (examples/proto/kv.proto served as kv.KV.Put, kv.KV.Get)"
if [ -x "$BUILD"/examples/kv_proto ]; then
    "$BUILD"/examples/kv_proto
else
    echo "skipped: arpc was built without ARPC_WITH_PROTOBUF (apt-get install libprotobuf-c-dev protobuf-c-compiler)"
fi

echo
echo "== kv_server + kv_client over a unix socket"
SOCK=/tmp/arpc-demo-kv-$$.sock
"$BUILD"/examples/kv_server --listen "unix://$SOCK" &
KV_PID=$!
trap 'kill $KV_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
set -x
"$BUILD"/examples/kv_client --connect "unix://$SOCK" put greeting "hello, arpc"
"$BUILD"/examples/kv_client --connect "unix://$SOCK" get greeting
"$BUILD"/examples/kv_client --connect "unix://$SOCK" get missing || true
"$BUILD"/examples/kv_client --connect "unix:///tmp/arpc-demo-nobody-$$/kv.sock" get greeting || true
{ set +x; } 2>/dev/null
echo "-- arpc-call: the server's methods (built-in arpc.methods), a call, and its stats (arpc.stats, JSON)"
set -x
"$BUILD"/tools/arpc-call --list "unix://$SOCK"
"$BUILD"/tools/arpc-call "unix://$SOCK" kv.get greeting; echo
"$BUILD"/tools/arpc-call "unix://$SOCK" kv.nothing || echo "exit status $? (10 + ARPC_ENOMETHOD)"
"$BUILD"/tools/arpc-call "unix://$SOCK" arpc.stats; echo
{ set +x; } 2>/dev/null
if grep -q '^ARPC_WITH_JSONRPC:BOOL=ON' "$BUILD/CMakeCache.txt"; then
    echo "-- arpc-call --json: JSON-RPC 1.0 (as Go's net/rpc/jsonrpc) to the same kv_server socket"
    set -x
    "$BUILD"/tools/arpc-call --json "unix://$SOCK" KV.Put '{"key":"lang","value":"C and Go"}'
    "$BUILD"/tools/arpc-call --json "unix://$SOCK" KV.Get '{"key":"lang"}'
    "$BUILD"/tools/arpc-call --json "unix://$SOCK" KV.Get '{"key":"missing"}' || echo "exit status $? (10 + ARPC_EHANDLER)"
    { set +x; } 2>/dev/null
else
    echo "-- arpc-call --json skipped: built without JSON-RPC (install libjansson-dev)"
fi
kill -INT $KV_PID
wait $KV_PID || true
trap - EXIT

echo
echo "== kv_server over tls://, its certificate rotated by SIGHUP (arpc_server_tls_reload)"
if grep -q '^ARPC_WITH_TLS:BOOL=ON' "$BUILD/CMakeCache.txt" && command -v openssl >/dev/null; then
    TLS_DIR=$(mktemp -d)
    scripts/tls-selfsigned.sh "$TLS_DIR/first" >/dev/null
    scripts/tls-selfsigned.sh "$TLS_DIR/second" >/dev/null
    cp "$TLS_DIR/first/cert.pem" "$TLS_DIR/first/key.pem" "$TLS_DIR/"
    "$BUILD"/examples/kv_server --listen tls://127.0.0.1:0 --tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem" >"$TLS_DIR/out" &
    KV_PID=$!
    trap 'kill $KV_PID 2>/dev/null || true; rm -rf "$TLS_DIR"' EXIT
    for _ in $(seq 50); do grep -q listening "$TLS_DIR/out" && break; sleep 0.1; done
    ADDR=$(sed -n 's/^kv_server listening on //p' "$TLS_DIR/out")
    set -x
    "$BUILD"/examples/kv_client --tls-ca "$TLS_DIR/first/cert.pem" --connect "$ADDR" put greeting "hello over TLS"
    cp "$TLS_DIR/second/cert.pem" "$TLS_DIR/second/key.pem" "$TLS_DIR/"
    kill -HUP $KV_PID
    { set +x; } 2>/dev/null
    for _ in $(seq 50); do grep -q reloaded "$TLS_DIR/out" && break; sleep 0.1; done
    grep reloaded "$TLS_DIR/out"
    echo "-- the old certificate's CA is now refused (this one fails on purpose), the new one's is taken"
    set -x
    "$BUILD"/examples/kv_client --tls-ca "$TLS_DIR/first/cert.pem" --connect "$ADDR" get greeting || true
    "$BUILD"/examples/kv_client --tls-ca "$TLS_DIR/second/cert.pem" --connect "$ADDR" get greeting
    { set +x; } 2>/dev/null
    kill -INT $KV_PID
    wait $KV_PID || true
    rm -rf "$TLS_DIR"
    trap - EXIT
else
    echo "skipped: built without TLS (install libssl-dev openssl)"
fi

echo
echo "== async_client: future+then, completion queue in a poll loop, one-way"
"$BUILD"/examples/async_client

echo
echo "== epoll_loop: the application's own epoll loop serves and calls on one thread, no arpc thread"
"$BUILD"/examples/epoll_loop

echo
echo "== benchmark (16-byte payload, loopback tcp, embedded server; figures vs a raw socket baseline)"
echo "-- latency: one call at a time, the caller drives the client loop, trivial handler inline"
"$BUILD"/bench/arpc-bench latency --calls 20000 --payload 16 --transport tcp --inline --quiet
echo "-- pipelined throughput, window 256, handlers on the worker pool"
"$BUILD"/bench/arpc-bench throughput --calls 1000000 --window 256 --payload 16 --transport tcp --quiet
echo "-- pipelined throughput, window 256, handler inline on the server loop"
"$BUILD"/bench/arpc-bench throughput --calls 1000000 --window 256 --payload 16 --transport tcp --inline --quiet --no-memory

echo
echo "== at-most-once and exactly-once: bank_server killed with SIGKILL 4 times under a running"
echo "   bank_client and restarted on its reply log (scripts/crash-demo.sh)"
BUILD="$BUILD" scripts/crash-demo.sh
