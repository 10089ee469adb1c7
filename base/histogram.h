/*
 * base/histogram.h: a log-linear latency histogram (HDR-style), for arpc-bench's reports and
 * the server's per-method latencies.
 *
 * Values are nanoseconds. 0..255 ns are counted exactly; above that every power-of-two range
 * [2^k, 2^(k+1)) is split into 128 equal sub-buckets, so a bucket is at most 1/128 (0.78%)
 * of its lower bound wide, and a percentile read back as the bucket's midpoint is within
 * 0.4% of the true sample. The top tracked value is 2^36 - 1 ns (68.7 s); larger values are
 * counted in the top bucket (min and max stay exact). Recording is O(1) and allocation-free;
 * the whole histogram is a fixed array of 3840 counters (30 KiB).
 *
 * One writer, any readers: the thread that owns a histogram records into it (each field is
 * a base/stat.h single-writer counter: plain loads and stores, no lock, no read-modify-write),
 * and any thread may read or merge it meanwhile, seeing recent counts (a reader may see a
 * sample in its bucket before h_count, so the readers below work from the buckets). Several
 * recording threads each record into their own histogram and merge them on read.
 */
#ifndef ARPC_BASE_HISTOGRAM_H
#define ARPC_BASE_HISTOGRAM_H

#include <stdint.h>

#include "base/stat.h"

#define ARPC_HIST_SUB_BITS 7                               /* 128 sub-buckets per octave */
#define ARPC_HIST_SUB_COUNT (1u << ARPC_HIST_SUB_BITS)
#define ARPC_HIST_LINEAR (2u * ARPC_HIST_SUB_COUNT)       /* 0..255 ns counted exactly */
#define ARPC_HIST_TOP_BITS 36                              /* largest tracked: 2^36 - 1 ns */
#define ARPC_HIST_MAX_TRACKED ((UINT64_C(1) << ARPC_HIST_TOP_BITS) - 1)
#define ARPC_HIST_BUCKETS \
    (ARPC_HIST_LINEAR + (ARPC_HIST_TOP_BITS - ARPC_HIST_SUB_BITS - 1) * ARPC_HIST_SUB_COUNT)

typedef struct arpc_hist {
    arpc_stat h_count;
    arpc_stat h_min; /* exact; UINT64_MAX while empty */
    arpc_stat h_max; /* exact; 0 while empty */
    arpc_stat h_sum; /* ns; wraps after 584 years of summed latency */
    arpc_stat h_counts[ARPC_HIST_BUCKETS];
} arpc_hist;

/* Empties h. */
void arpc_hist_init(arpc_hist *h);

/* Counts one sample of ns nanoseconds. */
void arpc_hist_record(arpc_hist *h, uint64_t ns);

/* Adds every sample of src to dst. dst's writer only; src may be another thread's. */
void arpc_hist_merge(arpc_hist *dst, const arpc_hist *src);

/* The sample at percentile pct (0..100): the one of rank ceil(pct/100 * count) (at least 1)
 * in sorted order, read back as the midpoint of its bucket clamped to [min, max]. pct 0 is
 * the exact min, pct 100 the exact max. 0 for an empty histogram. */
uint64_t arpc_hist_percentile(const arpc_hist *h, double pct);

/* Mean in ns (0 when empty). */
double arpc_hist_mean(const arpc_hist *h);

/* Samples counted, and their sum in ns. */
uint64_t arpc_hist_count(const arpc_hist *h);
uint64_t arpc_hist_sum(const arpc_hist *h);

/* Samples of at most ns nanoseconds, counted by whole buckets: a bucket straddling ns is left
 * out, so the answer may be short by the samples of one bucket (within 0.78% of ns). For
 * cumulative (Prometheus "le") buckets at bounds of one's choosing. */
uint64_t arpc_hist_count_le(const arpc_hist *h, uint64_t ns);

/* Bucket arithmetic, exposed for the tests: the bucket of a value, and the inclusive range
 * of values a bucket holds. */
unsigned arpc_hist_bucket_of(uint64_t ns);
uint64_t arpc_hist_bucket_low(unsigned bucket);
uint64_t arpc_hist_bucket_high(unsigned bucket);

#endif
