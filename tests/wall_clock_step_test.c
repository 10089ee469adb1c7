/*
 * The server's connection timeouts count on CLOCK_MONOTONIC, not on the wall clock. They
 * compared libev's ev_now, which follows CLOCK_REALTIME: a step of it (an NTP step, a VM
 * resumed, date -s) forward by an hour closed every healthy connection at the next sweep
 * ("idle for 600000 ms", "no HELLO within ..."), and a step back turned the handshake, frame
 * and idle timeouts off for an hour (a trial of extreme values and time).
 *
 * The test moves the wall clock this process sees, by interposing clock_gettime,
 * gettimeofday and time (libev reads one of them; it takes a step in within half a second),
 * and waits for a close the sweep must make, with timeouts long enough (2 s) that libev has
 * taken the step in by then:
 *  - forward: a silent socket opened after the step is closed at handshake_timeout_ms, and a
 *    connection idle since before the step, with idle_timeout_ms a minute, is still open
 *    then (the sweep that closed the first looked at it too);
 *  - back: a silent socket opened before the step is closed at its handshake_timeout_ms;
 *    a client silent since its HELLO is closed by the heartbeat, and one that stopped reading
 *    its reply by the write timeout (each clock began before the step).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/interpose.h"
#include "support/raw_client.h"
#include "support/test_util.h"
#include "transport/transport.h"

#define TIMEOUT_MS 2000 /* over libev's half second to take a step in */
#define STEP_S 3600

static _Atomic long wall_shift_s; /* added to CLOCK_REALTIME as this process reads it */

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static _Atomic(void *) next;
    int (*real)(clockid_t, struct timespec *) =
        (int (*)(clockid_t, struct timespec *))interpose_next("clock_gettime", &next);
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += atomic_load(&wall_shift_s);
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    (void)tz;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out != NULL)
        *out = ts.tv_sec;
    return ts.tv_sec;
}

struct fixture {
    arpc_server *s;
    char addr[ARPC_ADDR_MAX];
};

static void start(struct fixture *fx, arpc_server_options so)
{
    atomic_store(&wall_shift_s, 0);
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->s, "tcp://127.0.0.1:0", fx->addr, sizeof(fx->addr)));
}

static void stop(struct fixture *fx)
{
    arpc_server_destroy(fx->s);
    atomic_store(&wall_shift_s, 0);
}

static int silent_socket(const char *addr)
{
    int fd = -1;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, 5000, &fd, NULL, 0));
    return fd;
}

static void test_step_forward_closes_nothing(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx, (arpc_server_options){.handshake_timeout_ms = TIMEOUT_MS, .idle_timeout_ms = 60000});
    struct raw_client idle;
    assert_true(raw_connect(&idle, fx.addr, 7)); /* says HELLO, then nothing */
    atomic_store(&wall_shift_s, STEP_S);
    int silent = silent_socket(fx.addr);
    assert_true(fd_wait_eof(silent, TEST_WAIT_MS)); /* a sweep after the step: it looked at idle too */
    close(silent);
    struct pollfd p = {.fd = idle.rc_fd, .events = POLLIN};
    assert_int_equal(0, poll(&p, 1, 0)); /* no GOAWAY, no end of stream */
    assert_true(raw_request(&idle, 1, 0, 0, 0, "t.echo", "x", 1));
    struct raw_frame f;
    assert_true(raw_read(&idle, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    raw_close(&idle);
    stop(&fx);
}

static void test_step_back_keeps_the_timeouts(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx, (arpc_server_options){.handshake_timeout_ms = TIMEOUT_MS});
    int64_t t0 = now_ms(); /* before the connect: the server's clock starts at its accept */
    int silent = silent_socket(fx.addr);
    atomic_store(&wall_shift_s, -STEP_S);
    assert_true(fd_wait_eof(silent, TEST_WAIT_MS)); /* not an hour later */
    assert_true(now_ms() - t0 >= TIMEOUT_MS - 100);
    close(silent);
    stop(&fx);
}

/* Waits (bounded) for the server to end fd (its FIN or reset), reading nothing: a read would
 * be progress for the write timeout. */
static bool fd_wait_hangup(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, ms) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static void test_step_back_keeps_the_heartbeat(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx, (arpc_server_options){.heartbeat_ms = TIMEOUT_MS / 2, .heartbeat_misses = 1});
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 8)); /* its HELLO starts the heartbeat's clock */
    atomic_store(&wall_shift_s, -STEP_S);
    assert_true(fd_wait_eof(r.rc_fd, TEST_WAIT_MS)); /* the PINGs read, none answered */
    raw_close(&r);
    stop(&fx);
}

static void test_step_back_keeps_the_write_timeout(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx, (arpc_server_options){.write_timeout_ms = TIMEOUT_MS});
    int fd = tcp_socket_rcvbuf(4096); /* the reply soon fills what the kernels hold, and stops */
    struct raw_client r;
    assert_true(raw_connect_on(&r, fd, fx.addr, 9));
    size_t len = 8u << 20; /* its echo comes back */
    char *payload = calloc(1, len);
    assert_non_null(payload);
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.echo", payload, len));
    free(payload);
    struct pollfd p = {.fd = fd, .events = POLLIN}; /* the reply is queued: its clock began */
    assert_int_equal(1, poll(&p, 1, TEST_WAIT_MS));
    atomic_store(&wall_shift_s, -STEP_S);
    assert_true(fd_wait_hangup(fd, TEST_WAIT_MS)); /* not an hour later */
    raw_close(&r);
    stop(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_forward_closes_nothing),
        cmocka_unit_test(test_step_back_keeps_the_timeouts),
        cmocka_unit_test(test_step_back_keeps_the_heartbeat),
        cmocka_unit_test(test_step_back_keeps_the_write_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
