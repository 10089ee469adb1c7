/*
 * max_fault_rate and JSON-RPC connections (core/fault_rate.c, core/jsonrpc_server.c): bad
 * input is charged, as an arpc peer's malformed frame is; a client that goes away inside its
 * request (killed while writing it: its kernel sends the end of stream) is a lost connection,
 * as an arpc client cut inside a frame is, and is not charged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"
#include "transport/transport.h"

static arpc_server *server_counting(char *addr, size_t len)
{
    arpc_server *s = NULL;
    /* Counted, never paused: what is charged is what this file checks. */
    arpc_server_options o = {.workers = 1, .max_fault_rate = -1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len));
    return s;
}

/* Sends bytes on a new connection, half-closes, and reads until the server closes it; then
 * waits for the server to count the close (the closes-th). */
static void send_and_end(arpc_server *s, const char *addr, const char *bytes, uint64_t closes)
{
    int fd = -1;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, TEST_WAIT_MS, &fd, NULL, 0));
    size_t len = strlen(bytes);
    assert_int_equal((ssize_t)len, send(fd, bytes, len, MSG_NOSIGNAL));
    assert_int_equal(0, shutdown(fd, SHUT_WR));
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    close(fd);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), closes, TEST_WAIT_MS));
}

static void test_cut_inside_a_request_is_not_charged(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = server_counting(addr, sizeof(addr));
    send_and_end(s, addr, "{\"method\": \"t.echo\", \"params\": [\"a long", 1);
    assert_int_equal(0, SERVER_STAT(s, connections_faulted));
    /* A whole call, then a cut one: the first is answered, nothing is charged. */
    send_and_end(s, addr, "{\"method\": \"t.echo\", \"params\": [\"aGk=\"], \"id\": 1}\n{\"method\": \"t.e", 2);
    assert_int_equal(0, SERVER_STAT(s, connections_faulted));
    arpc_server_destroy(s);
}

static void test_bad_input_is_charged(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = server_counting(addr, sizeof(addr));
    send_and_end(s, addr, "{\"method\": \"t.echo\", \"params\": [1,]}", 1); /* not JSON */
    assert_int_equal(1, SERVER_STAT(s, connections_faulted));
    arpc_server_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_inside_a_request_is_not_charged),
        cmocka_unit_test(test_bad_input_is_charged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
