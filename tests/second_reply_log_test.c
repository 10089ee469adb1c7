/*
 * The ERROR line that refuses a second reply names the call as its client counts it: the xid
 * without the bit arpc's client sets on the xids its callers' threads pick (a call it wrote
 * from the caller's thread, core/client_direct.c), and, for a numbered call, its seq (what
 * arpc_request_seq gives the handler). It printed the wire xid, 9223372036854775809 for the
 * client's first such call.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "async/loop_internal.h"
#include "core/client_internal.h"
#include "support/log_capture.h"
#include "support/test_util.h"

static atomic_ullong seen_seq; /* the handler's arpc_request_seq */

static void h_reply_twice(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&seen_seq, arpc_request_seq(req));
    arpc_reply(req, "first", 5);
    arpc_reply(req, "second", 6); /* refused, logged */
    latch_add();
}

/* Until the client's loop sleeps with nothing to do, so the next call is written by its
 * caller (bounded: a loop that never sleeps fails the count checked after). */
static void wait_idle(arpc_client *c) { (void)loop_idle_within(c->cl_loop, TEST_WAIT_MS); }

/* Calls t.twice until one call was written by its caller (the path that set the bit), and
 * checks each call's refusal line. */
static void second_reply_line(enum arpc_call_semantics sem)
{
    arpc_server *s;
    char addr[128];
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.twice", h_reply_twice, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client_options co = {.semantics = sem};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));

    bool by_caller = false;
    for (int i = 0; i < 100 && !by_caller; i++) {
        wait_idle(c);
        uint64_t before = arpc_stat_get(&c->cl_direct.cd_written);
        latch_reset();
        log_capture_clear();
        assert_int_equal(ARPC_OK, arpc_call(c, "t.twice", "x", 1, NULL, NULL, TEST_WAIT_MS));
        assert_true(latch_wait(1, TEST_WAIT_MS));
        by_caller = arpc_stat_get(&c->cl_direct.cd_written) > before;

        char *line = log_capture_last_with("a second reply for one request of t.twice");
        if (line == NULL)
            log_capture_print();
        assert_non_null(line);
        const char *at = strstr(line, "t.twice (xid ");
        if (at == NULL) /* the old wording, "(call N)": its number is checked all the same */
            at = strstr(line, "t.twice (call ");
        assert_non_null(at);
        char *end;
        unsigned long long xid = strtoull(strchr(at + 9, ' ') + 1, &end, 10);
        if (xid == 0 || xid >= 1ull << 32) /* a few calls in: a small number */
            print_message("%s\n", line);
        assert_true(xid > 0 && xid < 1ull << 32);
        char rest[64];
        unsigned long long seq = atomic_load(&seen_seq);
        if (sem == ARPC_AT_MOST_ONCE) {
            assert_true(seq != 0);
            snprintf(rest, sizeof(rest), ", seq %llu) was refused", seq);
        } else {
            assert_true(seq == 0);
            snprintf(rest, sizeof(rest), ") was refused");
        }
        assert_true(strncmp(end, rest, strlen(rest)) == 0);
        free(line);
    }
    assert_true(by_caller);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_numbered_call(void **state)
{
    (void)state;
    second_reply_line(ARPC_AT_MOST_ONCE);
}

static void test_call_not_numbered(void **state)
{
    (void)state;
    second_reply_line(ARPC_AT_LEAST_ONCE);
}

int main(void)
{
    log_capture_start(ARPC_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbered_call),
        cmocka_unit_test(test_call_not_numbered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
