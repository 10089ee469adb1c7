/*
 * The request a handler sees, and the reply that leaves it.
 *
 * A request is two objects (core/request_internal.h): the handle the handler holds (struct
 * arpc_request, a few words, from the server's handle pool) and the server's part (struct
 * request_state: the call's bookkeeping and a copy of the payload, one block from the
 * server's request pool, core/block_pool.h). It is finished exactly once, by arpc_reply or
 * arpc_reply_error, on any thread. The reply is encoded on that thread into one allocation
 * (struct reply_msg) that travels to the loop on the loop's job lane and is then queued on
 * the connection as it is (the output queue frees it once written).
 *
 * Two holders end a request's life: the handler's run (until the handler returns) and the
 * reply (until the loop has delivered it); whichever lets go last frees both objects. So a
 * second reply made while the handler is still running finds the request alive, sees it was
 * already answered, and is refused (ARPC_EINVAL, logged) instead of freeing it twice. A
 * reply made after the handler returned and the request was answered is a use of freed
 * memory, as with free().
 *
 * Why two objects: when the server answers a call in its handler's place (its deadline, a
 * stop: core/request_deadline.c), the server takes the reply's place as holder, so once the
 * handler has returned the server's part is freed -- its payload, its counts, its pins on the
 * connection and the server -- while the handle stays for the handler's late reply, which
 * may come at any time or never (core/request_tomb.c). The split costs a second take and
 * give-back per call, mostly from a list of the loop's own (docs/PERFORMANCE.md).
 *
 * Cancellation: while a call waits for or runs in its handler, its connection's table maps
 * its xid to it (loop thread only), so a CANCEL frame finds it. The reply's holder is let go
 * on the loop, after the entry is removed, so the table never points at a freed request. A
 * cancelled call that has not started does not run (its reply says ARPC_ECANCELLED); a
 * running handler sees it (core/request_access.c).
 *
 * Late replies: a reply checks that the server is not stopped, and stop waits for replies
 * between that check and their hand-over (sv_replying), so once arpc_server_stop has
 * returned no reply touches the loop, which the user may then destroy. A reply after the stop
 * looks at the state before anything else (the loop may be freed by then).
 *
 * The server's own answers for a handler (deadline, stop) are core/request_deadline.c, and
 * what is left after them core/request_tomb.c; running handlers and flow control at a full
 * mailbox, core/request_dispatch.c.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/cacheline.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/stack_fifo.h"
#include "core/frame.h"
#include "core/jsonrpc_server.h"
#include "core/request_internal.h"
#include "core/server_internal.h"

void request_handles_init(arpc_server *s) { arpc_node_pool_init(&s->sv_handles, sizeof(struct arpc_request)); }

void request_handles_fini(arpc_server *s)
{
    arpc_node_pool_fini(&s->sv_handles);
    while (s->sv_handles_free != NULL) {
        arpc_request *req = s->sv_handles_free;
        s->sv_handles_free = (arpc_request *)req->rq_state;
        arpc_free(req); /* the node pool's nodes are plain allocations */
    }
}

/* Loop thread only (or a job of its final drain): a handle for a new request. The loop is the
 * pool's only taker, and most handles are let go of on the loop (their reply delivered after
 * their handler returned), so those go to a list of the loop's own, without an atomic; the
 * others come back through the node pool (measured: the pool's atomics cost ~2% of pipelined
 * throughput when every handle went through it). */
arpc_request *request_handle_take(arpc_server *s)
{
    arpc_request *req = s->sv_handles_free;
    if (req == NULL)
        req = arpc_node_pool_get(&s->sv_handles);
    else {
        s->sv_handles_free = (arpc_request *)req->rq_state; /* a free handle's rq_state links the next */
        if (s->sv_handles_free != NULL) /* a worker wrote its flags: the next dispatch's, fetched ahead */
            __builtin_prefetch(s->sv_handles_free, 1);
    }
    if (req != NULL) {
        atomic_store_explicit(&req->rq_magic, ARPC_MAGIC_REQUEST, memory_order_relaxed);
        req->rq_fork_gen = s->sv_fork_gen;
    }
    return req;
}

void request_handle_put(arpc_server *s, arpc_request *req, bool on_loop)
{
    arpc_handle_poison(req); /* a free node's first word is the pool's link: dead either way */
    if (!on_loop) {
        arpc_node_pool_put(&s->sv_handles, req);
        return;
    }
    req->rq_state = (struct request_state *)s->sv_handles_free;
    s->sv_handles_free = req;
}

/* Loop thread only: a request's block. As with handles, the blocks of the smallest class let
 * go of on the loop (most: a reply is delivered there after its handler returned) go to a
 * list of the loop's own and come back from it without an atomic; the pool's stack costs a
 * double-width CAS per take and a CAS per give-back, on a line the workers' give-backs write
 * too (docs/PERFORMANCE.md, "The server loop's hand-off"). The list's blocks are the pool's,
 * counted in its bound, and go back to it at the end (request_states_fini). */
/* The next block the loop will take: its handler's lines were last a worker's (it read them
 * on another CPU), and the dispatch writes them first thing. Fetched for writing now, they
 * are the loop's again by then instead of a miss in the middle of the next dispatch. */
static void request_state_fetch_ahead(const void *next)
{
    if (next == NULL)
        return;
    const struct request_state *st = next;
    __builtin_prefetch(&st->rs_req, 1);
    __builtin_prefetch((const char *)&st->rs_req + ARPC_CACHELINE, 1);
}

struct request_state *request_state_take(arpc_server *s, size_t size, int *cls)
{
    void *b = s->sv_states_free;
    if (b == NULL || size > block_pool_block(0))
        return block_pool_get(&s->sv_requests, size, cls);
    s->sv_states_free = *(void **)b;
    *cls = 0;
    request_state_fetch_ahead(s->sv_states_free);
    return b;
}

void request_state_put(arpc_server *s, struct request_state *st, int cls, bool on_loop)
{
    if (!on_loop || cls != 0) {
        block_pool_put(&s->sv_requests, st, cls);
        return;
    }
    *(void **)st = s->sv_states_free;
    s->sv_states_free = st;
}

void request_states_fini(arpc_server *s)
{
    while (s->sv_states_free != NULL) {
        void *b = s->sv_states_free;
        s->sv_states_free = *(void **)b;
        block_pool_put(&s->sv_requests, b, 0);
    }
}

int reply_fit_client(uint32_t client_max, uint8_t *kind, int *code, const void **data, size_t *len)
{
    int rc = ARPC_OK;
    if (*kind == ARPC_FRAME_REPLY && *len > client_max) {
        static const char too_large[] = "reply larger than the client accepts, or than its connection may hold";
        *kind = ARPC_FRAME_ERROR;
        *code = ARPC_ETOOLARGE;
        *data = too_large;
        *len = sizeof(too_large) - 1;
        rc = ARPC_ETOOLARGE;
    }
    if (*kind == ARPC_FRAME_ERROR)
        *len = error_msg_cap(client_max, *len);
    return rc;
}

/* Frees the server's part, and the handle unless the server answered the call and its late
 * reply has not come yet (the handle is then a tombstone, freed by that reply). Any thread;
 * on_loop: on the loop's thread (or in a job of its final drain); answered: rq_flags had
 * RQ_SERVER_ANSWERED (otherwise a reply was made, so it never will: no late reply to meet).
 * The server's part pins its connection, which pins the server: s is used before the
 * connection is let go. */
static void request_free(arpc_request *req, bool answered, bool on_loop)
{
    struct request_state *st = req->rq_state;
    struct server_conn *sc = st->rs_conn;
    arpc_server *s = sc->sc_server;
    arpc_conn_buf_put(&sc->sc_conn, st->rs_buf, st->rs_buf_cap); /* for the connection's next large frame */
    arpc_conn_unpin(st->rs_pin);
    request_state_put(s, st, st->rs_pool_class, on_loop);
    if (!answered)
        request_handle_put(s, req, on_loop);
    else if (atomic_fetch_or(&req->rq_flags, RQ_STATE_GONE) & RQ_LATE_DONE)
    {
        arpc_handle_poison(req);
        arpc_free(req); /* answered by the server: it left the pool (core/request_tomb.c) */
    }
    /* (Else the late reply may free the tombstone at once: req is not looked at again.) */
    if (!(on_loop && server_inflight_put_loop(s)) && atomic_fetch_sub(&s->sv_inflight, 1) == 1 &&
        atomic_load(&s->sv_state) == SV_STOPPING)
        arpc_future_complete(s->sv_drained, ARPC_OK, NULL, 0); /* a stop waits out its grace on it */
    if (on_loop)
        sconn_release_loop(sc); /* back to the loop's stash while sc is open */
    else
        sconn_release(sc);
}

void request_abandon(arpc_loop *loop, arpc_request *req)
{
    if (loop != NULL)
        inflight_end(req, 0); /* NULL: no loop runs (stopped), nothing counts any more */
    request_free(req, true, loop != NULL);
}

static void request_abandon_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    request_abandon(loop, ((struct request_state *)((char *)job - offsetof(struct request_state, rs_job)))->rs_req);
}

static void request_finish_on_loop(arpc_server *s, arpc_request *req, arpc_loop_job_fn fn, bool *stopped);

/* The handler returned: free the request if its reply is already done. When the server
 * answered the call, the loop ends its count first. */
void request_handler_done(arpc_request *req, bool on_loop)
{
    unsigned flags = atomic_fetch_and(&req->rq_flags, ~(unsigned)RQ_IN_HANDLER);
    if (!(flags & RQ_REPLY_DONE))
        return;
    if (flags & RQ_SERVER_ANSWERED)
        request_finish_on_loop(req->rq_state->rs_conn->sc_server, req, request_abandon_on_loop, NULL);
    else
        request_free(req, false, on_loop);
}

/* The reply was handed over: free the request if its handler already returned. The two
 * read-modify-writes are totally ordered, so exactly one of them frees. */
void request_reply_done(arpc_request *req, bool on_loop)
{
    unsigned flags = atomic_fetch_or(&req->rq_flags, RQ_REPLY_DONE);
    if (!(flags & RQ_IN_HANDLER))
        request_free(req, flags & RQ_SERVER_ANSWERED, on_loop);
}

/* Loop thread: the request leaves its connection's table (a CANCEL can no longer find it). */
void request_untrack(arpc_request *req)
{
    struct request_state *st = req->rq_state;
    struct server_conn *sc = st->rs_conn;
    if (st->rs_tracked) /* closed or not: the table lives as long as sc */
        arpc_u64_map_take(&sc->sc_calls, req->rq_xid);
    st->rs_tracked = false;
}

void request_count_answer(arpc_request *req, int code, uint64_t done_ns)
{
    struct request_state *st = req->rq_state;
    struct method_stats *ms = st->rs_method->m_stats;
    stats_call_finished(&ms->ms_calls, code);
    arpc_hist_record(&ms->ms_latency, done_ns - st->rs_dispatched_ns);
}

/* Loop thread: the call's answer is out (a one-way message's handler is done, or the stop
 * dropped it), so it stops counting (calls in flight, its connection's bytes) -- unless the
 * loop refused it while it waited in its actor's mailbox: its payload is still there, and it
 * counts until the actor lets it go (request_let_go). */
static void reply_stops_counting(arpc_request *req, size_t ran_len)
{
    if (!(atomic_load(&req->rq_flags) & RQ_REFUSED_QUEUED))
        inflight_end(req, ran_len);
    else
        inflight_answered_early(req); /* answered: owed nothing more */
}

/* Loop thread (or any thread once no loop runs): queues the reply on its connection. A reply
 * to a call the server answered goes another way (core/request_tomb.c). */
void reply_deliver(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct reply_msg *rm = (struct reply_msg *)job;
    arpc_request *req = rm->rm_req;
    struct server_conn *sc = req->rq_state->rs_conn;
    /* Replies drained from the lane in a row make a batch: once it is large, it leaves before
     * this one joins, so the client reads the first part while the loop queues the rest. */
    arpc_conn_flush_batch(&sc->sc_conn);
    request_untrack(req);
    request_unlist(req);
    arpc_server *s = sc->sc_server;
    request_count_answer(req, rm->rm_code, rm->rm_made_ns);
    size_t ran_len = rm->rm_ran ? rm->rm_len : 0; /* rm may be gone once queued */
    bool written = rm->rm_direct != 0; /* its replier wrote it (all, or its start) */
    if (written)
        reply_direct_finish(sc, rm); /* its rest, if any, first */
    if (req->rq_seq != 0) {
        /* Numbered: the result goes to every request waiting for it, and is kept. So is a
         * refusal (it did not run: expired, its actor stopped, no room in its queue, a
         * stop): its client never sends a seq again once answered, so another copy is an
         * earlier send arriving late (a half-open connection's, a proxy's replay), which must
         * get the same "did not run", never a run (docs/SEMANTICS.md; before, it ran). A call
         * cancelled on its own connection is forgotten ("cancelled" says it may run), unless
         * its client gave the seq up for good (a CANCEL naming it); its "did not run" then
         * speaks for the sends it answers only, and says so (UNKEPT: a later copy is a new
         * call, and may run). */
        bool kept = rm->rm_ran || rm->rm_code != ARPC_ECANCELLED || (atomic_load(&req->rq_flags) & RQ_CANCEL_KEPT);
        if (!kept)
            arpc_frame_add_error_flags(rm->rm_frame, ARPC_ERROR_UNKEPT);
        dedup_complete(s, sc->sc_cache_key, req->rq_seq, req->rq_ack, rm, kept);
    } else if (written) {
        reply_msg_put(rm); /* the caller has it already */
    } else if (rm->rm_effect == NULL || s->sv_log == NULL || !journal_send_durable(s, sc, rm)) {
        sconn_send_frame(sc, rm);
    }
    reply_stops_counting(req, ran_len); /* after the reply counts as queued output */
    request_due_done(req); /* last: a stop waiting for it then finds its record counted */
    request_reply_done(req, true);
}

/* Loop thread (or a final drain, loop NULL): a call the loop refused while it waited in its
 * actor's mailbox, which its actor has now let go of, stops counting, and is freed. */
static void request_let_go_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    arpc_request *req = ((struct request_state *)((char *)job - offsetof(struct request_state, rs_job)))->rs_req;
    if (loop != NULL)
        inflight_end(req, 0); /* NULL: no loop runs (stopped), nothing counts any more */
    request_handler_done(req, loop != NULL);
}

void request_let_go(arpc_request *req)
{
    /* Its refusal was delivered on the loop as it was made (rs_job is free again). */
    request_finish_on_loop(req->rq_state->rs_conn->sc_server, req, request_let_go_on_loop, NULL);
}

/* No reply will be delivered (none could be encoded): let go of the reply's holder on the
 * loop, after the request leaves its connection's table. Its caller is answered
 * ARPC_EABANDONED at once ("may have run"), numbered or not. A numbered call's waiting retries
 * get the server's "lost" error too; its entry keeps it if the call ran, and is dropped (a
 * later retry may run it) if it was refused without running. An unnumbered call's error is
 * made now: should that fail too, its connection closes (sconn_send_error), which ends the
 * call as surely. */
static void request_drop_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    static const char lost[] = SERVER_LOST_REPLY_MSG;
    arpc_request *req = ((struct request_state *)((char *)job - offsetof(struct request_state, rs_job)))->rs_req;
    request_untrack(req);
    request_unlist(req);
    request_count_answer(req, ARPC_EABANDONED, arpc_now_ns()); /* what its caller sees */
    struct server_conn *sc = req->rq_state->rs_conn;
    if (loop != NULL && req->rq_seq != 0)
        dedup_lost(sc->sc_server, sc->sc_cache_key, req->rq_seq, req->rq_ack, req->rq_state->rs_lost_ran);
    else if (loop != NULL)
        sconn_send_error(sc, req->rq_xid, ARPC_EABANDONED, lost, sizeof(lost) - 1);
    if (loop != NULL) /* NULL: no loop runs (stopped), nothing counts any more */
        reply_stops_counting(req, 0);
    request_due_done(req);
    request_reply_done(req, loop != NULL);
}

bool server_job_for_stop(arpc_server *s, struct arpc_loop_job *job)
{
    /* As in server_loop_hand: counted, so that a stop that stores SV_STOPPED now waits for
     * the push, and its last step (step_last_replies) finds the job. */
    atomic_fetch_add(&s->sv_replying, 1);
    bool kept = atomic_load(&s->sv_state) != SV_STOPPED;
    /* The application stopped its loop under a server that still runs: the request is still
     * in the loop's lists (its connection's call table, the calls awaiting replies), which
     * the server's stop walks later. Let go of here, off the loop, it would leave them
     * pointing at freed memory (before 2026-12-08 it was). Nothing may run the loop's part
     * here (a wrapped or pollable loop's owner may still be in it): the job waits for the
     * stop, whose steps run as the loop on every kind of loop, and run it first. */
    if (kept)
        arpc_stack_push(&s->sv_stop_jobs, &job->j_link); /* base/stack_fifo.h: lock-free, never waits */
    atomic_fetch_sub(&s->sv_replying, 1);
    return kept;
}

CK_STACK_CONTAINER(struct arpc_loop_job, j_link, stop_job_of)

void server_run_stop_jobs(arpc_loop *loop, arpc_server *s)
{
    ck_stack_entry_t *e = arpc_stack_take_fifo(&s->sv_stop_jobs); /* one replier's jobs in its order */
    while (e != NULL) {
        struct arpc_loop_job *job = stop_job_of(e);
        e = e->next; /* the job may free itself */
        job->j_fn(loop, job);
    }
}

int server_loop_hand(arpc_server *s, struct arpc_loop_job *job, struct reply_msg *direct, bool *stopped)
{
    if (arpc_loop_running_here(s->sv_loop_id)) { /* not sv_loop: a destroy may be clearing it */
        /* On the thread that runs the loop (an inline handler's reply): the loop is alive while
         * we run in it, and a stop's steps after its SV_STOPPED store run on this thread, after
         * this job; so the state alone decides, with no sv_replying count (two locked
         * operations per inline call). */
        if (atomic_load(&s->sv_state) == SV_STOPPED) {
            if (stopped != NULL)
                *stopped = true;
            return ARPC_ESHUTDOWN;
        }
        job->j_fn(s->sv_loop, job);
        return ARPC_OK;
    }
    atomic_fetch_add(&s->sv_replying, 1);
    if (atomic_load(&s->sv_state) == SV_STOPPED) {
        atomic_fetch_sub(&s->sv_replying, 1);
        if (stopped != NULL)
            *stopped = true;
        return ARPC_ESHUTDOWN;
    }
    if (arpc_loop_on_thread(s->sv_loop)) { /* inside the application's ev_run on a wrapped loop */
        atomic_fetch_sub(&s->sv_replying, 1);
        job->j_fn(s->sv_loop, job); /* on the loop's thread, the loop outlives the call */
        return ARPC_OK;
    }
    /* Written here first only when the loop is idle (core/reply_direct.c): before the post, so
     * that the job knows what left. */
    bool lazy = direct != NULL && arpc_loop_idle(s->sv_loop) && reply_direct_write(direct);
    int rc = lazy ? arpc_loop_post_lazy(s->sv_loop, job) : arpc_loop_post(s->sv_loop, job);
    if (rc == ARPC_OK && (lazy || stopped != NULL)) {
        int state = atomic_load(&s->sv_state);
        /* A stop waits for this request to be let go: looked at after the push, so that either
         * the stop's first step drains it or we see the stop and wake the loop. */
        if (lazy && state != SV_RUNNING)
            arpc_loop_kick(s->sv_loop);
        else if (lazy) /* it may free a held connection's input: not for ever */
            arpc_loop_lazy_soon(s->sv_loop);
        if (stopped != NULL && state == SV_STOPPED)
            *stopped = true;
    }
    atomic_fetch_sub(&s->sv_replying, 1);
    return rc;
}

/* A one-way message's handler is done: the loop stops counting it toward its connection's
 * flow limits (it held its payload until now), then lets it go. loop: NULL when none runs. */
static void request_oneway_done(arpc_loop *loop, arpc_request *req)
{
    struct request_state *st = req->rq_state;
    if (st->rs_effect != NULL) { /* its effect, where its reply would be in the log's order */
        if (loop != NULL)
            journal_effect_append(st->rs_conn->sc_server, st->rs_effect);
        else
            journal_effect_free(st->rs_effect); /* no loop runs: the log is closed */
        st->rs_effect = NULL;
    }
    if (loop != NULL) {
        request_unlist(req); /* NULL: a stop emptied the list */
        reply_stops_counting(req, 0);
    }
    request_reply_done(req, loop != NULL);
}

static void request_oneway_done_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    request_oneway_done(loop, ((struct request_state *)((char *)job - offsetof(struct request_state, rs_job)))->rs_req);
}

void request_drop_queued_oneway(arpc_request *req)
{
    atomic_fetch_or(&req->rq_flags, RQ_REPLIED); /* as any answer: no reply may follow */
    request_oneway_done(req->rq_state->rs_conn->sc_server->sv_loop, req);
}

/* Runs fn for req on the loop (rs_job), or here with a NULL loop when no loop runs any more
 * (a stop emptied its lists; nothing counts any more). stopped: as server_loop_hand's. */
static void request_finish_on_loop(arpc_server *s, arpc_request *req, arpc_loop_job_fn fn, bool *stopped)
{
    struct arpc_loop_job *job = &req->rq_state->rs_job;
    arpc_loop_job_init(job, fn);
    if (server_loop_hand(s, job, NULL, stopped) == ARPC_OK)
        return;
    if (!server_job_for_stop(s, job))
        fn(NULL, job);
}

/* Hands an encoded reply to the loop without ever waiting, written first by this thread when
 * may_write and it can. ARPC_ESHUTDOWN: dropped (the reply's holder is let go here; a frame
 * half written then stays so: the loop that could finish it is gone). */
static int reply_hand_over(arpc_server *s, struct reply_msg *rm, bool may_write, bool *stopped)
{
    arpc_loop_job_init(&rm->rm_job, reply_deliver);
    if (may_write && reply_take_hold(s, rm))
        return ARPC_OK; /* leaves with the rest of its take (core/reply_take.c) */
    int rc = server_loop_hand(s, &rm->rm_job, may_write ? rm : NULL, stopped);
    if (rc != ARPC_OK && server_job_for_stop(s, &rm->rm_job))
        return ARPC_OK; /* delivered by the stop, as on the loop */
    if (rc != ARPC_OK) {
        arpc_request *req = rm->rm_req;
        reply_msg_free(rm);
        request_reply_done(req, false); /* no loop will deliver it; its table is gone with the loop */
    }
    return rc;
}

/* One allocation: the message, the frame, then the effect (if any). A large one comes from
 * home's buffer cache, any other from the server's reply pool (home may be NULL: a plain
 * allocation), so replies reuse memory instead of crossing the allocator's threads and making
 * it fault fresh pages in for each. */
static struct reply_msg *reply_msg_new(struct server_conn *home, size_t flen, const void *effect, size_t effect_len)
{
    size_t total = sizeof(struct reply_msg) + flen + effect_len;
    size_t cap = 0;
    bool bulk = home != NULL && total >= ARPC_CONN_BODY_MIN;
    struct block_pool *pool = home != NULL && !bulk ? &home->sc_server->sv_replies : NULL;
    int pool_class = BLOCK_POOL_NONE;
    struct reply_msg *rm = bulk   ? arpc_conn_buf_get(&home->sc_conn, total, &cap)
                           : pool ? block_pool_get(pool, total, &pool_class)
                                  : arpc_malloc(total);
    if (rm == NULL)
        return NULL;
    rm->rm_pool = pool;
    rm->rm_pool_class = (signed char)pool_class;
    rm->rm_home = bulk ? home : NULL;
    rm->rm_cap = cap;
    if (bulk)
        sconn_retain(home); /* the cache must outlive the reply (which may outlive the connection) */
    rm->rm_len = flen;
    rm->rm_refs = 1;
    rm->rm_direct = 0;
    rm->rm_effect = NULL;
    rm->rm_effect_len = effect_len;
    if (effect != NULL) {
        memcpy(rm->rm_frame + flen, effect, effect_len);
        rm->rm_effect = rm->rm_frame + flen;
    }
    return rm;
}

/* Replies of the smallest class freed on the loop's thread go back to the pool SPENT_RUN at a
 * time, with one CAS (the workers take them, so each give-back is a CAS on a line a worker
 * wrote last); SPENT_RUN blocks out of 512 wait meanwhile. */
#define SPENT_RUN 32u

static void reply_spent_put(arpc_server *s, struct reply_msg *rm)
{
    arpc_node_chain_add(&s->sv_replies_spent, rm);
    if (s->sv_replies_spent.nc_n >= SPENT_RUN)
        arpc_node_pool_put_chain(&s->sv_replies.bp_class[0].pc_free, &s->sv_replies_spent);
}

void reply_spent_fini(arpc_server *s)
{
    arpc_node_pool_put_chain(&s->sv_replies.bp_class[0].pc_free, &s->sv_replies_spent);
}

void reply_msg_free(struct reply_msg *rm)
{
    struct server_conn *home = rm->rm_home;
    if (home == NULL) {
        arpc_server *s = rm->rm_pool != NULL ? (arpc_server *)((char *)rm->rm_pool - offsetof(arpc_server, sv_replies)) : NULL;
        if (s != NULL && rm->rm_pool_class == 0 && arpc_loop_running_here(s->sv_loop_id))
            reply_spent_put(s, rm);
        else if (rm->rm_pool != NULL)
            block_pool_put(rm->rm_pool, rm, rm->rm_pool_class); /* its server outlives its replies */
        else
            arpc_free(rm);
        return;
    }
    arpc_conn_buf_put(&home->sc_conn, rm, rm->rm_cap);
    sconn_release(home);
}

void reply_msg_put(struct reply_msg *rm) { reply_msg_put_near(rm, NULL); }

void reply_msg_release(void *rm) { reply_msg_put(rm); }

size_t reply_msg_cost(const struct reply_msg *rm)
{
    size_t made = sizeof(*rm) + rm->rm_len + rm->rm_effect_len;
    if (rm->rm_cap > made)
        return rm->rm_cap;
    return rm->rm_pool_class >= 0 ? block_pool_block(rm->rm_pool_class) : made;
}

void reply_msg_put_near(struct reply_msg *rm, struct server_conn *near)
{
    if (rm == NULL || --rm->rm_refs > 0)
        return;
    if (rm->rm_home == NULL && rm->rm_cap != 0 && near != NULL)
        arpc_conn_buf_put(&near->sc_conn, rm, rm->rm_cap); /* for near's next large frame */
    else
        reply_msg_free(rm);
}

struct reply_msg *reply_msg_from_frame(const void *frame, size_t len)
{
    struct reply_msg *rm = reply_msg_new(NULL, len, NULL, 0);
    if (rm != NULL) {
        memcpy(rm->rm_frame, frame, len);
        rm->rm_req = NULL;
        rm->rm_ran = true;
        rm->rm_code = ARPC_OK;
    }
    return rm;
}

struct reply_msg *reply_encode(struct server_conn *home, uint64_t xid, uint8_t kind, int code, const void *data,
                               size_t len, bool ran, const void *effect, size_t effect_len)
{
    size_t flen = kind == ARPC_FRAME_REPLY ? ARPC_FRAME_HEADER_SIZE + len : arpc_frame_error_size(len);
    struct reply_msg *rm = reply_msg_new(home, flen, effect, effect_len);
    if (rm == NULL)
        return NULL;
    if (kind == ARPC_FRAME_REPLY) {
        arpc_frame_encode_header(rm->rm_frame, ARPC_FRAME_REPLY, xid, (uint32_t)len);
        if (len)
            memcpy(rm->rm_frame + ARPC_FRAME_HEADER_SIZE, data, len);
    } else {
        arpc_frame_encode_error(rm->rm_frame, ARPC_FRAME_ERROR, xid, (uint32_t)code, 0, data, (uint16_t)len);
    }
    rm->rm_req = NULL;
    rm->rm_ran = ran;
    rm->rm_code = kind == ARPC_FRAME_REPLY ? ARPC_OK : code;
    return rm;
}

/* An effect on a server without a log is dropped, with a warning once. */
bool reply_effect_kept(const arpc_server *s)
{
    if (s->sv_has_log)
        return true;
    static atomic_bool warned;
    if (!atomic_exchange(&warned, true))
        arpc_log(ARPC_LOG_WARN, "arpc_reply_durable on a server without log_dir: effects are not logged");
    return false;
}

static int reply_send(arpc_request *req, uint8_t kind, int code, const void *data, size_t len, bool ran,
                      const void *effect, size_t effect_len);

static int reply_with(arpc_request *req, uint8_t kind, int code, const void *data, size_t len, bool ran,
                      const void *effect, size_t effect_len)
{
    if (req == NULL)
        return ARPC_EINVAL;
    unsigned flags = atomic_fetch_or(&req->rq_flags, RQ_REPLIED);
    if (flags & RQ_REPLIED) {
        /* Only reachable while the handler still runs or a late reply is on its way
         * (otherwise req is gone): refuse. The server's part may be gone already, and once the
         * handler returned the first reply may free the whole request at any moment (a second
         * reply racing it is a use after free this check cannot always catch): the method's
         * name is read only while the handler holds the request. */
        char seq[32] = ""; /* a numbered call: its seq, as arpc_request_seq gives it */
        if (req->rq_seq != 0)
            snprintf(seq, sizeof(seq), ", seq %llu", (unsigned long long)req->rq_seq);
        bool held = (flags & (RQ_IN_HANDLER | RQ_STATE_GONE)) == RQ_IN_HANDLER;
        arpc_log(ARPC_LOG_ERROR, "a second reply for one request of %s (xid %llu%s) was refused",
                 held ? req->rq_state->rs_method->m_name : "a method", arpc_xid_shown(req->rq_xid), seq);
        return ARPC_EINVAL;
    }
    /* The server answered the caller already: the server's part may be gone; the reply goes
     * the tombstone's way (a numbered call's result still finishes its cache entry). */
    int rc = flags & RQ_SERVER_ANSWERED ? request_tomb_reply(req, flags, kind, code, data, len, effect, effect_len)
                                        : reply_send(req, kind, code, data, len, ran, effect, effect_len);
    if (flags & RQ_QUEUED)
        request_handler_done(req, false); /* taken from a queue: its "handler" ends with its reply */
    return rc;
}

/* A first reply to a call the server has not answered. */
static int reply_send(arpc_request *req, uint8_t kind, int code, const void *data, size_t len, bool ran,
                      const void *effect, size_t effect_len)
{
    struct request_state *st = req->rq_state;
    struct server_conn *sc = st->rs_conn;
    arpc_server *s = sc->sc_server;
    if (effect != NULL && !reply_effect_kept(s))
        effect = NULL, effect_len = 0;
    /* The hand-over may free the request, and with it the last pin on s: s is not touched
     * after it (server_loop_hand says whether the server was stopped). */
    bool stopped = false;
    int rc = ARPC_OK;
    if (req->rq_oneway) {
        /* Nothing to reply, but an effect to log all the same: its state holds it. */
        if (effect != NULL && (st->rs_effect = journal_effect_new(s, effect, effect_len)) == NULL) {
            rc = ARPC_ENOMEM;
            journal_fail_enomem(s); /* an effect the log will never have: fail-stop */
        }
        request_finish_on_loop(s, req, request_oneway_done_on_loop, &stopped);
    } else {
        rc = reply_fit_client(sc->sc_client_max, &kind, &code, &data, &len);
        jsonrpc_sconn_check_reply(sc, req->rq_xid, &kind, &code, &data, &len);
        /* The request counts as finished once the loop delivered its reply: a stop waiting
         * for calls in flight finds every reply queued when it sees the count reach zero. */
        struct reply_msg *rm = reply_encode(sc, req->rq_xid, kind, code, data, len, ran, effect, effect_len);
        if (rm == NULL) {
            rc = ARPC_ENOMEM; /* the caller is answered ARPC_EABANDONED (request_drop_on_loop) */
            if (effect != NULL) /* an effect the log will never have: fail-stop, as a failed record */
                journal_fail_enomem(s);
            st->rs_lost_ran = ran;
            request_finish_on_loop(s, req, request_drop_on_loop, &stopped); /* no reply: let go of its holder */
        } else {
            rm->rm_req = req;
            rm->rm_made_ns = arpc_now_ns(); /* here, not on the loop: docs/PERFORMANCE.md */
            /* Written by this thread only where nothing else decides when or how it may leave
             * (core/reply_direct.c): the call ran on an actor, no reply log; the connection
             * says whether its stream and codec allow it. */
            bool may_write = ran && !st->rs_method->m_inline && !s->sv_has_log;
            int hrc = reply_hand_over(s, rm, may_write, &stopped);
            if (hrc != ARPC_OK)
                rc = hrc;
        }
    }
    return rc == ARPC_OK && stopped ? ARPC_ESHUTDOWN : rc;
}

int arpc_reply(arpc_request *req, const void *data, size_t len)
{
    if (!request_replyable(req, __func__))
        return ARPC_EINVAL;
    if (data == NULL && len != 0)
        len = 0;
    return reply_with(req, ARPC_FRAME_REPLY, ARPC_OK, data, len, true, NULL, 0);
}

int arpc_reply_durable(arpc_request *req, const void *effect, size_t effect_len, const void *data, size_t len)
{
    if (!request_replyable(req, __func__) || (effect == NULL && effect_len != 0))
        return ARPC_EINVAL;
    if (data == NULL && len != 0)
        len = 0;
    /* Judged before anything is done: a record the log refused would stop it (and with it the
     * server's at-most-once calls), where this way only the handler hears. */
    if (effect_len > ARPC_DURABLE_MAX || len > ARPC_DURABLE_MAX - effect_len)
        return ARPC_ETOOLARGE;
    /* An empty effect is still a durable reply (logged before it leaves), though recovery
     * hands back non-empty effects only: the call changed nothing (arpc/server.h). */
    return reply_with(req, ARPC_FRAME_REPLY, ARPC_OK, data, len, true, effect != NULL ? effect : "", effect_len);
}

int arpc_reply_error(arpc_request *req, const char *msg)
{
    if (!request_replyable(req, __func__))
        return ARPC_EINVAL;
    return reply_with(req, ARPC_FRAME_ERROR, ARPC_EHANDLER, msg ? msg : "", msg ? strlen(msg) : 0, true, NULL, 0);
}

/* Answers a call that will not run, with why. */
void request_refuse(arpc_request *req, int code, const char *why)
{
    reply_with(req, ARPC_FRAME_ERROR, code, why, strlen(why), false, NULL, 0);
}

void request_answer_lost(arpc_request *req, const char *why)
{
    reply_with(req, ARPC_FRAME_ERROR, ARPC_EABANDONED, why, strlen(why), true, NULL, 0);
}
