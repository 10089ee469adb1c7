/*
 * arpc_client_connect on an application's loop (arpc_client_options.loop) that stops:
 *   - while the connect waits for the server's HELLO: ARPC_ESHUTDOWN, and errbuf says the loop
 *     stopped (it was left empty: no attempt had failed yet, and the stop said nothing);
 *   - before the connect: ARPC_ESHUTDOWN, said, and no connection is attempted (the attempt
 *     ran on the caller's thread, a server saw a connection come and go).
 * The server is a bare listening socket that never accepts: the kernel completes the
 * handshake, so a connection attempt shows as a readable listener (helper 232's review).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

struct stopper {
    int listen_fd;
    arpc_loop *loop;
};

/* A connection attempt is in the listener's backlog within ms. */
static bool attempted_within(int listen_fd, int ms)
{
    struct pollfd p = {.fd = listen_fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

/* Stops the loop once the client's connection reached the listener. */
static void *stop_once_attempted(void *arg)
{
    struct stopper *st = arg;
    CHECK(attempted_within(st->listen_fd, TEST_WAIT_MS));
    arpc_loop_stop(st->loop);
    return NULL;
}

static arpc_loop *started_loop(void)
{
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    return loop;
}

static int connect_on(arpc_loop *loop, uint16_t port, char *why, size_t len)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", (unsigned)port);
    arpc_client_options co = {.loop = loop, .connect_timeout_ms = TEST_WAIT_MS, .errbuf = why, .errbuf_len = len};
    arpc_client *c = NULL;
    int rc = arpc_client_connect(&c, addr, &co);
    assert_null(c);
    return rc;
}

static void test_loop_stops_while_connecting(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = fd_listen_loopback(0, 16, 0, &port);
    arpc_loop *loop = started_loop();
    struct stopper st = {lfd, loop};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, stop_once_attempted, &st));
    char why[ARPC_ERRBUF_SIZE] = "";
    assert_int_equal(ARPC_ESHUTDOWN, connect_on(loop, port, why, sizeof(why)));
    pthread_join(t, NULL);
    if (strstr(why, "loop the client runs on stopped") == NULL)
        fail_msg("errbuf: \"%s\"", why);
    arpc_loop_destroy(loop);
    close(lfd);
    assert_int_equal(0, atomic_load(&bad_line));
}

static void test_loop_stopped_before_connecting(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = fd_listen_loopback(0, 16, 0, &port);
    arpc_loop *loop = started_loop();
    arpc_loop_stop(loop);
    char why[ARPC_ERRBUF_SIZE] = "";
    assert_int_equal(ARPC_ESHUTDOWN, connect_on(loop, port, why, sizeof(why)));
    assert_non_null(strstr(why, "loop the client runs on is stopped"));
    assert_false(attempted_within(lfd, 0)); /* (an attempt is in the backlog by connect's return) */
    arpc_loop_destroy(loop);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_stops_while_connecting),
        cmocka_unit_test(test_loop_stopped_before_connecting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
