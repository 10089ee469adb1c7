/*
 * Log-linear histogram. Bucket layout (S = ARPC_HIST_SUB_BITS = 7):
 *
 *   v < 256:   bucket v (exact)
 *   v >= 256:  k = floor(log2 v) >= 8, width = 2^(k-7),
 *              bucket 256 + (k-8)*128 + (v >> (k-7)) - 128
 *
 * i.e. octave k holds the 128 values (128..255) << (k-7), each standing for `width` values.
 * Computing the bucket is one count-leading-zeros, a shift and an add: O(1), no search.
 */
#include "base/histogram.h"

#include <string.h>

void arpc_hist_init(arpc_hist *h)
{
    memset(h, 0, sizeof(*h));
    atomic_init(&h->h_min.st_v, UINT64_MAX);
}

unsigned arpc_hist_bucket_of(uint64_t ns)
{
    if (ns > ARPC_HIST_MAX_TRACKED)
        ns = ARPC_HIST_MAX_TRACKED;
    if (ns < ARPC_HIST_LINEAR)
        return (unsigned)ns;
    unsigned k = 63u - (unsigned)__builtin_clzll(ns);
    unsigned shift = k - ARPC_HIST_SUB_BITS;
    return ARPC_HIST_LINEAR + (k - ARPC_HIST_SUB_BITS - 1) * ARPC_HIST_SUB_COUNT +
           (unsigned)(ns >> shift) - ARPC_HIST_SUB_COUNT;
}

uint64_t arpc_hist_bucket_low(unsigned bucket)
{
    if (bucket < ARPC_HIST_LINEAR)
        return bucket;
    unsigned j = bucket - ARPC_HIST_LINEAR;
    unsigned shift = j / ARPC_HIST_SUB_COUNT + 1; /* k - 7 */
    uint64_t sub = ARPC_HIST_SUB_COUNT + j % ARPC_HIST_SUB_COUNT;
    return sub << shift;
}

uint64_t arpc_hist_bucket_high(unsigned bucket)
{
    if (bucket < ARPC_HIST_LINEAR)
        return bucket;
    unsigned shift = (bucket - ARPC_HIST_LINEAR) / ARPC_HIST_SUB_COUNT + 1;
    return arpc_hist_bucket_low(bucket) + (UINT64_C(1) << shift) - 1;
}

void arpc_hist_record(arpc_hist *h, uint64_t ns)
{
    arpc_stat_inc(&h->h_counts[arpc_hist_bucket_of(ns)]);
    arpc_stat_inc(&h->h_count);
    arpc_stat_add(&h->h_sum, ns);
    if (ns < arpc_stat_get(&h->h_min))
        atomic_store_explicit(&h->h_min.st_v, ns, memory_order_relaxed);
    if (ns > arpc_stat_get(&h->h_max))
        atomic_store_explicit(&h->h_max.st_v, ns, memory_order_relaxed);
}

void arpc_hist_merge(arpc_hist *dst, const arpc_hist *src)
{
    for (unsigned i = 0; i < ARPC_HIST_BUCKETS; i++)
        arpc_stat_add(&dst->h_counts[i], arpc_stat_get(&src->h_counts[i]));
    arpc_stat_add(&dst->h_count, arpc_stat_get(&src->h_count));
    arpc_stat_add(&dst->h_sum, arpc_stat_get(&src->h_sum));
    uint64_t lo = arpc_stat_get(&src->h_min), hi = arpc_stat_get(&src->h_max);
    if (lo < arpc_stat_get(&dst->h_min))
        atomic_store_explicit(&dst->h_min.st_v, lo, memory_order_relaxed);
    if (hi > arpc_stat_get(&dst->h_max))
        atomic_store_explicit(&dst->h_max.st_v, hi, memory_order_relaxed);
}

uint64_t arpc_hist_count(const arpc_hist *h) { return arpc_stat_get(&h->h_count); }
uint64_t arpc_hist_sum(const arpc_hist *h) { return arpc_stat_get(&h->h_sum); }

uint64_t arpc_hist_count_le(const arpc_hist *h, uint64_t ns)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < ARPC_HIST_BUCKETS && arpc_hist_bucket_high(i) <= ns; i++)
        n += arpc_stat_get(&h->h_counts[i]);
    return n;
}

/* The midpoint of a bucket: the estimate with the smallest worst-case error. */
static uint64_t bucket_mid(unsigned bucket)
{
    uint64_t lo = arpc_hist_bucket_low(bucket);
    return lo + (arpc_hist_bucket_high(bucket) - lo) / 2;
}

uint64_t arpc_hist_percentile(const arpc_hist *h, double pct)
{
    uint64_t count = arpc_stat_get(&h->h_count);
    if (count == 0)
        return 0;
    uint64_t min = arpc_stat_get(&h->h_min), max = arpc_stat_get(&h->h_max);
    if (!(pct > 0.0)) /* also catches NaN */
        return min;
    if (pct >= 100.0)
        return max;
    /* ceil without libm: the tests link no libm, and the rank is an integer anyway. */
    double want = pct / 100.0 * (double)count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > count)
        rank = count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < ARPC_HIST_BUCKETS; i++) {
        seen += arpc_stat_get(&h->h_counts[i]);
        if (seen >= rank) {
            uint64_t v = bucket_mid(i);
            return v < min ? min : v > max ? max : v;
        }
    }
    return max; /* a reader racing the writer may see h_count ahead of the buckets */
}

double arpc_hist_mean(const arpc_hist *h)
{
    uint64_t count = arpc_stat_get(&h->h_count);
    return count == 0 ? 0.0 : (double)arpc_stat_get(&h->h_sum) / (double)count;
}
