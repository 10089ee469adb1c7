/*
 * Sorting a base/dlist.h list: a bottom-up merge sort over the next links (the list is a
 * singly linked chain while it is sorted), with runs kept in an array indexed by their
 * length's log, as in the classic list sorts; the prev links and the tail are made again at
 * the end. Stable: of two elements neither goes ahead of, the earlier stays ahead.
 */
#include "base/dlist.h"

#include <stdint.h>

typedef bool (*dlist_before_fn)(const struct arpc_dlink *a, const struct arpc_dlink *b);

/* Merges two sorted chains (next links, NULL-ended); a's elements stay ahead of b's equals. */
static struct arpc_dlink *merge(struct arpc_dlink *a, struct arpc_dlink *b, dlist_before_fn before)
{
    struct arpc_dlink head = {0}, *tail = &head;
    while (a != NULL && b != NULL) {
        if (before(b, a)) {
            tail->dl_next = b;
            b = b->dl_next;
        } else {
            tail->dl_next = a;
            a = a->dl_next;
        }
        tail = tail->dl_next;
    }
    tail->dl_next = a != NULL ? a : b;
    return head.dl_next;
}

void arpc_dlist_sort(struct arpc_dlist *l, dlist_before_fn before)
{
    /* runs[i]: a sorted chain of 2^i elements, or NULL; each holds elements older than the
     * runs below it, so merging a higher run first keeps the sort stable. */
    struct arpc_dlink *runs[sizeof(uintptr_t) * 8] = {0};
    size_t nruns = 0;
    struct arpc_dlink *n = l->dl_head;
    while (n != NULL) {
        struct arpc_dlink *next = n->dl_next, *run = n;
        run->dl_next = NULL;
        size_t i = 0;
        for (; i < nruns && runs[i] != NULL; i++) {
            run = merge(runs[i], run, before);
            runs[i] = NULL;
        }
        if (i == nruns)
            nruns++;
        runs[i] = run;
        n = next;
    }
    struct arpc_dlink *all = NULL;
    for (size_t i = 0; i < nruns; i++)
        if (runs[i] != NULL)
            all = all == NULL ? runs[i] : merge(runs[i], all, before);
    /* The prev links and the ends again. */
    struct arpc_dlink *prev = NULL;
    l->dl_head = all;
    for (n = all; n != NULL; n = n->dl_next) {
        n->dl_prev = prev;
        prev = n;
    }
    l->dl_tail = prev;
}
