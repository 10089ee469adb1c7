/* The clients that said goodbye (core/reply_cache_gone.h). */
#include "core/reply_cache_gone.h"

#include <assert.h>

#include "arpc/error.h"
#include "base/alloc.h"

void arpc_rc_gone_fini(struct arpc_rc_gone *g)
{
    if (g->g_slots == NULL)
        return;
    arpc_free(g->g_slots);
    arpc_u64_map_fini(&g->g_where);
    arpc_u64_map_fini(&g->g_owners);
    g->g_slots = NULL;
}

static struct arpc_rc_gone_slot *slot_of(const struct arpc_rc_gone *g, uint64_t client)
{
    if (g->g_slots == NULL)
        return NULL;
    uintptr_t where = (uintptr_t)arpc_u64_map_get(&g->g_where, client);
    return where != 0 ? &g->g_slots[where - 1] : NULL;
}

static uint32_t number_of(const struct arpc_rc_gone *g, const struct arpc_rc_gone_slot *s)
{
    return (uint32_t)(s - g->g_slots);
}

/* ---- the slots each owner holds ---- */

static size_t owned(const struct arpc_rc_gone *g, uint64_t owner)
{
    return owner == 0 ? g->g_unowned : (size_t)(uintptr_t)arpc_u64_map_get(&g->g_owners, owner);
}

/* One slot more (ARPC_ENOMEM: not counted; only an owner's first) or one less. */
static int owned_add(struct arpc_rc_gone *g, uint64_t owner, int delta)
{
    if (owner == 0) {
        g->g_unowned += (size_t)delta;
        return ARPC_OK;
    }
    size_t n = owned(g, owner) + (size_t)delta;
    /* Taken and put back: a put into the room a take just made never grows the map. */
    (void)arpc_u64_map_take(&g->g_owners, owner);
    return n == 0 ? ARPC_OK : arpc_u64_map_put(&g->g_owners, owner, (void *)(uintptr_t)n);
}

/* The owner holding the most slots (in *owner, the adder's on the way in), the adder's own on a
 * tie (what the adder takes from it is never more than it keeps), else the oldest goodbye's
 * (found first by victim_for's walk). A look at every owner. */
static void most_owned(const struct arpc_rc_gone *g, uint64_t *owner)
{
    size_t most = owned(g, *owner);
    uint64_t oldest = g->g_slots[g->g_oldest].gs_owner;
    if (owned(g, oldest) > most)
        most = owned(g, oldest), *owner = oldest;
    if (g->g_unowned > most)
        most = g->g_unowned, *owner = 0;
    uint64_t key;
    void *n;
    for (size_t pos = 0; arpc_u64_map_next(&g->g_owners, &pos, &key, &n);)
        if ((size_t)(uintptr_t)n > most)
            most = (size_t)(uintptr_t)n, *owner = key;
}

/* Whether the adder's group is the only one holding slots (a server without authentication,
 * or with one identity): then the oldest is its own to give up, in constant time. */
static bool alone_in(const struct arpc_rc_gone *g, uint64_t owner)
{
    size_t identities = arpc_u64_map_count(&g->g_owners) - (owner != 0 && owned(g, owner) > 0);
    return identities == 0 && (owner == 0 || g->g_unowned == 0);
}

/* The goodbye to drop for the adder's when the set is full: the oldest of the owner holding
 * the most. Walks the age list from the oldest: the owner holding the most has its oldest
 * among the first few unless others' crowd the old end (bounded by the set's size). */
static struct arpc_rc_gone_slot *victim_for(struct arpc_rc_gone *g, uint64_t owner)
{
    struct arpc_rc_gone_slot *s = &g->g_slots[g->g_oldest];
    if (alone_in(g, owner))
        return s;
    most_owned(g, &owner);
    while (s->gs_owner != owner) {
        assert(s->gs_newer != ARPC_RC_GONE_NONE); /* it holds the most: at least one */
        s = &g->g_slots[s->gs_newer];
    }
    return s;
}

/* ---- the age list ---- */

static void age_append(struct arpc_rc_gone *g, struct arpc_rc_gone_slot *s)
{
    uint32_t n = number_of(g, s);
    s->gs_newer = ARPC_RC_GONE_NONE;
    s->gs_older = g->g_count > 0 ? g->g_newest : ARPC_RC_GONE_NONE;
    if (g->g_count > 0)
        g->g_slots[g->g_newest].gs_newer = n;
    else
        g->g_oldest = n;
    g->g_newest = n;
    g->g_count++;
}

/* Takes s, a slot in use, out of the set; it is free then, not yet on the free list. */
static void slot_drop(struct arpc_rc_gone *g, struct arpc_rc_gone_slot *s)
{
    arpc_u64_map_take(&g->g_where, s->gs_client);
    (void)owned_add(g, s->gs_owner, -1);
    if (s->gs_older != ARPC_RC_GONE_NONE)
        g->g_slots[s->gs_older].gs_newer = s->gs_newer;
    else
        g->g_oldest = s->gs_newer;
    if (s->gs_newer != ARPC_RC_GONE_NONE)
        g->g_slots[s->gs_newer].gs_older = s->gs_older;
    else
        g->g_newest = s->gs_older;
    s->gs_client = 0;
    g->g_count--;
}

/* ---- the set ---- */

static int slots_make(struct arpc_rc_gone *g)
{
    g->g_slots = arpc_malloc(ARPC_RC_GONE_MAX * sizeof(*g->g_slots));
    if (g->g_slots == NULL)
        return ARPC_ENOMEM;
    if (arpc_u64_map_init(&g->g_where, ARPC_RC_GONE_MAX) != ARPC_OK)
        goto fail;
    if (arpc_u64_map_init(&g->g_owners, 16) != ARPC_OK) {
        arpc_u64_map_fini(&g->g_where);
        goto fail;
    }
    g->g_free = ARPC_RC_GONE_NONE;
    g->g_fresh = 0;
    return ARPC_OK;
fail:
    arpc_free(g->g_slots);
    g->g_slots = NULL;
    return ARPC_ENOMEM;
}

/* Where the next goodbye goes: a slot given back, one never used, or (full) the oldest of
 * the owner holding the most. Changes nothing: slot_claim takes it. */
static struct arpc_rc_gone_slot *slot_for(struct arpc_rc_gone *g, uint64_t owner)
{
    if (g->g_free != ARPC_RC_GONE_NONE)
        return &g->g_slots[g->g_free];
    if (g->g_fresh < ARPC_RC_GONE_MAX)
        return &g->g_slots[g->g_fresh];
    return victim_for(g, owner);
}

static void slot_claim(struct arpc_rc_gone *g, struct arpc_rc_gone_slot *s)
{
    uint32_t n = number_of(g, s);
    if (n == g->g_free)
        g->g_free = s->gs_newer;
    else if (n == g->g_fresh)
        g->g_fresh++;
    else
        slot_drop(g, s); /* the oldest goodbye (or the most holding owner's) is dropped */
}

static void slot_give_back(struct arpc_rc_gone *g, struct arpc_rc_gone_slot *s)
{
    s->gs_newer = g->g_free;
    g->g_free = number_of(g, s);
}

int arpc_rc_gone_put(struct arpc_rc_gone *g, uint64_t client, uint64_t floor, uint64_t owner)
{
    if (g->g_slots == NULL && slots_make(g) != ARPC_OK)
        return ARPC_ENOMEM;
    struct arpc_rc_gone_slot *s = slot_of(g, client);
    if (s != NULL) { /* a second goodbye: the same place, the higher floor */
        if (floor > s->gs_floor)
            s->gs_floor = floor;
        return ARPC_OK;
    }
    s = slot_for(g, owner);
    if (owned_add(g, owner, +1) != ARPC_OK)
        return ARPC_ENOMEM; /* (nothing changed yet) */
    slot_claim(g, s);
    /* Made with room for every slot, the map never grows: this does not fail. */
    if (arpc_u64_map_put(&g->g_where, client, (void *)(uintptr_t)(number_of(g, s) + 1)) != ARPC_OK) {
        (void)owned_add(g, owner, -1);
        slot_give_back(g, s);
        return ARPC_ENOMEM;
    }
    s->gs_client = client;
    s->gs_floor = floor;
    s->gs_owner = owner;
    age_append(g, s);
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
    slot_drop(g, s);
    slot_give_back(g, s);
}

bool arpc_rc_gone_next(const struct arpc_rc_gone *g, size_t *pos, uint64_t *client, uint64_t *floor,
                       uint64_t *owner)
{
    /* *pos: 0 before the first, else the slot last given + 1. */
    uint32_t at = *pos == 0 ? (g->g_count > 0 ? g->g_oldest : ARPC_RC_GONE_NONE)
                            : g->g_slots[*pos - 1].gs_newer;
    if (at == ARPC_RC_GONE_NONE)
        return false;
    const struct arpc_rc_gone_slot *s = &g->g_slots[at];
    *client = s->gs_client;
    *floor = s->gs_floor;
    if (owner != NULL)
        *owner = s->gs_owner;
    *pos = (size_t)at + 1;
    return true;
}
