/*
 * Transport conformance: one suite run against tcp, unix and inproc alike (each case takes
 * the transport under test as its state), and the scheme lookup in front of them. What only
 * one transport has (address syntax, stale unix sockets, TCP_NODELAY, backlogs, its own
 * error lines) is in transport_tcp_test.c, transport_unix_test.c and transport_inproc_test.c;
 * the shared helpers' messages in transport_sock_test.c.
 *
 * Every test runs between fd_setup and fd_teardown, which fail the test if it leaves a file
 * descriptor open; ASan's leak checker covers memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "support/test_util.h"
#include "support/transport_fixture.h"

/* ---- conformance: every transport ---------------------------------------------------- */

static void c_listen_connect_accept(void **state)
{
    const struct xport *x = *state;
    struct arpc_listener *l = xport_listen(x);
    assert_int_equal(0, strncmp(l->l_addr, x->x_ops->t_scheme, strlen(x->x_ops->t_scheme)));
    int c, s;
    make_pair(l, &c, &s);
    assert_true(c != s && c != l->l_fd && s != l->l_fd);
    int extra;
    assert_int_equal(ARPC_EAGAIN, accept_now(l, &extra));
    close(c);
    close(s);
    lsn_close(l);
}

static void c_bytes_both_ways(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    int c, s;
    make_pair(l, &c, &s);
    char buf[16];
    send_all(c, "ping", 4);
    recv_all(s, buf, 4);
    assert_memory_equal("ping", buf, 4);
    send_all(s, "pong!", 5);
    recv_all(c, buf, 5);
    assert_memory_equal("pong!", buf, 5);
    close(c);
    close(s);
    lsn_close(l);
}

static void c_accept_nothing_waiting(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    assert_int_equal(0, wait_fd(l->l_fd, POLLIN, 0));
    int fd = -1;
    assert_int_equal(ARPC_EAGAIN, accept_now(l, &fd));
    assert_int_equal(-1, fd);
    lsn_close(l);
}

static void c_listen_fd_readable_while_waiting(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    assert_int_equal(0, wait_fd(l->l_fd, POLLIN, 0));
    int c1, c2;
    assert_int_equal(ARPC_OK, dial(l, &c1));
    assert_int_equal(ARPC_OK, dial(l, &c2));
    assert_true(wait_fd(l->l_fd, POLLIN, WAIT_MS) & POLLIN);
    int s1 = accept_wait(l);
    /* One still waits: still readable. */
    assert_true(wait_fd(l->l_fd, POLLIN, WAIT_MS) & POLLIN);
    int s2 = accept_wait(l);
    assert_int_equal(0, wait_fd(l->l_fd, POLLIN, 0));
    close(c1);
    close(c2);
    close(s1);
    close(s2);
    lsn_close(l);
}

static void c_close_gives_eof(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    int c, s;
    make_pair(l, &c, &s);
    close(c);
    assert_true(read_eof(s));
    close(s);
    make_pair(l, &c, &s);
    close(s);
    assert_true(read_eof(c));
    close(c);
    lsn_close(l);
}

/* tcp: a port just closed; unix: a path just unlinked; inproc: a name just unregistered.
 * The why line names the address and says what is missing. */
static void c_connect_nobody(void **state)
{
    const struct xport *x = *state;
    struct arpc_listener *l = xport_listen(x);
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "%s", l->l_addr);
    lsn_close(l);
    int fd = -1;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_ECONNREFUSED, arpc_transport_connect(addr, CONNECT_MS, &fd, why, sizeof(why)));
    assert_int_equal(-1, fd);
    assert_why(why, x->x_nobody, strstr(addr, "://") + 3);
}

static void c_listen_twice(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    const char *rest;
    assert_non_null(arpc_transport_find(l->l_addr, &rest));
    struct arpc_listener *second = NULL;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_EADDRINUSE, l->l_ops->t_listen(rest, &second, why, sizeof(why)));
    assert_null(second);
    assert_why(why, "address already in use", rest);
    /* The first listener is unharmed. No bytes are checked: unix's stale-socket probe has
     * queued a connection of its own, already closed, ahead of ours. */
    int c, s;
    make_pair(l, &c, &s);
    close(c);
    close(s);
    lsn_close(l);
}

static void c_relisten(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    int c, s;
    make_pair(l, &c, &s);
    close(c); /* leave a connection behind in TIME_WAIT for tcp */
    close(s);
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "%s", l->l_addr);
    lsn_close(l);

    struct arpc_listener *again = lsn_open(addr);
    assert_string_equal(addr, again->l_addr);
    check_connects(again);
    lsn_close(again);
}

static void c_fds_nonblocking_cloexec(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    assert_nonblocking_cloexec(l->l_fd);
    int c, s;
    make_pair(l, &c, &s);
    assert_nonblocking_cloexec(c);
    assert_nonblocking_cloexec(s);
    close(c);
    close(s);
    /* No limit takes the same path to the same kind of fd; INT64_MAX must not overflow
     * into a deadline in the past. */
    const int64_t no_limit[] = {ARPC_FOREVER, -1000, INT64_MAX};
    for (size_t i = 0; i < sizeof(no_limit) / sizeof(no_limit[0]); i++) {
        char why[ARPC_WHY_MAX] = "";
        int rv = arpc_transport_connect(l->l_addr, no_limit[i], &c, why, sizeof(why));
        if (rv != ARPC_OK)
            fail_msg("timeout %lld: %s: %s", (long long)no_limit[i], arpc_errname(rv), why);
        s = accept_wait(l);
        assert_nonblocking_cloexec(c);
        close(c);
        close(s);
    }
    lsn_close(l);
}

/* Connections still waiting when the listener goes are closed, not leaked (fd_teardown). */
static void c_unlisten_with_waiting(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    int c1, c2;
    assert_int_equal(ARPC_OK, dial(l, &c1));
    assert_int_equal(ARPC_OK, dial(l, &c2));
    assert_true(wait_fd(l->l_fd, POLLIN, WAIT_MS) & POLLIN);
    lsn_close(l);
    assert_true(read_eof(c1));
    assert_true(read_eof(c2));
    close(c1);
    close(c2);
}

/* tcp names the client's own address; unix and inproc clients have none: the listener's. */
static void c_peer_name(void **state)
{
    const struct xport *x = *state;
    struct arpc_listener *l = xport_listen(x);
    int c;
    assert_int_equal(ARPC_OK, dial(l, &c));
    char peer[ARPC_ADDR_MAX] = "";
    int s = accept_wait_peer(l, peer);
    char want[ARPC_ADDR_MAX];
    if (x->x_ops == &arpc_transport_tcp) {
        struct sockaddr_in sin;
        socklen_t len = sizeof(sin);
        assert_int_equal(0, getsockname(c, (struct sockaddr *)&sin, &len));
        snprintf(want, sizeof(want), "tcp://127.0.0.1:%u", ntohs(sin.sin_port));
    } else {
        snprintf(want, sizeof(want), "%s", l->l_addr);
    }
    assert_string_equal(want, peer);
    close(c);
    close(s);
    lsn_close(l);
}

/* The client's way in: resolve once, start without blocking, finish once writable. */
static void c_connect_start_done(void **state)
{
    const struct xport *x = *state;
    struct arpc_listener *l = xport_listen(x);
    struct arpc_target t;
    char why[ARPC_WHY_MAX] = "";
    assert_int_equal(ARPC_OK, arpc_transport_resolve(l->l_addr, &t, why, sizeof(why)));
    assert_ptr_equal(x->x_ops, t.t_ops);
    assert_string_equal(l->l_addr, t.t_addr);
    assert_true(t.t_count >= 1);
    for (int round = 0; round < 3; round++) { /* one target serves every reconnect */
        int c = -1;
        int rv = t.t_ops->t_connect_start(&t, 0, &c, why, sizeof(why));
        if (x->x_immediate)
            assert_int_equal(ARPC_OK, rv);
        assert_true(rv == ARPC_OK || rv == ARPC_EAGAIN);
        assert_true(c >= 0);
        assert_nonblocking_cloexec(c);
        if (rv == ARPC_EAGAIN) {
            assert_true(wait_fd(c, POLLOUT, WAIT_MS) & POLLOUT);
            assert_int_equal(ARPC_OK, t.t_ops->t_connect_done(&t, 0, c, why, sizeof(why)));
        }
        int s = accept_wait(l);
        check_byte_across(c, s);
        close(c);
        close(s);
    }
    lsn_close(l);
}

/* Out of memory reaches the caller as ARPC_ENOMEM, with nothing left behind (no fd: the
 * teardown; no block: the live count). */
static void c_listen_out_of_memory(void **state)
{
    const struct xport *x = *state;
    char addr[ARPC_ADDR_MAX];
    x->x_make(addr, sizeof(addr));
    const char *rest;
    assert_ptr_equal(x->x_ops, arpc_transport_find(addr, &rest));
    test_alloc_install();
    atomic_store(&test_alloc_budget, 0);
    struct arpc_listener *l = NULL;
    char why[ARPC_WHY_MAX] = "";
    int rv = x->x_ops->t_listen(rest, &l, why, sizeof(why));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    arpc_alloc_replace(NULL);
    assert_int_equal(ARPC_ENOMEM, rv);
    assert_null(l);
    assert_why(why, "out of memory", rest);
}

/* ---- arpc_transport_find and arpc_transport_resolve ----------------------------------- */

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

/* What find rejects, resolve and connect explain; why may be NULL. */
static void s_resolve_rejected(void **state)
{
    (void)state;
    struct arpc_target t;
    char why[ARPC_WHY_MAX] = "";
    int fd = -1;
    assert_int_equal(ARPC_EADDR, arpc_transport_resolve("foo://x", &t, why, sizeof(why)));
    assert_why(why, "unknown scheme", "foo://x", "tcp://", "unix://", "inproc://");
    why[0] = '\0';
    assert_int_equal(ARPC_EADDR, arpc_transport_connect("127.0.0.1:80", 100, &fd, why, sizeof(why)));
    assert_why(why, "unknown scheme", "127.0.0.1:80");
    assert_int_equal(ARPC_EADDR, arpc_transport_resolve(NULL, &t, why, sizeof(why)));
    assert_why(why, "no address");
    char big[ARPC_ADDR_MAX + 8];
    memset(big, 'a', sizeof(big));
    memcpy(big, "inproc://", 9);
    big[ARPC_ADDR_MAX] = '\0';
    assert_int_equal(ARPC_EADDR, arpc_transport_resolve(big, &t, why, sizeof(why)));
    assert_why(why, "too long");
    assert_int_equal(ARPC_EADDR, arpc_transport_resolve("foo://x", &t, NULL, 0));
    assert_int_equal(ARPC_EADDR, arpc_transport_connect("foo://x", 100, &fd, NULL, 99));
    assert_int_equal(-1, fd);
    /* A short buffer gets a cut line, still terminated. */
    char tiny[8];
    assert_int_equal(ARPC_EADDR, arpc_transport_resolve("foo://x", &t, tiny, sizeof(tiny)));
    assert_int_equal(sizeof(tiny) - 1, strlen(tiny));
}

/* ---- registration -------------------------------------------------------------------- */


int main(void)
{
    const struct CMUnitTest tests[] = {
        CONFORMANCE(c_listen_connect_accept),
        CONFORMANCE(c_bytes_both_ways),
        CONFORMANCE(c_accept_nothing_waiting),
        CONFORMANCE(c_listen_fd_readable_while_waiting),
        CONFORMANCE(c_close_gives_eof),
        CONFORMANCE(c_connect_nobody),
        CONFORMANCE(c_listen_twice),
        CONFORMANCE(c_relisten),
        CONFORMANCE(c_fds_nonblocking_cloexec),
        CONFORMANCE(c_unlisten_with_waiting),
        CONFORMANCE(c_peer_name),
        CONFORMANCE(c_connect_start_done),
        CONFORMANCE(c_listen_out_of_memory),
        FD_TEST(s_find),
        FD_TEST(s_resolve_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
