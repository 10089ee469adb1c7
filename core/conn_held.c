/*
 * Control frames pass a held connection (arpc_conn_hold_input, core/conn.h).
 *
 * A hold waits for replies, and a reply may wait for a control frame: a long poll ends only
 * when its client cancels it. If a held connection read nothing, that cancel would wait in the
 * socket behind the hold, which waits for it: a deadlock broken only by the client's heartbeat
 * (whose PINGs wait there too) dropping the connection. So while held the connection still
 * reads, but only into the read buffer it has, and looks through the complete frames there:
 * PINGs are answered, PONGs dropped, and the owner may take others (a server: a CANCEL for a
 * call it is running), out of order; every other frame stays where it is, in order, for when
 * the hold ends. The frames taken leave gaps, closed by moving the frames that stay down over
 * them, once per pass. Nothing here allocates: the memory a held connection has is the read
 * buffer it had, plus the PONGs it queues, which stop passing at ARPC_CONN_BACKLOG_HIGH or
 * max_conn_bytes of output waiting, whichever is less.
 */
#include "core/conn_held.h"

#include <string.h>

#include "arpc/error.h"
#include "core/conn_body.h"

/* PONGs queued for a peer that does not read stop at the connection's own bounds: the
 * backlog's, and max_conn_bytes (which the hold may be for: it must not be overshot more). */
static bool conn_held_output_fits(const struct arpc_conn *conn)
{
    size_t q = conn->c_out.q_bytes;
    return q <= ARPC_CONN_BACKLOG_HIGH && (conn->c_max_bytes == 0 || q <= conn->c_max_bytes);
}

bool conn_held_passes(const struct arpc_conn *conn)
{
    return conn->c_hold != 0 && conn->c_pass_control && conn->c_open && !conn->c_close_pending &&
           !conn->c_close_after_flush && conn->c_body == NULL && conn->c_skip == 0 && conn_held_output_fits(conn);
}

/* Hands up f if it passes the hold; true when it did (it then leaves the buffer). */
static bool conn_held_take(struct arpc_conn *conn, const struct arpc_frame *f)
{
    if (f->f_kind == ARPC_FRAME_PING || f->f_kind == ARPC_FRAME_PONG) {
        conn_hand_up(conn, f);
        return true;
    }
    return conn->c_ops->on_held_frame != NULL && conn->c_ops->on_held_frame(conn, f);
}

bool conn_held_pass(struct arpc_conn *conn)
{
    if (conn->c_rbuf == NULL)
        return false; /* nothing buffered */
    if (conn->c_held_scan == 0)
        conn->c_cancels_behind = 0; /* a look-through from c_rstart counts them again (kept
                                     * while none runs: a count too high costs looks only) */
    uint8_t *b = conn->c_rbuf;
    size_t rd = conn->c_rstart + conn->c_held_scan, wr = rd;
    conn->c_held_walk = conn->c_rcap / ARPC_FRAME_HEADER_SIZE; /* the most frames it can hold */
    while (conn_held_passes(conn)) {
        struct arpc_frame f;
        size_t used = 0, need = 0;
        /* Incomplete, oversized or malformed: it waits, and so does all behind it (the parser
         * judges it once the hold ends). */
        if (arpc_frame_decode(b + rd, conn->c_rend - rd, conn->c_max_body, &f, &used, &need) != ARPC_OK)
            break;
        conn->c_held_scan = wr - conn->c_rstart; /* what stays ahead of f (arpc_conn_held_request) */
        if (conn_held_take(conn, &f)) { /* (f lies at rd, above everything moved so far) */
            rd += used;
            if (!conn->c_open || conn->c_close_pending || conn->c_close_after_flush)
                return false; /* the buffer goes with the connection */
            continue;
        }
        if (f.f_kind == ARPC_FRAME_CANCEL && conn->c_cancels_behind < UINT16_MAX)
            conn->c_cancels_behind++; /* its call is behind the hold too */
        if (wr != rd)
            memmove(b + wr, b + rd, used);
        wr += used;
        rd += used;
    }
    if (wr != rd) {
        memmove(b + wr, b + rd, conn->c_rend - rd);
        conn->c_rend -= rd - wr;
    }
    conn->c_held_scan = wr - conn->c_rstart;
    return conn->c_open && conn->c_hold == 0 && !conn->c_close_pending && !conn->c_close_after_flush;
}

/* Finds the first frame of `kind` (under xid, unless any_xid) that stays ahead of the frame
 * looked at, into *found; false if none, or if the walk budget ran out first (then *spent is
 * set; the frames there were all decoded once, so none fails here). */
static bool held_find(struct arpc_conn *conn, enum arpc_frame_kind kind, bool any_xid, uint64_t xid,
                      struct arpc_frame *found, bool *spent)
{
    size_t at = conn->c_rstart, end = conn->c_rstart + conn->c_held_scan;
    for (; conn->c_held_walk > 0 && at < end; conn->c_held_walk--) {
        size_t used = 0, need = 0;
        if (arpc_frame_decode(conn->c_rbuf + at, end - at, conn->c_max_body, found, &used, &need) != ARPC_OK)
            return false;
        if (found->f_kind == kind && (any_xid || found->f_xid == xid))
            return true;
        at += used;
    }
    *spent = at < end;
    return false;
}

bool arpc_conn_held_request(struct arpc_conn *conn, uint64_t xid, uint64_t *seq)
{
    struct arpc_frame f;
    bool spent = false;
    if (!held_find(conn, ARPC_FRAME_REQUEST, false, xid, &f, &spent))
        return false;
    *seq = f.f_seq;
    return true;
}

bool arpc_conn_held_oneway_ahead(struct arpc_conn *conn)
{
    struct arpc_frame f;
    bool spent = false;
    return held_find(conn, ARPC_FRAME_ONEWAY, true, 0, &f, &spent) || spent;
}

bool arpc_conn_cancel_behind(const struct arpc_conn *conn, uint64_t xid)
{
    if (conn->c_cancels_behind == 0 || conn->c_rbuf == NULL)
        return false;
    size_t at = conn->c_rstart;
    for (unsigned n = 0; n < ARPC_CONN_CANCEL_LOOK; n++) {
        struct arpc_frame f;
        size_t used = 0, need = 0;
        if (arpc_frame_decode(conn->c_rbuf + at, conn->c_rend - at, conn->c_max_body, &f, &used, &need) != ARPC_OK)
            return false; /* the end of what is complete */
        if (f.f_kind == ARPC_FRAME_CANCEL && f.f_seq == 0 && f.f_xid == xid)
            return true;
        at += used;
    }
    return false;
}
