/*
 * What a handler reads of its request, and its cancellation.
 *
 * Each accessor reads the server's part of the request (core/request_internal.h), which is
 * lent to the handler until the request is finished, or until the server answered the call in
 * its place after the handler returned (a tombstone, core/request_tomb.c): the accessors then
 * answer as for a request that has nothing, rather than read freed memory. A handler that
 * replies after returning copies what it needs before (include/arpc/server.h).
 *
 * Cancellation: while a call waits for or runs in its handler, its connection's table maps
 * its xid to it (loop thread only), so a CANCEL frame finds it (core/request.c says why the
 * table never points at a freed request). A running handler sees arpc_request_cancelled() or
 * its on_cancel callback; rq_flags orders the callback's registration against the cancel, so
 * exactly one side calls it, once, however many CANCEL frames come. The server answering the
 * call in the handler's place (its deadline, a stop) cancels it the same way: the caller no
 * longer waits, and a handler that finishes only from the callback (a long poll) must hear of
 * it, or its request would never be finished. So does a caller that went away (its goodbye,
 * or a closed connection that nobody can be answered on: core/server_departure.c).
 *
 * A numbered call is one call of its client however many copies of it the client sent: a
 * CANCEL naming a copy that waits for the running original (a re-send after a reconnect,
 * core/server_dedup.c) cancels the original, found the same way -- by the original's xid in
 * its own connection's table, which outlives that connection's close for this (it is freed
 * with the connection, whose waiter in the reply cache keeps it alive meanwhile). So no
 * pointer to a request is kept anywhere but in that table. docs/SEMANTICS.md says why.
 * A CANCEL naming the call by its seq (sent by a client that had no connection when its caller
 * cancelled) finds the original the same way, and marks it RQ_CANCEL_KEPT: the client gave the
 * seq up for good, so a "did not run" is the call's result, kept (core/request.c).
 */
#include "arpc/error.h"
#include "base/clock.h"
#include "core/request_internal.h"

/* The server's part, or NULL once the server answered the call and freed it (a tombstone:
 * the accessors then answer as for a request that has nothing). */
static const struct request_state *request_state_of(const arpc_request *req, const char *fn)
{
    if (!request_live(req, fn) || (atomic_load(&((arpc_request *)req)->rq_flags) & RQ_STATE_GONE))
        return NULL;
    return req->rq_state;
}

const void *arpc_request_data(const arpc_request *req, size_t *len)
{
    const struct request_state *st = request_state_of(req, __func__);
    if (len != NULL)
        *len = st != NULL ? st->rs_len : 0;
    return st != NULL ? st->rs_data : NULL;
}

/* Given NULL (misuse) or a request the server answered and let go of, each accessor answers
 * as for a request that has nothing: NULL, false, 0. */
const char *arpc_request_method(const arpc_request *req)
{
    const struct request_state *st = request_state_of(req, __func__);
    return st != NULL ? st->rs_method->m_name : NULL;
}
bool arpc_request_is_oneway(const arpc_request *req) { return request_live(req, __func__) && req->rq_oneway; }
uint64_t arpc_request_client_id(const arpc_request *req)
{
    const struct request_state *st = request_state_of(req, __func__);
    return st != NULL ? st->rs_conn->sc_client_id : 0;
}
const arpc_peer_info *arpc_request_peer(const arpc_request *req)
{
    const struct request_state *st = request_state_of(req, __func__);
    return st != NULL ? &st->rs_conn->sc_peer : NULL;
}

const char *arpc_request_peer_subject(const arpc_request *req)
{
    const struct request_state *st = request_state_of(req, __func__);
    return st != NULL ? st->rs_conn->sc_peer_subject : NULL;
}
bool request_from_jsonrpc(const arpc_request *req)
{
    const struct request_state *st = request_state_of(req, __func__);
    return st != NULL && st->rs_conn->sc_speaks_json; /* fixed before its first request */
}
uint64_t arpc_request_seq(const arpc_request *req) { return request_live(req, __func__) ? req->rq_seq : 0; }

int64_t arpc_request_budget_ms(const arpc_request *req)
{
    const struct request_state *st = request_state_of(req, __func__);
    return st != NULL ? arpc_ms_left(st->rs_deadline_ns) : 0;
}

uint64_t arpc_request_deadline_ns(const arpc_request *req)
{
    const struct request_state *st = request_state_of(req, __func__);
    return st != NULL && st->rs_deadline_ns != ARPC_NEVER ? st->rs_deadline_ns : 0;
}

bool arpc_request_cancelled(const arpc_request *req)
{
    return request_live(req, __func__) && (atomic_load(&((arpc_request *)req)->rq_flags) & RQ_CANCELLED) != 0;
}

int arpc_request_on_cancel(arpc_request *req, arpc_request_cancel_fn fn, void *arg)
{
    if (!request_live(req, __func__) || fn == NULL)
        return ARPC_EINVAL;
    unsigned flags = atomic_load(&req->rq_flags);
    if (flags & RQ_CANCEL_CB)
        return ARPC_EBUSY; /* one callback per request */
    /* In the handle, which outlives the server's part (a server's answer, which may free that
     * part meanwhile, cancels the call: RQ_CANCELLED, below). */
    req->rq_cancel_fn = fn;
    req->rq_cancel_arg = arg;
    /* Release: the loop that sees RQ_CANCEL_CB sees fn and arg. */
    if (atomic_fetch_or(&req->rq_flags, RQ_CANCEL_CB) & RQ_CANCELLED)
        fn(req, arg); /* cancelled already: the loop did not see the callback, we call it */
    return ARPC_OK;
}

void request_cancel_now(arpc_request *req)
{
    unsigned was = atomic_fetch_or(&req->rq_flags, RQ_CANCELLED);
    /* The first cancel, a callback, and no reply begun: a CANCEL read while the handler's
     * reply is still on its way to the loop (the request is in the table until it lands)
     * must not call back a handler that is done (server.h). Both are read-modify-writes of
     * rq_flags, so a reply and a cancel racing each see whether the other came first. */
    if ((was & (RQ_CANCELLED | RQ_CANCEL_CB | RQ_REPLIED)) == RQ_CANCEL_CB)
        req->rq_cancel_fn(req, req->rq_cancel_arg);
}

void request_cancel(struct server_conn *sc, uint64_t xid)
{
    arpc_request *req = arpc_u64_map_get(&sc->sc_calls, xid);
    if (req != NULL)
        request_cancel_now(req); /* alive: its entry is still in the table */
    else
        dedup_cancel(sc, xid); /* a duplicate's; else answered already, or never a call here */
}

void request_cancel_call(struct server_conn *sc, uint64_t xid, uint64_t seq, bool keep)
{
    arpc_request *req = arpc_u64_map_get(&sc->sc_calls, xid);
    /* The seq check: xid names that call on sc only while it runs (a later call may reuse
     * the xid once it was answered). */
    if (req == NULL || req->rq_seq != seq)
        return;
    /* Before RQ_CANCELLED: a worker that sees the cancel (request_run) sees this too. */
    if (keep)
        atomic_fetch_or(&req->rq_flags, RQ_CANCEL_KEPT);
    request_cancel_now(req);
}
