/*
 * Design notes.
 *
 * Closing without losing tasks: a producer announces itself (q_pushers++) before checking
 * q_closed and withdraws after publishing. close() sets q_closed and then waits for
 * q_pushers to reach zero. Both sides use sequentially consistent atomics, so either the
 * producer sees q_closed (and backs out), or close() sees the producer's announcement and
 * waits for its publish; the consumer's drain after close() therefore sees every accepted task.
 *
 * Order: ck_ring keeps producers' publishes in ticket order; the overflow list is only used
 * by the consumer thread, and pop() serves the ring before the overflow, so tasks the consumer
 * pushed to itself while the ring was full may run after tasks producers pushed later. No
 * caller depends on cross-thread order between the consumer and other producers.
 */
#include "async/mpsc_ring.h"

#include "arpc/error.h"
#include "base/backoff.h"
#include "base/tsan.h"
#include "base/alloc.h"

struct arpc_mpsc_overflow {
    struct arpc_mpsc_overflow *next;
    struct arpc_mpsc_task task;
};

CK_RING_PROTOTYPE(arpc_task, arpc_mpsc_task)

int arpc_mpsc_ring_init(struct arpc_mpsc_ring *q, unsigned size)
{
    unsigned n = 4;
    while (n < size && n < (1u << 30))
        n <<= 1;
    q->q_slots = arpc_calloc(n, sizeof(*q->q_slots));
    if (q->q_slots == NULL)
        return ARPC_ENOMEM;
    ck_ring_init(&q->q_ring, n);
    atomic_init(&q->q_closed, 0);
    atomic_init(&q->q_pushers, 0);
    q->q_over_head = q->q_over_tail = NULL;
    return ARPC_OK;
}

void arpc_mpsc_ring_fini(struct arpc_mpsc_ring *q)
{
    struct arpc_mpsc_overflow *o = q->q_over_head;
    while (o != NULL) {
        struct arpc_mpsc_overflow *next = o->next;
        arpc_free(o);
        o = next;
    }
    q->q_over_head = q->q_over_tail = NULL;
    arpc_free(q->q_slots);
    q->q_slots = NULL;
}

int arpc_mpsc_ring_try_push(struct arpc_mpsc_ring *q, arpc_mpsc_fn fn, void *arg)
{
    atomic_fetch_add(&q->q_pushers, 1);
    if (atomic_load(&q->q_closed)) {
        atomic_fetch_sub(&q->q_pushers, 1);
        return ARPC_ESHUTDOWN;
    }
    struct arpc_mpsc_task t = {fn, arg};
    /* Everything this thread wrote before the push happens-before the consumer's pop. */
    ARPC_TSAN_RELEASE(q);
    ARPC_TSAN_IGNORE_WRITES_BEGIN();
    bool ok = ck_ring_enqueue_mpsc_arpc_task(&q->q_ring, q->q_slots, &t);
    ARPC_TSAN_IGNORE_WRITES_END();
    atomic_fetch_sub(&q->q_pushers, 1);
    return ok ? ARPC_OK : ARPC_EAGAIN;
}

int arpc_mpsc_ring_push_local(struct arpc_mpsc_ring *q, arpc_mpsc_fn fn, void *arg)
{
    if (atomic_load(&q->q_closed))
        return ARPC_ESHUTDOWN;
    /* Keep FIFO with earlier overflowed tasks: once overflowing, stay on the list. */
    if (q->q_over_head == NULL) {
        int rc = arpc_mpsc_ring_try_push(q, fn, arg);
        if (rc != ARPC_EAGAIN)
            return rc;
    }
    struct arpc_mpsc_overflow *o = arpc_malloc(sizeof(*o));
    if (o == NULL)
        return ARPC_ENOMEM;
    o->next = NULL;
    o->task = (struct arpc_mpsc_task){fn, arg};
    if (q->q_over_tail != NULL)
        q->q_over_tail->next = o;
    else
        q->q_over_head = o;
    q->q_over_tail = o;
    return ARPC_OK;
}

bool arpc_mpsc_ring_pop(struct arpc_mpsc_ring *q, struct arpc_mpsc_task *out)
{
    ARPC_TSAN_IGNORE_READS_BEGIN();
    bool ok = ck_ring_dequeue_mpsc_arpc_task(&q->q_ring, q->q_slots, out);
    ARPC_TSAN_IGNORE_READS_END();
    if (ok) {
        ARPC_TSAN_ACQUIRE(q);
        return true;
    }
    struct arpc_mpsc_overflow *o = q->q_over_head;
    if (o == NULL)
        return false;
    q->q_over_head = o->next;
    if (q->q_over_head == NULL)
        q->q_over_tail = NULL;
    *out = o->task;
    arpc_free(o);
    return true;
}

void arpc_mpsc_ring_close(struct arpc_mpsc_ring *q)
{
    atomic_store(&q->q_closed, 1);
    unsigned attempt = 0;
    while (atomic_load(&q->q_pushers) != 0)
        arpc_backoff_spin(&attempt);
}

bool arpc_mpsc_ring_is_closed(struct arpc_mpsc_ring *q) { return atomic_load(&q->q_closed) != 0; }
