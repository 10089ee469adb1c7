/*
 * max_fault_rate and fault_burst (core/fault_rate.c, core/listener.c): a connection the server
 * closes for its peer's fault is counted and charged to the server's bucket; once the burst
 * is spent the listeners stop accepting until the faults are paid for, at the rate; good
 * clients are never charged, so they are never paused, however many and however fast; each
 * kind of fault is counted and nothing else is; stop and destroy with a listener paused for
 * faults free everything and count the pause.
 *
 * Timing is checked one way only (a slow machine cannot fail it): the k-th faulty connection
 * is closed no sooner than (k - burst) intervals after t0, read before the server existed.
 * Waits are for events (an end of stream, a counter) with a hang guard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "base/clock.h"
#include "core/frame.h"
#include "support/test_util.h"
#include "transport/transport.h"

#define HANG_GUARD_MS 30000

static arpc_server *server_with(arpc_server_options o, char *addr, size_t len)
{
    o.workers = 1;
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len));
    return s;
}

#define STAT(s, field) SERVER_STAT(s, field)

/* The peer sees the end of stream before the loop has counted the close: wait for the count.
 * (A close is charged before connections_closed counts it.) */
static bool faulted_reaches(arpc_server *s, uint64_t n)
{
    return server_stat_reaches(s, offsetof(arpc_server_stats, connections_faulted), n, HANG_GUARD_MS);
}

static int raw_connect(const char *addr)
{
    int fd = -1;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, HANG_GUARD_MS, &fd, NULL, 0));
    return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
    assert_int_equal((ssize_t)len, send(fd, buf, len, MSG_NOSIGNAL));
}

static size_t hello_bytes(uint8_t *buf) { return arpc_frame_encode_hello(buf, 0xfa17, 0, 0, 0); }

/* The server closes fd (for the fault sent on it) within the hang guard; then it is closed. */
static void await_close(int fd)
{
    assert_true(fd_wait_eof(fd, HANG_GUARD_MS));
    close(fd);
}

/* A connection that sends bytes no arpc or JSON-RPC peer would (a wrong magic). */
static void bad_magic_conn(const char *addr)
{
    int fd = raw_connect(addr);
    static const uint8_t junk[32] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, junk, sizeof(junk));
    await_close(fd);
}

/* Faulty connections one after another (each closed before the next connects, so no accept
 * batch takes two): the burst goes at once, then the rate holds, and the listener resumes by
 * itself each time. */
static void test_faults_pause_the_listener_until_paid(void **state)
{
    (void)state;
    enum { RATE = 4, BURST = 2, N = 5 }; /* 250 ms a fault once the burst is spent: ~0.75 s */
    const uint64_t interval = 1000000000ull / RATE;
    uint64_t t0 = arpc_now_ns();
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = server_with((arpc_server_options){.max_fault_rate = RATE, .fault_burst = BURST}, addr,
                                 sizeof(addr));
    uint64_t next_started = 0;
    for (unsigned k = 1; k <= N; k++) {
        if (k == BURST + 1)
            next_started = arpc_now_ns();
        bad_magic_conn(addr);
        uint64_t closed = arpc_now_ns();
        if (k > BURST && closed < t0 + (k - BURST) * interval)
            fail_msg("faulty connection %u closed %.1f ms after t0, before the faults were paid for (%.1f ms)", k,
                     (closed - t0) / 1e6, (double)(k - BURST) * interval / 1e6);
    }
    assert_true(faulted_reaches(s, N));
    /* The connection after the burst came while no token could have refilled: it waited. */
    if (next_started < t0 + interval)
        assert_true(STAT(s, fault_rate_pauses) >= 1);
    assert_int_equal(0, STAT(s, accept_rate_pauses));
    echo_call_once(addr); /* let in once the debt is paid */
    arpc_server_destroy(s);
}

/* Good clients cost no token: 40 of them, connecting, calling and leaving (closes and
 * resets), with a bucket of one fault a second, are never paused. */
static void test_good_clients_are_never_charged(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = server_with((arpc_server_options){.max_fault_rate = 1, .fault_burst = 1}, addr, sizeof(addr));
    for (unsigned i = 0; i < 40; i++) {
        echo_call_once(addr);
        /* And a peer that says HELLO and goes at once, with a reset. */
        int fd = raw_connect(addr);
        uint8_t hello[64];
        send_all(fd, hello, hello_bytes(hello));
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
        close(fd);
    }
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 80, HANG_GUARD_MS));
    assert_int_equal(0, STAT(s, connections_faulted));
    assert_int_equal(0, STAT(s, fault_rate_pauses));
    arpc_server_destroy(s);
}

static int refuse_all(const arpc_peer_info *peer, const void *token, size_t len, uint64_t *identity, void *ctx)
{
    (void)peer, (void)token, (void)len, (void)identity, (void)ctx;
    return ARPC_EAUTH;
}

/* Each fault the header names is counted once, and nothing else is; with max_fault_rate < 0
 * nothing pauses. */
static void test_each_fault_counted_and_nothing_else(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    /* Timeouts short but for the handshake's (the default 10 s): a stall of this thread
     * between a connect and its first bytes must not turn a case into a silent connection. */
    arpc_server *s = server_with((arpc_server_options){.max_fault_rate = -1,
                                                       .frame_timeout_ms = 150,
                                                       .idle_timeout_ms = 150},
                                 addr, sizeof(addr));
    uint64_t want = 0;
    uint8_t buf[128];

    bad_magic_conn(addr); /* a malformed frame */
    assert_true(faulted_reaches(s, ++want));

    int fd = raw_connect(addr); /* a header past what may be skipped */
    size_t n = hello_bytes(buf);
    n += arpc_frame_encode_header(buf + n, ARPC_FRAME_REQUEST, 1, UINT32_MAX);
    send_all(fd, buf, n);
    await_close(fd);
    assert_true(faulted_reaches(s, ++want));

    fd = raw_connect(addr); /* a second HELLO */
    n = hello_bytes(buf);
    n += hello_bytes(buf + n);
    send_all(fd, buf, n);
    await_close(fd);
    assert_true(faulted_reaches(s, ++want));

    fd = raw_connect(addr); /* a frame begun, never finished: frame_timeout_ms */
    n = hello_bytes(buf);
    n += arpc_frame_encode_header(buf + n, ARPC_FRAME_REQUEST, 1, 4096); /* its body never comes */
    send_all(fd, buf, n);
    await_close(fd);
    assert_true(faulted_reaches(s, ++want));

    /* Not faults: an idle connection closed by idle_timeout_ms, a client that leaves. */
    fd = raw_connect(addr);
    send_all(fd, buf, hello_bytes(buf));
    await_close(fd);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    arpc_client_close(c);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), want + 2, HANG_GUARD_MS));
    assert_int_equal(want, STAT(s, connections_faulted));
    assert_int_equal(0, STAT(s, fault_rate_pauses));
    arpc_server_destroy(s);

    /* handshake_timeout_ms (its own server, the frame timeout long): a HELLO begun and not
     * finished is a fault; a connection that says nothing is not (a client that connects early
     * to call later). Within the second, a stall cannot make the first silent. */
    s = server_with((arpc_server_options){.max_fault_rate = -1, .handshake_timeout_ms = 1000}, addr, sizeof(addr));
    int begun = raw_connect(addr), silent = raw_connect(addr);
    (void)hello_bytes(buf);
    send_all(begun, buf, 5); /* a HELLO's first bytes */
    await_close(begun);
    await_close(silent);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 2, HANG_GUARD_MS));
    assert_int_equal(1, STAT(s, connections_faulted));
    arpc_server_destroy(s);

    /* A refused token (its own server: authenticate is fixed at create). */
    s = server_with((arpc_server_options){.authenticate = refuse_all}, addr, sizeof(addr));
    assert_int_equal(ARPC_EAUTH, arpc_client_connect(&c, addr, NULL));
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_faulted), 1, HANG_GUARD_MS));
    /* At most as many as connections were made (the client may retry its connect). */
    assert_true(STAT(s, connections_faulted) <= STAT(s, connections_accepted));
    arpc_server_destroy(s);
}

/* inproc:// peers are this process: their faults are counted but charge nothing, so they never
 * pause the listeners strangers use. */
static void test_inproc_faults_pause_nothing(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX], iaddr[ARPC_ADDR_MAX];
    arpc_server *s = server_with((arpc_server_options){.max_fault_rate = 1, .fault_burst = 1}, addr, sizeof(addr));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "inproc://fault-rate", iaddr, sizeof(iaddr)));
    for (unsigned i = 0; i < 3; i++)
        bad_magic_conn(iaddr);
    assert_true(faulted_reaches(s, 3));
    /* No debt: a tcp:// connection is taken at once, and its fault is the bucket's first. */
    bad_magic_conn(addr);
    assert_true(faulted_reaches(s, 4));
    assert_int_equal(0, STAT(s, fault_rate_pauses));
    arpc_server_destroy(s);
}

/* A stranger's faults over tcp:// put the tcp listener in debt, never the local socket: a unix://
 * client connecting while the tcp listener waits is let in at once. Before, one bucket per
 * server paused every listener, so a remote peer faulting on purpose locked out local tools. */
static void test_network_faults_never_pause_the_local_socket(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX], uaddr[ARPC_ADDR_MAX], path[128];
    arpc_server *s = server_with((arpc_server_options){.max_fault_rate = 1, .fault_burst = 1}, addr, sizeof(addr));
    snprintf(path, sizeof(path), "unix:///tmp/arpc-fault-rate-%d.sock", (int)getpid());
    unlink(path + strlen("unix://"));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, path, uaddr, sizeof(uaddr)));
    bad_magic_conn(addr); /* the burst */
    bad_magic_conn(addr); /* waits for a token, then owes one more: the tcp listener pauses (~1 s) */
    assert_true(faulted_reaches(s, 2));
    uint64_t pauses = STAT(s, fault_rate_pauses);
    assert_true(pauses >= 1);
    echo_call_once(uaddr);
    /* Were the unix listener behind the same debt, this call's connection would have paused it
     * (a machine so slow the debt was paid meanwhile cannot fail this, only miss the check). */
    assert_int_equal(pauses, STAT(s, fault_rate_pauses));
    arpc_server_destroy(s);
    unlink(path + strlen("unix://"));
}

/* The default: max_fault_rate 0 is ARPC_FAULT_RATE_DEFAULT a second with a burst as large, so
 * a few faults pause nothing (and the limit is on: the faults are counted). */
static void test_default_allows_a_burst(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = server_with((arpc_server_options){0}, addr, sizeof(addr));
    for (unsigned i = 0; i < 20; i++)
        bad_magic_conn(addr);
    assert_true(faulted_reaches(s, 20));
    assert_int_equal(0, STAT(s, fault_rate_pauses));
    arpc_server_destroy(s);
}

/* A listener paused for faults, its resume due in a second: stop and destroy free it and its
 * timer (ASan sees a use after free or a leak otherwise); the pause's time is counted at the
 * stop; the connections still in the backlog are closed with the socket. */
static void paused_then(bool stop_first)
{
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = server_with((arpc_server_options){.max_fault_rate = 1, .fault_burst = 10}, addr,
                                 sizeof(addr));
    for (unsigned i = 0; i < 10; i++)
        bad_magic_conn(addr); /* the burst spent: the next connection waits ~1 s */
    int fds[3];
    for (unsigned i = 0; i < 3; i++)
        fds[i] = raw_connect(addr);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, fault_rate_pauses), 1, HANG_GUARD_MS));
    if (stop_first) {
        assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
        assert_true(STAT(s, fault_rate_paused_ns) > 0);
    }
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    for (unsigned i = 0; i < 3; i++)
        await_close(fds[i]);
}

static void test_destroy_while_paused(void **state)
{
    (void)state;
    paused_then(false);
}

static void test_stop_then_destroy_while_paused(void **state)
{
    (void)state;
    paused_then(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faults_pause_the_listener_until_paid),
        cmocka_unit_test(test_good_clients_are_never_charged),
        cmocka_unit_test(test_each_fault_counted_and_nothing_else),
        cmocka_unit_test(test_inproc_faults_pause_nothing),
        cmocka_unit_test(test_network_faults_never_pause_the_local_socket),
        cmocka_unit_test(test_default_allows_a_burst),
        cmocka_unit_test(test_destroy_while_paused),
        cmocka_unit_test(test_stop_then_destroy_while_paused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
