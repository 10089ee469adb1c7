/*
 * The server's method registry: name -> handler binding. Written only before the server
 * starts listening, read without locks afterwards (by the loop thread).
 */
#ifndef ARPC_CORE_REGISTRY_H
#define ARPC_CORE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "arpc/server.h"

struct method_stats;

struct arpc_method {
    char *m_name; /* NUL-terminated copy */
    size_t m_name_len;
    arpc_handler_fn m_fn;
    void *m_ctx;
    arpc_actor *m_actor;       /* one of these three routes, or the server's pool */
    arpc_actor_group *m_group;
    arpc_cq *m_queue;          /* requests delivered to this queue (then m_fn is the server's) */
    int m_inline;
    arpc_key_fn m_key;         /* post by key to m_group (or the pool) */
    void (*m_ctx_free)(void *ctx); /* run on m_ctx at arpc_registry_fini */
    struct method_stats *m_stats; /* written by the server's loop thread (core/stats.h) */
    /* Loop thread, after listen too (unlike the rest): the size its replies are expected to
     * have, for the bytes a call owes (core/server_inflight.c); 0: none seen yet. */
    size_t m_reply_est;
    bool m_numbered_only; /* refuse calls that are not at-most-once (arpc_method_options) */
    bool m_read_only;     /* the built-ins and arpc_method_options.read_only: a numbered call
                           * to one is answered as an unnumbered one (core/server_builtin.c
                           * says why) */
};

struct arpc_registry {
    struct arpc_method **r_methods;
    size_t r_count;
    size_t *r_index; /* open addressing: position + 1 into r_methods, 0 = empty */
    size_t r_index_cap;
};

void arpc_registry_init(struct arpc_registry *r);
void arpc_registry_fini(struct arpc_registry *r);
/* The server's stop is over: nothing is posted to the methods' actors, groups and queues any
 * more, which may then be destroyed. Once, after the last registration. */
void arpc_registry_routes_done(struct arpc_registry *r);
/* ARPC_OK, ARPC_EBUSY (name taken), ARPC_ENOMEM. */
int arpc_registry_add(struct arpc_registry *r, const char *name, arpc_handler_fn fn, void *ctx,
                      const arpc_method_options *mopts);
const struct arpc_method *arpc_registry_find(const struct arpc_registry *r, const char *name, size_t len);
/* arpc_registry_find that first tries *last, the method its caller found the time before (a
 * connection's calls mostly name one method: the name is compared, not hashed), and keeps
 * what it finds there. *last may be NULL; methods are never removed while the registry lives. */
const struct arpc_method *arpc_registry_find_near(const struct arpc_registry *r, const char *name, size_t len,
                                                  const struct arpc_method **last);

#endif
