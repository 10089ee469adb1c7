/*
 * Which closes are charged to max_fault_rate (core/fault_rate.c, sconn_on_close), beyond
 * fault_rate_test's list: a fault the server decided is charged even when the connection then
 * breaks before its last words leave (the peer reset it at once); and the refusals
 * fault_rate_test does not make (a frame a client never sends, a first frame not HELLO, a
 * unix:// peer off the allow-list, in arpc and in JSON-RPC), each once.
 *
 * The server's loop is held (support/loop_hold.h) while the peer sends its bytes and resets,
 * so the server meets both in one readiness, whatever the machine's speed.
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
#include "core/frame.h"
#include "support/loop_hold.h"
#include "support/test_util.h"
#include "transport/transport.h"

static arpc_server *server_counting(arpc_server_options o, char *addr, size_t len)
{
    arpc_server *s = NULL;
    o.workers = 1;
    o.max_fault_rate = -1; /* counted, never paused: what is charged is what this file checks */
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.hold", loop_hold_handler, NULL,
                                                   &(arpc_method_options){.inline_on_loop = true}));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len));
    return s;
}

#define REACHES(s, field, n) server_stat_reaches((s), offsetof(arpc_server_stats, field), (n), TEST_WAIT_MS)

static int plain_connect(const char *addr)
{
    int fd = -1;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, TEST_WAIT_MS, &fd, NULL, 0));
    return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
    assert_int_equal((ssize_t)len, send(fd, buf, len, MSG_NOSIGNAL));
}

static void close_with_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
    close(fd);
}

/* Bytes no arpc or JSON-RPC peer sends, then a reset at once: the server decides the fault
 * (GOAWAY EPROTO), and its GOAWAY then meets the reset. It is charged all the same (else any
 * peer evades max_fault_rate with SO_LINGER 0). */
static void test_fault_then_reset_is_charged(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = server_counting((arpc_server_options){0}, addr, sizeof(addr));
    int fd = plain_connect(addr);
    assert_true(REACHES(s, connections_accepted, 1));
    struct raw_client *holder = loop_hold_begin(addr, "t.hold");
    assert_non_null(holder);
    static const uint8_t junk[32] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, junk, sizeof(junk));
    close_with_reset(fd);
    loop_hold_end(holder);
    assert_true(REACHES(s, connections_closed, 2)); /* it, and the holder */
    assert_int_equal(1, SERVER_STAT(s, connections_faulted));
    assert_int_equal(0, atomic_load(&bad_line));
    arpc_server_destroy(s);
}

/* A frame sent on a new connection; the server closes it (a fault). */
static void send_and_await_close(const char *addr, const void *bytes, size_t len)
{
    int fd = plain_connect(addr);
    send_all(fd, bytes, len);
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    close(fd);
}

static void test_protocol_refusals_charged_once_each(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = server_counting((arpc_server_options){0}, addr, sizeof(addr));
    uint8_t buf[128];
    size_t n = arpc_frame_encode_header(buf, ARPC_FRAME_PING, 1, 0); /* passes: answered */
    n += arpc_frame_encode_header(buf + n, ARPC_FRAME_CANCEL, 1, 0); /* not HELLO */
    send_and_await_close(addr, buf, n);
    assert_true(REACHES(s, connections_faulted, 1));
    n = arpc_frame_encode_hello(buf, 0xfa17, 0, 0, 0);
    n += arpc_frame_encode_header(buf + n, ARPC_FRAME_REPLY, 1, 0); /* a server's frame */
    send_and_await_close(addr, buf, n);
    assert_true(REACHES(s, connections_closed, 2));
    assert_int_equal(2, SERVER_STAT(s, connections_faulted));
    arpc_server_destroy(s);
}

/* unix:// with an allow-list this process is not on: its arpc client and a JSON-RPC peer are
 * refused (ARPC_EAUTH), each charged once. */
static void test_allow_list_refusals_charged(void **state)
{
    (void)state;
    char path[ARPC_ADDR_MAX], bound[ARPC_ADDR_MAX];
    snprintf(path, sizeof(path), "unix:///tmp/arpc-fault-charge-%d.sock", (int)getpid());
    uint32_t other = (uint32_t)getuid() + 1;
    arpc_server_options o = {.workers = 1, .max_fault_rate = -1, .allow_uids = &other, .allow_uids_count = 1};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, path, bound, sizeof(bound)));
    arpc_client *c = NULL;
    arpc_client_options co = {.no_reconnect = true};
    assert_int_equal(ARPC_EAUTH, arpc_client_connect(&c, bound, &co));
    assert_true(REACHES(s, connections_faulted, 1));
    uint64_t closed = SERVER_STAT(s, connections_closed);
    static const char call[] = "{\"method\": \"t.hold\", \"params\": [\"\"], \"id\": 1}\n";
    send_and_await_close(bound, call, sizeof(call) - 1);
    assert_true(REACHES(s, connections_closed, closed + 1));
    assert_int_equal(2, SERVER_STAT(s, connections_faulted));
    arpc_server_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_then_reset_is_charged),
        cmocka_unit_test(test_protocol_refusals_charged_once_each),
        cmocka_unit_test(test_allow_list_refusals_charged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
