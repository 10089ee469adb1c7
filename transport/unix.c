/*
 * Unix-domain stream transport: "unix:///absolute/path" (or "unix://relative/path").
 *
 * Design notes.
 *
 * Stale sockets: a server that crashed leaves its socket file behind, and bind then fails
 * with EADDRINUSE. listen probes the file: if it is a socket and a connect to it is refused,
 * nobody listens there and the file is replaced. A live listener (connect accepted, or
 * EAGAIN for a full backlog) or a file that is not a socket gives ARPC_EADDRINUSE: we never
 * delete what someone may still use. Two servers racing for the same stale path can both
 * decide to unlink it; as with every unix-socket server (nng, systemd), the path is meant to
 * belong to one server.
 *
 * Connect timeout: a non-blocking AF_UNIX connect never reports EINPROGRESS; with the
 * listener's backlog full it fails at once with EAGAIN, and there is nothing to poll for.
 * So connect runs on a blocking socket whose SO_SNDTIMEO bounds the kernel's wait for room
 * in the backlog (unix_stream_connect honours it), and the fd is made non-blocking after.
 * A timeout of 0 uses a non-blocking connect instead: EAGAIN is then the timeout.
 *
 * Errors: ARPC_ESYSTEM leaves errno as the failing system call set it.
 */
#define _GNU_SOURCE /* accept4 */
#include "transport/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "arpc/common.h"
#include "arpc/error.h"

/* Connections not yet accepted; the kernel caps it at net.core.somaxconn. */
#define UNIX_BACKLOG 1024
#define UNIX_SCHEME "unix://"

static void close_keep_errno(int fd)
{
    int saved = errno;
    close(fd);
    errno = saved;
}

static int unix_sockaddr(const char *path, struct sockaddr_un *sa, socklen_t *len)
{
    size_t n = strlen(path);
    /* sun_path must hold the path and its NUL: a longer path would be silently cut. */
    if (n == 0 || n >= sizeof(sa->sun_path))
        return ARPC_EADDR;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return ARPC_OK;
}

/* True when sa names a socket nobody listens on and it has been removed. */
static bool unix_remove_stale(const struct sockaddr_un *sa, socklen_t len)
{
    struct stat st;
    if (lstat(sa->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode))
        return false;
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return false;
    int rc = connect(probe, (const struct sockaddr *)sa, len);
    int err = errno;
    close(probe);
    if (rc == 0 || err != ECONNREFUSED)
        return false;
    return unlink(sa->sun_path) == 0 || errno == ENOENT;
}

static int unix_listen_error(int err)
{
    switch (err) {
    case EADDRINUSE:
        return ARPC_EADDRINUSE;
    case ENOENT:  /* a directory on the path does not exist */
    case ENOTDIR: /* a component of the path is not a directory */
    case ENAMETOOLONG:
        return ARPC_EADDR;
    default: /* EACCES, EROFS...: errno says which */
        return ARPC_ESYSTEM;
    }
}

static int unix_bind(int fd, const struct sockaddr_un *sa, socklen_t len)
{
    if (bind(fd, (const struct sockaddr *)sa, len) == 0)
        return ARPC_OK;
    if (errno != EADDRINUSE)
        return unix_listen_error(errno);
    if (!unix_remove_stale(sa, len)) {
        errno = EADDRINUSE; /* the probe's own errno is not the cause */
        return ARPC_EADDRINUSE;
    }
    if (bind(fd, (const struct sockaddr *)sa, len) == 0)
        return ARPC_OK;
    return unix_listen_error(errno);
}

static int unix_listen(const char *rest, int *fd_out, char *bound, size_t boundlen)
{
    struct sockaddr_un sa;
    socklen_t len;
    int rv = unix_sockaddr(rest, &sa, &len);
    if (rv != ARPC_OK)
        return rv;
    if (bound != NULL) {
        /* Checked before anything exists on disk, so failing here leaves nothing behind. */
        int n = snprintf(bound, boundlen, UNIX_SCHEME "%s", rest);
        if (n < 0 || (size_t)n >= boundlen)
            return ARPC_EADDR;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ARPC_ESYSTEM;
    rv = unix_bind(fd, &sa, len);
    if (rv == ARPC_OK && listen(fd, UNIX_BACKLOG) != 0) {
        rv = ARPC_ESYSTEM;
        int saved = errno;
        unlink(sa.sun_path); /* ours: bind created it */
        errno = saved;
    }
    if (rv != ARPC_OK) {
        close_keep_errno(fd);
        return rv;
    }
    *fd_out = fd;
    return ARPC_OK;
}

static int unix_accept(int listen_fd, int *fd_out)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            *fd_out = fd;
            return ARPC_OK;
        }
        switch (errno) {
        case EAGAIN:
            return ARPC_EAGAIN;
        case EINTR:
        case ECONNABORTED: /* the client left before we got to it: take the next */
            continue;
        default: /* EMFILE, ENFILE, ENOBUFS...: the caller must back off, not spin */
            return ARPC_ESYSTEM;
        }
    }
}

static void unix_unlisten(const char *rest, int listen_fd)
{
    struct sockaddr_un sa;
    socklen_t len;
    /* Unlink before closing: once closed, a new server could take the path over (its
     * stale-socket probe would be refused) and we would unlink its socket instead. */
    if (unix_sockaddr(rest, &sa, &len) == ARPC_OK)
        unlink(sa.sun_path);
    close(listen_fd);
}

static int unix_connect_error(int err)
{
    switch (err) {
    case ECONNREFUSED: /* a socket file with no listener */
    case ENOENT:       /* no socket file at all */
        return ARPC_ECONNREFUSED;
    case EAGAIN: /* backlog still full when SO_SNDTIMEO ran out */
        return ARPC_ETIMEDOUT;
    case ENOTDIR:
    case ENAMETOOLONG:
        return ARPC_EADDR;
    default:
        return ARPC_ESYSTEM;
    }
}

static int64_t unix_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Bounds the next blocking connect by what is left of the budget; 0 in SO_SNDTIMEO means
 * no limit, which is what a negative timeout_ms asks for. */
static int unix_set_sndtimeo(int fd, int64_t timeout_ms, int64_t start_ms)
{
    struct timeval tv = {0, 0};
    if (timeout_ms > 0) {
        int64_t left = timeout_ms - (unix_now_ms() - start_ms);
        if (left <= 0) {
            errno = EAGAIN;
            return -1;
        }
        tv.tv_sec = (time_t)(left / 1000);
        tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
    }
    return setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int unix_connect_fd(int fd, const struct sockaddr_un *sa, socklen_t len,
                           int64_t timeout_ms)
{
    int64_t start_ms = unix_now_ms();
    for (;;) {
        if (timeout_ms != 0 && unix_set_sndtimeo(fd, timeout_ms, start_ms) != 0)
            return errno == EAGAIN ? ARPC_ETIMEDOUT : ARPC_ESYSTEM;
        if (connect(fd, (const struct sockaddr *)sa, len) == 0)
            break;
        /* Interrupted while waiting for backlog room: nothing happened yet, so retry
         * with what is left of the budget. */
        if (errno != EINTR)
            return unix_connect_error(errno);
    }
    if (timeout_ms == 0)
        return ARPC_OK; /* already non-blocking, SO_SNDTIMEO untouched */
    /* Restore the default send timeout: it would otherwise apply to later blocking sends
     * if the core ever made the fd blocking. */
    if (unix_set_sndtimeo(fd, -1, 0) != 0)
        return ARPC_ESYSTEM;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return ARPC_ESYSTEM;
    return ARPC_OK;
}

static int unix_connect(const char *rest, int64_t timeout_ms, int *fd_out)
{
    struct sockaddr_un sa;
    socklen_t len;
    int rv = unix_sockaddr(rest, &sa, &len);
    if (rv != ARPC_OK)
        return rv;
    int type = SOCK_STREAM | SOCK_CLOEXEC | (timeout_ms == 0 ? SOCK_NONBLOCK : 0);
    int fd = socket(AF_UNIX, type, 0);
    if (fd < 0)
        return ARPC_ESYSTEM;
    rv = unix_connect_fd(fd, &sa, len, timeout_ms);
    if (rv != ARPC_OK) {
        close_keep_errno(fd);
        return rv;
    }
    *fd_out = fd;
    return ARPC_OK;
}

const struct arpc_transport_ops arpc_transport_unix = {
    .t_scheme = "unix",
    .t_listen = unix_listen,
    .t_accept = unix_accept,
    .t_unlisten = unix_unlisten,
    .t_connect = unix_connect,
};
