/*
 * The way into a hand-off that can close, so that closing loses nothing and freeing touches
 * nobody: a producer counts itself in before it checks the closed flag and out after its last
 * touch of the structure (its wake-up of the consumer); closing sets the flag and waits for
 * the count to reach zero. All four are sequentially consistent, so either the producer sees
 * the flag (and backs out, having done nothing), or the closer sees the producer counted and
 * waits for it. Once arpc_entry_close returns, nothing gets in and nobody is inside: the
 * consumer's final drain sees everything accepted, and the owner may free the structure.
 *
 * No producer ever waits here, and nothing inside may wait (a wait for room happens before
 * entering): the closer's wait is a few instructions long. Used by the loop's lane and the
 * actors' mailboxes.
 */
#ifndef ARPC_BASE_ENTRY_H
#define ARPC_BASE_ENTRY_H

#include <stdatomic.h>
#include <stdbool.h>

#include "base/backoff.h"

struct arpc_entry {
    atomic_uint e_inside; /* producers between their check and their last touch */
    atomic_bool e_closed;
};

static inline void arpc_entry_init(struct arpc_entry *e)
{
    atomic_init(&e->e_inside, 0);
    atomic_init(&e->e_closed, false);
}

/* Any thread: true when in (then arpc_entry_leave after the last touch); false, with nothing
 * to undo, once closed. */
static inline bool arpc_entry_enter(struct arpc_entry *e)
{
    atomic_fetch_add(&e->e_inside, 1);
    if (!atomic_load(&e->e_closed))
        return true;
    atomic_fetch_sub(&e->e_inside, 1);
    return false;
}

static inline void arpc_entry_leave(struct arpc_entry *e) { atomic_fetch_sub(&e->e_inside, 1); }

/* A hint for a producer waiting outside (for room): give up, the structure is closing. */
static inline bool arpc_entry_closed(struct arpc_entry *e) { return atomic_load(&e->e_closed); }

/* Any thread: refuses further entries and waits for those inside to leave. Idempotent. */
static inline void arpc_entry_close(struct arpc_entry *e)
{
    atomic_store(&e->e_closed, true);
    unsigned attempt = 0;
    while (atomic_load(&e->e_inside) != 0)
        arpc_backoff_spin(&attempt);
}

#endif
