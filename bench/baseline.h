/*
 * bench/baseline.h: the same traffic with no framework, to compare arpc against.
 *
 * Both baselines use one connection on the run's transport inside this process (tcp:
 * 127.0.0.1 with TCP_NODELAY, unix: a socket file in /tmp, inproc: a socketpair) and one echo
 * thread that reads whatever has arrived (up to 256 KiB) and writes it all back.
 *
 *   ping-pong: the client writes the payload and reads it back, blocking; one in flight.
 *   pipelined: the client keeps `window` payloads outstanding (non-blocking, poll), and
 *              times each from the moment the window let it in to the read that finished
 *              its echo (waiting for room in the socket included, as for an arpc call).
 *
 * Each returns 0, or -1 after printing why on stderr; out->hist is then NULL.
 */
#ifndef ARPC_BENCH_BASELINE_H
#define ARPC_BENCH_BASELINE_H

#include "bench.h"

int bench_baseline_pingpong(const struct bench_config *cfg, struct bench_run *out);
int bench_baseline_pipelined(const struct bench_config *cfg, struct bench_run *out);

#endif
