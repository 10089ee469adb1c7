/*
 * What only the tcp transport has: address syntax, names, IPv6, TCP_NODELAY, the bound port,
 * and its own error lines (malformed, unresolvable, refused, timed out, not local, EMFILE).
 * The behaviour every transport shares is in transport_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "support/test_util.h"
#include "support/transport_fixture.h"

static unsigned port_of(const struct arpc_listener *l) { return (unsigned)atoi(strrchr(l->l_addr, ':') + 1); }

/* A port that was just listened on and closed: nobody listens there. */
static unsigned closed_port(void)
{
    struct arpc_listener *l = lsn_open("tcp://127.0.0.1:0");
    unsigned port = port_of(l);
    lsn_close(l);
    return port;
}

static void s_tcp_bad_addresses(void **state)
{
    (void)state;
    /* None of these may reach a name server: all fail in parsing or as numeric hosts. */
    const char *bad[] = {"127.0.0.1",   "127.0.0.1:",     "127.0.0.1:70000", "127.0.0.1:65536",
                         "127.0.0.1:-1", "127.0.0.1:12a", "127.0.0.1:123456", ":80",
                         "::1:80",       "[::1",          "[::1]80",         "[::1]:",
                         "[]:80",        "[127.0.0.1]:80", "[::1]:8x",       "1.2.3.4:0000001",
                         "*:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct arpc_listener *l = NULL;
        struct arpc_target t;
        char why[ARPC_WHY_MAX] = "";
        assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_listen(bad[i], &l, why, sizeof(why)));
        assert_null(l);
        assert_why(why, "malformed tcp address", bad[i]);
        why[0] = '\0';
        assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_resolve(bad[i], &t, why, sizeof(why)));
        assert_why(why, "malformed tcp address", bad[i]);
    }
    struct arpc_target t;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_resolve("127.0.0.1:0", &t, why, sizeof(why)));
    assert_why(why, "port 0", "127.0.0.1:0");
    /* "*" (every interface, to ZeroMQ) is no host: it went to the resolver, which refused it or,
     * behind some DNS servers, answered loopback, so a listener meant for every interface took
     * loopback only without a word. */
    struct arpc_listener *l = NULL;
    why[0] = '\0';
    assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_listen("*:7000", &l, why, sizeof(why)));
    assert_why(why, "0.0.0.0 or [::] for every interface");
}

static void s_tcp_resolve_numeric(void **state)
{
    (void)state;
    struct arpc_target t;
    assert_int_equal(ARPC_OK, arpc_transport_resolve("tcp://10.1.2.3:7000", &t, NULL, 0));
    assert_ptr_equal(&arpc_transport_tcp, t.t_ops);
    assert_string_equal("tcp://10.1.2.3:7000", t.t_addr);
    assert_int_equal(1, t.t_count);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&t.t_sa[0];
    assert_int_equal(AF_INET, sin->sin_family);
    assert_int_equal(7000, ntohs(sin->sin_port));
    assert_int_equal(sizeof(*sin), t.t_salen[0]);
}

/* ".invalid" never resolves (RFC 6761). */
static void s_tcp_name_not_found(void **state)
{
    (void)state;
    struct arpc_target t;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_EADDR, arpc_transport_resolve("tcp://nonexistent.invalid:1", &t, why, sizeof(why)));
    assert_why(why, "name resolution failed for nonexistent.invalid");
    int fd = -1;
    why[0] = '\0';
    assert_int_equal(ARPC_EADDR, arpc_transport_connect("tcp://nonexistent.invalid:1", CONNECT_MS, &fd, why, sizeof(why)));
    assert_why(why, "name resolution failed for nonexistent.invalid");
    assert_int_equal(-1, fd);
}

static void s_tcp_bound_reports_port(void **state)
{
    (void)state;
    struct arpc_listener *l = lsn_open("tcp://127.0.0.1:0");
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    assert_int_equal(0, getsockname(l->l_fd, (struct sockaddr *)&sin, &len));
    assert_true(ntohs(sin.sin_port) != 0);
    char want[ARPC_ADDR_MAX];
    snprintf(want, sizeof(want), "tcp://127.0.0.1:%u", ntohs(sin.sin_port));
    assert_string_equal(want, l->l_addr);
    lsn_close(l);
}

/* 192.0.2.0/24 is TEST-NET-1: never an address of this host. */
static void s_tcp_listen_not_local(void **state)
{
    (void)state;
    struct arpc_listener *l = NULL;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_EADDR, arpc_transport_tcp.t_listen("192.0.2.1:0", &l, why, sizeof(why)));
    assert_why(why, "not an address of this host", "tcp://192.0.2.1:0");
    assert_null(l);
}

static int nodelay(int fd)
{
    int v = 0;
    socklen_t len = sizeof(v);
    assert_int_equal(0, getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len));
    return v;
}

/* Both ends, whichever way the client connected. */
static void s_tcp_nodelay(void **state)
{
    (void)state;
    struct arpc_listener *l = lsn_open("tcp://127.0.0.1:0");
    int c, s;
    make_pair(l, &c, &s);
    assert_true(nodelay(c));
    assert_true(nodelay(s));
    close(c);
    close(s);
    struct arpc_target t;
    assert_int_equal(ARPC_OK, arpc_transport_resolve(l->l_addr, &t, NULL, 0));
    int rv = t.t_ops->t_connect_start(&t, 0, &c, NULL, 0);
    assert_true(rv == ARPC_OK || rv == ARPC_EAGAIN);
    assert_true(nodelay(c));
    s = accept_wait(l);
    close(c);
    close(s);
    lsn_close(l);
}

/* A name goes through getaddrinfo ("localhost" is in /etc/hosts: no name server). */
static void s_tcp_name(void **state)
{
    (void)state;
    struct arpc_listener *l = lsn_open("tcp://127.0.0.1:0");
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "tcp://localhost:%u", port_of(l));
    int c;
    char why[ARPC_WHY_MAX] = "";
    int rv = arpc_transport_connect(addr, CONNECT_MS, &c, why, sizeof(why));
    if (rv != ARPC_OK)
        fail_msg("%s: %s", arpc_errname(rv), why);
    int s = accept_wait(l);
    close(c);
    close(s);
    lsn_close(l);
}

/* Refused, by number and by name (which the line resolves for the reader). */
static void s_tcp_refused(void **state)
{
    (void)state;
    unsigned port = closed_port();
    char addr[ARPC_ADDR_MAX], want[ARPC_ADDR_MAX];
    char why[ARPC_WHY_MAX] = "";
    int fd = -1;
    snprintf(addr, sizeof(addr), "tcp://localhost:%u", port);
    assert_int_equal(ARPC_ECONNREFUSED, arpc_transport_connect(addr, CONNECT_MS, &fd, why, sizeof(why)));
    snprintf(want, sizeof(want), "connection refused by localhost:%u (", port);
    assert_why(why, want);
    /* The same through start and done, as the client's loop does it. */
    struct arpc_target t;
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", port);
    assert_int_equal(ARPC_OK, arpc_transport_resolve(addr, &t, NULL, 0));
    why[0] = '\0';
    int rv = t.t_ops->t_connect_start(&t, 0, &fd, why, sizeof(why));
    if (rv == ARPC_EAGAIN) {
        assert_true(wait_fd(fd, POLLOUT, WAIT_MS) & POLLOUT);
        rv = t.t_ops->t_connect_done(&t, 0, fd, why, sizeof(why));
        close(fd);
    }
    assert_int_equal(ARPC_ECONNREFUSED, rv);
    snprintf(want, sizeof(want), "connection refused by 127.0.0.1:%u", port);
    assert_why(why, want);
}

static void s_tcp_ipv6(void **state)
{
    (void)state;
    struct arpc_listener *l = NULL;
    int rv = arpc_transport_tcp.t_listen("[::1]:0", &l, NULL, 0);
    if (rv == ARPC_EADDR)
        skip(); /* no IPv6 loopback on this host */
    assert_int_equal(ARPC_OK, rv);
    assert_int_equal(0, strncmp(l->l_addr, "tcp://[::1]:", 12));
    int c;
    assert_int_equal(ARPC_OK, dial(l, &c));
    char peer[ARPC_ADDR_MAX];
    int s = accept_wait_peer(l, peer);
    assert_int_equal(0, strncmp(peer, "tcp://[::1]:", 12));
    check_byte_across(c, s);
    close(c);
    close(s);
    lsn_close(l);
}

/* The accept queue of a backlog-0 listener holds one connection; the next SYN is dropped,
 * so connects time out. */
static void s_tcp_connect_timeout(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = fd_listen_loopback(0, 0, 0, &port);
    assert_true(lfd >= 0);
    char addr[64], want[64];
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", port);
    snprintf(want, sizeof(want), "connecting to 127.0.0.1:%u timed out after 100 ms", port);
    int fds[8], n = 0, rv = ARPC_OK;
    char why[ARPC_WHY_MAX] = "";
    while (n < 8 && rv == ARPC_OK) {
        int64_t t0 = now_ms();
        rv = arpc_transport_connect(addr, 100, &fds[n], why, sizeof(why));
        if (rv == ARPC_OK)
            n++;
        else
            assert_true(now_ms() - t0 < 10000); /* a bound, not a measurement */
    }
    assert_int_equal(ARPC_ETIMEDOUT, rv);
    assert_why(why, want);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    close(lfd);
}

/* Out of fds, accept says so and keeps the connection for later. */
static void s_tcp_accept_emfile(void **state)
{
    (void)state;
    struct arpc_listener *l = lsn_open("tcp://127.0.0.1:0");
    int c;
    assert_int_equal(ARPC_OK, dial(l, &c));
    assert_true(wait_fd(l->l_fd, POLLIN, WAIT_MS) & POLLIN);
    struct rlimit old, low;
    assert_int_equal(0, getrlimit(RLIMIT_NOFILE, &old));
    int lowest_free = dup(0);
    assert_true(lowest_free >= 0);
    close(lowest_free);
    low = old;
    low.rlim_cur = (rlim_t)lowest_free; /* every fd below is taken: the next one fails */
    assert_int_equal(0, setrlimit(RLIMIT_NOFILE, &low));
    int s = -1;
    char why[ARPC_WHY_MAX] = "";
    int rv = l->l_ops->t_accept(l, &s, NULL, 0, why, sizeof(why));
    assert_int_equal(0, setrlimit(RLIMIT_NOFILE, &old));
    assert_int_equal(ARPC_ESYSTEM, rv);
    assert_int_equal(-1, s);
    assert_why(why, "out of file descriptors (EMFILE)", l->l_addr);
    s = accept_wait(l);
    close(c);
    close(s);
    lsn_close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FD_TEST(s_tcp_bad_addresses),
        FD_TEST(s_tcp_resolve_numeric),
        FD_TEST(s_tcp_name_not_found),
        FD_TEST(s_tcp_bound_reports_port),
        FD_TEST(s_tcp_listen_not_local),
        FD_TEST(s_tcp_nodelay),
        FD_TEST(s_tcp_name),
        FD_TEST(s_tcp_refused),
        FD_TEST(s_tcp_ipv6),
        FD_TEST(s_tcp_connect_timeout),
        FD_TEST(s_tcp_accept_emfile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
