/*
 * A connection on its loop thread: reading (design notes below), holding input, closing. Its
 * writing is core/conn_flush.c's.
 *
 * Reading: up to CONN_READS_PER_READY read()s and CONN_READ_BUDGET bytes per readiness (a
 * socket that keeps filling the buffer is read again, but not for ever: other connections get
 * their turn; level-triggered readiness brings us back next iteration), into a buffer
 * that starts at 64 KiB and doubles, for a frame whose header says it is larger, only as the
 * bytes actually arrive (a peer must send N bytes to make us hold N), and shrinks back once a
 * large frame has passed. Frames are parsed in place; the remainder is moved to the front only
 * when the buffer's tail is short. A large body (ARPC_CONN_BODY_MIN or more) leaves that path
 * once its header is in: it is read into a buffer of its own (core/conn_body.c), so the read
 * buffer neither grows for it nor copies it around. While input is held, reads go on only
 * into the read buffer as it is, for control frames to pass (core/conn_held.c).
 */
#include "core/conn.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "arpc/error.h"
#include "async/loop_internal.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/conn_body.h"
#include "core/conn_bytes.h"
#include "core/conn_flush.h"
#include "core/conn_held.h"
#include "core/conn_rbuf.h"
#include "core/peer_log.h"
#include "core/stats.h"

#define CONN_RBUF_INITIAL (64 * 1024)
#define CONN_READS_PER_READY 4
/* Bytes read per readiness, at most: a large body arriving at memory speed would otherwise be
 * read whole (16 MiB at a time) while every other connection of the loop waits. Frames through
 * the read buffer get four buffers' worth, so a pipelined window of 4 KiB calls (64 x 4 KiB) is
 * parsed and handed on in one turn before the loop flushes and sleeps (against 64 KiB a turn:
 * half as many reads, epoll_waits, sendmsgs and worker wake-ups per call; docs/PERFORMANCE.md,
 * "Bulk at 4 KiB"); a turn that meets a large body reads 64 KiB in all, as before (more made
 * 64 KiB calls switch threads more often). */
#define CONN_READ_BUDGET (4 * CONN_RBUF_INITIAL)
#define CONN_BODY_READ_BUDGET (64 * 1024)
/* A cold connection (no call yet, or none for a second: arpc_conn_cool) reads less: the cold set
 * serves four of them a turn, and 20 peers each sending a 16 MiB first frame made turns of
 * 0.5-1 ms at 64 KiB each (pages faulted into fresh body buffers), which nearly every call of
 * the connections with calls waited behind; at 16 KiB a turn about a tenth of them did
 * (docs/SECURITY.md). A good client's large call made while cold (its first, or the first
 * after a second without one) is read a little slower: a peer cannot warm up with a small
 * call and then send large frames at 64 KiB once idle. */
#define CONN_COLD_READ_BUDGET (16 * 1024)

static void conn_on_hangup(struct ev_loop *ev, ev_io *w, int revents);

/* Open and not closing: after the end of stream, the socket's hangup is watched while this
 * holds (conn_watch_reads), held input or not -- a hold stops reads, and none are left. */
static bool conn_watches_hangup(const struct arpc_conn *conn)
{
    return conn->c_open && !conn->c_close_pending && !conn->c_close_after_flush;
}

/* Input is taken: open, not held, not closing. */
static bool conn_takes_input(const struct arpc_conn *conn)
{
    return conn_watches_hangup(conn) && conn->c_hold == 0;
}

/* The read watcher lives in libev, or for a cold connection in the loop's cold set
 * (arpc_conn_cool): these three are the only ones to start, stop or ask about it. Once the
 * peer's stream ended (c_eof) nothing is read, and the watcher, in the cold set, waits for
 * the socket's hangup instead: a peer gone both ways (a reset, a unix peer's close) closes
 * the connection at once rather than when its calls are answered. Without room in the set
 * only a failing write finds it. */
static void conn_watch_reads(struct arpc_conn *conn)
{
    if (conn->c_held_hup)
        conn_unwatch_reads(conn); /* reading again: not the hangup only */
    if (conn->c_cold_on)
        return;
    if (conn->c_eof) {
        ev_set_cb(&conn->c_rio, conn_on_hangup);
        conn->c_cold_on = arpc_loop_cold_start_hangup(conn->c_loop, &conn->c_rio) == ARPC_OK;
        return;
    }
    if (conn->c_cold && arpc_loop_cold_start(conn->c_loop, &conn->c_rio) == ARPC_OK) {
        conn->c_cold_on = true;
        return;
    }
    conn->c_cold = false; /* no room in the cold set: served as any other */
    arpc_loop_io_start(conn->c_loop, &conn->c_rio);
}

void conn_unwatch_reads(struct arpc_conn *conn)
{
    if (conn->c_cold_on) {
        arpc_loop_cold_stop(conn->c_loop, &conn->c_rio);
        conn->c_cold_on = false;
    }
    if (conn->c_held_hup) {
        conn->c_held_hup = false;
        ev_set_cb(&conn->c_rio, conn_on_readable);
    }
    arpc_loop_io_stop(conn->c_loop, &conn->c_rio);
}

/* Held input that is not read any more (its buffer full of frames that wait, or output over
 * its bound): the socket's hangup is still watched, as after the end of stream, so that a peer
 * gone both ways (a reset) is closed at once, its calls cancelled and their memory freed,
 * rather than when the hold ends. Where control frames pass a hold (an arpc server's
 * connection) this happens once a hold has 64 KiB of frames waiting, not at every hold; where
 * the owner asked (arpc_conn_hangup_when_held: a JSON-RPC server's connection, whose holds
 * stop reading at once) at every hold. Without room in the set, as before: found when the
 * hold ends. */
static void conn_watch_held_hangup(struct arpc_conn *conn)
{
    if (!(conn->c_pass_control || conn->c_hup_when_held) || conn->c_eof || conn->c_cold_on ||
        ev_is_active(&conn->c_rio) || !conn_watches_hangup(conn))
        return;
    ev_set_cb(&conn->c_rio, conn_on_hangup);
    conn->c_held_hup = conn->c_cold_on = arpc_loop_cold_start_hangup(conn->c_loop, &conn->c_rio) == ARPC_OK;
    if (!conn->c_held_hup)
        ev_set_cb(&conn->c_rio, conn_on_readable);
}

/* Reads are watched (the hangup alone while held: not reading). */
static bool conn_watching_reads(const struct arpc_conn *conn)
{
    return (conn->c_cold_on && !conn->c_held_hup) || ev_is_active(&conn->c_rio);
}

/* A cold connection (no call yet, or none for a second) holds no read buffer between
 * its reads, which are few: 10,000 idle ones would otherwise hold 68 KiB of heap each, and
 * how the allocator lays out and reuses that much is what their RSS came to depend on. */
static void conn_rbuf_drop_if_cold(struct arpc_conn *conn)
{
    if (conn->c_cold && conn->c_open && conn->c_rbuf != NULL && conn->c_rstart == conn->c_rend &&
        conn->c_skip == 0 && conn->c_body == NULL && !conn_rbuf_lent(conn))
        conn_rbuf_drop(conn);
}

void arpc_conn_cool(struct arpc_conn *conn)
{
    if (!conn->c_open || conn->c_cold)
        return;
    conn->c_cold = true;
    if (ev_is_active(&conn->c_rio)) {
        arpc_loop_io_stop(conn->c_loop, &conn->c_rio);
        conn_watch_reads(conn);
    }
    if (!conn->c_dispatching) /* (a frame being handled may still be in the buffer) */
        conn_rbuf_drop_if_cold(conn); /* a connection gone quiet gives its buffer back too */
    arpc_buf_cache_trim(&conn->c_bufs); /* and the large blocks its calls left for the next */
}

void arpc_conn_warm(struct arpc_conn *conn)
{
    if (!conn->c_cold)
        return;
    if (conn->c_held_hup) { /* held, not read: its hangup stays in the set, warm or not */
        conn->c_cold = false;
        return;
    }
    bool watching = conn->c_cold_on;
    conn_unwatch_reads(conn);
    conn->c_cold = false;
    if (watching)
        conn_watch_reads(conn);
}

struct conn_unwritten_pass {
    struct arpc_conn *u_conn;
    size_t u_owed; /* the queue's first bytes the stream was handed (s_write_owed) */
};

static void conn_unwritten(void *base, arpc_outq_release_fn release, size_t left, size_t ahead, void *arg)
{
    struct conn_unwritten_pass *u = arg;
    u->u_conn->c_ops->on_unwritten(u->u_conn, base, release, left, ahead < u->u_owed);
}

/* The hold is over (released, or the connection closed): see arpc_conn_hold_input. */
static void conn_lazy_urgent_done(struct arpc_conn *conn)
{
    if (conn->c_lazy_urgent) {
        conn->c_lazy_urgent = false;
        arpc_loop_lazy_urgent(conn->c_loop, -1);
    }
}

void conn_do_close(struct arpc_conn *conn, int reason)
{
    if (!conn->c_open)
        return;
    conn->c_open = false;
    conn_lazy_urgent_done(conn);
    conn_unwatch_reads(conn);
    arpc_loop_io_stop(conn->c_loop, &conn->c_wio);
    ev_prepare_stop(conn->c_ev, &conn->c_flush);
    arpc_deadline_cancel(conn->c_loop, &conn->c_hb);
    arpc_conn_writer_close(conn); /* a thread inside its send leaves before the fd closes */
    conn->c_setup_ns = conn->c_stream->s_setup_ns; /* for a fault's charge */
    const struct arpc_stream_ops *ops = conn->c_stream->s_ops;
    /* How far its handshake went, for the owner's on_close (arpc_conn_handshake). */
    conn->c_handshake = ops->s_handshake != NULL ? ops->s_handshake(conn->c_stream) : ARPC_STREAM_NO_HANDSHAKE;
    struct conn_unwritten_pass unwritten = {conn, ops->s_write_owed != NULL ? ops->s_write_owed(conn->c_stream) : 0};
    ops->s_close(conn->c_stream);
    conn->c_fd = -1;
    if (conn->c_stats != NULL) /* what was never written leaves the queue gauge */
        arpc_stat_add(&conn->c_stats->io_queued, -(uint64_t)conn->c_out.q_bytes);
    if (conn->c_ops->on_unwritten != NULL)
        arpc_outq_each(&conn->c_out, conn_unwritten, &unwritten);
    arpc_outq_fini(&conn->c_out);
    conn_rbuf_fini(conn); /* before the cache closes: a buffer not lent goes into it, then is freed */
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

void arpc_conn_close_reset(struct arpc_conn *conn, int reason)
{
    /* A linger of 0: close() drops what the kernel holds and sends a reset (tcp; unix has no
     * such thing, and the peer's queue keeps what it was sent). */
    struct linger now = {.l_onoff = 1, .l_linger = 0};
    if (conn->c_open)
        (void)setsockopt(conn->c_fd, SOL_SOCKET, SO_LINGER, &now, sizeof(now));
    arpc_conn_close(conn, reason);
}

/* Bytes the stream already holds (a TLS record partly returned): they make no readiness of
 * their own. */
static size_t conn_stream_held(const struct arpc_conn *conn)
{
    const struct arpc_stream *s = conn->c_stream;
    return s->s_ops->s_buffered != NULL ? s->s_ops->s_buffered(s) : 0;
}

static bool conn_stream_buffered(const struct arpc_conn *conn) { return conn_stream_held(conn) > 0; }

/* (Re)starts the read watcher, feeding it one readiness for bytes the stream holds, so they
 * are not left waiting for the peer's next bytes. */
static void conn_start_reading(struct arpc_conn *conn)
{
    conn_watch_reads(conn); /* after the end of stream: its hangup only */
    if (!conn->c_eof && conn_stream_buffered(conn))
        ev_feed_event(conn->c_ev, &conn->c_rio, EV_READ);
}

/* What conn_on_readable does: reads and hands up what arrived. True when that closed the
 * connection (its owner may have freed it). */
static bool conn_read_input(struct arpc_conn *conn);

/* The stream broke: closes with its reason, keeping its words for the owner's on_close. A
 * peer that went away is ordinary; anything else (a TLS refusal) is worth a log line. */
void conn_stream_failed(struct arpc_conn *conn)
{
    const struct arpc_stream *s = conn->c_stream;
    /* A server that refuses a connection says why and closes (a GOAWAY in place of its HELLO);
     * on a unix socket the client's first write then fails (EPIPE) with those words unread, and
     * the client would take the close for a peer that is no arpc server. So a connection that
     * spoke first and has heard nothing yet (a client's, waiting for the HELLO: nothing else is
     * under way) reads them first, on a plain stream (a TLS stream that failed reads nothing
     * more). Not a server's stranger: at a stop it would read and run its first calls. */
    if (s->s_error == ARPC_ECONNLOST && !conn->c_heard && !conn->c_stranger && !conn->c_dispatching &&
        !conn->c_eof && s->s_ops->s_handshake == NULL && conn_read_input(conn))
        return; /* the words closed it, with their own reason (its owner may have let it go) */
    snprintf(conn->c_why, sizeof(conn->c_why), "%s", s->s_why != NULL ? s->s_why : "");
    if (s->s_error != ARPC_ECONNLOST)
        peer_log(conn->c_loop, conn_fault_log_level(conn),
                 "closing the connection with %s: %s", conn->c_peer, conn->c_why);
    arpc_conn_close(conn, s->s_error);
}

void arpc_conn_limit_backlog(struct arpc_conn *conn) { conn->c_backlog_limit = true; }

/* A frame half in while we did not read gets the whole frame timeout again from now: the
 * wait was ours, not the peer's. */
static void conn_restart_frame_clock(struct arpc_conn *conn)
{
    if (conn->c_frame_since != 0)
        conn->c_frame_since = arpc_loop_now(conn->c_loop);
}

static bool conn_release(struct arpc_conn *conn, unsigned reason);
static bool conn_parse_buffered(struct arpc_conn *conn);
static bool conn_held_reads(const struct arpc_conn *conn);

void conn_hold_own(struct arpc_conn *conn, unsigned reason)
{
    if (conn->c_hold & reason)
        return;
    arpc_conn_hold_input(conn, reason);
    if (conn->c_ops->on_held != NULL)
        conn->c_ops->on_held(conn, reason);
}

/* After output drained: lets go of the connection's own reasons that no longer hold. True
 * when the connection was closed (by a buffered frame handed up). */
bool conn_check_resume(struct arpc_conn *conn)
{
    if (!conn->c_open)
        return false;
    unsigned done = 0;
    if ((conn->c_hold & ARPC_CONN_HOLD_BACKLOG) && conn->c_out.q_bytes < ARPC_CONN_BACKLOG_LOW)
        done |= ARPC_CONN_HOLD_BACKLOG;
    if ((conn->c_hold & ARPC_CONN_HOLD_BYTES) && conn_bytes_fit(conn))
        done |= ARPC_CONN_HOLD_BYTES;
    if (done != 0 && conn_release(conn, done))
        return true;
    /* Still held, and output under its bound again: control frames pass once more, those
     * buffered meanwhile first. */
    return conn->c_hold != 0 && !conn_watching_reads(conn) && conn_held_passes(conn) && conn_parse_buffered(conn);
}

/* Moves the unparsed bytes to the front of the read buffer. */
static int conn_compact(struct arpc_conn *conn)
{
    /* Compaction writes over parsed bytes: lent ones stay, the rest move to a fresh buffer. */
    if (conn_rbuf_unshare(conn) != ARPC_OK)
        return ARPC_ENOMEM;
    size_t unparsed = conn->c_rend - conn->c_rstart;
    memmove(conn->c_rbuf, conn->c_rbuf + conn->c_rstart, unparsed);
    conn->c_rstart = 0;
    conn->c_rend = unparsed;
    return ARPC_OK;
}

/* Makes room for at least `want` unparsed bytes plus some read space. */
static int conn_reserve(struct arpc_conn *conn, size_t want)
{
    if (conn->c_rstart > 0 && (conn->c_rcap - conn->c_rend < 4096 || conn->c_rcap - conn->c_rstart < want) &&
        conn_compact(conn) != ARPC_OK)
        return ARPC_ENOMEM;
    if (want <= conn->c_rcap && conn->c_rcap - conn->c_rend > 0)
        return ARPC_OK;
    if (conn->c_rcap - conn->c_rend > 0 && conn->c_rend - conn->c_rstart < conn->c_rcap / 2)
        return ARPC_OK; /* grow only once the bytes have arrived, not on a header's word */
    /* At most double per step: a peer must send N bytes to make us hold N bytes. */
    if (conn_rbuf_unshare(conn) != ARPC_OK)
        return ARPC_ENOMEM;
    return conn_rbuf_resize(conn, conn->c_rcap * 2);
}

/* After a parse: when did the bytes left unparsed (the start of the next frame) begin to
 * arrive? If a frame was completed in this read, its successor began in this read too; an
 * oversized frame being skipped is not complete (a peer dribbling its body is still slow).
 * Only a timestamp: the owner's coarse sweep compares it (no timer per connection). */
static void conn_track_partial(struct arpc_conn *conn, bool consumed)
{
    if (!arpc_conn_partial_frame(conn))
        conn->c_frame_since = 0;
    else if (conn->c_frame_since == 0 || (consumed && conn->c_skip == 0))
        conn->c_frame_since = arpc_loop_now(conn->c_loop);
}

void arpc_conn_begin_skip(struct arpc_conn *conn, uint64_t len, size_t parsed_from)
{
    /* Bytes dropped by a skip count as consumed, so conn_track_partial keeps the clock while
     * one goes on; a frame that ended before this one in the same parse must not lend it its
     * clock. */
    if (conn->c_rstart != parsed_from)
        conn->c_frame_since = 0;
    conn->c_skip = len;
}

uint64_t arpc_conn_arrival_ns(struct arpc_conn *conn)
{
    if (conn->c_rx_ns == 0)
        conn->c_rx_ns = arpc_now_ns();
    return conn->c_rx_ns;
}

double arpc_conn_frame_age(const struct arpc_conn *conn, double now)
{
    /* Not while we are the ones not reading (whatever holds input). */
    if (!conn->c_open || conn->c_hold != 0 || conn->c_frame_since == 0)
        return 0;
    return now - conn->c_frame_since;
}

/* Hands up what the buffer holds: frames in order while nothing holds input, then control
 * frames past a hold (core/conn_held.c), which may end it (a cancel's reply): then in order
 * again. Inside a dispatch only (c_dispatching). */
static size_t conn_parse(struct arpc_conn *conn)
{
    if (conn->c_rbuf == NULL)
        return ARPC_FRAME_HEADER_SIZE; /* nothing read (or a cold connection's, all parsed) */
    size_t need;
    do
        need = conn->c_ops->parse != NULL ? conn->c_ops->parse(conn) : arpc_conn_parse_frames(conn);
    while (conn_held_passes(conn) && conn_held_pass(conn));
    return need;
}

/* A held connection whose control frames pass reads on while its read buffer has room as it
 * is (without growing it; moving its frames to the front if needed). */
static bool conn_held_reads(const struct arpc_conn *conn)
{
    return conn_held_passes(conn) && !conn->c_eof && !conn->c_held_eof &&
           (conn->c_rbuf == NULL || conn->c_rend < conn->c_rcap || conn->c_rstart > 0);
}

/* Where the next read goes: a large body's own buffer, or the read buffer's free tail. Held
 * (control frames passing, core/conn_held.c; never in a large body): that tail as the buffer
 * is, never a larger buffer, its frames moved to the front once it is full. */
static int conn_read_room(struct arpc_conn *conn, size_t need, bool held, uint8_t **dst, size_t *room)
{
    if (conn->c_body != NULL)
        return conn_body_room(conn, dst, room);
    if (conn->c_rbuf == NULL && conn_rbuf_alloc(conn, CONN_RBUF_INITIAL) != ARPC_OK)
        return ARPC_ENOMEM; /* the first read, or the first since a cold connection gave it back */
    int rc = ARPC_OK;
    if (!held)
        rc = conn_reserve(conn, need);
    else if (conn->c_rend == conn->c_rcap && conn->c_rstart > 0)
        rc = conn_compact(conn);
    *dst = conn->c_rbuf + conn->c_rend;
    *room = conn->c_rcap - conn->c_rend;
    return rc;
}

/* The end of the peer's stream. A peer that half-closed after its last request (a pipe into
 * nc, shutdown(SHUT_WR)) still reads: its owner may answer what arrived. With part of a frame
 * left in, the owner decides (a lost connection, or bad input said after the answers). */
static void conn_on_eof(struct arpc_conn *conn)
{
    if (conn->c_ops->on_eof == NULL) {
        arpc_conn_close(conn, ARPC_ECONNLOST);
        return;
    }
    conn->c_eof = true;
    conn_unwatch_reads(conn);
    conn->c_ops->on_eof(conn);
    if (conn_watches_hangup(conn))
        conn_watch_reads(conn); /* the owner answers what it read: its hangup only */
}

/* The peer is gone both ways (see conn_watch_reads): what is owed to it has nowhere to go. */
static void conn_on_hangup(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    arpc_conn_close(w->data, ARPC_ECONNLOST);
}

void conn_on_readable(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    (void)conn_read_input(w->data);
}

static bool conn_read_input(struct arpc_conn *conn)
{
    /* In a large body and the loop's turn has read its bulk: next turn (the socket stays
     * ready), but for bytes the stream holds (a TLS record), which no readiness would bring
     * back: those alone. */
    size_t bulk_cap = SIZE_MAX;
    if (conn->c_body != NULL && arpc_loop_bulk_spent(conn->c_loop) && (bulk_cap = conn_stream_held(conn)) == 0)
        return false;
    size_t need = ARPC_FRAME_HEADER_SIZE;
    /* bytes read this turn, and how many it may read */
    size_t got = 0, limit = conn->c_cold ? CONN_COLD_READ_BUDGET : CONN_READ_BUDGET;
    conn->c_dispatching = true;
    /* Held input reads only for control frames to pass (conn_held_reads), whoever calls (the
     * write watcher calls in for a stream whose read waited for writability): never the rest
     * of a large body, which would go up. */
    for (int round = 0; round < CONN_READS_PER_READY && (conn_takes_input(conn) || conn_held_reads(conn)) && !conn->c_eof;
         round++) {
        bool held = conn->c_hold != 0; /* only control frames pass (core/conn_held.c) */
        if (conn->c_body != NULL && !conn->c_cold)
            limit = CONN_BODY_READ_BUDGET;
        if (limit > bulk_cap)
            limit = bulk_cap;
        if (got >= limit)
            break; /* others' turn */
        uint8_t *dst;
        size_t room;
        if (conn_read_room(conn, need, held, &dst, &room) != ARPC_OK) {
            arpc_log(ARPC_LOG_WARN, "closing the connection with %s: out of memory for a %zu-byte frame",
                     conn->c_peer, conn->c_body != NULL ? ARPC_FRAME_HEADER_SIZE + (size_t)conn->c_body_len : need);
            if (conn->c_stranger && conn->c_ops->on_bad_input != NULL) {
                /* A peer not let in yet waits for its handshake's answer: told why, it does
                 * not take the close for a peer that is no arpc server. */
                conn->c_ops->on_bad_input(conn, ARPC_ENOMEM, "out of memory");
                arpc_conn_close_after_flush(conn, ARPC_ENOMEM);
            } else {
                arpc_conn_close(conn, ARPC_ENOMEM);
            }
            break;
        }
        if (room > limit - got)
            room = limit - got;
        ssize_t n = conn->c_stream->s_ops->s_read(conn->c_stream, dst, room);
        if (n == 0 && held && conn->c_rend != conn->c_rstart) {
            conn->c_held_eof = true; /* judged once the frames waiting went up (conn_on_eof) */
            break;
        }
        if (n == 0) {
            conn_on_eof(conn);
            break;
        }
        if (n < 0) {
            if (n == ARPC_STREAM_WANT_WRITE) {
                conn->c_read_wants_write = true;
                arpc_loop_io_start(conn->c_loop, &conn->c_wio);
            } else if (n == ARPC_STREAM_FAILED) {
                conn_stream_failed(conn);
            }
            break;
        }
        if (conn->c_stats != NULL)
            arpc_stat_add(&conn->c_stats->io_bytes_in, (uint64_t)n);
        conn->c_last_rx = arpc_loop_now(conn->c_loop); /* a sign of life, for the heartbeat */
        conn->c_heard = true;
        conn->c_hb_sent = 0;
        if (!held) {
            conn->c_rx_ns = 0;
            conn->c_rx_waited = false;
        } else {
            /* The frames waiting share one arrival time (not one per frame): the latest
             * read's, so that no call's budget is counted from before it arrived (a false
             * ARPC_EEXPIRED); an earlier one's may be counted late, which only lets the server
             * spend on a call its caller gave up on. They will have waited (c_rx_waited). */
            conn->c_rx_ns = arpc_now_ns();
        }
        size_t parsed_from = conn->c_rstart;
        bool body_done = false;
        if (conn->c_body != NULL) {
            arpc_loop_bulk_spend(conn->c_loop, (size_t)n);
            conn_body_advance(conn, (size_t)n); /* hands its frame up once whole */
            body_done = conn->c_body == NULL;
        } else {
            conn->c_rend += (size_t)n;
        }
        need = conn_parse(conn);
        if ((conn->c_body != NULL || body_done) && !conn->c_cold)
            limit = CONN_BODY_READ_BUDGET; /* a turn that met a large body: 64 KiB in all */
        /* (A large body moved out of the read buffer counts as consumed: its clock restarts
         * once its header is in.) */
        conn_track_partial(conn, body_done || conn->c_rstart != parsed_from);
        /* All parsed: read to the front again, unless bytes of it are lent (then on from
         * where it is; conn_reserve moves to another buffer when the tail runs short). */
        if (conn->c_rstart == conn->c_rend && !conn_rbuf_lent(conn)) {
            conn->c_rstart = conn->c_rend = 0;
            if (conn->c_rcap > 4 * CONN_RBUF_INITIAL)
                (void)conn_rbuf_resize(conn, CONN_RBUF_INITIAL); /* a large frame passed: give the memory back */
        }
        got += (size_t)n;
        if ((size_t)n < room || (conn->c_hold != 0 && !held) || got >= limit)
            break; /* the socket is drained for now, the owner holds input, or others' turn */
    }
    conn->c_dispatching = false;
    if (conn->c_close_pending || conn->c_close_deferred) {
        conn_do_close(conn, conn->c_close_reason);
        return true;
    }
    /* Held with its buffer full of frames that wait (or output piling up): the socket waits
     * too, else its readiness would wake the loop for nothing. */
    if (conn->c_open && conn->c_hold != 0 && !conn->c_eof && conn_watching_reads(conn) && !conn_held_reads(conn)) {
        conn_unwatch_reads(conn);
        conn_watch_held_hangup(conn);
    }
    conn_rbuf_drop_if_cold(conn);
    if (conn->c_open && !conn->c_eof && conn_watching_reads(conn) && conn_stream_buffered(conn))
        ev_feed_event(conn->c_ev, &conn->c_rio, EV_READ); /* the read budget ran out first */
    if (conn->c_write_wants_read && conn->c_open) {
        /* A write waited for this read (a TLS handshake): flush before the loop sleeps. */
        conn->c_write_wants_read = false;
        if (!ev_is_active(&conn->c_flush)) {
            ev_prepare_start(conn->c_ev, &conn->c_flush);
            arpc_loop_prepare_due(conn->c_loop);
        }
    }
    return false;
}

void arpc_conn_hold_input(struct arpc_conn *conn, unsigned reason)
{
    if (!conn->c_open || (conn->c_hold & reason) == reason)
        return;
    if (conn->c_hold == 0)
        conn->c_held_scan = 0; /* the frames after c_rstart are yet to be looked through */
    conn->c_hold |= reason;
    if (!conn->c_lazy_urgent) {
        /* What frees a hold may be a worker's lazy bookkeeping (core/reply_take.c), and a held
         * connection is not read: no other event might wake the loop for it. */
        conn->c_lazy_urgent = true;
        arpc_loop_lazy_urgent(conn->c_loop, 1);
    }
    /* The frames left unparsed arrived with the last read: stamped now if no frame of it
     * read the clock yet, not when the hold ends. */
    if (conn->c_rx_ns == 0 && conn->c_rend > conn->c_rstart)
        conn->c_rx_ns = arpc_now_ns();
    conn->c_rx_waited = true;
    /* After the end of stream the watcher reads nothing: it waits for the hangup, which a
     * held connection (its client's calls running elsewhere) must still hear of, else a peer
     * gone for good is found only by the heartbeat. */
    if (!conn->c_eof && !conn_held_reads(conn)) {
        conn_unwatch_reads(conn);
        conn_watch_held_hangup(conn);
    }
}

void arpc_conn_pass_control(struct arpc_conn *conn) { conn->c_pass_control = true; }

void arpc_conn_hangup_when_held(struct arpc_conn *conn) { conn->c_hup_when_held = true; }

/* Outside a read: hands up what the buffer holds (conn_parse), then reads again, unless held
 * with nothing passing. True when that closed the connection (its memory may be gone). */
static bool conn_parse_buffered(struct arpc_conn *conn)
{
    size_t parsed_from = conn->c_rstart;
    conn->c_dispatching = true;
    conn_parse(conn);
    conn->c_dispatching = false;
    if (conn->c_close_pending || conn->c_close_deferred) {
        conn_do_close(conn, conn->c_close_reason);
        return true;
    }
    conn_track_partial(conn, conn->c_rstart != parsed_from);
    if (conn->c_hold == 0)
        conn->c_held_eof = false; /* the next read meets the end of stream again, in order */
    if (!conn->c_close_after_flush && (conn->c_hold == 0 || conn_held_reads(conn)))
        conn_start_reading(conn);
    return false;
}

/* Lets go of reason; once nothing holds input, hands up the frames buffered meanwhile and
 * reads again. True when that closed the connection (its memory may be gone). */
static bool conn_release(struct arpc_conn *conn, unsigned reason)
{
    if (!conn->c_open || (conn->c_hold & reason) == 0)
        return false;
    conn->c_hold &= ~reason;
    if (conn->c_hold != 0)
        return false;
    conn_lazy_urgent_done(conn);
    conn_restart_frame_clock(conn);
    if (conn->c_close_after_flush)
        return false;
    if (conn->c_dispatching) {
        /* Called from inside on_frame: the parse loop in progress goes on by itself. */
        conn_start_reading(conn);
        return false;
    }
    /* Frames read before the hold go up first, in order; one of them may hold again. */
    return conn_parse_buffered(conn);
}

void arpc_conn_release_input(struct arpc_conn *conn, unsigned reason) { conn_release(conn, reason); }

int arpc_conn_init_stream(struct arpc_conn *conn, arpc_loop *loop, struct arpc_stream *stream, uint32_t max_body,
                          const struct arpc_conn_ops *ops, void *owner, const char *peer)
{
    int fd = stream->s_fd;
    /* The plain stream lives in the conn, which is cleared here: keep it across. */
    bool is_plain = stream == &conn->c_plain;
    struct arpc_stream plain = is_plain ? conn->c_plain : (struct arpc_stream){.s_fd = -1};
    memset(conn, 0, sizeof(*conn));
    conn->c_plain = plain;
    conn->c_stream = is_plain ? &conn->c_plain : stream;
    arpc_buf_cache_init(&conn->c_bufs, ARPC_CONN_BUF_CACHE_BYTES); /* the read buffer: at the first read */
    conn->c_loop = loop;
    conn->c_ev = arpc_loop_ev(loop);
    conn->c_fd = fd;
    conn->c_max_body = max_body;
    conn->c_ops = ops;
    conn->c_owner = owner;
    conn->c_open = true;
    snprintf(conn->c_peer, sizeof(conn->c_peer), "%s", peer ? peer : "?");
    arpc_outq_init(&conn->c_out);
    ev_io_init(&conn->c_rio, conn_on_readable, fd, EV_READ);
    ev_io_init(&conn->c_wio, conn_on_writable, fd, EV_WRITE);
    ev_prepare_init(&conn->c_flush, conn_on_prepare);
    arpc_conn_heartbeat_init(conn); /* armed by arpc_conn_heartbeat */
    conn->c_rio.data = conn->c_wio.data = conn->c_flush.data = conn;
    conn_watch_reads(conn);
    return ARPC_OK;
}

int arpc_conn_init(struct arpc_conn *conn, arpc_loop *loop, int fd, uint32_t max_body,
                   const struct arpc_conn_ops *ops, void *owner, const char *peer)
{
    arpc_stream_plain_init(&conn->c_plain, fd);
    return arpc_conn_init_stream(conn, loop, &conn->c_plain, max_body, ops, owner, peer);
}
