/*
 * Design notes.
 *
 * Batching: sends never write directly. They queue and start the ev_prepare watcher, which
 * libev runs once per loop iteration just before it blocks; by then every job drained from
 * the loop's lanes in this iteration has queued its frame, so one sendmsg carries them all.
 * This costs no latency: prepare runs in the same iteration, before the poll.
 *
 * Reading: up to CONN_READS_PER_READY read()s per readiness (a socket that keeps filling the
 * buffer is read again, but not for ever: other connections get their turn), into a buffer
 * that starts at 64 KiB and doubles, for a frame whose header says it is larger, only as the
 * bytes actually arrive (a peer must send N bytes to make us hold N), and shrinks back once a
 * large frame has passed. Frames are parsed in place; the remainder is moved to the front only
 * when the buffer's tail is short. A large body (ARPC_CONN_BODY_MIN or more) leaves that path
 * once its header is in: it is read into a buffer of its own (core/conn_body.c), so the read
 * buffer neither grows for it nor copies it around.
 */
#include "core/conn.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/error.h"
#include "async/loop_internal.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/conn_body.h"

#define CONN_RBUF_INITIAL (64 * 1024)
#define CONN_READS_PER_READY 4

static void conn_do_close(struct arpc_conn *conn, int reason)
{
    if (!conn->c_open)
        return;
    conn->c_open = false;
    ev_io_stop(conn->c_ev, &conn->c_rio);
    ev_io_stop(conn->c_ev, &conn->c_wio);
    ev_prepare_stop(conn->c_ev, &conn->c_flush);
    ev_timer_stop(conn->c_ev, &conn->c_hb);
    close(conn->c_fd);
    conn->c_fd = -1;
    arpc_outq_fini(&conn->c_out);
    arpc_free(conn->c_rbuf);
    conn->c_rbuf = NULL;
    conn_body_fini(conn);
    conn->c_ops->on_close(conn, reason);
}

void arpc_conn_close(struct arpc_conn *conn, int reason)
{
    if (!conn->c_open)
        return;
    if (conn->c_dispatching) {
        if (!conn->c_close_pending) {
            conn->c_close_pending = true;
            conn->c_close_reason = reason;
        }
        return;
    }
    conn_do_close(conn, reason);
}

/* Writes what the socket takes. Returns true when the connection was closed (its memory may
 * be gone: the owner's on_close ran), so the caller must not touch it. */
static bool conn_flush(struct arpc_conn *conn)
{
    int rc = arpc_outq_flush(&conn->c_out, conn->c_fd);
    if (rc == ARPC_ECONNLOST) {
        arpc_conn_close(conn, ARPC_ECONNLOST);
        return true;
    }
    if (rc == ARPC_EAGAIN) {
        ev_io_start(conn->c_ev, &conn->c_wio);
        return false;
    }
    ev_io_stop(conn->c_ev, &conn->c_wio);
    if (conn->c_close_after_flush) {
        arpc_conn_close(conn, conn->c_close_reason);
        return true;
    }
    return false;
}

void arpc_conn_limit_backlog(struct arpc_conn *conn) { conn->c_backlog_limit = true; }

/* A frame half in while we did not read gets the whole frame timeout again from now: the
 * wait was ours, not the peer's. */
static void conn_restart_frame_clock(struct arpc_conn *conn)
{
    if (conn->c_frame_since != 0)
        conn->c_frame_since = ev_now(conn->c_ev);
}

/* After output drained: resume reading once the backlog is small again. */
static void conn_check_resume(struct arpc_conn *conn)
{
    if (conn->c_read_paused && conn->c_open && !conn->c_close_after_flush &&
        conn->c_out.q_bytes < ARPC_CONN_BACKLOG_LOW) {
        conn->c_read_paused = false;
        conn_restart_frame_clock(conn);
        if (!conn->c_held)
            ev_io_start(conn->c_ev, &conn->c_rio);
    }
}

void arpc_conn_flush_now(struct arpc_conn *conn)
{
    if (conn->c_open && !arpc_outq_empty(&conn->c_out))
        conn_flush(conn);
}

static void conn_on_prepare(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)revents;
    struct arpc_conn *conn = w->data;
    ev_prepare_stop(ev, w);
    /* If the write watcher is active the socket is full: it will flush when writable. */
    if (!ev_is_active(&conn->c_wio) && !conn_flush(conn))
        conn_check_resume(conn);
}

static void conn_on_writable(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    struct arpc_conn *conn = w->data;
    if (!conn_flush(conn))
        conn_check_resume(conn);
}

int arpc_conn_send_shared(struct arpc_conn *conn, void *base, uint8_t *data, size_t len,
                          arpc_outq_release_fn release)
{
    int rc = !conn->c_open ? ARPC_ECONNLOST : arpc_outq_push_shared(&conn->c_out, base, data, len, release);
    if (rc != ARPC_OK) {
        if (release != NULL)
            release(base);
        else
            arpc_free(base);
        return rc;
    }
    if (!ev_is_active(&conn->c_flush))
        ev_prepare_start(conn->c_ev, &conn->c_flush);
    if (conn->c_backlog_limit && !conn->c_read_paused && conn->c_out.q_bytes > ARPC_CONN_BACKLOG_HIGH) {
        /* The peer is not reading what we send: stop taking more work from it. */
        conn->c_read_paused = true;
        ev_io_stop(conn->c_ev, &conn->c_rio);
    }
    return ARPC_OK;
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

int arpc_conn_send_error(struct arpc_conn *conn, uint8_t kind, uint64_t xid, int code, const char *msg,
                         uint16_t msg_len)
{
    size_t len = arpc_frame_error_size(msg_len);
    uint8_t *buf = arpc_malloc(len);
    if (buf == NULL)
        return ARPC_ENOMEM;
    arpc_frame_encode_error(buf, kind, xid, (uint32_t)code, msg, msg_len);
    return arpc_conn_send(conn, buf, buf, len);
}

void arpc_conn_close_after_flush(struct arpc_conn *conn, int reason)
{
    if (!conn->c_open)
        return;
    /* Nothing more is read: bytes already buffered are dropped with the connection. */
    ev_io_stop(conn->c_ev, &conn->c_rio);
    conn->c_rstart = conn->c_rend = 0;
    if (arpc_outq_empty(&conn->c_out)) {
        arpc_conn_close(conn, reason);
        return;
    }
    conn->c_close_after_flush = true;
    conn->c_close_reason = reason;
}

/* Makes room for at least `want` unparsed bytes plus some read space. */
static int conn_reserve(struct arpc_conn *conn, size_t want)
{
    size_t unparsed = conn->c_rend - conn->c_rstart;
    if (conn->c_rstart > 0 && (conn->c_rcap - conn->c_rend < 4096 || conn->c_rcap - conn->c_rstart < want)) {
        memmove(conn->c_rbuf, conn->c_rbuf + conn->c_rstart, unparsed);
        conn->c_rstart = 0;
        conn->c_rend = unparsed;
    }
    if (want <= conn->c_rcap && conn->c_rcap - conn->c_rend > 0)
        return ARPC_OK;
    if (conn->c_rcap - conn->c_rend > 0 && conn->c_rend - conn->c_rstart < conn->c_rcap / 2)
        return ARPC_OK; /* grow only once the bytes have arrived, not on a header's word */
    /* At most double per step: a peer must send N bytes to make us hold N bytes. */
    size_t cap = conn->c_rcap * 2;
    uint8_t *nb = arpc_realloc(conn->c_rbuf, cap);
    if (nb == NULL)
        return ARPC_ENOMEM;
    conn->c_rbuf = nb;
    conn->c_rcap = cap;
    return ARPC_OK;
}

/* After a parse: when did the bytes left unparsed (the start of the next frame) begin to
 * arrive? If a frame was completed in this read, its successor began in this read too; an
 * oversized frame being skipped is not complete (a peer dribbling its body is still slow).
 * Only a timestamp: the owner's coarse sweep compares it (no timer per connection). */
static void conn_track_partial(struct arpc_conn *conn, bool consumed)
{
    if (conn->c_rstart == conn->c_rend && conn->c_skip == 0 && conn->c_body == NULL)
        conn->c_frame_since = 0;
    else if (conn->c_frame_since == 0 || (consumed && conn->c_skip == 0))
        conn->c_frame_since = ev_now(conn->c_ev);
}

double arpc_conn_frame_age(const struct arpc_conn *conn, ev_tstamp now)
{
    /* Not while we are the ones not reading (the backlog limit, or the owner's hold). */
    if (!conn->c_open || conn->c_read_paused || conn->c_held || conn->c_frame_since == 0)
        return 0;
    return now - conn->c_frame_since;
}

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
 * body. Returns ARPC_OK (skipping), ARPC_EAGAIN (the header's xid has not arrived yet), or
 * ARPC_ETOOLARGE (bad input). */
static int conn_take_oversized(struct arpc_conn *conn)
{
    uint8_t kind;
    uint64_t xid;
    uint32_t body_len;
    if (conn->c_ops->on_oversized == NULL)
        return ARPC_ETOOLARGE;
    if (arpc_frame_peek_header(conn->c_rbuf + conn->c_rstart, conn->c_rend - conn->c_rstart, &kind, &xid,
                               &body_len) != ARPC_OK)
        return ARPC_EAGAIN;
    if (body_len > ARPC_CONN_SKIP_MAX || !conn->c_ops->on_oversized(conn, kind, xid, body_len))
        return ARPC_ETOOLARGE;
    conn->c_rstart += ARPC_FRAME_HEADER_SIZE;
    conn->c_skip = body_len;
    return ARPC_OK;
}

void conn_bad_input(struct arpc_conn *conn, int rc)
{
    arpc_log(ARPC_LOG_WARN, "closing the connection with %s: %s (%s)", conn->c_peer, arpc_strerror(rc),
             arpc_errname(rc));
    if (conn->c_ops->on_bad_input != NULL) {
        conn->c_ops->on_bad_input(conn, rc);
        arpc_conn_close_after_flush(conn, rc);
    } else {
        arpc_conn_close(conn, rc);
    }
}

void conn_hand_up(struct arpc_conn *conn, const struct arpc_frame *f)
{
    /* Liveness is the connection's business (core/conn_heartbeat.c): PINGs are answered
     * here, PONGs only count as input; the owner sees every other frame. */
    if (f->f_kind == ARPC_FRAME_PING)
        arpc_conn_answer_ping(conn, f);
    else if (f->f_kind != ARPC_FRAME_PONG)
        conn->c_ops->on_frame(conn, f);
}

/* Parses and dispatches every complete frame. Returns the bytes the next frame needs in
 * total (at least a header), or 0 after closing the connection for bad input. */
static size_t conn_parse(struct arpc_conn *conn)
{
    size_t need = ARPC_FRAME_HEADER_SIZE;
    while (conn->c_open && !conn->c_held && !conn->c_close_pending && !conn->c_close_after_flush) {
        if (conn->c_skip > 0 && conn_skip_body(conn))
            return ARPC_FRAME_HEADER_SIZE;
        struct arpc_frame f;
        size_t used = 0;
        int rc = arpc_frame_decode(conn->c_rbuf + conn->c_rstart, conn->c_rend - conn->c_rstart,
                                   conn->c_max_body, &f, &used, &need);
        if (rc == ARPC_ETOOLARGE) {
            rc = conn_take_oversized(conn);
            if (rc == ARPC_EAGAIN)
                return ARPC_FRAME_HEADER_SIZE;
            if (rc == ARPC_OK)
                continue; /* the owner answered the frame; its body is dropped next */
        }
        if (rc == ARPC_EAGAIN)
            return conn_body_begin(conn, need) ? ARPC_FRAME_HEADER_SIZE : need;
        if (rc != ARPC_OK) {
            conn_bad_input(conn, rc);
            return 0;
        }
        conn->c_rstart += used;
        conn_hand_up(conn, &f);
    }
    return 0;
}

/* Where the next read goes: a large body's own buffer, or the read buffer's free tail. */
static int conn_read_room(struct arpc_conn *conn, size_t need, uint8_t **dst, size_t *room)
{
    if (conn->c_body != NULL)
        return conn_body_room(conn, dst, room);
    int rc = conn_reserve(conn, need);
    *dst = conn->c_rbuf + conn->c_rend;
    *room = conn->c_rcap - conn->c_rend;
    return rc;
}

static void conn_on_readable(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    struct arpc_conn *conn = w->data;
    size_t need = ARPC_FRAME_HEADER_SIZE;
    conn->c_dispatching = true;
    for (int round = 0; round < CONN_READS_PER_READY && conn->c_open && !conn->c_close_pending && !conn->c_close_after_flush;
         round++) {
        uint8_t *dst;
        size_t room;
        if (conn_read_room(conn, need, &dst, &room) != ARPC_OK) {
            arpc_log(ARPC_LOG_WARN, "closing the connection with %s: out of memory for a %zu-byte frame",
                     conn->c_peer, conn->c_body != NULL ? ARPC_FRAME_HEADER_SIZE + (size_t)conn->c_body_len : need);
            arpc_conn_close(conn, ARPC_ENOMEM);
            break;
        }
        ssize_t n = read(conn->c_fd, dst, room);
        if (n == 0) {
            arpc_conn_close(conn, ARPC_ECONNLOST);
            break;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                arpc_conn_close(conn, ARPC_ECONNLOST);
            break;
        }
        conn->c_last_rx = ev_now(conn->c_ev); /* a sign of life, for the heartbeat */
        conn->c_hb_sent = 0;
        size_t parsed_from = conn->c_rstart;
        bool body_done = false;
        if (conn->c_body != NULL) {
            conn_body_advance(conn, (size_t)n); /* hands its frame up once whole */
            body_done = conn->c_body == NULL;
        } else {
            conn->c_rend += (size_t)n;
        }
        need = conn_parse(conn);
        /* (A large body moved out of the read buffer counts as consumed: its clock restarts
         * once its header is in.) */
        conn_track_partial(conn, body_done || conn->c_rstart != parsed_from);
        if (conn->c_rstart == conn->c_rend) {
            conn->c_rstart = conn->c_rend = 0;
            if (conn->c_rcap > 4 * CONN_RBUF_INITIAL) {
                /* A large frame passed: give the memory back. */
                uint8_t *nb = arpc_realloc(conn->c_rbuf, CONN_RBUF_INITIAL);
                if (nb != NULL) {
                    conn->c_rbuf = nb;
                    conn->c_rcap = CONN_RBUF_INITIAL;
                }
            }
        }
        if ((size_t)n < room || conn->c_held)
            break; /* the socket is drained for now, or the owner holds input */
    }
    conn->c_dispatching = false;
    if (conn->c_close_pending)
        conn_do_close(conn, conn->c_close_reason);
}

void arpc_conn_pause_input(struct arpc_conn *conn)
{
    if (conn->c_held || !conn->c_open)
        return;
    conn->c_held = true;
    ev_io_stop(conn->c_ev, &conn->c_rio);
}

void arpc_conn_resume_input(struct arpc_conn *conn)
{
    if (!conn->c_held || !conn->c_open)
        return;
    conn->c_held = false;
    conn_restart_frame_clock(conn);
    if (conn->c_dispatching) {
        /* Called from inside on_frame: the parse loop in progress goes on by itself. */
        if (!conn->c_read_paused && !conn->c_close_after_flush)
            ev_io_start(conn->c_ev, &conn->c_rio);
        return;
    }
    /* Frames read before the hold go up first, in order; one of them may hold again. */
    conn->c_dispatching = true;
    conn_parse(conn);
    conn->c_dispatching = false;
    if (conn->c_close_pending) {
        conn_do_close(conn, conn->c_close_reason);
        return;
    }
    if (conn->c_open && !conn->c_held && !conn->c_read_paused && !conn->c_close_after_flush)
        ev_io_start(conn->c_ev, &conn->c_rio);
}

int arpc_conn_init(struct arpc_conn *conn, arpc_loop *loop, int fd, uint32_t max_body,
                   const struct arpc_conn_ops *ops, void *owner, const char *peer)
{
    memset(conn, 0, sizeof(*conn));
    conn->c_rbuf = arpc_malloc(CONN_RBUF_INITIAL);
    if (conn->c_rbuf == NULL) {
        close(fd);
        return ARPC_ENOMEM;
    }
    conn->c_rcap = CONN_RBUF_INITIAL;
    conn->c_loop = loop;
    conn->c_ev = arpc_loop_ev(loop);
    conn->c_fd = fd;
    conn->c_max_body = max_body;
    conn->c_ops = ops;
    conn->c_owner = owner;
    conn->c_open = true;
    snprintf(conn->c_peer, sizeof(conn->c_peer), "%s", peer ? peer : "?");
    arpc_buf_cache_init(&conn->c_bufs, ARPC_CONN_BUF_CACHE_BYTES);
    arpc_outq_init(&conn->c_out);
    ev_io_init(&conn->c_rio, conn_on_readable, fd, EV_READ);
    ev_io_init(&conn->c_wio, conn_on_writable, fd, EV_WRITE);
    ev_prepare_init(&conn->c_flush, conn_on_prepare);
    ev_init(&conn->c_hb, NULL); /* armed by arpc_conn_heartbeat */
    conn->c_hb.data = conn;
    conn->c_rio.data = conn->c_wio.data = conn->c_flush.data = conn;
    ev_io_start(conn->c_ev, &conn->c_rio);
    return ARPC_OK;
}
