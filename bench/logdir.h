/*
 * bench/logdir.h: the directory of one run's reply log.
 *
 * `--log DIR` never reuses a log: each run (or `serve`) gets a fresh subdirectory of DIR,
 * DIR/arpc-bench-XXXXXX, and removes it when the server stops. Every run therefore starts
 * from an empty log (a replay of an earlier run's records would cost time at start-up and
 * its compactions would land in the measurement), and DIR itself is never written to or
 * removed. DIR is created, with its missing parents, if it does not exist.
 */
#ifndef ARPC_BENCH_LOGDIR_H
#define ARPC_BENCH_LOGDIR_H

#include <stddef.h>

/* Creates parent if missing and a fresh subdirectory in it, whose path goes to path.
 * Returns 0, or -1 after printing why on stderr. */
int bench_logdir_create(const char *parent, char *path, size_t len);

/* Removes path and everything in it (no symbolic link is followed). Prints what it could not
 * remove. */
void bench_logdir_remove(const char *path);

#endif
