/*
 * A connection's output, written by its loop: the queue's flush, and when it happens.
 *
 * Batching: sends never write directly from the loop's jobs. They queue and start the
 * ev_prepare watcher, which libev runs once per loop iteration just before it blocks; by then
 * every job drained from the loop's lanes in this iteration has queued its frame, so one
 * sendmsg carries them all. This costs no latency: prepare runs in the same iteration, before
 * the poll. A batch that reaches ARPC_CONN_BATCH_FRAMES or _BYTES in the middle of a turn
 * leaves at once (arpc_conn_flush_batch), so that two loops pipelining a window work at the
 * same time. A socket that takes no more arms the writable watcher; a stream that must read
 * first (TLS) flushes at its next read. Closing after a flush and lingering end here too,
 * once the queue is written. (Other threads' own writes: core/conn_write.c.)
 */
#include "core/conn_flush.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "arpc/error.h"
#include "async/loop_internal.h"
#include "core/conn_bytes.h"
#include "core/peer_log.h"
#include "core/stats.h"

/* A lingering close's queue is written (arpc_conn_linger): the stream ends its sending (TLS:
 * close_notify) and the connection waits for the peer's end, reading and dropping what comes;
 * closing now, with the peer's answers unread, would send a reset that can discard what the
 * peer had not read yet. A stream that cannot closes now. True when closed. */
static bool conn_linger_drained(struct arpc_conn *conn)
{
    int (*shut)(struct arpc_stream *) = conn->c_stream->s_ops->s_shut_write;
    int rc = shut != NULL ? shut(conn->c_stream) : ARPC_ECONNLOST;
    if (rc == ARPC_OK) {
        conn->c_wr_shut = true;
        return false;
    }
    if (rc == ARPC_EAGAIN) { /* the writable socket's flush, its queue empty, comes back here */
        arpc_loop_io_start(conn->c_loop, &conn->c_wio);
        return false;
    }
    arpc_conn_close(conn, conn->c_close_reason);
    return true;
}

/* Writes what the socket takes. Returns true when the connection was closed (its memory may
 * be gone: the owner's on_close ran), so the caller must not touch it. */
static bool conn_flush(struct arpc_conn *conn)
{
    if (!arpc_conn_writer_take(conn))
        return false; /* another thread is inside its send: its job restarts this flush */
    size_t queued = conn->c_out.q_bytes;
    int rc = arpc_outq_flush(&conn->c_out, conn->c_stream);
    if (conn->c_stats != NULL) {
        uint64_t written = queued - conn->c_out.q_bytes;
        arpc_stat_add(&conn->c_stats->io_bytes_out, written);
        arpc_stat_add(&conn->c_stats->io_queued, -written);
    }
    if (rc == ARPC_EAGAIN) {
        arpc_loop_io_start(conn->c_loop, &conn->c_wio);
        return false;
    }
    if (rc == ARPC_EPENDING && conn->c_close_after_flush) {
        /* Last words during a TLS handshake (e.g. GOAWAY to one connection too many): they
         * cannot leave before the peer's handshake is read, and nothing is read any more. */
        arpc_conn_close(conn, conn->c_close_reason);
        return true;
    }
    if (rc == ARPC_EPENDING) { /* the next readiness to read flushes (conn_on_readable) */
        conn->c_write_wants_read = true;
        if (!conn->c_read_wants_write)
            arpc_loop_io_stop(conn->c_loop, &conn->c_wio);
        return false;
    }
    if (rc != ARPC_OK) {
        conn_stream_failed(conn);
        return true;
    }
    if (!conn->c_read_wants_write)
        arpc_loop_io_stop(conn->c_loop, &conn->c_wio);
    arpc_conn_writer_leave(conn); /* the queue is empty: other threads may write again */
    if (conn->c_close_after_flush) {
        arpc_conn_close(conn, conn->c_close_reason);
        return true;
    }
    if (conn->c_linger && !conn->c_wr_shut)
        return conn_linger_drained(conn);
    return false;
}

void arpc_conn_flush_batch(struct arpc_conn *conn)
{
    if (arpc_outq_frames(&conn->c_out) < ARPC_CONN_BATCH_FRAMES && conn->c_out.q_bytes < ARPC_CONN_BATCH_BYTES)
        return;
    if (!conn->c_open || conn->c_close_pending || conn->c_close_deferred || ev_is_active(&conn->c_wio) ||
        conn->c_write_wants_read)
        return; /* closing, the socket is full, or the stream must read first: their paths flush */
    /* Whoever called goes on using the connection: a close this flush decides (a failed
     * stream, the end of a close-after-flush) waits until the parse ends, or else until the
     * prepare watcher (conn_on_prepare), which a queued frame started. Until then the frames
     * already read still go up, as they did when this write waited for that watcher: a
     * client's goodbye behind its pipelined calls is heard, not taken for a lost connection. */
    bool outer = conn->c_dispatching;
    conn->c_dispatching = true;
    (void)conn_flush(conn);
    conn->c_dispatching = outer;
    if (!conn->c_close_pending)
        return;
    conn->c_close_pending = false; /* (it was not before the flush) */
    conn->c_close_deferred = true;
    if (!outer && !ev_is_active(&conn->c_flush)) {
        ev_prepare_start(conn->c_ev, &conn->c_flush);
        arpc_loop_prepare_due(conn->c_loop);
    }
}


void arpc_conn_flush_now(struct arpc_conn *conn)
{
    /* Last words: wait out a thread inside its one send rather than drop them. */
    if (conn->c_open && !arpc_outq_empty(&conn->c_out) && arpc_conn_writer_take_waiting(conn))
        conn_flush(conn);
}

/* Over the hard cap on queued output, or a frame refused for it (conn_queue): closed, said. */
static bool conn_close_over_cap(struct arpc_conn *conn)
{
    if (!conn->c_output_capped && !conn_output_over_cap(conn))
        return false;
    peer_log(conn->c_loop, ARPC_LOG_WARN,
             "closing the connection with %s: %zu bytes of output not read by the peer%s (%d x max_conn_bytes)",
             conn->c_peer, conn->c_out.q_bytes, conn->c_output_capped ? ", more refused" : "",
             ARPC_CONN_OUTPUT_HARD_FACTOR);
    arpc_conn_close(conn, ARPC_EOVERLOADED); /* (the peer may be reading: what the kernel holds still goes) */
    return true;
}

void conn_on_prepare(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)revents;
    struct arpc_conn *conn = w->data;
    ev_prepare_stop(ev, w);
    if (conn->c_close_deferred) { /* decided by an early flush outside a parse */
        conn_do_close(conn, conn->c_close_reason);
        return;
    }
    if (conn_close_over_cap(conn))
        return;
    /* If the write watcher is active the socket is full: it will flush when writable; if the
     * stream waits to read first, the next read flushes. Input let go here may queue more (an
     * inline handler's replies), and a prepare watcher started now would wait for the next
     * poll: flush again until nothing new is queued. A frame that input refused for the cap
     * started this watcher again, which the loop stops: the close is made after the resume
     * instead (nothing else in the loop queues). */
    while (!ev_is_active(&conn->c_wio) && !conn->c_write_wants_read) {
        if (conn_flush(conn))
            return; /* closed: its memory may be gone */
        if (conn->c_writer.w_loop_waits)
            return; /* another thread writes: its job starts this watcher again */
        if (conn_check_resume(conn))
            return; /* closed */
        if (conn_close_over_cap(conn) || arpc_outq_empty(&conn->c_out))
            return;
        ev_prepare_stop(ev, w);
    }
}

void conn_on_writable(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    struct arpc_conn *conn = w->data;
    if (conn->c_read_wants_write) {
        /* The stream's read was waiting for this (a TLS handshake message went out). The
         * read may close the connection: nothing is touched after it. Output still queued
         * keeps the watcher armed, so it is flushed on the next readiness. */
        conn->c_read_wants_write = false;
        if (arpc_outq_empty(&conn->c_out) || conn->c_write_wants_read)
            arpc_loop_io_stop(conn->c_loop, w);
        conn_on_readable(ev, &conn->c_rio, 0);
        return;
    }
    if (!conn_flush(conn))
        (void)conn_check_resume(conn);
}

void arpc_conn_close_after_flush(struct arpc_conn *conn, int reason)
{
    if (!conn->c_open)
        return;
    /* Nothing more is read: bytes already buffered are dropped with the connection. */
    conn_unwatch_reads(conn);
    conn->c_rstart = conn->c_rend = 0;
    if (arpc_outq_empty(&conn->c_out)) {
        arpc_conn_close(conn, reason);
        return;
    }
    conn->c_close_after_flush = true;
    conn->c_close_reason = reason;
}

void arpc_conn_linger(struct arpc_conn *conn, int reason)
{
    if (!conn->c_open || conn->c_linger)
        return;
    conn->c_linger = true;
    conn->c_close_reason = reason;
    /* Its owner bounds the wait; a PING now might meet a write side already shut. */
    arpc_deadline_cancel(conn->c_loop, &conn->c_hb);
    if (arpc_outq_empty(&conn->c_out))
        (void)conn_linger_drained(conn);
    else
        arpc_conn_flush_now(conn); /* the rest when the socket takes it (c_wio) */
}


double arpc_conn_write_age(struct arpc_conn *conn, double now)
{
    if (!conn->c_open || arpc_outq_empty(&conn->c_out))
        return 0;
    /* The kernel's send queue: bytes not yet sent or not yet acknowledged (tcp), or buffers
     * not yet read whole, with their overhead (unix). What the stream sent (every writer's
     * bytes, a TLS stream's records) less that is what the peer took. A peer that never
     * reads stops its kernel's acknowledgements once its receive buffer is full; one that
     * reads a trickle must still take ARPC_CONN_WRITE_PROGRESS_MIN a timeout (a window
     * update's worth would otherwise hold up to 4 x max_conn_bytes of replies for ever, for a
     * few bytes a second). */
    int kernel = 0;
    bool known = ioctl(conn->c_fd, SIOCOUTQ, &kernel) == 0 && kernel >= 0;
    int64_t sent = (int64_t)atomic_load_explicit(&conn->c_stream->s_sent, memory_order_relaxed);
    int64_t taken = sent - (known ? kernel : 0);
    if (conn->c_tx_mark_unset) {
        conn->c_tx_mark = taken;
        conn->c_tx_mark_unset = false;
    } else if (taken - conn->c_tx_mark >= (int64_t)ARPC_CONN_WRITE_PROGRESS_MIN ||
               (known && kernel == 0 && taken > conn->c_tx_mark)) {
        conn->c_last_tx = now; /* moved: the clock starts again */
        conn->c_tx_mark = taken;
    }
    return now - conn->c_last_tx;
}

