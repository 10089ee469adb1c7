/*
 * A map from non-zero 64-bit keys to pointers, for a single thread: the server's reply cache
 * (client id -> client, seq -> entry), the client's finished seqs, a server connection's
 * calls by xid. (The client's pending calls have a table of their own: core/pending_calls.h.) No
 * lock and no atomic: its owner (a loop thread) is the only one to read or write it.
 *
 * Open addressing with linear probing, Fibonacci hashing of the key, and backward-shift
 * deletion (no tombstones). We first used Concurrency Kit's ck_ht for pending calls; with
 * xids that only grow, each removal leaves a tombstone and inserts probe ever longer runs of
 * them: profiling a pipelined client put ~45% of its CPU in ck_ht's probe loop, even with
 * periodic ck_ht_gc (docs/PERFORMANCE.md). A single-owner table needs none of ck_ht's reader
 * safety, so this small table does the job better.
 */
#ifndef ARPC_BASE_U64_MAP_H
#define ARPC_BASE_U64_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct arpc_u64_slot {
    uint64_t s_key; /* 0 = empty */
    void *s_val;
};

struct arpc_u64_map {
    struct arpc_u64_slot *p_slots;
    size_t p_mask;    /* capacity - 1; capacity is a power of two */
    unsigned p_shift; /* 64 - log2(capacity), for Fibonacci hashing */
    size_t p_count;
};

/* Room for initial entries before the first growth. ARPC_OK or ARPC_ENOMEM. */
int arpc_u64_map_init(struct arpc_u64_map *p, size_t initial);
void arpc_u64_map_fini(struct arpc_u64_map *p);
/* key must not be 0. ARPC_OK, ARPC_ENOMEM, ARPC_EBUSY (key already present). */
int arpc_u64_map_put(struct arpc_u64_map *p, uint64_t key, void *val);
/* The value for key, or NULL (also for key 0). */
void *arpc_u64_map_get(const struct arpc_u64_map *p, uint64_t key);
/* Removes and returns the value for key, or NULL. */
void *arpc_u64_map_take(struct arpc_u64_map *p, uint64_t key);
/* Removes every entry, calling fn(val, arg) for each (order unspecified). fn must not touch
 * the map. */
void arpc_u64_map_drain(struct arpc_u64_map *p, void (*fn)(void *val, void *arg), void *arg);
/* Iteration in slot order: start with *pos = 0; returns false when done. The map must not
 * change during an iteration. */
bool arpc_u64_map_next(const struct arpc_u64_map *p, size_t *pos, uint64_t *key, void **val);
static inline size_t arpc_u64_map_count(const struct arpc_u64_map *p) { return p->p_count; }

#endif
