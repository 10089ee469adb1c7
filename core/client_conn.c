/*
 * The client's connection, on the loop thread: adopting the connected socket, the HELLO
 * exchange, frames from the server (replies matched to pending calls by xid), GOAWAY, and
 * connection loss, which fails every call in flight at once.
 */
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/client_internal.h"
#include "core/frame.h"

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

static void client_on_reply(arpc_client *c, const struct arpc_frame *f)
{
    struct client_call *call = arpc_u64_map_take(&c->cl_pending, f->f_xid);
    if (call == NULL)
        return; /* timed out or cancelled already: the late reply is dropped */
    bool ok = f->f_kind == ARPC_FRAME_REPLY;
    const void *src = ok ? (const void *)f->f_payload : f->f_msg;
    size_t len = ok ? f->f_payload_len : f->f_msg_len;
    void *data = copy_bytes(src, len);
    if (data == NULL)
        call_finish(call, ARPC_ENOMEM, NULL, 0);
    else
        call_finish(call, ok ? ARPC_OK : error_code_from_wire(f->f_code), data, len);
}

/* The server takes no new calls; the ones in flight still get their replies. */
static void client_on_goaway(arpc_client *c, const struct arpc_frame *f)
{
    int expected = CL_OPEN;
    /* Only reasons that make sense for new calls; anything else reads as "shutting down". */
    int why = f->f_code == ARPC_EPROTO || f->f_code == ARPC_ETOOLARGE || f->f_code == ARPC_EREJECTED
                  ? (int)f->f_code
                  : ARPC_ESHUTDOWN;
    atomic_store(&c->cl_lost_reason, why);
    atomic_compare_exchange_strong(&c->cl_state, &expected, CL_DRAINING);
    if (f->f_msg_len && why != ARPC_ESHUTDOWN) {
        char msg[ARPC_LOG_FIELD_MAX];
        arpc_log(ARPC_LOG_WARN, "server %s going away: %s", c->cl_addr,
                 arpc_log_escape(msg, sizeof(msg), f->f_msg, f->f_msg_len));
    }
}

static void client_on_frame(struct arpc_conn *conn, const struct arpc_frame *f)
{
    arpc_client *c = conn->c_owner;
    switch (f->f_kind) {
    case ARPC_FRAME_REPLY:
    case ARPC_FRAME_ERROR:
        client_on_reply(c, f);
        return;
    case ARPC_FRAME_HELLO:
        if (f->f_max_frame != 0)
            atomic_store(&c->cl_server_max, f->f_max_frame);
        c->cl_server_flags = f->f_flags;
        arpc_future_complete(c->cl_hello, ARPC_OK, NULL, 0);
        return;
    case ARPC_FRAME_PING:
        arpc_conn_answer_ping(conn, f);
        return;
    case ARPC_FRAME_PONG:
        return;
    case ARPC_FRAME_GOAWAY:
        client_on_goaway(c, f);
        return;
    default:
        arpc_log(ARPC_LOG_WARN, "closing the connection to %s: unexpected frame kind %u", c->cl_addr, f->f_kind);
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

void client_conn_attach(arpc_loop *loop, void *arg)
{
    arpc_client *c = arg;
    int fd = c->cl_conn.c_fd; /* stashed by connect */
    if (!c->cl_owns_loop && arpc_loop_on_stop(loop, client_on_loop_stop, c) == ARPC_OK) {
        client_retain(c); /* the stop hook's */
        c->cl_hook = true;
    }
    if (arpc_conn_init(&c->cl_conn, loop, fd, c->cl_max_frame, &client_conn_ops, c, c->cl_addr) != ARPC_OK) {
        atomic_store(&c->cl_lost_reason, ARPC_ENOMEM);
        atomic_store(&c->cl_state, CL_LOST);
        arpc_future_complete(c->cl_hello, ARPC_ENOMEM, NULL, 0);
        return;
    }
    if (arpc_conn_send_hello(&c->cl_conn, c->cl_id, 0, c->cl_max_frame, 0) == ARPC_ENOMEM)
        arpc_conn_close(&c->cl_conn, ARPC_ENOMEM);
}

void client_cleanup(arpc_client *c)
{
    if (c->cl_cleaned)
        return;
    c->cl_cleaned = true;
    client_fail_all(c, ARPC_ESHUTDOWN);
    if (c->cl_conn.c_open) {
        if (c->cl_server_flags & ARPC_HELLO_DEDUP) {
            /* Goodbye: we re-send nothing from now on, so the server may drop our replies
             * now rather than keep them until we would have expired. */
            static const char bye[] = "client closing";
            arpc_conn_send_error(&c->cl_conn, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, bye, sizeof(bye) - 1);
            arpc_conn_flush_now(&c->cl_conn);
        }
        /* on_close would report ECONNLOST; nothing is pending any more, so it fails nobody. */
        arpc_conn_close(&c->cl_conn, ARPC_ESHUTDOWN);
    }
    arpc_u64_map_fini(&c->cl_pending);
    arpc_future_complete(c->cl_hello, ARPC_ESHUTDOWN, NULL, 0);
}

/* The user's loop stopped: fail what is pending, as close would. Holds a client reference
 * from attach until it runs (at the latest when the loop ends). */
void client_on_loop_stop(arpc_loop *loop, void *arg)
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
