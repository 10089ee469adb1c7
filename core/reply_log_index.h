/*
 * What in the reply log is still live, as file positions (never copies of the bytes): per
 * client its ack and its live REPLY records; the latest STATE record; the records since it
 * that carry an effect. Recovery builds it while it reads the log, the writer keeps it up to
 * date as it appends, and compaction writes exactly what it holds into a new snapshot.
 *
 * The rules (the same for replay and for appends, since both go through apply):
 *   REPLY   raises its client's ack to the record's ack (never lowers it), drops the client's
 *           replies with seq <= ack, then keeps this one if seq > ack (replacing one with the
 *           same seq). A non-empty effect is listed, in log order. Client id 0: effect only.
 *   ACK     raises the client's ack likewise.
 *   ACK_BEYOND raises the ack likewise, adds its claim to the client's (core/ack_claim.h: the
 *           union) and drops the replies it covers; a later REPLY it covers is not kept.
 *   EXPIRE  forgets the client and its replies.
 *   GOODBYE forgets the client and its replies, and keeps its floor (the record's, or the
 *           client's ack or highest live seq if higher) among the gone, held against the
 *           record's owner: ARPC_RC_GONE_MAX at most, shared among owners as the reply cache
 *           shares them (core/reply_cache_gone.h).
 *   STATE   becomes the state; the effect list empties (the checkpoint covers those effects).
 * A client is created by its first REPLY, ACK or ACK_BEYOND; one among the gone leaves them then, its ack
 * starting at its floor (as in the cache: a client heard from again carries its floor in its
 * ack). So no client is both live and gone.
 *
 * Single-threaded: its owner (the opener during recovery, then the writer thread) is the only
 * one to touch it. Pure: no I/O.
 */
#ifndef ARPC_CORE_REPLY_LOG_INDEX_H
#define ARPC_CORE_REPLY_LOG_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/u64_map.h"
#include "core/ack_claim.h"
#include "core/reply_cache_gone.h"
#include "core/reply_log_format.h"

/* Where a record is: segment number, byte offset in it, and its whole size. */
struct arpc_log_pos {
    uint64_t p_segment;
    uint64_t p_offset;
    uint32_t p_size;
};

/* One live reply of a client. */
struct arpc_log_live_reply {
    uint64_t r_seq;
    struct arpc_log_pos r_pos;
    uint32_t r_effect_gen; /* 0: the record has no effect; == ix_gen: its effect is listed;
                            * otherwise a STATE since covers its effect */
    uint32_t r_new_size;   /* compaction's scratch: where it rewrote the record */
    uint64_t r_new_offset;
};

struct arpc_log_client {
    uint64_t c_id;
    uint64_t c_ack;
    uint64_t c_floor; /* its goodbye's floor when it came back after one (0: none): as the cache's */
    struct arpc_log_live_reply *c_replies; /* [c_head, c_len): ascending seq, every seq > c_ack
                                            * and not covered by c_claim */
    size_t c_head, c_len, c_cap;
    struct arpc_ack_claim c_claim; /* what it acknowledged beyond c_ack (ACK_BEYOND) */
};

/* A record whose effect is listed (every effect since the latest STATE). */
struct arpc_log_effect {
    uint64_t e_client_id; /* to find out whether it is also a live reply */
    uint64_t e_seq;
    struct arpc_log_pos e_pos;
    uint32_t e_new_size; /* compaction's scratch */
    uint64_t e_new_offset;
};

struct arpc_log_index {
    struct arpc_u64_map ix_clients; /* client id -> struct arpc_log_client */
    struct arpc_log_effect *ix_effects;
    size_t ix_neffects, ix_effects_cap;
    bool ix_has_state;
    struct arpc_log_pos ix_state;
    uint32_t ix_state_new_size; /* compaction's scratch */
    uint64_t ix_state_new_offset;
    uint32_t ix_gen;            /* bumped by every STATE; starts at 1 */
    struct arpc_rc_gone ix_gone; /* clients that said goodbye, floor and owner (no position: a
                                  * snapshot writes a GOODBYE record for each) */
    /* Bytes a snapshot would take (an upper bound: effects of acked replies shrink): */
    uint64_t ix_effect_bytes;   /* the listed effects' records */
    uint64_t ix_unlisted_bytes; /* live replies whose effect is not listed (or who have none) */
    uint64_t ix_claim_bytes;    /* the ACK_BEYOND records of the clients' claims */
};

/* ARPC_OK or ARPC_ENOMEM. */
int arpc_log_index_init(struct arpc_log_index *ix);
void arpc_log_index_fini(struct arpc_log_index *ix);

/*
 * Applies the record v found (or about to be written) at pos, per the rules above. All or
 * nothing: ARPC_OK, or ARPC_ENOMEM with the index as it was. v is not a segment HEADER.
 */
int arpc_log_index_apply(struct arpc_log_index *ix, const struct arpc_log_view *v, struct arpc_log_pos pos);

/* Iteration over the clients: start with *pos = 0; NULL when done. The index must not change
 * during an iteration. */
struct arpc_log_client *arpc_log_index_next_client(const struct arpc_log_index *ix, size_t *pos);

/* The live reply (client_id, seq), or NULL. */
struct arpc_log_live_reply *arpc_log_index_find(const struct arpc_log_index *ix, uint64_t client_id,
                                                uint64_t seq);

/* True when r's effect is in the effect list (so a snapshot writes it with the effects). */
static inline bool arpc_log_index_listed(const struct arpc_log_index *ix, const struct arpc_log_live_reply *r)
{
    return r->r_effect_gen == ix->ix_gen;
}

/* Bytes a compaction would write now, header, one ACK per client, one ACK_BEYOND per claim
 * and one GOODBYE per gone client included (an upper
 * bound: effects whose replies were acked are rewritten smaller). */
uint64_t arpc_log_index_live_bytes(const struct arpc_log_index *ix);

/* After compaction wrote every position's record again into segment (at its *_new_offset,
 * *_new_size): moves every position there. */
void arpc_log_index_moved(struct arpc_log_index *ix, uint64_t segment);

#endif
