/*
 * Internal loop API for the core and transports: the libev loop, and deadlines.
 *
 * Deadlines: one libev timer per loop sits over a binary min-heap of arpc_deadline entries
 * (async/deadline_heap.h), so 100k pending deadlines cost one timer; arm and cancel are
 * O(log n). Deadlines are intrusive (the caller embeds the struct, e.g. in a pending call),
 * so arming one allocates nothing unless the heap must grow.
 *
 * Every function here must be called on the loop thread.
 */
#ifndef ARPC_ASYNC_LOOP_INTERNAL_H
#define ARPC_ASYNC_LOOP_INTERNAL_H

#include <ev.h>

#include "arpc/future.h"
#include "arpc/loop.h"
#include "async/deadline_heap.h"

struct ev_loop *arpc_loop_ev(arpc_loop *loop);

/* Arms d to fire at when_ns (arpc_now_ns clock); re-arming an armed deadline moves it.
 * Returns ARPC_OK or ARPC_ENOMEM. When it fires, d is disarmed first, then d->fn(d, d->arg)
 * runs on the loop thread; the callback may re-arm d or arm/cancel others. */
int arpc_deadline_arm(arpc_loop *loop, struct arpc_deadline *d, uint64_t when_ns);

/* Disarms d; a no-op when not armed. O(log n). */
void arpc_deadline_cancel(arpc_loop *loop, struct arpc_deadline *d);

/* Deadlines currently armed on the loop. */
size_t arpc_loop_deadline_count(arpc_loop *loop);

/* Runs fn(arg) on the loop thread just before the loop returns from a stop (after the final
 * drain of submitted tasks), e.g. so a client can fail its pending calls. At most a few per
 * loop; returns ARPC_ENOMEM. Loop thread only, or before the loop runs. */
int arpc_loop_on_stop(arpc_loop *loop, void (*fn)(arpc_loop *loop, void *arg), void *arg);

/* Removes one registration of (fn, arg). True if it was removed (it will not run); false if
 * it was not registered or the hooks already started running. Loop thread only. */
bool arpc_loop_off_stop(arpc_loop *loop, void (*fn)(arpc_loop *loop, void *arg), void *arg);

/* How many times the loop was woken to drain submitted tasks (ev_async callbacks), so tests
 * can check that wake-ups are batched. Any thread; a relaxed snapshot. */
uint64_t arpc_loop_wakeups(arpc_loop *loop);

/* Waits for f on any thread but the loop's: blocks if a thread runs the loop, or runs the
 * loop here (arpc_loop_run_until) while nobody does. ARPC_EBUSY on the loop thread itself
 * (it would wait for itself). Otherwise f's status. */
int arpc_loop_wait(arpc_loop *loop, arpc_future *f);

/* Waits until no thread runs the loop (it finished, or a caller-driven run gave it back).
 * Not from the loop thread. Returns true when the loop has finished for good: its final
 * drain and stop hooks have run, and no loop thread touches anything any more. */
bool arpc_loop_wait_not_running(arpc_loop *loop);

#endif
