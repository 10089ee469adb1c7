/*
 * The client's pending-call table: xid -> call. Only the client's loop thread reads or writes
 * it, so matching a reply to its call takes no lock and no atomic.
 *
 * Open addressing with linear probing, Fibonacci hashing of the xid, and backward-shift
 * deletion (no tombstones). We first used Concurrency Kit's ck_ht here; with xids that only
 * grow, each removal leaves a tombstone and inserts probe ever longer runs of them: profiling
 * a pipelined client put ~45% of its CPU in ck_ht's probe loop, even with periodic ck_ht_gc
 * (docs/PERFORMANCE.md). A single-writer table needs none of ck_ht's reader-safety, so this
 * small table does the job better.
 */
#ifndef ARPC_CORE_PENDING_H
#define ARPC_CORE_PENDING_H

#include <stddef.h>
#include <stdint.h>

struct arpc_pending_slot {
    uint64_t s_xid; /* 0 = empty */
    void *s_call;
};

struct arpc_pending {
    struct arpc_pending_slot *p_slots;
    size_t p_mask;  /* capacity - 1; capacity is a power of two */
    unsigned p_shift; /* 64 - log2(capacity), for Fibonacci hashing */
    size_t p_count;
};

int arpc_pending_init(struct arpc_pending *p, size_t initial);
void arpc_pending_fini(struct arpc_pending *p);
/* xid must not be 0. ARPC_OK, ARPC_ENOMEM, ARPC_EBUSY (xid already present). */
int arpc_pending_put(struct arpc_pending *p, uint64_t xid, void *call);
/* Removes and returns the call for xid, or NULL. */
void *arpc_pending_take(struct arpc_pending *p, uint64_t xid);
/* Removes every entry, calling fn(call, arg) for each (order unspecified). fn must not touch
 * the table. */
void arpc_pending_drain(struct arpc_pending *p, void (*fn)(void *call, void *arg), void *arg);
static inline size_t arpc_pending_count(const struct arpc_pending *p) { return p->p_count; }

#endif
