/*
 * A binary min-heap of deadlines keyed by time, each entry knowing its own position so it
 * can be removed in O(log n). Pure data structure: no clock, no loop, single-threaded.
 */
#ifndef ARPC_ASYNC_DEADLINE_HEAP_H
#define ARPC_ASYNC_DEADLINE_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARPC_DEADLINE_UNARMED ((size_t)-1)

struct arpc_deadline;
typedef void (*arpc_deadline_fn)(struct arpc_deadline *d, void *arg);

/* Embedded by its owner; initialise with arpc_deadline_init before first use. */
struct arpc_deadline {
    uint64_t d_when_ns;
    size_t d_index; /* position in the heap, ARPC_DEADLINE_UNARMED when not in one */
    uint64_t d_seq; /* arm order: ties in d_when_ns fire in arm order */
    arpc_deadline_fn d_fn;
    void *d_arg;
};

struct arpc_deadline_heap {
    struct arpc_deadline **h_items;
    size_t h_len, h_cap;
    uint64_t h_next_seq;
};

void arpc_deadline_init(struct arpc_deadline *d, arpc_deadline_fn fn, void *arg);
static inline bool arpc_deadline_is_armed(const struct arpc_deadline *d)
{
    return d->d_index != ARPC_DEADLINE_UNARMED;
}

void arpc_deadline_heap_init(struct arpc_deadline_heap *h);
void arpc_deadline_heap_fini(struct arpc_deadline_heap *h); /* entries are left unarmed */
/* Inserts (or moves, if already in this heap) d at when_ns. ARPC_OK or ARPC_ENOMEM. */
int arpc_deadline_heap_push(struct arpc_deadline_heap *h, struct arpc_deadline *d, uint64_t when_ns);
/* Removes d if it is in the heap. */
void arpc_deadline_heap_remove(struct arpc_deadline_heap *h, struct arpc_deadline *d);
/* The earliest entry, or NULL. */
static inline struct arpc_deadline *arpc_deadline_heap_top(const struct arpc_deadline_heap *h)
{
    return h->h_len ? h->h_items[0] : NULL;
}
static inline size_t arpc_deadline_heap_len(const struct arpc_deadline_heap *h) { return h->h_len; }

#endif
