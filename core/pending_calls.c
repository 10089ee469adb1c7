#include "core/pending_calls.h"

#include <stddef.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "core/client_internal.h"

/* Grow before the table is GROW_NUM/GROW_DEN full; shrink once it is 1/SHRINK_DEN full (the
 * gap between the two keeps a table at the boundary from resizing back and forth). */
#define GROW_NUM 3
#define GROW_DEN 4
#define SHRINK_DEN 8

static size_t home_of(const struct pending_calls *p, uint64_t xid) { return (size_t)xid & p->pc_mask; }

/* How far the call in slot i is from its home slot. */
static size_t distance(const struct pending_calls *p, size_t i, const struct client_call *call)
{
    return (i - home_of(p, call->cc_xid)) & p->pc_mask;
}

static size_t cap_of(const struct pending_calls *p) { return p->pc_mask + 1; }

/* Robin Hood insertion: a call displaces one nearer its home than the probe is. No resizing;
 * the table has an empty slot. */
static void place(struct pending_calls *p, struct client_call *call)
{
    size_t i = home_of(p, call->cc_xid), d = 0;
    for (;;) {
        struct client_call *there = p->pc_slots[i];
        if (there == NULL) {
            p->pc_slots[i] = call;
            return;
        }
        size_t td = distance(p, i, there);
        if (td < d) {
            p->pc_slots[i] = call;
            call = there;
            d = td;
        }
        i = (i + 1) & p->pc_mask;
        d++;
    }
}

static int resize(struct pending_calls *p, size_t cap)
{
    struct client_call **slots = arpc_calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return ARPC_ENOMEM;
    struct client_call **old = p->pc_slots;
    size_t old_cap = cap_of(p);
    p->pc_slots = slots;
    p->pc_mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] != NULL)
            place(p, old[i]);
    arpc_free(old);
    return ARPC_OK;
}

int pending_init(struct pending_calls *p, size_t initial)
{
    size_t cap = 16;
    while (cap * GROW_NUM / GROW_DEN < initial)
        cap *= 2;
    p->pc_slots = arpc_calloc(cap, sizeof(*p->pc_slots));
    if (p->pc_slots == NULL)
        return ARPC_ENOMEM;
    p->pc_mask = cap - 1;
    p->pc_count = 0;
    p->pc_min_cap = cap;
    return ARPC_OK;
}

void pending_fini(struct pending_calls *p)
{
    arpc_free(p->pc_slots);
    p->pc_slots = NULL;
    p->pc_count = 0;
}

int pending_put(struct pending_calls *p, struct client_call *call)
{
    if ((p->pc_count + 1) * GROW_DEN > cap_of(p) * GROW_NUM && resize(p, cap_of(p) * 2) != ARPC_OK)
        return ARPC_ENOMEM;
    place(p, call);
    p->pc_count++;
    return ARPC_OK;
}

/* The slot holding xid, or SIZE_MAX. */
static size_t find(const struct pending_calls *p, uint64_t xid)
{
    size_t i = home_of(p, xid);
    for (size_t d = 0;; d++) {
        const struct client_call *there = p->pc_slots[i];
        /* Robin Hood order: past a call nearer its home than we are, xid cannot be. */
        if (there == NULL || distance(p, i, there) < d)
            return SIZE_MAX;
        if (there->cc_xid == xid)
            return i;
        i = (i + 1) & p->pc_mask;
    }
}

struct client_call *pending_get(struct pending_calls *p, uint64_t xid)
{
    size_t i = find(p, xid);
    return i == SIZE_MAX ? NULL : p->pc_slots[i];
}

struct client_call *pending_take(struct pending_calls *p, uint64_t xid)
{
    size_t i = find(p, xid);
    if (i == SIZE_MAX)
        return NULL;
    struct client_call *call = p->pc_slots[i];
    /* Backward shift: the calls after it that are away from home move one slot nearer. */
    for (size_t next = (i + 1) & p->pc_mask;; next = (next + 1) & p->pc_mask) {
        struct client_call *there = p->pc_slots[next];
        if (there == NULL || distance(p, next, there) == 0)
            break;
        p->pc_slots[i] = there;
        i = next;
    }
    p->pc_slots[i] = NULL;
    p->pc_count--;
    if (cap_of(p) > p->pc_min_cap && p->pc_count * SHRINK_DEN < cap_of(p))
        (void)resize(p, cap_of(p) / 2); /* without memory it stays large: no harm */
    return call;
}

size_t pending_count(struct pending_calls *p) { return p->pc_count; }

size_t pending_capacity(struct pending_calls *p) { return cap_of(p); }

void pending_drain(struct pending_calls *p, void (*fn)(struct client_call *call, void *arg), void *arg)
{
    /* Every slot is emptied before fn sees its call; nothing is looked up meanwhile. */
    size_t cap = cap_of(p);
    for (size_t i = 0; i < cap; i++) {
        struct client_call *call = p->pc_slots[i];
        if (call != NULL) {
            p->pc_slots[i] = NULL;
            p->pc_count--;
            fn(call, arg);
        }
    }
}

void pending_iter_init(struct pending_iter *it) { it->pi_pos = 0; }

bool pending_next(struct pending_calls *p, struct pending_iter *it, struct client_call **call)
{
    while (it->pi_pos < cap_of(p)) {
        struct client_call *there = p->pc_slots[it->pi_pos++];
        if (there != NULL) {
            *call = there;
            return true;
        }
    }
    return false;
}
