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
 * Unlisten removes the socket file only while it is still the one bind made (same device
 * and inode, kept in the listener): a server that has since taken the path over keeps it.
 *
 * Connect: a non-blocking AF_UNIX connect never reports EINPROGRESS. It completes at once,
 * or with the listener's backlog full fails at once with EAGAIN, and there is nothing to
 * poll for. That is ARPC_ECONNREFUSED with errno left at EAGAIN: the caller retries later
 * (the client's reconnect back-off, arpc_transport_connect's retries until its deadline).
 *
 * ENOENT is two causes for a user: a missing directory (a typo, or the service's runtime
 * directory not made yet) or a missing socket file (the server is not running). The
 * message says which, found by looking at the directory.
 */
#include "transport/transport.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "transport/sock.h"

/* Connections not yet accepted; the kernel caps it at net.core.somaxconn. */
#define UNIX_BACKLOG 1024
#define UNIX_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

struct unix_listener {
    struct arpc_listener ul_base;
    struct sockaddr_un ul_sa; /* the path to unlink */
    dev_t ul_dev;             /* the socket file bind made */
    ino_t ul_ino;
};

static int unix_sockaddr(const char *path, struct sockaddr_un *sa, socklen_t *len, char *why,
                         size_t whylen)
{
    size_t n = strlen(path);
    if (n == 0)
        return arpc_sock_why(why, whylen, ARPC_EADDR, "empty unix path");
    /* sun_path must hold the path and its NUL: a longer path would be silently cut. */
    if (n >= UNIX_PATH_MAX)
        return arpc_sock_why(why, whylen, ARPC_EADDR,
                             "unix path too long (%zu bytes, at most %zu): %s", n,
                             UNIX_PATH_MAX - 1, path);
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return ARPC_OK;
}

static int unix_resolve(const char *rest, struct arpc_target *t, char *why, size_t whylen)
{
    int rv = arpc_sock_target_init(t, &arpc_transport_unix, rest, why, whylen);
    if (rv == ARPC_OK)
        rv = unix_sockaddr(rest, (struct sockaddr_un *)&t->t_sa[0], &t->t_salen[0], why, whylen);
    if (rv == ARPC_OK)
        t->t_count = 1;
    return rv;
}

/* True when the directory part of path does not exist (the cause of an ENOENT). */
static bool unix_dir_missing(const char *path)
{
    char dir[UNIX_PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return false; /* relative to the working directory, which exists */
    size_t n = slash == path ? 1 : (size_t)(slash - path); /* "/x.sock": the root */
    memcpy(dir, path, n);
    dir[n] = '\0';
    struct stat st;
    return stat(dir, &st) != 0 && (errno == ENOENT || errno == ENOTDIR);
}

/* The causes that are about the path itself, when listening or connecting: ARPC_OK when err
 * is not one of them. */
static int unix_path_failed(int err, const char *path, int code, char *why, size_t whylen)
{
    if (err == ENOENT && unix_dir_missing(path))
        return arpc_sock_why(why, whylen, code, "no such directory for unix path %s", path);
    if (err == ENOTDIR)
        return arpc_sock_why(why, whylen, code, "not a directory on unix path %s", path);
    if (err == EACCES || err == EPERM)
        return arpc_sock_why(why, whylen, ARPC_ESYSTEM, "permission denied for unix path %s", path);
    return ARPC_OK;
}

static int unix_connect_failed(const struct arpc_target *t, int err, char *why, size_t whylen)
{
    const char *path = ((const struct sockaddr_un *)&t->t_sa[0])->sun_path;
    struct stat st;
    /* A missing directory is retried like a missing server: it may be made at start-up. */
    int rv = unix_path_failed(err, path, ARPC_ECONNREFUSED, why, whylen);
    if (rv == ARPC_OK) {
        if (err == ENOENT)
            rv = arpc_sock_why(why, whylen, ARPC_ECONNREFUSED,
                               "no server at unix path %s (no such file)", path);
        else if (err == ECONNREFUSED && lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
            rv = arpc_sock_why(why, whylen, ARPC_ECONNREFUSED, "unix path %s is not a socket",
                               path);
        else if (err == ECONNREFUSED)
            rv = arpc_sock_why(why, whylen, ARPC_ECONNREFUSED,
                               "nobody listens on unix path %s (stale socket file)", path);
        else if (err == EAGAIN)
            rv = arpc_sock_why(why, whylen, ARPC_ECONNREFUSED, "backlog of unix path %s is full",
                               path);
        else
            rv = arpc_sock_connect_failed(t, 0, err, why, whylen);
    }
    errno = err; /* EAGAIN tells a retrying caller that the server is there */
    return rv;
}

static int unix_connect_start(const struct arpc_target *t, size_t i, int *fd_out, char *why,
                              size_t whylen)
{
    int rv = arpc_sock_connect_start((const struct sockaddr *)&t->t_sa[i], t->t_salen[i], fd_out);
    if (rv != ARPC_OK && rv != ARPC_EAGAIN)
        return unix_connect_failed(t, errno, why, whylen);
    return rv;
}

/* Bind met a file at the path: removes it when it is a socket nobody listens on (see the
 * notes above). ARPC_OK: the path is free; ARPC_EADDRINUSE otherwise. */
static int unix_remove_stale(const struct sockaddr_un *sa, socklen_t len, char *why, size_t whylen)
{
    struct stat st;
    if (lstat(sa->sun_path, &st) == 0 && !S_ISSOCK(st.st_mode))
        return arpc_sock_why(why, whylen, ARPC_EADDRINUSE,
                             "address already in use: unix path %s is a file that is not a socket",
                             sa->sun_path);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, errno,
                                   "probing unix path %s failed", sa->sun_path);
    int rc = connect(probe, (const struct sockaddr *)sa, len);
    int err = errno;
    close(probe);
    if (rc == 0 || err != ECONNREFUSED)
        return arpc_sock_why(why, whylen, ARPC_EADDRINUSE,
                             "address already in use: a server listens on unix path %s",
                             sa->sun_path);
    if (unlink(sa->sun_path) != 0 && errno != ENOENT)
        return arpc_sock_why_errno(why, whylen, ARPC_ESYSTEM, errno,
                                   "removing the stale socket file %s failed", sa->sun_path);
    return ARPC_OK;
}

static int unix_listen_failed(int err, const char *path, char *why, size_t whylen)
{
    int rv = unix_path_failed(err, path, ARPC_EADDR, why, whylen);
    if (rv == ARPC_OK) {
        char what[sizeof("unix path ") + UNIX_PATH_MAX];
        snprintf(what, sizeof(what), "unix path %s", path);
        rv = arpc_sock_listen_failed(err, what, why, whylen);
    }
    errno = err;
    return rv;
}

/* Binds fd to sa, replacing a stale socket file, and listens. */
static int unix_bind_listen(int fd, const struct sockaddr_un *sa, socklen_t len, char *why,
                            size_t whylen)
{
    int rv = ARPC_OK;
    if (bind(fd, (const struct sockaddr *)sa, len) != 0) {
        if (errno != EADDRINUSE)
            return unix_listen_failed(errno, sa->sun_path, why, whylen);
        rv = unix_remove_stale(sa, len, why, whylen);
        if (rv != ARPC_OK)
            return rv;
        if (bind(fd, (const struct sockaddr *)sa, len) != 0)
            return unix_listen_failed(errno, sa->sun_path, why, whylen);
    }
    if (listen(fd, UNIX_BACKLOG) != 0) {
        rv = unix_listen_failed(errno, sa->sun_path, why, whylen);
        unlink(sa->sun_path); /* ours: bind made it */
    }
    return rv;
}

/* Makes ul a listener on rest: socket, bind (replacing a stale file), listen. On failure
 * ul->ul_base.l_fd is -1 or a socket for the caller to close. */
static int unix_open(struct unix_listener *ul, const char *rest, char *why, size_t whylen)
{
    int rv = arpc_sock_listener_init(&ul->ul_base, &arpc_transport_unix, rest, why, whylen);
    if (rv != ARPC_OK)
        return rv;
    socklen_t len = 0;
    rv = unix_sockaddr(rest, &ul->ul_sa, &len, why, whylen);
    if (rv != ARPC_OK)
        return rv;
    ul->ul_base.l_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ul->ul_base.l_fd < 0)
        return unix_listen_failed(errno, rest, why, whylen);
    rv = unix_bind_listen(ul->ul_base.l_fd, &ul->ul_sa, len, why, whylen);
    if (rv != ARPC_OK)
        return rv;
    struct stat st;
    if (lstat(ul->ul_sa.sun_path, &st) == 0) { /* else gone already: nothing to unlink */
        ul->ul_dev = st.st_dev;
        ul->ul_ino = st.st_ino;
    }
    return ARPC_OK;
}

static int unix_listen(const char *rest, struct arpc_listener **out, char *why, size_t whylen)
{
    struct unix_listener *ul = arpc_calloc(1, sizeof(*ul));
    if (ul == NULL)
        return arpc_sock_why(why, whylen, ARPC_ENOMEM, "out of memory listening on unix path %s",
                             rest);
    int rv = unix_open(ul, rest, why, whylen);
    if (rv != ARPC_OK) {
        if (ul->ul_base.l_fd >= 0)
            arpc_sock_close_keep_errno(ul->ul_base.l_fd);
        arpc_free(ul);
        return rv;
    }
    *out = &ul->ul_base;
    return ARPC_OK;
}

static void unix_unlisten(struct arpc_listener *l)
{
    struct unix_listener *ul = (struct unix_listener *)l;
    /* Unlink before closing: once closed, a new server could take the path over (its
     * stale-socket probe would be refused) between our check and our unlink. */
    struct stat st;
    if (lstat(ul->ul_sa.sun_path, &st) == 0 && st.st_dev == ul->ul_dev && st.st_ino == ul->ul_ino)
        unlink(ul->ul_sa.sun_path);
    close(l->l_fd);
    arpc_free(ul);
}

const struct arpc_transport_ops arpc_transport_unix = {
    .t_scheme = "unix",
    .t_resolve = unix_resolve,
    .t_connect_start = unix_connect_start,
    .t_connect_done = arpc_sock_connect_done, /* never needed: see the notes above */
    .t_listen = unix_listen,
    .t_accept = arpc_sock_accept,
    .t_unlisten = unix_unlisten,
    .t_peer_creds = arpc_sock_peer_creds,
};
