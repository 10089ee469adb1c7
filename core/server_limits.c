/*
 * Connection limits, on the loop thread: the handshake, frame-progress and idle timeouts, and
 * the number of connections open at once (docs/SECURITY.md).
 *
 * One coarse sweep timer per server checks every open connection's timestamps, instead of a
 * timer per connection: the per-frame path only stores the loop's cached time (arpc_loop_now), and a
 * timeout fires at most one sweep period late, which is fine for limits counted in seconds. A
 * sweep runs in slices of LIMITS_SWEEP_SLICE connections, one per loop turn, and a slice ends
 * early once its closes cost SERVER_LIMITS_CLOSES_PER_TURN (a close costs one, and one per MiB
 * the connection holds). It also sends connections idle for
 * LIMITS_COOL_AFTER_S back to the cold set.
 */
#include <stdio.h>

#include "arpc/error.h"
#include "base/log.h"
#include "core/peer_log.h"
#include "core/server_internal.h"

#define LIMITS_HANDSHAKE_MS 10000
#define LIMITS_FRAME_MS 30000
#define LIMITS_MAX_CONNS 10000
#define LIMITS_SHED_IDLE_MS 5000
#define LIMITS_WRITE_MS 30000
#define LIMITS_SWEEP_MAX_S 1.0
#define LIMITS_SWEEP_MIN_S 0.01
/* Connections checked per loop turn: 10,000 at once held the loop ~3 ms (a good client's call
 * behind it waited as long); 512 take ~0.15 ms. */
#define LIMITS_SWEEP_SLICE 512
/* A connection without a call for this long goes back to the cold set (arpc_conn_cool): its
 * next call warms it again at the cost of a turn's wait at most, and thousands of idle ones
 * closed at once (after one call each) are let go a budget a turn, as those that never called
 * are, instead of in one turn of milliseconds. */
#define LIMITS_COOL_AFTER_S 1.0

void limits_init(arpc_server *s, const arpc_server_options *o)
{
    s->sv_handshake_s = (o->handshake_timeout_ms ? o->handshake_timeout_ms : LIMITS_HANDSHAKE_MS) / 1000.0;
    s->sv_frame_s = (o->frame_timeout_ms ? o->frame_timeout_ms : LIMITS_FRAME_MS) / 1000.0;
    s->sv_idle_s = o->idle_timeout_ms / 1000.0; /* 0: off */
    s->sv_shed_idle_s = (o->shed_idle_ms ? o->shed_idle_ms : LIMITS_SHED_IDLE_MS) / 1000.0;
    s->sv_write_s = (o->write_timeout_ms ? o->write_timeout_ms : LIMITS_WRITE_MS) / 1000.0;
    s->sv_max_conns = o->max_connections ? o->max_connections : LIMITS_MAX_CONNS;
    s->sv_unix_mode = o->unix_mode;
}

/* Closes sc with a log line naming the limit; true if it did. */
static bool limits_check(struct server_conn *sc, double now)
{
    arpc_server *s = sc->sc_server;
    struct arpc_conn *conn = &sc->sc_conn;
    /* First, and for connections closing after their last words too: a peer that reads
     * nothing keeps them (and what they queued) otherwise. */
    if (arpc_conn_write_age(conn, now) >= s->sv_write_s) {
        peer_log(conn->c_loop, ARPC_LOG_WARN,
                 "closing the connection from %s: %zu bytes of output not read within %.0f ms (write_timeout_ms)",
                 conn->c_peer, conn->c_out.q_bytes, s->sv_write_s * 1000);
        arpc_conn_close_reset(conn, ARPC_ETIMEDOUT);
        return true;
    }
    if (conn->c_close_after_flush)
        return false;
    if (!sc->sc_hello && now - sc->sc_opened >= s->sv_handshake_s) {
        enum arpc_stream_handshake tls = arpc_conn_handshake(conn);
        peer_log(conn->c_loop, ARPC_LOG_WARN, "closing the connection from %s: %s within %.0f ms (handshake_timeout_ms)",
                 conn->c_peer,
                 tls == ARPC_STREAM_HANDSHAKE_BEGUN  ? "its TLS handshake not finished"
                 : tls == ARPC_STREAM_HANDSHAKE_DONE ? "no HELLO after its TLS handshake"
                                                     : "no HELLO",
                 s->sv_handshake_s * 1000);
        /* A HELLO begun and not finished is a slow peer's fault. So is a TLS handshake, finished
         * or not, with nothing after it: it cost the server its key exchange and signature
         * (charged), and an arpc client says HELLO in its first record, so only a peer that
         * means to hold the place (or a JSON-RPC client that connects early and calls late,
         * closed here anyway) stays silent past it. A peer that sent nothing is no fault: a
         * client connecting early, like a tls:// peer that closes before its first byte. */
        if (arpc_conn_frame_age(conn, now) > 0 || tls != ARPC_STREAM_NO_HANDSHAKE)
            fault_rate_charge(sc);
        arpc_conn_close(conn, ARPC_ETIMEDOUT);
        return true;
    }
    if (arpc_conn_frame_age(conn, now) >= s->sv_frame_s) {
        peer_log(conn->c_loop, ARPC_LOG_WARN,
                 "closing the connection from %s: a frame not whole within %.0f ms (frame_timeout_ms)", conn->c_peer,
                 s->sv_frame_s * 1000);
        fault_rate_charge(sc);
        arpc_conn_close(conn, ARPC_ETIMEDOUT);
        return true;
    }
    inflight_hold_sweep(sc, now); /* a hold not said yet that lasts */
    if (sconn_has_work(sc) || arpc_conn_frame_age(conn, now) > 0)
        sc->sc_last_busy = now; /* not idle */
    else if (sc->sc_hello && now - sc->sc_last_busy >= LIMITS_COOL_AFTER_S)
        arpc_conn_cool(conn);
    if (s->sv_idle_s > 0 && sc->sc_hello && now - sc->sc_last_busy >= s->sv_idle_s) {
        peer_log(conn->c_loop, ARPC_LOG_INFO, "closing the connection from %s: idle for %.0f ms (idle_timeout_ms)",
                 conn->c_peer, s->sv_idle_s * 1000);
        /* ESHUTDOWN: the client's word for "reconnect when next needed" (it has no call here). */
        sconn_send_idle_goaway(conn, "idle connection closed");
        arpc_conn_close_after_flush(conn, ARPC_ETIMEDOUT);
        return true;
    }
    return false;
}

/* What closing sc would cost a loop turn, in plain closes: one, and one per MiB of input and
 * output it holds, which the close frees (a 16 MiB frame's body took ~0.5 ms to give back
 * here, as long as ~16 plain closes: 16 such connections timing out together made a turn of
 * 10-14 ms; docs/SECURITY.md). Bytes held, not arpc_conn_bytes (what max_conn_bytes bounds):
 * buffer capacity not filled and replies still owed cost a close nothing to free. */
static unsigned limits_close_cost(const struct server_conn *sc)
{
    const struct arpc_conn *conn = &sc->sc_conn;
    size_t held = conn->c_out.q_bytes + (conn->c_rend - conn->c_rstart);
    if (conn->c_body != NULL)
        held += conn->c_body_have;
    return 1 + (unsigned)(held >> 20);
}

static void limits_on_sweep(struct arpc_deadline *d, void *arg)
{
    arpc_server *s = arg;
    double now = arpc_loop_now_update(s->sv_loop); /* the connections' times are the loop's */
    if (s->sv_limits_left == 0)
        s->sv_limits_left = s->sv_nconns; /* a new sweep: as many as are open now */
    /* Least recently checked first: each connection checked moves to the tail (new ones join
     * there too), so slices need no cursor that a close could invalidate. A close unlinks (and
     * may free) sc, and may let other connections' input go, whose frames may close them too
     * (core/server_inflight.c): the head is read afresh each time, sc is held while checked. */
    unsigned slice = LIMITS_SWEEP_SLICE, closes = SERVER_LIMITS_CLOSES_PER_TURN;
    struct server_conn *sc;
    while (s->sv_limits_left > 0 && slice > 0 && closes > 0 && (sc = sconn_first(s)) != NULL) {
        /* A close dearer than what is left of the turn's waits for the next turn (first in line
         * then), unless nothing was closed yet: the turn's first close is always made. */
        unsigned cost = limits_close_cost(sc);
        if (cost > closes && closes < SERVER_LIMITS_CLOSES_PER_TURN)
            break;
        s->sv_limits_left--;
        slice--;
        sconn_retain(sc);
        if (sc->sc_conn.c_open && limits_check(sc, now))
            closes = cost >= closes ? 0 : closes - cost;
        if (sconn_first(s) == sc) /* still open and first: to the back of the line */
            sconn_move_to_tail(s, sc);
        sconn_release(sc);
    }
    if (sconn_first(s) == NULL)
        s->sv_limits_left = 0;
    /* More left: the next slice after the loop's next poll, so I/O runs between slices. Cannot
     * fail: see dedup_on_sweep. */
    arpc_deadline_arm_after_s(s->sv_loop, d, s->sv_limits_left > 0 ? 0 : s->sv_limits_every_s);
}

bool limits_start(arpc_server *s)
{
    if (arpc_deadline_is_armed(&s->sv_limits))
        return true;
    /* A quarter of the shortest timeout, so a short one (in tests) fires at most 25% late. */
    double every = LIMITS_SWEEP_MAX_S;
    double shortest[] = {s->sv_handshake_s, s->sv_frame_s, s->sv_idle_s, s->sv_write_s};
    for (size_t i = 0; i < sizeof(shortest) / sizeof(shortest[0]); i++)
        if (shortest[i] > 0 && shortest[i] / 4 < every)
            every = shortest[i] / 4;
    if (every < LIMITS_SWEEP_MIN_S)
        every = LIMITS_SWEEP_MIN_S;
    s->sv_limits_every_s = every;
    arpc_deadline_init(&s->sv_limits, limits_on_sweep, s);
    return arpc_deadline_arm_after_s(s->sv_loop, &s->sv_limits, every) == ARPC_OK;
}

void limits_stop(arpc_server *s) { arpc_deadline_cancel(s->sv_loop, &s->sv_limits); }

bool limits_admit(struct server_conn *sc)
{
    arpc_server *s = sc->sc_server;
    struct arpc_conn *conn = &sc->sc_conn;
    sc->sc_opened = sc->sc_last_busy = arpc_loop_now(conn->c_loop);
    if (s->sv_nconns >= s->sv_max_conns) {
        char why[64];
        snprintf(why, sizeof(why), "%u connections open (max_connections)", s->sv_nconns);
        (void)shed_for_room(s, why); /* a silent, slow or idle one gives its place up */
    }
    if (s->sv_nconns >= s->sv_max_conns) {
        peer_log(conn->c_loop, ARPC_LOG_WARN, "closing the connection from %s: %u connections open (max_connections)",
                 conn->c_peer, s->sv_nconns);
        sconn_send_goaway(conn, ARPC_EOVERLOADED, "too many connections");
        arpc_conn_close_after_flush(conn, ARPC_EOVERLOADED);
        return false;
    }
    if (!limits_start(s)) {
        /* Nothing would hold it to its handshake, frame, idle or write timeout: a stranger
         * that says nothing would keep its place for ever. */
        sconn_refuse_overloaded(sc, sconn_no_memory, "no memory to arm the connection limits' sweep", ARPC_ENOMEM);
        return false;
    }
    sc->sc_counted = true;
    s->sv_nconns++;
    return true;
}

void limits_on_close(struct server_conn *sc)
{
    if (sc->sc_counted)
        sc->sc_server->sv_nconns--;
    sc->sc_counted = false;
}
