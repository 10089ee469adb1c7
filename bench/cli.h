/*
 * bench/cli.h: the command line.
 *
 *   arpc-bench latency    [--calls N] [--payload BYTES] [--transport tcp|unix|inproc] ...
 *   arpc-bench throughput [--calls N] [--window W] [--connections C] [--threads T] ...
 *   arpc-bench throughput ... [--amo on|off] [--log DIR [--fsync always|batch|off]]
 *   arpc-bench serve --listen ADDR [--inline] [--workers N] [--log DIR [--fsync F]]
 */
#ifndef ARPC_BENCH_CLI_H
#define ARPC_BENCH_CLI_H

#include "bench.h"

/* Fills cfg from argv. Returns -1 when the benchmark should run; otherwise the process's
 * exit status: 0 after --help (usage on stdout), 2 after a bad argument (usage on stderr). */
int bench_cli_parse(struct bench_config *cfg, int argc, char **argv);

#endif
