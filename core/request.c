/*
 * The request a handler sees, and the reply that leaves it.
 *
 * A request is one allocation: the object and a copy of the payload. It is finished exactly
 * once, by arpc_reply or arpc_reply_error, on any thread. The reply is encoded on that thread
 * into one allocation (struct reply_msg) that travels to the loop on the loop's job lane and
 * is then queued on the connection as it is (the output queue frees it once written).
 *
 * Two holders end a request's life: the handler's run (until the handler returns) and the
 * reply (until the loop has delivered it); whichever lets go last frees it. So a second reply
 * made while the handler is still running finds the request alive, sees it was already
 * answered, and is refused (ARPC_EINVAL, logged) instead of freeing it twice. A reply made
 * after the handler returned and the request was answered is a use of freed memory, as with
 * free().
 *
 * Cancellation: while a call waits for or runs in its handler, its connection's table maps
 * its xid to it (loop thread only), so a CANCEL frame finds it. The reply's holder is let go
 * on the loop, after the entry is removed, so the table never points at a freed request. A
 * cancelled call that has not started does not run (its reply says ARPC_ECANCELLED); a
 * running handler sees arpc_request_cancelled() or its on_cancel callback (rq_flags orders
 * the callback's registration against the cancel, so exactly one side calls it).
 *
 * Flow control: a request is posted to its actor without waiting (its actor job is embedded,
 * so no allocation either). At the mailbox's bound it is parked on its connection, whose input
 * is held (core/conn.h), and a room waiter is armed on the actor; when room is back the loop
 * posts it again and resumes the connection. So a full mailbox slows only the connections that
 * feed it, never the loop: other connections and inline methods go on. Per connection, order
 * is kept: nothing behind a parked request is parsed before it is posted.
 *
 * Late replies: a reply checks that the server is not stopped, and stop waits for replies
 * between that check and their hand-over (sv_replying), so once arpc_server_stop has
 * returned no reply touches the loop, which the user may then destroy. A reply after the stop
 * looks at the state before anything else (the loop may be freed by then).
 *
 * Answers the server gives for a handler: a call that carries a deadline arms one on the loop
 * (rq_deadline) when it is dispatched; if the handler has not replied when it passes, the
 * caller is answered ARPC_ETIMEDOUT (what its own deadline would give it: "may have run"),
 * and a stop answers every call still unanswered after its grace ARPC_EABANDONED (it started,
 * so unlike ARPC_ESHUTDOWN it may have run). The request is NOT freed then: the handler still
 * holds it and may reply later; that reply is dropped (for a numbered call it still finishes
 * the call in the reply cache, whose entry stayed "running" meanwhile, so a retry never runs
 * the handler a second time while the first run may still go on) and returns ARPC_ETIMEDOUT
 * (deadline) or ARPC_ESHUTDOWN (stop). The two sides meet on rq_flags: the server sets
 * RQ_SERVER_ANSWERED unless RQ_REPLIED is set (a CAS), a reply sets RQ_REPLIED (a fetch_or);
 * both are read-modify-writes of one word, so exactly one side answers the caller. The loop
 * keeps the calls waiting for a reply in sv_awaiting (loop thread only), which a stop empties.
 */
#include <stddef.h>
#include <string.h>

#include "async/futex.h"

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/frame.h"
#include "core/server_internal.h"

enum {
    RQ_IN_HANDLER = 1u << 0, /* holder: the handler has not returned yet */
    RQ_REPLY_DONE = 1u << 1, /* holder let go: the reply was delivered (or dropped) */
    RQ_REPLIED = 1u << 2,    /* marker: a reply began (a second one is refused) */
    RQ_CANCELLED = 1u << 3,  /* a CANCEL frame arrived for it */
    RQ_CANCEL_CB = 1u << 4,  /* rq_cancel_fn is set */
    RQ_STARTED = 1u << 5,    /* the handler was called */
    RQ_SERVER_ANSWERED = 1u << 6, /* the server answered the caller itself (rq_late_code) */
};

struct arpc_request {
    struct arpc_loop_job rq_job; /* lets go of the reply's holder on the loop, when no reply can */
    struct arpc_actor_job rq_actor_job; /* its post to its actor */
    struct server_conn *rq_conn;
    const struct arpc_method *rq_method;
    uint64_t rq_xid;
    uint64_t rq_seq;         /* numbered (at-most-once) call: its seq; 0 otherwise */
    uint64_t rq_ack;         /* the ack the request carried */
    uint64_t rq_deadline_ns; /* from the wire's budget, counted from arrival; ARPC_NEVER: none */
    atomic_uint rq_flags;
    bool rq_oneway;
    bool rq_tracked;         /* in its connection's table (a call that may be cancelled) */
    bool rq_awaiting;        /* in the server's sv_awaiting list (loop thread) */
    int rq_late_code;        /* RQ_SERVER_ANSWERED: what a late reply returns */
    struct arpc_deadline rq_deadline; /* the wire's deadline, armed on the loop */
    arpc_request *rq_prev, *rq_next;  /* sv_awaiting */
    arpc_request_cancel_fn rq_cancel_fn;
    void *rq_cancel_arg;
    uint32_t rq_len;
    uint8_t rq_data[];
};

#define SHUTTING_DOWN "server shutting down"

/* Drops the request's references and frees it. Any thread. */
static void request_free(arpc_request *req)
{
    struct server_conn *sc = req->rq_conn;
    arpc_server *s = sc->sc_server;
    arpc_free(req);
    sconn_release(sc);
    if (atomic_fetch_sub(&s->sv_inflight, 1) == 1 && atomic_load(&s->sv_state) == SV_STOPPING)
        arpc_futex_wake_all((const uint32_t *)&s->sv_inflight); /* a stop waits out its grace */
    server_release(s);
}

/* The handler returned: free the request if its reply is already done. */
static void request_handler_done(arpc_request *req)
{
    if (atomic_fetch_and(&req->rq_flags, ~(unsigned)RQ_IN_HANDLER) & RQ_REPLY_DONE)
        request_free(req);
}

/* The reply was handed over: free the request if its handler already returned. The two
 * read-modify-writes are totally ordered, so exactly one of them frees. */
static void request_reply_done(arpc_request *req)
{
    if (!(atomic_fetch_or(&req->rq_flags, RQ_REPLY_DONE) & RQ_IN_HANDLER))
        request_free(req);
}

/* Loop thread: the request leaves its connection's table (a CANCEL can no longer find it). */
static void request_untrack(arpc_request *req)
{
    struct server_conn *sc = req->rq_conn;
    if (req->rq_tracked && sc->sc_conn.c_open)
        arpc_u64_map_take(&sc->sc_calls, req->rq_xid);
    req->rq_tracked = false;
}

/* Loop thread: the request no longer waits for a reply (its deadline is disarmed). A stop
 * empties the list on the loop, so after it nothing here runs for a request. */
static void request_unlist(arpc_request *req)
{
    if (!req->rq_awaiting)
        return;
    arpc_server *s = req->rq_conn->sc_server;
    arpc_deadline_cancel(s->sv_loop, &req->rq_deadline);
    if (req->rq_prev != NULL)
        req->rq_prev->rq_next = req->rq_next;
    else
        s->sv_awaiting = req->rq_next;
    if (req->rq_next != NULL)
        req->rq_next->rq_prev = req->rq_prev;
    req->rq_awaiting = false;
}

/* Loop thread: the server answers the caller in the handler's place with code; the handler's
 * late reply will return late_code. The request stays alive for that reply. */
static void request_answer_for_handler(arpc_request *req, int code, int late_code, const char *why)
{
    request_unlist(req);
    req->rq_late_code = late_code; /* published by the CAS (seq_cst) */
    unsigned flags = atomic_load(&req->rq_flags);
    do {
        if (flags & RQ_REPLIED)
            return; /* the handler's reply is on its way to the loop: the caller gets it */
    } while (!atomic_compare_exchange_weak(&req->rq_flags, &flags, flags | RQ_SERVER_ANSWERED));
    request_untrack(req);
    /* A numbered call keeps its cache entry "running" (and this xid among its waiters, which
     * the client ignores once answered): a retry waits for the real result. */
    sconn_send_error(req->rq_conn, req->rq_xid, code, why, strlen(why));
}

static void request_on_deadline(struct arpc_deadline *d, void *arg)
{
    (void)d;
    arpc_request *req = arg;
    /* Not started yet: when an actor takes it, it is refused ARPC_EEXPIRED ("did not run",
     * and a numbered call's entry is dropped so a retry may run it). */
    if (atomic_load(&req->rq_flags) & RQ_STARTED)
        request_answer_for_handler(req, ARPC_ETIMEDOUT, ARPC_ETIMEDOUT,
                                   "the handler did not reply by the call's deadline");
}

/* Loop thread: arms the call's deadline and lists it as waiting for a reply. */
static void request_list(arpc_server *s, arpc_request *req)
{
    req->rq_prev = NULL;
    req->rq_next = s->sv_awaiting;
    if (s->sv_awaiting != NULL)
        s->sv_awaiting->rq_prev = req;
    s->sv_awaiting = req;
    req->rq_awaiting = true;
    arpc_deadline_init(&req->rq_deadline, request_on_deadline, req);
    if (req->rq_deadline_ns != ARPC_NEVER)
        (void)arpc_deadline_arm(s->sv_loop, &req->rq_deadline, req->rq_deadline_ns); /* ENOMEM: the
                                                       * caller's own deadline still ends its wait */
}

void request_answer_unreplied(arpc_server *s)
{
    static const char why[] = "the server stopped before the handler replied";
    unsigned n = 0;
    while (s->sv_awaiting != NULL) {
        arpc_request *req = s->sv_awaiting;
        bool replied = atomic_load(&req->rq_flags) & RQ_REPLIED;
        /* A queued call's discard reply (ARPC_ESHUTDOWN, did not run) is already on its way;
         * any other call here has started: it may have run. */
        request_answer_for_handler(req, ARPC_EABANDONED, ARPC_ESHUTDOWN, why);
        n += !replied;
    }
    if (n != 0)
        arpc_log(ARPC_LOG_WARN, "server stop: %u call(s) whose handlers had not replied were answered ARPC_EABANDONED",
                 n);
}

/* Loop thread (or any thread once no loop runs): queues the reply on its connection. */
static void reply_deliver(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct reply_msg *rm = (struct reply_msg *)job;
    arpc_request *req = rm->rm_req;
    struct server_conn *sc = req->rq_conn;
    request_untrack(req);
    request_unlist(req);
    arpc_server *s = sc->sc_server;
    if (req->rq_seq != 0) {
        /* Numbered: the result goes to every request waiting for it, and is kept. */
        dedup_complete(s, sc->sc_client_id, req->rq_seq, req->rq_ack, rm, rm->rm_ran);
    } else if (atomic_load(&req->rq_flags) & RQ_SERVER_ANSWERED) {
        arpc_free(rm); /* the caller was answered already */
    } else if (rm->rm_effect == NULL || s->sv_log == NULL || !journal_send_durable(s, sc, rm)) {
        sconn_send_frame(sc, rm);
    }
    request_reply_done(req);
}

static void request_drop_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    arpc_request *req = (arpc_request *)job;
    request_untrack(req);
    request_unlist(req);
    request_reply_done(req);
}

/* Runs job on the server's loop: at once when called on its thread, else posted, never
 * waiting. ARPC_ESHUTDOWN (job not run): the server is stopped -- its loop may be destroyed
 * by now (the user's, or ours at arpc_server_destroy), so it is not even looked at -- or the
 * loop refused it. The state check and every use of the loop are counted in sv_replying,
 * which a stop waits out after it stored SV_STOPPED (a Dekker pair, seq_cst). */
static int server_loop_hand(arpc_server *s, struct arpc_loop_job *job)
{
    atomic_fetch_add(&s->sv_replying, 1);
    int rc = ARPC_ESHUTDOWN;
    bool here = false;
    if (atomic_load(&s->sv_state) != SV_STOPPED) {
        here = arpc_loop_on_thread(s->sv_loop);
        rc = here ? ARPC_OK : arpc_loop_post(s->sv_loop, job);
    }
    atomic_fetch_sub(&s->sv_replying, 1);
    if (here)
        job->j_fn(s->sv_loop, job); /* on the loop's thread, the loop outlives the call */
    return rc;
}

/* No reply will be delivered (none could be encoded): let go of the reply's holder on the
 * loop, after the request leaves its connection's table. */
static void request_drop(arpc_server *s, arpc_request *req)
{
    arpc_loop_job_init(&req->rq_job, request_drop_on_loop);
    if (server_loop_hand(s, &req->rq_job) != ARPC_OK)
        request_drop_on_loop(NULL, &req->rq_job); /* no loop runs: a stop emptied its lists */
}

/* Hands an encoded reply to the loop without ever waiting. ARPC_ESHUTDOWN: dropped (the
 * reply's holder is let go here). */
static int reply_hand_over(arpc_server *s, struct reply_msg *rm)
{
    arpc_loop_job_init(&rm->rm_job, reply_deliver);
    int rc = server_loop_hand(s, &rm->rm_job);
    if (rc != ARPC_OK) {
        arpc_request *req = rm->rm_req;
        arpc_free(rm);
        request_reply_done(req); /* no loop will deliver it; its table is gone with the loop */
    }
    return rc;
}

/* Encodes the REPLY or ERROR frame for req. NULL without memory. */
/* One allocation: the message, the frame, then the effect (if any). */
static struct reply_msg *reply_msg_new(size_t flen, const void *effect, size_t effect_len)
{
    struct reply_msg *rm = arpc_malloc(sizeof(*rm) + flen + effect_len);
    if (rm == NULL)
        return NULL;
    rm->rm_len = flen;
    rm->rm_refs = 1;
    rm->rm_effect = NULL;
    rm->rm_effect_len = effect_len;
    if (effect != NULL) {
        memcpy(rm->rm_frame + flen, effect, effect_len);
        rm->rm_effect = rm->rm_frame + flen;
    }
    return rm;
}

void reply_msg_put(struct reply_msg *rm)
{
    if (rm != NULL && --rm->rm_refs == 0)
        arpc_free(rm);
}

struct reply_msg *reply_msg_from_frame(const void *frame, size_t len)
{
    struct reply_msg *rm = reply_msg_new(len, NULL, 0);
    if (rm != NULL) {
        memcpy(rm->rm_frame, frame, len);
        rm->rm_req = NULL;
        rm->rm_ran = true;
    }
    return rm;
}

static struct reply_msg *reply_encode(const arpc_request *req, uint8_t kind, int code, const void *data,
                                      size_t len, bool ran, const void *effect, size_t effect_len)
{
    size_t flen = kind == ARPC_FRAME_REPLY ? ARPC_FRAME_HEADER_SIZE + len : arpc_frame_error_size(len);
    struct reply_msg *rm = reply_msg_new(flen, effect, effect_len);
    if (rm == NULL)
        return NULL;
    if (kind == ARPC_FRAME_REPLY) {
        arpc_frame_encode_header(rm->rm_frame, ARPC_FRAME_REPLY, req->rq_xid, (uint32_t)len);
        if (len)
            memcpy(rm->rm_frame + ARPC_FRAME_HEADER_SIZE, data, len);
    } else {
        arpc_frame_encode_error(rm->rm_frame, ARPC_FRAME_ERROR, req->rq_xid, (uint32_t)code, data,
                                (uint16_t)len);
    }
    rm->rm_req = (arpc_request *)req;
    rm->rm_ran = ran;
    return rm;
}

static int reply_with(arpc_request *req, uint8_t kind, int code, const void *data, size_t len, bool ran,
                      const void *effect, size_t effect_len)
{
    if (req == NULL)
        return ARPC_EINVAL;
    unsigned flags = atomic_fetch_or(&req->rq_flags, RQ_REPLIED);
    if (flags & RQ_REPLIED) {
        /* Only reachable while the handler still runs (otherwise req is gone): refuse. */
        arpc_log(ARPC_LOG_ERROR, "a second reply for one request of %s (call %llu) was refused",
                 req->rq_method->m_name, (unsigned long long)req->rq_xid);
        return ARPC_EINVAL;
    }
    /* The server answered the caller already: the reply still goes to the loop (a numbered
     * call's result finishes its cache entry for retries), and says what the caller got. */
    int late = flags & RQ_SERVER_ANSWERED ? req->rq_late_code : ARPC_OK;
    struct server_conn *sc = req->rq_conn;
    arpc_server *s = sc->sc_server;
    server_retain(s); /* the request may be freed before we return: finish with s first */
    int rc = ARPC_OK;
    if (req->rq_oneway) {
        request_reply_done(req);
    } else {
        if (kind == ARPC_FRAME_REPLY && len > sc->sc_client_max) {
            static const char too_large[] = "reply larger than the client accepts";
            kind = ARPC_FRAME_ERROR;
            code = ARPC_ETOOLARGE;
            data = too_large;
            len = sizeof(too_large) - 1;
            rc = ARPC_ETOOLARGE;
        }
        if (kind == ARPC_FRAME_ERROR)
            len = sconn_error_msg_cap(sc, len);
        /* The request counts as finished once the loop delivered its reply: a stop waiting
         * for calls in flight finds every reply queued when it sees the count reach zero. */
        struct reply_msg *rm = reply_encode(req, kind, code, data, len, ran, effect, effect_len);
        if (rm == NULL) {
            rc = ARPC_ENOMEM; /* the client's call ends with its deadline or its connection */
            request_drop(s, req);
        } else {
            int hrc = reply_hand_over(s, rm);
            if (hrc != ARPC_OK)
                rc = hrc;
        }
    }
    int st = atomic_load(&s->sv_state);
    server_release(s);
    if (rc == ARPC_OK && late != ARPC_OK)
        return late;
    return rc == ARPC_OK && st == SV_STOPPED ? ARPC_ESHUTDOWN : rc;
}

int arpc_reply(arpc_request *req, const void *data, size_t len)
{
    if (req != NULL && data == NULL && len != 0)
        len = 0;
    return reply_with(req, ARPC_FRAME_REPLY, ARPC_OK, data, len, true, NULL, 0);
}

int arpc_reply_durable(arpc_request *req, const void *effect, size_t effect_len, const void *data, size_t len)
{
    if (req == NULL || (effect == NULL && effect_len != 0))
        return ARPC_EINVAL;
    if (data == NULL && len != 0)
        len = 0;
    arpc_server *s = req->rq_conn->sc_server;
    if (!s->sv_has_log) {
        static atomic_bool warned;
        if (!atomic_exchange(&warned, true))
            arpc_log(ARPC_LOG_WARN, "arpc_reply_durable on a server without log_dir: effects are not logged");
        return reply_with(req, ARPC_FRAME_REPLY, ARPC_OK, data, len, true, NULL, 0);
    }
    /* An empty effect is still an effect: the call changed nothing, but it was made. */
    return reply_with(req, ARPC_FRAME_REPLY, ARPC_OK, data, len, true, effect != NULL ? effect : "", effect_len);
}

int arpc_reply_error(arpc_request *req, const char *msg)
{
    return reply_with(req, ARPC_FRAME_ERROR, ARPC_EHANDLER, msg ? msg : "", msg ? strlen(msg) : 0, true, NULL, 0);
}

const void *arpc_request_data(const arpc_request *req, size_t *len)
{
    if (len != NULL)
        *len = req->rq_len;
    return req->rq_data;
}

const char *arpc_request_method(const arpc_request *req) { return req->rq_method->m_name; }
bool arpc_request_is_oneway(const arpc_request *req) { return req->rq_oneway; }
uint64_t arpc_request_client_id(const arpc_request *req) { return req->rq_conn->sc_client_id; }
uint64_t arpc_request_seq(const arpc_request *req) { return req->rq_seq; }

int64_t arpc_request_budget_ms(const arpc_request *req) { return arpc_ms_left(req->rq_deadline_ns); }

bool arpc_request_cancelled(const arpc_request *req)
{
    return (atomic_load(&((arpc_request *)req)->rq_flags) & RQ_CANCELLED) != 0;
}

int arpc_request_on_cancel(arpc_request *req, arpc_request_cancel_fn fn, void *arg)
{
    if (req == NULL || fn == NULL)
        return ARPC_EINVAL;
    if (atomic_load(&req->rq_flags) & RQ_CANCEL_CB)
        return ARPC_EBUSY; /* one callback per request */
    req->rq_cancel_fn = fn;
    req->rq_cancel_arg = arg;
    /* Release: the loop that sees RQ_CANCEL_CB sees fn and arg. */
    if (atomic_fetch_or(&req->rq_flags, RQ_CANCEL_CB) & RQ_CANCELLED)
        fn(req, arg); /* cancelled already: the loop did not see the callback, we call it */
    return ARPC_OK;
}

void request_cancel(struct server_conn *sc, uint64_t xid)
{
    arpc_request *req = arpc_u64_map_get(&sc->sc_calls, xid);
    if (req == NULL)
        return; /* answered already, or never a call on this connection */
    if (atomic_fetch_or(&req->rq_flags, RQ_CANCELLED) & RQ_CANCEL_CB)
        req->rq_cancel_fn(req, req->rq_cancel_arg); /* alive: its entry is still in the table */
}

/* ---- running handlers ---- */

/* Answers a call that will not run, with why. */
static void request_refuse(arpc_request *req, int code, const char *why)
{
    reply_with(req, ARPC_FRAME_ERROR, code, why, strlen(why), false, NULL, 0);
}

static void request_run(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    arpc_request *req = arg;
    unsigned flags = atomic_fetch_or(&req->rq_flags, RQ_STARTED);
    if (status != ARPC_OK) /* discarded by a stopping actor before it ran */
        request_refuse(req, ARPC_ESHUTDOWN, SHUTTING_DOWN);
    else if (flags & RQ_CANCELLED)
        request_refuse(req, ARPC_ECANCELLED, "cancelled by the client before it started");
    else if (req->rq_deadline_ns != ARPC_NEVER && arpc_now_ns() >= req->rq_deadline_ns)
        request_refuse(req, ARPC_EEXPIRED, "the call's budget ran out before its handler started");
    else
        req->rq_method->m_fn(req, req->rq_method->m_ctx);
    request_handler_done(req);
}

static void request_run_job(arpc_actor *actor, struct arpc_actor_job *job, int status)
{
    request_run(actor, (arpc_request *)((char *)job - offsetof(arpc_request, rq_actor_job)), status);
}

/* The actor a queued method's call runs on: its own, or its group's (or the pool's) member
 * for the call's key, or the next one round-robin. */
static arpc_actor *request_actor(arpc_server *s, const struct arpc_method *m, const arpc_request *req)
{
    if (m->m_actor != NULL)
        return m->m_actor;
    arpc_actor_group *g = m->m_group ? m->m_group : s->sv_pool;
    if (m->m_key != NULL)
        return arpc_actor_group_pick_key(g, m->m_key(req->rq_data, req->rq_len, m->m_ctx));
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

/* Loop thread: the actor has room (or stopped): post the parked request again, and read on
 * unless it had to park once more. A connection closed meanwhile refused it already. */
static void sconn_room_on_loop(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct server_conn *sc = (struct server_conn *)((char *)job - offsetof(struct server_conn, sc_room_job));
    arpc_request *req = sc->sc_parked;
    if (req != NULL && sc->sc_conn.c_open) {
        sc->sc_parked = NULL;
        request_post(sc, req, sc->sc_parked_on); /* the same actor: a key's order is kept */
        if (sc->sc_parked == NULL)
            arpc_conn_resume_input(&sc->sc_conn);
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
    int rc = arpc_actor_post_job(actor, &req->rq_actor_job, false);
    if (rc == ARPC_EAGAIN) {
        sconn_retain(sc); /* the room waiter's references */
        server_retain(sc->sc_server);
        sc->sc_parked = req;
        sc->sc_parked_on = actor;
        arpc_actor_room_init(&sc->sc_room, sconn_on_room);
        rc = arpc_actor_on_room(actor, &sc->sc_room);
        if (rc == ARPC_OK) {
            arpc_conn_pause_input(&sc->sc_conn);
            return;
        }
        sc->sc_parked = NULL; /* the actor stopped meanwhile */
        sconn_room_release(sc);
    }
    if (rc != ARPC_OK) { /* the actor is stopped: the call did not run */
        request_refuse(req, ARPC_EREJECTED, "method's actor is stopped");
        request_handler_done(req);
    }
}

void request_refuse_parked(struct server_conn *sc)
{
    arpc_request *req = sc->sc_parked;
    if (req == NULL)
        return;
    sc->sc_parked = NULL; /* the armed room waiter finds nothing to post */
    request_refuse(req, ARPC_ESHUTDOWN, SHUTTING_DOWN);
    request_handler_done(req);
}

void request_dispatch(struct server_conn *sc, const struct arpc_method *m, const struct arpc_frame *f)
{
    arpc_server *s = sc->sc_server;
    bool oneway = f->f_kind == ARPC_FRAME_ONEWAY;
    arpc_request *req = arpc_malloc(sizeof(*req) + f->f_payload_len);
    if (req == NULL) {
        static const char no_memory[] = "server out of memory";
        if (!oneway)
            sconn_send_error(sc, f->f_xid, ARPC_EREJECTED, no_memory, sizeof(no_memory) - 1);
        return;
    }
    req->rq_conn = sc;
    req->rq_method = m;
    req->rq_xid = f->f_xid;
    /* Numbered (at-most-once) only with both a seq and a client to key it by. */
    req->rq_seq = oneway || sc->sc_client_id == 0 ? 0 : f->f_seq;
    req->rq_ack = f->f_ack;
    req->rq_deadline_ns = f->f_deadline_ms ? arpc_deadline_from_ms(f->f_deadline_ms) : ARPC_NEVER;
    atomic_init(&req->rq_flags, RQ_IN_HANDLER);
    req->rq_oneway = oneway;
    req->rq_cancel_fn = NULL;
    req->rq_cancel_arg = NULL;
    req->rq_awaiting = false;
    req->rq_late_code = ARPC_OK;
    req->rq_len = f->f_payload_len;
    if (req->rq_seq != 0 && !dedup_admit(sc, f)) {
        arpc_free(req); /* a duplicate: answered from the cache, or waiting for the original */
        return;
    }
    if (req->rq_seq == 0 && f->f_ack != 0 && sc->sc_client_id != 0)
        dedup_ack(sc, f->f_ack);
    memcpy(req->rq_data, f->f_payload, f->f_payload_len);
    /* A call may be cancelled by its xid; a duplicate xid (a client bug) is simply not. */
    req->rq_tracked = !oneway && arpc_u64_map_put(&sc->sc_calls, f->f_xid, req) == ARPC_OK;
    sconn_retain(sc);
    server_retain(s);
    atomic_fetch_add(&s->sv_inflight, 1);
    if (!oneway)
        request_list(s, req); /* before an inline handler can reply */
    if (m->m_inline) {
        request_run(NULL, req, ARPC_OK);
        return;
    }
    arpc_actor_job_init(&req->rq_actor_job, request_run_job);
    request_post(sc, req, request_actor(s, m, req));
}
