/* A TCP proxy whose connections can be cut (support/cut_proxy.h). */
#define _GNU_SOURCE
#include "support/cut_proxy.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "transport/transport.h"

#define PROXY_MAX_PAIRS 64

struct cut_proxy {
    pthread_t p_thread;
    struct arpc_listener *p_listener;
    char p_target[256];
    int p_wake;               /* eventfd: a cut or a stop was asked for */
    atomic_int p_cut_asked;   /* cuts asked for */
    atomic_int p_cut_done;    /* cuts done, and how many connections they closed in total */
    atomic_int p_cut_closed;
    atomic_int p_accepted;
    atomic_bool p_stop;
    atomic_bool p_swallow;    /* server-side bytes are dropped */
    atomic_bool p_hold_new;   /* new connections wait in the backlog */
    atomic_bool p_cut_silent; /* the cut asked for closes the server sides only */
    atomic_long p_first_only; /* > 0: a new pair forwards this many client bytes, drops the rest */
    int p_fds[PROXY_MAX_PAIRS][2]; /* client side, server side; -1 when unused */
    long p_client_left[PROXY_MAX_PAIRS]; /* client bytes the pair still forwards; < 0: all */
};

static void proxy_close_pair(struct cut_proxy *p, int i)
{
    close(p->p_fds[i][0]);
    if (p->p_fds[i][1] >= 0)
        close(p->p_fds[i][1]);
    p->p_fds[i][0] = p->p_fds[i][1] = -1;
}

/* Cuts every pair open now: both sides, or (silent) the server's only, after which what the
 * client sends is read and dropped. Returns how many it cut. */
static int proxy_cut_all(struct cut_proxy *p, bool silent)
{
    int closed = 0;
    for (int i = 0; i < PROXY_MAX_PAIRS; i++) {
        if (p->p_fds[i][0] < 0 || (silent && p->p_fds[i][1] < 0))
            continue;
        if (silent) {
            close(p->p_fds[i][1]);
            p->p_fds[i][1] = -1;
        } else
            proxy_close_pair(p, i);
        closed++;
    }
    return closed;
}

/* Moves what is readable from one side to the other (or drops it: drop, or no other side;
 * past *left bytes if *left >= 0, counted down); false when the pair is done. */
static bool proxy_pump(int from, int to, bool drop, long *left)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0)
        return false;
    if (drop || to < 0)
        return true;
    if (*left >= 0) {
        if (n > *left)
            n = (ssize_t)*left;
        *left -= n;
    }
    for (ssize_t off = 0; off < n;) {
        /* Non-blocking, without SIGPIPE: a side that reads nothing (or is gone) cannot hold the
         * proxy's thread, and with it cut_proxy_cut, for ever. */
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return false; /* that side is gone */
        if (w < 0) {
            struct pollfd pw = {.fd = to, .events = POLLOUT};
            if (poll(&pw, 1, 1000) <= 0)
                return false;
            continue;
        }
        off += w;
    }
    return true;
}

static void proxy_accept(struct cut_proxy *p)
{
    int cfd, sfd;
    char peer[256];
    if (p->p_listener->l_ops->t_accept(p->p_listener, &cfd, peer, sizeof(peer), NULL, 0) != ARPC_OK)
        return;
    if (arpc_transport_connect(p->p_target, 5000, &sfd, NULL, 0) != ARPC_OK) {
        close(cfd);
        return;
    }
    for (int i = 0; i < PROXY_MAX_PAIRS; i++) {
        if (p->p_fds[i][0] < 0) {
            p->p_fds[i][0] = cfd;
            p->p_fds[i][1] = sfd;
            long first = atomic_load(&p->p_first_only);
            p->p_client_left[i] = first > 0 ? first : -1;
            atomic_fetch_add(&p->p_accepted, 1);
            return;
        }
    }
    close(cfd);
    close(sfd);
}

static void *proxy_main(void *arg)
{
    struct cut_proxy *p = arg;
    while (!atomic_load(&p->p_stop)) {
        struct pollfd pf[2 + 2 * PROXY_MAX_PAIRS];
        int map[2 + 2 * PROXY_MAX_PAIRS];
        int n = 0;
        /* A negative fd is not polled: held, new connections wait in the backlog. */
        pf[n++] = (struct pollfd){.fd = atomic_load(&p->p_hold_new) ? -1 : p->p_listener->l_fd, .events = POLLIN};
        pf[n++] = (struct pollfd){.fd = p->p_wake, .events = POLLIN};
        for (int i = 0; i < PROXY_MAX_PAIRS; i++) {
            for (int side = 0; side < 2 && p->p_fds[i][0] >= 0 && p->p_fds[i][side] >= 0; side++) {
                map[n] = i * 2 + side;
                pf[n++] = (struct pollfd){.fd = p->p_fds[i][side], .events = POLLIN};
            }
        }
        if (poll(pf, (nfds_t)n, -1) < 0)
            continue;
        if (pf[1].revents) {
            uint64_t v;
            if (read(p->p_wake, &v, sizeof(v)) < 0)
                v = 0;
            int asked = atomic_load(&p->p_cut_asked);
            if (asked != atomic_load(&p->p_cut_done)) {
                atomic_store(&p->p_cut_closed, proxy_cut_all(p, atomic_exchange(&p->p_cut_silent, false)));
                atomic_store(&p->p_cut_done, asked);
            }
            continue; /* the fd set changed */
        }
        for (int k = 2; k < n; k++) {
            if (!pf[k].revents)
                continue;
            int i = map[k] / 2, side = map[k] % 2;
            long all = -1;
            if (p->p_fds[i][0] >= 0 && !proxy_pump(p->p_fds[i][side], p->p_fds[i][!side], side == 1 && atomic_load(&p->p_swallow),
                                                   side == 0 ? &p->p_client_left[i] : &all))
                proxy_close_pair(p, i);
        }
        if (pf[0].revents)
            proxy_accept(p);
    }
    return NULL;
}

struct cut_proxy *cut_proxy_start(const char *target, char *addr, size_t addrlen)
{
    struct cut_proxy *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        p->p_fds[i][0] = p->p_fds[i][1] = -1;
    snprintf(p->p_target, sizeof(p->p_target), "%s", target);
    p->p_wake = eventfd(0, EFD_CLOEXEC);
    if (arpc_transport_tcp.t_listen("127.0.0.1:0", &p->p_listener, NULL, 0) != ARPC_OK) {
        close(p->p_wake);
        free(p);
        return NULL;
    }
    snprintf(addr, addrlen, "%s", p->p_listener->l_addr);
    pthread_create(&p->p_thread, NULL, proxy_main, p);
    return p;
}

int cut_proxy_cut(struct cut_proxy *p)
{
    int asked = atomic_fetch_add(&p->p_cut_asked, 1) + 1;
    uint64_t one = 1;
    if (write(p->p_wake, &one, sizeof(one)) < 0)
        return -1;
    while (atomic_load(&p->p_cut_done) != asked) /* the proxy thread does it at once */
        sched_yield();
    return atomic_load(&p->p_cut_closed);
}

int cut_proxy_cut_silently(struct cut_proxy *p)
{
    atomic_store(&p->p_cut_silent, true);
    return cut_proxy_cut(p);
}

void cut_proxy_swallow_replies(struct cut_proxy *p, bool on) { atomic_store(&p->p_swallow, on); }

void cut_proxy_forward_first(struct cut_proxy *p, long bytes) { atomic_store(&p->p_first_only, bytes); }

void cut_proxy_hold_new(struct cut_proxy *p, bool on)
{
    atomic_store(&p->p_hold_new, on);
    uint64_t one = 1;
    if (write(p->p_wake, &one, sizeof(one)) < 0) /* the proxy's poll takes the change at once */
        return;
}

int cut_proxy_accepted(struct cut_proxy *p) { return atomic_load(&p->p_accepted); }

void cut_proxy_stop(struct cut_proxy *p)
{
    atomic_store(&p->p_stop, true);
    uint64_t one = 1;
    if (write(p->p_wake, &one, sizeof(one)) < 0)
        return;
    pthread_join(p->p_thread, NULL);
    for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        if (p->p_fds[i][0] >= 0)
            proxy_close_pair(p, i);
    p->p_listener->l_ops->t_unlisten(p->p_listener);
    close(p->p_wake);
    free(p);
}
