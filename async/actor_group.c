/*
 * Actor groups: a fixed array of actors behind the public actor API.
 *
 * post spreads messages round-robin with one shared atomic counter (relaxed: only the
 * spread matters, not an order). post_key hashes the key so that keys differing only in
 * their low or high bits still spread evenly, then maps the hash onto [0, n) with a
 * multiply-shift instead of a division.
 *
 * stop goes member by member through arpc_actor_stop: members later in the array keep
 * running (and accepting posts) until their turn. Each member's exactly-once contract holds
 * on its own, which is all the group promises.
 */
#define _GNU_SOURCE
#include "async/actor_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/fork_gen.h"
#include "base/handle.h"
#include "base/log.h"
#include "base/options.h"

struct arpc_actor_group {
    arpc_magic g_magic; /* first (base/handle.h) */
    atomic_uint g_next; /* round-robin cursor, any thread */
    unsigned g_n;
    unsigned g_fork_gen; /* the process it was made in (base/fork_gen.h): group_live */
    atomic_uint g_users; /* servers' methods routed here (arpc_actor_group_users_add) */
    arpc_actor *g_members[]; /* g_n actors, fixed for the group's life */
};

static unsigned group_default_size(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus <= 0 ? 1 : cpus > ARPC_ACTOR_GROUP_MAX ? ARPC_ACTOR_GROUP_MAX : (unsigned)cpus;
}

/* "name-3": the member index survives truncation to the 15 characters Linux keeps. */
static void group_member_name(char out[16], const char *name, unsigned i)
{
    char suffix[12];
    int slen = snprintf(suffix, sizeof(suffix), "-%u", i);
    int keep = 15 - slen;
    snprintf(out, 16, "%.*s%s", keep, name, suffix);
}

int arpc_actor_group_create_v(arpc_actor_group **out, unsigned n, const arpc_actor_options *caller_opts,
                              size_t opts_size)
{
    arpc_actor_options copy;
    int opts_rc = arpc_options_copy(&copy, sizeof(copy), caller_opts, opts_size);
    const arpc_actor_options *opts = caller_opts != NULL ? &copy : NULL;
    if (out == NULL)
        return ARPC_EINVAL;
    *out = NULL;
    if (opts_rc != ARPC_OK)
        return opts_rc;
    if (n > ARPC_ACTOR_GROUP_MAX) {
        /* Before any allocation or thread: n threads would start, or fail after many did. */
        arpc_log(ARPC_LOG_WARN, "cannot create an actor group of %u actors: at most %u (ARPC_ACTOR_GROUP_MAX)", n,
                 ARPC_ACTOR_GROUP_MAX);
        return ARPC_EINVAL;
    }
    if (n == 0)
        n = group_default_size();
    arpc_actor_group *g = arpc_calloc(1, sizeof(*g) + (size_t)n * sizeof(g->g_members[0]));
    if (g == NULL)
        return ARPC_ENOMEM;
    atomic_init(&g->g_magic, ARPC_MAGIC_GROUP);
    g->g_fork_gen = arpc_fork_gen_start();
    atomic_init(&g->g_next, 0);
    g->g_n = n;

    arpc_actor_options o = {0};
    if (opts != NULL)
        o = *opts;
    char name[16];
    for (unsigned i = 0; i < n; i++) {
        if (opts != NULL && opts->name != NULL) {
            group_member_name(name, opts->name, i);
            o.name = name; /* copied by arpc_actor_create */
        }
        int rc = arpc_actor_create(&g->g_members[i], &o);
        if (rc != ARPC_OK) {
            g->g_n = i; /* destroy only the ones that exist */
            arpc_actor_group_destroy(g);
            return rc;
        }
    }
    *out = g;
    return ARPC_OK;
}

arpc_actor *arpc_actor_group_pick(arpc_actor_group *g)
{
    if (g->g_n == 1)
        return g->g_members[0]; /* a locked add per call saved (one worker on two cores) */
    unsigned i = atomic_fetch_add_explicit(&g->g_next, 1, memory_order_relaxed) % g->g_n;
    return g->g_members[i];
}

arpc_actor *arpc_actor_group_only(const arpc_actor_group *g) { return g->g_n == 1 ? g->g_members[0] : NULL; }

static bool group_live(const arpc_actor_group *g, const char *fn)
{
    return arpc_handle_check(g, ARPC_MAGIC_GROUP, "actor group", fn) &&
           arpc_fork_gen_here(g->g_fork_gen, g, "actor group", fn);
}

int arpc_actor_group_post(arpc_actor_group *g, arpc_actor_fn fn, void *arg)
{
    if (!group_live(g, __func__))
        return ARPC_EINVAL;
    return arpc_actor_post(arpc_actor_group_pick(g), fn, arg);
}

/* splitmix64's finaliser: every input bit affects every output bit. */
static uint64_t group_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

arpc_actor *arpc_actor_group_pick_key(arpc_actor_group *g, uint64_t key)
{
    /* Lemire's reduction: the high half of hash * n is uniform on [0, n). */
    unsigned i = (unsigned)(((unsigned __int128)group_mix(key) * g->g_n) >> 64);
    return g->g_members[i];
}

int arpc_actor_group_post_key(arpc_actor_group *g, uint64_t key, arpc_actor_fn fn, void *arg)
{
    if (!group_live(g, __func__))
        return ARPC_EINVAL;
    return arpc_actor_post(arpc_actor_group_pick_key(g, key), fn, arg);
}

unsigned arpc_actor_group_size(const arpc_actor_group *g) { return group_live(g, __func__) ? g->g_n : 0; }

arpc_actor *arpc_actor_group_member(arpc_actor_group *g, unsigned i)
{
    return group_live(g, __func__) && i < g->g_n ? g->g_members[i] : NULL;
}

int arpc_actor_group_stop(arpc_actor_group *g, enum arpc_actor_stop_mode mode)
{
    if (!group_live(g, __func__) || (mode != ARPC_ACTOR_DRAIN && mode != ARPC_ACTOR_DISCARD))
        return ARPC_EINVAL;
    /* Refuse before stopping anyone: a half-stopped group helps nobody. */
    for (unsigned i = 0; i < g->g_n; i++) {
        if (arpc_actor_on_thread(g->g_members[i]))
            return ARPC_EBUSY;
    }
    for (unsigned i = 0; i < g->g_n; i++)
        arpc_actor_stop(g->g_members[i], mode);
    return ARPC_OK;
}

void arpc_actor_group_users_add(arpc_actor_group *g, int n) { atomic_fetch_add(&g->g_users, (unsigned)n); }

void arpc_actor_group_destroy(arpc_actor_group *g)
{
    if (!group_live(g, __func__))
        return;
    /* Its own users, and its members' (a method may name one member: arpc_actor_group_member). */
    if (arpc_handle_in_use(g, atomic_load(&g->g_users), "arpc_method_options.group", __func__))
        return;
    for (unsigned i = 0; i < g->g_n; i++)
        if (arpc_actor_in_use(g->g_members[i], __func__))
            return;
    for (unsigned i = 0; i < g->g_n; i++)
        if (arpc_actor_destroy_refused(g->g_members[i], g, __func__))
            return;
    (void)arpc_actor_group_stop(g, ARPC_ACTOR_DRAIN); /* on none of its members' threads: ARPC_OK */
    /* Its members have drained (their messages may post to the group until then): from here
     * the handle is dead, and a second destroy, even a racing one, is caught. */
    if (!arpc_handle_kill(g, ARPC_MAGIC_GROUP, "actor group", __func__))
        return;
    for (unsigned i = 0; i < g->g_n; i++)
        arpc_actor_destroy(g->g_members[i]);
    arpc_free(g);
}
