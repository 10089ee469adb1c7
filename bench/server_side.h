/*
 * bench/server_side.h: the bench server, embedded or standalone (`arpc-bench serve`).
 *
 * Methods:
 *   bench.echo     replies with the request bytes
 *   bench.hold     replies nothing until bench.release (the memory probe keeps a window of
 *                  calls outstanding with it)
 *   bench.held     replies with the number of calls held, 8 bytes little-endian
 *   bench.release  replies to every held call with its request bytes, then to itself
 * All run inline on the server's loop with inline_handler, otherwise on the default pool.
 *
 * With cfg->log_dir the server keeps its reply log in a fresh subdirectory of it, made at
 * start and removed at stop (logdir.h), with cfg->fsync.
 */
#ifndef ARPC_BENCH_SERVER_SIDE_H
#define ARPC_BENCH_SERVER_SIDE_H

#include <stddef.h>

#include "bench.h"

struct bench_server;

/* Starts a server listening on addr, configured by cfg's inline_handler, workers, log_dir
 * and fsync; bound receives the address actually bound. Returns 0, or -1 after printing why
 * on stderr. */
int bench_server_start(struct bench_server **out, const char *addr, const struct bench_config *cfg,
                       char *bound, size_t boundlen);

/* Answers every held call, stops the server, removes its log directory and frees it. */
void bench_server_stop(struct bench_server *s);

/* `arpc-bench serve`: serves on cfg->listen_addr until SIGINT or SIGTERM. Returns the exit
 * status. */
int bench_serve_main(const struct bench_config *cfg);

#endif
