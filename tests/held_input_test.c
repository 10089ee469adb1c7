/*
 * What a held server connection (its input held by max_calls_per_conn here) reads on for
 * control frames to pass (core/conn_held.c) must not change what happens to the frames that
 * wait behind the hold:
 * - a peer that half-closes after its requests still gets every reply (docs/SECURITY.md,
 *   "Half-closed peer"): the end of stream read while frames wait is acted on after them;
 * - a call's budget counts from no earlier than the read that brought it: one sent long after
 *   the hold began is not refused ARPC_EEXPIRED for the time the frames before it waited.
 * - a peer that resets a held connection that reads no more is closed at once.
 * Frames go by hand (support/raw_client.h). A PING's PONG proves the server has read
 * everything sent before it (PINGs pass a hold).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/test_util.h"

static sem_t gate;

/* Holds its worker (and, with max_calls_per_conn 1, its connection's input) until let go. */
static void h_gate(arpc_request *req, void *ctx)
{
    (void)ctx;
    sem_wait(&gate);
    arpc_reply(req, "ok", 2);
}

static arpc_server *make_server(char *addr, size_t addrlen)
{
    sem_init(&gate, 0, 0);
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .max_calls_per_conn = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.gate", h_gate, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

/* Sends a PING and reads until its PONG: the server has read all that came before. */
static void read_all_sent(struct raw_client *r)
{
    uint8_t ping[ARPC_FRAME_HEADER_SIZE];
    arpc_frame_encode_header(ping, ARPC_FRAME_PING, 99, 0);
    assert_true(raw_send(r, ping, sizeof(ping)));
    struct raw_frame f;
    do
        assert_true(raw_read(r, &f, true));
    while (f.f.f_kind != ARPC_FRAME_PONG);
}

static void expect_reply(struct raw_client *r, uint64_t xid)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    if (f.f.f_kind == ARPC_FRAME_ERROR)
        fail_msg("xid %llu: error %u %.*s", (unsigned long long)f.f.f_xid, f.f.f_code, (int)f.body_len,
                 (const char *)f.body);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(xid, f.f.f_xid);
}

#define HALF_CLOSE_CALLS 4

static void test_half_close_while_held(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    for (uint64_t xid = 1; xid <= HALF_CLOSE_CALLS; xid++)
        assert_true(raw_request(&r, xid, 0, 0, 0, "t.gate", "x", 1));
    read_all_sent(&r); /* the first runs, the rest wait behind the hold */
    assert_int_equal(0, shutdown(r.rc_fd, SHUT_WR));
    /* The server reads the end of stream while held. Before, it closed the connection then,
     * dropping every reply: watch a second for that (a slower server passes, never fails). */
    struct pollfd p = {.fd = r.rc_fd, .events = POLLIN};
    assert_int_equal(0, poll(&p, 1, 1000));
    for (int i = 0; i < HALF_CLOSE_CALLS; i++)
        sem_post(&gate);
    for (uint64_t xid = 1; xid <= HALF_CLOSE_CALLS; xid++)
        expect_reply(&r, xid);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&gate);
}

#define BUDGET_MS 1500

static void test_budget_counts_from_its_own_read(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.gate", "x", 1)); /* holds the connection */
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.echo", "a", 1)); /* waits behind the hold */
    read_all_sent(&r);
    /* Not a wait for anything: the time the first waiting frame has waited when the next
     * comes, longer than that one's budget. */
    usleep((BUDGET_MS + 500) * 1000);
    assert_true(raw_request(&r, 3, 0, 0, BUDGET_MS, "t.echo", "b", 1));
    read_all_sent(&r);
    sem_post(&gate);
    expect_reply(&r, 1);
    expect_reply(&r, 2);
    expect_reply(&r, 3); /* before: ERROR ARPC_EEXPIRED, its budget counted from call 2's read */
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&gate);
}

/* A held connection whose read buffer is full of frames that wait reads no more; its peer
 * then resets the connection (gone both ways). The server closes it at once, not when the
 * hold ends: here the hold lasts until the test lets t.gate go, after the check. Before, the
 * reset was seen only once the hold ended (or by the heartbeat, 45 s). */
static void test_reset_while_held_full(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    uint64_t before = SERVER_STAT(s, bytes_in);
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.gate", "x", 1)); /* holds the connection */
    /* 96 KiB of requests behind it: more than the held read buffer (64 KiB) takes. */
    static uint8_t frames[96 * 1024];
    size_t fl = 0;
    for (uint64_t xid = 2; fl + 256 < sizeof(frames); xid++) {
        uint8_t payload[100] = {0};
        fl += arpc_frame_encode_request(frames + fl, ARPC_FRAME_REQUEST, xid, 0, 0, 0, "t.echo", 6, payload,
                                        sizeof(payload));
    }
    size_t sent = 0;
    while (sent < fl) {
        struct pollfd p = {.fd = r.rc_fd, .events = POLLOUT};
        assert_int_equal(1, poll(&p, 1, TEST_WAIT_MS)); /* the kernel's buffers take the rest */
        ssize_t n = send(r.rc_fd, frames + sent, fl - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            sent += (size_t)n;
    }
    /* The server read its buffer full: it stops reading. */
    assert_true(WAIT_UNTIL(SERVER_STAT(s, bytes_in) - before >= 64 * 1024));
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(0, setsockopt(r.rc_fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)));
    raw_close(&r); /* a reset: unread bytes on our side too */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    sem_post(&gate);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&gate);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_close_while_held),
        cmocka_unit_test(test_budget_counts_from_its_own_read),
        cmocka_unit_test(test_reset_while_held_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
