/* The tutorial's relay (relay.h): one thread polls the listening socket, the current pair of
 * connections, and a pipe through which the other threads' commands arrive. */
#define _POSIX_C_SOURCE 200809L
#include "relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct relay {
    int listen_fd;
    int client_fd, server_fd; /* -1 when closed; touched by the relay thread only */
    int cmd[2];               /* a pipe: 'c' cut, 'q' quit */
    int done[2];              /* the relay thread writes one byte per command done */
    atomic_bool drop;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_un un;
    } upstream;
    socklen_t upstream_len;
    pthread_t thread;
};

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void close_pair(relay *r)
{
    close_fd(&r->client_fd);
    close_fd(&r->server_fd);
}

/* Copies what is readable on from to to (to < 0, or dropping: thrown away). false at EOF. */
static bool pass(int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0)
        return n < 0 && (errno == EINTR || errno == EAGAIN);
    for (ssize_t off = 0; to >= 0 && off < n;) {
        /* MSG_NOSIGNAL: a peer that closed first is EPIPE, not a SIGPIPE that ends the program */
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        off += w;
    }
    return true;
}

static void take_client(relay *r)
{
    int fd = accept(r->listen_fd, NULL, NULL);
    if (fd < 0)
        return;
    close_pair(r);
    int up = socket(r->upstream.sa.sa_family, SOCK_STREAM, 0);
    if (up < 0 || connect(up, &r->upstream.sa, r->upstream_len) != 0) {
        if (up >= 0)
            close(up);
        close(fd); /* no server: the client sees a refused connection and tries again */
        return;
    }
    r->client_fd = fd;
    r->server_fd = up;
}

static void *relay_main(void *arg)
{
    relay *r = arg;
    for (;;) {
        struct pollfd p[4] = {{.fd = r->cmd[0], .events = POLLIN},
                              {.fd = r->listen_fd, .events = POLLIN},
                              {.fd = r->client_fd, .events = POLLIN},
                              {.fd = r->server_fd, .events = POLLIN}};
        if (poll(p, 4, -1) < 0 && errno != EINTR)
            return NULL;
        if (p[0].revents & POLLIN) {
            char c = 0;
            if (read(r->cmd[0], &c, 1) != 1 || c == 'q') {
                close_pair(r);
                return NULL;
            }
            close_pair(r); /* 'c' */
            atomic_store(&r->drop, false);
            if (write(r->done[1], &c, 1) != 1)
                return NULL;
            continue;
        }
        if (p[1].revents & POLLIN)
            take_client(r);
        else if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!pass(r->client_fd, r->server_fd))
                close_pair(r);
        } else if (p[3].revents & (POLLIN | POLLHUP | POLLERR)) {
            bool drop = atomic_load(&r->drop);
            if (!pass(r->server_fd, drop ? -1 : r->client_fd)) {
                if (drop)
                    close_fd(&r->server_fd); /* the client is left hearing nothing */
                else
                    close_pair(r);
            }
        }
    }
}

int relay_start(relay **out, const char *upstream, char *addr, size_t addrlen)
{
    relay *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -1;
    r->client_fd = r->server_fd = -1;
    unsigned port;
    const char *path = strncmp(upstream, "unix://", 7) == 0 ? upstream + 7 : NULL;
    if (path != NULL && strlen(path) < sizeof r->upstream.un.sun_path) {
        r->upstream.un.sun_family = AF_UNIX;
        memcpy(r->upstream.un.sun_path, path, strlen(path) + 1);
        r->upstream_len = sizeof r->upstream.un;
    } else if (path == NULL && sscanf(upstream, "tcp://127.0.0.1:%u", &port) == 1 && port <= 65535) {
        r->upstream.in.sin_family = AF_INET;
        r->upstream.in.sin_port = htons((uint16_t)port);
        r->upstream.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        r->upstream_len = sizeof r->upstream.in;
    } else {
        free(r);
        errno = EINVAL;
        return -1;
    }
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t melen = sizeof me;
    r->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (r->listen_fd < 0 || bind(r->listen_fd, (struct sockaddr *)&me, sizeof me) != 0 ||
        listen(r->listen_fd, 16) != 0 || getsockname(r->listen_fd, (struct sockaddr *)&me, &melen) != 0 ||
        pipe(r->cmd) != 0 || pipe(r->done) != 0 || pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        free(r); /* an example: the few descriptors are the process's to reclaim */
        return -1;
    }
    snprintf(addr, addrlen, "tcp://127.0.0.1:%u", (unsigned)ntohs(me.sin_port));
    *out = r;
    return 0;
}

void relay_drop_replies(relay *r, bool drop)
{
    atomic_store(&r->drop, drop);
}

void relay_cut(relay *r)
{
    char c = 'c';
    if (write(r->cmd[1], &c, 1) == 1)
        (void)!read(r->done[0], &c, 1); /* wait until the relay thread has closed the pair */
}

void relay_stop(relay *r)
{
    char c = 'q';
    if (write(r->cmd[1], &c, 1) == 1)
        pthread_join(r->thread, NULL);
    close(r->listen_fd);
    close(r->cmd[0]);
    close(r->cmd[1]);
    close(r->done[0]);
    close(r->done[1]);
    free(r);
}
