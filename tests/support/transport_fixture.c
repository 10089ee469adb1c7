/* Scaffolding for the transport tests (transport_fixture.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "support/transport_fixture.h"

static unsigned addr_seq;

void make_tcp_addr(char *addr, size_t len) { snprintf(addr, len, "tcp://127.0.0.1:0"); }

void make_unix_addr(char *addr, size_t len)
{
    snprintf(addr, len, "unix:///tmp/arpc-test-%d-%u.sock", (int)getpid(), addr_seq++);
}

void make_inproc_addr(char *addr, size_t len) { snprintf(addr, len, "inproc://test-%u", addr_seq++); }

const struct xport xports[3] = {
    {&arpc_transport_tcp, make_tcp_addr, "connection refused by", false},
    {&arpc_transport_unix, make_unix_addr, "no server at unix path", true},
    {&arpc_transport_inproc, make_inproc_addr, "no listener named", true},
};

struct arpc_listener *xport_listen(const struct xport *x)
{
    char addr[ARPC_ADDR_MAX];
    x->x_make(addr, sizeof(addr));
    struct arpc_listener *l = lsn_open(addr);
    assert_ptr_equal(x->x_ops, l->l_ops);
    return l;
}

/* ---- fd accounting ---- */

static int fd_baseline;

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

int fd_setup(void **state)
{
    (void)state;
    fd_baseline = count_fds();
    return fd_baseline < 0 ? -1 : 0;
}

int fd_teardown(void **state)
{
    (void)state;
    int now = count_fds();
    if (now != fd_baseline) {
        fprintf(stderr, "fd leak: %d open before the test, %d after\n", fd_baseline, now);
        return -1;
    }
    return 0;
}

/* ---- listeners, connects, accepts ---- */

struct arpc_listener *lsn_open(const char *addr)
{
    const char *rest;
    const struct arpc_transport_ops *ops = arpc_transport_find(addr, &rest);
    assert_non_null(ops);
    struct arpc_listener *l = NULL;
    char why[ARPC_WHY_MAX] = "";
    int rv = ops->t_listen(rest, &l, why, sizeof(why));
    if (rv != ARPC_OK)
        fail_msg("listening on %s: %s: %s", addr, arpc_errname(rv), why);
    assert_ptr_equal(ops, l->l_ops);
    assert_ptr_equal(ops, arpc_transport_find(l->l_addr, NULL));
    return l;
}

void lsn_close(struct arpc_listener *l) { l->l_ops->t_unlisten(l); }

int dial(const struct arpc_listener *l, int *fd)
{
    return arpc_transport_connect(l->l_addr, CONNECT_MS, fd, NULL, 0);
}

int accept_wait_peer(struct arpc_listener *l, char *peer)
{
    assert_true(wait_fd(l->l_fd, POLLIN, WAIT_MS) & POLLIN);
    int fd = -1;
    char why[ARPC_WHY_MAX] = "";
    int rv = l->l_ops->t_accept(l, &fd, peer, peer != NULL ? ARPC_ADDR_MAX : 0, why, sizeof(why));
    if (rv != ARPC_OK)
        fail_msg("accept on %s: %s: %s", l->l_addr, arpc_errname(rv), why);
    assert_true(fd >= 0);
    return fd;
}

int accept_wait(struct arpc_listener *l) { return accept_wait_peer(l, NULL); }

int accept_now(struct arpc_listener *l, int *fd) { return l->l_ops->t_accept(l, fd, NULL, 0, NULL, 0); }

void make_pair(struct arpc_listener *l, int *client, int *server)
{
    assert_int_equal(ARPC_OK, dial(l, client));
    *server = accept_wait(l);
}

void check_byte_across(int from, int to)
{
    static char next = 'a';
    char sent = next++, got = 0;
    send_all(from, &sent, 1);
    recv_all(to, &got, 1);
    assert_int_equal(sent, got);
}

void check_connects(struct arpc_listener *l)
{
    int c, s;
    make_pair(l, &c, &s);
    check_byte_across(c, s);
    close(c);
    close(s);
}

/* ---- sockets ---- */

short wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int n;
    do
        n = poll(&p, 1, ms);
    while (n < 0 && errno == EINTR);
    assert_true(n >= 0);
    return n == 0 ? 0 : p.revents;
}

void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            assert_int_equal(EAGAIN, errno);
            assert_true(wait_fd(fd, POLLOUT, WAIT_MS) & POLLOUT);
            continue;
        }
        p += n;
        len -= (size_t)n;
    }
}

void recv_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        assert_true(wait_fd(fd, POLLIN, WAIT_MS) & (POLLIN | POLLHUP));
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EAGAIN)
            continue;
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

int read_eof(int fd)
{
    char c;
    assert_true(wait_fd(fd, POLLIN, WAIT_MS) & (POLLIN | POLLHUP | POLLERR));
    ssize_t n = recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

void assert_nonblocking_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdf = fcntl(fd, F_GETFD);
    assert_true(fl >= 0 && (fl & O_NONBLOCK));
    assert_true(fdf >= 0 && (fdf & FD_CLOEXEC));
}

/* ---- why lines ---- */

void assert_why_(const char *why, const char *file, int line, ...)
{
    va_list ap;
    va_start(ap, line);
    for (const char *word = va_arg(ap, const char *); word != NULL; word = va_arg(ap, const char *)) {
        if (strstr(why, word) == NULL) {
            va_end(ap);
            fail_msg("%s:%d: \"%s\" lacks \"%s\"", file, line, why, word);
        }
    }
    va_end(ap);
    /* One line a user can act on: no newline, no prefix. */
    if (why[0] == '\0' || strchr(why, '\n') != NULL || strncmp(why, "arpc:", 5) == 0)
        fail_msg("%s:%d: \"%s\" is not one plain line", file, line, why);
}
