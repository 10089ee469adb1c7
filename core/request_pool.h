/*
 * Request objects kept for reuse, so that a call in steady state does not allocate one.
 *
 * Why: a request is allocated on the loop thread and, with handlers on workers, is mostly
 * freed on a worker; the allocator then moves each block between the threads' caches and
 * arenas (perf of the pipelined pool run: _int_malloc + _int_free about 10% of the server).
 *
 * Blocks are REQUEST_POOL_BLOCK bytes (a request with a small payload inline). Taking is the
 * loop thread's: it pops from a list only it touches and, when that is empty, takes every
 * block given back so far at once (one exchange). Giving back is any thread's: one CAS push
 * (base/stack_fifo.h), never waiting for anybody.
 *
 * Bound: the pool makes at most REQUEST_POOL_MAX blocks. A request taken beyond that (more
 * alive at once, a burst) is an ordinary allocation, freed when it is done, so the pool never
 * holds more than REQUEST_POOL_MAX * REQUEST_POOL_BLOCK bytes (256 KiB) after any burst.
 * Every block goes through the allocator hook.
 *
 * Zero-initialised it is empty and ready. request_pool_fini frees every block given back; it
 * is for when no request is alive any more (the server's last reference).
 */
#ifndef ARPC_CORE_REQUEST_POOL_H
#define ARPC_CORE_REQUEST_POOL_H

#include <ck_stack.h>
#include <stdbool.h>
#include <stddef.h>

#define REQUEST_POOL_BLOCK 512u
#define REQUEST_POOL_MAX 512u

struct request_pool {
    ck_stack_t rp_returned;    /* any thread: blocks given back, not yet taken by the loop */
    ck_stack_entry_t *rp_free; /* loop thread: blocks ready to hand out */
    unsigned rp_made;          /* loop thread: blocks made for the pool (at most REQUEST_POOL_MAX) */
};

/* Loop thread: a block of at least size bytes (contents undefined), or NULL without memory.
 * *pooled says whether it is the pool's (give it back with request_pool_put either way). */
void *request_pool_get(struct request_pool *p, size_t size, bool *pooled);

/* Any thread: gives back a block request_pool_get returned, with the pooled it said. */
void request_pool_put(struct request_pool *p, void *block, bool pooled);

/* Frees every block given back. No block may be out, and nobody may put or get meanwhile. */
void request_pool_fini(struct request_pool *p);

/* Blocks the loop has ready plus those given back (for tests; loop thread, a snapshot). */
unsigned request_pool_held(struct request_pool *p);

#endif
