/*
 * bench/plot.h: the two latency distributions as a PNG, drawn by gnuplot.
 *
 * bench_plot: percentile curves (HDR-style): x is 1/(1 - percentile) on a log axis, labelled 50%, 90%,
 * 99%, ...; y is the latency in microseconds on a log axis. When gnuplot is not installed
 * it says so on stderr and returns 0: a missing plot does not fail the benchmark.
 */
#ifndef ARPC_BENCH_PLOT_H
#define ARPC_BENCH_PLOT_H

#include "bench.h"

/* Returns 0 (plot written, or gnuplot absent), or -1 after printing why. */
int bench_plot(const char *png, const char *title, const arpc_hist *arpc, const arpc_hist *base,
               const char *base_label);

/* One step of a rate sweep: achieved calls/s and its latency percentiles (us). */
struct bench_plot_point {
    double calls_per_s, p50_us, p99_us, p999_us;
};

/* Latency (p50, p99, p99.9; log y) against achieved throughput (x). Same returns. */
int bench_plot_sweep(const char *png, const char *title, const struct bench_plot_point *pts, size_t n);

#endif
