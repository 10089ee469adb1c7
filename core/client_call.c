/*
 * The call object: one per call, from the caller's thread to the completion of its future.
 *
 * Each call is one future (the caller's), one struct client_call (the loop's until the call
 * completes) and one frame buffer (the connection's once queued). The call reaches the loop on
 * the job lane (its cc_job), is entered in the pending table under its xid, armed on the
 * deadline heap, and queued on the connection; the reply, the deadline, a cancel, connection
 * loss or close finishes it, exactly once, on the loop thread.
 *
 * A call whose future was cancelled is referenced by two parties at once: the loop, which
 * finishes it, and the cancelling thread, running call_on_cancel. Whichever lets go second
 * frees it (and only then does cl_live drop, which arpc_client_close waits for, so the client
 * outlives every cancel hook).
 */
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "core/client_internal.h"
#include "core/frame.h"

struct cancel_job {
    struct arpc_loop_job cj_job;
    arpc_client *cj_client;
    uint64_t cj_xid;
};

/* ---- finishing (loop thread) ---- */

static void call_free(struct client_call *call)
{
    arpc_client *c = call->cc_client;
    arpc_free(call);
    atomic_fetch_sub(&c->cl_live, 1);
}

static void call_release_shared(struct client_call *call)
{
    if (atomic_exchange(&call->cc_released, 1) == 1)
        call_free(call);
}

void call_finish(struct client_call *call, int status, void *data, size_t len)
{
    arpc_client *c = call->cc_client;
    if (arpc_deadline_is_armed(&call->cc_deadline))
        arpc_deadline_cancel(c->cl_loop, &call->cc_deadline);
    arpc_free(call->cc_frame);
    call->cc_frame = NULL;
    arpc_future *f = call->cc_future;
    atomic_fetch_sub(&c->cl_npending, 1); /* before completing: a woken caller sees it */
    bool completed = arpc_future_complete(f, status, data, len);
    arpc_future_release(f);
    if (completed)
        call_free(call); /* no cancel hook ran or will run: the call is ours alone */
    else
        call_release_shared(call); /* cancelled: its hook ran or is running */
}

static void call_on_deadline(struct arpc_deadline *d, void *arg)
{
    (void)d;
    struct client_call *call = arg;
    if (arpc_u64_map_take(&call->cc_client->cl_pending, call->cc_xid) == call)
        call_finish(call, ARPC_ETIMEDOUT, NULL, 0);
}

static void call_fail_pending(void *call, void *reason)
{
    call_finish(call, *(int *)reason, NULL, 0);
}

void client_fail_all(arpc_client *c, int reason)
{
    arpc_u64_map_drain(&c->cl_pending, call_fail_pending, &reason);
}

/* ---- starting (loop thread) ---- */

static void call_send(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct client_call *call = (struct client_call *)job;
    arpc_client *c = call->cc_client;
    if (!c->cl_conn.c_open || atomic_load(&c->cl_state) == CL_CLOSED) {
        call_finish(call, client_unavailable_reason(c), NULL, 0);
        return;
    }
    if (arpc_future_poll(call->cc_future) != ARPC_EPENDING) {
        call_finish(call, ARPC_ECANCELLED, NULL, 0); /* cancelled before it was sent */
        return;
    }
    uint64_t when = call->cc_deadline.d_when_ns;
    if (when != 0) {
        if (arpc_now_ns() >= when) {
            call_finish(call, ARPC_ETIMEDOUT, NULL, 0);
            return;
        }
        if (arpc_deadline_arm(c->cl_loop, &call->cc_deadline, when) != ARPC_OK) {
            call_finish(call, ARPC_ENOMEM, NULL, 0);
            return;
        }
    }
    int rc = arpc_u64_map_put(&c->cl_pending, call->cc_xid, call);
    if (rc != ARPC_OK) {
        /* EBUSY: a 64-bit xid wrapped around onto a call still pending. */
        call_finish(call, rc == ARPC_EBUSY ? ARPC_EPROTO : rc, NULL, 0);
        return;
    }
    uint8_t *frame = call->cc_frame;
    call->cc_frame = NULL; /* the connection owns it now */
    rc = arpc_conn_send(&c->cl_conn, frame, frame, arpc_frame_total_size(frame));
    if (rc != ARPC_OK && arpc_u64_map_take(&c->cl_pending, call->cc_xid) == call)
        call_finish(call, rc, NULL, 0); /* never sent: say so rather than wait forever */
}

static void oneway_send(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct client_call *msg = (struct client_call *)job; /* only cc_client and cc_frame are used */
    arpc_client *c = msg->cc_client;
    if (c->cl_conn.c_open && atomic_load(&c->cl_state) != CL_CLOSED)
        arpc_conn_send(&c->cl_conn, msg->cc_frame, msg->cc_frame, arpc_frame_total_size(msg->cc_frame));
    else
        arpc_free(msg->cc_frame);
    arpc_free(msg);
}

static void cancel_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct cancel_job *cj = (struct cancel_job *)job;
    arpc_client *c = cj->cj_client;
    if (atomic_load(&c->cl_state) != CL_CLOSED) {
        struct client_call *call = arpc_u64_map_take(&c->cl_pending, cj->cj_xid);
        if (call != NULL)
            call_finish(call, ARPC_ECANCELLED, NULL, 0); /* the future is already cancelled */
    }
    client_release(c);
    arpc_free(cj);
}

/* Runs on the cancelling thread while the call may be anywhere: on the lane, pending, or
 * finishing on the loop (call_release_shared keeps it alive until we let go). Only the xid
 * travels to the loop, which drops the call if it is still pending. */
static void call_on_cancel(arpc_future *f, void *arg)
{
    (void)f;
    struct client_call *call = arg;
    arpc_client *c = call->cc_client;
    struct cancel_job *cj = arpc_malloc(sizeof(*cj));
    if (cj != NULL) {
        arpc_loop_job_init(&cj->cj_job, cancel_run);
        cj->cj_client = c;
        cj->cj_xid = call->cc_xid;
        client_retain(c);
        if (arpc_loop_post(c->cl_loop, &cj->cj_job) != ARPC_OK) {
            client_release(c);
            arpc_free(cj);
        }
    } /* else the call stays pending until its reply or deadline: harmless */
    call_release_shared(call);
}

/* ---- the caller's side ---- */

/* The absolute deadline of a call (0: none) and the budget to put on the wire. */
static uint64_t call_deadline(arpc_client *c, int64_t deadline_ms, uint32_t *wire_ms)
{
    if (deadline_ms == 0)
        deadline_ms = c->cl_default_deadline_ms ? c->cl_default_deadline_ms : ARPC_FOREVER;
    uint64_t when = arpc_deadline_from_ms(deadline_ms); /* saturates: huge means none */
    if (when == ARPC_NEVER) {
        *wire_ms = 0;
        return 0;
    }
    *wire_ms = deadline_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)(deadline_ms ? deadline_ms : 1);
    return when;
}

/* Validates a request and encodes its frame. Returns ARPC_OK with *frame set. */
static int encode_request(arpc_client *c, uint8_t kind, uint64_t xid, const char *method, const void *req,
                          size_t req_len, uint32_t wire_ms, uint8_t **frame)
{
    size_t mlen = method ? strlen(method) : 0;
    if (mlen == 0 || mlen > ARPC_METHOD_MAX || (req == NULL && req_len != 0))
        return ARPC_EINVAL;
    if (atomic_load(&c->cl_state) != CL_OPEN)
        return client_unavailable_reason(c);
    uint32_t limit = atomic_load(&c->cl_server_max);
    if (c->cl_max_frame < limit)
        limit = c->cl_max_frame;
    if (req_len > limit) /* checked first: req_len + header must not wrap */
        return ARPC_ETOOLARGE;
    size_t total = arpc_frame_request_size(mlen, req_len);
    if (total - ARPC_FRAME_HEADER_SIZE > limit)
        return ARPC_ETOOLARGE;
    uint8_t *buf = arpc_malloc(total);
    if (buf == NULL)
        return ARPC_ENOMEM;
    /* seq = xid: unique per call for this client; ack 0 = "nothing acknowledged" until the
     * at-most-once reply cache lands (always safe: the server only keeps entries longer). */
    arpc_frame_encode_request(buf, kind, xid, xid, 0, wire_ms, method, (uint16_t)mlen, req, (uint32_t)req_len);
    *frame = buf;
    return ARPC_OK;
}

/* Starts a call. Before it is handed to the loop, attach (if not NULL) runs with the future,
 * so that e.g. a completion queue is attached before the call can complete; if attach fails
 * the call is not sent. Returns the future (NULL only without memory for it). */
static arpc_future *call_start(arpc_client *c, const char *method, const void *req, size_t req_len,
                               int64_t deadline_ms, int (*attach)(arpc_future *f, void *arg), void *attach_arg,
                               int *attach_rc)
{
    arpc_future *f;
    if (arpc_future_create(&f) != ARPC_OK)
        return NULL;
    int rc = attach != NULL ? attach(f, attach_arg) : ARPC_OK;
    if (attach_rc != NULL)
        *attach_rc = rc;
    if (rc == ARPC_OK && c == NULL)
        rc = ARPC_EINVAL;
    uint32_t wire_ms = 0;
    uint64_t when = 0, xid = 0;
    uint8_t *frame = NULL;
    if (rc == ARPC_OK) {
        when = call_deadline(c, deadline_ms, &wire_ms);
        xid = atomic_fetch_add(&c->cl_next_xid, 1);
        rc = encode_request(c, ARPC_FRAME_REQUEST, xid, method, req, req_len, wire_ms, &frame);
    }
    struct client_call *call = NULL;
    if (rc == ARPC_OK && (call = arpc_malloc(sizeof(*call))) == NULL) {
        arpc_free(frame);
        rc = ARPC_ENOMEM;
    }
    if (rc != ARPC_OK) {
        arpc_future_complete(f, rc, NULL, 0); /* every outcome arrives through the future */
        return f;
    }
    arpc_loop_job_init(&call->cc_job, call_send);
    atomic_init(&call->cc_released, 0);
    call->cc_future = f;
    call->cc_client = c;
    call->cc_xid = xid;
    call->cc_frame = frame;
    arpc_deadline_init(&call->cc_deadline, call_on_deadline, call);
    call->cc_deadline.d_when_ns = when;
    arpc_future_retain(f); /* the call's reference, dropped by call_finish */
    arpc_future_on_cancel(f, call_on_cancel, call);
    atomic_fetch_add(&c->cl_npending, 1);
    atomic_fetch_add(&c->cl_live, 1);
    if (arpc_loop_post(c->cl_loop, &call->cc_job) != ARPC_OK) {
        atomic_fetch_sub(&c->cl_npending, 1);
        atomic_fetch_sub(&c->cl_live, 1);
        arpc_free(frame);
        arpc_free(call);
        arpc_future_complete(f, ARPC_ESHUTDOWN, NULL, 0);
        arpc_future_release(f);
    }
    return f;
}

arpc_future *arpc_call_async(arpc_client *c, const char *method, const void *req, size_t req_len,
                             int64_t deadline_ms)
{
    return call_start(c, method, req, req_len, deadline_ms, NULL, NULL, NULL);
}

/* Waits for f: sleeps if the client's own loop thread delivers it, otherwise drives (or waits
 * for whoever drives) the loop (arpc_loop_wait). */
static int client_wait(arpc_client *c, arpc_future *f)
{
    return c->cl_owns_loop ? arpc_future_wait(f) : arpc_loop_wait(c->cl_loop, f);
}

int arpc_call(arpc_client *c, const char *method, const void *req, size_t req_len, void **reply,
              size_t *reply_len, int64_t deadline_ms)
{
    if (reply != NULL)
        *reply = NULL;
    if (reply_len != NULL)
        *reply_len = 0;
    if (c != NULL && arpc_loop_on_thread(c->cl_loop))
        return ARPC_EBUSY; /* blocking on the loop that must deliver the reply */
    arpc_future *f = arpc_call_async(c, method, req, req_len, deadline_ms);
    if (f == NULL)
        return ARPC_ENOMEM;
    int status = c != NULL ? client_wait(c, f) : arpc_future_wait(f);
    if (reply != NULL) {
        size_t len = 0;
        *reply = arpc_future_take(f, &len);
        if (reply_len != NULL)
            *reply_len = len;
    }
    arpc_future_release(f);
    return status;
}

struct go_attach {
    arpc_cq *ga_cq;
    void *ga_tag;
};

static int go_attach(arpc_future *f, void *arg)
{
    struct go_attach *ga = arg;
    return arpc_cq_attach(ga->ga_cq, f, ga->ga_tag);
}

int arpc_go(arpc_client *c, const char *method, const void *req, size_t req_len, int64_t deadline_ms,
            arpc_cq *cq, void *tag)
{
    if (cq == NULL)
        return ARPC_EINVAL;
    struct go_attach ga = {cq, tag};
    int attach_rc = ARPC_ENOMEM;
    /* Attached before the call is sent: if attaching fails, nothing runs on the server. */
    arpc_future *f = call_start(c, method, req, req_len, deadline_ms, go_attach, &ga, &attach_rc);
    if (f == NULL)
        return ARPC_ENOMEM;
    arpc_future_release(f);
    return attach_rc;
}

int arpc_notify(arpc_client *c, const char *method, const void *req, size_t req_len)
{
    if (c == NULL)
        return ARPC_EINVAL;
    uint8_t *frame;
    int rc = encode_request(c, ARPC_FRAME_ONEWAY, 0, method, req, req_len, 0, &frame);
    if (rc != ARPC_OK)
        return rc;
    struct client_call *msg = arpc_malloc(sizeof(*msg));
    if (msg == NULL) {
        arpc_free(frame);
        return ARPC_ENOMEM;
    }
    arpc_loop_job_init(&msg->cc_job, oneway_send);
    msg->cc_client = c;
    msg->cc_frame = frame;
    rc = arpc_loop_post(c->cl_loop, &msg->cc_job);
    if (rc != ARPC_OK) {
        arpc_free(frame);
        arpc_free(msg);
    }
    return rc;
}
