/* The clients that said goodbye (core/reply_cache_gone.h). */
#include "core/reply_cache_gone.h"

#include "arpc/error.h"
#include "base/alloc.h"

void arpc_rc_gone_fini(struct arpc_rc_gone *g)
{
    if (g->g_ring == NULL)
        return;
    arpc_free(g->g_ring);
    arpc_u64_map_fini(&g->g_where);
    g->g_ring = NULL;
}

static struct arpc_rc_gone_slot *slot_of(const struct arpc_rc_gone *g, uint64_t client)
{
    if (g->g_ring == NULL)
        return NULL;
    uintptr_t where = (uintptr_t)arpc_u64_map_get(&g->g_where, client);
    return where != 0 ? &g->g_ring[where - 1] : NULL;
}

int arpc_rc_gone_put(struct arpc_rc_gone *g, uint64_t client, uint64_t floor)
{
    if (g->g_ring == NULL) {
        g->g_ring = arpc_calloc(ARPC_RC_GONE_MAX, sizeof(*g->g_ring));
        if (g->g_ring == NULL)
            return ARPC_ENOMEM;
        if (arpc_u64_map_init(&g->g_where, ARPC_RC_GONE_MAX) != ARPC_OK) {
            arpc_free(g->g_ring);
            g->g_ring = NULL;
            return ARPC_ENOMEM;
        }
    }
    struct arpc_rc_gone_slot *s = slot_of(g, client);
    if (s != NULL) { /* a second goodbye: the same slot, the higher floor */
        if (floor > s->gs_floor)
            s->gs_floor = floor;
        return ARPC_OK;
    }
    s = &g->g_ring[g->g_next];
    if (s->gs_client != 0) {
        arpc_u64_map_take(&g->g_where, s->gs_client); /* the oldest goodbye is dropped */
        g->g_count--;
    }
    /* Made with room for every slot, the map never grows: this does not fail. */
    if (arpc_u64_map_put(&g->g_where, client, (void *)(uintptr_t)(g->g_next + 1)) != ARPC_OK) {
        s->gs_client = 0;
        return ARPC_ENOMEM;
    }
    *s = (struct arpc_rc_gone_slot){.gs_client = client, .gs_floor = floor};
    g->g_count++;
    g->g_next = (g->g_next + 1) % ARPC_RC_GONE_MAX;
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
    arpc_u64_map_take(&g->g_where, client);
    s->gs_client = 0;
    g->g_count--;
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
