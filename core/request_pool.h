/*
 * Request objects kept for reuse, so that a call in steady state does not allocate one.
 *
 * Why: a request is allocated on the loop thread and, with handlers on workers, is mostly
 * freed on a worker; the allocator then moves each block between the threads' caches and
 * arenas (perf of the pipelined pool run: _int_malloc + _int_free about 10% of the server),
 * and for payloads of a few KiB it also hands the arena's top back to the kernel and faults
 * it in again (madvise, TLB shootdowns, page faults: the 4 KiB bulk run).
 *
 * Size classes: class k holds blocks of REQUEST_POOL_HEADROOM + (256 << k) bytes (512 B up to
 * 32.25 KiB), so a request whose own fields fit the headroom carries a payload of up to
 * 256 << k bytes inline. A size over the largest class is an ordinary allocation (payloads
 * that large are read into a buffer of their own anyway: core/conn_body.c).
 *
 * Threads: taking is the loop thread's: it pops from a list only it touches and, when that
 * is empty, takes every block of the class given back so far at once (one exchange). Giving
 * back is any thread's: one CAS push (base/stack_fifo.h), never waiting for anybody.
 *
 * Bound: the pool makes at most REQUEST_POOL_SMALL_MAX blocks of class 0 and
 * REQUEST_POOL_LARGE_MAX of each other class. A block taken beyond that (more alive at once:
 * a burst) is an ordinary allocation, freed when it is done; so whatever the burst, the pool
 * never holds more than its bound (256 KiB + 64 of each larger class, 4.3 MiB, in all).
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

#define REQUEST_POOL_HEADROOM 256u
#define REQUEST_POOL_CLASSES 8
#define REQUEST_POOL_SMALL_MAX 512u
#define REQUEST_POOL_LARGE_MAX 64u
#define REQUEST_POOL_NONE (-1) /* a block that is not the pool's */

/* The size of class k's blocks. */
static inline size_t request_pool_block(int k) { return REQUEST_POOL_HEADROOM + ((size_t)256 << k); }

struct request_pool_class {
    ck_stack_t pc_returned;    /* any thread: blocks given back, not yet taken by the loop */
    ck_stack_entry_t *pc_free; /* loop thread: blocks ready to hand out */
    unsigned pc_made;          /* loop thread: blocks made for the class (bounded) */
};

struct request_pool {
    struct request_pool_class rp_class[REQUEST_POOL_CLASSES];
};

/* Loop thread: a block of at least size bytes (contents undefined), or NULL without memory.
 * *cls receives its class, or REQUEST_POOL_NONE: pass it to request_pool_put either way. */
void *request_pool_get(struct request_pool *p, size_t size, int *cls);

/* Any thread: gives back a block request_pool_get returned, with the class it said. */
void request_pool_put(struct request_pool *p, void *block, int cls);

/* Frees every block given back. No block may be out, and nobody may put or get meanwhile. */
void request_pool_fini(struct request_pool *p);

/* Blocks of class k the loop has ready plus those given back (for tests; loop thread). */
unsigned request_pool_held(struct request_pool *p, int k);

#endif
