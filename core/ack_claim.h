/*
 * What a client acknowledged beyond its ack (docs/PROTOCOL.md, "Calls", ack; the ACK frame):
 * every seq in (ack, high] but the waiting ones, which it has not finished. The client builds
 * one (core/client_resend.c), the server's reply cache and its reply log's index each keep the
 * sum of those a client sent (core/reply_cache_store.c, core/reply_log_index.c). Pure: no
 * I/O, no lock; the owner's thread only. The ack itself is the owner's: each call takes it.
 */
#ifndef ARPC_CORE_ACK_CLAIM_H
#define ARPC_CORE_ACK_CLAIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/frame.h" /* ARPC_ACK_WAITING_MAX: what one claim may list */

struct arpc_ack_claim {
    uint64_t ac_high;     /* 0: no claim */
    uint64_t *ac_waiting; /* ascending, each in (ack, ac_high] */
    uint32_t ac_n, ac_cap;
};

/* Whether seq is among the waiting ones. */
bool arpc_ack_claim_waits(const struct arpc_ack_claim *cl, uint64_t seq);

/* Whether the claim, above ack, acknowledges seq: at or below ack, or within the claim and not
 * waited for. */
static inline bool arpc_ack_claim_covers(const struct arpc_ack_claim *cl, uint64_t ack, uint64_t seq)
{
    return seq <= ack || (seq <= cl->ac_high && !arpc_ack_claim_waits(cl, seq));
}

/* The index of the first waiting seq above seq (ac_n if none). */
uint32_t arpc_ack_claim_after(const struct arpc_ack_claim *cl, uint64_t seq);

/*
 * Adds the claim "every seq <= high but waiting[0..n)" (ascending, each in (ack, high]) to cl:
 * their union, so that no claim takes back what another said, whichever came last. The seqs
 * cl waited for that it no longer does go to freed (room for ARPC_ACK_WAITING_MAX; NULL: only
 * counted), *nfreed of them. ARPC_OK, or ARPC_ENOMEM with cl as it was (ARPC_EINVAL too, for a list that is not
 * one: arpc_frame_ack_list_ok says what is).
 */
int arpc_ack_claim_add(struct arpc_ack_claim *cl, uint64_t ack, uint64_t high, const uint64_t *waiting, uint32_t n,
                       uint64_t *freed, uint32_t *nfreed);

/* The ack rose to ack: the waiting seqs at or below it go, and the claim's array once the ack
 * passes it (its bytes with it). */
void arpc_ack_claim_trim(struct arpc_ack_claim *cl, uint64_t ack);

/* The bytes the claim's array holds (for its owner's books). */
static inline size_t arpc_ack_claim_bytes(const struct arpc_ack_claim *cl) { return (size_t)cl->ac_cap * sizeof(uint64_t); }

void arpc_ack_claim_fini(struct arpc_ack_claim *cl);

#endif
