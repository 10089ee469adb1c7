/*
 * bench/plot.h: the two latency distributions as a PNG, drawn by gnuplot.
 *
 * Percentile curves (HDR-style): x is 1/(1 - percentile) on a log axis, labelled 50%, 90%,
 * 99%, ...; y is the latency in microseconds on a log axis. When gnuplot is not installed
 * it says so on stderr and returns 0: a missing plot does not fail the benchmark.
 */
#ifndef ARPC_BENCH_PLOT_H
#define ARPC_BENCH_PLOT_H

#include "bench.h"

/* Returns 0 (plot written, or gnuplot absent), or -1 after printing why. */
int bench_plot(const char *png, const char *title, const bench_hist *arpc, const bench_hist *base,
               const char *base_label);

#endif
