/*
 * In-process transport: "inproc://NAME", reachable from this process only.
 *
 * Design notes.
 *
 * A connection is a socketpair, so the core reads and writes it exactly like a tcp or unix
 * connection. connect queues one end on the listener and returns the other; accept pops
 * the queued end. The listener's "listening fd" is an eventfd in semaphore mode whose
 * counter equals the number of queued ends: it polls readable exactly while a connection
 * waits, and each accept consumes one count. Queue and counter change together under the
 * registry lock, so they never disagree.
 *
 * The registry (name -> listener) is the transport's only global state. One mutex guards
 * it, which is fine: it is taken by listen, connect, accept and unlisten, i.e. once or
 * twice per connection and never per message, and held only for list walks and O(1)
 * queue operations. Few inproc listeners exist at once, so a list beats a hash table.
 */
#include "transport/transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/common.h"
#include "arpc/error.h"
#include "base/alloc.h"

#define INPROC_SCHEME "inproc://"
/* Longest name + 1: "inproc://NAME" must fit in ARPC_ADDR_MAX bytes with its NUL. */
#define INPROC_NAME_MAX (ARPC_ADDR_MAX - (sizeof(INPROC_SCHEME) - 1))
#define INPROC_QUEUE_MIN 8

struct inproc_listener {
    struct inproc_listener *il_next;
    int il_efd;       /* the "listening fd"; its counter == il_count */
    int *il_queue;    /* ring of server ends waiting for accept */
    size_t il_head;   /* index of the oldest waiting end */
    size_t il_count;  /* ends waiting */
    size_t il_cap;    /* slots in il_queue */
    char il_name[];   /* NUL-terminated */
};

/* Guards inproc_listeners and every listener's queue; see the notes above. */
static pthread_mutex_t inproc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct inproc_listener *inproc_listeners;

static int inproc_check_name(const char *name)
{
    size_t n = strnlen(name, INPROC_NAME_MAX);
    return n == 0 || n == INPROC_NAME_MAX ? ARPC_EADDR : ARPC_OK;
}

/* Requires inproc_lock. */
static struct inproc_listener *inproc_find_name(const char *name)
{
    struct inproc_listener *l = inproc_listeners;
    while (l != NULL && strcmp(l->il_name, name) != 0)
        l = l->il_next;
    return l;
}

/* Requires inproc_lock. Unlinks and returns the listener whose eventfd is efd. */
static struct inproc_listener *inproc_take_efd(int efd)
{
    for (struct inproc_listener **p = &inproc_listeners; *p != NULL; p = &(*p)->il_next) {
        if ((*p)->il_efd == efd) {
            struct inproc_listener *l = *p;
            *p = l->il_next;
            return l;
        }
    }
    return NULL;
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

static void inproc_destroy(struct inproc_listener *l)
{
    /* Closing the queued ends shows their connectors EOF, as a reset would over TCP. */
    for (size_t i = 0; i < l->il_count; i++)
        close(l->il_queue[(l->il_head + i) % l->il_cap]);
    close(l->il_efd);
    arpc_free(l->il_queue);
    arpc_free(l);
}

static int inproc_listen(const char *rest, int *fd_out, char *bound, size_t boundlen)
{
    int rv = inproc_check_name(rest);
    if (rv != ARPC_OK)
        return rv;
    if (bound != NULL) {
        int n = snprintf(bound, boundlen, INPROC_SCHEME "%s", rest);
        if (n < 0 || (size_t)n >= boundlen)
            return ARPC_EADDR;
    }
    size_t namelen = strlen(rest) + 1;
    struct inproc_listener *l = arpc_calloc(1, sizeof(*l) + namelen);
    if (l == NULL)
        return ARPC_ENOMEM;
    memcpy(l->il_name, rest, namelen);
    l->il_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
    if (l->il_efd < 0) {
        arpc_free(l);
        return ARPC_ESYSTEM;
    }
    pthread_mutex_lock(&inproc_lock);
    rv = inproc_find_name(rest) != NULL ? ARPC_EADDRINUSE : ARPC_OK;
    if (rv == ARPC_OK) {
        l->il_next = inproc_listeners;
        inproc_listeners = l;
    }
    pthread_mutex_unlock(&inproc_lock);
    if (rv != ARPC_OK) {
        inproc_destroy(l);
        return rv;
    }
    *fd_out = l->il_efd;
    return ARPC_OK;
}

static int inproc_accept(int listen_fd, int *fd_out)
{
    int rv = ARPC_EAGAIN;
    pthread_mutex_lock(&inproc_lock);
    struct inproc_listener *l = inproc_listeners;
    while (l != NULL && l->il_efd != listen_fd)
        l = l->il_next;
    if (l == NULL) {
        rv = ARPC_ESYSTEM;
        errno = EBADF; /* not a listening fd of ours */
    } else if (l->il_count > 0) {
        /* The counter equals il_count > 0, so this semaphore read cannot fail. */
        eventfd_t one;
        (void)eventfd_read(l->il_efd, &one);
        *fd_out = l->il_queue[l->il_head];
        l->il_head = (l->il_head + 1) % l->il_cap;
        l->il_count--;
        rv = ARPC_OK;
    }
    pthread_mutex_unlock(&inproc_lock);
    return rv;
}

static void inproc_unlisten(const char *rest, int listen_fd)
{
    (void)rest; /* the eventfd identifies the listener without a string compare */
    pthread_mutex_lock(&inproc_lock);
    struct inproc_listener *l = inproc_take_efd(listen_fd);
    pthread_mutex_unlock(&inproc_lock);
    /* Unregistered: no connect can queue on it any more, so finish outside the lock. */
    if (l != NULL)
        inproc_destroy(l);
    else
        close(listen_fd);
}

/* Requires inproc_lock. Queues the server end and counts it on the eventfd. */
static int inproc_enqueue(struct inproc_listener *l, int server_end)
{
    int rv = inproc_reserve(l);
    if (rv != ARPC_OK)
        return rv;
    if (eventfd_write(l->il_efd, 1) != 0)
        return ARPC_ESYSTEM; /* only on counter overflow: 2^64 - 2 waiting connections */
    l->il_queue[(l->il_head + l->il_count) % l->il_cap] = server_end;
    l->il_count++;
    return ARPC_OK;
}

static int inproc_connect(const char *rest, int64_t timeout_ms, int *fd_out)
{
    (void)timeout_ms; /* never blocks: the queue has no limit */
    int rv = inproc_check_name(rest);
    if (rv != ARPC_OK)
        return rv;
    /* Made before taking the lock to keep the lock's hold short. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return ARPC_ESYSTEM;
    pthread_mutex_lock(&inproc_lock);
    struct inproc_listener *l = inproc_find_name(rest);
    rv = l == NULL ? ARPC_ECONNREFUSED : inproc_enqueue(l, sv[0]);
    pthread_mutex_unlock(&inproc_lock);
    if (rv != ARPC_OK) {
        int saved = errno;
        close(sv[0]);
        close(sv[1]);
        errno = saved;
        return rv;
    }
    *fd_out = sv[1];
    return ARPC_OK;
}

const struct arpc_transport_ops arpc_transport_inproc = {
    .t_scheme = "inproc",
    .t_listen = inproc_listen,
    .t_accept = inproc_accept,
    .t_unlisten = inproc_unlisten,
    .t_connect = inproc_connect,
};
