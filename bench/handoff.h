/*
 * bench/handoff.h: arpc-bench handoff (many producer threads into one actor, and into one
 * loop; see handoff.c).
 */
#ifndef ARPC_BENCH_HANDOFF_H
#define ARPC_BENCH_HANDOFF_H

#include "bench.h"

/* Runs both hand-offs with cfg->threads producers of cfg->calls jobs each; prints the table
 * on stderr and one JSON object on stdout. Returns the exit status (1 if a job was lost). */
int bench_handoff_main(const struct bench_config *cfg);

#endif
