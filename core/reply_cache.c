/*
 * The reply cache's at-most-once rules (contract: core/reply_cache.h), on top of its
 * storage (core/reply_cache_store.c).
 *
 * Design notes
 * - begin finds the client (the last one found is remembered) and the entry (a ring slot by
 *   seq, core/reply_cache_store.c), and on NEW fills a slot; finish, durable and abort find
 *   both again the same way. With the spare lists, a call allocates nothing in steady state.
 * - A request's ack is applied before its seq is judged, so the ack it carries can both make
 *   it STALE and free the room that saves it from FULL.
 * - A client not known yet is created on NEW only: a refused call would otherwise cost a
 *   client's worth of memory for nothing, and FULL must not grow the cache.
 * - durable, and finish without a log, drop an entry that was acked while it ran (kept =
 *   false): its client will never ask again, and a DONE entry at or below the ack could never
 *   be freed by a later ack. So every DONE entry lies above its client's ack. finish with a
 *   log keeps such an entry LOGGING: its waiters are answered once its record is durable,
 *   never before, and durable drops it then.
 * - Expiry pops the oldest client on the activity list. One with a call RUNNING or LOGGING is
 *   kept and touched instead (its call counts as activity), which keeps the list in order and
 *   bounds the work by the clients examined. finish and durable touch the client too: a
 *   call longer than idle_expiry_ns must not leave a reply that expires as soon as it is
 *   made, before a retry that lost it can come back for it.
 */
#include "core/reply_cache.h"

#include "arpc/error.h"
#include "core/reply_cache_store.h"

static enum arpc_rc_verdict refuse(struct arpc_reply_cache *rc, enum arpc_rc_verdict v)
{
    if (v == ARPC_RC_STALE)
        rc->rc_stats.stale++;
    else if (v == ARPC_RC_CROWDED)
        rc->rc_stats.crowded++;
    else if (v == ARPC_RC_CLIENT_FULL)
        rc->rc_stats.client_full++;
    else
        rc->rc_stats.full++;
    return v;
}

static bool is_full(const struct arpc_reply_cache *rc)
{
    return arpc_stat_get(&rc->rc_gauges.g_bytes) >= rc->rc_max_bytes || rc->rc_full;
}

/* Enters (c, seq) RUNNING with (conn, xid) as its first waiter. */
static enum arpc_rc_verdict start_call(struct arpc_reply_cache *rc, struct arpc_rc_client *c,
                                       uint64_t seq, void *conn, uint64_t xid)
{
    struct arpc_rc_entry *e = arpc_rc_entry_new(rc, seq);
    struct arpc_rc_waiter *w = arpc_rc_waiter_new(rc, conn, xid, seq);
    if (e != NULL && w != NULL) {
        e->e_waiters = w;
        e->e_last = &w->w_next;
        if (arpc_rc_entry_add(rc, c, e) == ARPC_OK) {
            if (seq > c->c_begun)
                c->c_begun = seq;
            return ARPC_RC_NEW;
        }
    }
    if (e != NULL)
        arpc_rc_entry_recycle(rc, e);
    arpc_reply_cache_free_waiters(rc, w);
    return ARPC_RC_NOMEM;
}

/* The duplicates of e nobody is left to answer (rc_ops.waiter_gone) leave, making room for
 * live ones: a client that reconnects again and again while its call runs leaves a copy per
 * connection. Returns how many duplicates are left. */
static size_t prune_gone(struct arpc_reply_cache *rc, struct arpc_rc_entry *e)
{
    if (rc->rc_ops.waiter_gone == NULL)
        return e->e_nwaiters;
    struct arpc_rc_waiter **p = &e->e_waiters;
    while (*p != NULL) {
        struct arpc_rc_waiter *w = *p;
        if (w->w_attached && rc->rc_ops.waiter_gone(rc->rc_ctx, w)) {
            *p = w->w_next;
            if (e->e_nwaiters > 0)
                e->e_nwaiters--;
            arpc_rc_spare_give(&rc->rc_spare_waiters, w);
            continue;
        }
        p = &w->w_next;
    }
    e->e_last = p;
    return e->e_nwaiters;
}

/* The highest seq c began, holds an entry for or acknowledged. A call cancelled before it
 * started keeps no entry (a re-send of it by a client still there runs), but after a goodbye
 * none may come: a copy of it (a proxy replaying) must be refused as the others are. */
static uint64_t highest_seq(const struct arpc_rc_client *c)
{
    uint64_t top = c->c_ack > c->c_claim.ac_high ? c->c_ack : c->c_claim.ac_high, seq;
    if (c->c_begun > top)
        top = c->c_begun;
    for (size_t i = 0; i <= c->c_ring_mask; i++)
        if (c->c_ring[i] != NULL && c->c_ring[i]->e_seq > top)
            top = c->c_ring[i]->e_seq;
    void *e;
    for (size_t pos = 0; arpc_u64_map_next(&c->c_entries, &pos, &seq, &e);)
        if (seq > top)
            top = seq;
    return top;
}

/* The identity c is held against (0: none), for on_forget. */
static uint64_t client_owner_id(const struct arpc_rc_client *c) { return c->c_owner != NULL ? c->c_owner->o_id : 0; }

/* begin for a client not known yet. */
static enum arpc_rc_verdict begin_first(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t owner,
                                        uint64_t seq, uint64_t ack, void *conn, uint64_t xid,
                                        uint64_t now_ns)
{
    uint64_t floor = arpc_rc_gone_floor(&rc->rc_gone, client_id); /* 0: no goodbye known */
    if (floor > ack)
        ack = floor;
    if (seq <= ack)
        return refuse(rc, ARPC_RC_STALE);
    if (is_full(rc))
        return refuse(rc, ARPC_RC_FULL);
    struct arpc_rc_client *c = arpc_rc_client_new(rc, client_id, ack, now_ns);
    if (c == NULL)
        return ARPC_RC_NOMEM;
    enum arpc_rc_verdict v = arpc_rc_client_own(rc, c, owner) != ARPC_OK ? ARPC_RC_NOMEM
                             : arpc_rc_over_share(rc, c)                  ? refuse(rc, ARPC_RC_CLIENT_FULL)
                                                                         : start_call(rc, c, seq, conn, xid);
    if (v != ARPC_RC_NEW)
        arpc_rc_client_free(rc, c, NULL);
    else if (floor != 0) {
        arpc_rc_gone_take(&rc->rc_gone, client_id); /* known again: its ack carries the floor */
        c->c_floor = floor;
    }
    return v;
}

enum arpc_rc_verdict arpc_reply_cache_begin(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t owner,
                                            uint64_t seq, uint64_t ack, void *conn, uint64_t xid,
                                            uint64_t now_ns, void **reply_out,
                                            struct arpc_rc_waiter **waiter_out)
{
    if (client_id == 0 || seq == 0)
        return refuse(rc, ARPC_RC_STALE);
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    if (c == NULL)
        return begin_first(rc, client_id, owner, seq, ack, conn, xid, now_ns);
    if (c->c_owner == NULL && owner != 0 && arpc_rc_client_own(rc, c, owner) != ARPC_OK)
        return ARPC_RC_NOMEM; /* (a client the reply log brought back meets its identity) */
    arpc_rc_touch(rc, c, now_ns);
    arpc_rc_raise_ack(rc, c, ack);
    if (arpc_rc_acked(c, seq))
        return refuse(rc, ARPC_RC_STALE);
    struct arpc_rc_entry *e = arpc_rc_entry_get(c, seq);
    if (e == NULL && is_full(rc))
        return refuse(rc, ARPC_RC_FULL);
    if (e == NULL && arpc_rc_over_share(rc, c))
        return refuse(rc, ARPC_RC_CLIENT_FULL);
    if (e == NULL) {
        if (c->c_goodbye) { /* it calls again: its goodbye spoke for the calls before only */
            rc->rc_goodbyes--;
            c->c_goodbye = false;
            if (c->c_goodbye_floor) {
                /* Known again as at begin_first: the floor is kept for its expiry, and the log
                 * hears the goodbye now, before this call brings the client back, so a restart
                 * keeps the floor too (the log had heard nothing of the deferred goodbye). */
                c->c_floor = highest_seq(c);
                if (rc->rc_ops.on_forget != NULL)
                    rc->rc_ops.on_forget(rc->rc_ctx, client_id, c->c_floor, client_owner_id(c));
            }
        }
        return start_call(rc, c, seq, conn, xid);
    }
    if (e->e_state == ARPC_RC_DONE) {
        rc->rc_stats.hits_replayed++;
        *reply_out = e->e_reply;
        return ARPC_RC_REPLAY;
    }
    if (e->e_nwaiters >= ARPC_RC_MAX_WAITERS && prune_gone(rc, e) >= ARPC_RC_MAX_WAITERS)
        return refuse(rc, ARPC_RC_CROWDED);
    struct arpc_rc_waiter *w = arpc_rc_waiter_new(rc, conn, xid, seq);
    if (w == NULL)
        return ARPC_RC_NOMEM;
    w->w_attached = true;
    if (waiter_out != NULL)
        *waiter_out = w;
    *e->e_last = w;
    e->e_last = &w->w_next;
    e->e_nwaiters++;
    rc->rc_stats.hits_attached++;
    return ARPC_RC_ATTACHED;
}

bool arpc_reply_cache_knows(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq)
{
    if (client_id == 0 || seq == 0)
        return false;
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    if (c == NULL)
        return seq <= arpc_rc_gone_floor(&rc->rc_gone, client_id);
    return arpc_rc_acked(c, seq) || arpc_rc_entry_get(c, seq) != NULL;
}

bool arpc_reply_cache_under_goodbye(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq)
{
    if (client_id == 0 || seq == 0)
        return false;
    const struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    return seq <= (c != NULL ? c->c_floor : arpc_rc_gone_floor(&rc->rc_gone, client_id));
}

/* The entry of (client_id, seq) if it is in state, with its client in *c; else NULL. */
static struct arpc_rc_entry *find(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq,
                                  enum arpc_rc_state state, struct arpc_rc_client **c)
{
    *c = arpc_rc_client_get(rc, client_id);
    struct arpc_rc_entry *e = *c != NULL ? arpc_rc_entry_get(*c, seq) : NULL;
    return e != NULL && e->e_state == state ? e : NULL;
}

/* find, for a reply being made at now_ns (finish, durable): that is the client's activity. */
static struct arpc_rc_entry *find_replying(struct arpc_reply_cache *rc, uint64_t client_id,
                                           uint64_t seq, enum arpc_rc_state state,
                                           uint64_t now_ns, struct arpc_rc_client **c)
{
    struct arpc_rc_entry *e = find(rc, client_id, seq, state, c);
    if (e != NULL)
        arpc_rc_touch(rc, *c, now_ns);
    return e;
}

/* Whether n more bytes kept for c would take it (or its identity's clients) past a client's
 * share, or the cache past its bound; if so, what would go past is full from now on (a new
 * call refused, as at its share) until entries are freed (arpc_rc_books_freed). */
static bool over_if_kept(struct arpc_reply_cache *rc, struct arpc_rc_client *c, size_t n)
{
    bool over = false;
    if (c->c_bytes + n > rc->rc_max_client_bytes)
        over = c->c_full = true;
    if (c->c_owner != NULL && c->c_owner->o_bytes + n > rc->rc_max_client_bytes)
        over = c->c_owner->o_full = true;
    if (arpc_stat_get(&rc->rc_gauges.g_bytes) + n > rc->rc_max_bytes)
        over = rc->rc_full = true;
    return over;
}

/* What to keep in reply's place when keeping it would go past a bound; NULL: reply itself
 * (the owner keeps some whatever they cost: a refusal that says "did not run"). */
static void *stand_in_for(struct arpc_reply_cache *rc, struct arpc_rc_client *c, void *reply, size_t n)
{
    if (rc->rc_ops.stand_in == NULL || !over_if_kept(rc, c, n))
        return NULL;
    void *in_place = rc->rc_ops.stand_in(rc->rc_ctx, reply);
    if (in_place != NULL)
        rc->rc_stats.stood_in++;
    return in_place;
}

struct arpc_rc_waiter *arpc_reply_cache_finish(struct arpc_reply_cache *rc, uint64_t client_id,
                                               uint64_t seq, void *reply, size_t reply_bytes,
                                               bool logged, uint64_t now_ns, bool *kept)
{
    *kept = false;
    struct arpc_rc_client *c;
    struct arpc_rc_entry *e = find_replying(rc, client_id, seq, ARPC_RC_RUNNING, now_ns, &c);
    if (e == NULL)
        return NULL;
    /* Acked meanwhile: nobody will ask again. With a log, its waiters still wait for the record
     * (a reply never leaves before it is durable), and durable drops the entry. */
    if (arpc_rc_acked(c, seq) && !logged)
        return arpc_rc_entry_remove(rc, c, e);
    /* With a log the reply is held until its record is durable (its waiters get it then),
     * and the bound applies when it is kept for good (arpc_reply_cache_durable). */
    void *in_place = logged ? NULL : stand_in_for(rc, c, reply, reply_bytes);
    if (in_place != NULL) {
        arpc_rc_entry_hold(rc, c, e, in_place, 0); /* reply stays the caller's */
        arpc_rc_entry_move(rc, c, e, ARPC_RC_DONE);
        return arpc_rc_take_waiters(e);
    }
    *kept = true;
    arpc_rc_entry_hold(rc, c, e, reply, reply_bytes);
    arpc_rc_entry_move(rc, c, e, logged ? ARPC_RC_LOGGING : ARPC_RC_DONE);
    return logged ? NULL : arpc_rc_take_waiters(e);
}

struct arpc_rc_waiter *arpc_reply_cache_durable(struct arpc_reply_cache *rc, uint64_t client_id,
                                                uint64_t seq, uint64_t now_ns, void **reply_out,
                                                bool *kept)
{
    *kept = false;
    *reply_out = NULL;
    struct arpc_rc_client *c;
    struct arpc_rc_entry *e = find_replying(rc, client_id, seq, ARPC_RC_LOGGING, now_ns, &c);
    if (e == NULL)
        return NULL;
    *reply_out = e->e_reply;
    if (arpc_rc_acked(c, seq))
        return arpc_rc_entry_remove(rc, c, e); /* the reply passes to the caller */
    /* Held while logging, its bytes are in the books already: kept for good only within the
     * bounds (0 more), else the reply passes to the caller and a stand-in stays. */
    void *in_place = stand_in_for(rc, c, e->e_reply, 0);
    if (in_place != NULL) {
        arpc_rc_books_sub(rc, c, e->e_reply_bytes);
        arpc_rc_entry_hold(rc, c, e, in_place, 0);
    } else {
        *kept = true;
    }
    arpc_rc_entry_move(rc, c, e, ARPC_RC_DONE);
    return arpc_rc_take_waiters(e);
}

struct arpc_rc_waiter *arpc_reply_cache_abort(struct arpc_reply_cache *rc, uint64_t client_id,
                                              uint64_t seq)
{
    struct arpc_rc_client *c;
    struct arpc_rc_entry *e = find(rc, client_id, seq, ARPC_RC_RUNNING, &c);
    return e != NULL ? arpc_rc_entry_remove(rc, c, e) : NULL;
}

struct arpc_rc_waiter *arpc_reply_cache_runner(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq)
{
    struct arpc_rc_client *c;
    struct arpc_rc_entry *e = find(rc, client_id, seq, ARPC_RC_RUNNING, &c);
    /* The request that began the call is first until it leaves (leave with NULL). */
    return e != NULL && e->e_waiters != NULL && !e->e_waiters->w_attached ? e->e_waiters : NULL;
}

struct arpc_rc_waiter *arpc_reply_cache_leave(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq,
                                              const struct arpc_rc_waiter *which)
{
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    struct arpc_rc_entry *e = c != NULL ? arpc_rc_entry_get(c, seq) : NULL;
    if (e == NULL || e->e_state == ARPC_RC_DONE)
        return NULL;
    for (struct arpc_rc_waiter **p = &e->e_waiters; *p != NULL; p = &(*p)->w_next) {
        struct arpc_rc_waiter *w = *p;
        if (which != NULL ? w != which : w->w_attached)
            continue;
        /* e_nwaiters counts the duplicates, not the first waiter (the request that began
         * the call); a duplicate leaving after it is not counted down: the bound errs low. */
        if (p != &e->e_waiters && e->e_nwaiters > 0)
            e->e_nwaiters--;
        *p = w->w_next;
        if (e->e_last == &w->w_next)
            e->e_last = p;
        w->w_next = NULL;
        return w;
    }
    return NULL;
}

void arpc_reply_cache_ack(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t ack,
                          uint64_t now_ns)
{
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    if (c == NULL)
        return;
    arpc_rc_touch(rc, c, now_ns);
    arpc_rc_raise_ack(rc, c, ack);
}

int arpc_reply_cache_ack_beyond(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t ack, uint64_t high,
                                const uint64_t *waiting, uint32_t n, uint64_t now_ns, bool *grew)
{
    bool ignored;
    if (grew == NULL)
        grew = &ignored;
    *grew = false;
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    if (c == NULL)
        return ARPC_EINVAL; /* nothing of it is kept: nothing to say of it */
    arpc_rc_touch(rc, c, now_ns);
    arpc_rc_raise_ack(rc, c, ack);
    return arpc_rc_ack_beyond(rc, c, high, waiting, n, grew);
}

/* ---- goodbye ---- */

/* Forgets c on its goodbye (no call of its runs), telling on_forget (the server logs it, as
 * it does an expiry). What stays is its highest seq (rc_gone): a copy of one of its calls
 * that arrives late (from a half-open connection, or a proxy that replays) is refused as
 * acknowledged, never run again. The floor goes to on_forget too, for the log to keep it
 * across a restart (even when rc_gone had no memory for it: the log's copy is the truth). */
static void forget_client(struct arpc_reply_cache *rc, struct arpc_rc_client *c, bool keep_floor)
{
    uint64_t id = c->c_id;
    uint64_t floor = keep_floor ? highest_seq(c) : 0;
    uint64_t owner = client_owner_id(c);
    if (floor != 0) /* best effort, as documented; held against its identity's share */
        (void)arpc_rc_gone_put(&rc->rc_gone, id, floor, owner);
    arpc_rc_client_free(rc, c, NULL);
    if (rc->rc_ops.on_forget != NULL)
        rc->rc_ops.on_forget(rc->rc_ctx, id, floor, owner);
}

size_t arpc_reply_cache_expire(struct arpc_reply_cache *rc, uint64_t now_ns)
{
    bool more;
    return arpc_reply_cache_expire_some(rc, now_ns, SIZE_MAX, &more);
}

size_t arpc_reply_cache_expire_some(struct arpc_reply_cache *rc, uint64_t now_ns, size_t budget, bool *more)
{
    size_t n = 0;
    struct arpc_rc_client *c;
    *more = false;
    while ((c = rc->rc_oldest) != NULL && now_ns >= c->c_last_ns &&
           now_ns - c->c_last_ns >= rc->rc_idle_ns) {
        if (budget-- == 0) {
            *more = true;
            break;
        }
        if (c->c_busy > 0) {
            arpc_rc_touch(rc, c, now_ns);
            continue;
        }
        n++;
        if (c->c_floor != 0) {
            /* It said goodbye, then a late call of its made it known again: idle now, it goes
             * as at its goodbye, its floor standing again (an expiry keeps none, and the late
             * copies its goodbye refused would run). */
            forget_client(rc, c, true);
            continue;
        }
        uint64_t id = c->c_id;
        arpc_rc_client_free(rc, c, NULL);
        if (rc->rc_ops.on_expire != NULL)
            rc->rc_ops.on_expire(rc->rc_ctx, id);
    }
    return n;
}

bool arpc_reply_cache_forget(struct arpc_reply_cache *rc, uint64_t client_id, bool keep_floor)
{
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    if (c == NULL)
        return true;
    if (c->c_busy > 0) {
        rc->rc_goodbyes += !c->c_goodbye;
        c->c_goodbye = true; /* a call still runs: its result must still reach its waiters */
        c->c_goodbye_floor = keep_floor;
        return false;
    }
    forget_client(rc, c, keep_floor);
    return true;
}

bool arpc_reply_cache_settle(struct arpc_reply_cache *rc, uint64_t client_id)
{
    if (rc->rc_goodbyes == 0)
        return false; /* the common case, after every call: no lookup */
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    if (c == NULL || !c->c_goodbye || c->c_busy > 0)
        return false;
    forget_client(rc, c, c->c_goodbye_floor);
    return true;
}

/* ---- restart ---- */

int arpc_reply_cache_restore(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t seq,
                             void *reply, size_t reply_bytes, uint64_t now_ns)
{
    if (client_id == 0 || seq == 0)
        return ARPC_EINVAL;
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    bool created = c == NULL;
    if (created && (c = arpc_rc_client_new(rc, client_id, 0, now_ns)) == NULL)
        return ARPC_ENOMEM;
    arpc_rc_touch(rc, c, now_ns);
    if (arpc_rc_acked(c, seq))
        return ARPC_EREJECTED;
    if (arpc_rc_entry_get(c, seq) != NULL)
        return ARPC_EBUSY;
    struct arpc_rc_entry *e = arpc_rc_entry_new(rc, seq);
    if (e != NULL) {
        /* Held to the bounds as when it finished (its entry booked then, so counted here): a
         * reply not kept then was logged all the same, and the log keeps it (it is the
         * call's record). */
        void *in_place = stand_in_for(rc, c, reply, arpc_reply_cache_entry_cost() + reply_bytes);
        e->e_state = ARPC_RC_DONE;
        e->e_reply = in_place != NULL ? in_place : reply;
        e->e_reply_bytes = in_place != NULL ? 0 : reply_bytes;
        if (arpc_rc_entry_add(rc, c, e) == ARPC_OK) {
            if (in_place != NULL)
                arpc_rc_free_reply(rc, reply);
            return ARPC_OK;
        }
        if (in_place != NULL)
            arpc_rc_free_reply(rc, in_place);
        arpc_rc_entry_recycle(rc, e);
    }
    if (created)
        arpc_rc_client_free(rc, c, NULL);
    return ARPC_ENOMEM;
}

int arpc_reply_cache_restore_ack(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t ack,
                                 uint64_t now_ns)
{
    if (client_id == 0)
        return ARPC_EINVAL;
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    if (c == NULL)
        return arpc_rc_client_new(rc, client_id, ack, now_ns) != NULL ? ARPC_OK : ARPC_ENOMEM;
    arpc_rc_touch(rc, c, now_ns);
    arpc_rc_raise_ack(rc, c, ack);
    return ARPC_OK;
}

int arpc_reply_cache_restore_gone(struct arpc_reply_cache *rc, uint64_t client_id, uint64_t floor,
                                  uint64_t owner)
{
    if (client_id == 0 || floor == 0)
        return ARPC_EINVAL;
    struct arpc_rc_client *c = arpc_rc_client_get(rc, client_id);
    if (c != NULL) { /* it came back after its goodbye: the floor holds, and comes back at its expiry */
        arpc_rc_raise_ack(rc, c, floor);
        if (floor > c->c_floor)
            c->c_floor = floor;
        return ARPC_OK;
    }
    return arpc_rc_gone_put(&rc->rc_gone, client_id, floor, owner);
}
