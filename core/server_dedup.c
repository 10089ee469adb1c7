/*
 * At-most-once on the server: the gate every numbered call passes on the loop thread, and the
 * fan-out of a finished call's result to every request waiting for it. The bookkeeping itself
 * (states, acks, the memory bound, idle expiry) is core/reply_cache.c; this file ties it to
 * connections and replies.
 *
 * What the cache keeps for a finished call is its encoded reply frame (struct reply_msg, with
 * the first request's xid in it). Every request that gets it -- the one that ran it, the
 * duplicates that attached while it ran, those that arrive later -- is sent a copy under its
 * own xid: the bytes after the header are the same, byte for byte.
 *
 * The cache's times (a client's last activity, the sweep's now) are read from the coarse clock
 * (arpc_now_coarse_ns, a few ms behind): they only ever measure idle expiry, which is minutes
 * and checked 10% late anyway, and the precise clock cost one read per cache step per call.
 *
 * A waiter holds a reference to its connection, so a connection that closed while its
 * duplicate waited is still safe to look at when the result comes out (it is then skipped).
 * Waiters come and go on the loop's thread, so the reference comes from and goes back to the
 * loop's stash (sconn_retain_loop), as a request's does: no locked operation per call. The
 * teardown's drop (dedup_drop_waiter) lets go with sconn_release: the stash is closed then.
 *
 * A duplicate waits no longer than its own deadline (the wire's budget, counted from its
 * arrival, like any request's): one armed on its waiter (w_deadline) answers it ARPC_ETIMEDOUT
 * and takes it out, while the call goes on and its result stays for a later retry. Without
 * it, a long or leaked call would pin every duplicate's connection for as long as it runs.
 * Every way out of the waiters (answered, left, dropped) passes dedup_unwait, which disarms
 * it; a stop disarms the rest (dedup_stop), so no deadline outlives the server's loop.
 *
 * Cancelling a copy: a duplicate is listed on its connection (sc_copies) while it waits, so a
 * CANCEL naming its xid finds it, and through the cache entry the request that runs the call
 * (arpc_reply_cache_runner: that request's connection and xid), which is then cancelled as a
 * CANCEL on its own connection would (request_cancel_call, which finds it in that connection's
 * table only while it runs: no pointer to it is kept here). The copies are the same client's
 * call (same cache key and seq), so any of them may cancel it, whether the original's
 * connection is still open or not, and every copy then gets what the handler replies
 * (docs/SEMANTICS.md). The cancelled copy itself keeps waiting for that reply: a caller that
 * cancelled has its answer already (its future), and one still waiting gets the result.
 *
 * Cancelling by seq: a client whose caller cancelled a call while it had no connection names
 * the call by its seq in a CANCEL on its next connection (docs/PROTOCOL.md, CANCEL). The same
 * way in: the cache entry's runner, under this connection's own cache key (so a client reaches
 * only its own calls), then request_cancel_call. The client will never send that seq again,
 * so a call that had not started keeps its ARPC_ECANCELLED as its result (RQ_CANCEL_KEPT): a
 * late copy from anywhere gets that, never a run.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/frame.h"
#include "core/jsonrpc_server.h"
#include "core/server_internal.h"

#define DEDUP_DEFAULT_EXPIRY_S 600

/* A reply the cache lets go of. While a call is admitted, its ack discards the replies the
 * client has read; a large one's block then serves that connection's next large frame (a
 * request's body, a reply), so steady bulk traffic does not hand the allocator a block per
 * call to trim and fault in again (docs/PERFORMANCE.md). */
static void dedup_free_reply(void *ctx, void *reply)
{
    arpc_server *s = ctx;
    reply_msg_put_near(reply, s->sv_admitting);
}

static void dedup_on_expire(void *ctx, uint64_t client_id)
{
    arpc_log(ARPC_LOG_DEBUG, "client %016llx idle: its cached replies are forgotten", (unsigned long long)client_id);
    journal_forget(ctx, client_id, 0, 0); /* so a restart forgets it too */
}

static void dedup_on_forget(void *ctx, uint64_t client_id, uint64_t floor, uint64_t owner)
{
    /* Its goodbye: a restart forgets it too, keeping its floor against its identity's share. */
    journal_forget(ctx, client_id, floor, owner);
}

/* A duplicate stops waiting: a CANCEL can no longer name it. */
static void dedup_unlist_copy(struct arpc_rc_waiter *w)
{
    if (w->w_attached)
        arpc_dlist_remove(&((struct server_conn *)w->w_conn)->sc_copies, &w->w_copy_link);
}

/* At teardown, after the stop disarmed every waiter's deadline (the loop may be gone). */
static void dedup_drop_waiter(void *ctx, struct arpc_rc_waiter *w)
{
    (void)ctx;
    dedup_unlist_copy(w);
    sconn_release(w->w_conn);
}

static void dedup_unwait(struct arpc_rc_waiter *w);

/* A duplicate whose connection closed has nobody to answer: it lets go, making room. */
static bool dedup_waiter_gone(void *ctx, struct arpc_rc_waiter *w)
{
    (void)ctx;
    if (((struct server_conn *)w->w_conn)->sc_conn.c_open)
        return false;
    dedup_unwait(w);
    return true;
}

/* An ARPC_EABANDONED result made by the server. xid 0: each waiter gets a header of its own
 * (dedup_send). */
static struct reply_msg *dedup_error_reply(const char *why)
{
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + ARPC_ERROR_FIXED_SIZE + 128];
    size_t why_len = strlen(why);
    assert(why_len <= 128);
    size_t len = arpc_frame_encode_error(frame, ARPC_FRAME_ERROR, 0, ARPC_EABANDONED, 0, why, why_len);
    return reply_msg_from_frame(frame, len);
}

/* The cache's WARN lines (full, a reply not kept): at most one per this long each. */
#define DEDUP_FULL_LOG_EVERY_NS (10 * 1000000000ull)

static void *dedup_stand_in(void *ctx, void *reply)
{
    arpc_server *s = ctx;
    struct reply_msg *rm = reply;
    /* An ERROR (a refusal: "did not run", the only kind of reply that did not run; the
     * shared answers; a handler's failure) says what a retry must hear, in a few words: kept
     * whatever it costs. Its kind, not rm_ran, which a restored reply does not know
     * (reply_msg_from_frame). */
    if (arpc_frame_kind_of(rm->rm_frame) == ARPC_FRAME_ERROR)
        return NULL;
    uint64_t quiet;
    if (arpc_log_throttle_due(&s->sv_unkept_log, arpc_now_coarse_ns(), DEDUP_FULL_LOG_EVERY_NS, 1, &quiet))
        arpc_log(ARPC_LOG_WARN,
                 "a reply of %zu bytes went past the reply cache's bound (reply_cache_bytes %zu, half of it per client) "
                 "and was not kept: a retry of its call gets ARPC_EABANDONED (%llu more since the last line); clients "
                 "that acknowledge their replies, or a larger cache, keep them",
                 rm->rm_len, s->sv_cache.rc_max_bytes, (unsigned long long)quiet);
    s->sv_unkept_reply->rm_refs++; /* the cache's, given back through dedup_free_reply */
    return s->sv_unkept_reply;
}

static void dedup_put_error_replies(arpc_server *s)
{
    reply_msg_put(s->sv_unkept_reply);
    s->sv_unkept_reply = NULL;
    reply_msg_put(s->sv_lost_reply); /* the last of its copies frees it */
    reply_msg_put(s->sv_stop_reply);
    reply_msg_put(s->sv_log_lost_reply);
    s->sv_lost_reply = NULL;
    s->sv_stop_reply = NULL;
    s->sv_log_lost_reply = NULL;
}

int dedup_init(arpc_server *s, size_t max_bytes, uint32_t expiry_s)
{
    static const struct arpc_reply_cache_ops ops = {
        .free_reply = dedup_free_reply,
        .on_expire = dedup_on_expire,
        .on_forget = dedup_on_forget,
        .waiter_gone = dedup_waiter_gone,
        .stand_in = dedup_stand_in,
    };
    s->sv_expiry_s = expiry_s ? expiry_s : DEDUP_DEFAULT_EXPIRY_S;
    struct arpc_reply_cache_options o = {
        .max_bytes = max_bytes,
        .idle_expiry_ns = (uint64_t)s->sv_expiry_s * 1000000000ull,
    };
    /* Made now: when they are needed, there may be no memory to make them. */
    s->sv_lost_reply = dedup_error_reply(SERVER_LOST_REPLY_MSG);
    s->sv_stop_reply = dedup_error_reply(SERVER_STOP_REPLY_MSG);
    s->sv_log_lost_reply = dedup_error_reply(SERVER_LOG_LOST_MSG);
    s->sv_unkept_reply = dedup_error_reply(SERVER_UNKEPT_REPLY_MSG);
    int rc = s->sv_lost_reply == NULL || s->sv_stop_reply == NULL || s->sv_log_lost_reply == NULL ||
                     s->sv_unkept_reply == NULL
                 ? ARPC_ENOMEM
                 : arpc_reply_cache_init(&s->sv_cache, &o, &ops, s);
    if (rc != ARPC_OK)
        dedup_put_error_replies(s);
    return rc;
}

void dedup_fini(arpc_server *s)
{
    arpc_reply_cache_fini(&s->sv_cache, dedup_drop_waiter);
    dedup_put_error_replies(s);
}

/* Expiry is checked ten times per expiry period: a client is forgotten at most 10% late. */
static double dedup_sweep_every_s(const arpc_server *s) { return s->sv_expiry_s / 10.0; }

/* Clients one slice of the sweep looks at: each forgotten frees its replies and may log a
 * record, so a sweep of many (a flood of made-up client ids all going idle at once) is cut
 * into slices with I/O between them, as the connection limits' sweep is (review 238). */
#define DEDUP_SWEEP_SLICE 256

static void dedup_on_sweep(struct arpc_deadline *d, void *arg)
{
    arpc_server *s = arg;
    bool more;
    (void)arpc_reply_cache_expire_some(&s->sv_cache, arpc_now_coarse_ns(), DEDUP_SWEEP_SLICE, &more);
    /* Re-arming the entry just taken out of the heap needs no room: it cannot fail. More left:
     * the next slice after the loop's next poll. */
    arpc_deadline_arm_after_s(s->sv_loop, d, more ? 0 : dedup_sweep_every_s(s));
}

void dedup_start(arpc_server *s)
{
    if (arpc_deadline_is_armed(&s->sv_sweep))
        return;
    arpc_deadline_init(&s->sv_sweep, dedup_on_sweep, s);
    if (arpc_deadline_arm_after_s(s->sv_loop, &s->sv_sweep, dedup_sweep_every_s(s)) != ARPC_OK)
        arpc_log(ARPC_LOG_WARN, "server: out of memory arming the reply cache's expiry sweep; tried again at the next "
                                "client's HELLO");
}

static void dedup_disarm_waiter(void *s, struct arpc_rc_waiter *w)
{
    arpc_deadline_cancel(((arpc_server *)s)->sv_loop, &w->w_deadline);
}

/* The waiters left (their connections are closed) stay until dedup_fini; their deadlines must
 * not: once the server stopped, its (an application's) loop may be destroyed first. */
void dedup_stop(arpc_server *s)
{
    arpc_deadline_cancel(s->sv_loop, &s->sv_sweep);
    arpc_reply_cache_each_waiter(&s->sv_cache, dedup_disarm_waiter, s);
}

/* Sends rm's frame to sc under xid (a copy: the cache keeps the original). */
static void reply_msg_written(void *rm) { reply_msg_free(rm); }

void sconn_send_frame(struct server_conn *sc, struct reply_msg *rm)
{
    if (!sc->sc_conn.c_open) {
        reply_msg_free(rm);
        return;
    }
    if (jsonrpc_sconn_send_reply(sc, rm))
        return;
    if (arpc_conn_send_shared(&sc->sc_conn, rm, rm->rm_frame, rm->rm_len, reply_msg_written) == ARPC_ENOMEM)
        arpc_conn_close(&sc->sc_conn, ARPC_ENOMEM); /* never leave a caller waiting */
}

/* Sends rm's frame to sc under xid. The request that ran the call (its xid is in the frame)
 * gets the very frame, shared with the cache; any other gets a header of its own with its
 * xid, followed by the same shared body: a duplicate costs a header, never a copy of the
 * reply (a flood of duplicates of one large reply would otherwise multiply it in memory). */
static void dedup_send(struct server_conn *sc, struct reply_msg *rm, uint64_t xid)
{
    if (!sc->sc_conn.c_open)
        return;
    if (arpc_frame_xid(rm->rm_frame) == xid) {
        rm->rm_refs++;
        if (arpc_conn_send_shared(&sc->sc_conn, rm, rm->rm_frame, rm->rm_len, reply_msg_release) == ARPC_ENOMEM)
            arpc_conn_close(&sc->sc_conn, ARPC_ENOMEM);
        return;
    }
    uint8_t *head = arpc_malloc(ARPC_FRAME_HEADER_SIZE);
    if (head == NULL) {
        arpc_conn_close(&sc->sc_conn, ARPC_ENOMEM); /* never leave a caller waiting */
        return;
    }
    memcpy(head, rm->rm_frame, ARPC_FRAME_HEADER_SIZE);
    arpc_frame_set_xid(head, xid);
    /* Both parts are queued in this loop turn, one after the other: nothing comes between (a
     * body refused closes the connection). */
    if (arpc_conn_send(&sc->sc_conn, head, head, ARPC_FRAME_HEADER_SIZE) == ARPC_ENOMEM) {
        arpc_conn_close(&sc->sc_conn, ARPC_ENOMEM);
        return;
    }
    if (rm->rm_len == ARPC_FRAME_HEADER_SIZE)
        return;
    rm->rm_refs++;
    int rc = arpc_conn_send_shared(&sc->sc_conn, rm, rm->rm_frame + ARPC_FRAME_HEADER_SIZE,
                                   rm->rm_len - ARPC_FRAME_HEADER_SIZE, reply_msg_release);
    if (rc != ARPC_OK) /* no memory, or the header took the output past its hard cap */
        arpc_conn_close(&sc->sc_conn, rc); /* half a frame queued: the connection must go */
}

/* A waiter was answered or stops waiting: a duplicate stops counting as a call on its
 * connection (which may then close, its client having sent all it will), and lets go of it. */
static void dedup_unwait(struct arpc_rc_waiter *w)
{
    struct server_conn *sc = w->w_conn;
    arpc_deadline_cancel(sc->sc_server->sv_loop, &w->w_deadline); /* unarmed: nothing done */
    dedup_unlist_copy(w);
    if (w->w_attached)
        inflight_detach(w->w_conn);
    sconn_release_loop(w->w_conn); /* back to the stash while sc is open */
}

static void dedup_answer(arpc_server *s, struct arpc_rc_waiter *waiters, struct reply_msg *rm)
{
    for (struct arpc_rc_waiter *w = waiters; w != NULL; w = w->w_next) {
        dedup_send(w->w_conn, rm, w->w_xid);
        dedup_unwait(w);
    }
    arpc_reply_cache_free_waiters(&s->sv_cache, waiters);
}

/* A duplicate's deadline passed before the call it waits for finished: it gets what its own
 * deadline would give it as a call ("may have run"), and stops waiting (which frees its
 * connection, and its place among ARPC_RC_MAX_WAITERS). */
static void dedup_on_waiter_deadline(struct arpc_deadline *d, void *arg)
{
    (void)d;
    static const char why[] = "the call this retry waits for did not finish by the retry's deadline";
    struct arpc_rc_waiter *w = arg;
    struct server_conn *sc = w->w_conn;
    sconn_retain(sc); /* the waiter's reference may be the last */
    sconn_send_error(sc, w->w_xid, ARPC_ETIMEDOUT, why, sizeof(why) - 1);
    dedup_leave(sc, w->w_seq, w); /* this waiter, not another copy sent with the same xid */
    sconn_release(sc);
}

static void dedup_arm_waiter(arpc_server *s, struct arpc_rc_waiter *w, uint64_t deadline_ns)
{
    arpc_deadline_init(&w->w_deadline, dedup_on_waiter_deadline, w);
    if (deadline_ns != ARPC_NEVER) /* ENOMEM: it waits for the call, as it would without one */
        (void)arpc_deadline_arm(s->sv_loop, &w->w_deadline, deadline_ns);
}

/* Every numbered call is refused while the cache is full, and the operator must hear it (a
 * soak trial: clients killed before acknowledging 1 MiB replies filled it, and the server
 * refused every client's calls for the 10 minutes of their expiry without a word): a WARN line,
 * at most one per DEDUP_FULL_LOG_EVERY_NS, saying what fills it and what would help. */
static void dedup_say_full(arpc_server *s)
{
    uint64_t quiet;
    if (!arpc_log_throttle_due(&s->sv_full_log, arpc_now_coarse_ns(), DEDUP_FULL_LOG_EVERY_NS, 1, &quiet))
        return;
    struct arpc_reply_cache_stats rs;
    arpc_reply_cache_stats(&s->sv_cache, &rs);
    arpc_log(ARPC_LOG_WARN,
             "the reply cache is full (%zu bytes of reply_cache_bytes %zu, %zu clients, %zu kept replies): "
             "at-most-once calls are refused ARPC_EOVERLOADED (%llu more since the last line) until clients "
             "acknowledge their replies or expire (client_expiry_s %u); clients that vanish without a goodbye "
             "keep theirs that long",
             rs.bytes, s->sv_cache.rc_max_bytes, rs.clients, rs.entries, (unsigned long long)quiet,
             (unsigned)(s->sv_cache.rc_idle_ns / 1000000000ull));
}

bool dedup_admit(struct server_conn *sc, const struct arpc_frame *f, uint64_t deadline_ns)
{
    arpc_server *s = sc->sc_server;
    void *cached = NULL;
    struct arpc_rc_waiter *attached = NULL;
    if (atomic_load(&s->sv_log_failed)) {
        static const char failed[] = "the server's reply log failed: it runs no at-most-once call";
        sconn_refuse_call(sc, f->f_xid, ARPC_ESYSTEM, failed, sizeof(failed) - 1);
        return false;
    }
    s->sv_admitting = sc;
    enum arpc_rc_verdict v = arpc_reply_cache_begin(&s->sv_cache, sc->sc_cache_key, sc->sc_key_identity, f->f_seq,
                                                    f->f_ack, sc, f->f_xid, arpc_now_coarse_ns(), &cached, &attached);
    s->sv_admitting = NULL;
    char msg[192];
    switch (v) {
    case ARPC_RC_NEW:
        sconn_retain_loop(sc); /* the waiter's, from the loop's stash: no locked operation */
        return true;
    case ARPC_RC_ATTACHED:
        sconn_retain_loop(sc); /* the waiter's: the running call's result comes to us too */
        inflight_attach(sc); /* a half-close must not close it before that result */
        dedup_arm_waiter(s, attached, deadline_ns);
        arpc_dlist_insert_after(&sc->sc_copies, sc->sc_copies.dl_tail, &attached->w_copy_link);
        return false;
    case ARPC_RC_REPLAY:
        dedup_send(sc, cached, f->f_xid);
        return false;
    case ARPC_RC_STALE:
        if (f->f_seq > f->f_ack && arpc_reply_cache_under_goodbye(&s->sv_cache, sc->sc_cache_key, f->f_seq))
            /* The client never acknowledged it: its goodbye left its highest seq behind. */
            snprintf(msg, sizeof(msg),
                     "call %llu is at or below the highest seq this client had numbered when it said goodbye: "
                     "not run again",
                     (unsigned long long)f->f_seq);
        else
            snprintf(msg, sizeof(msg), "call %llu was already acknowledged by this client: not run again",
                     (unsigned long long)f->f_seq);
        sconn_refuse_call(sc, f->f_xid, ARPC_EREJECTED, msg, strlen(msg));
        return false;
    case ARPC_RC_FULL: /* nothing kept (no room): this send only (core/frame.h, ARPC_ERROR_UNKEPT) */
        snprintf(msg, sizeof(msg), "the server's reply cache is full: call not run");
        sconn_refuse_unkept(sc, f->f_xid, ARPC_EOVERLOADED, msg, strlen(msg));
        dedup_say_full(s);
        return false;
    case ARPC_RC_CLIENT_FULL:
        /* Its own replies (or its identity's), not acknowledged yet, fill its share: others
         * still get in. */
        snprintf(msg, sizeof(msg),
                 "this client's (or its identity's) replies not yet acknowledged fill its share of the server's "
                 "reply cache (%zu bytes, half of reply_cache_bytes): call not run",
                 s->sv_cache.rc_max_client_bytes);
        sconn_refuse_unkept(sc, f->f_xid, ARPC_EOVERLOADED, msg, strlen(msg));
        return false;
    case ARPC_RC_CROWDED:
        /* The call runs (or ran): not "did not run", which a caller might act on twice. */
        snprintf(msg, sizeof(msg), "%d duplicates of running call %llu already wait for it; it may have run",
                 ARPC_RC_MAX_WAITERS, (unsigned long long)f->f_seq);
        sconn_refuse_call(sc, f->f_xid, ARPC_EABANDONED, msg, strlen(msg));
        return false;
    case ARPC_RC_NOMEM:
        /* A copy of a call that runs found no room to wait for it: that call may have run,
         * and "not run" would invite its caller to make it again. */
        if (arpc_reply_cache_knows(&s->sv_cache, sc->sc_cache_key, f->f_seq)) {
            snprintf(msg, sizeof(msg), "server out of memory to wait for running call %llu: it may have run",
                     (unsigned long long)f->f_seq);
            sconn_refuse_call(sc, f->f_xid, ARPC_EABANDONED, msg, strlen(msg));
            return false;
        }
        snprintf(msg, sizeof(msg), "server out of memory: call not run");
        sconn_refuse_unkept(sc, f->f_xid, ARPC_EREJECTED, msg, strlen(msg));
        return false;
    }
    abort(); /* a verdict without its case above: every one must say what the caller may conclude */
}

bool dedup_answer_copy(struct server_conn *sc, const struct arpc_frame *f)
{
    arpc_server *s = sc->sc_server;
    if (sconn_call_seq(sc, f) == 0 || !arpc_reply_cache_knows(&s->sv_cache, sc->sc_cache_key, f->f_seq))
        return false;
    bool started = dedup_admit(sc, f, sconn_call_deadline(f, arpc_conn_arrival_ns(&sc->sc_conn))); /* never again */
    assert(!started);
    (void)started;
    return true;
}

void dedup_ack(struct server_conn *sc, uint64_t ack)
{
    arpc_reply_cache_ack(&sc->sc_server->sv_cache, sc->sc_cache_key, ack, arpc_now_coarse_ns());
}

void dedup_ack_beyond(struct server_conn *sc, const struct arpc_frame *f)
{
    if (sc->sc_client_id == 0)
        return; /* it numbers nothing: nothing of its is kept */
    uint64_t waiting[ARPC_ACK_WAITING_MAX]; /* checked by core/frame.c */
    arpc_frame_ack_list_load(waiting, f->f_payload + ARPC_ACK_FIXED_SIZE, f->f_waiting);
    /* Without memory the part beyond the ack is ignored: replies are kept longer, no more. A
     * claim that adds nothing (one told again after a HELLO, an older one read late) is not
     * logged again. */
    bool grew = false;
    if (arpc_reply_cache_ack_beyond(&sc->sc_server->sv_cache, sc->sc_cache_key, f->f_ack, f->f_seq, waiting,
                                    f->f_waiting, arpc_now_coarse_ns(), &grew) == ARPC_OK && grew)
        journal_ack_beyond(sc->sc_server, sc->sc_cache_key, f->f_ack, f->f_seq,
                           f->f_payload + ARPC_ACK_FIXED_SIZE, (size_t)f->f_waiting * 8);
}

void dedup_complete(arpc_server *s, uint64_t client_id, uint64_t seq, uint64_t ack, struct reply_msg *rm, bool ran)
{
    bool kept = false, unlogged = false;
    struct arpc_rc_waiter *waiters;
    if (ran && rm->rm_ran && s->sv_log != NULL && rm != s->sv_lost_reply && rm != s->sv_stop_reply &&
        rm != s->sv_log_lost_reply && atomic_load(&s->sv_log_failed)) {
        /* The log lost a record before this one (fail-stop): this call ran on a state that held
         * what the log lost, so its result (and effect) must not be logged behind the hole, nor
         * leave as done. It ends as one whose reply could not be made, "may have run", which
         * is logged if the log still takes records (a retry after a restart gets it too). */
        reply_msg_put(rm);
        s->sv_log_lost_reply->rm_refs++; /* the one this call takes */
        rm = s->sv_log_lost_reply;
    }
    if (!ran) {
        waiters = arpc_reply_cache_abort(&s->sv_cache, client_id, seq); /* "may have run": a copy may run it */
    } else {
        /* With a log, the waiters are answered once the record is durable (journal). */
        bool wait = journal_waits(s);
        waiters = arpc_reply_cache_finish(&s->sv_cache, client_id, seq, rm, reply_msg_cost(rm), wait, arpc_now_coarse_ns(),
                                          &kept);
        if (s->sv_log != NULL)
            unlogged = !journal_reply(s, client_id, seq, ack, rm, wait && kept) && wait && kept;
    }
    /* Its replier wrote it to its own request already (core/reply_direct.c): that waiter only
     * is done (a duplicate on the same connection has another xid). */
    for (struct arpc_rc_waiter **p = &waiters; rm->rm_direct != 0 && *p != NULL; p = &(*p)->w_next) {
        struct arpc_rc_waiter *w = *p;
        if (w->w_conn == rm->rm_direct_to && w->w_xid == arpc_frame_xid(rm->rm_frame)) {
            *p = w->w_next;
            w->w_next = NULL;
            dedup_unwait(w);
            arpc_reply_cache_free_waiters(&s->sv_cache, w);
            break;
        }
    }
    dedup_answer(s, waiters, rm);
    if (kept && rm->rm_home != NULL) {
        /* Kept for the client's idle expiry (minutes): it must not keep its connection's record
         * (and buffer cache) alive that long; it becomes a block of its own, which the ack that
         * discards it gives to the acking connection's cache (dedup_free_reply) and anything
         * else frees (arpc_free). */
        sconn_release(rm->rm_home);
        rm->rm_home = NULL;
    }
    if (!kept)
        reply_msg_put(rm);
    arpc_reply_cache_settle(&s->sv_cache, client_id); /* a goodbye waiting for this call */
    if (unlogged)
        dedup_log_failed(s, client_id, seq); /* its waiters would wait for a record never made */
}

void dedup_lost(arpc_server *s, uint64_t client_id, uint64_t seq, uint64_t ack, bool ran)
{
    /* Left RUNNING, the entry would make every retry wait for its deadline, and stay for
     * good; forgotten after the call ran, a retry would run it again. One refused without
     * running (ran false) is forgotten: a later retry may run it. */
    s->sv_lost_reply->rm_refs++; /* the one dedup_complete takes */
    dedup_complete(s, client_id, seq, ack, s->sv_lost_reply, ran);
}

void dedup_stopped(arpc_server *s, uint64_t client_id, uint64_t seq, uint64_t ack)
{
    /* Left RUNNING, the entry would die with this server, and a restart on its log would run
     * the call again for a copy re-sent to it (its client still waits: it got no answer). */
    s->sv_stop_reply->rm_refs++; /* the one dedup_complete takes */
    dedup_complete(s, client_id, seq, ack, s->sv_stop_reply, true);
}

void dedup_leave(struct server_conn *sc, uint64_t seq, struct arpc_rc_waiter *which)
{
    arpc_server *s = sc->sc_server;
    struct arpc_rc_waiter *w = arpc_reply_cache_leave(&s->sv_cache, sc->sc_cache_key, seq, which);
    if (w == NULL)
        return;
    dedup_unwait(w); /* not the last: the caller holds sc */
    arpc_reply_cache_free_waiters(&s->sv_cache, w);
}

/* The duplicate waiting on sc under xid (the oldest, should a client send one xid twice),
 * or NULL. A walk: a connection rarely has more than a copy or two waiting, and only a
 * CANCEL that names no call of its own looks here. */
static struct arpc_rc_waiter *dedup_copy_of(const struct server_conn *sc, uint64_t xid)
{
    for (struct arpc_dlink *l = sc->sc_copies.dl_head; l != NULL; l = l->dl_next) {
        struct arpc_rc_waiter *w = ARPC_DLIST_ENTRY(l, struct arpc_rc_waiter, w_copy_link);
        if (w->w_xid == xid)
            return w;
    }
    return NULL;
}

bool dedup_copy_waits(const struct server_conn *sc, uint64_t xid) { return dedup_copy_of(sc, xid) != NULL; }

void dedup_cancel(struct server_conn *sc, uint64_t xid)
{
    struct arpc_rc_waiter *copy = dedup_copy_of(sc, xid);
    if (copy == NULL)
        return;
    /* Its entry is RUNNING or LOGGING (a waiter leaves the list when it is answered); the
     * runner is there only while the handler's request waits (RUNNING). */
    struct arpc_rc_waiter *runner = arpc_reply_cache_runner(&sc->sc_server->sv_cache, sc->sc_cache_key, copy->w_seq);
    if (runner != NULL) /* its cancel callback may reply, at once: copy is not used after */
        request_cancel_call(runner->w_conn, runner->w_xid, copy->w_seq, false);
}

/* The waiter of the request that runs sc's client's call seq, or NULL. Keyed by sc's own
 * client (its cache key), so a client reaches its own calls only. */
static struct arpc_rc_waiter *dedup_runner_of_seq(struct server_conn *sc, uint64_t seq)
{
    if (sc->sc_client_id == 0 || seq == 0) /* a client that numbers nothing */
        return NULL;
    return arpc_reply_cache_runner(&sc->sc_server->sv_cache, sc->sc_cache_key, seq);
}

bool dedup_seq_runs(struct server_conn *sc, uint64_t seq) { return dedup_runner_of_seq(sc, seq) != NULL; }

void dedup_cancel_seq(struct server_conn *sc, uint64_t seq)
{
    struct arpc_rc_waiter *runner = dedup_runner_of_seq(sc, seq);
    if (runner != NULL) /* its cancel callback may reply, at once */
        request_cancel_call(runner->w_conn, runner->w_xid, seq, true);
}

void dedup_cancel_client(struct server_conn *sc)
{
    enum { FEW = 64 };
    if (sc->sc_client_id == 0)
        return;
    struct arpc_reply_cache *rc = &sc->sc_server->sv_cache;
    uint64_t few[FEW], *seqs = few;
    size_t n = arpc_reply_cache_running(rc, sc->sc_cache_key, few, FEW);
    if (n > FEW && (seqs = arpc_malloc(n * sizeof(*seqs))) != NULL)
        n = arpc_reply_cache_running(rc, sc->sc_cache_key, seqs, n);
    else if (n > FEW)
        seqs = few, n = FEW; /* no memory: the others run on (as a client that never says goodbye) */
    /* Collected first: a cancel callback may reply at once, which changes the cache. */
    for (size_t i = 0; i < n; i++)
        dedup_cancel_seq(sc, seqs[i]);
    if (seqs != few)
        arpc_free(seqs);
}

/* The log is done with a numbered call's record: its waiters get the reply if it is durable,
 * else the lost reply (never the reply: a failed entry, kept or not, is never replayed either,
 * as dedup_admit refuses every numbered call once the log failed). */
static void dedup_logged(arpc_server *s, uint64_t client_id, uint64_t seq, bool durable)
{
    bool kept = false;
    void *reply = NULL;
    struct arpc_rc_waiter *waiters = arpc_reply_cache_durable(&s->sv_cache, client_id, seq, arpc_now_coarse_ns(), &reply, &kept);
    if (reply != NULL)
        dedup_answer(s, waiters, durable ? reply : s->sv_log_lost_reply);
    if (!kept)
        reply_msg_put(reply);
    arpc_reply_cache_settle(&s->sv_cache, client_id);
}

void dedup_log_failed(arpc_server *s, uint64_t client_id, uint64_t seq) { dedup_logged(s, client_id, seq, false); }

void dedup_durable(arpc_server *s, uint64_t client_id, uint64_t seq) { dedup_logged(s, client_id, seq, true); }
