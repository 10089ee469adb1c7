/*
 * The client's pending calls: xid -> call, for the calls sent on the current connection.
 * Owned by the client's loop thread (no lock, no atomics on its behalf).
 *
 * An array of call pointers, 8 bytes a slot (memory per outstanding call counts: at a window
 * of 65,536 calls the table is 16 B of each call's cost, where ck_rhs's 16-byte slots at 80%
 * load were 32 B). A call's home slot is its xid modulo the capacity (a power of two): xids
 * are consecutive, so calls sent together sit in consecutive slots without colliding.
 * Collisions (a call left behind by a slow reply, once later xids wrap round to its slot)
 * are resolved by Robin Hood linear probing on the distance from home, read from the call's
 * own xid: a lookup stops at the first call nearer its home than the probe is, so a miss (a
 * late reply) costs a few probes even in a long run of occupied slots. Deletion shifts the
 * following calls back (no tombstones: xids only grow).
 *
 * Size: grows (doubles) before it is 3/4 full; halves once it is 1/8 full, down to the size
 * it started with, so a client that once had a burst of calls out gives that memory back as
 * they finish.
 */
#ifndef ARPC_CORE_PENDING_CALLS_H
#define ARPC_CORE_PENDING_CALLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct client_call;

struct pending_calls {
    struct client_call **pc_slots; /* NULL: empty slot */
    size_t pc_mask;                /* capacity - 1 */
    size_t pc_count;
    size_t pc_min_cap;             /* never shrinks below its first capacity */
};

struct pending_iter {
    size_t pi_pos;
};

/* Room for initial calls before the first growth. ARPC_OK or ARPC_ENOMEM. */
int pending_init(struct pending_calls *p, size_t initial);
/* Frees the table (its calls are not touched). Idempotent. */
void pending_fini(struct pending_calls *p);
/* call->cc_xid is its key: non-zero, and not in the table (xids are never reused, so this is
 * not checked: one probe, not two). ARPC_OK or ARPC_ENOMEM. */
int pending_put(struct pending_calls *p, struct client_call *call);
/* The call sent with xid, or NULL. */
struct client_call *pending_get(struct pending_calls *p, uint64_t xid);
/* Removes and returns the call sent with xid, or NULL. May shrink the table. */
struct client_call *pending_take(struct pending_calls *p, uint64_t xid);
size_t pending_count(struct pending_calls *p);
/* The table's capacity in calls (tests, statistics). */
size_t pending_capacity(struct pending_calls *p);
/* Takes every call out of the table and calls fn(call, arg) for it. fn must not use the
 * table. */
void pending_drain(struct pending_calls *p, void (*fn)(struct client_call *call, void *arg), void *arg);
/* Iteration: pending_iter_init, then pending_next until false. No changes meanwhile. */
void pending_iter_init(struct pending_iter *it);
bool pending_next(struct pending_calls *p, struct pending_iter *it, struct client_call **call);

#endif
