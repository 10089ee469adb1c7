/*
 * Running handlers: a request is dispatched from its connection (after the at-most-once gate),
 * then run inline on the loop or posted to its actor.
 *
 * Flow control: a request is posted to its actor without waiting (its actor job is embedded,
 * so no allocation either). At the mailbox's bound it is parked on its connection, whose input
 * is held (core/conn.h), and a room waiter is armed on the actor; when room is back the loop
 * posts it again and resumes the connection. So a full mailbox slows only the connections that
 * feed it, never the loop: other connections and inline methods go on. Per connection, order
 * is kept: nothing behind a parked request is parsed before it is posted.
 */
#include <stddef.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/frame.h"
#include "core/request_internal.h"

/* A request with a payload of 256 << k bytes fits the block pool's class k, and so does a
 * reply of that size (core/request.c). */
_Static_assert(sizeof(struct request_state) <= BLOCK_POOL_HEADROOM, "the block pool's headroom is too small");
_Static_assert(sizeof(struct reply_msg) + ARPC_FRAME_HEADER_SIZE <= BLOCK_POOL_HEADROOM, "the block pool's headroom is too small");

/* ---- running handlers ---- */


void request_refuse_unstarted(arpc_request *req, unsigned flags)
{
    if (flags & RQ_CANCELLED)
        request_refuse(req, ARPC_ECANCELLED, "cancelled by the client before it started");
    else
        request_refuse(req, ARPC_EEXPIRED, "the call's budget ran out before its handler started");
}

/* queued: the call ran on an actor (else inline on the loop). waited: it waited, in a
 * mailbox, in its connection's buffer while input was held, or behind an inline handler of
 * the same read, so its budget may have run out meanwhile (a clock read, for a call with a
 * deadline). The first inline call of a read needs no check: its deadline, at least 1 ms
 * after its arrival, cannot have passed yet, and the loop's deadline timer still answers for
 * a slow handler. */
static void request_run(arpc_request *req, int status, bool queued, bool waited)
{
    struct request_state *st = req->rq_state;
    bool expired = waited && st->rs_deadline_ns != ARPC_NEVER && arpc_now_ns() >= st->rs_deadline_ns;
    /* A start taken to refuse says so: the loop's deadline, which may fire meanwhile, then
     * leaves the answer to this refusal ("did not run") instead of its own "may have run". */
    bool refusing = status != ARPC_OK || expired;
    unsigned flags = atomic_fetch_or(&req->rq_flags, RQ_STARTED | (refusing ? RQ_REFUSING : 0));
    if (flags & RQ_STARTED) { /* the loop refused it at its start-by time (request_deadline.c) */
        request_let_go(req);
        return;
    }
    if (status != ARPC_OK) { /* discarded by a stopping actor before it ran */
        if (req->rq_oneway) /* nobody hears of it but the count (one the stop took is let go above) */
            arpc_stat_inc(&st->rs_conn->sc_server->sv_stats.ss_oneways_dropped);
        request_refuse(req, ARPC_ESHUTDOWN, SHUTTING_DOWN);
    }
    else if ((flags & RQ_CANCELLED) || expired)
        request_refuse_unstarted(req, flags);
    else if (st->rs_method->m_fn == request_to_queue) {
        request_to_queue(req, st->rs_method->m_ctx); /* it "returns" with its reply: req may be gone */
        return;
    } else
        st->rs_method->m_fn(req, st->rs_method->m_ctx);
    request_handler_done(req, !queued); /* inline: on the loop */
}

static struct request_state *request_state_of_job(struct arpc_actor_job *job)
{
    return (struct request_state *)((char *)job - offsetof(struct request_state, rs_actor_job));
}

static void request_run_job(arpc_actor *actor, struct arpc_actor_job *job, int status)
{
    (void)actor;
    /* The next request's handle, whose flags its run writes first: on its way meanwhile (the
     * loop wrote it on another CPU; its state's line, the job's, the actor fetched already). */
    struct arpc_actor_job *next = arpc_actor_take_next();
    if (next != NULL && next->aj_fn == request_run_job)
        __builtin_prefetch(request_state_of_job(next)->rs_req, 1);
    request_run(request_state_of_job(job)->rs_req, status, true, true);
}

/* The actor a queued method's call runs on: its own, or its group's (or the pool's) member
 * for the call's key, or the next one round-robin. *only: it is the only actor the method's
 * calls can go to (its own, or a group of one), so they may go in runs. */
static arpc_actor *request_actor(arpc_server *s, const struct arpc_method *m, const arpc_request *req, bool *only)
{
    *only = true;
    if (m->m_actor != NULL)
        return m->m_actor;
    arpc_actor_group *g = m->m_group ? m->m_group : s->sv_pool;
    arpc_actor *a = arpc_actor_group_only(g);
    if (a != NULL) {
        if (m->m_key != NULL) /* the key function runs all the same: it is the application's */
            (void)m->m_key(req->rq_state->rs_data, req->rq_state->rs_len, m->m_ctx);
        return a;
    }
    *only = false;
    if (m->m_key != NULL)
        return arpc_actor_group_pick_key(g, m->m_key(req->rq_state->rs_data, req->rq_state->rs_len, m->m_ctx));
    return arpc_actor_group_pick(g);
}

/* ---- flow control (loop thread but for sconn_on_room) ---- */

static void sconn_room_release(struct server_conn *sc)
{
    arpc_server *s = sc->sc_server;
    sconn_release(sc);
    server_release(s);
}

static void request_post(struct server_conn *sc, arpc_request *req, arpc_actor *actor);

/* A closed connection's parked request is listed on the server, for a stop to refuse. */
static void parked_closed_list(struct server_conn *sc, bool on)
{
    struct arpc_dlist *l = &sc->sc_server->sv_parked_closed;
    if (on == sc->sc_parked_closed)
        return;
    sc->sc_parked_closed = on;
    if (on)
        arpc_dlist_insert_after(l, l->dl_tail, &sc->sc_parked_link);
    else
        arpc_dlist_remove(l, &sc->sc_parked_link);
}

/* Loop thread: the actor has room (or stopped): post the parked request again, and read on
 * unless it had to park once more. A connection closed meanwhile refused it already, unless
 * it outlives the connection (request_park_on_close): then it is posted all the same. */
static void sconn_room_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct server_conn *sc = (struct server_conn *)((char *)job - offsetof(struct server_conn, sc_room_job));
    arpc_request *req = sc->sc_parked;
    if (req != NULL) {
        bool open = sc->sc_conn.c_open;
        sc->sc_parked = NULL;
        parked_closed_list(sc, false);
        request_post(sc, req, sc->sc_parked_on); /* the same actor: a key's order is kept */
        if (sc->sc_parked == NULL && open)
            arpc_conn_release_input(&sc->sc_conn, ARPC_CONN_HOLD_PARKED);
        else if (sc->sc_parked != NULL && !open)
            parked_closed_list(sc, true); /* parked again */
    }
    sconn_room_release(sc); /* after the resume, which may close the connection */
}

/* The actor's thread (or the one stopping it): hand over to the loop, as a late reply does
 * (stop waits out sv_replying, so no loop is touched once it returned). */
static void sconn_on_room(arpc_actor *actor, struct arpc_actor_room *room, int status)
{
    (void)actor;
    (void)status; /* the re-post on the loop learns it again */
    struct server_conn *sc = (struct server_conn *)((char *)room - offsetof(struct server_conn, sc_room));
    arpc_server *s = sc->sc_server;
    atomic_fetch_add(&s->sv_replying, 1);
    int rc = ARPC_ESHUTDOWN;
    if (atomic_load(&s->sv_state) != SV_STOPPED) {
        arpc_loop_job_init(&sc->sc_room_job, sconn_room_on_loop);
        rc = arpc_loop_post(s->sv_loop, &sc->sc_room_job);
    }
    atomic_fetch_sub(&s->sv_replying, 1);
    if (rc != ARPC_OK)
        sconn_room_release(sc); /* no loop runs: closing the connections refuses what is parked */
}

/* Posts req to actor without waiting. At the bound, parks it on its connection, whose input
 * is held until the actor has room. */
static void request_post(struct server_conn *sc, arpc_request *req, arpc_actor *actor)
{
    int rc = arpc_actor_post_job(actor, &req->rq_state->rs_actor_job, false);
    if (rc == ARPC_EAGAIN) {
        sconn_retain(sc); /* the room waiter's references */
        server_retain(sc->sc_server);
        sc->sc_parked = req;
        sc->sc_parked_on = actor;
        arpc_actor_room_init(&sc->sc_room, sconn_on_room);
        rc = arpc_actor_on_room(actor, &sc->sc_room);
        if (rc == ARPC_OK) {
            arpc_conn_hold_input(&sc->sc_conn, ARPC_CONN_HOLD_PARKED);
            return;
        }
        sc->sc_parked = NULL; /* the actor stopped meanwhile */
        sconn_room_release(sc);
    }
    if (rc != ARPC_OK) { /* the actor is stopped: the call did not run */
        request_refuse(req, ARPC_EREJECTED, "method's actor is stopped");
        request_handler_done(req, true);
    }
}

/* ---- runs of posts (loop thread) ----
 *
 * Posting a request costs the loop four locked operations on the actor's lines, which its
 * worker writes too (the way in, a place in the bound, the push, the way out), and a futex
 * wake when the worker sleeps. The requests of one parse bound for one actor go as a run
 * instead: up to REQUEST_RUN places reserved at once (arpc_actor_reserve), the requests linked
 * as they are dispatched, and one push of the chain (arpc_actor_post_chain) when the places
 * are used up, the actor changes, or the parse ends; places left over go back then. So the
 * worker starts on a run's first calls while the loop parses the next run, and sleeps and
 * wakes per run, not per call.
 *
 * Only for a method whose calls all go to one actor: its own, or a group of one (the default
 * pool on two cores). A method spread over several actors posts each call to the next as
 * before: a run on one of them would serialise calls that may block while the others idle.
 *
 * What does not change: each request still holds a place in its actor's bound from its
 * dispatch until its job starts (the bound holds); at the bound a request parks as before
 * (request_post), after the run before it was pushed, so per-connection order is kept; a
 * stopped actor refuses the run's requests as it would have refused each. The run is flushed
 * before an inline handler runs (it may stop the server, or wait for those calls) and before
 * any other frame is acted on (a CANCEL, a GOAWAY), and never outlives the parse: nothing
 * outside the loop's current callback ever sees a request dispatched and not posted. */
#define REQUEST_RUN 16u

void request_batch_flush(arpc_server *s)
{
    struct post_batch *b = &s->sv_batch;
    if (b->pb_actor == NULL)
        return;
    arpc_actor *actor = b->pb_actor;
    struct arpc_actor_job *first = b->pb_first;
    unsigned unused = b->pb_credit;
    *b = (struct post_batch){.pb_depth = b->pb_depth};
    if (arpc_actor_post_chain(actor, first, unused) == ARPC_OK)
        return;
    /* The actor stopped since the places were reserved: each request is refused as a post
     * would have been, oldest first. */
    for (struct arpc_actor_job *j = first, *next; j != NULL; j = next) {
        next = j->aj_run_next;
        arpc_request *req = request_state_of_job(j)->rs_req;
        request_refuse(req, ARPC_EREJECTED, "method's actor is stopped");
        request_handler_done(req, true);
    }
}

void request_batch_open(arpc_server *s) { s->sv_batch.pb_depth++; }

void request_batch_close(arpc_server *s)
{
    request_batch_flush(s);
    s->sv_batch.pb_depth--;
}

/* Joins req to the run for actor, or posts it alone: outside a parse, to a method whose calls
 * are spread over several actors (each call to the next, as ever: a run on one of them would
 * serialise calls that may block), and at the bound (where it parks, after the run before it). */
static void request_enqueue(struct server_conn *sc, arpc_request *req, arpc_actor *actor, bool only)
{
    arpc_server *s = sc->sc_server;
    struct post_batch *b = &s->sv_batch;
    if (b->pb_depth == 0 || !only) {
        if (b->pb_actor == actor) /* an actor in a group and a method's own too: keep its order */
            request_batch_flush(s);
        request_post(sc, req, actor);
        return;
    }
    if (b->pb_actor != actor || b->pb_credit == 0) {
        request_batch_flush(s);
        unsigned got = arpc_actor_reserve(actor, REQUEST_RUN);
        if (got == 0) {
            request_post(sc, req, actor); /* at the bound (parks) or stopped (refused) */
            return;
        }
        b->pb_actor = actor;
        b->pb_credit = got;
    }
    struct arpc_actor_job *job = &req->rq_state->rs_actor_job; /* its aj_run_next NULL: request_dispatch's job_init */
    if (b->pb_last != NULL)
        b->pb_last->aj_run_next = job;
    else
        b->pb_first = job;
    b->pb_last = job;
    if (--b->pb_credit == 0)
        request_batch_flush(s); /* its worker starts on it while the loop parses on */
}

void request_refuse_parked(struct server_conn *sc)
{
    arpc_request *req = sc->sc_parked;
    if (req == NULL)
        return;
    sc->sc_parked = NULL; /* the armed room waiter finds nothing to post */
    parked_closed_list(sc, false);
    if (req->rq_oneway) /* only a stop refuses a parked one-way message (request_park_on_close) */
        arpc_stat_inc(&sc->sc_server->sv_stats.ss_oneways_dropped);
    request_refuse(req, ARPC_ESHUTDOWN, SHUTTING_DOWN);
    request_handler_done(req, true);
}

void request_park_on_close(struct server_conn *sc)
{
    arpc_request *req = sc->sc_parked;
    if (req == NULL)
        return;
    /* What a lost connection does not cancel (core/server_departure.c) does not die parked
     * either: a one-way message runs whatever became of its connection, and a numbered call's
     * re-send (or a copy attached already) waits for this very run, which a CANCEL naming its
     * seq still reaches (it is in sc_calls). Refused, a copy attached to it got ESHUTDOWN
     * from a server that was not stopping, and the one-way message was lost. */
    if (req->rq_oneway || (req->rq_seq != 0 && !sc->sc_goodbye))
        parked_closed_list(sc, true);
    else
        request_refuse_parked(sc); /* its answer goes nowhere now, but it is let go */
}

void request_dispatch(struct server_conn *sc, const struct arpc_method *m, const struct arpc_frame *f)
{
    static const char no_memory[] = "server out of memory";
    arpc_server *s = sc->sc_server;
    bool oneway = f->f_kind == ARPC_FRAME_ONEWAY;
    /* A large body read into a buffer of its own is kept as it is, and so is a payload of a
     * few KiB in the read buffer, which lends it: no copy either way. */
    bool in_place = arpc_conn_body_offered(&sc->sc_conn);
    struct conn_rbuf_head *pin = in_place || f->f_payload_len < ARPC_CONN_PIN_MIN
                                     ? NULL
                                     : arpc_conn_pin(&sc->sc_conn, f->f_payload, f->f_payload_len);
    in_place = in_place || pin != NULL;
    int pool_class;
    struct request_state *st = request_state_take(s, sizeof(*st) + (in_place ? 0 : f->f_payload_len), &pool_class);
    arpc_request *req = st != NULL ? request_handle_take(s) : NULL;
    if (req == NULL) {
        if (st != NULL)
            request_state_put(s, st, pool_class, true);
        arpc_conn_unpin(pin);
        /* A copy of a call the cache knows needs no request: it is answered from there
         * (never "not run", which would invite its caller to make the call again). Any other
         * refusal is kept nowhere: it speaks for this send only. */
        if (!oneway && !dedup_answer_copy(sc, f))
            sconn_refuse_unkept(sc, f->f_xid, ARPC_EREJECTED, no_memory, sizeof(no_memory) - 1);
        return;
    }
    req->rq_state = st;
    st->rs_req = req;
    st->rs_pool_class = (signed char)pool_class;
    st->rs_conn = sc;
    st->rs_method = m;
    req->rq_xid = f->f_xid;
    /* Numbered (at-most-once) only with both a seq and a client to key it by; and not for a
     * read-only built-in (core/server_builtin.c). */
    req->rq_seq = m->m_read_only ? 0 : sconn_call_seq(sc, f);
    req->rq_ack = f->f_ack;
    /* The wire's budget counts from the frame's arrival, and so does the latency histogram
     * (rs_dispatched_ns): one precise clock read per read, shared by the frames it brought. */
    uint64_t now = arpc_conn_arrival_ns(&sc->sc_conn);
    st->rs_deadline_ns = sconn_call_deadline(f, now);
    atomic_init(&req->rq_flags, RQ_IN_HANDLER);
    req->rq_oneway = oneway;
    req->rq_late_code = ARPC_OK;
    req->rq_server = NULL; /* set only for a tombstone that needs it (core/request_tomb.c) */
    req->rq_method = NULL;
    req->rq_keeps_result = false;
    req->rq_listed = false;
    req->rq_cancel_fn = NULL;
    req->rq_cancel_arg = NULL;
    st->rs_awaiting = false;
    st->rs_due = false;
    st->rs_counted = false;
    st->rs_charge = 0;
    st->rs_effect = NULL;
    st->rs_len = f->f_payload_len;
    if (req->rq_seq != 0 && !dedup_admit(sc, f, st->rs_deadline_ns)) {
        /* a duplicate: answered from the cache, or waiting for the original */
        request_handle_put(s, req, true);
        request_state_put(s, st, pool_class, true);
        arpc_conn_unpin(pin);
        return;
    }
    if (req->rq_seq == 0 && f->f_ack != 0 && sc->sc_client_id != 0)
        dedup_ack(sc, f->f_ack);
    st->rs_pin = pin;
    st->rs_buf = in_place && pin == NULL ? arpc_conn_take_body(&sc->sc_conn, &st->rs_buf_cap) : NULL;
    st->rs_data = in_place ? f->f_payload : st->rs_inline;
    if (!in_place)
        memcpy(st->rs_inline, f->f_payload, f->f_payload_len);
    if (oneway) {
        arpc_stat_inc(&m->m_stats->ms_oneway);
    } else {
        stats_call_started(&m->m_stats->ms_calls);
        st->rs_dispatched_ns = now;
    }
    /* A call may be cancelled by its xid; a duplicate xid (a client bug) is simply not. */
    st->rs_tracked = !oneway && arpc_u64_map_put(&sc->sc_calls, f->f_xid, req) == ARPC_OK;
    /* Cancelled while it waited behind a hold, its CANCEL read already (it stayed behind it):
     * cancelled before its worker can see it, so it does not start. */
    if (st->rs_tracked && arpc_conn_cancel_behind(&sc->sc_conn, f->f_xid))
        request_cancel_now(req);
    sconn_retain_loop(sc); /* which pins the server too */
    server_inflight_take(s);
    request_list(s, req); /* before an inline handler can reply; a one-way too, for a stop */
    /* A one-way message counts too, for its payload, until its handler is done with it: a
     * flood of them to a slow method would otherwise pin their bytes without bound. */
    inflight_begin(sc, req); /* may hold the connection's input: nothing more is read */
    if (m->m_inline) {
        request_batch_flush(s); /* the handler may stop the server, or wait for those calls */
        bool waited = arpc_conn_input_waited(&sc->sc_conn);
        arpc_conn_input_ages(&sc->sc_conn); /* the frames behind it wait for its handler */
        request_run(req, ARPC_OK, false, waited);
        return;
    }
    arpc_actor_job_init(&st->rs_actor_job, request_run_job);
    bool only;
    arpc_actor *actor = request_actor(s, m, req, &only);
    request_enqueue(sc, req, actor, only);
}
