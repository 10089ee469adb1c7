#include "core/pending.h"

#include "arpc/error.h"
#include "base/alloc.h"

static inline size_t slot_of(const struct arpc_pending *p, uint64_t xid)
{
    /* Fibonacci hashing: consecutive xids land far apart, and any xid pattern spreads. */
    return (size_t)((xid * 0x9E3779B97F4A7C15ull) >> p->p_shift);
}

static int pending_alloc(struct arpc_pending *p, size_t cap)
{
    struct arpc_pending_slot *slots = arpc_calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return ARPC_ENOMEM;
    unsigned bits = 0;
    while (((size_t)1 << bits) < cap)
        bits++;
    p->p_slots = slots;
    p->p_mask = cap - 1;
    p->p_shift = 64 - bits;
    return ARPC_OK;
}

int arpc_pending_init(struct arpc_pending *p, size_t initial)
{
    size_t cap = 64;
    while (cap < initial * 2)
        cap *= 2;
    p->p_count = 0;
    return pending_alloc(p, cap);
}

void arpc_pending_fini(struct arpc_pending *p)
{
    arpc_free(p->p_slots);
    p->p_slots = NULL;
    p->p_count = 0;
}

static void insert_fresh(struct arpc_pending *p, uint64_t xid, void *call)
{
    size_t i = slot_of(p, xid);
    while (p->p_slots[i].s_xid != 0)
        i = (i + 1) & p->p_mask;
    p->p_slots[i] = (struct arpc_pending_slot){xid, call};
}

/* Doubles the table. */
static int pending_grow(struct arpc_pending *p)
{
    struct arpc_pending_slot *old = p->p_slots;
    size_t old_cap = p->p_mask + 1;
    if (pending_alloc(p, old_cap * 2) != ARPC_OK) {
        p->p_slots = old;
        return ARPC_ENOMEM;
    }
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].s_xid != 0)
            insert_fresh(p, old[i].s_xid, old[i].s_call);
    arpc_free(old);
    return ARPC_OK;
}

int arpc_pending_put(struct arpc_pending *p, uint64_t xid, void *call)
{
    /* Grow at a load factor of 3/4: sequential xids under Fibonacci hashing barely cluster,
     * so probes stay short, and the table costs at most ~21-43 bytes per pending call. */
    if ((p->p_count + 1) * 4 > (p->p_mask + 1) * 3 && pending_grow(p) != ARPC_OK)
        return ARPC_ENOMEM;
    size_t i = slot_of(p, xid);
    for (; p->p_slots[i].s_xid != 0; i = (i + 1) & p->p_mask)
        if (p->p_slots[i].s_xid == xid)
            return ARPC_EBUSY;
    p->p_slots[i] = (struct arpc_pending_slot){xid, call};
    p->p_count++;
    return ARPC_OK;
}

void *arpc_pending_take(struct arpc_pending *p, uint64_t xid)
{
    if (xid == 0)
        return NULL; /* 0 marks empty slots: a peer's xid 0 matches nothing */
    size_t i = slot_of(p, xid);
    while (p->p_slots[i].s_xid != xid) {
        if (p->p_slots[i].s_xid == 0)
            return NULL;
        i = (i + 1) & p->p_mask;
    }
    void *call = p->p_slots[i].s_call;
    p->p_count--;
    /* Backward-shift deletion: pull later members of the run into the hole when the hole lies
     * between their home slot and where they sit, so no tombstone is needed. */
    size_t hole = i;
    for (size_t j = (i + 1) & p->p_mask; p->p_slots[j].s_xid != 0; j = (j + 1) & p->p_mask) {
        size_t home = slot_of(p, p->p_slots[j].s_xid);
        /* Distance from home to j versus from home to the hole, both cyclic. */
        if (((j - home) & p->p_mask) >= ((j - hole) & p->p_mask)) {
            p->p_slots[hole] = p->p_slots[j];
            hole = j;
        }
    }
    p->p_slots[hole].s_xid = 0;
    p->p_slots[hole].s_call = NULL;
    return call;
}

void arpc_pending_drain(struct arpc_pending *p, void (*fn)(void *call, void *arg), void *arg)
{
    for (size_t i = 0; i <= p->p_mask; i++) {
        struct arpc_pending_slot s = p->p_slots[i];
        if (s.s_xid == 0)
            continue;
        p->p_slots[i].s_xid = 0;
        p->p_slots[i].s_call = NULL;
        fn(s.s_call, arg);
    }
    p->p_count = 0;
}
