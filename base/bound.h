/*
 * The bound of a bounded hand-off (the loop's submitted tasks, an actor's mailbox): an atomic
 * count of the places taken, beside a lock-free stack that has no bound of its own. A
 * producer takes a place before it pushes; the consumer gives places back as it starts the
 * work. No producer waits for another: what a producer waits for, when it waits, is room.
 */
#ifndef ARPC_BASE_BOUND_H
#define ARPC_BASE_BOUND_H

#include <stdatomic.h>
#include <stdbool.h>

/* Takes a place when fewer than bound are taken; false at the bound. A producer that loses
 * the race for the last place pushes the count past the bound only until it gives the place
 * back here, so the places really held never exceed the bound. The read-modify-writes are
 * sequentially consistent: one half of a Dekker pair where a consumer needs one
 * (async/actor.c). */
static inline bool arpc_bound_take(atomic_uint *taken, unsigned bound)
{
    if (atomic_load_explicit(taken, memory_order_relaxed) >= bound)
        return false;
    if (atomic_fetch_add(taken, 1) < bound)
        return true;
    atomic_fetch_sub(taken, 1); /* lost the last place */
    return false;
}

#endif
