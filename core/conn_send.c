/*
 * Frames queued for the loop to write (core/conn.c flushes them before the loop sleeps, in
 * one sendmsg), and the small frames the connection makes itself (HELLO, PONG, ERROR). A
 * queue over ARPC_CONN_BACKLOG_HIGH or the bytes bound holds the connection's input: a peer
 * that does not read what it is sent gets no more work taken from it.
 */
#include "core/conn.h"

#include <string.h>

#include "arpc/error.h"
#include "async/loop_internal.h"
#include "base/alloc.h"
#include "core/conn_bytes.h"
#include "core/stats.h"

/* Queues a frame at the back (or, for the rest of one another thread began, at the front),
 * with head[0..head_len) before it (copied; 0: none). */
static int conn_queue(struct arpc_conn *conn, const uint8_t *head, size_t head_len, void *base, uint8_t *data,
                      size_t len, arpc_outq_release_fn release, bool front)
{
    /* Over the hard cap the connection is closing: a frame more is refused (the rest of one
     * another thread began is not: the queue must stay whole while it lasts). */
    bool capped = !front && (conn->c_output_capped || conn_output_over_cap(conn));
    int rc = !conn->c_open || conn->c_wr_shut ? ARPC_ECONNLOST /* (nothing follows a half-close) */
             : capped         ? ARPC_EOVERLOADED
             : head_len != 0 ? arpc_outq_push_headed(&conn->c_out, head, head_len, base, data, len, release, front)
             : front         ? arpc_outq_push_front_shared(&conn->c_out, base, data, len, release)
                             : arpc_outq_push_shared(&conn->c_out, base, data, len, release);
    if (rc != ARPC_OK) {
        if (release != NULL)
            release(base);
        else
            arpc_free(base);
        if (rc == ARPC_EOVERLOADED) {
            conn->c_output_capped = true;
            if (!ev_is_active(&conn->c_flush)) { /* (its run closes: conn_flush.c) */
                ev_prepare_start(conn->c_ev, &conn->c_flush);
                arpc_loop_prepare_due(conn->c_loop);
            }
        }
        return rc;
    }
    len += head_len;
    if (conn->c_stats != NULL)
        arpc_stat_add(&conn->c_stats->io_queued, len);
    if (conn->c_out.q_bytes == len) { /* it was empty: the write timeout's clock starts */
        conn->c_last_tx = arpc_loop_now(conn->c_loop);
        conn->c_tx_mark_unset = true; /* (no look at the kernel's queue on this path) */
    }
    /* The loop owns the socket from its first queued frame until its queue is empty, so a
     * frame it queued (a HELLO, an answer) goes out before any another thread writes later
     * (core/conn_write.h). Taken, it gets it back from the writer's job. */
    (void)arpc_conn_writer_take(conn);
    if (!ev_is_active(&conn->c_flush)) {
        ev_prepare_start(conn->c_ev, &conn->c_flush);
        arpc_loop_prepare_due(conn->c_loop);
    }
    /* The peer is not reading what we send: stop taking more work from it. */
    if (conn->c_backlog_limit && conn->c_out.q_bytes > ARPC_CONN_BACKLOG_HIGH)
        conn_hold_own(conn, ARPC_CONN_HOLD_BACKLOG);
    if (conn_bytes_over(conn))
        conn_hold_own(conn, ARPC_CONN_HOLD_BYTES);
    return ARPC_OK;
}

int arpc_conn_send_shared(struct arpc_conn *conn, void *base, uint8_t *data, size_t len,
                          arpc_outq_release_fn release)
{
    return conn_queue(conn, NULL, 0, base, data, len, release, false);
}

int arpc_conn_send_headed(struct arpc_conn *conn, const uint8_t *head, size_t head_len, void *base, uint8_t *data,
                          size_t len, arpc_outq_release_fn release)
{
    return conn_queue(conn, head, head_len, base, data, len, release, false);
}

int arpc_conn_send_rest_headed(struct arpc_conn *conn, const uint8_t *head, size_t head_len, void *base,
                               uint8_t *data, size_t len, arpc_outq_release_fn release)
{
    bool open = conn->c_open;
    int rc = conn_queue(conn, head, head_len, base, data, len, release, true);
    if (rc == ARPC_ENOMEM && open)
        arpc_conn_close(conn, ARPC_ENOMEM); /* the peer would wait for the frame's end for ever */
    else if (rc == ARPC_OK)
        /* Only the loop changes a word holding CW_HANDOFF (writers' CAS from 0 fail), and it
         * is not closed (c_open): the loop owns the socket until its queue is empty. */
        atomic_store(&conn->c_writer.w_state, CW_LOOP);
    return rc;
}

int arpc_conn_send_rest(struct arpc_conn *conn, void *base, uint8_t *data, size_t len,
                        arpc_outq_release_fn release)
{
    return arpc_conn_send_rest_headed(conn, NULL, 0, base, data, len, release);
}

bool arpc_conn_withdraw(struct arpc_conn *conn, const void *base)
{
    if (!conn->c_open || arpc_outq_frames(&conn->c_out) < 2)
        return false; /* (the first frame is never taken out) */
    const struct arpc_stream_ops *ops = conn->c_stream->s_ops;
    size_t owed = ops->s_write_owed != NULL ? ops->s_write_owed(conn->c_stream) : 0;
    size_t taken;
    if (!arpc_outq_withdraw(&conn->c_out, base, owed, ARPC_CONN_WITHDRAW_LOOK, &taken))
        return false;
    if (conn->c_stats != NULL)
        arpc_stat_add(&conn->c_stats->io_queued, -(uint64_t)taken);
    return true;
}

int arpc_conn_send(struct arpc_conn *conn, void *base, uint8_t *data, size_t len)
{
    return arpc_conn_send_shared(conn, base, data, len, NULL);
}

int arpc_conn_send_hello(struct arpc_conn *conn, uint64_t id, uint32_t flags, uint32_t max_frame, uint32_t expiry_s)
{
    uint8_t *buf = arpc_malloc(ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT);
    if (buf == NULL)
        return ARPC_ENOMEM;
    size_t n = arpc_frame_encode_hello(buf, id, flags, max_frame, expiry_s);
    return arpc_conn_send(conn, buf, buf, n);
}

int arpc_conn_answer_ping(struct arpc_conn *conn, const struct arpc_frame *ping)
{
    size_t len = ARPC_FRAME_HEADER_SIZE + ping->f_payload_len;
    uint8_t *buf = arpc_malloc(len);
    if (buf == NULL)
        return ARPC_ENOMEM;
    arpc_frame_encode_header(buf, ARPC_FRAME_PONG, ping->f_xid, ping->f_payload_len);
    if (ping->f_payload_len)
        memcpy(buf + ARPC_FRAME_HEADER_SIZE, ping->f_payload, ping->f_payload_len);
    return arpc_conn_send(conn, buf, buf, len);
}

int arpc_conn_send_error(struct arpc_conn *conn, uint8_t kind, uint64_t xid, int code, uint16_t flags,
                         const char *msg, uint16_t msg_len)
{
    size_t len = arpc_frame_error_size(msg_len);
    uint8_t *buf = arpc_malloc(len);
    if (buf == NULL)
        return ARPC_ENOMEM;
    arpc_frame_encode_error(buf, kind, xid, (uint32_t)code, flags, msg, msg_len);
    return arpc_conn_send(conn, buf, buf, len);
}
