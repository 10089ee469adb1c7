/*
 * The clients that said goodbye, remembered by the highest seq each used, so a late copy of
 * one of their calls (from a half-open connection, or a proxy that replays) is refused
 * instead of running again once their replies are gone (core/reply_cache.c: forget).
 *
 * Bounded: the ARPC_RC_GONE_MAX latest goodbyes, a fixed 32 bytes each plus the map's slot.
 * Shared fairly among owners (the identities the server's checks found the clients to be;
 * 0: none): with no room, the owner holding the most goodbyes gives up its oldest, so one
 * identity saying goodbye under made-up client ids makes the server forget only its own,
 * never another's (an attacker's trial did, with 4,096 goodbyes). With one owner (a server
 * without authentication) that is the oldest: a copy of its calls arriving after that many
 * other clients said goodbye runs again (docs/SEMANTICS.md).
 *
 * Single owner, no lock: the reply cache's on its loop thread, and the reply log's index
 * (core/reply_log_index.h), which keeps the same clients and owners on disk, so a restart
 * refuses those late copies too and keeps sharing fairly.
 */
#ifndef ARPC_CORE_REPLY_CACHE_GONE_H
#define ARPC_CORE_REPLY_CACHE_GONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/u64_map.h"

#define ARPC_RC_GONE_MAX 4096

/* A slot in use is on the age list (oldest goodbye first); a free one on the free list. */
struct arpc_rc_gone_slot {
    uint64_t gs_client; /* 0: free */
    uint64_t gs_floor;  /* its calls at or below this are not run */
    uint64_t gs_owner;  /* who said it (0: no one known) */
    uint32_t gs_older;  /* the age list's links (slot numbers; ARPC_RC_GONE_NONE at its ends); */
    uint32_t gs_newer;  /* a free slot's next free one in gs_newer */
};

#define ARPC_RC_GONE_NONE UINT32_MAX

struct arpc_rc_gone {
    struct arpc_rc_gone_slot *g_slots; /* ARPC_RC_GONE_MAX, made at the first goodbye */
    size_t g_count;                    /* slots in use */
    uint32_t g_oldest, g_newest;       /* the age list's ends (when g_count > 0) */
    uint32_t g_free;                   /* a slot given back, or ARPC_RC_GONE_NONE */
    uint32_t g_fresh;                  /* slots from here on were never used */
    struct arpc_u64_map g_where;       /* client -> its slot + 1 */
    size_t g_unowned;                  /* the slots of owner 0 */
    struct arpc_u64_map g_owners;      /* owner (not 0) -> its slots, as a pointer */
};

/* Zeroed is empty; fini frees what put allocated. */
void arpc_rc_gone_fini(struct arpc_rc_gone *g);
/* client, of owner (0: none known), said goodbye after calls up to floor (non-zero). A second
 * goodbye keeps the first's place (its age) with the higher floor. ARPC_OK, or ARPC_ENOMEM
 * (the set's first allocation, or an owner's first count: the set is unchanged). */
int arpc_rc_gone_put(struct arpc_rc_gone *g, uint64_t client, uint64_t floor, uint64_t owner);
/* The floor of a client that said goodbye, or 0. */
uint64_t arpc_rc_gone_floor(const struct arpc_rc_gone *g, uint64_t client);
/* client is back (a call above its floor): it is known to the cache again. */
void arpc_rc_gone_take(struct arpc_rc_gone *g, uint64_t client);
/* How many clients it holds. */
static inline size_t arpc_rc_gone_count(const struct arpc_rc_gone *g) { return g->g_count; }
/* Iteration, oldest goodbye first (the order that, put again into an empty set, gives the
 * same set): start with *pos = 0; false when done. The set must not change during an
 * iteration. owner may be NULL. */
bool arpc_rc_gone_next(const struct arpc_rc_gone *g, size_t *pos, uint64_t *client, uint64_t *floor,
                       uint64_t *owner);

#endif
