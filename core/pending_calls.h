/*
 * The client's pending calls: xid -> call, for the calls sent on the current connection.
 * Owned by the client's loop thread (no lock, no atomics on its behalf).
 *
 * Two levels, both holding the calls themselves (a call's key is the xid it was last sent with,
 * call_xid, in its record, so no entry is allocated per call):
 *   - three rings of call pointers, one for each sequence of xids: the loop's, the numbered
 *     calls' (their seqs, with ARPC_XID_SEQ_BIT, whoever wrote them: core/client_internal.h)
 *     and the callers' (ARPC_XID_CALLER_BIT, core/client_direct.c), each indexed by the xid's
 *     low bits. Each sequence is consecutive, so a window of calls answered about in
 *     order sits in its ring one to a slot: a put, a lookup and a removal are one load and one
 *     store, where ck_rhs's probes and callbacks cost ~350 instructions a call
 *     (docs/PERFORMANCE.md). A ring starts at PENDING_RING_SLOTS and doubles when a put finds
 *     its slot taken while the ring is at least half full (the window outgrew it): re-indexing
 *     moves each call from slot i to i or i + size, so it never collides. A ring grows with
 *     the window, 8 B a slot, ~8 B a call at a full power of two;
 *   - Concurrency Kit's ck_rhs (Robin Hood hashing with backward-shift deletion: no
 *     tombstones, so xids that only grow do not lengthen probes the way they did with ck_ht)
 *     for the calls that do not fit their ring: when a put finds its slot taken in a ring less
 *     than half full, the older of the two calls (the smaller xid: a straggler pinning the
 *     ring's span) moves to ck_rhs, so one slow call never makes a ring grow; also every call
 *     a ring could not take for want of memory to grow.
 * A lookup tries the call in the xid's ring slot first (its xid must match), then ck_rhs.
 * A grown ring goes back to its first size when its last call is taken (a burst's memory
 * given back; a steady window keeps its ring: 8 B a slot).
 */
#ifndef ARPC_CORE_PENDING_CALLS_H
#define ARPC_CORE_PENDING_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ck_rhs.h>

struct client_call;

/* A ring's first size, a power of 2: 4 KiB of pointers. */
#define PENDING_RING_SLOTS 512u

struct pending_ring {
    struct client_call **pr_slots; /* pr_mask + 1 of them, a power of 2; NULL: empty slot */
    size_t pr_mask;
    size_t pr_count;               /* slots in use */
};

/* Rings by the xid's top two bits (pending_calls.c: ring_of). */
#define PENDING_RINGS 3

struct pending_calls {
    struct pending_ring pc_rings[PENDING_RINGS]; /* [0] the loop's xids, [1] the numbered calls', [2] the callers' */
    ck_rhs_t pc_table;               /* the calls that did not fit their ring */
    bool pc_live; /* initialised and not finished: pending_fini may be called twice */
};

struct pending_iter {
    unsigned pi_ring;             /* the ring being walked; PENDING_RINGS: ck_rhs */
    size_t pi_slot;               /* that ring's next slot */
    ck_rhs_iterator_t pi_it;
};

/* initial: ck_rhs's initial size (it holds only the calls that do not fit a ring). ARPC_OK or
 * ARPC_ENOMEM. */
int pending_init(struct pending_calls *p, size_t initial);
void pending_fini(struct pending_calls *p);
/* call_xid(call) is its key: non-zero, not in the table (not checked: one probe, not two; a
 * numbered call is put again under the same xid only at a re-send, after its connection's
 * loss took it out), and unchanged while the call is in. May grow a ring or
 * move another call to ck_rhs (lookups find it all the same). ARPC_OK or ARPC_ENOMEM (the
 * call is not in; the others are intact). */
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
