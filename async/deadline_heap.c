/*
 * Design notes.
 *
 * A classic array binary min-heap (children of i at 2i+1 and 2i+2) ordered by
 * (d_when_ns, d_seq). d_seq is taken from a per-heap counter on every push, so entries with
 * the same time leave in arm order and a re-arm counts as a new arm. Every time an entry is
 * stored in a slot its d_index is updated, which is what makes remove O(log n): the removed
 * slot is filled with the last entry, which is then sifted up or down.
 *
 * Sifting moves a "hole" instead of swapping: parents or children slide into the hole and
 * the moving entry is written once at its final slot.
 *
 * The array grows by doubling and shrinks by half when a quarter full, so a burst of 100k
 * deadlines does not pin its memory forever; shrinking is best effort (a failed realloc
 * keeps the larger array).
 */
#include "async/deadline_heap.h"

#include <assert.h>

#include "arpc/error.h"
#include "base/alloc.h"

#define HEAP_MIN_CAP 16

void arpc_deadline_init(struct arpc_deadline *d, arpc_deadline_fn fn, void *arg)
{
    d->d_when_ns = 0;
    d->d_index = ARPC_DEADLINE_UNARMED;
    d->d_seq = 0;
    d->d_fn = fn;
    d->d_arg = arg;
}

void arpc_deadline_heap_init(struct arpc_deadline_heap *h)
{
    h->h_items = NULL;
    h->h_len = h->h_cap = 0;
    h->h_next_seq = 0;
}

void arpc_deadline_heap_fini(struct arpc_deadline_heap *h)
{
    for (size_t i = 0; i < h->h_len; i++)
        h->h_items[i]->d_index = ARPC_DEADLINE_UNARMED;
    arpc_free(h->h_items);
    arpc_deadline_heap_init(h);
}

static bool deadline_before(const struct arpc_deadline *a, const struct arpc_deadline *b)
{
    if (a->d_when_ns != b->d_when_ns)
        return a->d_when_ns < b->d_when_ns;
    return a->d_seq < b->d_seq;
}

static void heap_place(struct arpc_deadline_heap *h, size_t i, struct arpc_deadline *d)
{
    h->h_items[i] = d;
    d->d_index = i;
}

/* Moves d up from slot i until its parent is not later than it. */
static void sift_up(struct arpc_deadline_heap *h, size_t i, struct arpc_deadline *d)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!deadline_before(d, h->h_items[parent]))
            break;
        heap_place(h, i, h->h_items[parent]);
        i = parent;
    }
    heap_place(h, i, d);
}

/* Moves d down from slot i until no child is earlier than it. */
static void sift_down(struct arpc_deadline_heap *h, size_t i, struct arpc_deadline *d)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->h_len)
            break;
        if (child + 1 < h->h_len && deadline_before(h->h_items[child + 1], h->h_items[child]))
            child++;
        if (!deadline_before(h->h_items[child], d))
            break;
        heap_place(h, i, h->h_items[child]);
        i = child;
    }
    heap_place(h, i, d);
}

/* Puts d, whose key changed or which was just stored at slot i, where it belongs. */
static void sift(struct arpc_deadline_heap *h, size_t i, struct arpc_deadline *d)
{
    if (i > 0 && deadline_before(d, h->h_items[(i - 1) / 2]))
        sift_up(h, i, d);
    else
        sift_down(h, i, d);
}

static int heap_grow(struct arpc_deadline_heap *h)
{
    size_t cap = h->h_cap ? h->h_cap * 2 : HEAP_MIN_CAP;
    if (cap > (size_t)-1 / sizeof(*h->h_items))
        return ARPC_ENOMEM;
    struct arpc_deadline **items = arpc_realloc(h->h_items, cap * sizeof(*items));
    if (items == NULL)
        return ARPC_ENOMEM;
    h->h_items = items;
    h->h_cap = cap;
    return ARPC_OK;
}

static void heap_maybe_shrink(struct arpc_deadline_heap *h)
{
    if (h->h_cap <= HEAP_MIN_CAP * 4 || h->h_len >= h->h_cap / 4)
        return;
    struct arpc_deadline **items = arpc_realloc(h->h_items, (h->h_cap / 2) * sizeof(*items));
    if (items != NULL) {
        h->h_items = items;
        h->h_cap /= 2;
    }
}

int arpc_deadline_heap_push(struct arpc_deadline_heap *h, struct arpc_deadline *d, uint64_t when_ns)
{
    if (arpc_deadline_is_armed(d)) {
        /* A move needs no memory: re-key in place and sift either way. */
        assert(d->d_index < h->h_len && h->h_items[d->d_index] == d);
        d->d_when_ns = when_ns;
        d->d_seq = h->h_next_seq++;
        sift(h, d->d_index, d);
        return ARPC_OK;
    }
    if (h->h_len == h->h_cap && heap_grow(h) != ARPC_OK)
        return ARPC_ENOMEM; /* d is left untouched and unarmed */
    d->d_when_ns = when_ns;
    d->d_seq = h->h_next_seq++;
    sift_up(h, h->h_len++, d);
    return ARPC_OK;
}

void arpc_deadline_heap_remove(struct arpc_deadline_heap *h, struct arpc_deadline *d)
{
    if (!arpc_deadline_is_armed(d))
        return;
    size_t i = d->d_index;
    assert(i < h->h_len && h->h_items[i] == d);
    struct arpc_deadline *last = h->h_items[--h->h_len];
    d->d_index = ARPC_DEADLINE_UNARMED;
    if (last != d)
        sift(h, i, last); /* the hole at i takes the last entry */
    heap_maybe_shrink(h);
}
