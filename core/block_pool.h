/*
 * Blocks kept for reuse by the server's per-call objects (requests, and the replies that
 * leave them), so that a call in steady state allocates neither.
 * (A client's request frames of 1 to 32 KiB use a pool of their own, core/client_call.c.)
 *
 * Why: a request is allocated on the loop thread and, with handlers on workers, mostly freed
 * on a worker; its reply is allocated on the worker and freed on the loop. The allocator then
 * moves each block between the threads' caches and arenas (perf of the pipelined pool run:
 * _int_malloc + _int_free about 10% of the server), and for blocks of a few KiB it also hands
 * an arena's top back to the kernel and faults it in again (madvise, TLB shootdowns, page
 * faults: the 4 KiB bulk run).
 *
 * Size classes: class k holds blocks of BLOCK_POOL_HEADROOM + (256 << k) bytes (512 B up to
 * 32.25 KiB), so an object whose own fields fit the headroom carries up to 256 << k bytes
 * after them. A size over the largest class is an ordinary allocation (payloads that large
 * are read into, or replied from, buffers of their own: core/conn_body.c).
 *
 * Threads: any thread takes and gives back, lock-free, never waiting for another. Each class
 * is a Concurrency Kit stack: giving back is a push (one CAS); taking is ck_stack_pop_mpmc,
 * a double-width CAS of the head with a generation count every pop bumps, so no ABA. A taker
 * may read the link of a block another thread has just taken (its CAS then fails): safe,
 * because a block of the pool goes back to the allocator only at block_pool_fini. Each
 * class's free list is a base/node_pool (without a double-width CAS it keeps nothing, and
 * every block is an ordinary allocation).
 *
 * Bound: a class makes at most BLOCK_POOL_SMALL_MAX blocks (class 0), or as many of a larger
 * class as BLOCK_POOL_CLASS_BYTES (2 MiB) holds but never fewer than BLOCK_POOL_LARGE_MAX
 * (block_pool_class_max: 481 of class 4, whose blocks carry a 4 KiB payload, so that a pipelined
 * window of 256 such calls, whose replies the reply cache keeps until they are acknowledged,
 * fits), counted when made. A block taken beyond that (more alive at once: a burst) is an
 * ordinary allocation, freed when given back: made on a worker and freed on the loop, such
 * blocks made glibc grow and trim its arenas per call (page faults, madvise) when the bound was
 * 64 of each larger class (docs/PERFORMANCE.md). So whatever the burst, a pool never holds more
 * than its bound (256 KiB + about 2 MiB of each larger class: 14.3 MiB in all). Every block
 * goes through the allocator hook.
 *
 * block_pool_init makes a pool empty and ready. block_pool_fini frees every block given back;
 * it is for when none is out any more (the server's last reference).
 */
#ifndef ARPC_CORE_BLOCK_POOL_H
#define ARPC_CORE_BLOCK_POOL_H

#include <stdatomic.h>
#include <stddef.h>

#include "base/node_pool.h"

#define BLOCK_POOL_HEADROOM 256u
#define BLOCK_POOL_CLASSES 8
#define BLOCK_POOL_SMALL_MAX 512u
#define BLOCK_POOL_LARGE_MAX 64u
#define BLOCK_POOL_CLASS_BYTES ((size_t)2 << 20) /* a larger class's bound, in bytes of blocks */
#define BLOCK_POOL_NONE (-1) /* a block that is not the pool's */

/* The size of class k's blocks. */
static inline size_t block_pool_block(int k) { return BLOCK_POOL_HEADROOM + ((size_t)256 << k); }

struct block_pool_class {
    struct arpc_node_pool pc_free; /* blocks given back (its size unused: the class makes them) */
    atomic_uint pc_made;           /* blocks made for the class (bounded) */
};

struct block_pool {
    struct block_pool_class bp_class[BLOCK_POOL_CLASSES];
};

void block_pool_init(struct block_pool *p);

/* Any thread: a block of at least size bytes (contents undefined), or NULL without memory.
 * *cls receives its class, or BLOCK_POOL_NONE: pass it to block_pool_put either way. */
void *block_pool_get(struct block_pool *p, size_t size, int *cls);

/* Any thread: gives back a block block_pool_get returned, with the class it said. */
void block_pool_put(struct block_pool *p, void *block, int cls);

/* Frees every block given back. None may be out, and nobody may put or get meanwhile. */
void block_pool_fini(struct block_pool *p);

/* Blocks of class k given back and not taken again (for tests: while nobody takes or gives). */
unsigned block_pool_held(struct block_pool *p, int k);

/* The smallest class whose blocks hold size bytes, or BLOCK_POOL_NONE. */
int block_pool_class_of(size_t size);

/* The most blocks class k makes (see the bound above). */
unsigned block_pool_class_max(int k);

/* Blocks made for class k (for tests; a snapshot). */
unsigned block_pool_made(struct block_pool *p, int k);

#endif
