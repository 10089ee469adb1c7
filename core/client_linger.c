/*
 * The close's last words: what is queued for the server leaves before the connection goes.
 *
 * arpc_client_close ends every call at once (client_call.c); then the connection says goodbye
 * and lingers (core/conn.h, arpc_conn_linger): what is queued -- one-way messages arpc_notify
 * accepted, requests whose calls just ended ARPC_ECANCELLED, the goodbye last -- is written as
 * the server reads it, and the connection waits for the server's end of stream, so nothing
 * written is lost to a reset. The closer waits for it on its own thread (the loop goes on
 * serving whatever else it serves), cl_linger_ms at most: then the connection is closed, and
 * the frames that never left whole are counted and said in one WARN line. A one-way message
 * arpc_notify accepted is so either read by the server or named in that line.
 */
#include <inttypes.h>
#include <stdio.h>

#include "arpc/error.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/client_internal.h"

static void linger_expired(struct arpc_deadline *d, void *arg)
{
    (void)d;
    arpc_client *c = arg;
    arpc_conn_close(&c->cl_conn, ARPC_ETIMEDOUT); /* client_linger_done runs inside */
}

void client_linger_start(arpc_client *c, bool hello_done)
{
    struct arpc_conn *conn = &c->cl_conn;
    c->cl_closed_in_handshake = !hello_done;
    if (c->cl_server_flags & ARPC_HELLO_DEDUP) {
        /* Goodbye: we re-send nothing from now on, so the server may drop our replies now
         * rather than keep them until we would have expired. */
        static const char bye[] = "client closing";
        arpc_conn_send_error(conn, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, 0, bye, sizeof(bye) - 1);
    }
    /* Only a close lingers (a stopping loop cannot wait), and only after the HELLO: nothing
     * but the handshake is queued before it. */
    bool linger = hello_done && c->cl_linger_ms > 0 && atomic_load(&c->cl_state) == CL_CLOSED &&
                  arpc_future_create(&c->cl_lingered) == ARPC_OK;
    if (linger) {
        arpc_deadline_init(&c->cl_linger_timer, linger_expired, c);
        if (arpc_deadline_arm(c->cl_loop, &c->cl_linger_timer, arpc_deadline_from_ms(c->cl_linger_ms)) != ARPC_OK) {
            arpc_future_release(c->cl_lingered);
            c->cl_lingered = NULL;
            linger = false;
        }
    }
    if (!linger) { /* what the socket takes now */
        arpc_conn_flush_now(conn);
        arpc_conn_close(conn, ARPC_ESHUTDOWN);
        return;
    }
    arpc_future_hold(c->cl_lingered); /* the completer's, dropped as it completes */
    c->cl_lingering = true;
    arpc_conn_linger(conn, ARPC_ESHUTDOWN); /* may close at once: client_linger_done */
    if (!conn->c_open)
        return;
    /* Said whether bytes are queued or not: with its queue written the close still waits for
     * the server's end of stream, which may come only when the server's handlers are done. */
    if (conn->c_out.q_bytes > 0)
        arpc_log(ARPC_LOG_DEBUG, "closing the client of %s: %zu bytes queued; waiting up to %" PRId64
                 " ms for the server to read them and end its stream", c->cl_target.t_addr, conn->c_out.q_bytes,
                 c->cl_linger_ms);
    else
        arpc_log(ARPC_LOG_DEBUG, "closing the client of %s: waiting up to %" PRId64 " ms for the server to end its stream",
                 c->cl_target.t_addr, c->cl_linger_ms);
}

void client_linger_unwritten(arpc_client *c, arpc_outq_release_fn release)
{
    bool oneway = release == client_oneway_release;
    if (oneway)
        arpc_stat_inc(&c->cl_stats.cst_oneways_dropped);
    if (atomic_load(&c->cl_state) != CL_CLOSED)
        return; /* a loss: a one-way message is gone, as documented (client.h, arpc_notify) */
    if (c->cl_closed_in_handshake && !oneway)
        return; /* the HELLO of a handshake the close cut short: nothing of the caller's */
    c->cl_unsent_frames++;
    if (oneway)
        c->cl_unsent_oneway++;
}

void client_linger_done(arpc_client *c, int reason, const char *cause)
{
    if (c->cl_unsent_frames > 0) {
        /* A linger that did not run out ended with the connection: the server gone already
         * (a caller-driven client finds that out only as it closes), or the network. */
        char why[160];
        if (c->cl_lingering && reason != ARPC_ETIMEDOUT)
            snprintf(why, sizeof(why), "the connection ended first (%s)", cause);
        else
            snprintf(why, sizeof(why), "%s close_linger_ms (%" PRId64 " ms)",
                     c->cl_lingering       ? "the server did not read them within"
                     : c->cl_linger_ms > 0 ? "the close could not wait for the server (its loop was stopping, or no memory) despite"
                                           : "no wait for the server asked by",
                     c->cl_linger_ms);
        arpc_log(ARPC_LOG_WARN,
                 "closing the client of %s: %" PRIu64 " one-way message(s) and %" PRIu64
                 " other frame(s) (requests, the goodbye) dropped unwritten: %s",
                 c->cl_target.t_addr, c->cl_unsent_oneway, c->cl_unsent_frames - c->cl_unsent_oneway, why);
    }
    /* Written whole, but the server had not ended its stream when the linger ran out (its
     * input held behind calls over its bounds, or not read at all): what it had not read is
     * lost with the connection, and which that was cannot be known here. Said, not counted. */
    uint64_t written = c->cl_oneways_on_conn - c->cl_unsent_oneway;
    if (c->cl_lingering && reason == ARPC_ETIMEDOUT && written > 0)
        arpc_log(ARPC_LOG_WARN,
                 "closing the client of %s: the server did not end its stream within close_linger_ms (%" PRId64
                 " ms): of the %" PRIu64 " one-way message(s) written on this connection (since its HELLO), those it "
                 "had not read yet are lost",
                 c->cl_target.t_addr, c->cl_linger_ms, written);
    if (!c->cl_lingering)
        return;
    arpc_deadline_cancel(c->cl_loop, &c->cl_linger_timer);
    if (c->cl_hook && arpc_loop_off_stop(c->cl_loop, client_on_loop_stop, c)) {
        c->cl_hook = false;
        client_release(c); /* the hook's reference (the closer still holds the user's) */
    }
    arpc_future_complete_drop(c->cl_lingered, ARPC_OK, NULL, 0); /* the closer goes on (after a fence) */
}
