/*
 * max_accept_rate and accept_burst (core/accept_rate.c, core/listener.c): a server's
 * listeners take new connections at most at the rate, after a burst taken at once; they stop
 * polling their sockets meanwhile and start again by themselves; inproc:// is not limited;
 * stop and destroy with a listener paused (its resume timer armed) free everything; an
 * established client keeps calling while a flood waits in the backlog; connections refused for
 * max_connections take tokens too, and the listener goes on refusing them.
 *
 * Timing is checked one way only, so that a slow machine cannot fail it: the server accepts
 * the k-th connection no sooner than (k - burst) intervals after the bucket's first token,
 * itself no sooner than t0, read before the server existed; and the k-th HELLO the test reads
 * comes after the k-th accept. Waits are for events (a HELLO, a counter) with a hang guard.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "base/clock.h"
#include "core/frame.h"
#include "support/test_util.h"
#include "transport/transport.h"

#define HANG_GUARD_MS 30000

static arpc_server *rated_server(uint32_t rate, uint32_t burst, const char *listen, char *addr, size_t len)
{
    arpc_server_options o = {.max_accept_rate = rate, .accept_burst = burst, .workers = 1};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen, addr, len));
    return s;
}

/* A raw connection that has sent its HELLO (the kernel completes the connect whether or not
 * the server accepts it: the backlog). */
static int raw_hello(const char *addr)
{
    int fd = -1;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, HANG_GUARD_MS, &fd, NULL, 0));
    uint8_t hello[64];
    size_t n = arpc_frame_encode_hello(hello, 0xacce, 0, 0, 0);
    assert_int_equal((ssize_t)n, send(fd, hello, n, MSG_NOSIGNAL));
    return fd;
}

#define STAT(s, field) SERVER_STAT(s, field)

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Waits for the server's HELLO on each of fds[from..n), writing when the test saw it into
 * at[]; fails the test at the hang guard. */
static void await_hellos(const int *fds, unsigned from, unsigned n, uint64_t *at)
{
    struct pollfd pf[64];
    assert_true(n <= 64);
    uint64_t until = arpc_now_ns() + (uint64_t)HANG_GUARD_MS * ARPC_NS_PER_MS;
    for (unsigned seen = 0; seen < n - from;) {
        unsigned k = 0;
        for (unsigned i = from; i < n; i++)
            pf[k++] = (struct pollfd){.fd = at[i] == 0 ? fds[i] : -1, .events = POLLIN};
        int left = arpc_ms_left_int(until);
        assert_true(left > 0);
        assert_true(poll(pf, k, left) > 0);
        uint64_t now = arpc_now_ns();
        for (unsigned i = from; i < n; i++)
            if (pf[i - from].revents != 0 && at[i] == 0) {
                assert_true(pf[i - from].revents & POLLIN); /* the HELLO, not a close */
                at[i] = now;
                seen++;
            }
    }
}

/* The k-th HELLO (sorted, 1-based) came no sooner than (k - burst) intervals after t0. */
static void assert_rate_held(uint64_t t0, uint64_t *at, unsigned n, uint32_t rate, uint32_t burst)
{
    qsort(at, n, sizeof(*at), cmp_u64);
    uint64_t interval = 1000000000ull / rate;
    for (unsigned k = burst + 1; k <= n; k++) {
        uint64_t earliest = t0 + (uint64_t)(k - burst) * interval;
        if (at[k - 1] < earliest)
            fail_msg("connection %u was answered %.1f ms after t0, before its token (%.1f ms)", k,
                     (at[k - 1] - t0) / 1e6, (earliest - t0) / 1e6);
    }
}

/* Whether the listener must have paused: all n connections were waiting (from all_open on)
 * before the server could have accepted the last (no sooner than t0 + (n - burst) intervals),
 * so it met one waiting with no token. A machine that stalled the test's connects longer
 * than that may have let every one find its token: then nothing is asserted. */
static bool pause_was_certain(uint64_t t0, uint64_t all_open, unsigned n, uint32_t rate, uint32_t burst)
{
    return n > burst && all_open < t0 + (uint64_t)(n - burst) * (1000000000ull / rate);
}

/* The burst is taken at once, then the rate holds, and the paused listener resumes by itself. */
static void rate_and_burst(const char *listen)
{
    enum { RATE = 20, BURST = 8, N = 24 };
    uint64_t t0 = arpc_now_ns();
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = rated_server(RATE, BURST, listen, addr, sizeof(addr));
    int fds[N];
    uint64_t at[N] = {0};
    for (unsigned i = 0; i < BURST; i++)
        fds[i] = raw_hello(addr);
    await_hellos(fds, 0, BURST, at);
    /* A full bucket never empties within its burst, however long those took. */
    assert_int_equal(0, STAT(s, accept_rate_pauses));
    assert_int_equal(BURST, STAT(s, connections_accepted));
    for (unsigned i = BURST; i < N; i++)
        fds[i] = raw_hello(addr);
    uint64_t all_open = arpc_now_ns();
    await_hellos(fds, BURST, N, at); /* all of them: the listener resumed */
    uint64_t pauses = STAT(s, accept_rate_pauses);
    assert_rate_held(t0, at, N, RATE, BURST); /* sorts at[] */
    printf("%s: %u connections at %u/s (burst %u): the last answered %.0f ms after t0, %llu pauses\n", listen, N,
           RATE, BURST, (double)(at[N - 1] - t0) / 1e6, (unsigned long long)pauses);
    if (pause_was_certain(t0, all_open, N, RATE, BURST)) {
        assert_true(pauses >= 1);
        assert_true(STAT(s, accept_rate_paused_ns) > 0);
    }
    for (unsigned i = 0; i < N; i++)
        close(fds[i]);
    arpc_server_destroy(s);
}

static void test_tcp_rate_holds_after_a_burst(void **state)
{
    (void)state;
    rate_and_burst("tcp://127.0.0.1:0");
}

static void test_unix_rate_holds_after_a_burst(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "unix:///tmp/arpc-accept-rate-%d.sock", (int)getpid());
    unlink(path + strlen("unix://"));
    rate_and_burst(path);
}

/* inproc:// peers are this process: never paused, whatever the rate. */
static void test_inproc_is_not_limited(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = rated_server(1, 1, "inproc://accept-rate", addr, sizeof(addr));
    arpc_client *c[6];
    for (unsigned i = 0; i < 6; i++)
        assert_int_equal(ARPC_OK, arpc_client_connect(&c[i], addr, NULL));
    assert_int_equal(0, STAT(s, accept_rate_pauses));
    for (unsigned i = 0; i < 6; i++)
        arpc_client_close(c[i]);
    arpc_server_destroy(s);
}

/* A listener paused with its resume due in 1 s: stop and destroy free it, its timer with it
 * (ASan sees a use after free or a leak otherwise), and the connections still in the backlog
 * are closed with the socket. */
static void paused_then(bool stop_first)
{
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = rated_server(1, 1, "tcp://127.0.0.1:0", addr, sizeof(addr));
    int fds[4];
    for (unsigned i = 0; i < 4; i++)
        fds[i] = raw_hello(addr);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, accept_rate_pauses), 1, HANG_GUARD_MS));
    if (stop_first)
        assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    for (unsigned i = 0; i < 4; i++) {
        assert_true(fd_wait_eof(fds[i], HANG_GUARD_MS));
        close(fds[i]);
    }
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

/* At max_connections too: a connection refused for it (GOAWAY, close) took a token all the
 * same (it cost the server an accept), and the listener, paused for the rate between the
 * refusals, resumes and refuses every one; nothing wedges. */
static void test_refused_for_max_connections_take_tokens(void **state)
{
    (void)state;
    enum { N = 10 };
    char addr[ARPC_ADDR_MAX];
    uint64_t t0 = arpc_now_ns();
    arpc_server_options o = {.max_accept_rate = 20, .accept_burst = 4, .max_connections = 2, .workers = 1};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    int fds[N];
    for (unsigned i = 0; i < N; i++)
        fds[i] = raw_hello(addr);
    uint64_t all_open = arpc_now_ns();
    /* The first two are let in (their HELLOs say nothing more); each later one is refused. */
    for (unsigned i = 2; i < N; i++) {
        assert_true(fd_wait_eof(fds[i], HANG_GUARD_MS));
        close(fds[i]);
    }
    assert_int_equal(N, STAT(s, connections_accepted));
    if (pause_was_certain(t0, all_open, N, 20, 4))
        assert_true(STAT(s, accept_rate_pauses) >= 1); /* N over a burst of 4 */
    close(fds[0]);
    close(fds[1]);
    arpc_server_destroy(s);
}

/* ---- an established client during a flood ---- */

struct flood {
    const char *addr;
    unsigned n;
    int fds[400];
    atomic_uint opened;
    uint64_t all_open; /* arpc_now_ns once every one is open (read after the join) */
};

static void *flood_main(void *arg)
{
    struct flood *f = arg;
    for (unsigned i = 0; i < f->n; i++) {
        f->fds[i] = raw_hello(f->addr);
        atomic_store(&f->opened, i + 1);
    }
    f->all_open = arpc_now_ns();
    return NULL;
}

static void test_established_client_calls_during_a_flood(void **state)
{
    (void)state;
    enum { RATE = 100, BURST = 10, CALLS = 200 };
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = rated_server(RATE, BURST, "tcp://127.0.0.1:0", addr, sizeof(addr));
    arpc_client *good;
    assert_int_equal(ARPC_OK, arpc_client_connect(&good, addr, NULL));
    uint64_t t0 = arpc_now_ns();
    static struct flood f; /* 1.6 KiB of fds: off the stack */
    f = (struct flood){.addr = addr, .n = 300};
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, flood_main, &f));
    /* Calls go on while the flood waits in the backlog: the paused listener is not theirs. */
    unsigned calls = 0;
    for (; calls < CALLS || atomic_load(&f.opened) < f.n; calls++) {
        void *reply = NULL;
        size_t len = 0;
        assert_int_equal(ARPC_OK, arpc_call(good, "t.echo", "ping", 4, &reply, &len, HANG_GUARD_MS));
        assert_int_equal(4, len);
        arpc_free(reply);
    }
    assert_int_equal(0, pthread_join(th, NULL));
    uint64_t all_open = f.all_open;
    /* The flood was throttled: within burst + rate x elapsed (+ the good client's and one in
     * flight), counted after the fact so that the bound only loosens. */
    uint64_t accepted = STAT(s, connections_accepted);
    double elapsed_s = (arpc_now_ns() - t0) / 1e9;
    printf("flood: %u connects, %llu accepted in %.2f s at %u/s (burst %u), %llu pauses, %u good calls\n", f.n,
           (unsigned long long)accepted, elapsed_s, RATE, BURST, (unsigned long long)STAT(s, accept_rate_pauses),
           calls);
    if (pause_was_certain(t0, all_open, f.n, RATE, BURST))
        assert_true(STAT(s, accept_rate_pauses) >= 1);
    assert_true((double)accepted <= 1 + BURST + RATE * elapsed_s + 1);
    for (unsigned i = 0; i < f.n; i++)
        close(f.fds[i]);
    arpc_client_close(good);
    arpc_server_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_rate_holds_after_a_burst),
        cmocka_unit_test(test_unix_rate_holds_after_a_burst),
        cmocka_unit_test(test_inproc_is_not_limited),
        cmocka_unit_test(test_destroy_while_paused),
        cmocka_unit_test(test_stop_then_destroy_while_paused),
        cmocka_unit_test(test_refused_for_max_connections_take_tokens),
        cmocka_unit_test(test_established_client_calls_during_a_flood),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
