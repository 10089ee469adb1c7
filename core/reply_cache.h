/*
 * The server's reply cache: at-most-once execution of numbered calls (docs/PROTOCOL.md,
 * "Calls"). A pure data structure: no I/O, no clock (the caller passes now_ns, from one
 * monotonic clock that never goes back), no lock, no atomic. It belongs to one thread, the
 * server's loop thread, which makes every call below.
 *
 * It is keyed by (client_id, seq). An entry is
 *   RUNNING  the handler runs; a duplicate attaches as another waiter (conn, xid);
 *   LOGGING  the reply is known and kept, waiting for the reply log to make it durable;
 *            a duplicate still attaches (nobody is answered before the record is durable);
 *   DONE     the reply is kept; a duplicate gets it again under its own xid.
 *
 *   begin (NEW) -> RUNNING -- finish(logged = false) ------------------------> DONE
 *                          -- finish(logged = true) --> LOGGING -- durable --> DONE
 *                          -- abort (the handler did not run) --> gone, a retry runs it
 *
 * Each client has an ack, the highest seen from it: it never goes down, a request with
 * seq <= ack is STALE (refused, never run), and it frees entries: DONE ones at once, RUNNING
 * and LOGGING ones when they reach DONE (their waiters are still answered). An ACK frame
 * acknowledges seqs beyond the ack too (all up to a high but those the client still waits
 * for: arpc_reply_cache_ack_beyond), with the same effects, so one call left unanswered does
 * not hold every later reply in the cache. Invariant: no DONE entry's seq is acknowledged.
 *
 * A client is active when it makes a request and when one of its replies is made (finish,
 * durable). One inactive for idle_expiry_ns is forgotten with all its entries, unless it has
 * a RUNNING or LOGGING entry, which expire counts as activity. So a reply is kept for at
 * least idle_expiry_ns after it was made, unless acked: time for a retry to find it.
 *
 * Memory: bytes = the reply bytes held + arpc_reply_cache_entry_cost() per entry +
 * arpc_reply_cache_client_cost() per client (the structs and their share of the tables;
 * waiters and the bounded spare lists are not counted) + the growth of a client's ring of
 * entries beyond its first slots (a window of calls wider than them, until it is forgotten).
 * A NEW call is refused (FULL) while
 * bytes >= max_bytes, and nothing is evicted to make room: a reply its client has not acked
 * is never silently forgotten. Only acks, aborts and idle expiry free room. One client's
 * share of those bytes is bounded too (CLIENT_FULL while its own bytes >= max_client_bytes,
 * half of max_bytes by default), so that a client that never acks (or sent a window of large
 * calls and vanished) cannot leave every other client refused until it expires. The clients
 * of one identity (begin's owner: who the server's checks found the client to be) share one
 * such share, so an identity cannot fill the cache by making up client ids either; clients
 * without an identity are bounded one by one only.
 *
 * Waiters: finish, durable and abort hand out the waiters to answer as a list in arrival
 * order (the first is the request that began the call), owned by the caller until it gives
 * the list back with arpc_reply_cache_free_waiters. w_conn is opaque here: a connection that
 * closes while it has waiters in the cache must still be recognisable when they come out
 * (hold a reference per waiter, or store an id that is looked up).
 *
 * Callbacks (ops, drop_waiter) run inside the call that triggers them and must not call into
 * the cache.
 */
#ifndef ARPC_CORE_REPLY_CACHE_H
#define ARPC_CORE_REPLY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "async/deadline_heap.h"
#include "base/dlist.h"
#include "base/stat.h"
#include "base/u64_map.h"
#include "core/reply_cache_gone.h"

struct arpc_rc_waiter {
    struct arpc_rc_waiter *w_next;
    void *w_conn;
    uint64_t w_xid;
    uint64_t w_seq;  /* the call it waits for, so its owner can name it to leave */
    bool w_attached; /* a duplicate's, not the request that runs the call */
    /* The owner's, never touched here (unarmed when handed out): the server arms a
     * duplicate's own deadline on it, and disarms it before the waiter is given back. */
    struct arpc_deadline w_deadline;
    /* The owner's too: the server lists a duplicate on its connection (sc_copies), so a
     * CANCEL naming the duplicate's xid finds it; unlinked before the waiter is given back. */
    struct arpc_dlink w_copy_link;
};

struct arpc_reply_cache_ops {
    /* A LOGGING or DONE entry's reply is discarded (ack, expiry, fini). NULL: nothing to do. */
    void (*free_reply)(void *ctx, void *reply);
    /* A client was forgotten by arpc_reply_cache_expire (the server logs it). Optional. */
    void (*on_expire)(void *ctx, uint64_t client_id);
    /* A client was forgotten on its goodbye, by arpc_reply_cache_forget or settle, leaving
     * floor behind (its highest seq, kept in rc_gone; 0 without keep_floor), held against
     * owner's share (its identity; 0: none). The server logs all three, so a restart forgets
     * the client as well, still refuses its calls up to floor, and shares the floors among
     * identities as before. Also for a goodbye deferred (a call of its ran) that a new call
     * of the client took back, with that floor, just before the call begins: the log then
     * has the goodbye and the comeback, as for a client forgotten and back. Optional. */
    void (*on_forget)(void *ctx, uint64_t client_id, uint64_t floor, uint64_t owner);
    /* A duplicate's owner lets it go if nobody is left to answer (its connection closed):
     * true, and the cache drops it. Asked only when a call has ARPC_RC_MAX_WAITERS duplicates,
     * before a new one is refused. Must not call into the cache. Optional. */
    bool (*waiter_gone)(void *ctx, struct arpc_rc_waiter *w);
    /* A reply kept in place of reply, which would take its client (or its identity) past its
     * share, or the cache past max_bytes, when its call finishes (or is restored): the call
     * ran, and a retry gets this instead of running it again. A hold on a shared reply,
     * counted as no bytes (freed through free_reply as any other); NULL: reply is kept all the
     * same (one that must be, whatever it costs). The bounds are checked when a call is
     * admitted; without this, every call admitted under them could still keep its whole
     * reply. Optional. */
    void *(*stand_in)(void *ctx, void *reply);
};

struct arpc_reply_cache_options {
    size_t max_bytes;        /* 0: 128 MiB */
    uint64_t idle_expiry_ns; /* 0: 10 minutes */
    size_t max_client_bytes; /* one client's share of max_bytes; 0: half of it */
};

struct arpc_reply_cache_stats {
    size_t clients, entries;
    size_t running, logging; /* entries in those states; the rest are DONE */
    size_t bytes;            /* as counted against max_bytes */
    uint64_t hits_attached, hits_replayed, stale, full, client_full, crowded; /* verdicts of begin, since init */
    uint64_t stood_in; /* replies not kept for a retry, over a bound when their call finished (stand_in) */
};

/* The stats' clients, entries and bytes, kept only here (arpc_reply_cache_stats copies them
 * out) so that any thread may read them (arpc_server_stats); the cache's thread writes them. */
struct arpc_reply_cache_gauges {
    arpc_stat g_clients, g_entries, g_bytes;
};

struct arpc_rc_client; /* private: core/reply_cache_store.h */
struct arpc_rc_block;

/* Freed blocks of one size kept for reuse, so a call allocates nothing in steady state. */
struct arpc_rc_spare {
    struct arpc_rc_block *s_head;
    size_t s_count;
};

/* Embedded by its owner; the fields are private. */
struct arpc_reply_cache {
    struct arpc_u64_map rc_clients;               /* client_id -> client */
    struct arpc_u64_map rc_owners;                /* identity -> struct arpc_rc_owner */
    struct arpc_rc_client *rc_last;               /* the last one looked up (or NULL) */
    struct arpc_rc_client *rc_oldest, *rc_newest; /* by last activity, for expiry */
    struct arpc_rc_spare rc_spare_entries, rc_spare_waiters;
    size_t rc_max_bytes, rc_max_client_bytes;
    uint64_t rc_idle_ns;
    struct arpc_reply_cache_ops rc_ops;
    void *rc_ctx;
    struct arpc_reply_cache_stats rc_stats;   /* but clients, entries and bytes: */
    struct arpc_reply_cache_gauges rc_gauges;
    size_t rc_goodbyes; /* clients that said goodbye while busy: settle looks only then */
    bool rc_full;       /* a reply was not kept for being over max_bytes: full until bytes go */
    struct arpc_rc_gone rc_gone; /* clients forgotten at their goodbye, by highest seq */
};

/* o may be NULL (defaults). ops is copied; ctx is passed to its callbacks. ARPC_OK or
 * ARPC_ENOMEM. */
int arpc_reply_cache_init(struct arpc_reply_cache *rc, const struct arpc_reply_cache_options *o,
                          const struct arpc_reply_cache_ops *ops, void *ctx);
/* Frees everything: every kept reply goes to free_reply, and each waiter of a RUNNING or
 * LOGGING entry to drop_waiter (may be NULL), which must not keep it. */
void arpc_reply_cache_fini(struct arpc_reply_cache *rc,
                           void (*drop_waiter)(void *ctx, struct arpc_rc_waiter *w));

enum arpc_rc_verdict {
    ARPC_RC_NEW,      /* run the handler, then finish or abort (client_id, seq) exactly once */
    ARPC_RC_ATTACHED, /* (conn, xid) waits for the running call: send nothing now */
    ARPC_RC_REPLAY,   /* send *reply_out (kept by the cache) under xid; nothing runs */
    ARPC_RC_STALE,    /* seq <= the client's ack: answer ARPC_EREJECTED; never run */
    ARPC_RC_FULL,     /* a NEW call with bytes >= max_bytes: answer ARPC_EOVERLOADED */
    ARPC_RC_CLIENT_FULL, /* a NEW call from a client (or its identity's clients) holding
                          * max_client_bytes: the same */
    ARPC_RC_NOMEM,    /* out of memory: refuse the call; it did not run */
    ARPC_RC_CROWDED,  /* ARPC_RC_MAX_WAITERS duplicates already wait for the running call:
                       * answer ARPC_EABANDONED (it may have run: nothing runs again, and a
                       * retry later finds the reply) */
};

/* Duplicates one running call may have waiting for it. A client resends a call after each
 * reconnect, so a few is plenty; without a bound, one cheap request each would grow the
 * list (and the copies of the reply) without end. */
#define ARPC_RC_MAX_WAITERS 8

/*
 * A numbered request arrived: (client_id, seq) from connection conn with its xid, from a
 * client of identity owner (0: none; the client's share is then its own alone). A known
 * client is first counted active at now_ns and its ack raised to ack, whatever the verdict;
 * a client not yet known is recorded on NEW only (seq <= ack is STALE for it too).
 * client_id 0 or seq 0 cannot be deduplicated: STALE. *reply_out is written on REPLAY only;
 * the reply stays valid until the next call into the cache. *waiter_out (waiter_out may be
 * NULL) is written on ATTACHED only: the duplicate's waiter, for its owner's w_deadline; it
 * stays in the cache until handed out by finish, durable, abort or leave.
 */
enum arpc_rc_verdict arpc_reply_cache_begin(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t owner,
                                            uint64_t seq, uint64_t ack, void *conn, uint64_t xid,
                                            uint64_t now_ns, void **reply_out,
                                            struct arpc_rc_waiter **waiter_out);

/*
 * Whether (client_id, seq) was seen: it is running or has a result (begin would attach or
 * replay), or it is at or below the client's ack or goodbye floor (begin would refuse it
 * STALE). False for a call begin would start. Changes nothing (a server that starts no call
 * any more still answers the copies of calls it ran).
 */
bool arpc_reply_cache_knows(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq);

/* Whether seq is at or below the floor client_id's goodbye left (arpc_reply_cache_forget with
 * keep_floor), the client known again since (its ack raised to the floor) or not: begin
 * refuses it STALE for that floor, which the client never sent as an ack. Changes nothing. */
bool arpc_reply_cache_under_goodbye(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq);

/*
 * The handler of a RUNNING call returned reply (reply_bytes are counted against max_bytes),
 * at now_ns: the client's activity.
 * logged = false: the entry is DONE; returns its waiters, to be sent reply. logged = true:
 * the entry is LOGGING; returns NULL (the waiters come out of arpc_reply_cache_durable), even
 * when the call was acked meanwhile: its waiters must not be answered before the record is
 * durable, and durable then drops it.
 * *kept = true: the cache owns reply now (it stays valid until the next call into the
 * cache). *kept = false (logged = false only): the caller still owns reply, and the entry is
 * gone, the call acked meanwhile (its waiters are still returned), or DONE holding a stand-in
 * (ops.stand_in: reply would have gone past a bound; its waiters are returned, to be sent
 * reply); also for a (client_id, seq) that is not RUNNING, which returns NULL.
 */
struct arpc_rc_waiter *arpc_reply_cache_finish(struct arpc_reply_cache *rc, uint64_t client_id,
                                               uint64_t seq, void *reply, size_t reply_bytes,
                                               bool logged, uint64_t now_ns, bool *kept);

/*
 * The reply log made a LOGGING call's record durable at now_ns (the client's activity): the
 * entry is DONE. Returns its waiters and *reply_out = the reply to send them. *kept as for
 * finish: false when the call was acked meanwhile (the entry is gone and the caller now owns
 * *reply_out), or when the entry keeps a stand-in instead (the caller owns *reply_out), or
 * when (client_id, seq) is not LOGGING (returns NULL, *reply_out = NULL).
 */
struct arpc_rc_waiter *arpc_reply_cache_durable(struct arpc_reply_cache *rc, uint64_t client_id,
                                                uint64_t seq, uint64_t now_ns, void **reply_out,
                                                bool *kept);

/*
 * A RUNNING call's handler did not run (its budget expired before it started, the server
 * discarded it at stop, it was cancelled before it started): the entry is removed, so a
 * retry of that seq is NEW. Returns its waiters, to be sent the error. NULL when
 * (client_id, seq) is not RUNNING: a LOGGING call has run and cannot be aborted.
 */
struct arpc_rc_waiter *arpc_reply_cache_abort(struct arpc_reply_cache *rc, uint64_t client_id,
                                              uint64_t seq);

/*
 * A waiter no longer waits for the RUNNING or LOGGING call (client_id, seq): its caller was
 * answered otherwise (the server answered it at its deadline). w is that waiter, as begin
 * handed it out (ATTACHED); NULL names the request that began the call (the one waiter not
 * attached). Matched by identity, never by (conn, xid): a client may send one xid twice on a
 * connection, and one copy's deadline must not take out another's waiter. It is taken out and
 * returned (the caller lets go of w_conn, then gives it back with free_waiters), or NULL when
 * it is not there. The call goes on; its other waiters still get its result.
 */
struct arpc_rc_waiter *arpc_reply_cache_leave(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq,
                                              const struct arpc_rc_waiter *w);

/*
 * The waiter of the request that runs (client_id, seq): the entry's first waiter, while the
 * call is RUNNING and that request still waits for its result. NULL otherwise: not running
 * (finished, LOGGING, never begun), or its request was answered otherwise and left (the
 * server answered it at its deadline). Changes nothing; the waiter stays in the cache. A
 * duplicate's owner uses it to reach the call its duplicate waits for (a CANCEL).
 */
struct arpc_rc_waiter *arpc_reply_cache_runner(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq);

/* How many calls of client_id are RUNNING; the seqs of the first max of them go to seqs.
 * Changes nothing (a client's goodbye cancels them: core/server_dedup.c). */
size_t arpc_reply_cache_running(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t *seqs, size_t max);

/* Calls fn(ctx, w) for every waiter of every RUNNING or LOGGING entry, leaving each in place
 * (the server disarms their deadlines when it stops). fn must not call into the cache. */
void arpc_reply_cache_each_waiter(struct arpc_reply_cache *rc,
                                  void (*fn)(void *ctx, struct arpc_rc_waiter *w), void *ctx);

/* Gives back a list handed out by finish, durable, abort or leave, once it was answered. */
void arpc_reply_cache_free_waiters(struct arpc_reply_cache *rc, struct arpc_rc_waiter *list);

/* A request with no seq carried ack: a known client's activity and ack are updated as in
 * begin. An unknown client is ignored. */
void arpc_reply_cache_ack(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t ack,
                          uint64_t now_ns);

/* An ACK frame (docs/PROTOCOL.md): client_id has finished every seq <= ack, and every seq <=
 * high but waiting[0..n) (ascending, each in (ack, high]: core/frame.c checked them). Added to
 * what the client said before (never taken back, whichever claim arrives last): those seqs
 * are refused STALE from now on and their results freed, as an ack's (RUNNING and LOGGING ones
 * when they finish). A known client's activity. ARPC_OK, *grew (may be NULL) saying whether it
 * acknowledged anything beyond the ack not acknowledged before; ARPC_EINVAL for an unknown
 * client (ignored: nothing of it is kept); ARPC_ENOMEM: the part beyond ack is ignored (safe:
 * results are kept longer). */
int arpc_reply_cache_ack_beyond(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t ack, uint64_t high,
                                const uint64_t *waiting, uint32_t n, uint64_t now_ns, bool *grew);

/* Forgets the clients idle for idle_expiry_ns at now_ns (see the top of this file), oldest
 * first, reporting each to on_expire; one that said goodbye and came back (a late call above
 * its floor) goes as at a goodbye instead: its floor kept, reported to on_forget. Returns how
 * many. Costs O(1) per client examined plus its entries freed; stops at the first client not
 * idle long enough. */
size_t arpc_reply_cache_expire(struct arpc_reply_cache *rc, uint64_t now_ns);
/* The same, looking at no more than `budget` clients (forgotten, or found busy and moved to the
 * back): a sweep of a loop that serves calls meanwhile does its work in slices. *more: it
 * stopped for the budget, with clients perhaps left to forget. */
size_t arpc_reply_cache_expire_some(struct arpc_reply_cache *rc, uint64_t now_ns, size_t budget, bool *more);

/* The client said goodbye (it closed and will never re-send): forget it and its replies at
 * once (reported to on_forget), without waiting for its idle expiry. With keep_floor (a
 * client whose key no later process reuses) its highest seq is kept (rc_gone), so a late copy
 * of its calls is refused; without, a later client under the same key starts afresh. Not while one of its calls is RUNNING or LOGGING
 * (false: it is kept, marked, and forgotten by arpc_reply_cache_settle once none is; a new
 * call of the client clears the mark, and is kept for its retries). True when it is gone (or
 * was never known). */
bool arpc_reply_cache_forget(struct arpc_reply_cache *rc, uint64_t client_id, bool keep_floor);

/* After a call of client_id was finished, made durable or aborted, and its waiters and reply
 * were dealt with: forgets the client (reported to on_forget) if it said goodbye and none of
 * its calls is RUNNING or LOGGING any more. Apart from those calls because they hand out the entry's reply, which a
 * forget would free. True when it was forgotten now. */
bool arpc_reply_cache_settle(struct arpc_reply_cache *rc, uint64_t client_id);

/*
 * Restart, from the reply log: a DONE entry for (client_id, seq) holding reply, no waiters;
 * the client is created if needed and counted active at now_ns. Not refused for max_bytes:
 * what the log held, the cache holds; but a reply that would take the client or the cache past
 * its bound is given back (free_reply) and a stand-in kept, as when it finished (an identity's
 * share is not known yet: its clients join it at their first call). ARPC_OK: the cache owns
 * reply. Otherwise the caller
 * keeps it: ARPC_EINVAL (client_id or seq 0), ARPC_EREJECTED (seq <= the client's ack),
 * ARPC_EBUSY (already there), ARPC_ENOMEM.
 */
int arpc_reply_cache_restore(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq,
                             void *reply, size_t reply_bytes, uint64_t now_ns);
/* Restart, from the reply log: raises the client's ack (creating the client if needed), as
 * a request would. ARPC_OK, ARPC_EINVAL (client_id 0), ARPC_ENOMEM. */
int arpc_reply_cache_restore_ack(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t ack,
                                 uint64_t now_ns);
/* Restart, from the reply log: the client, of identity owner (0: none), said goodbye after
 * calls up to floor, as forget with keep_floor left it (oldest goodbye first, so the set is
 * the one the log kept). A client the cache knows (one that came back after its goodbye) has
 * its ack raised instead, and keeps the floor for its expiry. ARPC_OK,
 * ARPC_EINVAL (client_id or floor 0), ARPC_ENOMEM. */
int arpc_reply_cache_restore_gone(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t floor,
                                  uint64_t owner);

void arpc_reply_cache_stats(const struct arpc_reply_cache *rc, struct arpc_reply_cache_stats *out);
/* What one entry and one client count in bytes, besides the reply bytes. */
size_t arpc_reply_cache_entry_cost(void);
size_t arpc_reply_cache_client_cost(void);

#endif
