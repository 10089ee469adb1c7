/*
 * The answers the server gives in a handler's place. A call that carries a deadline arms one on the loop
 * (rs_deadline) when it is dispatched; if the handler has not replied when it passes, the
 * caller is answered ARPC_ETIMEDOUT (what its own deadline would give it: "may have run"),
 * and a stop answers every call still unanswered after its grace ARPC_EABANDONED (it started,
 * so unlike ARPC_ESHUTDOWN it may have run). The two sides meet on rq_flags: the server sets
 * RQ_SERVER_ANSWERED unless RQ_REPLIED is set (a CAS), a reply sets RQ_REPLIED (a fetch_or);
 * both are read-modify-writes of one word, so exactly one side answers the caller.
 *
 * Having answered, the server holds the reply's place (RQ_REPLY_DONE): as soon as the handler
 * has returned (at once, or when request_handler_done sees it), the call stops counting (calls
 * in flight, the connection's flow limits) and the server's part of the request is freed:
 * payload, connection and server pins. The handler's handle stays, as a tombstone, for its
 * late reply, which is dropped and returns ARPC_ETIMEDOUT (deadline) or ARPC_ESHUTDOWN (stop);
 * for a numbered call answered at its deadline it still finishes the call in the reply cache,
 * whose entry stayed "running" meanwhile, so a retry never runs the handler a second time
 * while the first run may still go on (core/request_tomb.c). The loop keeps the calls waiting
 * for a reply in sv_awaiting (loop thread only), which a stop empties.
 */
#include <string.h>

#include "arpc/error.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/request_internal.h"

/* Loop thread: the request no longer waits for a reply (its deadline is disarmed). A stop
 * empties the list on the loop, so after it nothing here runs for a request. */
void request_unlist(arpc_request *req)
{
    struct request_state *st = req->rq_state;
    if (!st->rs_awaiting)
        return;
    arpc_server *s = st->rs_conn->sc_server;
    arpc_deadline_cancel(s->sv_loop, &st->rs_deadline);
    arpc_dlist_remove(&s->sv_awaiting, &st->rs_link);
    st->rs_awaiting = false;
}

void request_due_done(arpc_request *req)
{
    struct request_state *st = req->rq_state;
    if (!st->rs_due)
        return;
    arpc_server *s = st->rs_conn->sc_server;
    st->rs_due = false;
    /* (Atomic: once the stop gave up waiting, a late reply's drop may run off the loop.) */
    if (atomic_fetch_sub(&s->sv_due, 1) == 1)
        arpc_future_complete(s->sv_due_done, ARPC_OK, NULL, 0);
}

/* Loop thread: the server answers the caller in the handler's place with code; the handler's
 * late reply will return late_code. The call then stops counting and its server's part is
 * freed, at once if its handler returned already, else when it returns. keep_server: a
 * call answered while the server runs whose late reply still has work: a numbered call's
 * finishes its cache entry; any call's effect (arpc_reply_durable) goes to the reply log;
 * any call's reply teaches its method's reply size (core/server_inflight.c). False when the
 * handler's reply came first (it answers the caller). */
static bool request_answer_for_handler(arpc_request *req, int code, int late_code, const char *why, bool keep_server)
{
    request_unlist(req);
    struct server_conn *sc = req->rq_state->rs_conn;
    arpc_server *s = sc->sc_server;
    /* What a late reply reads once it sees RQ_SERVER_ANSWERED: published by the CAS (seq_cst). */
    req->rq_late_code = late_code;
    if (keep_server) {
        server_retain(s);
        req->rq_server = s;
        req->rq_cache_key = sc->sc_cache_key;
        req->rq_client_max = sc->sc_client_max;
        req->rq_method = req->rq_state->rs_method;
        req->rq_keeps_result = req->rq_seq != 0 || s->sv_has_log;
    }
    unsigned flags = atomic_load(&req->rq_flags);
    do {
        if (flags & RQ_REPLIED) {
            /* The handler's reply is on its way to the loop: the caller gets it. */
            if (keep_server) {
                req->rq_server = NULL;
                server_release(s);
            }
            return false;
        }
    } while (!atomic_compare_exchange_weak(&req->rq_flags, &flags, flags | RQ_SERVER_ANSWERED));
    request_untrack(req);
    inflight_answered_early(req);
    if (!req->rq_oneway) { /* a one-way is let go of only: nobody hears about it */
        request_count_answer(req, code, arpc_now_ns());
        /* A numbered call keeps its cache entry "running": a retry waits for the real result.
         * This xid has its answer: it leaves the waiters, which would hold its connection's
         * record for as long as the handler does not reply. */
        sconn_send_error(sc, req->rq_xid, code, why, strlen(why));
        if (req->rq_seq != 0)
            dedup_leave(sc, req->rq_seq, NULL); /* its own waiter: the one that began the call */
    }
    if (keep_server)
        request_tomb_list(s, req);
    /* Before the hold below: the request is whole while its cancel callback runs (which may
     * reply: the reply goes the tombstone's way, as any late one). */
    request_cancel_now(req);
    /* The server holds the reply's place now: the handler's reply goes the tombstone's way. */
    if (!(atomic_fetch_or(&req->rq_flags, RQ_REPLY_DONE) & RQ_IN_HANDLER))
        request_abandon(s->sv_loop, req); /* the handler returned: else request_handler_done does it */
    return true;
}

/* A call still waiting for its actor this close to its deadline (an eighth of its budget, at
 * most REQUEST_START_LEAD_MAX_NS) is refused ARPC_EEXPIRED then: a handler started so late
 * could not finish for a caller about to give up, and the refusal, sent a little before the
 * deadline, reaches the caller before its own timer ends the call "may have run"
 * (ARPC_ETIMEDOUT). The caller's deadline is at most the server's: the server counts the
 * budget from the call's arrival, after its send, and the budget is sent rounded up to the ms. */
#define REQUEST_START_LEAD_MAX_NS (5 * ARPC_NS_PER_MS)

static uint64_t request_start_by(const struct request_state *st)
{
    uint64_t lead = (st->rs_deadline_ns - st->rs_dispatched_ns) / 8;
    return st->rs_deadline_ns - (lead < REQUEST_START_LEAD_MAX_NS ? lead : REQUEST_START_LEAD_MAX_NS);
}

/* The loop takes the start of a request still waiting in its actor's mailbox (one
 * read-modify-write, against request_run's): true if it did, and its actor, taking the job
 * later, only lets go of it (request_run). *flags: the flags before. */
static bool request_take_start(arpc_request *req, unsigned *flags)
{
    *flags = atomic_load(&req->rq_flags);
    while (!(*flags & RQ_STARTED) &&
           !atomic_compare_exchange_weak(&req->rq_flags, flags, *flags | RQ_STARTED | RQ_REFUSED_QUEUED))
        ;
    return !(*flags & RQ_STARTED);
}

/* Armed first for the call's start-by time, then, for a call that started, for its deadline. */
static void request_on_deadline(struct arpc_deadline *d, void *arg)
{
    arpc_request *req = arg;
    struct request_state *st = req->rq_state;
    arpc_server *s = st->rs_conn->sc_server;
    /* Parked on its connection (its actor's mailbox full): the connection's paths refuse a
     * parked request themselves, and its actor refuses it ARPC_EEXPIRED once posted. */
    bool parked = st->rs_conn->sc_parked == req;
    if (!parked) {
        /* Still waiting in its actor's mailbox: the loop takes its start and refuses it now
         * ("did not run", which a numbered call's entry keeps as its result: core/request.c),
         * rather than when a busy actor comes to it, long after its caller gave up not knowing
         * whether it ran. */
        unsigned flags;
        if (request_take_start(req, &flags)) {
            request_refuse_unstarted(req, flags);
            return;
        }
        if (flags & RQ_REFUSING)
            return; /* its actor took it only to refuse it: that refusal is its answer */
    }
    /* Started (or parked): its handler has until the deadline itself. */
    if (arpc_now_ns() < st->rs_deadline_ns && arpc_deadline_arm(s->sv_loop, d, st->rs_deadline_ns) == ARPC_OK)
        return;
    if (!parked)
        (void)request_answer_for_handler(req, ARPC_ETIMEDOUT, ARPC_ETIMEDOUT, "the handler did not reply by the call's deadline",
                                         !req->rq_oneway || s->sv_has_log);
}

/* Loop thread: arms the call's deadline and lists it as waiting for a reply. */
void request_list(arpc_server *s, arpc_request *req)
{
    struct request_state *st = req->rq_state;
    arpc_dlist_insert_after(&s->sv_awaiting, NULL, &st->rs_link);
    st->rs_awaiting = true;
    arpc_deadline_init(&st->rs_deadline, request_on_deadline, req);
    if (st->rs_deadline_ns != ARPC_NEVER && !req->rq_oneway) /* nobody waits for a one-way */
        (void)arpc_deadline_arm(s->sv_loop, &st->rs_deadline, request_start_by(st)); /* ENOMEM: the
                                                       * caller's own deadline still ends its wait */
}

/* A call or one-way message still waiting in an actor's mailbox at the stop (an
 * application's actor, which the stop neither drains nor waits for): the loop takes its start,
 * as at its start-by time (request_on_deadline), so that it never runs: a call is refused
 * ARPC_ESHUTDOWN ("did not run"), a one-way message is dropped (counted in oneways_dropped);
 * the actor that takes its job later only lets go of it. False: it started. Before, such a
 * call was answered ARPC_EABANDONED ("may have run"), and its handler ran when the actor came
 * to it, after the server had stopped (a review's trial); and a one-way message its actor
 * started between the stop's look at its flags and its cancel ran, yet was counted dropped. */
static bool request_refuse_unstarted_at_stop(arpc_request *req)
{
    unsigned flags;
    if (!request_take_start(req, &flags))
        return false;
    request_unlist(req);
    if (req->rq_oneway)
        request_drop_queued_oneway(req);
    else
        request_refuse(req, ARPC_ESHUTDOWN, SHUTTING_DOWN);
    return true;
}

void request_answer_unreplied(arpc_server *s)
{
    static const char why[] = SERVER_STOP_REPLY_MSG;
    unsigned n = 0, oneways = 0, oneways_unstarted = 0, unstarted = 0;
    while (s->sv_awaiting.dl_head != NULL) {
        arpc_request *req = ARPC_DLIST_ENTRY(s->sv_awaiting.dl_head, struct request_state, rs_link)->rs_req;
        bool oneway = req->rq_oneway; /* read now: the refusal may free the request */
        if (request_refuse_unstarted_at_stop(req)) {
            oneways_unstarted += oneway;
            unstarted += !oneway;
            continue;
        }
        /* Read now: answering may free the request (its handler returned). */
        uint64_t key = req->rq_state->rs_conn->sc_cache_key, seq = req->rq_seq, ack = req->rq_ack;
        /* A queued call's discard reply (ARPC_ESHUTDOWN, did not run) is already on its way;
         * any other call here has started: it may have run. Its late reply can finish nothing
         * any more: it needs no server. A one-way message not finished is let go of the same
         * way (its handler's arpc_reply then returns ARPC_ESHUTDOWN). A numbered call's result
         * is then this answer, for its copies and, logged, for a restart on the same log. */
        bool answered = request_answer_for_handler(req, ARPC_EABANDONED, ARPC_ESHUTDOWN, why, false);
        if (answered) {
            if (seq != 0 && !oneway)
                dedup_stopped(s, key, seq, ack);
        } else if (!oneway) {
            /* Its handler replied first: the reply is on its way (its job not yet run on this
             * loop, so the request is whole). The stop waits for it before closing the
             * connections: else it was lost, though arpc_reply had said ARPC_OK, or was
             * refused ARPC_ESHUTDOWN once the stop was done, its caller told nothing either
             * way (review 239). */
            req->rq_state->rs_due = true;
            atomic_fetch_add(&s->sv_due, 1);
        }
        n += answered && !oneway; /* (counted by what the answer found: a reply may claim the call until then) */
        oneways += answered && oneway;
    }
    if (n != 0)
        arpc_log(ARPC_LOG_WARN, "server stop: %u call(s) whose handlers had not replied were answered ARPC_EABANDONED",
                 n);
    if (oneways != 0)
        arpc_log(ARPC_LOG_WARN, "server stop: %u one-way message(s) whose handlers had not finished them were let go",
                 oneways);
    arpc_stat_add(&s->sv_stats.ss_oneways_dropped, oneways_unstarted);
    if (oneways_unstarted != 0)
        arpc_log(ARPC_LOG_WARN, "server stop: %u one-way message(s) still waiting for their actors were dropped (not run)",
                 oneways_unstarted);
    if (unstarted != 0)
        arpc_log(ARPC_LOG_WARN, "server stop: %u call(s) still waiting for their actors were refused ARPC_ESHUTDOWN (not run)",
                 unstarted);
    unsigned due = atomic_load(&s->sv_due);
    s->sv_had_due = due != 0;
    if (due != 0)
        arpc_log(ARPC_LOG_DEBUG, "server stop: %u repl%s on the way from handlers, sent before the connections close",
                 due, due == 1 ? "y" : "ies");
    else
        arpc_future_complete(s->sv_due_done, ARPC_OK, NULL, 0);
    request_tomb_detach_all(s); /* the late replies of calls answered at their deadlines are dropped too */
}
