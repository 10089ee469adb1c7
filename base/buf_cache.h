/*
 * A small bounded cache of large blocks kept for reuse (bulk payload buffers).
 *
 * Why: a connection moving large frames allocates and frees a buffer of the same size for
 * every call, often on different threads; the allocator then hands the pages back to the
 * kernel (madvise, with a TLB shootdown on every core running the process) and the next
 * call faults them in again. A few blocks kept per connection stop that.
 *
 * Blocks are ordinary arpc_malloc blocks (through the allocator hook): whoever ends up with
 * one may arpc_free it instead of giving it back. At most ARPC_BUF_CACHE_SLOTS blocks and
 * max_bytes bytes of capacity are held; a block given back beyond that is freed.
 *
 * Threads: arpc_buf_get and arpc_buf_put may be called from any thread, lock-free (one
 * exchange or compare-and-swap per slot looked at; nobody waits for anybody).
 * arpc_buf_cache_close is the owner's: afterwards nothing is held and every later put
 * frees its block (a put racing with the close does not leak: see buf_cache.c).
 */
#ifndef ARPC_BASE_BUF_CACHE_H
#define ARPC_BASE_BUF_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* A pipelined window of large calls frees its bodies and replies in bursts: with 8 slots a
 * window of 64 calls of 64 KiB overflowed them, freed a third of its blocks and allocated
 * them again (glibc trimming and faulting the pages in: docs/PERFORMANCE.md). */
#define ARPC_BUF_CACHE_SLOTS 32
/* Blocks smaller than this are never kept (the allocator serves them well). */
#define ARPC_BUF_CACHE_MIN (16u * 1024u)
/* Fresh blocks for the cache are rounded up to this, so buffers for the same payload in
 * different roles (a request's body, its reply's frame) fit each other. */
#define ARPC_BUF_CACHE_GRANULE 4096u

struct arpc_buf_cache {
    _Atomic(void *) bc_slots[ARPC_BUF_CACHE_SLOTS]; /* a held block, or NULL */
    atomic_size_t bc_bytes;                          /* capacity held (reserved before a slot is taken) */
    atomic_bool bc_closed;
    size_t bc_max_bytes;
};

/* An empty, open cache holding at most max_bytes. No allocation. */
void arpc_buf_cache_init(struct arpc_buf_cache *c, size_t max_bytes);

/* A block of at least size bytes: a held one no more than twice as large (so a small frame
 * does not pin a huge block), else a fresh arpc_malloc of size (from ARPC_BUF_CACHE_MIN on,
 * rounded up to ARPC_BUF_CACHE_GRANULE). *cap receives its capacity
 * (what to pass to arpc_buf_put). NULL without memory. Any thread. */
void *arpc_buf_get(struct arpc_buf_cache *c, size_t size, size_t *cap);

/* Gives block (capacity cap, as arpc_buf_get said; or the size it was arpc_malloc'ed with)
 * back: kept if the cache is open and has room, else freed. NULL is ignored. Any thread. */
void arpc_buf_put(struct arpc_buf_cache *c, void *block, size_t cap);

/* Frees every held block; later puts free theirs. Idempotent. The owner's thread. */
void arpc_buf_cache_close(struct arpc_buf_cache *c);

/* Frees every block held now; the cache stays open (later puts are kept again). For an owner
 * gone quiet, so that it holds nothing while idle. Any thread, lock-free (an exchange per
 * slot). */
void arpc_buf_cache_trim(struct arpc_buf_cache *c);

/* Blocks held right now (for tests and statistics; a snapshot). */
unsigned arpc_buf_cache_held(struct arpc_buf_cache *c);

#endif
