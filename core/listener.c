/*
 * Accepting connections, on the loop thread: one ev_io per listening socket, a bounded accept
 * loop per readiness, and a pause instead of a spin when accepting fails (the listening socket
 * stays readable, and a level-triggered loop would spin).
 *
 * Out of file descriptors (EMFILE, ENFILE), pausing alone would leave the pending clients
 * waiting for nothing until descriptors free up. So each listener keeps a spare descriptor
 * (/dev/null): on EMFILE it closes the spare, accepts the pending connection, sends it a
 * GOAWAY (ARPC_EOVERLOADED, one non-blocking send) and closes it at once, then reopens the
 * spare. The client hears why at once, and the backlog drains. Before that, an open connection
 * worth less than the new one (silent, slow, or idle for a while: core/server_shed.c) gives
 * its descriptor up, at most one per readiness.
 *
 * Over max_accept_rate (core/accept_rate.c), or owing for faulty connections over
 * max_fault_rate (core/fault_rate.c), the listener stops its watcher and arms l_retry for when
 * a few tokens are due, instead of accepting and closing: the pending connections wait in the
 * kernel's backlog, which costs the server nothing. The same l_retry serves every pause (only
 * one can be under way: the watcher is stopped during any).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "core/frame.h"
#include "core/peer_log.h"
#include "core/server_internal.h"
#include "transport/tls.h"
#include "transport/transport.h"

#define LISTENER_ACCEPT_BATCH 4 /* per readiness: a loop turn with new connections stays short */
#define LISTENER_PAUSE_S 0.1
#define LISTENER_FAIL_LOG_EVERY_NS 10000000000ull /* a lasting failure pauses 10 times a second */

struct server_listener {
    ev_io l_io;
    struct arpc_deadline l_retry; /* accepting again after a pause */
    struct arpc_log_throttle l_fail_log; /* of those pauses for a failed accept */
    struct arpc_listener *l_sock; /* the transport's */
    struct arpc_tls *l_tls;       /* tls://: the server's context; NULL: plain */
    int l_spare;                  /* /dev/null, given up to shed a connection on EMFILE; -1: none */
    bool l_rated;                 /* gated by max_accept_rate, max_fault_rate (every transport but inproc) */
    uint64_t l_rate_paused_at;    /* arpc_now_ns when it stopped for a rate; 0: not stopped for one */
    struct listener_gate *l_paused_by; /* ... for this gate's wait (the server's accept or fault gate) */
    struct listener_gate *l_fault_gate; /* its connections' (core/fault_rate.c); NULL: inproc */
    arpc_server *l_server;
    struct server_listener *l_next;
};

/* A pause for a rate ends (its resume, or the listener's close): its time is counted. */
static void listener_rate_pause_ends(struct server_listener *l)
{
    if (l->l_rate_paused_at == 0)
        return;
    listener_gate_resumed(l->l_paused_by, arpc_now_ns() - l->l_rate_paused_at);
    l->l_rate_paused_at = 0;
}

static void listener_on_retry(struct arpc_deadline *d, void *arg)
{
    (void)d;
    struct server_listener *l = arg;
    listener_rate_pause_ends(l);
    arpc_loop_io_start(l->l_server->sv_loop, &l->l_io);
}

/* Nanoseconds until n more connections may be accepted (0: now): the later of max_accept_rate's
 * tokens and the end of max_fault_rate's debt; *by is the gate that waits longer. For a rated
 * listener only (it has a fault gate). */
static uint64_t listener_wait_ns(struct server_listener *l, uint64_t now, unsigned n, struct listener_gate **by)
{
    arpc_server *s = l->l_server;
    uint64_t tokens = listener_gate_wait_ns(&s->sv_accept_gate, now, n);
    uint64_t debt = listener_gate_wait_ns(l->l_fault_gate, now, 1);
    *by = debt > tokens ? l->l_fault_gate : &s->sv_accept_gate;
    return debt > tokens ? debt : tokens;
}

/* No token for the connection waiting, or faults owed: stop polling the socket until the
 * tokens of one millisecond are due, up to an accept batch (one at a time would be a stop, a
 * timer and a start per connection at high rates; more than a millisecond's would keep a
 * connection waiting past its token at low ones), and the debt is paid. False if the resume
 * could not be armed (no memory): then the listener accepts on, unlimited, rather than stop
 * for good. */
static bool listener_pause_for_rate(struct server_listener *l, uint64_t now)
{
    arpc_server *s = l->l_server;
    unsigned per_ms = s->sv_accept_gate.lg_rate / 1000;
    unsigned n = per_ms < 1 ? 1 : per_ms > LISTENER_ACCEPT_BATCH ? LISTENER_ACCEPT_BATCH : per_ms;
    struct listener_gate *by;
    uint64_t wait = listener_wait_ns(l, now, n, &by);
    if (arpc_deadline_arm(s->sv_loop, &l->l_retry, now + wait) != ARPC_OK)
        return false;
    arpc_loop_io_stop(s->sv_loop, &l->l_io);
    l->l_rate_paused_at = now;
    l->l_paused_by = by;
    listener_gate_paused(by, l->l_sock->l_addr, now);
    return true;
}

void listener_refuse_raw(int fd, bool tls, const char *msg)
{
    uint8_t goaway[ARPC_ERROR_FIXED_SIZE + ARPC_FRAME_HEADER_SIZE + LISTENER_REFUSE_MSG_MAX];
    size_t len = strnlen(msg, LISTENER_REFUSE_MSG_MAX);
    size_t n = arpc_frame_encode_error(goaway, ARPC_FRAME_GOAWAY, 0, ARPC_EOVERLOADED, 0, msg, (uint16_t)len);
    /* A new socket's buffer takes the frame whole; a short write or a signal is finished all
     * the same (a cut frame would tell the client it met no arpc server). Full or gone: the
     * close says the rest. */
    for (size_t off = 0; !tls && off < n;) {
        ssize_t w = send(fd, goaway + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0)
            off += (size_t)w;
        else if (!(w < 0 && errno == EINTR))
            break;
    }
}

static int listener_open_spare(void) { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

/* Out of descriptors: accepts one pending connection with the spare's, tells it why and
 * closes it (taking a max_accept_rate token: it cost as much as any), at now. False when
 * there was no spare (then the caller pauses). */
static bool listener_shed(struct server_listener *l, int accept_errno, uint64_t now)
{
    if (l->l_spare < 0 && (l->l_spare = listener_open_spare()) < 0)
        return false;
    close(l->l_spare);
    l->l_spare = -1;
    int fd;
    char peer[ARPC_ADDR_MAX] = "?", why[ARPC_WHY_MAX];
    int rc = l->l_sock->l_ops->t_accept(l->l_sock, &fd, peer, sizeof(peer), why, sizeof(why));
    if (rc == ARPC_OK) {
        listener_refuse_raw(fd, l->l_tls != NULL, "server out of file descriptors");
        close(fd);
        peer_log(l->l_server->sv_loop, ARPC_LOG_WARN,
                 "accept on %s: out of file descriptors (%s): connection from %s shed", l->l_sock->l_addr,
                 accept_errno == ENFILE ? "ENFILE" : "EMFILE", peer);
        if (l->l_rated)
            accept_rate_took(l->l_server, now);
    }
    l->l_spare = listener_open_spare(); /* -1 if another thread took the descriptor: retried */
    return rc == ARPC_OK || rc == ARPC_EAGAIN;
}

/* The peer's credentials where the transport has them (unix, inproc), taken now: they are
 * the connecting process's, whatever it does later. NULL where unknown. */
static const struct arpc_peer_creds *listener_peer_creds(struct server_listener *l, int fd,
                                                         struct arpc_peer_creds *creds)
{
    const struct arpc_transport_ops *ops = l->l_sock->l_ops;
    if (ops->t_peer_creds == NULL)
        return NULL;
    if (ops->t_peer_creds(fd, creds) != ARPC_OK) {
        arpc_log(ARPC_LOG_WARN, "accept on %s: the peer's credentials are unknown (SO_PEERCRED: errno %d)",
                 l->l_sock->l_addr, errno);
        return NULL;
    }
    return creds;
}

static void listener_on_readable(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    struct server_listener *l = w->data;
    bool made_room = false; /* once per readiness: if its descriptor did not free, shed the new one */
    uint64_t now = l->l_rated ? arpc_now_ns() : 0; /* a batch takes microseconds: one reading */
    for (int i = 0; i < LISTENER_ACCEPT_BATCH; i++) {
        /* Out of tokens, or faults owed: pause only if a connection is known to wait (the
         * readiness this callback is for); later in the batch, leave it to the next readiness. */
        struct listener_gate *by;
        if (l->l_rated && listener_wait_ns(l, now, 1, &by) != 0 && (i > 0 || listener_pause_for_rate(l, now)))
            return;
        int fd;
        char peer[ARPC_ADDR_MAX], why[ARPC_WHY_MAX];
        struct arpc_peer_creds creds;
        int rc = l->l_sock->l_ops->t_accept(l->l_sock, &fd, peer, sizeof(peer), why, sizeof(why));
        if (rc == ARPC_EAGAIN)
            return;
        if (rc == ARPC_ESYSTEM && (errno == EMFILE || errno == ENFILE)) {
            int err = errno;
            if (!made_room && shed_for_room(l->l_server, err == ENFILE ? "out of file descriptors (ENFILE)"
                                                                       : "out of file descriptors (EMFILE)")) {
                made_room = true;
                continue; /* accepted with the descriptor an older, idle or slow connection gave up */
            }
            if (listener_shed(l, err, now))
                continue;
        }
        if (rc != ARPC_OK) {
            if (arpc_deadline_arm_after_s(l->l_server->sv_loop, &l->l_retry, LISTENER_PAUSE_S) != ARPC_OK)
                return; /* no memory for the pause: keep accepting (level-triggered: we come back) */
            uint64_t quiet; /* why says "accept on ... failed: " already (the transport's) */
            char more[64];
            if (arpc_log_throttle_due(&l->l_fail_log, arpc_now_coarse_ns(), LISTENER_FAIL_LOG_EVERY_NS, 1, &quiet))
                arpc_log(ARPC_LOG_WARN, "%s; pausing 100 ms%s", why, arpc_log_throttle_more(more, sizeof(more), quiet, "pauses"));
            arpc_loop_io_stop(l->l_server->sv_loop, &l->l_io);
            return;
        }
        if (l->l_rated)
            accept_rate_took(l->l_server, now);
        sconn_open(l->l_server, fd, peer, l->l_sock->l_ops->t_scheme, listener_peer_creds(l, fd, &creds), l->l_tls);
    }
}

struct server_listener *listener_new(arpc_server *s, const char *addr, size_t boundlen, int *rc)
{
    const char *rest;
    char why[ARPC_WHY_MAX];
    const struct arpc_transport_ops *tr = arpc_transport_find(addr, &rest);
    if (tr == NULL) {
        /* Said, as every other listen failure is: "127.0.0.1:7000" alone is an easy slip. */
        *rc = arpc_transport_find_failed(addr, why, sizeof(why));
        arpc_log(ARPC_LOG_WARN, "cannot listen: %s", why);
        return NULL;
    }
    struct server_listener *l = arpc_calloc(1, sizeof(*l));
    if (l == NULL) {
        *rc = ARPC_ENOMEM;
        return NULL;
    }
    bool unix_path = tr == &arpc_transport_unix;
    if (tr == &arpc_transport_tls && s->sv_tls == NULL && arpc_tls_built()) {
        /* Before the bind: refused, the port was never ours (nor its errors: EADDRINUSE).
         * A build without TLS lets t_listen say so instead. */
        *rc = ARPC_EINVAL;
        snprintf(why, sizeof(why), "%s: the server has no TLS certificate (arpc_server_options.tls)", addr);
    } else if (unix_path && (s->sv_unix_mode & ~0777u) != 0) {
        *rc = ARPC_EINVAL;
        snprintf(why, sizeof(why), "unix_mode %#o has bits beyond 0777", (unsigned)s->sv_unix_mode);
    } else {
        *rc = tr->t_listen(rest, &l->l_sock, why, sizeof(why));
    }
    if (*rc == ARPC_OK && unix_path && s->sv_unix_mode != 0 && chmod(rest, (mode_t)s->sv_unix_mode) != 0) {
        *rc = ARPC_ESYSTEM;
        snprintf(why, sizeof(why), "chmod %#o on unix path %s: %s", (unsigned)s->sv_unix_mode, rest,
                 strerror(errno));
        tr->t_unlisten(l->l_sock);
    }
    size_t bound_len = *rc == ARPC_OK && boundlen > 0 ? strlen(l->l_sock->l_addr) : 0;
    if (boundlen > 0 && bound_len >= boundlen) {
        *rc = ARPC_ETOOLARGE;
        snprintf(why, sizeof(why), "%s is bound as %zu bytes, %zu with its NUL, and bound has room for %zu",
                 addr, bound_len, bound_len + 1, boundlen);
        tr->t_unlisten(l->l_sock);
    }
    if (*rc != ARPC_OK) {
        arpc_log(ARPC_LOG_WARN, "cannot listen: %s", why);
        arpc_free(l);
        return NULL;
    }
    l->l_tls = tr == &arpc_transport_tls ? s->sv_tls : NULL;
    l->l_server = s;
    l->l_fault_gate = fault_gate(s, tr->t_scheme); /* NULL for inproc, which no gate limits */
    l->l_rated = l->l_fault_gate != NULL && (s->sv_accept_gate.lg_rate != 0 || l->l_fault_gate->lg_rate != 0);
    l->l_spare = listener_open_spare(); /* without one (-1), EMFILE only pauses */
    return l;
}

const char *listener_addr(const struct server_listener *l) { return l->l_sock->l_addr; }

void listener_discard(struct server_listener *l)
{
    l->l_sock->l_ops->t_unlisten(l->l_sock);
    if (l->l_spare >= 0)
        close(l->l_spare);
    arpc_free(l);
}

bool listener_start(struct server_listener *l)
{
    arpc_server *s = l->l_server;
    if (atomic_load(&s->sv_state) != SV_RUNNING) {
        listener_discard(l); /* a stop overtook this listen: never start accepting */
        return false;
    }
    ev_io_init(&l->l_io, listener_on_readable, l->l_sock->l_fd, EV_READ);
    /* In a loop turn where connections have frames too, their callbacks run first: a flood of
     * connects does not make the frames of established clients wait behind accept batches. */
    ev_set_priority(&l->l_io, EV_MINPRI);
    arpc_deadline_init(&l->l_retry, listener_on_retry, l);
    l->l_io.data = l;
    arpc_loop_io_start(s->sv_loop, &l->l_io);
    l->l_next = s->sv_listeners;
    s->sv_listeners = l;
    dedup_start(s); /* clients the reply log brought back expire even if none connects */
    return true;
}

/* Stops accepting on l, taken off the server's list, and frees it. */
static void listener_end(struct server_listener *l)
{
    arpc_server *s = l->l_server;
    arpc_loop_io_stop(s->sv_loop, &l->l_io);
    arpc_deadline_cancel(s->sv_loop, &l->l_retry);
    listener_rate_pause_ends(l); /* a pause cut short by the stop counts too */
    listener_discard(l);
}

void listener_close(arpc_server *s, struct server_listener *l)
{
    struct server_listener **p = &s->sv_listeners;
    while (*p != NULL && *p != l)
        p = &(*p)->l_next;
    if (*p == NULL)
        return; /* a stop closed it already (l is freed) */
    *p = l->l_next;
    listener_end(l);
}

void listener_close_all(arpc_server *s)
{
    while (s->sv_listeners != NULL) {
        struct server_listener *l = s->sv_listeners;
        s->sv_listeners = l->l_next;
        listener_end(l);
    }
}
