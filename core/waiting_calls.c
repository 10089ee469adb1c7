/* The client's calls waiting for a connection, in an array of slots (core/waiting_calls.h). */
#define _GNU_SOURCE /* qsort_r */
#include "core/waiting_calls.h"

#include <stdlib.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "core/client_internal.h"

#define WAITING_FIRST_CAP 16u

void waiting_fini(struct waiting_calls *w)
{
    arpc_free(w->wc_slots);
    *w = (struct waiting_calls){0};
}

/* Moves the calls to slots [0, wc_count) of slots (w's own, or a larger array), in order, and
 * tells them. */
static void waiting_pack(struct waiting_calls *w, struct waiting_slot *slots)
{
    uint32_t n = 0;
    for (uint32_t i = w->wc_head; i < w->wc_tail; i++) {
        struct waiting_slot s = w->wc_slots[i];
        if (s.ws_call == NULL)
            continue;
        s.ws_call->cc_wait_pos = n;
        slots[n++] = s;
    }
    w->wc_head = 0;
    w->wc_tail = n;
}

int waiting_push(struct waiting_calls *w, struct client_call *call, uint64_t give_up)
{
    if (w->wc_tail == w->wc_cap) {
        if (w->wc_count > w->wc_cap / 2 || w->wc_cap == 0) {
            uint32_t cap = w->wc_cap == 0 ? WAITING_FIRST_CAP : w->wc_cap * 2;
            struct waiting_slot *slots = cap > w->wc_cap ? arpc_malloc((size_t)cap * sizeof(*slots)) : NULL;
            if (slots == NULL)
                return ARPC_ENOMEM;
            waiting_pack(w, slots);
            arpc_free(w->wc_slots);
            w->wc_slots = slots;
            w->wc_cap = cap;
        } else {
            waiting_pack(w, w->wc_slots); /* at most half full: room at the tail */
        }
    }
    call->cc_wait_pos = w->wc_tail;
    w->wc_slots[w->wc_tail++] = (struct waiting_slot){.ws_call = call, .ws_give_up = give_up};
    w->wc_count++;
    return ARPC_OK;
}

void waiting_remove(struct waiting_calls *w, struct client_call *call)
{
    w->wc_slots[call->cc_wait_pos].ws_call = NULL;
    if (--w->wc_count == 0) {
        waiting_fini(w); /* a burst's memory goes with its last call */
        return;
    }
    while (w->wc_slots[w->wc_head].ws_call == NULL)
        w->wc_head++;
}

struct client_call *waiting_first(const struct waiting_calls *w, uint64_t *give_up)
{
    if (w->wc_count == 0)
        return NULL;
    if (give_up != NULL)
        *give_up = w->wc_slots[w->wc_head].ws_give_up;
    return w->wc_slots[w->wc_head].ws_call;
}

struct client_call *waiting_at(const struct waiting_calls *w, uint32_t *pos)
{
    for (uint32_t i = *pos; i < w->wc_tail; i++) {
        if (w->wc_slots[i].ws_call != NULL) {
            *pos = i;
            return w->wc_slots[i].ws_call;
        }
    }
    return NULL;
}

typedef bool (*waiting_before_fn)(const struct waiting_slot *a, const struct waiting_slot *b);

/* Ties by the order the calls had (their cc_wait_pos after waiting_pack): a stable sort. */
static int sort_cmp(const void *x, const void *y, void *arg)
{
    const struct waiting_slot *a = x, *b = y;
    waiting_before_fn sort_before = *(waiting_before_fn *)arg;
    if (sort_before(a, b))
        return -1;
    if (sort_before(b, a))
        return 1;
    return a->ws_call->cc_wait_pos < b->ws_call->cc_wait_pos ? -1 : 1;
}

void waiting_sort(struct waiting_calls *w, bool (*before)(const struct waiting_slot *a, const struct waiting_slot *b))
{
    if (w->wc_count == 0)
        return;
    waiting_pack(w, w->wc_slots);
    qsort_r(w->wc_slots, w->wc_count, sizeof(*w->wc_slots), sort_cmp, &before);
    for (uint32_t i = 0; i < w->wc_count; i++)
        w->wc_slots[i].ws_call->cc_wait_pos = i;
}
