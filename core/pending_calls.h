/*
 * The client's pending calls: xid -> call, for the calls sent on the current connection.
 * Owned by the client's loop thread (no lock, no atomics on its behalf).
 *
 * Two levels, both holding the calls themselves (a call's key is the xid it was last sent with,
 * call_xid, in its record, so no entry is allocated per call):
 *   - a ring of PENDING_RING_SLOTS call pointers indexed by the xid's low bits. xids are
 *     consecutive, so a window of calls up to the ring's size, answered about in order, sits
 *     there one to a slot: a put, a lookup and a removal are one load and one store, where
 *     ck_rhs's probes and callbacks cost ~350 instructions a call (docs/PERFORMANCE.md);
 *   - Concurrency Kit's ck_rhs (Robin Hood hashing with backward-shift deletion: no
 *     tombstones, so xids that only grow do not lengthen probes the way they did with ck_ht)
 *     for every call whose ring slot was taken: a larger window, a straggler still holding
 *     its slot, a caller's xid (core/client_direct.c) meeting a loop's.
 * A lookup tries the call in the xid's ring slot first (its xid must match), then ck_rhs.
 */
#ifndef ARPC_CORE_PENDING_CALLS_H
#define ARPC_CORE_PENDING_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ck_rhs.h>

struct client_call;

/* A power of 2: 8 KiB of pointers per client, whatever its window. */
#define PENDING_RING_SLOTS 1024u

struct pending_calls {
    struct client_call **pc_ring; /* PENDING_RING_SLOTS; NULL: empty slot */
    size_t pc_ring_count;
    ck_rhs_t pc_table;            /* the calls whose ring slot was taken */
    bool pc_live; /* initialised and not finished: pending_fini may be called twice */
};

struct pending_iter {
    size_t pi_slot;               /* the ring's next slot; past its end: ck_rhs */
    ck_rhs_iterator_t pi_it;
};

/* initial: ck_rhs's initial size. ARPC_OK or ARPC_ENOMEM. */
int pending_init(struct pending_calls *p, size_t initial);
void pending_fini(struct pending_calls *p);
/* call_xid(call) is its key: non-zero, not in the table (xids are never reused, so this is
 * not checked: one probe, not two), and unchanged while the call is in. ARPC_OK or
 * ARPC_ENOMEM. */
int pending_put(struct pending_calls *p, struct client_call *call);
/* The call sent with xid, or NULL. */
struct client_call *pending_get(struct pending_calls *p, uint64_t xid);
/* Removes and returns the call sent with xid, or NULL. */
struct client_call *pending_take(struct pending_calls *p, uint64_t xid);
size_t pending_count(struct pending_calls *p);
/* Takes every call out of the table and calls fn(call, arg) for it. fn must not use the
 * table. */
void pending_drain(struct pending_calls *p, void (*fn)(struct client_call *call, void *arg), void *arg);
/* Iteration: pending_iter_init, then pending_next until false. No changes meanwhile. */
void pending_iter_init(struct pending_iter *it);
bool pending_next(struct pending_calls *p, struct pending_iter *it, struct client_call **call);

#endif
