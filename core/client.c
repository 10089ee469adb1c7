/*
 * Design notes.
 *
 * Threads: callers encode the request frame on their own thread, then hand the call to the
 * loop through arpc_loop_submit (a CK ring + one ev_async per batch). Everything else -- the
 * pending table, the deadline heap, the socket -- is touched by the loop thread only, so the
 * only shared state here is a handful of atomics (state, xid counter, pending count, refs).
 *
 * Lifetime: the client is refcounted. The user's handle is one reference; a cancel task
 * travelling to the loop holds another (a user may cancel a future while the client closes).
 * Call tasks need no reference: they are submitted before close() is called (the contract
 * forbids starting calls once close has begun), and the loop runs tasks in order, so the close
 * task runs after them.
 *
 * Each call: one future (the caller's), one struct client_call (loop-owned until the call
 * completes), one frame buffer (owned by the connection's output queue once sent).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "async/loop_internal.h"
#include "async/mpsc_ring.h"
#include "base/alloc.h"
#include "base/backoff.h"
#include "base/clock.h"
#include "core/conn.h"
#include "core/frame.h"
#include "base/u64_map.h"
#include "transport/transport.h"

enum client_state { CL_OPEN, CL_DRAINING, CL_LOST, CL_CLOSED };

struct arpc_client {
    atomic_int cl_refs;
    atomic_int cl_state;      /* enum client_state */
    atomic_int cl_lost_reason; /* why calls fail once not CL_OPEN */
    atomic_uint_fast64_t cl_next_xid;
    atomic_size_t cl_npending; /* calls started and not yet completed */
    atomic_size_t cl_live;     /* call objects not yet freed: close waits for 0 */
    atomic_uint cl_server_max; /* the server's frame limit, from its HELLO */
    arpc_loop *cl_loop;
    bool cl_owns_loop;
    uint64_t cl_id;
    int64_t cl_default_deadline_ms;
    uint32_t cl_max_frame;
    char cl_addr[ARPC_ADDR_MAX];
    /* loop thread only */
    struct arpc_conn cl_conn;
    struct arpc_u64_map cl_pending;
    arpc_future *cl_closed; /* completed by the close task */
    arpc_future *cl_hello;  /* completed when the server's HELLO arrives (or the connection fails) */
    bool cl_cleaned;        /* loop thread: pending calls failed and the connection closed */
    bool cl_hook;           /* loop thread: the stop hook is registered (and holds a reference) */
};

struct client_call {
    atomic_int cc_released; /* see call_release_shared */
    arpc_future *cc_future;
    arpc_client *cc_client;
    uint64_t cc_xid;
    struct arpc_deadline cc_deadline; /* d_when_ns holds the deadline (0: none) until armed */
    uint8_t *cc_frame; /* until handed to the connection */
};

struct cancel_task {
    arpc_client *ct_client;
    uint64_t ct_xid;
};

static void client_release(arpc_client *c)
{
    if (atomic_fetch_sub(&c->cl_refs, 1) != 1)
        return;
    arpc_future_release(c->cl_hello);
    arpc_free(c);
}

/* ---- completing calls (loop thread) ---- */

/*
 * A call whose future was cancelled is referenced by two parties at once: the loop, which
 * finishes it, and the cancelling thread, running call_on_cancel. Whichever lets go second
 * frees it (and only then does cl_live drop, which arpc_client_close waits for, so the
 * client outlives every cancel hook).
 */
static void call_release_shared(struct client_call *call)
{
    arpc_client *c = call->cc_client;
    if (atomic_exchange(&call->cc_released, 1) == 0)
        return;
    arpc_free(call);
    atomic_fetch_sub(&c->cl_live, 1);
}

static void call_finish(struct client_call *call, int status, void *data, size_t len)
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
    if (completed) {
        /* No cancel hook ran or will run: the call is ours alone. */
        arpc_free(call);
        atomic_fetch_sub(&c->cl_live, 1);
    } else {
        call_release_shared(call); /* cancelled: its hook ran or is running */
    }
}

static void call_on_deadline(struct arpc_deadline *d, void *arg)
{
    (void)d;
    struct client_call *call = arg;
    if (arpc_u64_map_take(&call->cc_client->cl_pending, call->cc_xid) != call)
        return; /* cannot happen: a completed call's deadline is cancelled */
    call_finish(call, ARPC_ETIMEDOUT, NULL, 0);
}

static void call_fail_pending(void *call, void *arg)
{
    call_finish(call, *(int *)arg, NULL, 0);
}

static void client_fail_all(arpc_client *c, int reason)
{
    arpc_u64_map_drain(&c->cl_pending, call_fail_pending, &reason);
}

/* ---- connection callbacks (loop thread) ---- */

static void *copy_bytes(const void *src, size_t len)
{
    void *p = arpc_malloc(len ? len : 1);
    if (p != NULL && len)
        memcpy(p, src, len);
    return p;
}

static int error_code_from_wire(uint32_t code)
{
    if (code == ARPC_OK || code >= ARPC_ERROR_COUNT_)
        return ARPC_EPROTO;
    return (int)code;
}

static void client_on_frame(struct arpc_conn *conn, const struct arpc_frame *f)
{
    arpc_client *c = conn->c_owner;
    struct client_call *call;
    switch (f->f_kind) {
    case ARPC_FRAME_REPLY:
    case ARPC_FRAME_ERROR: {
        call = arpc_u64_map_take(&c->cl_pending, f->f_xid);
        if (call == NULL)
            return; /* timed out or cancelled already: the late reply is dropped */
        const void *src = f->f_kind == ARPC_FRAME_REPLY ? (const void *)f->f_payload : f->f_msg;
        size_t len = f->f_kind == ARPC_FRAME_REPLY ? f->f_payload_len : f->f_msg_len;
        int status = f->f_kind == ARPC_FRAME_REPLY ? ARPC_OK : error_code_from_wire(f->f_code);
        void *data = copy_bytes(src, len);
        if (data == NULL)
            call_finish(call, ARPC_ENOMEM, NULL, 0);
        else
            call_finish(call, status, data, len);
        return;
    }
    case ARPC_FRAME_HELLO:
        if (f->f_max_frame != 0)
            atomic_store(&c->cl_server_max, f->f_max_frame);
        arpc_future_complete(c->cl_hello, ARPC_OK, NULL, 0);
        return;
    case ARPC_FRAME_PING:
        arpc_conn_answer_ping(conn, f);
        return;
    case ARPC_FRAME_PONG:
        return;
    case ARPC_FRAME_GOAWAY: {
        /* The server takes no new calls; the ones in flight still get their replies. */
        int expected = CL_OPEN;
        /* Only reasons that make sense for new calls; anything else reads as "shutting down". */
        int why = f->f_code == ARPC_EPROTO || f->f_code == ARPC_ETOOLARGE || f->f_code == ARPC_EREJECTED
                      ? (int)f->f_code
                      : ARPC_ESHUTDOWN;
        atomic_store(&c->cl_lost_reason, why);
        atomic_compare_exchange_strong(&c->cl_state, &expected, CL_DRAINING);
        if (f->f_msg_len && why != ARPC_ESHUTDOWN)
            fprintf(stderr, "arpc: server %s going away: %.*s\n", c->cl_addr, (int)f->f_msg_len, f->f_msg);
        return;
    }
    default:
        fprintf(stderr, "arpc: closing connection to %s: unexpected frame kind %u\n", c->cl_addr,
                f->f_kind);
        arpc_conn_close(conn, ARPC_EPROTO);
        return;
    }
}

static void client_on_close(struct arpc_conn *conn, int reason)
{
    (void)reason;
    arpc_client *c = conn->c_owner;
    if (atomic_load(&c->cl_state) != CL_CLOSED) {
        atomic_store(&c->cl_lost_reason, ARPC_ECONNLOST);
        atomic_store(&c->cl_state, CL_LOST);
    }
    /* Whatever was in flight may or may not have run: say so, to every caller, now. */
    client_fail_all(c, ARPC_ECONNLOST);
    arpc_future_complete(c->cl_hello, ARPC_ECONNLOST, NULL, 0);
}

static const struct arpc_conn_ops client_conn_ops = {
    .on_frame = client_on_frame,
    .on_close = client_on_close,
};

/* An encoded frame's total size, from its header (saves a length field per call). */
static size_t frame_size(const uint8_t *frame)
{
    return ARPC_FRAME_HEADER_SIZE + ((size_t)frame[4] | (size_t)frame[5] << 8 | (size_t)frame[6] << 16 |
                                     (size_t)frame[7] << 24);
}

/* ---- loop tasks ---- */

static void client_on_loop_stop(arpc_loop *loop, void *arg);

static int client_unavailable_reason(arpc_client *c)
{
    int st = atomic_load(&c->cl_state);
    if (st == CL_CLOSED)
        return ARPC_ESHUTDOWN;
    return atomic_load(&c->cl_lost_reason);
}

static void task_start_call(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct client_call *call = arg;
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
    rc = arpc_conn_send(&c->cl_conn, frame, frame, frame_size(frame));
    if (rc != ARPC_OK && arpc_u64_map_take(&c->cl_pending, call->cc_xid) == call)
        call_finish(call, rc, NULL, 0); /* never sent: say so rather than wait forever */
}

static void task_oneway(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct client_call *msg = arg; /* only cc_client and cc_frame are used */
    arpc_client *c = msg->cc_client;
    if (c->cl_conn.c_open && atomic_load(&c->cl_state) != CL_CLOSED)
        arpc_conn_send(&c->cl_conn, msg->cc_frame, msg->cc_frame, frame_size(msg->cc_frame));
    else
        arpc_free(msg->cc_frame);
    arpc_free(msg);
}

static void task_cancel(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct cancel_task *t = arg;
    arpc_client *c = t->ct_client;
    if (atomic_load(&c->cl_state) != CL_CLOSED) {
        struct client_call *call = arpc_u64_map_take(&c->cl_pending, t->ct_xid);
        if (call != NULL)
            call_finish(call, ARPC_ECANCELLED, NULL, 0); /* the future is already cancelled */
    }
    client_release(c);
    arpc_free(t);
}

static void task_attach(arpc_loop *loop, void *arg)
{
    arpc_client *c = arg;
    int fd = c->cl_conn.c_fd; /* stashed by connect */
    if (!c->cl_owns_loop) {
        if (arpc_loop_on_stop(loop, client_on_loop_stop, c) == ARPC_OK) {
            atomic_fetch_add(&c->cl_refs, 1); /* the stop hook's */
            c->cl_hook = true;
        }
    }
    if (arpc_conn_init(&c->cl_conn, loop, fd, c->cl_max_frame, &client_conn_ops, c, c->cl_addr) != ARPC_OK) {
        atomic_store(&c->cl_lost_reason, ARPC_ENOMEM);
        atomic_store(&c->cl_state, CL_LOST);
        arpc_future_complete(c->cl_hello, ARPC_ENOMEM, NULL, 0);
        return;
    }
    if (arpc_conn_send_hello(&c->cl_conn, c->cl_id, c->cl_max_frame) == ARPC_ENOMEM)
        arpc_conn_close(&c->cl_conn, ARPC_ENOMEM);
}

/* Loop thread, once: fails every pending call with ESHUTDOWN and closes the connection. */
static void client_cleanup(arpc_client *c)
{
    if (c->cl_cleaned)
        return;
    c->cl_cleaned = true;
    client_fail_all(c, ARPC_ESHUTDOWN);
    if (c->cl_conn.c_open) {
        /* on_close would report ECONNLOST; nothing is pending any more, so it fails nobody. */
        arpc_conn_close(&c->cl_conn, ARPC_ESHUTDOWN);
    }
    arpc_u64_map_fini(&c->cl_pending);
    arpc_future_complete(c->cl_hello, ARPC_ESHUTDOWN, NULL, 0);
}

static void task_close(arpc_loop *loop, void *arg)
{
    arpc_client *c = arg;
    atomic_store(&c->cl_state, CL_CLOSED);
    client_cleanup(c);
    if (c->cl_hook && arpc_loop_off_stop(loop, client_on_loop_stop, c)) {
        c->cl_hook = false;
        client_release(c); /* the hook's reference (the user's is still held by close) */
    }
    /* Hold a reference while completing: the woken closer may drop its own at once. */
    arpc_future *closed = c->cl_closed;
    arpc_future_retain(closed);
    arpc_future_complete(closed, ARPC_OK, NULL, 0);
    arpc_future_release(closed);
}

/* The loop stopped (a loop the user owns and stopped): fail what is pending, as close would.
 * Holds a client reference from attach until it runs (at the latest when the loop ends). */
static void client_on_loop_stop(arpc_loop *loop, void *arg)
{
    (void)loop;
    arpc_client *c = arg;
    if (atomic_load(&c->cl_state) != CL_CLOSED) {
        atomic_store(&c->cl_lost_reason, ARPC_ESHUTDOWN);
        atomic_store(&c->cl_state, CL_LOST);
    }
    client_cleanup(c);
    c->cl_hook = false;
    client_release(c);
}

/* Waits for f. On a loop of the user's that no thread runs, the caller drives the loop itself
 * (arpc_loop_run_until); if another caller is driving it, wait a little and try again, so the
 * loop never stalls when that caller's own call returns. */
static int client_wait(arpc_client *c, arpc_future *f)
{
    if (c->cl_owns_loop)
        return arpc_future_wait(f);
    return arpc_loop_wait(c->cl_loop, f);
}

/* As client_wait, but gives up at the absolute time until_ns with ARPC_EPENDING. */
static int client_wait_until(arpc_client *c, arpc_future *f, uint64_t until_ns)
{
    for (;;) {
        int st = arpc_future_poll(f);
        uint64_t now = arpc_now_ns();
        if (st != ARPC_EPENDING || now >= until_ns)
            return st;
        int64_t left = (int64_t)((until_ns - now) / 1000000u) + 1;
        if (c->cl_owns_loop) {
            arpc_future_wait_for(f, left); /* the loop has its own thread: just sleep */
        } else if (arpc_loop_run_until(c->cl_loop, f, left) == ARPC_EBUSY) {
            /* Someone else runs the loop; if it is a caller who may stop driving, look again soon. */
            arpc_future_wait_for(f, left < 10 ? left : 10);
        }
    }
}

/* ---- public API ---- */

static uint64_t random_client_id(void)
{
    uint64_t id = 0;
    while (id == 0) {
        if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
            id = arpc_now_ns() ^ ((uint64_t)getpid() << 32);
    }
    return id;
}

/* Why a connection failed before the server's HELLO: what its GOAWAY said, else refused. */
static int connect_failure(arpc_client *c, int hello_status)
{
    if (hello_status == ARPC_EPENDING)
        return ARPC_ETIMEDOUT;
    int why = atomic_load(&c->cl_lost_reason);
    if (atomic_load(&c->cl_state) == CL_DRAINING || why == ARPC_EPROTO || why == ARPC_ETOOLARGE)
        return why;
    return hello_status == ARPC_ECONNLOST ? ARPC_ECONNREFUSED : hello_status;
}

int arpc_client_connect(arpc_client **out, const char *addr, const arpc_client_options *opts)
{
    arpc_client_options o = {0};
    if (opts != NULL)
        o = *opts;
    if (out == NULL || addr == NULL)
        return ARPC_EINVAL;
    *out = NULL;
    const char *rest;
    const struct arpc_transport_ops *tr = arpc_transport_find(addr, &rest);
    if (tr == NULL || strlen(addr) >= ARPC_ADDR_MAX)
        return ARPC_EADDR;
    if (o.loop != NULL && arpc_loop_on_thread(o.loop))
        return ARPC_EBUSY; /* connecting waits for the loop: not from inside it */
    int64_t timeout = o.connect_timeout_ms ? o.connect_timeout_ms : 5000;
    /* One deadline covers the socket connect and the HELLO exchange. */
    uint64_t until = timeout < 0 || timeout > (int64_t)3153600000000 ? UINT64_MAX
                                                                    : arpc_now_ns() + (uint64_t)timeout * 1000000u;
    arpc_client *c = arpc_calloc(1, sizeof(*c));
    if (c == NULL)
        return ARPC_ENOMEM;
    atomic_init(&c->cl_refs, 1);
    atomic_init(&c->cl_state, CL_OPEN);
    atomic_init(&c->cl_lost_reason, ARPC_ECONNLOST);
    atomic_init(&c->cl_next_xid, 1);
    atomic_init(&c->cl_npending, 0);
    atomic_init(&c->cl_live, 0);
    c->cl_max_frame = o.max_frame ? o.max_frame : ARPC_DEFAULT_MAX_FRAME;
    atomic_init(&c->cl_server_max, c->cl_max_frame);
    c->cl_id = o.client_id ? o.client_id : random_client_id();
    c->cl_default_deadline_ms = o.default_deadline_ms;
    snprintf(c->cl_addr, sizeof(c->cl_addr), "%s", addr);
    int rc = arpc_future_create(&c->cl_closed);
    if (rc != ARPC_OK)
        goto fail_client;
    rc = arpc_future_create(&c->cl_hello);
    if (rc != ARPC_OK)
        goto fail_closed;
    rc = arpc_u64_map_init(&c->cl_pending, 1024);
    if (rc != ARPC_OK)
        goto fail_hello;
    int fd = -1;
    rc = tr->t_connect(rest, timeout, &fd);
    if (rc != ARPC_OK)
        goto fail_pending;
    c->cl_conn.c_fd = fd; /* picked up by task_attach */
    if (o.loop != NULL) {
        c->cl_loop = o.loop;
    } else {
        rc = arpc_loop_create(&c->cl_loop, NULL);
        if (rc != ARPC_OK)
            goto fail_fd;
        rc = arpc_loop_start(c->cl_loop);
        if (rc != ARPC_OK) {
            arpc_loop_destroy(c->cl_loop);
            goto fail_fd;
        }
        c->cl_owns_loop = true;
    }
    rc = arpc_loop_submit(c->cl_loop, task_attach, c);
    if (rc != ARPC_OK) {
        if (c->cl_owns_loop)
            arpc_loop_destroy(c->cl_loop);
        goto fail_fd;
    }
    /* Wait for the server's HELLO: it carries the server's frame limit, so a request the
     * server would refuse is failed here with ETOOLARGE instead of breaking the connection;
     * and a peer that is not an arpc server is reported at connect, not at the first call. */
    int hello = until == UINT64_MAX ? client_wait(c, c->cl_hello) : client_wait_until(c, c->cl_hello, until);
    if (hello != ARPC_OK) {
        rc = connect_failure(c, hello);
        arpc_client_close(c);
        return rc;
    }
    *out = c;
    return ARPC_OK;
fail_fd:
    close(fd);
fail_pending:
    arpc_u64_map_fini(&c->cl_pending);
fail_hello:
    arpc_future_release(c->cl_hello);
fail_closed:
    arpc_future_release(c->cl_closed);
fail_client:
    arpc_free(c);
    return rc;
}

void arpc_client_close(arpc_client *c)
{
    if (c == NULL)
        return;
    if (arpc_loop_on_thread(c->cl_loop)) {
        /* Closing waits for the loop: on the loop itself that would never return. */
        fprintf(stderr, "arpc: arpc_client_close called on the client's own loop thread: ignored\n");
        return;
    }
    if (arpc_loop_submit(c->cl_loop, task_close, c) == ARPC_OK) {
        client_wait(c, c->cl_closed);
        /* Wait out cancel hooks still running on other threads (they are short). */
        unsigned attempt = 0;
        while (atomic_load(&c->cl_live) != 0)
            arpc_backoff_spin(&attempt);
    } else {
        /* The user's loop is stopping or stopped: its stop hook, which holds a reference,
         * fails the pending calls and closes the connection on the loop thread. Wait until
         * no thread runs the loop any more: then the hook has run (or, for a loop nobody ran
         * to its end, will run at its destroy, still holding its reference). */
        atomic_store(&c->cl_state, CL_CLOSED);
        if (arpc_loop_wait_not_running(c->cl_loop)) {
            /* Finished: no loop thread touches the client any more. The hook failed every
             * call, unless it could not be registered: then do it here. Then wait out cancel
             * hooks still running on other threads. */
            if (!c->cl_cleaned)
                client_cleanup(c);
            unsigned attempt = 0;
            while (atomic_load(&c->cl_live) != 0)
                arpc_backoff_spin(&attempt);
        }
    }
    if (c->cl_owns_loop)
        arpc_loop_destroy(c->cl_loop); /* runs any cancel task still queued */
    arpc_future_release(c->cl_closed);
    client_release(c);
}

static void call_on_cancel(arpc_future *f, void *arg)
{
    (void)f;
    struct client_call *call = arg;
    /* Runs on the cancelling thread while the call may be anywhere: in the ring, pending, or
     * finishing on the loop (call_release_shared keeps it alive until we let go). Only the
     * xid travels to the loop, which drops the call if it is still pending. */
    arpc_client *c = call->cc_client;
    struct cancel_task *t = arpc_malloc(sizeof(*t));
    if (t != NULL) {
        t->ct_client = c;
        t->ct_xid = call->cc_xid;
        atomic_fetch_add(&c->cl_refs, 1);
        if (arpc_loop_submit(c->cl_loop, task_cancel, t) != ARPC_OK) {
            atomic_fetch_sub(&c->cl_refs, 1);
            arpc_free(t);
        }
    } /* else the call stays pending until its reply or deadline: harmless */
    call_release_shared(call);
}

static uint64_t deadline_from(arpc_client *c, int64_t deadline_ms, uint32_t *wire_ms)
{
    if (deadline_ms == 0)
        deadline_ms = c->cl_default_deadline_ms ? c->cl_default_deadline_ms : ARPC_FOREVER;
    if (deadline_ms < 0) {
        *wire_ms = 0;
        return 0;
    }
    /* Beyond ~100 years the deadline cannot matter: treat it as none (and avoid overflow). */
    if (deadline_ms > (int64_t)3153600000000) {
        *wire_ms = 0;
        return 0;
    }
    *wire_ms = deadline_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)(deadline_ms ? deadline_ms : 1);
    return arpc_now_ns() + (uint64_t)deadline_ms * 1000000ull;
}

/* Validates a request and encodes its frame. Returns ARPC_OK with the frame and its length set. */
static int encode_request(arpc_client *c, uint8_t kind, uint64_t xid, const char *method,
                          const void *req, size_t req_len, uint32_t wire_ms, uint8_t **frame,
                          size_t *len)
{
    size_t mlen = method ? strlen(method) : 0;
    if (mlen == 0 || mlen > ARPC_METHOD_MAX || (req == NULL && req_len != 0))
        return ARPC_EINVAL;
    int st = atomic_load(&c->cl_state);
    if (st != CL_OPEN)
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
    *len = arpc_frame_encode_request(buf, kind, xid, xid, 0, wire_ms, method, (uint16_t)mlen, req,
                                     (uint32_t)req_len);
    *frame = buf;
    return ARPC_OK;
}

/* Starts a call. Before it is handed to the loop, attach (if not NULL) runs with the future,
 * so that e.g. a completion queue is attached before the call can complete; if attach fails
 * the call is not sent. Returns the future (NULL only without memory for it). */
static arpc_future *call_start(arpc_client *c, const char *method, const void *req, size_t req_len,
                               int64_t deadline_ms, int (*attach)(arpc_future *f, void *arg),
                               void *attach_arg, int *attach_rc)
{
    arpc_future *f;
    if (arpc_future_create(&f) != ARPC_OK)
        return NULL;
    int rc = attach != NULL ? attach(f, attach_arg) : ARPC_OK;
    if (attach_rc != NULL)
        *attach_rc = rc;
    if (rc != ARPC_OK) {
        arpc_future_complete(f, rc, NULL, 0);
        return f;
    }
    if (c == NULL) {
        arpc_future_complete(f, ARPC_EINVAL, NULL, 0);
        return f;
    }
    uint32_t wire_ms;
    uint64_t when = deadline_from(c, deadline_ms, &wire_ms);
    uint64_t xid = atomic_fetch_add(&c->cl_next_xid, 1);
    uint8_t *frame;
    size_t len;
    rc = encode_request(c, ARPC_FRAME_REQUEST, xid, method, req, req_len, wire_ms, &frame, &len);
    if (rc != ARPC_OK) {
        arpc_future_complete(f, rc, NULL, 0);
        return f;
    }
    struct client_call *call = arpc_malloc(sizeof(*call));
    if (call == NULL) {
        arpc_free(frame);
        arpc_future_complete(f, ARPC_ENOMEM, NULL, 0);
        return f;
    }
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
    rc = arpc_loop_submit(c->cl_loop, task_start_call, call);
    if (rc != ARPC_OK) {
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
    size_t len;
    int rc = encode_request(c, ARPC_FRAME_ONEWAY, 0, method, req, req_len, 0, &frame, &len);
    if (rc != ARPC_OK)
        return rc;
    struct client_call *msg = arpc_malloc(sizeof(*msg));
    if (msg == NULL) {
        arpc_free(frame);
        return ARPC_ENOMEM;
    }
    msg->cc_client = c;
    msg->cc_frame = frame;
    rc = arpc_loop_submit(c->cl_loop, task_oneway, msg);
    if (rc != ARPC_OK) {
        arpc_free(frame);
        arpc_free(msg);
    }
    return rc;
}

size_t arpc_client_pending(const arpc_client *c) { return atomic_load(&((arpc_client *)c)->cl_npending); }

uint64_t arpc_client_id(const arpc_client *c) { return c->cl_id; }
