/*
 * In-process transport: "inproc://NAME", reachable from this process only.
 *
 * Design notes.
 *
 * A connection is a socketpair, so the core reads and writes it exactly like a tcp or unix
 * connection. connect queues one end on the listener and returns the other at once (it
 * never waits: the queue has no limit); accept pops the queued end. The listener's l_fd is
 * an eventfd in semaphore mode whose counter equals the number of queued ends: it polls
 * readable exactly while a connection waits, and each accept consumes one count. Queue and
 * counter change together under the registry lock, so they never disagree.
 *
 * The registry (name -> listener) is the transport's only global state. One mutex guards
 * it and every listener's queue, which is fine: it is taken by listen, connect, accept and
 * unlisten, i.e. once or twice per connection and never per message, and held only for
 * list walks and O(1) queue operations. Few inproc listeners exist at once, so a list beats
 * a hash table.
 */
#include "transport/transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "transport/sock.h"

#define INPROC_QUEUE_MIN 8

struct inproc_listener {
    struct arpc_listener il_base; /* il_base.l_fd: the eventfd; its counter == il_count */
    struct inproc_listener *il_next;
    int *il_queue;  /* ring of server ends waiting for accept */
    size_t il_head; /* index of the oldest waiting end */
    size_t il_count; /* ends waiting */
    size_t il_cap;  /* slots in il_queue */
    char il_name[]; /* NUL-terminated */
};

/* Guards inproc_listeners and every listener's queue; see the notes above. */
static pthread_mutex_t inproc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct inproc_listener *inproc_listeners;

/* Requires inproc_lock. */
static struct inproc_listener *inproc_find_name(const char *name)
{
    struct inproc_listener *l = inproc_listeners;
    while (l != NULL && strcmp(l->il_name, name) != 0)
        l = l->il_next;
    return l;
}

/* Requires inproc_lock. */
static void inproc_unregister(struct inproc_listener *l)
{
    struct inproc_listener **p = &inproc_listeners;
    while (*p != l)
        p = &(*p)->il_next;
    *p = l->il_next;
}

/* Requires inproc_lock. Makes room for one more queued end, keeping FIFO order. */
static int inproc_reserve(struct inproc_listener *l)
{
    if (l->il_count < l->il_cap)
        return ARPC_OK;
    size_t cap = l->il_cap == 0 ? INPROC_QUEUE_MIN : l->il_cap * 2;
    int *q = arpc_calloc(cap, sizeof(*q));
    if (q == NULL)
        return ARPC_ENOMEM;
    for (size_t i = 0; i < l->il_count; i++)
        q[i] = l->il_queue[(l->il_head + i) % l->il_cap];
    arpc_free(l->il_queue);
    l->il_queue = q;
    l->il_head = 0;
    l->il_cap = cap;
    return ARPC_OK;
}

/* Requires inproc_lock. Queues the server end and counts it on the eventfd. */
static int inproc_enqueue(struct inproc_listener *l, int server_end)
{
    int rv = inproc_reserve(l);
    if (rv != ARPC_OK)
        return rv;
    if (eventfd_write(l->il_base.l_fd, 1) != 0)
        return ARPC_ESYSTEM; /* only on counter overflow: 2^64 - 2 waiting connections */
    l->il_queue[(l->il_head + l->il_count) % l->il_cap] = server_end;
    l->il_count++;
    return ARPC_OK;
}

static int inproc_resolve(const char *rest, struct arpc_target *t, char *why, size_t whylen)
{
    int rv = arpc_sock_target_init(t, &arpc_transport_inproc, rest, why, whylen);
    if (rv == ARPC_OK && rest[0] == '\0')
        rv = arpc_sock_why(why, whylen, ARPC_EADDR, "empty inproc name");
    if (rv == ARPC_OK)
        t->t_count = 1; /* no sockaddr: connect finds the name in t_addr */
    return rv;
}

static int inproc_connect_start(const struct arpc_target *t, size_t i, int *fd_out, char *why,
                                size_t whylen)
{
    (void)i;
    const char *name = arpc_sock_target_rest(t);
    /* Made before taking the lock to keep the lock's hold short. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, errno, "connecting to %s failed",
                                   t->t_addr);
    pthread_mutex_lock(&inproc_lock);
    struct inproc_listener *l = inproc_find_name(name);
    int rv = l == NULL ? ARPC_ECONNREFUSED : inproc_enqueue(l, sv[0]);
    pthread_mutex_unlock(&inproc_lock);
    if (rv == ARPC_OK) {
        *fd_out = sv[1];
        return ARPC_OK;
    }
    arpc_sock_close_keep_errno(sv[0]);
    arpc_sock_close_keep_errno(sv[1]);
    if (rv == ARPC_ECONNREFUSED) {
        errno = ECONNREFUSED; /* not EAGAIN: nothing to wait for (transport.h) */
        return arpc_sock_why(why, whylen, rv, "no listener named %s", t->t_addr);
    }
    if (rv == ARPC_ENOMEM)
        return arpc_sock_why(why, whylen, rv, "out of memory queueing a connection to %s",
                             t->t_addr);
    return arpc_sock_why_errno(why, whylen, rv, errno, "queueing a connection to %s failed",
                               t->t_addr);
}

static void inproc_destroy(struct inproc_listener *l)
{
    /* Closing the queued ends shows their connectors EOF, as a reset would over TCP. */
    for (size_t i = 0; i < l->il_count; i++)
        close(l->il_queue[(l->il_head + i) % l->il_cap]);
    if (l->il_base.l_fd >= 0)
        close(l->il_base.l_fd);
    arpc_free(l->il_queue);
    arpc_free(l);
}

static int inproc_listen(const char *rest, struct arpc_listener **out, char *why, size_t whylen)
{
    size_t namelen = strlen(rest) + 1;
    struct inproc_listener *l = arpc_calloc(1, sizeof(*l) + namelen);
    if (l == NULL)
        return arpc_sock_why(why, whylen, ARPC_ENOMEM, "out of memory for inproc listener %s", rest);
    memcpy(l->il_name, rest, namelen);
    int rv = arpc_sock_listener_init(&l->il_base, &arpc_transport_inproc, rest, why, whylen);
    if (rv == ARPC_OK && rest[0] == '\0')
        rv = arpc_sock_why(why, whylen, ARPC_EADDR, "empty inproc name");
    if (rv == ARPC_OK) {
        l->il_base.l_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
        if (l->il_base.l_fd < 0)
            rv = arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, errno, "listening on %s failed",
                                     l->il_base.l_addr);
    }
    if (rv == ARPC_OK) {
        pthread_mutex_lock(&inproc_lock);
        if (inproc_find_name(rest) != NULL) {
            rv = ARPC_EADDRINUSE;
        } else {
            l->il_next = inproc_listeners;
            inproc_listeners = l;
        }
        pthread_mutex_unlock(&inproc_lock);
        if (rv != ARPC_OK)
            arpc_sock_why(why, whylen, rv, "address already in use: %s", l->il_base.l_addr);
    }
    if (rv != ARPC_OK) {
        inproc_destroy(l);
        return rv;
    }
    *out = &l->il_base;
    return ARPC_OK;
}

static int inproc_accept(struct arpc_listener *base, int *fd_out, char *peer, size_t peerlen,
                         char *why, size_t whylen)
{
    (void)why; /* nothing here can fail but "none waits" */
    (void)whylen;
    struct inproc_listener *l = (struct inproc_listener *)base;
    int rv = ARPC_EAGAIN;
    pthread_mutex_lock(&inproc_lock);
    if (l->il_count > 0) {
        /* The counter equals il_count > 0, so this semaphore read cannot fail. */
        eventfd_t one;
        (void)eventfd_read(base->l_fd, &one);
        *fd_out = l->il_queue[l->il_head];
        l->il_head = (l->il_head + 1) % l->il_cap;
        l->il_count--;
        rv = ARPC_OK;
    }
    pthread_mutex_unlock(&inproc_lock);
    if (rv == ARPC_OK)
        arpc_sock_peer_name(base, NULL, peer, peerlen);
    return rv;
}

static void inproc_unlisten(struct arpc_listener *base)
{
    struct inproc_listener *l = (struct inproc_listener *)base;
    pthread_mutex_lock(&inproc_lock);
    inproc_unregister(l);
    pthread_mutex_unlock(&inproc_lock);
    /* Unregistered: no connect can queue on it any more, so finish outside the lock. */
    inproc_destroy(l);
}

const struct arpc_transport_ops arpc_transport_inproc = {
    .t_scheme = "inproc",
    .t_resolve = inproc_resolve,
    .t_connect_start = inproc_connect_start,
    .t_connect_done = arpc_sock_connect_done, /* never needed: connect is immediate */
    .t_listen = inproc_listen,
    .t_accept = inproc_accept,
    .t_unlisten = inproc_unlisten,
    .t_peer_creds = arpc_sock_peer_creds,
};
