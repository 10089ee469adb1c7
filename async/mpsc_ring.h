/*
 * arpc_mpsc_ring: a bounded multi-producer / single-consumer queue of (fn, arg) tasks on a
 * Concurrency Kit ring, shared by the loop's submit queue and the actors' mailboxes.
 *
 * It adds to ck_ring what both users need:
 *  - close(): after it returns, no push succeeds and no push is still in flight, so the
 *    consumer can take a final drain knowing nothing will arrive after it ("accepted tasks
 *    run exactly once");
 *  - an overflow list for pushes made by the consumer thread itself when the ring is full
 *    (it cannot wait for itself to make room);
 *  - the TSan annotations for the hand-off (base/tsan.h).
 *
 * Waking the consumer is the caller's business (ev_async for the loop, ck_ec for actors):
 * push reports ARPC_EAGAIN when the ring is full so the caller can wake the consumer and retry.
 */
#ifndef ARPC_ASYNC_MPSC_RING_H
#define ARPC_ASYNC_MPSC_RING_H

#include <ck_ring.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef void (*arpc_mpsc_fn)(void);

struct arpc_mpsc_task {
    arpc_mpsc_fn fn; /* the caller's typed function, cast back before the call */
    void *arg;
};

struct arpc_mpsc_overflow; /* consumer-thread-only list node */

struct arpc_mpsc_ring {
    struct ck_ring q_ring;
    struct arpc_mpsc_task *q_slots;
    atomic_int q_closed;
    atomic_int q_pushers; /* pushes between their closed check and their publish */
    struct arpc_mpsc_overflow *q_over_head, *q_over_tail; /* consumer thread only */
};

/* size is rounded up to a power of two (at least 4). Returns ARPC_OK or ARPC_ENOMEM. */
int arpc_mpsc_ring_init(struct arpc_mpsc_ring *q, unsigned size);

/* Frees the ring. Tasks still queued are dropped: drain first. */
void arpc_mpsc_ring_fini(struct arpc_mpsc_ring *q);

/* Any producer thread. ARPC_OK, ARPC_EAGAIN (ring full: wake the consumer, then retry),
 * ARPC_ESHUTDOWN (closed). */
int arpc_mpsc_ring_try_push(struct arpc_mpsc_ring *q, arpc_mpsc_fn fn, void *arg);

/* Consumer thread only: never fails for lack of room (overflows to a local list).
 * ARPC_OK, ARPC_ESHUTDOWN (closed), ARPC_ENOMEM (overflow node). */
int arpc_mpsc_ring_push_local(struct arpc_mpsc_ring *q, arpc_mpsc_fn fn, void *arg);

/* Consumer thread only: takes the oldest task. False when empty. */
bool arpc_mpsc_ring_pop(struct arpc_mpsc_ring *q, struct arpc_mpsc_task *out);

/* Any thread: refuses further pushes and waits until pushes already past their check have
 * published. Idempotent. */
void arpc_mpsc_ring_close(struct arpc_mpsc_ring *q);

bool arpc_mpsc_ring_is_closed(struct arpc_mpsc_ring *q);

#endif
