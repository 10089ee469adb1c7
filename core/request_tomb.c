/*
 * What is left of a request the server answered in its handler's place (at the call's
 * deadline, or at stop: core/request_deadline.c) once its handler has returned: the handle
 * alone (struct arpc_request, a tombstone), until the handler's late reply frees it.
 *
 * Why a tombstone and not the request: the handler holds the arpc_request pointer and may
 * reply at any time, from any thread, even after arpc_server_destroy; a reply must find
 * memory that says "answered already". Everything else -- the payload, the calls in flight
 * and flow-limit bytes it counted, its connection and server pins -- is the server's part
 * (struct request_state), freed as soon as the server answered and the handler returned. A
 * handler that never replies so leaves only its handle (sizeof(struct arpc_request)); not a
 * request taken from a completion queue, whose "handler" returns only with its reply
 * (RQ_QUEUED): it keeps the server's part until then.
 *
 * Who frees the handle: the last of the server's part going (RQ_STATE_GONE, request.c) and
 * the late reply being done with it (RQ_LATE_DONE, here): two read-modify-writes of
 * rq_flags, so exactly one sees the other's bit and frees. A handle the server answered is
 * freed by arpc_free, not given back to the handle pool: it may outlive the server. The pool
 * is taken from on the loop thread only, so no taker can be reading the link of a handle
 * that left it (core/block_pool.h explains the hazard for pools with several takers).
 *
 * A late reply returns what the caller was told: ARPC_ETIMEDOUT (deadline) or ARPC_ESHUTDOWN
 * (stop). For a numbered (at-most-once) call answered at its deadline it also finishes the
 * call in the reply cache, whose entry stayed "running" (so a retry waited instead of running
 * the handler again): the handle keeps what that needs (server, cache key, seq, ack, xid,
 * the client's largest reply) and a reference on the server, and is listed in sv_tombs. So
 * is any call answered at its deadline by a server with a reply log: its handler's late
 * arpc_reply_durable has applied an effect that later effects build on, so the effect goes
 * to the log, in lane order as a reply's would (a call that is not numbered keeps nothing
 * else of it). And so is any other call answered at its deadline (not a one-way message):
 * its late reply's size teaches its method's expected reply size (core/server_inflight.c),
 * which a method whose handler always replies late would otherwise never learn; such a
 * late reply after a stop returns ARPC_ETIMEDOUT still (rq_keeps_result). A stop detaches every listed handle (RQ_DETACHED, the server's reference let
 * go): its late reply is then dropped and returns ARPC_ESHUTDOWN, as any reply after a stop,
 * and a numbered call's result is the stop's ARPC_EABANDONED (dedup_stopped: logged, so that
 * a copy re-sent to this log's next server does not run it again); a late reply already on
 * its way finishes the call as ever, logged too while the stop has not closed the log. The
 * late reply (RQ_REPLIED) and the detach meet on rq_flags: whichever comes first owns the
 * reference.
 */
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "core/frame.h"
#include "core/request_internal.h"

/* Loop thread: the handle of a call answered at its deadline holds a reference on the
 * server; listed, so that a stop finds it and lets go of it. */
void request_tomb_list(arpc_server *s, arpc_request *req)
{
    arpc_dlist_insert_after(&s->sv_tombs, NULL, &req->rq_tomb_link);
    req->rq_listed = true;
}

static void tomb_unlist(arpc_server *s, arpc_request *req)
{
    if (req->rq_listed)
        arpc_dlist_remove(&s->sv_tombs, &req->rq_tomb_link);
    req->rq_listed = false;
}

void request_tomb_detach_all(arpc_server *s)
{
    while (s->sv_tombs.dl_head != NULL) {
        arpc_request *req = ARPC_DLIST_ENTRY(s->sv_tombs.dl_head, arpc_request, rq_tomb_link);
        tomb_unlist(s, req);
        /* Read now: once detached, the late reply may free the handle at any time. */
        uint64_t key = req->rq_cache_key, seq = req->rq_seq, ack = req->rq_ack;
        unsigned flags = atomic_fetch_or(&req->rq_flags, RQ_DETACHED);
        if (!(flags & RQ_REPLIED)) { /* no late reply yet: it will be dropped */
            if (seq != 0)
                dedup_stopped(s, key, seq, ack);
            server_release(s); /* not the last: the stopping user holds one */
        } else if (flags & RQ_HAND_FAILED) { /* its late reply could not reach the loop: it left the handle to us */
            /* Its result is lost with it (the application stopped the loop first): the stop's
             * answer is the call's result, as for a handler that never replied, so a copy sent
             * to a server restarted on the log does not run again (review 244). */
            if (seq != 0)
                dedup_stopped(s, key, seq, ack);
            request_late_done(req);
            server_release(s);
        } /* else its late reply is on its way (a job, or failing now): it owns the reference */
    }
}

void request_late_done(arpc_request *req)
{
    if (atomic_fetch_or(&req->rq_flags, RQ_LATE_DONE) & RQ_STATE_GONE) {
        arpc_handle_poison(req);
        arpc_free(req);
    }
}

/* Loop thread: the late result finishes the numbered call in the reply cache, for its
 * retries; once the server stopped, only while its log is open (before the stop's last step),
 * for a restart on that log: nobody else is left to wait. */
static void tomb_deliver(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct reply_msg *rm = (struct reply_msg *)job;
    arpc_request *req = rm->rm_req;
    arpc_server *s = req->rq_server;
    tomb_unlist(s, req);
    if (atomic_load(&s->sv_state) != SV_STOPPED) /* (the methods are the running server's) */
        inflight_learn(req->rq_method, req->rq_late_len);
    if (req->rq_seq == 0) {
        journal_late_effect(s, rm->rm_effect, rm->rm_effect_len); /* all there is to keep */
        reply_msg_free(rm);
    } else if (atomic_load(&s->sv_state) != SV_STOPPED || s->sv_log != NULL) {
        dedup_complete(s, req->rq_cache_key, req->rq_seq, req->rq_ack, rm, true);
    } else {
        reply_msg_free(rm);
    }
    request_late_done(req);
    server_release(s);
}

/* Loop thread: no result could be encoded; the handle leaves the list all the same, and the
 * call's entry ends with the server's "lost" error for its retries. */
static void tomb_drop(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    arpc_request *req = (arpc_request *)((char *)job - offsetof(arpc_request, rq_tomb_job));
    arpc_server *s = req->rq_server;
    tomb_unlist(s, req);
    if (req->rq_seq != 0 && (atomic_load(&s->sv_state) != SV_STOPPED || s->sv_log != NULL))
        dedup_lost(s, req->rq_cache_key, req->rq_seq, req->rq_ack, true); /* a handler's late reply: it ran */
    request_late_done(req);
    server_release(s);
}

/* Loop thread: a late reply with nothing to keep teaches its method's reply size, and the
 * handle goes (the job is the handle's own: no memory needed). */
static void tomb_learn(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    arpc_request *req = (arpc_request *)((char *)job - offsetof(arpc_request, rq_tomb_job));
    arpc_server *s = req->rq_server;
    tomb_unlist(s, req);
    if (atomic_load(&s->sv_state) != SV_STOPPED) /* (the methods are the running server's) */
        inflight_learn(req->rq_method, req->rq_late_len);
    request_late_done(req);
    server_release(s);
}

/* The late reply's job could not reach the loop: the server stopped (a stop detached the
 * handle already), or the loop it runs on was stopped before the server (the handle is still
 * listed; the server's stop detaches it later, on another thread). Whichever of the two comes
 * second lets go of the handle and the server. */
static void tomb_hand_failed(arpc_server *s, arpc_request *req)
{
    if (atomic_fetch_or(&req->rq_flags, RQ_HAND_FAILED) & RQ_DETACHED) {
        request_late_done(req);
        server_release(s);
    }
}

int request_tomb_reply(arpc_request *req, unsigned flags, uint8_t kind, int code, const void *data, size_t len,
                       const void *effect, size_t effect_len)
{
    int late = req->rq_late_code;
    arpc_server *s = req->rq_server;
    if (s == NULL || (flags & RQ_DETACHED)) {
        bool kept = s != NULL && req->rq_keeps_result; /* (req may be freed below) */
        request_late_done(req); /* nothing to keep or learn (answered at stop), or detached by one */
        return kept ? ARPC_ESHUTDOWN : late;
    }
    /* Its size, as its connection would have had it (one larger than the client takes is an
     * ARPC_ETOOLARGE error there), for its method's expected reply size. */
    uint8_t fit_kind = kind;
    int fit_code = code;
    const void *fit_data = data;
    size_t fit_len = len;
    (void)reply_fit_client(req->rq_client_max, &fit_kind, &fit_code, &fit_data, &fit_len);
    req->rq_late_len = fit_kind == ARPC_FRAME_REPLY ? ARPC_FRAME_HEADER_SIZE + fit_len : arpc_frame_error_size(fit_len);
    if (!req->rq_keeps_result) { /* nothing else to do with it: nothing is encoded */
        arpc_loop_job_init(&req->rq_tomb_job, tomb_learn);
        if (server_loop_hand(s, &req->rq_tomb_job, NULL, NULL) != ARPC_OK)
            tomb_hand_failed(s, req);
        return late;
    }
    int rc = late;
    if (req->rq_seq == 0) /* kept for its effect alone: the reply goes nowhere */
        data = NULL, len = 0;
    else if (reply_fit_client(req->rq_client_max, &kind, &code, &data, &len) == ARPC_ETOOLARGE)
        rc = ARPC_ETOOLARGE;
    if (effect != NULL && !reply_effect_kept(s))
        effect = NULL, effect_len = 0;
    /* A plain allocation: no connection to lend its cache, and this path is rare. */
    struct reply_msg *rm = reply_encode(NULL, req->rq_xid, kind, code, data, len, true, effect, effect_len);
    struct arpc_loop_job *job;
    if (rm != NULL) {
        rm->rm_req = req;
        arpc_loop_job_init(&rm->rm_job, tomb_deliver);
        job = &rm->rm_job;
    } else {
        rc = ARPC_ENOMEM; /* the entry ends with the server's "lost" error (tomb_drop) */
        if (effect != NULL) /* an effect the log will never have: fail-stop, as a failed record */
            journal_fail_enomem(s);
        arpc_loop_job_init(&req->rq_tomb_job, tomb_drop);
        job = &req->rq_tomb_job;
    }
    if (server_loop_hand(s, job, NULL, NULL) != ARPC_OK) { /* stopped: the job did not run */
        if (rm != NULL)
            reply_msg_free(rm);
        tomb_hand_failed(s, req);
        return ARPC_ESHUTDOWN;
    }
    return rc;
}
