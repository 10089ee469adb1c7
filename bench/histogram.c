/*
 * Log-linear histogram. Bucket layout (S = BENCH_HIST_SUB_BITS = 7):
 *
 *   v < 256:   bucket v (exact)
 *   v >= 256:  k = floor(log2 v) >= 8, width = 2^(k-7),
 *              bucket 256 + (k-8)*128 + (v >> (k-7)) - 128
 *
 * i.e. octave k holds the 128 values (128..255) << (k-7), each standing for `width` values.
 * Computing the bucket is one count-leading-zeros, a shift and an add: O(1), no search.
 */
#include "histogram.h"

#include <string.h>

void bench_hist_init(bench_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->h_min = UINT64_MAX;
}

unsigned bench_hist_bucket_of(uint64_t ns)
{
    if (ns > BENCH_HIST_MAX_TRACKED)
        ns = BENCH_HIST_MAX_TRACKED;
    if (ns < BENCH_HIST_LINEAR)
        return (unsigned)ns;
    unsigned k = 63u - (unsigned)__builtin_clzll(ns);
    unsigned shift = k - BENCH_HIST_SUB_BITS;
    return BENCH_HIST_LINEAR + (k - BENCH_HIST_SUB_BITS - 1) * BENCH_HIST_SUB_COUNT +
           (unsigned)(ns >> shift) - BENCH_HIST_SUB_COUNT;
}

uint64_t bench_hist_bucket_low(unsigned bucket)
{
    if (bucket < BENCH_HIST_LINEAR)
        return bucket;
    unsigned j = bucket - BENCH_HIST_LINEAR;
    unsigned shift = j / BENCH_HIST_SUB_COUNT + 1; /* k - 7 */
    uint64_t sub = BENCH_HIST_SUB_COUNT + j % BENCH_HIST_SUB_COUNT;
    return sub << shift;
}

uint64_t bench_hist_bucket_high(unsigned bucket)
{
    if (bucket < BENCH_HIST_LINEAR)
        return bucket;
    unsigned shift = (bucket - BENCH_HIST_LINEAR) / BENCH_HIST_SUB_COUNT + 1;
    return bench_hist_bucket_low(bucket) + (UINT64_C(1) << shift) - 1;
}

void bench_hist_record(bench_hist *h, uint64_t ns)
{
    h->h_counts[bench_hist_bucket_of(ns)]++;
    h->h_count++;
    h->h_sum += (double)ns;
    if (ns < h->h_min)
        h->h_min = ns;
    if (ns > h->h_max)
        h->h_max = ns;
}

void bench_hist_merge(bench_hist *dst, const bench_hist *src)
{
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
        dst->h_counts[i] += src->h_counts[i];
    dst->h_count += src->h_count;
    dst->h_sum += src->h_sum;
    if (src->h_min < dst->h_min)
        dst->h_min = src->h_min;
    if (src->h_max > dst->h_max)
        dst->h_max = src->h_max;
}

/* The midpoint of a bucket: the estimate with the smallest worst-case error. */
static uint64_t bucket_mid(unsigned bucket)
{
    uint64_t lo = bench_hist_bucket_low(bucket);
    return lo + (bench_hist_bucket_high(bucket) - lo) / 2;
}

uint64_t bench_hist_percentile(const bench_hist *h, double pct)
{
    if (h->h_count == 0)
        return 0;
    if (!(pct > 0.0)) /* also catches NaN */
        return h->h_min;
    if (pct >= 100.0)
        return h->h_max;
    /* ceil without libm: the tests link no libm, and the rank is an integer anyway. */
    double want = pct / 100.0 * (double)h->h_count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->h_count)
        rank = h->h_count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->h_counts[i];
        if (seen >= rank) {
            uint64_t v = bucket_mid(i);
            return v < h->h_min ? h->h_min : v > h->h_max ? h->h_max : v;
        }
    }
    return h->h_max; /* unreachable while h_count matches the counters */
}

double bench_hist_mean(const bench_hist *h)
{
    return h->h_count == 0 ? 0.0 : h->h_sum / (double)h->h_count;
}
