/*
 * The reply cache's storage, private to core/reply_cache*.c: entries and clients, their
 * tables and spare lists, the activity list, the books (clients, entries, running, logging,
 * bytes) and the discard of acked replies. core/reply_cache.c holds the at-most-once rules
 * on top of it, and counts the verdicts. The contract is in core/reply_cache.h.
 */
#ifndef ARPC_CORE_REPLY_CACHE_STORE_H
#define ARPC_CORE_REPLY_CACHE_STORE_H

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

struct arpc_rc_client {
    uint64_t c_id;
    uint64_t c_ack;
    uint64_t c_last_ns;                       /* the last request, or expiry's look at it */
    struct arpc_rc_client *c_older, *c_newer; /* the activity list */
    size_t c_busy;                            /* RUNNING + LOGGING entries */
    bool c_goodbye;                           /* said goodbye while busy: forgotten once idle */
    struct arpc_u64_map c_entries;            /* seq -> entry */
};

/* A fresh RUNNING entry for seq, not in any table or book yet; NULL when out of memory.
 * Undo with arpc_rc_entry_recycle. */
struct arpc_rc_entry *arpc_rc_entry_new(struct arpc_reply_cache *rc, uint64_t seq);
void arpc_rc_entry_recycle(struct arpc_reply_cache *rc, struct arpc_rc_entry *e);
/* Puts e, filled in, into c's table and the books. ARPC_OK or ARPC_ENOMEM (nothing done). */
int arpc_rc_entry_add(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                      struct arpc_rc_entry *e);
/* Takes e out of the cache, handing out its waiters; its reply is the caller's. */
struct arpc_rc_waiter *arpc_rc_entry_remove(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                            struct arpc_rc_entry *e);
/* Moves e on (RUNNING -> LOGGING or DONE, LOGGING -> DONE), keeping the books. */
void arpc_rc_entry_move(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                        struct arpc_rc_entry *e, enum arpc_rc_state state);
/* A RUNNING entry in the books now holds reply. */
void arpc_rc_entry_hold(struct arpc_reply_cache *rc, struct arpc_rc_entry *e, void *reply,
                        size_t reply_bytes);

struct arpc_rc_waiter *arpc_rc_waiter_new(struct arpc_reply_cache *rc, void *conn, uint64_t xid);

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
/* Forgets c with all it holds: replies to free_reply, waiters to drop_waiter (may be NULL). */
void arpc_rc_client_free(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                         void (*drop_waiter)(void *ctx, struct arpc_rc_waiter *w));
/* c made a request at now_ns: it becomes the newest on the activity list. */
void arpc_rc_touch(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t now_ns);
/* Raises c's ack to ack (never lowers it) and frees the DONE entries at or below it. */
void arpc_rc_raise_ack(struct arpc_reply_cache *rc, struct arpc_rc_client *c, uint64_t ack);

#endif
