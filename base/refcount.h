/*
 * The one reference count: every shared object in arpc (futures, queues, clients, servers,
 * connections, requests) counts its holders with this.
 *
 * Memory order: get is relaxed (the caller already holds a reference, so the object cannot
 * go away under it); put is acquire-release, so everything any holder wrote happens-before
 * the free by the last one. (Not a release put plus an acquire fence on the last one:
 * ThreadSanitizer does not model stand-alone fences. On x86 both are one locked xadd.)
 */
#ifndef ARPC_BASE_REFCOUNT_H
#define ARPC_BASE_REFCOUNT_H

#include <stdatomic.h>
#include <stdbool.h>

typedef struct arpc_refcount {
    atomic_uint rc_count;
} arpc_refcount;

static inline void arpc_refcount_init(arpc_refcount *r, unsigned n) { atomic_init(&r->rc_count, n); }

/* Sets the count of an object no other thread can reach (e.g. to revive it for a last step). */
static inline void arpc_refcount_set(arpc_refcount *r, unsigned n)
{
    atomic_store_explicit(&r->rc_count, n, memory_order_relaxed);
}

static inline void arpc_refcount_get_n(arpc_refcount *r, unsigned n)
{
    atomic_fetch_add_explicit(&r->rc_count, n, memory_order_relaxed);
}

static inline void arpc_refcount_get(arpc_refcount *r) { arpc_refcount_get_n(r, 1); }

/* Drops n references; true when they were the last (the caller frees the object). */
static inline bool arpc_refcount_put_n(arpc_refcount *r, unsigned n)
{
    return atomic_fetch_sub_explicit(&r->rc_count, n, memory_order_acq_rel) == n;
}

static inline bool arpc_refcount_put(arpc_refcount *r) { return arpc_refcount_put_n(r, 1); }

/* A snapshot, for tests and assertions. */
static inline unsigned arpc_refcount_read(const arpc_refcount *r)
{
    return atomic_load_explicit(&((arpc_refcount *)r)->rc_count, memory_order_relaxed);
}

#endif
