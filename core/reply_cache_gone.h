/*
 * The clients that said goodbye, remembered by the highest seq each used, so a late copy of
 * one of their calls (from a half-open connection, or a proxy that replays) is refused
 * instead of running again once their replies are gone (core/reply_cache.c: forget).
 *
 * Bounded: ARPC_RC_GONE_MAX goodbyes at most, shared fairly among owners (the identities the
 * server's checks found the clients to be; 0: none): with no room, the owner holding the most
 * goodbyes gives up its oldest, so one identity saying goodbye under made-up client ids makes
 * the server forget only its own, never another's (an attacker's trial did, with 4,096
 * goodbyes). With one owner (a server without authentication) that is the oldest: a copy of
 * its calls arriving after that many other clients said goodbye runs again
 * (docs/SEMANTICS.md). Every operation takes constant time: the owners are kept in lists by
 * the number of goodbyes they hold, and each owner's goodbyes in a list by age.
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
#define ARPC_RC_GONE_NONE UINT16_MAX /* no slot, no owner: a list's end */

/* A goodbye: in use, it is on the set's age list and its owner's; free, on the free list. */
struct arpc_rc_gone_slot {
    uint64_t gs_client;         /* 0: free */
    uint64_t gs_floor;          /* its calls at or below this are not run */
    uint16_t gs_owner;          /* its owner's record */
    uint16_t gs_older, gs_newer; /* the set's age list (a free slot: the next free in gs_newer) */
    uint16_t gs_owner_older, gs_owner_newer; /* its owner's */
};

/* An owner holding goodbyes (a free record: go_count 0, the next free in go_more). */
struct arpc_rc_gone_owner {
    uint64_t go_key;                 /* the owner (0: none known) */
    uint16_t go_count;               /* goodbyes it holds */
    uint16_t go_oldest, go_newest;   /* its goodbyes' age list */
    uint16_t go_fewer, go_more;      /* the list of owners holding as many */
};

struct arpc_rc_gone {
    struct arpc_rc_gone_slot *g_slots;   /* ARPC_RC_GONE_MAX, made at the first goodbye */
    struct arpc_rc_gone_owner *g_owners; /* ARPC_RC_GONE_MAX + 1 (the adder's, beside them all) */
    uint16_t *g_holding;                 /* [n]: an owner holding n goodbyes (n = 1..MAX) */
    size_t g_count;                      /* goodbyes held */
    uint16_t g_oldest, g_newest;         /* the age list's ends (when g_count > 0) */
    uint16_t g_free, g_fresh;            /* a slot given back; slots from g_fresh on never used */
    uint16_t g_owner_free, g_owner_fresh; /* the same for owner records */
    uint16_t g_most;                     /* the most goodbyes an owner holds (0: none held) */
    uint16_t g_unowned;                  /* owner 0's record, or ARPC_RC_GONE_NONE */
    struct arpc_u64_map g_where;         /* client -> its slot + 1 */
    struct arpc_u64_map g_owner_of;      /* owner (not 0) -> its record + 1 */
};

/* Zeroed is empty; fini frees what put allocated and leaves it zeroed. */
void arpc_rc_gone_fini(struct arpc_rc_gone *g);
/* client, of owner (0: none known), said goodbye after calls up to floor (non-zero). A second
 * goodbye keeps the first's place (its age) with the higher floor. ARPC_OK, or ARPC_ENOMEM
 * (the set's first allocation, or an owner's first goodbye: the set is unchanged). */
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
