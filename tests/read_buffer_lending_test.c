/*
 * A request's payload of ARPC_CONN_PIN_MIN bytes or more stays in its connection's read
 * buffer, which lends it (arpc_conn_pin, core/conn_rbuf.c), instead of being copied. These
 * tests hold requests in their handler while later frames arrive, so that the loop must read
 * on in other buffers without writing over the lent bytes: every held payload is checked byte
 * for byte, at sizes around the threshold, across the bound of buffers one connection may
 * leave lent, and after its connection closed mid-frame. The allocator counts blocks, so a
 * buffer that is never given back fails the test (and ASan catches one given back too soon).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/conn.h"
#include "core/request_internal.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define MAX_HELD 512
#define WAIT_MS 30000

static arpc_request *_Atomic held[MAX_HELD];
static atomic_uint nheld;

/* Holds every request in arrival order (one worker, one connection: the order they were sent). */
static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    unsigned i = atomic_fetch_add(&nheld, 1);
    assert_true(i < MAX_HELD);
    atomic_store(&held[i], req);
    latch_add();
}

static arpc_server *make_server(char *addr, size_t addrlen)
{
    atomic_store(&nheld, 0);
    latch_reset();
    arpc_server *s;
    arpc_server_options o = {.workers = 1, .max_calls_per_conn = 2 * MAX_HELD, .max_conn_bytes = 64u << 20};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    /* Replies of a few KiB: every held call fits the connection's bytes bound at once. */
    arpc_method_options mo = {.reply_bytes_hint = 4096};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.hold", h_hold, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

/* Call i of a run: its own bytes, so a payload written over by a later one is seen. */
static void fill_call(uint8_t *buf, unsigned i, size_t len) { fill_pattern(buf, (uint64_t)i * 7919, len); }

static bool payload_is(arpc_request *req, unsigned i, size_t len, uint8_t *want)
{
    size_t got;
    const void *data = arpc_request_data(req, &got);
    fill_call(want, i, len);
    return got == len && (len == 0 || memcmp(data, want, len) == 0);
}

/* The request's payload is lent by the read buffer (not a copy, not a large body's own buffer). */
static bool lent(arpc_request *req) { return req->rq_state->rs_pin != NULL; }

/* Sends n pipelined calls of len bytes, waits until all are held, checks each payload and
 * whether it is lent, then answers them (last first, so buffers come back out of order) and
 * checks every reply. Returns how many were lent. */
static unsigned hold_and_check(arpc_client *c, unsigned n, size_t len)
{
    uint8_t *buf = malloc(len + 1), *want = malloc(len + 1);
    arpc_future **fs = calloc(n, sizeof(*fs));
    assert_true(buf != NULL && want != NULL && fs != NULL);
    atomic_store(&nheld, 0);
    latch_reset();
    for (unsigned i = 0; i < n; i++) {
        fill_call(buf, i, len);
        assert_non_null(fs[i] = arpc_call_async(c, "t.hold", buf, len, WAIT_MS));
    }
    assert_true(latch_wait(n, WAIT_MS));
    unsigned nlent = 0;
    for (unsigned i = 0; i < n; i++) {
        arpc_request *req = atomic_load(&held[i]);
        assert_true(payload_is(req, i, len, want));
        nlent += lent(req);
    }
    for (unsigned i = n; i-- > 0;) {
        arpc_request *req = atomic_load(&held[i]);
        size_t got;
        const void *data = arpc_request_data(req, &got);
        assert_int_equal(ARPC_OK, arpc_reply(req, data, got));
    }
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait(fs[i]));
        size_t got;
        const void *data = arpc_future_data(fs[i], &got);
        fill_call(want, i, len);
        assert_int_equal(len, got);
        assert_true(len == 0 || memcmp(data, want, len) == 0);
        arpc_future_release(fs[i]);
    }
    free(buf);
    free(want);
    free(fs);
    return nlent;
}

/* Around the threshold: below it copied, from it on lent; a large body (1 MiB) is read into
 * a buffer of its own as before. 40 held calls of 1 KiB and more outgrow a 64 KiB read
 * buffer, so lent ones stay put while the loop reads on elsewhere. */
static void test_sizes_around_the_threshold(void **state)
{
    (void)state;
    char addr[128];
    arpc_server *s = make_server(addr, sizeof(addr));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    const size_t min = ARPC_CONN_PIN_MIN;
    const struct {
        size_t len;
        unsigned n;
        bool lent;
    } runs[] = {
        {0, 40, false},       {1, 40, false},      {min - 1, 40, false}, {min, 40, true},
        {min + 1, 40, true},  {4096, 60, true},    {ARPC_CONN_BODY_MIN - 100, 12, true},
        {1u << 20, 3, false}, {min + 1, 40, true},
    };
    for (size_t r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
        unsigned nlent = hold_and_check(c, runs[r].n, runs[r].len);
        assert_int_equal(runs[r].lent ? runs[r].n : 0, nlent);
    }
    arpc_client_close(c);
    arpc_server_destroy(s);
}

/* Held long enough, lent buffers pile up: a connection leaves at most
 * ARPC_CONN_RBUF_RETIRED_MAX of them lent, and copies payloads once it has (so the bytes a
 * peer makes the server hold stay bounded). */
static void test_lending_is_bounded(void **state)
{
    (void)state;
    char addr[128];
    arpc_server *s = make_server(addr, sizeof(addr));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    enum { N = 400, LEN = 4096 }; /* 1.6 MB: 25 read buffers' worth */
    uint8_t *buf = malloc(LEN), *want = malloc(LEN);
    arpc_future **fs = calloc(N, sizeof(*fs));
    assert_true(buf != NULL && want != NULL && fs != NULL);
    for (unsigned i = 0; i < N; i++) {
        fill_call(buf, i, LEN);
        assert_non_null(fs[i] = arpc_call_async(c, "t.hold", buf, LEN, WAIT_MS));
    }
    assert_true(latch_wait(N, WAIT_MS));
    /* Distinct buffers lent out: the bound's retired ones and at most the current one. */
    struct conn_rbuf_head *pins[N];
    unsigned npins = 0, nlent = 0;
    for (unsigned i = 0; i < N; i++) {
        arpc_request *req = atomic_load(&held[i]);
        assert_true(payload_is(req, i, LEN, want));
        struct conn_rbuf_head *p = req->rq_state->rs_pin;
        if (p == NULL)
            continue;
        nlent++;
        bool seen = false;
        for (unsigned k = 0; k < npins && !seen; k++)
            seen = pins[k] == p;
        if (!seen)
            pins[npins++] = p;
    }
    assert_true(npins <= ARPC_CONN_RBUF_RETIRED_MAX + 1);
    assert_true(nlent > 0 && nlent < N); /* the first ones lent, the rest copied */
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(ARPC_OK, arpc_reply(atomic_load(&held[i]), "", 0));
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait(fs[i]));
        arpc_future_release(fs[i]);
    }
    /* Given back, the buffers lend again. */
    assert_int_equal(40, hold_and_check(c, 40, LEN));
    free(buf);
    free(want);
    free(fs);
    arpc_client_close(c);
    arpc_server_destroy(s);
}

/* The peer sends held calls, then half a frame, and goes: the connection closes (its frame
 * can never end) while its read buffers are lent. The held payloads stay intact, and the
 * buffers are freed by the last answer, after the close. */
static void test_closed_mid_frame_while_lent(void **state)
{
    (void)state;
    char addr[128];
    arpc_server *s = make_server(addr, sizeof(addr));
    static struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    enum { N = 30, LEN = 3000 };
    uint8_t buf[LEN], want[LEN];
    for (unsigned i = 0; i < N; i++) {
        fill_call(buf, i, LEN);
        assert_true(raw_request(&r, i + 1, 0, 0, 0, "t.hold", buf, LEN));
    }
    assert_true(latch_wait(N, WAIT_MS));
    /* Half of a frame's header and body, then the end of the stream. */
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + 64 + LEN];
    size_t flen = arpc_frame_encode_request(frame, ARPC_FRAME_REQUEST, N + 1, 0, 0, 0, "t.hold", 6, buf, LEN);
    assert_true(raw_send(&r, frame, flen / 2));
    raw_close(&r);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_open), 0, WAIT_MS));
    unsigned nlent = 0;
    for (unsigned i = 0; i < N; i++) {
        arpc_request *req = atomic_load(&held[i]);
        assert_true(payload_is(req, i, LEN, want));
        nlent += lent(req);
        arpc_reply(req, NULL, 0); /* its connection is gone: dropped */
    }
    assert_int_equal(N, nlent);
    assert_int_equal(N, atomic_load(&nheld)); /* the half frame never ran */
    arpc_server_destroy(s);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_sizes_around_the_threshold),
        cmocka_unit_test_no_leak(test_lending_is_bounded),
        cmocka_unit_test_no_leak(test_closed_mid_frame_while_lent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
