#include "core/handoff.h"

#include <stddef.h>

#include "base/tsan.h"

static void handoff_on_async(struct ev_loop *ev, ev_async *w, int revents)
{
    (void)ev;
    (void)revents;
    arpc_handoff_drain(w->data);
}

void arpc_handoff_start(struct arpc_handoff *h, struct ev_loop *ev, arpc_handoff_fn deliver, void *owner)
{
    ck_stack_init(&h->h_stack);
    atomic_init(&h->h_wake_sent, 0);
    h->h_ev = ev;
    h->h_deliver = deliver;
    h->h_owner = owner;
    ev_async_init(&h->h_async, handoff_on_async);
    h->h_async.data = h;
    ev_async_start(ev, &h->h_async);
}

void arpc_handoff_stop(struct arpc_handoff *h) { ev_async_stop(h->h_ev, &h->h_async); }

void arpc_handoff_push(struct arpc_handoff *h, ck_stack_entry_t *item)
{
    /* Everything written to the item happens-before its delivery (base/tsan.h). */
    ARPC_TSAN_RELEASE(h);
    ARPC_TSAN_IGNORE_WRITES_BEGIN();
    ck_stack_push_upmc(&h->h_stack, item);
    ARPC_TSAN_IGNORE_WRITES_END();
    /* After the push, seq_cst: either the loop's reset (before its pop) comes after our
     * exchange and its pop sees our item, or we see 0 and send a new wake-up. */
    if (atomic_exchange(&h->h_wake_sent, 1) == 0)
        ev_async_send(h->h_ev, &h->h_async);
}

void arpc_handoff_drain(struct arpc_handoff *h)
{
    atomic_store(&h->h_wake_sent, 0);
    ARPC_TSAN_IGNORE_READS_BEGIN();
    ck_stack_entry_t *list = ck_stack_batch_pop_upmc(&h->h_stack);
    ARPC_TSAN_IGNORE_READS_END();
    if (list == NULL)
        return;
    ARPC_TSAN_ACQUIRE(h);
    /* The stack gives newest first: reverse to deliver in push order. */
    ck_stack_entry_t *fifo = NULL;
    while (list != NULL) {
        ck_stack_entry_t *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo != NULL) {
        ck_stack_entry_t *next = fifo->next;
        h->h_deliver(h, fifo);
        fifo = next;
    }
}
