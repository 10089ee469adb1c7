/*
 * The clients that said goodbye (core/reply_cache_gone.h).
 *
 * Design notes
 * - Three kinds of doubly linked lists, all through 16-bit numbers into fixed arrays (no
 *   allocation after the first goodbye but an owner's first entry in g_owner_of): the set's
 *   goodbyes by age (iteration, and the oldest), each owner's goodbyes by age (its oldest,
 *   the one it gives up), and for each n the owners holding n goodbyes (g_holding[n]).
 * - An owner's count changes by one at a time, so the most any owner holds (g_most) only
 *   ever moves by one, and the owner to give a goodbye up is found without looking at the
 *   others: constant time whatever the number of owners (a look at every owner and slot
 *   cost 12-22 us once thousands of identities held goodbyes).
 */
#include "core/reply_cache_gone.h"

#include <assert.h>

#include "arpc/error.h"
#include "base/alloc.h"

#define NONE ARPC_RC_GONE_NONE
#define OWNERS (ARPC_RC_GONE_MAX + 1)

_Static_assert(OWNERS < NONE, "slot and owner numbers are 16 bits, NONE apart");

void arpc_rc_gone_fini(struct arpc_rc_gone *g)
{
    if (g->g_slots != NULL) {
        arpc_free(g->g_slots);
        arpc_free(g->g_owners);
        arpc_free(g->g_holding);
        arpc_u64_map_fini(&g->g_where);
        arpc_u64_map_fini(&g->g_owner_of);
    }
    *g = (struct arpc_rc_gone){0};
}

static int arrays_make(struct arpc_rc_gone *g)
{
    g->g_slots = arpc_malloc(ARPC_RC_GONE_MAX * sizeof(*g->g_slots));
    g->g_owners = arpc_malloc(OWNERS * sizeof(*g->g_owners));
    g->g_holding = arpc_malloc((ARPC_RC_GONE_MAX + 1) * sizeof(*g->g_holding));
    bool where = false;
    if (g->g_slots != NULL && g->g_owners != NULL && g->g_holding != NULL &&
        (where = arpc_u64_map_init(&g->g_where, ARPC_RC_GONE_MAX) == ARPC_OK) &&
        arpc_u64_map_init(&g->g_owner_of, 16) == ARPC_OK) {
        for (size_t n = 0; n <= ARPC_RC_GONE_MAX; n++)
            g->g_holding[n] = NONE;
        g->g_free = g->g_owner_free = g->g_unowned = NONE;
        return ARPC_OK;
    }
    if (where)
        arpc_u64_map_fini(&g->g_where);
    arpc_free(g->g_slots);
    arpc_free(g->g_owners);
    arpc_free(g->g_holding);
    *g = (struct arpc_rc_gone){0};
    return ARPC_ENOMEM;
}

static struct arpc_rc_gone_slot *slot_of(const struct arpc_rc_gone *g, uint64_t client)
{
    if (g->g_slots == NULL)
        return NULL;
    uintptr_t where = (uintptr_t)arpc_u64_map_get(&g->g_where, client);
    return where != 0 ? &g->g_slots[where - 1] : NULL;
}

/* ---- owners ---- */

/* The record of owner, or NONE. */
static uint16_t owner_find(const struct arpc_rc_gone *g, uint64_t owner)
{
    if (owner == 0)
        return g->g_unowned;
    uintptr_t at = (uintptr_t)arpc_u64_map_get(&g->g_owner_of, owner);
    return at != 0 ? (uint16_t)(at - 1) : NONE;
}

/* The record of owner, made (holding nothing) if it has none; NONE without memory. There is
 * always a record to take: at most ARPC_RC_GONE_MAX owners hold goodbyes, and the adder. */
static uint16_t owner_get(struct arpc_rc_gone *g, uint64_t owner)
{
    uint16_t o = owner_find(g, owner);
    if (o != NONE)
        return o;
    o = g->g_owner_free != NONE ? g->g_owner_free : g->g_owner_fresh;
    assert(o < OWNERS);
    if (owner != 0 && arpc_u64_map_put(&g->g_owner_of, owner, (void *)(uintptr_t)(o + 1)) != ARPC_OK)
        return NONE;
    if (o == g->g_owner_free)
        g->g_owner_free = g->g_owners[o].go_more;
    else
        g->g_owner_fresh++;
    if (owner == 0)
        g->g_unowned = o;
    g->g_owners[o] = (struct arpc_rc_gone_owner){
        .go_key = owner, .go_oldest = NONE, .go_newest = NONE, .go_fewer = NONE, .go_more = NONE};
    return o;
}

/* Frees o, an owner holding nothing. */
static void owner_free(struct arpc_rc_gone *g, uint16_t o)
{
    struct arpc_rc_gone_owner *r = &g->g_owners[o];
    if (r->go_key == 0)
        g->g_unowned = NONE;
    else
        (void)arpc_u64_map_take(&g->g_owner_of, r->go_key);
    r->go_more = g->g_owner_free;
    g->g_owner_free = o;
}

/* Out of the list of owners holding as many as o. */
static void holding_unlink(struct arpc_rc_gone *g, uint16_t o)
{
    struct arpc_rc_gone_owner *r = &g->g_owners[o];
    if (r->go_fewer != NONE)
        g->g_owners[r->go_fewer].go_more = r->go_more;
    else
        g->g_holding[r->go_count] = r->go_more;
    if (r->go_more != NONE)
        g->g_owners[r->go_more].go_fewer = r->go_fewer;
}

/* o holds one goodbye more (+1) or one less (-1): it moves to the next list. */
static void holding_add(struct arpc_rc_gone *g, uint16_t o, int delta)
{
    struct arpc_rc_gone_owner *r = &g->g_owners[o];
    if (r->go_count > 0)
        holding_unlink(g, o);
    r->go_count = (uint16_t)(r->go_count + delta);
    if (delta > 0 && r->go_count > g->g_most)
        g->g_most = r->go_count;
    else if (delta < 0 && r->go_count + 1 == g->g_most && g->g_holding[g->g_most] == NONE)
        g->g_most = r->go_count; /* it was the last to hold the most: now the most is one less */
    if (r->go_count > 0) {
        r->go_fewer = NONE;
        r->go_more = g->g_holding[r->go_count];
        if (r->go_more != NONE)
            g->g_owners[r->go_more].go_fewer = o;
        g->g_holding[r->go_count] = o;
    }
}

/* The owner to give up a goodbye for the adder's (a full set): one holding the most; the
 * adder itself among them (what it takes from another is then never more than the other
 * keeps), else the oldest goodbye's owner (so that alone, the oldest goes), else any. */
static uint16_t most_holding(const struct arpc_rc_gone *g, uint16_t adder)
{
    if (g->g_owners[adder].go_count == g->g_most)
        return adder;
    uint16_t oldest = g->g_slots[g->g_oldest].gs_owner;
    return g->g_owners[oldest].go_count == g->g_most ? oldest : g->g_holding[g->g_most];
}

/* ---- the lists of goodbyes ---- */

static void slot_link(struct arpc_rc_gone *g, uint16_t n)
{
    struct arpc_rc_gone_slot *s = &g->g_slots[n];
    struct arpc_rc_gone_owner *r = &g->g_owners[s->gs_owner];
    s->gs_newer = NONE;
    s->gs_older = g->g_count > 0 ? g->g_newest : NONE;
    if (g->g_count > 0)
        g->g_slots[g->g_newest].gs_newer = n;
    else
        g->g_oldest = n;
    g->g_newest = n;
    g->g_count++;
    s->gs_owner_newer = NONE;
    s->gs_owner_older = r->go_newest;
    if (r->go_newest != NONE)
        g->g_slots[r->go_newest].gs_owner_newer = n;
    else
        r->go_oldest = n;
    r->go_newest = n;
    holding_add(g, s->gs_owner, +1);
}

/* Takes slot n, in use, out of the set; it is free then, on no list. */
static void slot_drop(struct arpc_rc_gone *g, uint16_t n)
{
    struct arpc_rc_gone_slot *s = &g->g_slots[n];
    struct arpc_rc_gone_owner *r = &g->g_owners[s->gs_owner];
    (void)arpc_u64_map_take(&g->g_where, s->gs_client);
    if (s->gs_older != NONE)
        g->g_slots[s->gs_older].gs_newer = s->gs_newer;
    else
        g->g_oldest = s->gs_newer;
    if (s->gs_newer != NONE)
        g->g_slots[s->gs_newer].gs_older = s->gs_older;
    else
        g->g_newest = s->gs_older;
    g->g_count--;
    if (s->gs_owner_older != NONE)
        g->g_slots[s->gs_owner_older].gs_owner_newer = s->gs_owner_newer;
    else
        r->go_oldest = s->gs_owner_newer;
    if (s->gs_owner_newer != NONE)
        g->g_slots[s->gs_owner_newer].gs_owner_older = s->gs_owner_older;
    else
        r->go_newest = s->gs_owner_older;
    holding_add(g, s->gs_owner, -1);
    s->gs_client = 0;
}

static void slot_give_back(struct arpc_rc_gone *g, uint16_t n)
{
    g->g_slots[n].gs_newer = g->g_free;
    g->g_free = n;
}

/* A slot for the next goodbye, of owner record adder: one given back, one never used, or
 * (full) the oldest of the owner holding the most, dropped. */
static uint16_t slot_claim(struct arpc_rc_gone *g, uint16_t adder)
{
    uint16_t n = g->g_free;
    if (n != NONE) {
        g->g_free = g->g_slots[n].gs_newer;
        return n;
    }
    if (g->g_fresh < ARPC_RC_GONE_MAX)
        return g->g_fresh++;
    uint16_t victim = most_holding(g, adder);
    n = g->g_owners[victim].go_oldest;
    slot_drop(g, n);
    if (g->g_owners[victim].go_count == 0 && victim != adder)
        owner_free(g, victim);
    return n;
}

/* ---- the set ---- */

int arpc_rc_gone_put(struct arpc_rc_gone *g, uint64_t client, uint64_t floor, uint64_t owner)
{
    if (g->g_slots == NULL && arrays_make(g) != ARPC_OK)
        return ARPC_ENOMEM;
    struct arpc_rc_gone_slot *s = slot_of(g, client);
    if (s != NULL) { /* a second goodbye: the same place, the higher floor */
        if (floor > s->gs_floor)
            s->gs_floor = floor;
        return ARPC_OK;
    }
    uint16_t adder = owner_get(g, owner);
    if (adder == NONE)
        return ARPC_ENOMEM; /* (nothing changed) */
    uint16_t n = slot_claim(g, adder);
    int rc = arpc_u64_map_put(&g->g_where, client, (void *)(uintptr_t)(n + 1));
    assert(rc == ARPC_OK); /* made with room for every slot, the map never grows */
    (void)rc;
    g->g_slots[n] = (struct arpc_rc_gone_slot){.gs_client = client, .gs_floor = floor, .gs_owner = adder};
    slot_link(g, n);
    return ARPC_OK;
}

uint64_t arpc_rc_gone_floor(const struct arpc_rc_gone *g, uint64_t client)
{
    const struct arpc_rc_gone_slot *s = slot_of(g, client);
    return s != NULL ? s->gs_floor : 0;
}

void arpc_rc_gone_take(struct arpc_rc_gone *g, uint64_t client)
{
    struct arpc_rc_gone_slot *s = slot_of(g, client);
    if (s == NULL)
        return;
    uint16_t n = (uint16_t)(s - g->g_slots), o = s->gs_owner;
    slot_drop(g, n);
    slot_give_back(g, n);
    if (g->g_owners[o].go_count == 0)
        owner_free(g, o);
}

bool arpc_rc_gone_next(const struct arpc_rc_gone *g, size_t *pos, uint64_t *client, uint64_t *floor,
                       uint64_t *owner)
{
    /* *pos: 0 before the first, else the slot last given + 1. */
    if (g->g_count == 0)
        return false;
    uint16_t at = *pos == 0 ? g->g_oldest : g->g_slots[*pos - 1].gs_newer;
    if (at == NONE)
        return false;
    const struct arpc_rc_gone_slot *s = &g->g_slots[at];
    *client = s->gs_client;
    *floor = s->gs_floor;
    if (owner != NULL)
        *owner = g->g_owners[s->gs_owner].go_key;
    *pos = (size_t)at + 1;
    return true;
}
