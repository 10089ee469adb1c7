/*
 * What only the unix transport has: path limits, relative paths, stale socket files (and
 * files that are not sockets), unlisten removing only its own file, full backlogs, and its
 * error lines (missing directory, stale socket, not a socket, permission, backlog full).
 * The behaviour every transport shares is in transport_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "arpc/error.h"
#include "support/test_util.h"
#include "support/transport_fixture.h"

static const char *path_of(const char *addr) { return addr + strlen("unix://"); }

static void s_unix_path_limits(void **state)
{
    (void)state;
    struct sockaddr_un sun;
    char path[sizeof(sun.sun_path) + 1];
    struct arpc_listener *l = NULL;
    struct arpc_target t;
    char why[ARPC_WHY_MAX] = "";
    /* The longest path sun_path holds (with its NUL) works... */
    int n = snprintf(path, sizeof(path), "/tmp/arpc-test-%d-", (int)getpid());
    memset(path + n, 'p', sizeof(sun.sun_path) - 1 - (size_t)n);
    path[sizeof(sun.sun_path) - 1] = '\0';
    assert_int_equal(ARPC_OK, arpc_transport_unix.t_listen(path, &l, why, sizeof(why)));
    assert_string_equal(path, path_of(l->l_addr));
    lsn_close(l);
    /* ...one byte more does not. */
    path[sizeof(sun.sun_path) - 1] = 'p';
    path[sizeof(sun.sun_path)] = '\0';
    l = NULL;
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_listen(path, &l, why, sizeof(why)));
    assert_why(why, "unix path too long");
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_resolve(path, &t, why, sizeof(why)));
    assert_why(why, "unix path too long");
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_listen("", &l, why, sizeof(why)));
    assert_why(why, "empty unix path");
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_resolve("", &t, why, sizeof(why)));
    assert_null(l);
}

/* A unix listener made without the transport, with the backlog the test needs. */
static int raw_unix_listener(const char *path, int backlog)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof(sun.sun_path));
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(0, bind(fd, (struct sockaddr *)&sun, sizeof(sun)));
    assert_int_equal(0, listen(fd, backlog));
    return fd;
}

/* A crashed server's socket file: refused to clients, replaced by the next listen. */
static void s_unix_stale_socket_replaced(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    make_unix_addr(addr, sizeof(addr));
    const char *path = path_of(addr);
    close(raw_unix_listener(path, 1)); /* the file stays, nobody listens */
    struct stat st;
    assert_int_equal(0, lstat(path, &st));
    int fd = -1;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_ECONNREFUSED, arpc_transport_connect(addr, CONNECT_MS, &fd, why, sizeof(why)));
    assert_why(why, "nobody listens on unix path", path, "stale socket file");

    struct arpc_listener *l = lsn_open(addr);
    check_connects(l);
    lsn_close(l);
    assert_int_equal(-1, lstat(path, &st)); /* unlisten removed the file */
    assert_int_equal(ENOENT, errno);
}

/* A file that is not a socket is never deleted to make room. */
static void s_unix_regular_file_kept(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    make_unix_addr(addr, sizeof(addr));
    const char *path = path_of(addr);
    int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(f >= 0);
    close(f);
    struct arpc_listener *l = NULL;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_EADDRINUSE, arpc_transport_unix.t_listen(path, &l, why, sizeof(why)));
    assert_why(why, "address already in use", path, "not a socket");
    int fd = -1;
    assert_int_equal(ARPC_ECONNREFUSED, arpc_transport_connect(addr, CONNECT_MS, &fd, why, sizeof(why)));
    assert_why(why, path, "is not a socket");
    struct stat st;
    assert_int_equal(0, lstat(path, &st));
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(0, unlink(path));
}

/* A server that took the path over keeps its socket file when the old listener goes. */
static void s_unix_unlisten_keeps_successor(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    make_unix_addr(addr, sizeof(addr));
    struct arpc_listener *old = lsn_open(addr);
    assert_int_equal(0, unlink(path_of(addr))); /* e.g. removed by an operator */
    struct arpc_listener *successor = lsn_open(addr);
    lsn_close(old);
    check_connects(successor);
    lsn_close(successor);
    assert_int_equal(-1, access(path_of(addr), F_OK));
}

static void s_unix_relative_path(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "unix://arpc-test-%d-rel.sock", (int)getpid());
    struct arpc_listener *l = lsn_open(addr);
    assert_string_equal(addr, l->l_addr);
    int c;
    assert_int_equal(ARPC_OK, dial(l, &c));
    char peer[ARPC_ADDR_MAX];
    int s = accept_wait_peer(l, peer);
    assert_string_equal(addr, peer);
    close(c);
    close(s);
    lsn_close(l);
    assert_int_equal(-1, access(path_of(addr), F_OK));
}

/* "No such directory" and "no such file" are different mistakes, said differently. */
static void s_unix_missing_directory(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "unix:///tmp/arpc-test-%d-nodir/x.sock", (int)getpid());
    const char *path = path_of(addr);
    int fd = -1;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_ECONNREFUSED, arpc_transport_connect(addr, CONNECT_MS, &fd, why, sizeof(why)));
    assert_why(why, "no such directory for unix path", path);
    struct arpc_listener *l = NULL;
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_listen(path, &l, why, sizeof(why)));
    assert_why(why, "no such directory for unix path", path);
    assert_null(l);
    make_unix_addr(addr, sizeof(addr)); /* a directory that exists, no file in it */
    assert_int_equal(ARPC_ECONNREFUSED, arpc_transport_connect(addr, CONNECT_MS, &fd, why, sizeof(why)));
    assert_why(why, "no server at unix path", path_of(addr), "no such file");
    assert_int_equal(-1, fd);
}

/* Root passes every permission check: the test drops to "nobody" for the connect. */
static void s_unix_permission_denied(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    make_unix_addr(addr, sizeof(addr));
    struct arpc_listener *l = lsn_open(addr);
    assert_int_equal(0, chmod(path_of(addr), 0600));
    uid_t euid = geteuid();
    if (euid == 0 && seteuid(65534) != 0) {
        lsn_close(l);
        skip(); /* root without the right to change its own uid */
    }
    int fd = -1;
    char why[ARPC_WHY_MAX] = "";
    int rv = arpc_transport_connect(addr, CONNECT_MS, &fd, why, sizeof(why));
    if (euid == 0)
        assert_int_equal(0, seteuid(0));
    lsn_close(l);
    assert_int_equal(ARPC_ESYSTEM, rv);
    assert_why(why, "permission denied for unix path", path_of(addr));
}

/* Fills a backlog-0 listener with non-blocking connects until one is turned away; returns how
 * many got in (their fds in fds). */
static int fill_backlog(const struct arpc_target *t, int *fds, int cap, char *why)
{
    for (int n = 0; n < cap; n++) {
        int rv = t->t_ops->t_connect_start(t, 0, &fds[n], why, ARPC_WHY_MAX);
        if (rv != ARPC_OK) {
            assert_int_equal(ARPC_ECONNREFUSED, rv);
            assert_int_equal(EAGAIN, errno); /* "there, but no room": retry later */
            return n;
        }
    }
    fail_msg("backlog never filled after %d connects", cap);
    return cap;
}

struct later {
    const char *l_addr;
    int l_fd, l_rv;
};

static void *connect_later(void *arg)
{
    struct later *c = arg;
    c->l_rv = arpc_transport_connect(c->l_addr, 60000, &c->l_fd, NULL, 0);
    return NULL;
}

/* A full backlog: start refuses at once (retry later); the blocking connect retries until
 * its deadline, and gets in as soon as there is room. */
static void s_unix_backlog_full(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    make_unix_addr(addr, sizeof(addr));
    const char *path = path_of(addr);
    int lfd = raw_unix_listener(path, 0);
    struct arpc_target t;
    assert_int_equal(ARPC_OK, arpc_transport_resolve(addr, &t, NULL, 0));
    int fds[64];
    char why[ARPC_WHY_MAX] = "";
    int n = fill_backlog(&t, fds, 64, why);
    assert_why(why, "backlog of unix path", path, "is full");

    int fd = -1;
    int64_t t0 = now_ms();
    assert_int_equal(ARPC_ETIMEDOUT, arpc_transport_connect(addr, 100, &fd, why, sizeof(why)));
    assert_true(now_ms() - t0 < 10000); /* a bound, not a measurement */
    assert_why(why, "connecting to unix path", path, "timed out after 100 ms", "is full");
    assert_int_equal(ARPC_ETIMEDOUT, arpc_transport_connect(addr, 0, &fd, why, sizeof(why)));
    assert_int_equal(-1, fd);

    struct later c = {.l_addr = addr, .l_fd = -1, .l_rv = -1};
    pthread_t tid;
    assert_int_equal(0, pthread_create(&tid, NULL, connect_later, &c));
    int s = accept(lfd, NULL, NULL); /* makes room, whenever the thread tries */
    assert_true(s >= 0);
    assert_int_equal(0, pthread_join(tid, NULL));
    assert_int_equal(ARPC_OK, c.l_rv);
    close(c.l_fd);
    close(s);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    close(lfd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FD_TEST(s_unix_path_limits),
        FD_TEST(s_unix_stale_socket_replaced),
        FD_TEST(s_unix_regular_file_kept),
        FD_TEST(s_unix_unlisten_keeps_successor),
        FD_TEST(s_unix_relative_path),
        FD_TEST(s_unix_missing_directory),
        FD_TEST(s_unix_permission_denied),
        FD_TEST(s_unix_backlog_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
