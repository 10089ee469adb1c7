/*
 * Accepting connections, on the loop thread: one ev_io per listening socket, a bounded accept
 * loop per readiness, and a pause instead of a spin when accepting fails (e.g. out of file
 * descriptors: the listening socket stays readable, and a level-triggered loop would spin).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/log.h"
#include "core/server_internal.h"
#include "transport/transport.h"

#define LISTENER_ACCEPT_BATCH 64 /* per readiness, so one busy listener cannot starve the loop */
#define LISTENER_PAUSE_S 0.1

struct server_listener {
    ev_io l_io;
    ev_timer l_retry;
    int l_fd;
    const struct arpc_transport_ops *l_tr;
    char l_rest[ARPC_ADDR_MAX];
    char l_addr[ARPC_ADDR_MAX];
    arpc_server *l_server;
    struct server_listener *l_next;
};

/* For log lines: "tcp://10.1.2.3:5555" for a tcp peer, the listener's address otherwise
 * (unix and inproc peers have no address of their own). */
static void describe_peer(int fd, const struct server_listener *l, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        ss.ss_family = AF_UNSPEC;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "tcp://%s:%u", host, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "tcp://[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        snprintf(out, outlen, "%s", l->l_addr);
    }
}

static void listener_on_retry(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)revents;
    struct server_listener *l = w->data;
    ev_io_start(ev, &l->l_io);
}

static void listener_on_readable(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    struct server_listener *l = w->data;
    for (int i = 0; i < LISTENER_ACCEPT_BATCH; i++) {
        int fd;
        int rc = l->l_tr->t_accept(l->l_fd, &fd);
        if (rc == ARPC_EAGAIN)
            return;
        if (rc != ARPC_OK) {
            arpc_log(ARPC_LOG_WARN, "accept on %s failed: %s; pausing 100 ms", l->l_addr, arpc_strerror(rc));
            ev_io_stop(ev, &l->l_io);
            ev_timer_set(&l->l_retry, LISTENER_PAUSE_S, 0.);
            ev_timer_start(ev, &l->l_retry);
            return;
        }
        char peer[ARPC_ADDR_MAX];
        describe_peer(fd, l, peer, sizeof(peer));
        sconn_open(l->l_server, fd, peer);
    }
}

struct server_listener *listener_new(arpc_server *s, const char *addr, char *bound, size_t boundlen, int *rc)
{
    const char *rest;
    const struct arpc_transport_ops *tr = arpc_transport_find(addr, &rest);
    if (tr == NULL || strlen(addr) >= ARPC_ADDR_MAX) {
        *rc = ARPC_EADDR;
        return NULL;
    }
    struct server_listener *l = arpc_calloc(1, sizeof(*l));
    if (l == NULL) {
        *rc = ARPC_ENOMEM;
        return NULL;
    }
    *rc = tr->t_listen(rest, &l->l_fd, l->l_addr, sizeof(l->l_addr));
    if (*rc != ARPC_OK) {
        arpc_free(l);
        return NULL;
    }
    l->l_tr = tr;
    l->l_server = s;
    snprintf(l->l_rest, sizeof(l->l_rest), "%s", rest);
    if (bound != NULL && boundlen > 0)
        snprintf(bound, boundlen, "%s", l->l_addr);
    return l;
}

void listener_discard(struct server_listener *l)
{
    l->l_tr->t_unlisten(l->l_rest, l->l_fd);
    arpc_free(l);
}

void listener_start(struct server_listener *l)
{
    arpc_server *s = l->l_server;
    if (atomic_load(&s->sv_state) != SV_RUNNING) {
        listener_discard(l); /* a stop overtook this listen: never start accepting */
        return;
    }
    struct ev_loop *ev = arpc_loop_ev(s->sv_loop);
    ev_io_init(&l->l_io, listener_on_readable, l->l_fd, EV_READ);
    ev_timer_init(&l->l_retry, listener_on_retry, LISTENER_PAUSE_S, 0.);
    l->l_io.data = l->l_retry.data = l;
    ev_io_start(ev, &l->l_io);
    l->l_next = s->sv_listeners;
    s->sv_listeners = l;
}

void listener_close_all(arpc_server *s)
{
    struct ev_loop *ev = arpc_loop_ev(s->sv_loop);
    while (s->sv_listeners != NULL) {
        struct server_listener *l = s->sv_listeners;
        s->sv_listeners = l->l_next;
        ev_io_stop(ev, &l->l_io);
        ev_timer_stop(ev, &l->l_retry);
        listener_discard(l);
    }
}
