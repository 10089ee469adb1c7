#!/usr/bin/env bash
# The bank under crashes: builds arpc (like demo.sh), then runs bank_client's transfers against a
# bank_server that is killed with SIGKILL and restarted on the same data directory 4 times at
# random moments (scripts/bank-crash.sh). Prints the client's JSON line; exits with its status.
#   crash-demo.sh [--transfers N] [--kills K] [--seed S] ...   (passed on to bank-crash.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
arpc_build_release --target bank_server bank_client

echo "== bank_server killed with SIGKILL and restarted under a running bank_client"
exec scripts/bank-crash.sh --bin "$BUILD"/examples --transfers 5000 --kills 4 "$@"
