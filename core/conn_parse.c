/*
 * A connection's frame parser: every complete arpc frame in the read buffer goes up to the
 * owner (core/conn.h, on_frame); a malformed or oversized one is bad input, decided from its
 * header before its body is read; a large body goes to a buffer of its own (core/conn_body.c);
 * an oversized body the owner answers alone is skipped as it streams in. Loop thread only.
 */
#include "core/conn.h"

#include <stdio.h>

#include "arpc/error.h"
#include "base/log.h"
#include "core/conn_body.h"
#include "core/peer_log.h"

/* Drops what has arrived of an oversized body being skipped. True while more is to come. */
static bool conn_skip_body(struct arpc_conn *conn)
{
    size_t have = conn->c_rend - conn->c_rstart;
    size_t drop = conn->c_skip < have ? (size_t)conn->c_skip : have;
    conn->c_rstart += drop;
    conn->c_skip -= drop;
    return conn->c_skip > 0;
}

/* arpc_frame_decode said ARPC_ETOOLARGE: lets the owner answer that frame alone and skip its
 * body. Returns ARPC_OK (skipping), ARPC_EAGAIN (the header, or a request's fixed fields, have
 * not all arrived yet), or
 * ARPC_ETOOLARGE (bad input). */
static int conn_take_oversized(struct arpc_conn *conn, size_t parsed_from)
{
    struct arpc_frame f = {0};
    uint32_t body_len;
    const uint8_t *at = conn->c_rbuf + conn->c_rstart;
    size_t have = conn->c_rend - conn->c_rstart;
    if (conn->c_ops->on_oversized == NULL)
        return ARPC_ETOOLARGE;
    if (arpc_frame_peek_header(at, have, &f.f_kind, &f.f_xid, &body_len) != ARPC_OK)
        return ARPC_EAGAIN;
    if (body_len > ARPC_CONN_SKIP_MAX)
        return ARPC_ETOOLARGE; /* decided from the header alone */
    bool request = f.f_kind == ARPC_FRAME_REQUEST || f.f_kind == ARPC_FRAME_ONEWAY;
    if (request && body_len >= ARPC_REQUEST_FIXED_SIZE && arpc_frame_peek_request_fields(at, have, &f) != ARPC_OK)
        return ARPC_EAGAIN;
    if (!conn->c_ops->on_oversized(conn, &f, body_len))
        return ARPC_ETOOLARGE;
    arpc_conn_begin_skip(conn, body_len, parsed_from);
    conn->c_rstart += ARPC_FRAME_HEADER_SIZE;
    return ARPC_OK;
}

uint32_t arpc_conn_past_skip(const struct arpc_conn *conn)
{
    uint8_t kind;
    uint64_t xid;
    uint32_t body_len;
    if (conn->c_ops->on_oversized == NULL || conn->c_stranger || conn->c_rbuf == NULL ||
        conn->c_max_body >= ARPC_CONN_SKIP_MAX ||
        arpc_frame_peek_header(conn->c_rbuf + conn->c_rstart, conn->c_rend - conn->c_rstart, &kind, &xid,
                               &body_len) != ARPC_OK)
        return 0;
    bool request = kind == ARPC_FRAME_REQUEST || kind == ARPC_FRAME_ONEWAY;
    return request && body_len > ARPC_CONN_SKIP_MAX ? body_len : 0;
}

void conn_bad_input(struct arpc_conn *conn, int rc, const uint8_t *frame, size_t len)
{
    char why[160];
    uint32_t past = rc == ARPC_ETOOLARGE ? arpc_conn_past_skip(conn) : 0;
    if (past != 0)
        snprintf(why, sizeof(why), "request body of %u bytes is over the most this side skips for one call (%u bytes)",
                 past, ARPC_CONN_SKIP_MAX);
    else if (rc == ARPC_ETOOLARGE)
        snprintf(why, sizeof(why), "frame larger than this side accepts (%u bytes)", conn->c_max_body);
    else
        arpc_frame_fault_text(frame, len, why, sizeof(why));
    snprintf(conn->c_why, sizeof(conn->c_why), "%s", why); /* for the owner's on_close */
    peer_log(conn->c_loop, conn_fault_log_level(conn), "closing the connection with %s: %s (%s): %s", conn->c_peer,
             arpc_strerror(rc), arpc_errname(rc), why);
    if (conn->c_ops->on_bad_input != NULL) {
        conn->c_ops->on_bad_input(conn, rc, why);
        arpc_conn_close_after_flush(conn, rc);
    } else {
        arpc_conn_close(conn, rc);
    }
}

void conn_hand_up(struct arpc_conn *conn, const struct arpc_frame *f)
{
    /* Liveness is the connection's business (core/conn_heartbeat.c): PINGs are answered
     * here, PONGs only count as input; the owner sees every other frame, and every frame of a
     * peer it has not let in yet (c_stranger). */
    if (conn->c_stranger)
        conn->c_ops->on_frame(conn, f);
    else if (f->f_kind == ARPC_FRAME_PING && conn->c_wr_shut)
        /* A lingering close (arpc_conn_linger) half-closed, and the peer asks whether we are
         * still there (an arpc server's probe once it read up to our end): we are not. */
        arpc_conn_close(conn, conn->c_close_reason);
    else if (f->f_kind == ARPC_FRAME_PING) {
        /* A peer not reading what we send gets no more PONGs queued (ARPC_CONN_PONG_BACKLOG_MAX),
         * unless its input is held at the backlog's bound instead (a server's connection). */
        if (conn->c_backlog_limit || conn->c_out.q_bytes <= ARPC_CONN_PONG_BACKLOG_MAX)
            arpc_conn_answer_ping(conn, f);
    }
    else if (f->f_kind != ARPC_FRAME_PONG)
        conn->c_ops->on_frame(conn, f);
}

/* Parses and dispatches every complete frame. Returns the bytes the next frame needs in
 * total (at least a header), or 0 after closing the connection for bad input. */
size_t arpc_conn_parse_frames(struct arpc_conn *conn)
{
    size_t need = ARPC_FRAME_HEADER_SIZE, parsed_from = conn->c_rstart;
    while (conn->c_open && conn->c_hold == 0 && !conn->c_close_pending && !conn->c_close_after_flush) {
        if (conn->c_skip > 0 && conn_skip_body(conn))
            return ARPC_FRAME_HEADER_SIZE;
        struct arpc_frame f;
        size_t used = 0;
        int rc = arpc_frame_decode(conn->c_rbuf + conn->c_rstart, conn->c_rend - conn->c_rstart,
                                   conn->c_max_body, &f, &used, &need);
        if (rc == ARPC_ETOOLARGE) {
            rc = conn_take_oversized(conn, parsed_from);
            if (rc == ARPC_EAGAIN)
                return ARPC_FRAME_HEADER_SIZE;
            if (rc == ARPC_OK)
                continue; /* the owner answered the frame; its body is dropped next */
        }
        if (rc == ARPC_EAGAIN)
            return conn_body_begin(conn, need) ? ARPC_FRAME_HEADER_SIZE : need;
        if (rc != ARPC_OK) {
            conn_bad_input(conn, rc, conn->c_rbuf + conn->c_rstart, conn->c_rend - conn->c_rstart);
            return 0;
        }
        conn->c_rstart += used;
        if (f.f_kind == ARPC_FRAME_CANCEL && conn->c_cancels_behind > 0)
            conn->c_cancels_behind--;
        conn_hand_up(conn, &f);
        arpc_conn_flush_batch(conn);
    }
    return 0;
}
