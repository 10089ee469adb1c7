/*
 * The reply cache's storage, private to core/reply_cache*.c: entries and clients, their
 * tables and spare lists, the activity list, the books (clients, entries, running, logging,
 * bytes) and the discard of acked replies. core/reply_cache.c holds the at-most-once rules
 * on top of it, and counts the verdicts. The contract is in core/reply_cache.h.
 */
#ifndef ARPC_CORE_REPLY_CACHE_STORE_H
#define ARPC_CORE_REPLY_CACHE_STORE_H

#include "base/alloc.h"
#include "core/ack_claim.h"
#include "core/reply_cache.h"

enum arpc_rc_state { ARPC_RC_RUNNING, ARPC_RC_LOGGING, ARPC_RC_DONE };

struct arpc_rc_entry {
    struct arpc_rc_entry *e_next; /* on the list of entries an ack dooms */
    uint64_t e_seq;
    struct arpc_rc_waiter *e_waiters; /* RUNNING, LOGGING: arrival order */
    struct arpc_rc_waiter **e_last;   /* where the next waiter is linked */
    void *e_reply;                    /* LOGGING, DONE */
    size_t e_reply_bytes;
    enum arpc_rc_state e_state;
    uint32_t e_nwaiters; /* on e_waiters: at most ARPC_RC_MAX_WAITERS */
};

/* The clients of one identity (arpc/auth.h: a token's, a certificate's, a unix peer's uid):
 * their bytes together are held to one client's share, so an identity cannot fill the cache
 * by making up client ids. A client without an identity has none (c_owner NULL). */
struct arpc_rc_owner {
    uint64_t o_id;     /* the identity, never 0 */
    size_t o_bytes;    /* its clients' c_bytes, summed (arpc_rc_books_add) */
    size_t o_clients;  /* clients that point here; the owner goes with the last */
    bool o_full;       /* a reply of its clients was not kept for being over the share: full
                        * until entries of its clients are freed (arpc_rc_books_freed) */
};

struct arpc_rc_client {
    uint64_t c_id;
    uint64_t c_ack;
    uint64_t c_last_ns;                       /* the last request, or expiry's look at it */
    struct arpc_rc_client *c_older, *c_newer; /* the activity list */
    size_t c_busy;                            /* RUNNING + LOGGING entries */
    size_t c_bytes;                           /* its share of the cache's bytes (arpc_rc_books_add) */
    struct arpc_rc_owner *c_owner;            /* its identity's clients, or NULL (none) */
    bool c_goodbye;                           /* said goodbye while busy: forgotten once idle */
    bool c_full;                              /* as o_full, for the client's own share */
    bool c_goodbye_floor;                     /* and its highest seq is kept then (rc_gone) */
    uint64_t c_begun;                         /* the highest seq begun, its entry kept or not (a call
                                               * aborted before it ran leaves none): in a goodbye's floor */
    uint64_t c_floor;                         /* the floor a goodbye left, carried into c_ack when it came
                                               * back (0: none): what a refusal under it says, and
                                               * kept again when it expires (not forgotten) */
    struct arpc_rc_entry **c_ring;            /* entries by seq & c_ring_mask: most of them */
    size_t c_ring_mask;                       /* slots - 1; slots a power of two */
    size_t c_nring;                           /* entries in c_ring */
    struct arpc_u64_map c_entries;            /* seq -> entry: those whose ring slot was taken */
    /* Acknowledged beyond c_ack (ACK frames: the union of all the client sent); its array's
     * bytes are in c_bytes. */
    struct arpc_ack_claim c_claim;
};

/* Whether c acknowledged seq: at or below its ack, or beyond it and not waited for. Such a seq
 * is never run again, and its result is not kept. */
static inline bool arpc_rc_acked(const struct arpc_rc_client *c, uint64_t seq)
{
    return arpc_ack_claim_covers(&c->c_claim, c->c_ack, seq);
}

/* c's entry for seq, or NULL. */
static inline struct arpc_rc_entry *arpc_rc_entry_get(const struct arpc_rc_client *c, uint64_t seq)
{
    struct arpc_rc_entry *e = c->c_ring[seq & c->c_ring_mask];
    if (e != NULL && e->e_seq == seq)
        return e;
    return arpc_u64_map_count(&c->c_entries) != 0 ? arpc_u64_map_get(&c->c_entries, seq) : NULL;
}

/* How many entries c holds. */
static inline size_t arpc_rc_entry_count(const struct arpc_rc_client *c)
{
    return c->c_nring + arpc_u64_map_count(&c->c_entries);
}

/* The client client_id, or NULL. The last one found is remembered: a connection's calls all
 * come from one client, so in steady state this costs a compare, not a table lookup. */
static inline struct arpc_rc_client *arpc_rc_client_get(struct arpc_reply_cache *rc, uint64_t client_id)
{
    struct arpc_rc_client *c = rc->rc_last;
    if (c != NULL && c->c_id == client_id)
        return c;
    c = arpc_u64_map_get(&rc->rc_clients, client_id);
    if (c != NULL)
        rc->rc_last = c;
    return c;
}

/* The hot steps below are inline: a call makes most of them, and each is a few stores. */

#define ARPC_RC_SPARE_MAX 1024 /* entries, and waiters, kept for reuse */

/* What a spare block holds: blocks come from arpc_malloc, so storing this in one is
 * allowed, and its next user's initialisation makes it an entry or a waiter again. */
struct arpc_rc_block {
    struct arpc_rc_block *b_next;
};

/* A block of size bytes: a spare one, else a new one; NULL when out of memory. */
static inline void *arpc_rc_spare_take(struct arpc_rc_spare *s, size_t size)
{
    struct arpc_rc_block *b = s->s_head;
    if (b == NULL)
        return arpc_malloc(size);
    s->s_head = b->b_next;
    s->s_count--;
    return b;
}

static inline void arpc_rc_spare_give(struct arpc_rc_spare *s, void *block)
{
    if (s->s_count >= ARPC_RC_SPARE_MAX) {
        arpc_free(block);
        return;
    }
    struct arpc_rc_block *b = block;
    b->b_next = s->s_head;
    s->s_head = b;
    s->s_count++;
}

/* A fresh RUNNING entry for seq, not in any table or book yet; NULL when out of memory.
 * Undo with arpc_rc_entry_recycle. */
static inline struct arpc_rc_entry *arpc_rc_entry_new(struct arpc_reply_cache *rc, uint64_t seq)
{
    struct arpc_rc_entry *e = arpc_rc_spare_take(&rc->rc_spare_entries, sizeof(*e));
    if (e == NULL)
        return NULL;
    *e = (struct arpc_rc_entry){.e_seq = seq, .e_state = ARPC_RC_RUNNING};
    e->e_last = &e->e_waiters;
    return e;
}

static inline void arpc_rc_entry_recycle(struct arpc_reply_cache *rc, struct arpc_rc_entry *e)
{
    arpc_rc_spare_give(&rc->rc_spare_entries, e);
}

static inline struct arpc_rc_waiter *arpc_rc_waiter_new(struct arpc_reply_cache *rc, void *conn,
                                                        uint64_t xid, uint64_t seq)
{
    struct arpc_rc_waiter *w = arpc_rc_spare_take(&rc->rc_spare_waiters, sizeof(*w));
    if (w != NULL)
        *w = (struct arpc_rc_waiter){.w_conn = conn, .w_xid = xid, .w_seq = seq,
                                     .w_deadline.d_index = ARPC_DEADLINE_UNARMED};
    return w;
}

/* Puts e, filled in, into c's table and the books. ARPC_OK or ARPC_ENOMEM (nothing done). */
int arpc_rc_entry_add(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                      struct arpc_rc_entry *e);
/* Takes e out of the cache, handing out its waiters; its reply is the caller's. */
struct arpc_rc_waiter *arpc_rc_entry_remove(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                            struct arpc_rc_entry *e);

/* Counts an entry in state into (in = true) or out of the busy counts. */
static inline void arpc_rc_count_state(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                       enum arpc_rc_state state, bool in)
{
    if (state == ARPC_RC_DONE)
        return;
    size_t *n = state == ARPC_RC_RUNNING ? &rc->rc_stats.running : &rc->rc_stats.logging;
    if (in) {
        c->c_busy++;
        (*n)++;
    } else {
        c->c_busy--;
        (*n)--;
    }
}

/* Moves e on (RUNNING -> LOGGING or DONE, LOGGING -> DONE), keeping the books. */
static inline void arpc_rc_entry_move(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                      struct arpc_rc_entry *e, enum arpc_rc_state state)
{
    arpc_rc_count_state(rc, c, e->e_state, false);
    e->e_state = state;
    arpc_rc_count_state(rc, c, e->e_state, true);
}

/* The books: every byte counted against max_bytes is some client's, counted against its
 * share too. */
static inline void arpc_rc_books_add(struct arpc_reply_cache *rc, struct arpc_rc_client *c, size_t n)
{
    arpc_stat_add(&rc->rc_gauges.g_bytes, n);
    c->c_bytes += n;
    if (c->c_owner != NULL)
        c->c_owner->o_bytes += n;
}

/* A kept reply given back to its owner (ops.free_reply). */
static inline void arpc_rc_free_reply(struct arpc_reply_cache *rc, void *reply)
{
    if (rc->rc_ops.free_reply != NULL)
        rc->rc_ops.free_reply(rc->rc_ctx, reply);
}

/* The books only: no room is made (a held reply moving to kept, a client refused at once). */
static inline void arpc_rc_books_sub(struct arpc_reply_cache *rc, struct arpc_rc_client *c, size_t n)
{
    arpc_stat_add(&rc->rc_gauges.g_bytes, -(uint64_t)n);
    c->c_bytes -= n;
    if (c->c_owner != NULL)
        c->c_owner->o_bytes -= n;
}

/* Entries freed (an ack, expiry, a forgotten client): room again, perhaps, so the full flags
 * go; the next call is admitted, and its reply checked when it finishes. */
static inline void arpc_rc_books_freed(struct arpc_reply_cache *rc, struct arpc_rc_client *c, size_t n)
{
    arpc_rc_books_sub(rc, c, n);
    if (n != 0) {
        rc->rc_full = false;
        c->c_full = false;
        if (c->c_owner != NULL)
            c->c_owner->o_full = false;
    }
}

/* c, or its identity's clients together, hold a client's share of the cache. */
static inline bool arpc_rc_over_share(const struct arpc_reply_cache *rc, const struct arpc_rc_client *c)
{
    return c->c_bytes >= rc->rc_max_client_bytes || c->c_full ||
           (c->c_owner != NULL && (c->c_owner->o_bytes >= rc->rc_max_client_bytes || c->c_owner->o_full));
}

/* A RUNNING entry in the books now holds reply. */
static inline void arpc_rc_entry_hold(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                      struct arpc_rc_entry *e, void *reply, size_t reply_bytes)
{
    e->e_reply = reply;
    e->e_reply_bytes = reply_bytes;
    arpc_rc_books_add(rc, c, reply_bytes);
}

static inline struct arpc_rc_waiter *arpc_rc_take_waiters(struct arpc_rc_entry *e)
{
    struct arpc_rc_waiter *list = e->e_waiters;
    e->e_waiters = NULL;
    e->e_last = &e->e_waiters;
    e->e_nwaiters = 0;
    return list;
}

/* A client with ack, active at now_ns and the newest on the activity list; NULL when out of
 * memory. */
struct arpc_rc_client *arpc_rc_client_new(struct arpc_reply_cache *rc, uint64_t client_id,
                                          uint64_t ack, uint64_t now_ns);
/* c counts toward identity owner's share from now on (0: none; a client owned already keeps
 * its owner: its key was made from that identity). ARPC_ENOMEM without memory for a new
 * owner (c is left without one). */
int arpc_rc_client_own(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t owner);
/* Forgets c with all it holds: replies to free_reply, waiters to drop_waiter (may be NULL). */
void arpc_rc_client_free(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                         void (*drop_waiter)(void *ctx, struct arpc_rc_waiter *w));
static inline void arpc_rc_list_unlink(struct arpc_reply_cache *rc, struct arpc_rc_client *c)
{
    *(c->c_older ? &c->c_older->c_newer : &rc->rc_oldest) = c->c_newer;
    *(c->c_newer ? &c->c_newer->c_older : &rc->rc_newest) = c->c_older;
}

static inline void arpc_rc_list_push_newest(struct arpc_reply_cache *rc, struct arpc_rc_client *c)
{
    c->c_newer = NULL;
    c->c_older = rc->rc_newest;
    *(rc->rc_newest ? &rc->rc_newest->c_newer : &rc->rc_oldest) = c;
    rc->rc_newest = c;
}

/* c made a request at now_ns: it becomes the newest on the activity list. */
static inline void arpc_rc_touch(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                 uint64_t now_ns)
{
    c->c_last_ns = now_ns;
    if (rc->rc_newest != c) {
        arpc_rc_list_unlink(rc, c);
        arpc_rc_list_push_newest(rc, c);
    }
}
/* Raises c's ack to ack (never lowers it) and frees the DONE entries at or below it. */
void arpc_rc_raise_ack(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t ack);
/* Adds to what c acknowledged beyond its ack: every seq <= high but waiting[0..n) (ascending,
 * each in (c_ack, high]), and frees the DONE entries that became acknowledged. ARPC_OK (with
 * *grew: whether it acknowledged anything not acknowledged before), or ARPC_ENOMEM (nothing
 * changed: the claim is ignored, which is safe). */
int arpc_rc_ack_beyond(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t high,
                       const uint64_t *waiting, uint32_t n, bool *grew);

#endif
