/* The client's pending calls by xid (core/pending_calls.h): a ring per sequence of xids, and
 * ck_rhs for the calls that do not fit their ring. */
#include "core/pending_calls.h"

#include <stddef.h>
#include <stdint.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "core/client_internal.h"
#include "core/frame.h"

/* Fibonacci hashing: xids are consecutive, and their low bits must spread. */
static unsigned long pending_hash(uint64_t xid) { return (unsigned long)(xid * UINT64_C(0x9E3779B97F4A7C15) >> 8); }

/* ck_rhs hashes stored calls again as it grows; lookups pass their hash themselves. */
static unsigned long hash_cb(const void *stored, unsigned long seed)
{
    (void)seed;
    return pending_hash(call_xid((struct client_call *)stored));
}

/* The keys ck_rhs hands the comparison are of two kinds: a lookup's is the address of the xid
 * sought, tagged with its low bit (pending_get, pending_take); an insertion's is the call
 * itself, which ck_rhs compares with the calls it probes past (pending_put). Both are
 * 8-aligned, so the bit is free. */
#define KEY_XID_TAG ((uintptr_t)1)

static const void *xid_key(const uint64_t *xid) { return (const void *)((uintptr_t)xid | KEY_XID_TAG); }

static uint64_t key_xid(const void *key)
{
    uintptr_t k = (uintptr_t)key;
    if (k & KEY_XID_TAG)
        return *(const uint64_t *)(k & ~KEY_XID_TAG);
    return call_xid((struct client_call *)key);
}

static bool same_xid(const void *stored, const void *key)
{
    return call_xid((struct client_call *)stored) == key_xid(key);
}

static void *table_malloc(size_t n) { return arpc_malloc(n); }
static void table_free(void *p, size_t n, bool defer)
{
    (void)n;
    (void)defer; /* one thread: nobody can still be reading */
    arpc_free(p);
}

static struct ck_malloc table_allocator = {.malloc = table_malloc, .free = table_free};

/* ck_rhs grows once it is this full (percent; CK's default is 50). Robin Hood hashing keeps
 * probes short at high load, and xids are consecutive, which Fibonacci hashing spreads
 * evenly: the table of a full window is half as large as at 50%. */
#define PENDING_LOAD_PERCENT 80

_Static_assert((PENDING_RING_SLOTS & (PENDING_RING_SLOTS - 1)) == 0, "a ring is indexed by a mask");

_Static_assert(ARPC_XID_SEQ_BIT >> 62 == 1 && ARPC_XID_CALLER_BIT >> 62 == 2 && PENDING_RINGS == 3,
               "an xid's top two bits pick its ring (never both set)");

/* Only for an xid of ours (a put's): a peer's may have both top bits set (not_ours). */
static struct pending_ring *ring_of(struct pending_calls *p, uint64_t xid) { return &p->pc_rings[xid >> 62]; }

/* An xid no call of ours has: both top bits set. A reply's xid is the peer's to choose, so
 * lookups by it check first (a ring index of 3 would be past pc_rings). */
static bool not_ours(uint64_t xid) { return (xid >> 62) == 3; }

static struct client_call **ring_slot(struct pending_ring *r, uint64_t xid) { return &r->pr_slots[xid & r->pr_mask]; }

static int ring_init(struct pending_ring *r)
{
    r->pr_slots = arpc_calloc(PENDING_RING_SLOTS, sizeof(*r->pr_slots));
    r->pr_mask = PENDING_RING_SLOTS - 1;
    r->pr_count = 0;
    return r->pr_slots != NULL ? ARPC_OK : ARPC_ENOMEM;
}

static void ring_fini(struct pending_ring *r)
{
    arpc_free(r->pr_slots);
    r->pr_slots = NULL;
    r->pr_count = 0;
}

/* Doubles the ring. The call in slot i has xid = i (mod size), so it goes to slot i or
 * i + size of the new ring: no two meet, and nothing moves to ck_rhs. */
static int ring_grow(struct pending_ring *r)
{
    size_t size = r->pr_mask + 1;
    if (size > SIZE_MAX / 2 / sizeof(*r->pr_slots))
        return ARPC_ENOMEM;
    struct client_call **slots = arpc_calloc(size * 2, sizeof(*slots));
    if (slots == NULL)
        return ARPC_ENOMEM;
    size_t mask = size * 2 - 1;
    for (size_t i = 0, left = r->pr_count; left > 0; i++) {
        struct client_call *call = r->pr_slots[i];
        if (call != NULL) {
            slots[call_xid(call) & mask] = call;
            left--;
        }
    }
    arpc_free(r->pr_slots);
    r->pr_slots = slots;
    r->pr_mask = mask;
    return ARPC_OK;
}

/* An empty ring grown past its first size goes back to it: a burst's memory is given back once
 * its last call is answered. Without memory for the small one, the large one stays. */
static __attribute__((noinline)) void ring_shrink(struct pending_ring *r)
{
    struct client_call **slots = arpc_calloc(PENDING_RING_SLOTS, sizeof(*slots));
    if (slots == NULL)
        return;
    arpc_free(r->pr_slots);
    r->pr_slots = slots;
    r->pr_mask = PENDING_RING_SLOTS - 1;
}

int pending_init(struct pending_calls *p, size_t initial)
{
    for (unsigned k = 0; k < PENDING_RINGS; k++)
        p->pc_rings[k] = (struct pending_ring){0};
    for (unsigned k = 0; k < PENDING_RINGS; k++)
        if (ring_init(&p->pc_rings[k]) != ARPC_OK)
            goto fail;
    if (!ck_rhs_init(&p->pc_table, CK_RHS_MODE_OBJECT | CK_RHS_MODE_SPMC, hash_cb, same_xid, &table_allocator,
                     initial, 0))
        goto fail;
    p->pc_live = true;
    ck_rhs_set_load_factor(&p->pc_table, PENDING_LOAD_PERCENT); /* on an empty table: cannot fail */
    return ARPC_OK;
fail:
    for (unsigned k = 0; k < PENDING_RINGS; k++)
        ring_fini(&p->pc_rings[k]); /* (NULL for those not made) */
    return ARPC_ENOMEM;
}

void pending_fini(struct pending_calls *p)
{
    if (p->pc_live) {
        ck_rhs_destroy(&p->pc_table);
        for (unsigned k = 0; k < PENDING_RINGS; k++)
            ring_fini(&p->pc_rings[k]);
    }
    p->pc_live = false;
}

static bool table_put(struct pending_calls *p, struct client_call *call)
{
    return ck_rhs_put_unique(&p->pc_table, pending_hash(call_xid(call)), call);
}

/* pending_put when the xid's slot is taken. */
static __attribute__((noinline)) int put_collided(struct pending_calls *p, struct pending_ring *r,
                                                  struct client_call *call)
{
    uint64_t xid = call_xid(call);
    for (;;) {
        struct client_call **slot = ring_slot(r, xid), *held = *slot;
        if (held == NULL) {
            *slot = call;
            r->pr_count++;
            return ARPC_OK;
        }
        /* held's xid is a multiple of the ring's size away. A ring at least half full: the
         * window outgrew it. */
        if (r->pr_count > r->pr_mask / 2 && ring_grow(r) == ARPC_OK)
            continue;
        /* Otherwise one of the two pins a span wider than the window (or there is no memory to
         * grow): the older goes to ck_rhs, the other keeps the slot. */
        if (call_xid(held) > xid)
            return table_put(p, call) ? ARPC_OK : ARPC_ENOMEM;
        if (!table_put(p, held))
            return ARPC_ENOMEM;
        *slot = call;
        return ARPC_OK;
    }
}

int pending_put(struct pending_calls *p, struct client_call *call)
{
    uint64_t xid = call_xid(call);
    struct pending_ring *r = ring_of(p, xid);
    struct client_call **slot = ring_slot(r, xid);
    if (*slot != NULL)
        return put_collided(p, r, call);
    *slot = call;
    r->pr_count++;
    return ARPC_OK;
}

struct client_call *pending_get(struct pending_calls *p, uint64_t xid)
{
    if (not_ours(xid))
        return NULL;
    struct client_call *in_ring = *ring_slot(ring_of(p, xid), xid);
    if (in_ring != NULL && call_xid(in_ring) == xid)
        return in_ring;
    return ck_rhs_count(&p->pc_table) != 0 ? ck_rhs_get(&p->pc_table, pending_hash(xid), xid_key(&xid)) : NULL;
}

struct client_call *pending_take(struct pending_calls *p, uint64_t xid)
{
    if (not_ours(xid))
        return NULL;
    struct pending_ring *r = ring_of(p, xid);
    struct client_call **slot = ring_slot(r, xid), *in_ring = *slot;
    if (in_ring != NULL && call_xid(in_ring) == xid) {
        *slot = NULL;
        if (--r->pr_count == 0 && r->pr_mask >= PENDING_RING_SLOTS)
            ring_shrink(r);
        return in_ring;
    }
    return ck_rhs_count(&p->pc_table) != 0 ? ck_rhs_remove(&p->pc_table, pending_hash(xid), xid_key(&xid)) : NULL;
}

void pending_drain(struct pending_calls *p, void (*fn)(struct client_call *call, void *arg), void *arg)
{
    for (unsigned k = 0; k < PENDING_RINGS; k++) {
        struct pending_ring *r = &p->pc_rings[k];
        for (size_t i = 0; r->pr_count > 0; i++) {
            struct client_call *call = r->pr_slots[i];
            if (call != NULL) {
                r->pr_slots[i] = NULL;
                r->pr_count--;
                fn(call, arg);
            }
        }
    }
    /* Each call is taken out before fn sees it. A removal shifts the entries after it back by
     * a slot, so one pass can step over some: walk again until empty (a few passes, no
     * allocation, unlike a reset). */
    while (ck_rhs_count(&p->pc_table) > 0) {
        ck_rhs_iterator_t it = CK_RHS_ITERATOR_INITIALIZER;
        void *found;
        while (ck_rhs_next(&p->pc_table, &it, &found)) {
            uint64_t xid = call_xid(found);
            ck_rhs_remove(&p->pc_table, pending_hash(xid), xid_key(&xid));
            fn(found, arg);
        }
    }
}

size_t pending_count(struct pending_calls *p)
{
    size_t n = ck_rhs_count(&p->pc_table);
    for (unsigned k = 0; k < PENDING_RINGS; k++)
        n += p->pc_rings[k].pr_count;
    return n;
}

void pending_iter_init(struct pending_iter *it)
{
    it->pi_ring = 0;
    it->pi_slot = 0;
    ck_rhs_iterator_init(&it->pi_it);
}

bool pending_next(struct pending_calls *p, struct pending_iter *it, struct client_call **call)
{
    for (; it->pi_ring < PENDING_RINGS; it->pi_ring++, it->pi_slot = 0) {
        struct pending_ring *r = &p->pc_rings[it->pi_ring];
        while (it->pi_slot <= r->pr_mask) {
            struct client_call *in_ring = r->pr_slots[it->pi_slot++];
            if (in_ring != NULL) {
                *call = in_ring;
                return true;
            }
        }
    }
    void *found;
    if (!ck_rhs_next(&p->pc_table, &it->pi_it, &found))
        return false;
    *call = found;
    return true;
}
