/*
 * A fresh server's first burst of small pipelined calls logs no "holding input" line. Before
 * a method's first reply each of its calls is counted at a guess of its reply (max_conn_bytes
 * / 16, docs/SECURITY.md), so the 17th call of the burst holds input until replies come: that
 * hold stays (a never-reading client asking for large replies is bounded by it), but it is
 * the guess's, not the client's doing, and logging it (INFO, "N bytes read, queued and
 * owed") told an operator of trouble where there was none. A hold the bytes really make still
 * logs (flow_limits_test), and so does one no reply ends: long polls given up on
 * (held_control_test) or that last (here).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/raw_client.h"
#include "support/test_util.h"

enum { WINDOW = 256, PAYLOAD = 16, NPARK = 32 };

/* t.park: a long poll, kept unanswered until the test answers it. */
static _Atomic(arpc_request *) parked[NPARK]; /* set after nparked counts it */
static atomic_int nparked;

static void h_park(arpc_request *req, void *ctx)
{
    (void)ctx;
    int i = atomic_fetch_add(&nparked, 1);
    if (i < NPARK)
        atomic_store(&parked[i], req);
    else
        arpc_reply(req, NULL, 0);
}

static arpc_server *fresh_server(char *addr, size_t len)
{
    arpc_server *s;
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.park", h_park, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len));
    log_capture_clear();
    return s;
}

/* No hold line, unless the burst took a second or more from its first call to its last reply:
 * then a hold lasted that long, and is said by design (a loaded machine's stall, not a defect). */
static void assert_no_hold_logged(int64_t burst_started_ms)
{
    int64_t took = now_ms() - burst_started_ms;
    if (took >= 1000) {
        print_message("burst took %lld ms: a hold that long is said, not checked\n", (long long)took);
        return;
    }
    if (LOG_LINES_WITH("holding input") != 0)
        log_capture_print();
    assert_int_equal(0, LOG_LINES_WITH("holding input"));
}

/* The whole window in one write: the server reads every call before any reply. */
static void test_one_write_burst(void **state)
{
    (void)state;
    char addr[128];
    arpc_server *s = fresh_server(addr, sizeof(addr));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 77));
    static uint8_t reqs[WINDOW * 64];
    uint8_t payload[PAYLOAD] = {0};
    size_t len = 0;
    for (uint64_t xid = 1; xid <= WINDOW; xid++)
        len += arpc_frame_encode_request(reqs + len, ARPC_FRAME_REQUEST, xid, 0, 0, 0, "t.echo", 6, payload,
                                         sizeof(payload));
    int64_t started = now_ms();
    assert_true(raw_send(&r, reqs, len));
    bool seen[WINDOW + 1] = {false};
    for (unsigned i = 0; i < WINDOW; i++) {
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        assert_true(f.f.f_xid >= 1 && f.f.f_xid <= WINDOW && !seen[f.f.f_xid]);
        seen[f.f.f_xid] = true;
    }
    assert_no_hold_logged(started);
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* arpc's own client, a window of calls started at once. */
static void test_pipelined_client(void **state)
{
    (void)state;
    char addr[128];
    arpc_server *s = fresh_server(addr, sizeof(addr));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    static arpc_future *fs[WINDOW];
    uint8_t payload[PAYLOAD] = {0};
    int64_t started = now_ms();
    for (unsigned i = 0; i < WINDOW; i++)
        assert_non_null(fs[i] = arpc_call_async(c, "t.echo", payload, sizeof(payload), TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_future_wait_all(fs, WINDOW, TEST_WAIT_MS));
    assert_no_hold_logged(started);
    for (unsigned i = 0; i < WINDOW; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait(fs[i]));
        arpc_future_release(fs[i]);
    }
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Long polls to a fresh method: 16 hold the connection (their replies guessed), none replies,
 * and nobody cancels: the hold lasts, and is said (by the limits' sweep, within a second or
 * two). */
static void test_lasting_hold_is_said(void **state)
{
    (void)state;
    char addr[128];
    arpc_server *s = fresh_server(addr, sizeof(addr));
    atomic_store(&nparked, 0);
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 78));
    static uint8_t reqs[NPARK * 64];
    size_t len = 0;
    for (uint64_t xid = 1; xid <= NPARK; xid++)
        len += arpc_frame_encode_request(reqs + len, ARPC_FRAME_REQUEST, xid, 0, 0, 0, "t.park", 6, "", 0);
    assert_true(raw_send(&r, reqs, len));
    assert_true(WAIT_UNTIL(LOG_LINES_WITH("holding input", "estimated replies to 16 calls") == 1));
    int n = atomic_load(&nparked);
    assert_true(n >= 1 && n <= 16); /* held: the others wait in the socket */
    for (int i = 0; i < n; i++) {
        assert_true(WAIT_UNTIL(atomic_load(&parked[i]) != NULL));
        arpc_reply(atomic_exchange(&parked[i], NULL), NULL, 0);
    }
    assert_true(WAIT_UNTIL(atomic_load(&nparked) == NPARK)); /* let go: the rest came in */
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    log_capture_start(ARPC_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_write_burst),
        cmocka_unit_test(test_pipelined_client),
        cmocka_unit_test(test_lasting_hold_is_said),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
