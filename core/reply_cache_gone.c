/* The clients that said goodbye (core/reply_cache_gone.h). */
#include "core/reply_cache_gone.h"

#include <assert.h>

#include "arpc/error.h"
#include "base/alloc.h"

void arpc_rc_gone_fini(struct arpc_rc_gone *g)
{
    if (g->g_ring == NULL)
        return;
    arpc_free(g->g_ring);
    arpc_u64_map_fini(&g->g_where);
    if (g->g_fair)
        arpc_u64_map_fini(&g->g_owners);
    g->g_ring = NULL;
}

void arpc_rc_gone_fair(struct arpc_rc_gone *g)
{
    assert(g->g_ring == NULL);
    g->g_fair = true;
}

static struct arpc_rc_gone_slot *slot_of(const struct arpc_rc_gone *g, uint64_t client)
{
    if (g->g_ring == NULL)
        return NULL;
    uintptr_t where = (uintptr_t)arpc_u64_map_get(&g->g_where, client);
    return where != 0 ? &g->g_ring[where - 1] : NULL;
}

/* ---- fair: the slots each owner holds ---- */

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
 * tie: what the adder takes from it is never more than it keeps. */
static void most_owned(const struct arpc_rc_gone *g, uint64_t *owner)
{
    size_t most = owned(g, *owner);
    if (g->g_unowned > most)
        most = g->g_unowned, *owner = 0;
    uint64_t key;
    void *n;
    for (size_t pos = 0; arpc_u64_map_next(&g->g_owners, &pos, &key, &n);)
        if ((size_t)(uintptr_t)n > most)
            most = (size_t)(uintptr_t)n, *owner = key;
}

/* Whether the adder's group is the only one holding slots (a server without authentication,
 * or with one identity): then the oldest place is its own to take. */
static bool alone_in(const struct arpc_rc_gone *g, uint64_t owner)
{
    size_t identities = arpc_u64_map_count(&g->g_owners) - (owner != 0 && owned(g, owner) > 0);
    return identities == 0 && (owner == 0 || g->g_unowned == 0);
}

/* The oldest slot of an owner that holds one, by age: a goodbye put in the place of another
 * sits out of the ring's order. A look at every slot, only when the set has no room. */
static struct arpc_rc_gone_slot *oldest_of(struct arpc_rc_gone *g, uint64_t owner)
{
    struct arpc_rc_gone_slot *oldest = NULL;
    for (size_t i = 0; i < ARPC_RC_GONE_MAX; i++) {
        struct arpc_rc_gone_slot *s = &g->g_ring[i];
        if (s->gs_client != 0 && s->gs_owner == owner &&
            (oldest == NULL || s->gs_age < oldest->gs_age))
            oldest = s;
    }
    return oldest;
}

/* ---- the set ---- */

/* Empties s, a slot in use. */
static void slot_drop(struct arpc_rc_gone *g, struct arpc_rc_gone_slot *s)
{
    arpc_u64_map_take(&g->g_where, s->gs_client);
    if (g->g_fair)
        (void)owned_add(g, s->gs_owner, -1);
    s->gs_client = 0;
    g->g_count--;
}

static int ring_make(struct arpc_rc_gone *g)
{
    g->g_ring = arpc_calloc(ARPC_RC_GONE_MAX, sizeof(*g->g_ring));
    if (g->g_ring == NULL)
        return ARPC_ENOMEM;
    if (arpc_u64_map_init(&g->g_where, ARPC_RC_GONE_MAX) != ARPC_OK) {
        arpc_free(g->g_ring);
        g->g_ring = NULL;
        return ARPC_ENOMEM;
    }
    if (g->g_fair && arpc_u64_map_init(&g->g_owners, 16) != ARPC_OK) {
        arpc_u64_map_fini(&g->g_where);
        arpc_free(g->g_ring);
        g->g_ring = NULL;
        return ARPC_ENOMEM;
    }
    return ARPC_OK;
}

int arpc_rc_gone_put(struct arpc_rc_gone *g, uint64_t client, uint64_t floor, uint64_t owner)
{
    if (g->g_ring == NULL && ring_make(g) != ARPC_OK)
        return ARPC_ENOMEM;
    struct arpc_rc_gone_slot *s = slot_of(g, client);
    if (s != NULL) { /* a second goodbye: the same slot, the higher floor */
        if (floor > s->gs_floor)
            s->gs_floor = floor;
        return ARPC_OK;
    }
    s = &g->g_ring[g->g_next];
    struct arpc_rc_gone_slot *v = s;
    if (s->gs_client != 0 && g->g_fair && g->g_count < ARPC_RC_GONE_MAX) {
        /* The oldest place taken but room elsewhere (a client back left it): there. */
        for (size_t i = 1; v->gs_client != 0; i++)
            v = &g->g_ring[(g->g_next + i) % ARPC_RC_GONE_MAX];
    } else if (s->gs_client != 0 && g->g_fair && !alone_in(g, owner)) {
        /* No room: the owner holding the most gives up its oldest. A look at every owner and
         * slot (~10-30 us once full, on the loop: bounded, and only with owners besides the
         * adder; alone, the oldest place is taken, in constant time, as without owners). */
        uint64_t victim = owner;
        most_owned(g, &victim);
        v = oldest_of(g, victim);
        assert(v != NULL); /* it holds the most, and the ring is not empty */
    }
    if (g->g_fair && owned_add(g, owner, +1) != ARPC_OK)
        return ARPC_ENOMEM; /* (nothing changed yet) */
    s = v; /* elsewhere than the ring's next place, that place stays the oldest's */
    size_t at = (size_t)(s - g->g_ring);
    if (s->gs_client != 0)
        slot_drop(g, s); /* the oldest goodbye (or the most holding owner's) is dropped */
    if (at == g->g_next)
        g->g_next = (g->g_next + 1) % ARPC_RC_GONE_MAX;
    /* Made with room for every slot, the map never grows: this does not fail. */
    if (arpc_u64_map_put(&g->g_where, client, (void *)(uintptr_t)(at + 1)) != ARPC_OK) {
        if (g->g_fair)
            (void)owned_add(g, owner, -1);
        return ARPC_ENOMEM;
    }
    *s = (struct arpc_rc_gone_slot){.gs_client = client, .gs_floor = floor, .gs_owner = owner, .gs_age = g->g_age++};
    g->g_count++;
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
    if (s != NULL)
        slot_drop(g, s);
}

bool arpc_rc_gone_next(const struct arpc_rc_gone *g, size_t *pos, uint64_t *client, uint64_t *floor)
{
    for (; g->g_ring != NULL && *pos < ARPC_RC_GONE_MAX; (*pos)++) {
        const struct arpc_rc_gone_slot *s = &g->g_ring[(g->g_next + *pos) % ARPC_RC_GONE_MAX];
        if (s->gs_client != 0) {
            *client = s->gs_client;
            *floor = s->gs_floor;
            (*pos)++;
            return true;
        }
    }
    return false;
}
