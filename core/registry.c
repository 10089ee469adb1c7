/* The server's method registry (core/registry.h): methods by name, found through an
 * open-addressing index rebuilt at each registration. */
#include "core/registry.h"

#include <string.h>

#include "arpc/error.h"
#include "async/actor_internal.h"
#include "async/cq_internal.h"
#include "base/alloc.h"
#include "base/name_hash.h"
#include "core/stats.h"

void arpc_registry_init(struct arpc_registry *r) { memset(r, 0, sizeof(*r)); }

/* The actor, group or queue a method is routed to is used from its registration until the server's
 * stop is over (arpc_registry_routes_done): a destroy meanwhile is refused (async/actor.c). */
static void registry_route_users(const struct arpc_method *m, int n)
{
    if (m->m_actor != NULL)
        arpc_actor_users_add(m->m_actor, n);
    if (m->m_group != NULL)
        arpc_actor_group_users_add(m->m_group, n);
    if (m->m_queue != NULL)
        arpc_cq_users_add(m->m_queue, n);
}

void arpc_registry_routes_done(struct arpc_registry *r)
{
    for (size_t i = 0; i < r->r_count; i++)
        registry_route_users(r->r_methods[i], -1);
}

void arpc_registry_fini(struct arpc_registry *r)
{
    for (size_t i = 0; i < r->r_count; i++) {
        if (r->r_methods[i]->m_ctx_free != NULL)
            r->r_methods[i]->m_ctx_free(r->r_methods[i]->m_ctx);
        arpc_free(r->r_methods[i]->m_name);
        arpc_free(r->r_methods[i]->m_stats);
        arpc_free(r->r_methods[i]);
    }
    arpc_free(r->r_methods);
    arpc_free(r->r_index);
    memset(r, 0, sizeof(*r));
}

const struct arpc_method *arpc_registry_find(const struct arpc_registry *r, const char *name, size_t len)
{
    if (r->r_index_cap == 0)
        return NULL;
    size_t mask = r->r_index_cap - 1;
    for (size_t i = arpc_name_hash(name, len) & mask;; i = (i + 1) & mask) {
        size_t slot = r->r_index[i];
        if (slot == 0)
            return NULL;
        const struct arpc_method *m = r->r_methods[slot - 1];
        if (m->m_name_len == len && arpc_name_equal(m->m_name, name, len))
            return m;
    }
}

const struct arpc_method *arpc_registry_find_near(const struct arpc_registry *r, const char *name, size_t len,
                                                  const struct arpc_method **last)
{
    const struct arpc_method *m = *last;
    if (m != NULL && m->m_name_len == len && arpc_name_equal(m->m_name, name, len))
        return m;
    m = arpc_registry_find(r, name, len);
    if (m != NULL)
        *last = m;
    return m;
}

/* Rebuilds the index at a load factor of at most one half (registration is a cold path). */
static int registry_reindex(struct arpc_registry *r)
{
    size_t cap = 16;
    while (cap < r->r_count * 2)
        cap *= 2;
    size_t *index = arpc_calloc(cap, sizeof(*index));
    if (index == NULL)
        return ARPC_ENOMEM;
    for (size_t k = 0; k < r->r_count; k++) {
        const struct arpc_method *m = r->r_methods[k];
        size_t i = arpc_name_hash(m->m_name, m->m_name_len) & (cap - 1);
        while (index[i] != 0)
            i = (i + 1) & (cap - 1);
        index[i] = k + 1;
    }
    arpc_free(r->r_index);
    r->r_index = index;
    r->r_index_cap = cap;
    return ARPC_OK;
}

int arpc_registry_add(struct arpc_registry *r, const char *name, arpc_handler_fn fn, void *ctx,
                      const arpc_method_options *mopts)
{
    size_t len = strlen(name);
    if (arpc_registry_find(r, name, len) != NULL)
        return ARPC_EBUSY;
    struct arpc_method *m = arpc_calloc(1, sizeof(*m));
    struct arpc_method **methods = arpc_realloc(r->r_methods, (r->r_count + 1) * sizeof(*methods));
    if (m == NULL || methods == NULL || (m->m_name = arpc_malloc(len + 1)) == NULL ||
        (m->m_stats = arpc_malloc(sizeof(*m->m_stats))) == NULL) {
        if (m != NULL)
            arpc_free(m->m_name);
        arpc_free(m);
        if (methods != NULL)
            r->r_methods = methods;
        return ARPC_ENOMEM;
    }
    r->r_methods = methods;
    memset(m->m_stats, 0, sizeof(*m->m_stats));
    arpc_hist_init(&m->m_stats->ms_latency);
    memcpy(m->m_name, name, len + 1);
    m->m_name_len = len;
    m->m_fn = fn;
    m->m_ctx = ctx;
    if (mopts != NULL) {
        m->m_actor = mopts->actor;
        m->m_group = mopts->group;
        m->m_queue = mopts->queue;
        m->m_inline = mopts->inline_on_loop;
        m->m_key = mopts->key;
        m->m_reply_est = mopts->reply_bytes_hint;
        m->m_ctx_free = mopts->ctx_free;
        m->m_numbered_only = mopts->numbered_only;
        m->m_read_only = mopts->read_only;
    }
    r->r_methods[r->r_count++] = m;
    if (registry_reindex(r) != ARPC_OK) {
        r->r_count--;
        arpc_free(m->m_stats);
        arpc_free(m->m_name);
        arpc_free(m);
        return ARPC_ENOMEM;
    }
    registry_route_users(m, 1);
    return ARPC_OK;
}
