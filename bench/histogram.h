/*
 * bench/histogram.h: a log-linear latency histogram (HDR-style).
 *
 * Values are nanoseconds. 0..255 ns are counted exactly; above that every power-of-two range
 * [2^k, 2^(k+1)) is split into 128 equal sub-buckets, so a bucket is at most 1/128 (0.78%)
 * of its lower bound wide, and a percentile read back as the bucket's midpoint is within
 * 0.4% of the true sample. The top tracked value is 2^36 - 1 ns (68.7 s); larger values are
 * counted in the top bucket (min and max stay exact). Recording is O(1) and allocation-free;
 * the whole histogram is a fixed array of 3840 counters (30 KiB).
 *
 * Not thread-safe: each thread records into its own histogram; merge them afterwards.
 */
#ifndef ARPC_BENCH_HISTOGRAM_H
#define ARPC_BENCH_HISTOGRAM_H

#include <stdint.h>

#define BENCH_HIST_SUB_BITS 7                               /* 128 sub-buckets per octave */
#define BENCH_HIST_SUB_COUNT (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_LINEAR (2u * BENCH_HIST_SUB_COUNT)       /* 0..255 ns counted exactly */
#define BENCH_HIST_TOP_BITS 36                              /* largest tracked: 2^36 - 1 ns */
#define BENCH_HIST_MAX_TRACKED ((UINT64_C(1) << BENCH_HIST_TOP_BITS) - 1)
#define BENCH_HIST_BUCKETS \
    (BENCH_HIST_LINEAR + (BENCH_HIST_TOP_BITS - BENCH_HIST_SUB_BITS - 1) * BENCH_HIST_SUB_COUNT)

typedef struct bench_hist {
    uint64_t h_count;
    uint64_t h_min; /* exact; UINT64_MAX while empty */
    uint64_t h_max; /* exact; 0 while empty */
    double h_sum;   /* for the mean; a double cannot overflow at 60 s x 2^64 samples */
    uint64_t h_counts[BENCH_HIST_BUCKETS];
} bench_hist;

/* Empties h. */
void bench_hist_init(bench_hist *h);

/* Counts one sample of ns nanoseconds. */
void bench_hist_record(bench_hist *h, uint64_t ns);

/* Adds every sample of src to dst. */
void bench_hist_merge(bench_hist *dst, const bench_hist *src);

/* The sample at percentile pct (0..100): the one of rank ceil(pct/100 * count) (at least 1)
 * in sorted order, read back as the midpoint of its bucket clamped to [min, max]. pct 0 is
 * the exact min, pct 100 the exact max. 0 for an empty histogram. */
uint64_t bench_hist_percentile(const bench_hist *h, double pct);

/* The same percentile in microseconds, as the reports print it. */
static inline double bench_hist_us(const bench_hist *h, double pct)
{
    return (double)bench_hist_percentile(h, pct) / 1e3;
}

/* Mean in ns (0 when empty). */
double bench_hist_mean(const bench_hist *h);

/* Bucket arithmetic, exposed for the tests: the bucket of a value, and the inclusive range
 * of values a bucket holds. */
unsigned bench_hist_bucket_of(uint64_t ns);
uint64_t bench_hist_bucket_low(unsigned bucket);
uint64_t bench_hist_bucket_high(unsigned bucket);

#endif
