/*
 * The clients that said goodbye, remembered by the highest seq each used, so a late copy of
 * one of their calls (from a half-open connection, or a proxy that replays) is refused
 * instead of running again once their replies are gone (core/reply_cache.c: forget).
 *
 * Bounded: the ARPC_RC_GONE_MAX latest goodbyes, a fixed 32 bytes each plus the map's slot;
 * the oldest is dropped first (a copy of its calls arriving after that many other clients
 * said goodbye runs again: docs/SEMANTICS.md). Shared fairly among owners when asked
 * (arpc_rc_gone_fair: the reply cache, whose owners are its clients' identities): with no
 * room, the owner holding the most goodbyes gives up its oldest, so one identity saying
 * goodbye under made-up client ids makes the server forget only its own, never another's
 * (an attacker's trial did, with 4,096 goodbyes). With one owner (a server without
 * authentication) that is the oldest, as before. Goodbyes a restart brought back from the
 * log (which keeps no owners) are owner 0's, as those of clients without an identity. Single owner, no lock: the cache's on its
 * loop thread, and the reply log's index (core/reply_log_index.h), which keeps the same
 * clients on disk without owners, so a restart refuses those late copies too.
 */
#ifndef ARPC_CORE_REPLY_CACHE_GONE_H
#define ARPC_CORE_REPLY_CACHE_GONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/u64_map.h"

#define ARPC_RC_GONE_MAX 4096

struct arpc_rc_gone_slot {
    uint64_t gs_client; /* 0: free */
    uint64_t gs_floor;  /* its calls at or below this are not run */
    uint64_t gs_owner;  /* who said it (0: no one known) */
    uint64_t gs_age;    /* the set's count of goodbyes when it came: the lowest is the oldest */
};

struct arpc_rc_gone {
    struct arpc_rc_gone_slot *g_ring; /* ARPC_RC_GONE_MAX slots, made at the first goodbye */
    size_t g_next;                    /* the slot the next goodbye takes (the oldest) */
    size_t g_count;                   /* slots in use */
    uint64_t g_age;                   /* goodbyes put so far */
    struct arpc_u64_map g_where;      /* client -> its slot + 1 */
    bool g_fair;                      /* shared fairly among owners; else oldest first */
    size_t g_unowned;                 /* fair: the slots of owner 0 */
    struct arpc_u64_map g_owners;     /* fair: owner (not 0) -> its slots, as a pointer */
};

/* Zeroed is empty; fini frees what put allocated. */
void arpc_rc_gone_fini(struct arpc_rc_gone *g);
/* Shares the set fairly among owners (see above), from the first put on. */
void arpc_rc_gone_fair(struct arpc_rc_gone *g);
/* client, of owner (0: none known), said goodbye after calls up to floor (non-zero). ARPC_OK,
 * or ARPC_ENOMEM (the set's first allocation, or when fair an owner's first count: the set
 * is unchanged). */
int arpc_rc_gone_put(struct arpc_rc_gone *g, uint64_t client, uint64_t floor, uint64_t owner);
/* The floor of a client that said goodbye, or 0. */
uint64_t arpc_rc_gone_floor(const struct arpc_rc_gone *g, uint64_t client);
/* client is back (a call above its floor): it is known to the cache again. */
void arpc_rc_gone_take(struct arpc_rc_gone *g, uint64_t client);
/* How many clients it holds. */
static inline size_t arpc_rc_gone_count(const struct arpc_rc_gone *g) { return g->g_count; }
/* Iteration, oldest goodbye first (the order that, put again, keeps the same ones newest):
 * start with *pos = 0; false when done. The set must not change during an iteration. Not
 * fair only: a fair set puts a goodbye in the place of the one it drops, out of the ring's
 * order (its ages keep the order). */
bool arpc_rc_gone_next(const struct arpc_rc_gone *g, size_t *pos, uint64_t *client, uint64_t *floor);

#endif
