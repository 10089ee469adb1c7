/*
 * Out of room for a new connection, on the loop thread: out of file descriptors (before the
 * listener turns the new connection away, core/listener.c) or at max_connections (before
 * limits_admit refuses it), an open connection that is worth less gives its place up, the
 * way nginx reuses idle keep-alive connections when it runs out. Worth least, in order:
 *
 *   1. a connection that has not said HELLO for SHED_SLOW_S (an attacker's silent socket);
 *   2. one whose frame has been arriving for SHED_SLOW_S (slowloris);
 *   3. one idle for shed_idle_ms (5 s): HELLO done, no call in flight, nothing queued or arriving.
 *      It is told GOAWAY(ARPC_ESHUTDOWN), the client's word for "reconnect when next
 *      needed", as the idle timeout does.
 *
 * The oldest of the best class goes. A connection with calls in flight or replies queued is
 * never chosen: nothing is lost to make room. Only the first SHED_SCAN connections of
 * sv_conns are looked at (the least recently swept first, see core/server_limits.c), so a
 * flood at the descriptor limit costs bounded work per accept.
 */
#include "arpc/error.h"
#include "base/log.h"
#include "core/peer_log.h"
#include "core/server_internal.h"

#define SHED_SLOW_S 1.0
#define SHED_SCAN 1024

enum shed_class { SHED_NONE, SHED_IDLE, SHED_SLOW_FRAME, SHED_NO_HELLO };

/* sc's class and how long it has been in it (seconds). */
static enum shed_class shed_classify(struct server_conn *sc, double now, double *age)
{
    struct arpc_conn *conn = &sc->sc_conn;
    if (!conn->c_open || conn->c_close_after_flush)
        return SHED_NONE; /* going anyway */
    if (!sc->sc_hello) {
        *age = now - sc->sc_opened;
        return *age >= SHED_SLOW_S ? SHED_NO_HELLO : SHED_NONE;
    }
    if (sconn_has_work(sc))
        return SHED_NONE; /* nothing is lost to make room */
    double frame = arpc_conn_frame_age(conn, now);
    if (frame > 0) {
        *age = frame;
        return frame >= SHED_SLOW_S ? SHED_SLOW_FRAME : SHED_NONE;
    }
    *age = now - sc->sc_last_busy;
    return *age >= sc->sc_server->sv_shed_idle_s ? SHED_IDLE : SHED_NONE;
}

bool shed_for_room(arpc_server *s, const char *why)
{
    double now = arpc_loop_now_update(s->sv_loop); /* the connections' times are the loop's */
    struct server_conn *victim = NULL;
    enum shed_class best = SHED_NONE;
    double best_age = 0;
    unsigned seen = 0;
    for (struct server_conn *sc = sconn_first(s); sc != NULL && seen < SHED_SCAN; sc = sconn_next(sc), seen++) {
        double age = 0;
        enum shed_class c = shed_classify(sc, now, &age);
        if (c > best || (c == best && c != SHED_NONE && age > best_age)) {
            victim = sc;
            best = c;
            best_age = age;
        }
    }
    if (victim == NULL)
        return false;
    struct arpc_conn *conn = &victim->sc_conn;
    static const char *const what[] = {
        [SHED_IDLE] = "idle for",
        [SHED_SLOW_FRAME] = "a frame arriving for",
        [SHED_NO_HELLO] = "no HELLO for",
    };
    peer_log(conn->c_loop, ARPC_LOG_WARN, "closing the connection from %s to make room: %s; %s %.0f ms", conn->c_peer,
             why, what[best], best_age * 1000);
    sconn_retain(victim); /* a failed flush closes (and may free) it */
    if (best == SHED_IDLE) {
        sconn_send_idle_goaway(conn, "idle connection closed to make room for a new one");
        arpc_conn_flush_now(conn); /* an idle socket's buffer has room for it */
    }
    /* Closed now, not after a flush: its descriptor is what the listener is waiting for. */
    arpc_conn_close(conn, best == SHED_IDLE ? ARPC_ESHUTDOWN : ARPC_EOVERLOADED);
    sconn_release(victim);
    return true;
}
