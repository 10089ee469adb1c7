/*
 * A call whose deadline comes while its request still waits, unwritten, in the client's output
 * queue (the server stopped reading, the socket is full) is taken back out and ends
 * ARPC_EUNREACHABLE, "did not run", and the server never sees it, however late it catches up.
 * Before, such a call ended ARPC_ETIMEDOUT ("may have run") and its request was still written
 * once the server read again, with the budget it was given when queued: a server that had
 * fallen behind then ran calls whose callers had long given up.
 *
 * A scripted server (support/raw_server.h) says HELLO and reads nothing until the test has
 * every outcome; then it reads to the end, noting each request's number (its payload's first
 * four bytes). Large requests (a block of their own) fill the socket, small ones (in the call's
 * record) queue behind them: both kinds of request are taken out. Checked: each call ends
 * ARPC_ETIMEDOUT or ARPC_EUNREACHABLE, some of each kind end EUNREACHABLE, and no request of
 * a call that ended EUNREACHABLE reaches the server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <semaphore.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

#define LARGE_CALLS 320u  /* 20 MiB: more than loopback's socket buffers take */
#define LARGE_SIZE (64u * 1024u)
#define SMALL_CALLS 200u
#define SMALL_SIZE 16u
#define CALLS (LARGE_CALLS + SMALL_CALLS)
#define DEADLINE_MS 1500

struct silent_server {
    sem_t ss_go;            /* the test has every outcome: read now */
    bool ss_seen[CALLS];    /* a request with this number reached the server */
    unsigned ss_requests;
};

/* Says HELLO, reads nothing until told, then reads every frame to the client's close. */
static bool read_late(struct raw_server *s, void *arg)
{
    struct silent_server *ss = arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    bool ok = raw_server_accept_dedup(s, r) && sem_wait_secs(&ss->ss_go, TEST_WAIT_S);
    struct raw_frame f;
    while (ok && raw_read(r, &f, false)) {
        if (f.f.f_kind != ARPC_FRAME_REQUEST)
            continue;
        uint32_t n;
        if (f.f.f_payload_len < sizeof(n))
            return false;
        memcpy(&n, f.f.f_payload, sizeof(n));
        if (n >= CALLS)
            return false;
        ss->ss_seen[n] = true;
        ss->ss_requests++;
    }
    raw_close(r);
    free(r);
    return ok;
}

static void test_unwritten_request_is_taken_back(void **state)
{
    (void)state;
    static struct silent_server ss;
    memset(&ss, 0, sizeof(ss));
    assert_int_equal(0, sem_init(&ss.ss_go, 0, 0));
    struct raw_server s;
    raw_server_start(&s, read_late, &ss);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, NULL));
    static arpc_future *f[CALLS];
    static uint8_t payload[LARGE_SIZE];
    for (uint32_t i = 0; i < CALLS; i++) {
        memcpy(payload, &i, sizeof(i));
        f[i] = arpc_call_async(c, "t.m", payload, i < LARGE_CALLS ? LARGE_SIZE : SMALL_SIZE, DEADLINE_MS);
        assert_non_null(f[i]);
    }
    unsigned unreachable[2] = {0, 0}, timed_out = 0;
    static int code[CALLS];
    for (uint32_t i = 0; i < CALLS; i++) {
        code[i] = arpc_future_wait_for(f[i], TEST_WAIT_MS);
        if (code[i] == ARPC_EUNREACHABLE) {
            unreachable[i >= LARGE_CALLS]++;
            size_t len = 0;
            const char *why = arpc_future_data(f[i], &len);
            if (why == NULL || strstr(why, "not sent") == NULL)
                fail_msg("call %u: EUNREACHABLE without saying its request was not sent", i);
        } else if (code[i] == ARPC_ETIMEDOUT) {
            timed_out++;
        } else {
            fail_msg("call %u ended %s", i, arpc_errname(code[i]));
        }
        arpc_future_release(f[i]);
    }
    print_message("%u large and %u small calls taken back, %u timed out\n", unreachable[0], unreachable[1], timed_out);
    assert_true(unreachable[0] > 0);
    assert_true(unreachable[1] > 0);
    assert_true(timed_out > 0); /* the request the socket took in part, at least */
    assert_int_equal(0, sem_post(&ss.ss_go));
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
    for (uint32_t i = 0; i < CALLS; i++)
        if (code[i] == ARPC_EUNREACHABLE && ss.ss_seen[i])
            fail_msg("call %u ended EUNREACHABLE, but the server read its request", i);
    assert_true(ss.ss_requests > 0);
    sem_destroy(&ss.ss_go);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unwritten_request_is_taken_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
