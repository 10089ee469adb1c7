/*
 * base/stat.h: a statistics counter with one writer and any number of readers.
 *
 * The writer is the one thread that owns what is counted (a loop thread for its connections
 * and calls); it adds with a relaxed load and a relaxed store, which is two plain moves: no
 * lock prefix, no read-modify-write on a shared line, nothing another thread waits for.
 * Readers on any thread load relaxed and see a recent value, never a torn one. Two writers at
 * once would lose counts (never corrupt memory): give each writer its own counter and sum
 * them on read instead.
 */
#ifndef ARPC_BASE_STAT_H
#define ARPC_BASE_STAT_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct arpc_stat {
    _Atomic uint64_t st_v;
} arpc_stat;

/* The writer only. n may be a negative amount cast to uint64_t (a gauge going down). */
static inline void arpc_stat_add(arpc_stat *c, uint64_t n)
{
    atomic_store_explicit(&c->st_v, atomic_load_explicit(&c->st_v, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void arpc_stat_inc(arpc_stat *c) { arpc_stat_add(c, 1); }

/* Any thread. */
static inline uint64_t arpc_stat_get(const arpc_stat *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)&c->st_v, memory_order_relaxed);
}

#endif
