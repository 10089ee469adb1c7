/*
 * Transport tests: one conformance suite run against tcp, unix and inproc alike (each case
 * takes the transport under test as its state), then per-scheme cases for what only one
 * transport has (address syntax, stale unix sockets, TCP_NODELAY, connect timeouts).
 *
 * Every test runs between fd_setup and fd_teardown, which fail the test if it leaves a file
 * descriptor open; ASan's leak checker covers memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "arpc/alloc.h"
#include "arpc/error.h"
#include "transport/transport.h"
#include "support/test_util.h"

#define WAIT_MS 5000 /* generous bound for events that should come at once */
#define CONNECT_MS 5000

/* ---- the transports under test ------------------------------------------------------ */

struct xport {
    const struct arpc_transport_ops *x_ops;
    void (*x_make)(char *addr, size_t len); /* a fresh address nobody uses */
};

static unsigned addr_seq;

static void make_tcp(char *addr, size_t len) { snprintf(addr, len, "tcp://127.0.0.1:0"); }

static void make_unix(char *addr, size_t len)
{
    snprintf(addr, len, "unix:///tmp/arpc-test-%d-%u.sock", (int)getpid(), addr_seq++);
}

static void make_inproc(char *addr, size_t len) { snprintf(addr, len, "inproc://test-%u", addr_seq++); }

static struct xport xports[] = {
    {&arpc_transport_tcp, make_tcp},
    {&arpc_transport_unix, make_unix},
    {&arpc_transport_inproc, make_inproc},
};

/* ---- fd accounting ------------------------------------------------------------------- */

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

static int fd_setup(void **state)
{
    (void)state;
    fd_baseline = count_fds();
    return fd_baseline < 0 ? -1 : 0;
}

static int fd_teardown(void **state)
{
    (void)state;
    int now = count_fds();
    if (now != fd_baseline) {
        fprintf(stderr, "fd leak: %d open before the test, %d after\n", fd_baseline, now);
        return -1;
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------- */

struct lsn {
    const struct arpc_transport_ops *l_ops;
    char l_bound[ARPC_ADDR_MAX];
    const char *l_rest; /* points into l_bound: the address to connect to */
    int l_fd;
};

static void lsn_open_at(struct lsn *l, const char *addr)
{
    const char *rest;
    l->l_ops = arpc_transport_find(addr, &rest);
    assert_non_null(l->l_ops);
    assert_int_equal(ARPC_OK, l->l_ops->t_listen(rest, &l->l_fd, l->l_bound, sizeof(l->l_bound)));
    assert_ptr_equal(l->l_ops, arpc_transport_find(l->l_bound, &l->l_rest));
}

static void lsn_open(const struct xport *x, struct lsn *l)
{
    char addr[ARPC_ADDR_MAX];
    x->x_make(addr, sizeof(addr));
    lsn_open_at(l, addr);
    assert_ptr_equal(x->x_ops, l->l_ops);
}

static void lsn_close(struct lsn *l) { l->l_ops->t_unlisten(l->l_rest, l->l_fd); }

static short wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int n;
    do
        n = poll(&p, 1, ms);
    while (n < 0 && errno == EINTR);
    assert_true(n >= 0);
    return n == 0 ? 0 : p.revents;
}

static int dial(const struct lsn *l, int *fd) { return l->l_ops->t_connect(l->l_rest, CONNECT_MS, fd); }

/* Accepts one connection, waiting for the listening fd to become readable first. */
static int accept_wait(const struct lsn *l)
{
    assert_true(wait_fd(l->l_fd, POLLIN, WAIT_MS) & POLLIN);
    int fd = -1;
    assert_int_equal(ARPC_OK, l->l_ops->t_accept(l->l_fd, &fd));
    assert_true(fd >= 0);
    return fd;
}

static void make_pair(const struct lsn *l, int *client, int *server)
{
    assert_int_equal(ARPC_OK, dial(l, client));
    *server = accept_wait(l);
}

static void send_all(int fd, const void *buf, size_t len)
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

static void recv_all(int fd, void *buf, size_t len)
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

/* Reads until EOF; true when the peer's close arrived as EOF or as a reset. */
static int read_eof(int fd)
{
    char c;
    assert_true(wait_fd(fd, POLLIN, WAIT_MS) & (POLLIN | POLLHUP | POLLERR));
    ssize_t n = recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static void assert_nonblocking_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdf = fcntl(fd, F_GETFD);
    assert_true(fl >= 0 && (fl & O_NONBLOCK));
    assert_true(fdf >= 0 && (fdf & FD_CLOEXEC));
}

/* ---- conformance: every transport ---------------------------------------------------- */

static void c_listen_connect_accept(void **state)
{
    const struct xport *x = *state;
    struct lsn l;
    lsn_open(x, &l);
    assert_int_equal(0, strncmp(l.l_bound, x->x_ops->t_scheme, strlen(x->x_ops->t_scheme)));
    int c, s;
    make_pair(&l, &c, &s);
    assert_true(c != s && c != l.l_fd && s != l.l_fd);
    int extra;
    assert_int_equal(ARPC_EAGAIN, l.l_ops->t_accept(l.l_fd, &extra));
    close(c);
    close(s);
    lsn_close(&l);
}

static void c_bytes_both_ways(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    int c, s;
    make_pair(&l, &c, &s);
    char buf[16];
    send_all(c, "ping", 4);
    recv_all(s, buf, 4);
    assert_memory_equal("ping", buf, 4);
    send_all(s, "pong!", 5);
    recv_all(c, buf, 5);
    assert_memory_equal("pong!", buf, 5);
    close(c);
    close(s);
    lsn_close(&l);
}

#define BULK (1u << 20)
#define CHUNK (64u * 1024)

static uint8_t pattern(int dir, size_t i) { return (uint8_t)(i * 7 + (i >> 11) + (size_t)dir * 101); }

struct pump {
    int p_fd;
    size_t p_sent;  /* bytes of this side's pattern sent */
    size_t p_recvd; /* bytes of the peer's pattern received and checked */
};

static void pump_step(struct pump *p, int dir, short revents, uint8_t *buf)
{
    assert_false((revents & (POLLERR | POLLNVAL)) != 0);
    if ((revents & POLLOUT) && p->p_sent < BULK) {
        size_t n = BULK - p->p_sent < CHUNK ? BULK - p->p_sent : CHUNK;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(dir, p->p_sent + i);
        ssize_t w = send(p->p_fd, buf, n, MSG_NOSIGNAL);
        assert_true(w > 0 || (w < 0 && errno == EAGAIN));
        if (w > 0)
            p->p_sent += (size_t)w;
    }
    if ((revents & (POLLIN | POLLHUP)) && p->p_recvd < BULK) {
        ssize_t r = recv(p->p_fd, buf, CHUNK, 0);
        assert_true(r > 0 || (r < 0 && errno == EAGAIN)); /* no EOF before the end */
        for (ssize_t i = 0; i < r; i++)
            assert_int_equal(pattern(!dir, p->p_recvd + (size_t)i), buf[i]);
        if (r > 0)
            p->p_recvd += (size_t)r;
    }
}

/* Sends BULK bytes each way at once, so neither side can stall on a full peer buffer. */
static void c_bulk_both_ways(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    int c, s;
    make_pair(&l, &c, &s);
    struct pump side[2] = {{c, 0, 0}, {s, 0, 0}};
    uint8_t *buf = malloc(CHUNK);
    assert_non_null(buf);
    while (side[0].p_recvd < BULK || side[1].p_recvd < BULK) {
        struct pollfd p[2];
        for (int i = 0; i < 2; i++) {
            p[i].fd = side[i].p_fd;
            p[i].events = (short)((side[i].p_sent < BULK ? POLLOUT : 0) |
                                  (side[i].p_recvd < BULK ? POLLIN : 0));
            p[i].revents = 0;
        }
        assert_true(poll(p, 2, WAIT_MS) > 0);
        for (int i = 0; i < 2; i++)
            pump_step(&side[i], i, p[i].revents, buf);
    }
    free(buf);
    assert_int_equal(BULK, side[0].p_sent);
    assert_int_equal(BULK, side[1].p_sent);
    close(c);
    close(s);
    lsn_close(&l);
}

static void c_accept_nothing_waiting(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    assert_int_equal(0, wait_fd(l.l_fd, POLLIN, 0));
    int fd = -1;
    assert_int_equal(ARPC_EAGAIN, l.l_ops->t_accept(l.l_fd, &fd));
    assert_int_equal(-1, fd);
    lsn_close(&l);
}

static void c_listen_fd_readable_while_waiting(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    assert_int_equal(0, wait_fd(l.l_fd, POLLIN, 0));
    int c1, c2;
    assert_int_equal(ARPC_OK, dial(&l, &c1));
    assert_int_equal(ARPC_OK, dial(&l, &c2));
    assert_true(wait_fd(l.l_fd, POLLIN, WAIT_MS) & POLLIN);
    int s1 = accept_wait(&l);
    /* One still waits: still readable. */
    assert_true(wait_fd(l.l_fd, POLLIN, WAIT_MS) & POLLIN);
    int s2 = accept_wait(&l);
    assert_int_equal(0, wait_fd(l.l_fd, POLLIN, 0));
    close(c1);
    close(c2);
    close(s1);
    close(s2);
    lsn_close(&l);
}

static void c_close_gives_eof(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    int c, s;
    make_pair(&l, &c, &s);
    close(c);
    assert_true(read_eof(s));
    close(s);
    make_pair(&l, &c, &s);
    close(s);
    assert_true(read_eof(c));
    close(c);
    lsn_close(&l);
}

/* tcp: a port just closed; unix: a path just unlinked; inproc: a name just unregistered. */
static void c_connect_nobody(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    lsn_close(&l);
    int fd = -1;
    assert_int_equal(ARPC_ECONNREFUSED, dial(&l, &fd));
    assert_int_equal(-1, fd);
}

static void c_listen_twice(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    int fd = -1;
    char bound[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_EADDRINUSE, l.l_ops->t_listen(l.l_rest, &fd, bound, sizeof(bound)));
    assert_int_equal(-1, fd);
    /* The first listener is unharmed. */
    int c, s;
    make_pair(&l, &c, &s);
    close(c);
    close(s);
    lsn_close(&l);
}

static void c_relisten(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    int c, s;
    make_pair(&l, &c, &s);
    close(c); /* leave a connection behind in TIME_WAIT for tcp */
    close(s);
    lsn_close(&l);

    struct lsn again;
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "%s", l.l_bound);
    lsn_open_at(&again, addr);
    assert_string_equal(l.l_bound, again.l_bound);
    make_pair(&again, &c, &s);
    send_all(c, "x", 1);
    char b;
    recv_all(s, &b, 1);
    assert_int_equal('x', b);
    close(c);
    close(s);
    lsn_close(&again);
}

#define MANY 100

/* Each client sends its index, so every accepted connection is matched to one client. */
static void c_many_connections(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    int client[MANY], server[MANY], seen[MANY] = {0};
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(ARPC_OK, dial(&l, &client[i]));
        uint8_t idx = (uint8_t)i;
        send_all(client[i], &idx, 1);
    }
    for (int i = 0; i < MANY; i++) {
        server[i] = accept_wait(&l);
        uint8_t idx;
        recv_all(server[i], &idx, 1);
        assert_true(idx < MANY);
        seen[idx]++;
    }
    int extra;
    assert_int_equal(ARPC_EAGAIN, l.l_ops->t_accept(l.l_fd, &extra));
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(1, seen[i]);
        close(client[i]);
        close(server[i]);
    }
    lsn_close(&l);
}

static void c_fds_nonblocking_cloexec(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    assert_nonblocking_cloexec(l.l_fd);
    int c, s;
    make_pair(&l, &c, &s);
    assert_nonblocking_cloexec(c);
    assert_nonblocking_cloexec(s);
    close(c);
    close(s);
    /* ARPC_FOREVER takes the same path to the same kind of fd. */
    assert_int_equal(ARPC_OK, l.l_ops->t_connect(l.l_rest, ARPC_FOREVER, &c));
    s = accept_wait(&l);
    assert_nonblocking_cloexec(c);
    close(c);
    close(s);
    lsn_close(&l);
}

/* Connections still waiting when the listener goes are closed, not leaked (fd_teardown). */
static void c_unlisten_with_waiting(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    int c1, c2;
    assert_int_equal(ARPC_OK, dial(&l, &c1));
    assert_int_equal(ARPC_OK, dial(&l, &c2));
    assert_true(wait_fd(l.l_fd, POLLIN, WAIT_MS) & POLLIN);
    lsn_close(&l);
    assert_true(read_eof(c1));
    assert_true(read_eof(c2));
    close(c1);
    close(c2);
}

#ifdef ARPC_TSAN
#define PER_THREAD 10
#else
#define PER_THREAD 25
#endif
#define THREADS 2

struct dialer {
    const struct lsn *d_lsn;
    int d_base;
    int d_fds[PER_THREAD];
    int d_err;
};

static void *dialer_main(void *arg)
{
    struct dialer *d = arg;
    for (int i = 0; i < PER_THREAD && d->d_err == ARPC_OK; i++) {
        d->d_err = dial(d->d_lsn, &d->d_fds[i]);
        uint8_t idx = (uint8_t)(d->d_base + i);
        if (d->d_err == ARPC_OK && send(d->d_fds[i], &idx, 1, MSG_NOSIGNAL) != 1)
            d->d_err = ARPC_ESYSTEM;
    }
    return NULL;
}

/* Clients on other threads connect while this one accepts: the ops are thread-safe. */
static void c_concurrent_connects(void **state)
{
    struct lsn l;
    lsn_open(*state, &l);
    struct dialer d[THREADS];
    pthread_t tid[THREADS];
    for (int t = 0; t < THREADS; t++) {
        d[t] = (struct dialer){.d_lsn = &l, .d_base = t * PER_THREAD, .d_err = ARPC_OK};
        assert_int_equal(0, pthread_create(&tid[t], NULL, dialer_main, &d[t]));
    }
    int seen[THREADS * PER_THREAD] = {0};
    for (int i = 0; i < THREADS * PER_THREAD; i++) {
        int s = accept_wait(&l);
        uint8_t idx;
        recv_all(s, &idx, 1);
        assert_true(idx < THREADS * PER_THREAD);
        seen[idx]++;
        close(s);
    }
    for (int t = 0; t < THREADS; t++) {
        assert_int_equal(0, pthread_join(tid[t], NULL));
        assert_int_equal(ARPC_OK, d[t].d_err);
        for (int i = 0; i < PER_THREAD; i++)
            close(d[t].d_fds[i]);
    }
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        assert_int_equal(1, seen[i]);
    lsn_close(&l);
}

/* ---- arpc_transport_find --------------------------------------------------------------- */

static void s_find(void **state)
{
    (void)state;
    const char *rest = NULL;
    assert_ptr_equal(&arpc_transport_tcp, arpc_transport_find("tcp://1.2.3.4:5", &rest));
    assert_string_equal("1.2.3.4:5", rest);
    assert_ptr_equal(&arpc_transport_unix, arpc_transport_find("unix:///a/b", &rest));
    assert_string_equal("/a/b", rest);
    assert_ptr_equal(&arpc_transport_inproc, arpc_transport_find("inproc://x", &rest));
    assert_string_equal("x", rest);
    const char *bad[] = {"", "127.0.0.1:80", "foo://x", "tcp:/x", "tcp:x", "tcpx://x",
                         "tc://x", "://x", "TCP://x", " tcp://x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(arpc_transport_find(bad[i], &rest));
    assert_null(arpc_transport_find(NULL, &rest));
    char big[ARPC_ADDR_MAX + 8];
    memset(big, 'a', sizeof(big));
    memcpy(big, "inproc://", 9);
    big[ARPC_ADDR_MAX] = '\0'; /* one byte too long to fit an ARPC_ADDR_MAX buffer */
    assert_null(arpc_transport_find(big, &rest));
    big[ARPC_ADDR_MAX - 1] = '\0';
    assert_ptr_equal(&arpc_transport_inproc, arpc_transport_find(big, &rest));
}

/* ---- tcp --------------------------------------------------------------------------- */

static void s_tcp_bad_addresses(void **state)
{
    (void)state;
    /* None of these may reach a name server: all fail in parsing or as numeric hosts. */
    const char *bad[] = {"127.0.0.1",   "127.0.0.1:",     "127.0.0.1:70000", "127.0.0.1:65536",
                         "127.0.0.1:-1", "127.0.0.1:12a", "127.0.0.1:123456", ":80",
                         "::1:80",       "[::1",          "[::1]80",         "[::1]:",
                         "[]:80",        "[127.0.0.1]:80", "[::1]:8x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int fd = -1;
        char bound[ARPC_ADDR_MAX];
        assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_listen(bad[i], &fd, bound, sizeof(bound)));
        assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_connect(bad[i], 100, &fd));
        assert_int_equal(-1, fd);
    }
    int fd = -1;
    assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_connect("127.0.0.1:0", 100, &fd));
}

static void s_tcp_bound_reports_port(void **state)
{
    (void)state;
    struct lsn l;
    lsn_open_at(&l, "tcp://127.0.0.1:0");
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(0, getsockname(l.l_fd, (struct sockaddr *)&sin, &len));
    assert_true(ntohs(sin.sin_port) != 0);
    char want[ARPC_ADDR_MAX];
    snprintf(want, sizeof(want), "tcp://127.0.0.1:%u", ntohs(sin.sin_port));
    assert_string_equal(want, l.l_bound);
    /* A buffer too small for the address is refused, not filled with a cut address. */
    int fd = -1;
    char tiny[8];
    assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_listen("127.0.0.1:0", &fd, tiny, sizeof(tiny)));
    lsn_close(&l);
}

static int nodelay(int fd)
{
    int v = 0;
    socklen_t len = sizeof(v);
    assert_int_equal(0, getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len));
    return v;
}

static void s_tcp_nodelay(void **state)
{
    (void)state;
    struct lsn l;
    lsn_open_at(&l, "tcp://127.0.0.1:0");
    int c, s;
    make_pair(&l, &c, &s);
    assert_true(nodelay(c));
    assert_true(nodelay(s));
    close(c);
    close(s);
    lsn_close(&l);
}

/* A name goes through getaddrinfo ("localhost" is in /etc/hosts: no name server). */
static void s_tcp_name(void **state)
{
    (void)state;
    struct lsn l;
    lsn_open_at(&l, "tcp://127.0.0.1:0");
    char rest[ARPC_ADDR_MAX];
    snprintf(rest, sizeof(rest), "localhost:%s", strrchr(l.l_rest, ':') + 1);
    int c;
    assert_int_equal(ARPC_OK, arpc_transport_tcp.t_connect(rest, CONNECT_MS, &c));
    int s = accept_wait(&l);
    close(c);
    close(s);
    lsn_close(&l);
}

static void s_tcp_ipv6(void **state)
{
    (void)state;
    int fd;
    char bound[ARPC_ADDR_MAX];
    int rv = arpc_transport_tcp.t_listen("[::1]:0", &fd, bound, sizeof(bound));
    if (rv == ARPC_EADDR)
        skip(); /* no IPv6 loopback on this host */
    assert_int_equal(ARPC_OK, rv);
    assert_int_equal(0, strncmp(bound, "tcp://[::1]:", 12));
    struct lsn l = {.l_ops = &arpc_transport_tcp, .l_fd = fd};
    memcpy(l.l_bound, bound, sizeof(bound));
    l.l_rest = l.l_bound + 6;
    int c, s;
    make_pair(&l, &c, &s);
    send_all(c, "6", 1);
    char b;
    recv_all(s, &b, 1);
    assert_int_equal('6', b);
    close(c);
    close(s);
    lsn_close(&l);
}

/* Connects until one times out, against a listener whose backlog is full. */
static void expect_timeout(const struct arpc_transport_ops *ops, const char *rest)
{
    int fds[8], n = 0, rv = ARPC_OK;
    while (n < 8) {
        int64_t t0 = now_ms();
        rv = ops->t_connect(rest, 100, &fds[n]);
        if (rv != ARPC_OK) {
            int64_t took = now_ms() - t0;
            assert_int_equal(ARPC_ETIMEDOUT, rv);
            assert_true(took >= 90 && took < 3000);
            break;
        }
        n++;
    }
    assert_int_equal(ARPC_ETIMEDOUT, rv);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* The accept queue of a backlog-0 listener holds one connection; the next SYN is dropped. */
static void s_tcp_connect_timeout(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(0, bind(lfd, (struct sockaddr *)&sin, len));
    assert_int_equal(0, listen(lfd, 0));
    assert_int_equal(0, getsockname(lfd, (struct sockaddr *)&sin, &len));
    char rest[64];
    snprintf(rest, sizeof(rest), "127.0.0.1:%u", ntohs(sin.sin_port));
    expect_timeout(&arpc_transport_tcp, rest);
    close(lfd);
}

/* ---- unix -------------------------------------------------------------------------- */

static void s_unix_path_limits(void **state)
{
    (void)state;
    struct sockaddr_un sun;
    char path[sizeof(sun.sun_path) + 1];
    int fd = -1;
    char bound[ARPC_ADDR_MAX];
    /* The longest path sun_path holds (with its NUL) works... */
    int n = snprintf(path, sizeof(path), "/tmp/arpc-test-%d-", (int)getpid());
    memset(path + n, 'p', sizeof(sun.sun_path) - 1 - (size_t)n);
    path[sizeof(sun.sun_path) - 1] = '\0';
    assert_int_equal(ARPC_OK, arpc_transport_unix.t_listen(path, &fd, bound, sizeof(bound)));
    assert_string_equal(path, bound + strlen("unix://"));
    arpc_transport_unix.t_unlisten(path, fd);
    /* ...one byte more does not. */
    path[sizeof(sun.sun_path) - 1] = 'p';
    path[sizeof(sun.sun_path)] = '\0';
    fd = -1;
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_listen(path, &fd, bound, sizeof(bound)));
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_connect(path, 100, &fd));
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_listen("", &fd, bound, sizeof(bound)));
    assert_int_equal(ARPC_EADDR, arpc_transport_unix.t_connect("", 100, &fd));
    assert_int_equal(-1, fd);
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
    make_unix(addr, sizeof(addr));
    const char *path = addr + strlen("unix://");
    close(raw_unix_listener(path, 1)); /* the file stays, nobody listens */
    struct stat st;
    assert_int_equal(0, lstat(path, &st));
    int fd = -1;
    assert_int_equal(ARPC_ECONNREFUSED, arpc_transport_unix.t_connect(path, 100, &fd));

    struct lsn l;
    lsn_open_at(&l, addr);
    int c, s;
    make_pair(&l, &c, &s);
    close(c);
    close(s);
    lsn_close(&l);
    assert_int_equal(-1, lstat(path, &st)); /* unlisten removed the file */
    assert_int_equal(ENOENT, errno);
}

/* A file that is not a socket is never deleted to make room. */
static void s_unix_regular_file_kept(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    make_unix(addr, sizeof(addr));
    const char *path = addr + strlen("unix://");
    int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(f >= 0);
    close(f);
    int fd = -1;
    char bound[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_EADDRINUSE, arpc_transport_unix.t_listen(path, &fd, bound, sizeof(bound)));
    struct stat st;
    assert_int_equal(0, lstat(path, &st));
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(0, unlink(path));
}

static void s_unix_relative_path(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "unix://arpc-test-%d-rel.sock", (int)getpid());
    struct lsn l;
    lsn_open_at(&l, addr);
    assert_string_equal(addr, l.l_bound);
    int c, s;
    make_pair(&l, &c, &s);
    close(c);
    close(s);
    lsn_close(&l);
    assert_int_equal(-1, access(addr + strlen("unix://"), F_OK));
}

static void s_unix_connect_timeout(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    make_unix(addr, sizeof(addr));
    const char *path = addr + strlen("unix://");
    int lfd = raw_unix_listener(path, 0);
    expect_timeout(&arpc_transport_unix, path);
    /* With the backlog still full, a zero timeout fails at once. */
    int fd = -1;
    int64_t t0 = now_ms();
    assert_int_equal(ARPC_ETIMEDOUT, arpc_transport_unix.t_connect(path, 0, &fd));
    assert_true(now_ms() - t0 < 1000);
    close(lfd);
    unlink(path);
}

/* ---- inproc ------------------------------------------------------------------------ */

static void s_inproc_names(void **state)
{
    (void)state;
    int fd = -1;
    char bound[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_EADDR, arpc_transport_inproc.t_listen("", &fd, bound, sizeof(bound)));
    assert_int_equal(ARPC_EADDR, arpc_transport_inproc.t_connect("", 100, &fd));
    /* The longest name whose "inproc://NAME" fits ARPC_ADDR_MAX with its NUL. */
    char name[ARPC_ADDR_MAX];
    size_t max = ARPC_ADDR_MAX - 1 - strlen("inproc://");
    memset(name, 'n', max);
    name[max] = '\0';
    assert_int_equal(ARPC_OK, arpc_transport_inproc.t_listen(name, &fd, bound, sizeof(bound)));
    assert_int_equal(ARPC_ADDR_MAX - 1, strlen(bound));
    arpc_transport_inproc.t_unlisten(name, fd);
    name[max] = 'n';
    name[max + 1] = '\0';
    fd = -1;
    assert_int_equal(ARPC_EADDR, arpc_transport_inproc.t_listen(name, &fd, bound, sizeof(bound)));
    assert_int_equal(-1, fd);
}

static void s_inproc_accept_foreign_fd(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    int fd = -1;
    assert_int_equal(ARPC_ESYSTEM, arpc_transport_inproc.t_accept(sv[0], &fd));
    assert_int_equal(-1, fd);
    close(sv[0]);
    close(sv[1]);
}

/* Out of memory reaches the caller as ARPC_ENOMEM with nothing left behind. */
static void s_inproc_out_of_memory(void **state)
{
    (void)state;
    test_alloc_install();
    int fd = -1;
    char bound[ARPC_ADDR_MAX];
    atomic_store(&test_alloc_budget, 0); /* every allocation fails */
    assert_int_equal(ARPC_ENOMEM, arpc_transport_inproc.t_listen("oom", &fd, bound, sizeof(bound)));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(ARPC_OK, arpc_transport_inproc.t_listen("oom", &fd, bound, sizeof(bound)));
    int c = -1;
    atomic_store(&test_alloc_budget, 0); /* the first queued connection needs the queue */
    assert_int_equal(ARPC_ENOMEM, arpc_transport_inproc.t_connect("oom", 0, &c));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(-1, c);
    assert_int_equal(0, wait_fd(fd, POLLIN, 0)); /* nothing was queued */
    arpc_transport_inproc.t_unlisten("oom", fd);
    arpc_set_allocator(NULL);
}

/* ---- registration -------------------------------------------------------------------- */

#define ON(i, prefix, fn) \
    {.name = prefix #fn, .test_func = fn, .setup_func = fd_setup, .teardown_func = fd_teardown, \
     .initial_state = &xports[i]}
#define CONFORMANCE(fn) ON(0, "tcp/", fn), ON(1, "unix/", fn), ON(2, "inproc/", fn)
#define SCHEME(fn) cmocka_unit_test_setup_teardown(fn, fd_setup, fd_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        CONFORMANCE(c_listen_connect_accept),
        CONFORMANCE(c_bytes_both_ways),
        CONFORMANCE(c_bulk_both_ways),
        CONFORMANCE(c_accept_nothing_waiting),
        CONFORMANCE(c_listen_fd_readable_while_waiting),
        CONFORMANCE(c_close_gives_eof),
        CONFORMANCE(c_connect_nobody),
        CONFORMANCE(c_listen_twice),
        CONFORMANCE(c_relisten),
        CONFORMANCE(c_many_connections),
        CONFORMANCE(c_fds_nonblocking_cloexec),
        CONFORMANCE(c_unlisten_with_waiting),
        CONFORMANCE(c_concurrent_connects),
        SCHEME(s_find),
        SCHEME(s_tcp_bad_addresses),
        SCHEME(s_tcp_bound_reports_port),
        SCHEME(s_tcp_nodelay),
        SCHEME(s_tcp_name),
        SCHEME(s_tcp_ipv6),
        SCHEME(s_tcp_connect_timeout),
        SCHEME(s_unix_path_limits),
        SCHEME(s_unix_stale_socket_replaced),
        SCHEME(s_unix_regular_file_kept),
        SCHEME(s_unix_relative_path),
        SCHEME(s_unix_connect_timeout),
        SCHEME(s_inproc_names),
        SCHEME(s_inproc_accept_foreign_fd),
        SCHEME(s_inproc_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
