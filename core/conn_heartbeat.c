/*
 * Heartbeat: telling a silent peer from a dead one.
 *
 * TCP alone can take minutes (or for ever, with no data in flight) to notice a peer that
 * vanished without a FIN or RST (power loss, a cable, a firewall dropping state). So after
 * c_hb_idle seconds without input we send a PING; any input (a PONG or anything else) resets
 * the count; after c_hb_misses PINGs in a row without input the connection is closed with
 * ARPC_ECONNLOST, and the owner handles it like any lost connection (the client reconnects).
 *
 * One deadline per connection (on the loop's deadline heap), re-armed lazily the way libev's
 * manual recommends for timeouts that are pushed back on every event: reading only records the time (no timer call per
 * read); when the timer fires it computes how long the connection has really been idle and
 * either sleeps for the rest or acts.
 */
#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/conn.h"
#include "core/frame.h"
#include "core/peer_log.h"

int arpc_conn_send_ping(struct arpc_conn *conn, uint64_t xid)
{
    uint8_t *buf = arpc_malloc(ARPC_FRAME_HEADER_SIZE);
    if (buf == NULL)
        return ARPC_ENOMEM;
    arpc_frame_encode_header(buf, ARPC_FRAME_PING, xid, 0);
    return arpc_conn_send(conn, buf, buf, ARPC_FRAME_HEADER_SIZE);
}

/* A silence began: nothing is coming in, so the large blocks kept for the next reads and
 * sends are only memory held (a connection that made a burst of 64 KiB calls kept up to 32
 * of them until it closed). Freed now; the next burst allocates them again. */
static void conn_went_quiet(struct arpc_conn *conn)
{
    arpc_buf_cache_trim(&conn->c_bufs);
    if (conn->c_ops->on_quiet != NULL)
        conn->c_ops->on_quiet(conn);
}

static void conn_on_heartbeat(struct arpc_deadline *d, void *arg)
{
    struct arpc_conn *conn = arg;
    double now = arpc_loop_now_update(conn->c_loop); /* c_last_rx is the loop's time */
    if (conn->c_hold != 0 && arpc_outq_empty(&conn->c_out)) {
        /* We hold the peer's input and owe it nothing queued (it waits for us): its silence
         * says nothing. With output waiting, the peer may be the one not reading. */
        conn->c_last_rx = now;
        conn->c_hb_sent = 0;
    }
    if (conn->c_eof) {
        /* The peer finished sending (a half-close): it cannot answer, its silence says
         * nothing. A PING still finds one that is gone: its reset hangs the socket up
         * (core/conn.c: conn_watch_reads), or fails a later write. */
        (void)arpc_conn_send_ping(conn, conn->c_hb_sent + 1);
        arpc_deadline_arm_after_s(conn->c_loop, d, conn->c_hb_idle); /* cannot fail: see below */
        return;
    }
    double idle_for = now - conn->c_last_rx;
    double wait = conn->c_hb_idle;
    if (conn->c_hb_sent == 0 && idle_for < conn->c_hb_idle) {
        wait = conn->c_hb_idle - idle_for; /* input arrived meanwhile: sleep for the rest */
    } else if (arpc_conn_heartbeat_gave_up(conn)) {
        peer_log(conn->c_loop, ARPC_LOG_WARN,
                 "closing the connection with %s: no answer to %u heartbeat PINGs in %.1f s", conn->c_peer,
                 conn->c_hb_sent, idle_for);
        arpc_conn_close(conn, ARPC_ECONNLOST);
        return;
    } else {
        if (conn->c_hb_sent == 0)
            conn_went_quiet(conn);
        if (arpc_conn_send_ping(conn, conn->c_hb_sent + 1) == ARPC_OK) /* xid: the PINGs of this silence */
            conn->c_hb_sent++;
    }
    arpc_deadline_arm_after_s(conn->c_loop, d, wait); /* just taken out of the heap: cannot fail */
}

void arpc_conn_heartbeat_init(struct arpc_conn *conn) { arpc_deadline_init(&conn->c_hb, conn_on_heartbeat, conn); }

int arpc_conn_heartbeat(struct arpc_conn *conn, uint32_t idle_ms, unsigned misses)
{
    arpc_deadline_cancel(conn->c_loop, &conn->c_hb);
    conn->c_hb_idle = idle_ms / 1e3;
    conn->c_hb_misses = misses ? misses : 1;
    conn->c_hb_sent = 0;
    if (idle_ms == 0 || !conn->c_open)
        return ARPC_OK;
    conn->c_last_rx = arpc_loop_now(conn->c_loop);
    if (arpc_deadline_arm_after_s(conn->c_loop, &conn->c_hb, conn->c_hb_idle) == ARPC_OK)
        return ARPC_OK;
    peer_log(conn->c_loop, ARPC_LOG_ERROR, "out of memory arming the heartbeat of the connection with %s", conn->c_peer);
    return ARPC_ENOMEM;
}
