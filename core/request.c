/*
 * The request a handler sees, and the reply that leaves it.
 *
 * A request is one allocation: the object and a copy of the payload. It is finished exactly
 * once, by arpc_reply or arpc_reply_error, on any thread. The reply is encoded on that thread
 * into one allocation (struct reply_msg) that travels to the loop on the loop's job lane and
 * is then queued on the connection as it is (the output queue frees it once written).
 *
 * Two holders end a request's life: the handler's run (until the handler returns) and the
 * reply (until it is handed over); whichever lets go last frees it. So a second reply made
 * while the handler is still running finds the request alive, sees it was already answered,
 * and is refused (ARPC_EINVAL, logged) instead of freeing it twice. A reply made after the
 * handler returned and the request was answered is a use of freed memory, as with free().
 *
 * Late replies: a reply checks that the server is not stopped, and stop waits for replies
 * between that check and their hand-over (sv_replying), so once arpc_server_stop has
 * returned no reply touches the loop, which the user may then destroy.
 */
#include <string.h>

#include "async/futex.h"

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/frame.h"
#include "core/server_internal.h"

enum {
    RQ_IN_HANDLER = 1u << 0, /* holder: the handler has not returned yet */
    RQ_REPLY_DONE = 1u << 1, /* holder let go: the reply was handed over */
    RQ_REPLIED = 1u << 2,    /* marker: a reply began (a second one is refused) */
};

struct arpc_request {
    struct server_conn *rq_conn;
    const struct arpc_method *rq_method;
    uint64_t rq_xid;
    atomic_uint rq_flags;
    bool rq_oneway;
    uint32_t rq_len;
    uint8_t rq_data[];
};

/* A reply on its way to the loop; the whole allocation is then the output buffer. */
struct reply_msg {
    struct arpc_loop_job rm_job;
    struct server_conn *rm_conn;
    size_t rm_len;
    uint8_t rm_frame[];
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

/* Loop thread (or any thread once no loop runs): queues the reply on its connection. */
static void reply_deliver(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct reply_msg *rm = (struct reply_msg *)job;
    struct server_conn *sc = rm->rm_conn;
    if (sc->sc_conn.c_open) {
        if (arpc_conn_send(&sc->sc_conn, rm, rm->rm_frame, rm->rm_len) == ARPC_ENOMEM)
            arpc_conn_close(&sc->sc_conn, ARPC_ENOMEM); /* never leave a caller waiting */
    } else {
        arpc_free(rm);
    }
    sconn_release(sc);
}

/* Hands an encoded reply to the loop without ever waiting. ARPC_ESHUTDOWN: dropped. */
static int reply_hand_over(arpc_server *s, struct reply_msg *rm)
{
    if (arpc_loop_on_thread(s->sv_loop)) {
        reply_deliver(s->sv_loop, &rm->rm_job);
        return ARPC_OK;
    }
    atomic_fetch_add(&s->sv_replying, 1);
    int rc = ARPC_ESHUTDOWN;
    if (atomic_load(&s->sv_state) != SV_STOPPED) {
        arpc_loop_job_init(&rm->rm_job, reply_deliver);
        rc = arpc_loop_post(s->sv_loop, &rm->rm_job);
    }
    atomic_fetch_sub(&s->sv_replying, 1);
    if (rc != ARPC_OK) {
        sconn_release(rm->rm_conn);
        arpc_free(rm);
    }
    return rc;
}

/* Encodes the REPLY or ERROR frame for req. NULL without memory. */
static struct reply_msg *reply_encode(const arpc_request *req, uint8_t kind, int code, const void *data,
                                      size_t len)
{
    size_t flen = kind == ARPC_FRAME_REPLY ? ARPC_FRAME_HEADER_SIZE + len : arpc_frame_error_size(len);
    struct reply_msg *rm = arpc_malloc(sizeof(*rm) + flen);
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
    rm->rm_len = flen;
    rm->rm_conn = req->rq_conn;
    sconn_retain(req->rq_conn); /* the reply's, dropped on delivery */
    return rm;
}

static int reply_with(arpc_request *req, uint8_t kind, int code, const void *data, size_t len)
{
    if (req == NULL)
        return ARPC_EINVAL;
    if (atomic_fetch_or(&req->rq_flags, RQ_REPLIED) & RQ_REPLIED) {
        /* Only reachable while the handler still runs (otherwise req is gone): refuse. */
        arpc_log(ARPC_LOG_ERROR, "a second reply for one request of %s (call %llu) was refused",
                 req->rq_method->m_name, (unsigned long long)req->rq_xid);
        return ARPC_EINVAL;
    }
    struct server_conn *sc = req->rq_conn;
    arpc_server *s = sc->sc_server;
    int rc = ARPC_OK;
    if (!req->rq_oneway) {
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
        struct reply_msg *rm = reply_encode(req, kind, code, data, len);
        /* Hand the reply over before the request counts as finished: a stop waiting for
         * calls in flight must find it queued when it sees the count reach zero. */
        int hrc = rm == NULL ? ARPC_ENOMEM : reply_hand_over(s, rm);
        if (hrc != ARPC_OK)
            rc = hrc;
    }
    server_retain(s); /* letting go may drop the last server reference: finish with s first */
    request_reply_done(req);
    int st = atomic_load(&s->sv_state);
    server_release(s);
    return rc == ARPC_OK && st == SV_STOPPED ? ARPC_ESHUTDOWN : rc;
}

int arpc_reply(arpc_request *req, const void *data, size_t len)
{
    if (req != NULL && data == NULL && len != 0)
        len = 0;
    return reply_with(req, ARPC_FRAME_REPLY, ARPC_OK, data, len);
}

int arpc_reply_error(arpc_request *req, const char *msg)
{
    return reply_with(req, ARPC_FRAME_ERROR, ARPC_EHANDLER, msg ? msg : "", msg ? strlen(msg) : 0);
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

/* ---- running handlers ---- */

static void request_run(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    arpc_request *req = arg;
    if (status != ARPC_OK) /* discarded by a stopping actor before it ran */
        reply_with(req, ARPC_FRAME_ERROR, ARPC_ESHUTDOWN, SHUTTING_DOWN, strlen(SHUTTING_DOWN));
    else
        req->rq_method->m_fn(req, req->rq_method->m_ctx);
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
    atomic_init(&req->rq_flags, RQ_IN_HANDLER);
    req->rq_oneway = oneway;
    req->rq_len = f->f_payload_len;
    memcpy(req->rq_data, f->f_payload, f->f_payload_len);
    sconn_retain(sc);
    server_retain(s);
    atomic_fetch_add(&s->sv_inflight, 1);
    int rc = ARPC_OK;
    if (m->m_inline)
        request_run(NULL, req, ARPC_OK);
    else if (m->m_actor != NULL)
        rc = arpc_actor_post(m->m_actor, request_run, req);
    else
        rc = arpc_actor_group_post(m->m_group ? m->m_group : s->sv_pool, request_run, req);
    if (rc != ARPC_OK) { /* the actor is stopped: the call did not run */
        static const char stopped[] = "method's actor is stopped";
        reply_with(req, ARPC_FRAME_ERROR, ARPC_EREJECTED, stopped, sizeof(stopped) - 1);
        request_handler_done(req);
    }
}
