#!/usr/bin/env bash
# The abuse suite's long variants (tests/abuse_test.c at the scale issue #10 states): 4 GiB
# length headers (200 connections at a time, each replaced once the server closes it, for
# 1,000 good calls; the attacker at the good client's priority, then SCHED_IDLE), slowloris
# (1,000 connections at 1 byte/s), 20 half-sent 16 MiB frames, a never-reading client asking
# for 1,024 replies of 1 MiB, a numbered call for a 1 MiB reply duplicated 1,000 times twice
# over (never read), 10,000 idle connections, the server's fd limit reached (256), a
# method-name log injection; each against a live server (a child process) while a
# well-behaved client keeps calling. Prints, per attack, the server's peak RSS against its
# bound and the good client's p50/p99 during the attack and unloaded (figures, not timed
# assertions). A few minutes; RelWithDebInfo build in $BUILD (default build-abuse).
# ABUSE_ONLY=test_half_sent_frames (a cmocka pattern) runs one attack. ABUSE_ACCEPT_RATE=N (and
# ABUSE_ACCEPT_BURST=B) give every attack's server max_accept_rate N (accept_burst B);
# ABUSE_FAULT_RATE=N its max_fault_rate (-1: none; unset: arpc's default).
# ABUSE_HALF_WARM=1: the half-sent frames' connections each make one call first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
arpc_install_deps

BUILD=${BUILD:-build-abuse}
# 10,000 idle connections need as many descriptors on each side (the test raises its soft
# limit to the hard one; root may raise the hard one).
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 10100 ]; then
    ulimit -Hn 10100 2>/dev/null || echo "abuse: the hard fd limit is $(ulimit -Hn); 10,000 idle connections need ~10,100" >&2
fi
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target abuse_test >/dev/null
echo "== abuse suite, long variants ($(nproc) cores; $(uptime | sed 's/.*load average/load average/'))" >&2
ABUSE_LONG=1 CMOCKA_MESSAGE_OUTPUT=stdout "$BUILD/tests/abuse_test"
