/*
 * arpc_handoff: an unbounded multi-producer hand-off of intrusive items to one loop thread,
 * with one ev_async wake-up per batch. Used for replies: a worker finishing a request must
 * never wait for the loop (the loop may itself be waiting for that worker's mailbox), so
 * replies cannot go through the bounded submit ring.
 *
 * Producers push onto a Concurrency Kit stack (ck_stack_push_upmc: lock-free, no producer
 * ever waits for another); the loop takes the whole stack at once (ck_stack_batch_pop_upmc)
 * and delivers it oldest first.
 */
#ifndef ARPC_CORE_HANDOFF_H
#define ARPC_CORE_HANDOFF_H

#include <ck_stack.h>
#include <ev.h>
#include <stdatomic.h>

struct arpc_handoff;
/* Called on the loop thread for each item, oldest first. */
typedef void (*arpc_handoff_fn)(struct arpc_handoff *h, ck_stack_entry_t *item);

struct arpc_handoff {
    ck_stack_t h_stack;
    atomic_int h_wake_sent; /* an ev_async_send is outstanding: later pushes need none */
    ev_async h_async;
    struct ev_loop *h_ev;
    arpc_handoff_fn h_deliver;
    void *h_owner;
};

/* Loop thread (or before the loop runs): initialises and starts the watcher. */
void arpc_handoff_start(struct arpc_handoff *h, struct ev_loop *ev, arpc_handoff_fn deliver, void *owner);
/* Loop thread: stops the watcher. Items pushed afterwards stay queued until arpc_handoff_drain. */
void arpc_handoff_stop(struct arpc_handoff *h);
/* Any thread; never blocks. */
void arpc_handoff_push(struct arpc_handoff *h, ck_stack_entry_t *item);
/* The single consumer (loop thread, or any thread once no loop runs): delivers everything queued. */
void arpc_handoff_drain(struct arpc_handoff *h);

#endif
