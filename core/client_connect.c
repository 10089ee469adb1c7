/*
 * Getting a connection, on the loop thread, without ever blocking it.
 *
 * An attempt tries the target's addresses in turn (resolved at arpc_client_connect, and again
 * off the loop when reconnects to a name keep failing, client_lookup.c: an attempt never
 * waits on a name lookup): a non-blocking connect, then, when the socket
 * turns writable, its outcome; a connected socket is adopted and says HELLO; the attempt
 * succeeds when the server's HELLO comes back (client_conn.c). One timer bounds the whole
 * attempt (connect_timeout_ms). A failed attempt is recorded (arpc_client_last_error) and,
 * once the client has been connected before, followed by another after a back-off:
 * exponential with jitter (base/backoff.h), from reconnect_min_ms up to reconnect_max_ms,
 * reset by a success. The very first attempt is arpc_client_connect's: its failure is
 * returned to the caller instead, unless connect_in_background (then it is a reconnect's).
 */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/client_internal.h"

static void connect_close_fd(struct client_connector *cn, arpc_loop *loop)
{
    arpc_loop_io_stop(loop, &cn->cn_io);
    if (cn->cn_fd >= 0) {
        close(cn->cn_fd);
        cn->cn_fd = -1;
    }
}

static void connect_try_next(arpc_client *c, int rc, const char *why);
static bool connect_backlog_wait(arpc_client *c, const char *why);

/* An attempt's time limit: connect_timeout_ms, or without one (negative) the heartbeat's
 * bound, heartbeat_ms x (misses + 1), where the attempt has no connection to beat on yet. */
static int64_t connect_limit_ms(const arpc_client *c)
{
    return c->cl_connect_timeout_ms >= 0 ? c->cl_connect_timeout_ms
                                         : (int64_t)c->cl_heartbeat_ms * (c->cl_heartbeat_misses + 1);
}

/* Pauses between tries of a unix listener whose backlog is full: from 1 ms, growing to 50 ms
 * at most, as arpc_transport_connect's (transport/transport.c). */
#define BACKLOG_RETRY_BASE_MS 1
#define BACKLOG_RETRY_MAX_MS 50

static void connect_on_writable(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    arpc_client *c = w->data;
    struct client_connector *cn = &c->cl_connector;
    char why[CLIENT_WHY_MAX];
    int fd = cn->cn_fd;
    (void)ev;
    arpc_loop_io_stop(c->cl_loop, w);
    int rc = c->cl_target.t_ops->t_connect_done(&c->cl_target, cn->cn_index, fd, why, sizeof(why));
    if (rc == ARPC_OK) {
        cn->cn_fd = -1;
        client_conn_adopt(c, fd);
        return;
    }
    connect_close_fd(cn, c->cl_loop);
    cn->cn_index++;
    connect_try_next(c, rc, why);
}

/* Starts the next address of the target; the last failure when none is left. */
static void connect_try_next(arpc_client *c, int rc, const char *why)
{
    struct client_connector *cn = &c->cl_connector;
    const struct arpc_target *t = &c->cl_target;
    char buf[CLIENT_WHY_MAX];
    while (cn->cn_index < t->t_count) {
        int fd = -1;
        rc = t->t_ops->t_connect_start(t, cn->cn_index, &fd, buf, sizeof(buf));
        if (rc == ARPC_OK) {
            client_conn_adopt(c, fd);
            return;
        }
        if (rc == ARPC_EAGAIN) {
            cn->cn_fd = fd;
            ev_io_init(&cn->cn_io, connect_on_writable, fd, EV_WRITE);
            cn->cn_io.data = c;
            arpc_loop_io_start(c->cl_loop, &cn->cn_io);
            return;
        }
        if (rc == ARPC_ECONNREFUSED && errno == EAGAIN && connect_backlog_wait(c, buf))
            return;
        why = buf;
        cn->cn_index++;
    }
    client_connect_failed(c, rc, why);
}

/* A unix listener's full backlog (ARPC_ECONNREFUSED, errno EAGAIN: transport/unix.c) has
 * nothing to poll for: the address is tried again after a pause, within the attempt's time
 * limit, as a TCP connect waits in a full backlog. Failing at once, a stranger flooding a
 * socket it may not use (a paused listener's backlog fills) failed every new client's connect
 * (an attacker's trial). False (no memory for the timer): the next address, as before. */
static bool connect_backlog_wait(arpc_client *c, const char *why)
{
    struct client_connector *cn = &c->cl_connector;
    if (!cn->cn_backlog_said) { /* once an attempt; said at INFO for arpc_client_connect's */
        cn->cn_backlog_said = true;
        arpc_log(client_first_awaited(c) ? ARPC_LOG_INFO : ARPC_LOG_DEBUG,
                 "%s: trying again within the connect timeout", why);
    }
    /* No connect timeout: the heartbeat's bound, which ends a wait for a HELLO that never
     * comes, ends this one too (else a backlog that stays full held the connect for ever). */
    if (!arpc_deadline_is_armed(&cn->cn_timer) &&
        arpc_deadline_arm(c->cl_loop, &cn->cn_timer, arpc_deadline_from_ms(connect_limit_ms(c))) != ARPC_OK)
        return false;
    uint64_t at = arpc_deadline_from_ms(arpc_backoff_next_ms(&cn->cn_backlog_backoff));
    return arpc_deadline_arm(c->cl_loop, &cn->cn_backlog_retry, at) == ARPC_OK;
}

void client_connect_on_backlog_retry(struct arpc_deadline *d, void *arg)
{
    (void)d;
    connect_try_next(arg, ARPC_ECONNREFUSED, "no address to try");
}

void client_connect_on_timer(struct arpc_deadline *d, void *arg)
{
    (void)d;
    arpc_client *c = arg;
    struct client_connector *cn = &c->cl_connector;
    if (cn->cn_waiting) { /* the back-off is over */
        cn->cn_waiting = false;
        client_connect_start(c);
        return;
    }
    char why[CLIENT_WHY_MAX];
    bool tls = c->cl_target.t_ops == &arpc_transport_tls; /* its handshake comes first */
    snprintf(why, sizeof(why), "connecting to %s timed out after %lld ms (%s)", c->cl_target.t_addr,
             (long long)connect_limit_ms(c),
             arpc_deadline_is_armed(&cn->cn_backlog_retry) ? "the unix listener's backlog stayed full"
             : !c->cl_conn.c_open                          ? "no connection"
             : tls                                         ? "the server did not finish the TLS handshake and say HELLO"
                                : "the server did not say HELLO");
    connect_close_fd(cn, c->cl_loop);
    if (c->cl_conn.c_open) {
        /* Connected, but the server never said HELLO: closing it ends the attempt, and the
         * close must report this reason, not a peer that went away. */
        client_set_error(c, ARPC_ETIMEDOUT, why);
        cn->cn_abort_code = ARPC_ETIMEDOUT;
        arpc_conn_close(&c->cl_conn, ARPC_ETIMEDOUT);
        return;
    }
    client_connect_failed(c, ARPC_ETIMEDOUT, why);
}

void client_connect_start(arpc_client *c)
{
    struct client_connector *cn = &c->cl_connector;
    arpc_deadline_cancel(c->cl_loop, &cn->cn_timer);
    cn->cn_waiting = false;
    cn->cn_attempting = true;
    cn->cn_abort_code = 0;
    cn->cn_index = 0;
    arpc_backoff_init(&cn->cn_backlog_backoff, BACKLOG_RETRY_BASE_MS, BACKLOG_RETRY_MAX_MS, arpc_now_ns());
    cn->cn_backlog_said = false;
    client_lookup_take(c);
    if (c->cl_connect_timeout_ms >= 0 &&
        arpc_deadline_arm(c->cl_loop, &cn->cn_timer, arpc_deadline_from_ms(c->cl_connect_timeout_ms)) != ARPC_OK) {
        client_connect_failed(c, ARPC_ENOMEM, "out of memory arming the connect timeout");
        return;
    }
    connect_try_next(c, ARPC_ECONNREFUSED, "no address to try");
}

void client_connect_later(arpc_client *c)
{
    struct client_connector *cn = &c->cl_connector;
    cn->cn_waiting = true;
    if (arpc_deadline_arm(c->cl_loop, &cn->cn_timer, arpc_deadline_from_ms(arpc_backoff_next_ms(&cn->cn_backoff))) == ARPC_OK)
        return;
    /* No memory for the timer that brings the next attempt: no connection comes by itself.
     * The calls waiting end now (those never sent did not run), the held one-way messages are
     * dropped, and the client parks: its next call starts an attempt, as after an idle close.
     * Before, a call without a deadline waited for ever; ending the client for good instead
     * would end a long-lived client for one failed allocation (review 237). */
    cn->cn_waiting = false;
    char why[CLIENT_WHY_MAX];
    snprintf(why, sizeof(why), "out of memory arming the reconnect back-off to %s: the next call tries again",
             c->cl_target.t_addr);
    arpc_log(ARPC_LOG_ERROR, "client: %s", why);
    client_set_error(c, ARPC_ENOMEM, why);
    client_drop_held_oneways(c, why);
    calls_fail_all(c, ARPC_ECONNLOST);
    cn->cn_parked = true;
}

void client_connect_stop(arpc_client *c)
{
    struct client_connector *cn = &c->cl_connector;
    arpc_deadline_cancel(c->cl_loop, &cn->cn_timer);
    arpc_deadline_cancel(c->cl_loop, &cn->cn_backlog_retry);
    connect_close_fd(cn, c->cl_loop);
    cn->cn_waiting = false;
    cn->cn_attempting = false;
    cn->cn_parked = false;
}

/* Whether messages held wait on after a failed attempt: a client connecting in the background
 * that has not had its first connection keeps trying, and they wait for it, as its calls do. */
static bool held_wait_on(arpc_client *c)
{
    return c->cl_background && c->cl_reconnect && atomic_load(&c->cl_connections) == 0 &&
           atomic_load(&c->cl_state) == CL_CONNECTING;
}

void client_connect_failed(arpc_client *c, int code, const char *why)
{
    client_connect_stop(c);
    if (!held_wait_on(c))
        client_drop_held_oneways(c, why); /* the connection they waited for did not come */
    client_set_error(c, code, why);
    if (client_first_awaited(c)) {
        arpc_future_complete(c->cl_first, code, NULL, 0); /* arpc_client_connect reports it */
        return;
    }
    if (!c->cl_reconnect && atomic_load(&c->cl_state) == CL_CONNECTING) {
        /* In the background, never connected, and no reconnect: no connection will come. */
        atomic_store(&c->cl_lost_reason, ARPC_EUNREACHABLE);
        atomic_store(&c->cl_state, CL_LOST);
    }
    int state = atomic_load(&c->cl_state);
    if (state == CL_LOST) /* refused by a GOAWAY: no connection will come for them */
        calls_refused(c, client_unavailable_reason(c));
    if (state == CL_CLOSED || state == CL_LOST)
        return;
    /* Said, sparingly: a client whose server stays down otherwise waits in silence until its
     * calls' deadlines or reconnect_give_up_ms (an operator's trial). The first failed attempt
     * of an outage, then a line every CLIENT_ATTEMPTS_LOG_NS with how many failed meanwhile. */
    uint64_t unlogged = 0;
    if (arpc_log_throttle_due(&c->cl_attempts_log, arpc_now_coarse_ns(), CLIENT_ATTEMPTS_LOG_NS, 1, &unlogged)) {
        char more[96];
        arpc_log(ARPC_LOG_INFO, "no connection to %s yet: %s; trying again%s", c->cl_target.t_addr, why,
                 arpc_log_throttle_more(more, sizeof(more), unlogged, "failed attempts"));
    }
    arpc_log(ARPC_LOG_DEBUG, "reconnecting to %s: %s", c->cl_target.t_addr, why);
    client_lookup_maybe_start(c); /* the server may have moved: its answer is there by the next attempt, or a later one */
    client_connect_later(c);
}
