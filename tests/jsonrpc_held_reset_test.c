/*
 * A JSON-RPC connection held at a flow limit (max_calls_per_conn 1 here, its one call's
 * handler waiting) reads no more, requests waiting behind the hold; when its peer resets it,
 * it is closed at once: the held connection still watches its socket's hangup, as an arpc
 * connection does (held_input_test: test_reset_while_held_full). Lines go by hand over a
 * plain socket.
 *
 * On the old code the reset was heard of only when the hold ended: the connection was still
 * open when the test's wait ran out (30 s), and the assertion on connections_closed fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <semaphore.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

static sem_t gate;

/* Holds its worker (and, with max_calls_per_conn 1, its connection's input) until let go. */
static void h_gate(arpc_request *req, void *ctx)
{
    (void)ctx;
    sem_wait(&gate);
    arpc_reply(req, "1", 1);
}

static void test_reset_while_held_full(void **state)
{
    (void)state;
    sem_init(&gate, 0, 0);
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .max_calls_per_conn = 1};
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "T.Gate", h_gate, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "T.Echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(0, fd_connect_loopback(fd, addr));
    uint64_t before = SERVER_STAT(s, bytes_in);
    /* The held call, then 96 KiB of calls behind it: more than a held read buffer takes. */
    static char lines[96 * 1024];
    size_t len = (size_t)snprintf(lines, sizeof(lines), "{\"method\":\"T.Gate\",\"params\":[1],\"id\":1}\n");
    for (int id = 2; len + 128 < sizeof(lines); id++)
        len += (size_t)snprintf(lines + len, sizeof(lines) - len,
                                "{\"method\":\"T.Echo\",\"params\":[\"%060d\"],\"id\":%d}\n", id, id);
    size_t sent = 0;
    while (sent < len) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        assert_int_equal(1, poll(&p, 1, TEST_WAIT_MS)); /* the kernel's buffers take the rest */
        ssize_t n = send(fd, lines + sent, len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
    }
    /* The server read what it could take and holds: it reads no more (an arpc connection
     * would read on for control frames, JSON-RPC has none). */
    assert_true(WAIT_UNTIL(SERVER_STAT(s, bytes_in) - before >= 8 * 1024));
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)));
    close(fd); /* a reset: unread bytes on our side too */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    sem_post(&gate);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&gate);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reset_while_held_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
