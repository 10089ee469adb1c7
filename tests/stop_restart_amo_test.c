/*
 * An at-most-once call still unanswered when a graceful stop ends its grace, on a server with
 * a reply log, then a new server on the same log (the same epoch: its clients send their
 * calls again, as docs/SEMANTICS.md says). The stop answers it ARPC_EABANDONED ("may have
 * run") and logs that answer as the call's result, so a copy re-sent to the new server (a
 * client whose first connection broke and whose retry was attached to the running call never
 * got the stop's answer; or a proxy replaying) gets ARPC_EABANDONED too, and the handler does
 * not run a second time. Likewise for a call the server answered at its deadline
 * (ARPC_ETIMEDOUT) whose handler was still running at the stop. Before, neither reached the
 * log: the new server did not know the call and ran it again, and its caller got ARPC_OK.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/server_proc.h"
#include "support/test_util.h"

#define WAIT_MS TEST_WAIT_MS /* a bound for waits that should end soon: only a hang reaches it */
#define CLIENT_ID 77

static atomic_int runs;
static arpc_request *_Atomic kept[2];

/* Keeps the request and returns without replying: the test replies once the server is gone. */
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    int n = atomic_fetch_add(&runs, 1);
    if (n < 2)
        atomic_store(&kept[n], req);
    latch_add();
}

static arpc_server *server_on(const char *dir, char *addr, size_t addrlen)
{
    arpc_server *s;
    arpc_server_options so = {.log_dir = dir, .workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}


static void test_unanswered_calls_not_run_again_after_restart(void **state)
{
    (void)state;
    atomic_store(&runs, 0);
    latch_reset();
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    arpc_server *s = server_on(dir, addr, sizeof(addr));

    struct raw_client r1, r2;
    assert_true(raw_connect(&r1, addr, CLIENT_ID));
    uint64_t epoch = r1.rc_hello.f_client_id;
    /* seq 1 runs (no deadline); seq 2 runs too, and the server answers it at its deadline. */
    assert_true(raw_request(&r1, 1, 1, 0, 0, "t.keep", "a", 1));
    uint64_t xid = 2;
    assert_int_equal(ARPC_ETIMEDOUT, raw_call_taken_in_time(&r1, &xid, 2, 0, 50, "t.keep", "b", 1));
    assert_true(latch_wait(2, WAIT_MS));
    /* The same client after a reconnect: its copy of seq 1 attaches to the running call. */
    assert_true(raw_connect(&r2, addr, CLIENT_ID));
    assert_true(raw_request(&r2, 11, 1, 0, 0, "t.keep", "a", 1));

    assert_int_equal(ARPC_OK, arpc_server_stop(s, 0));
    raw_expect_error(&r1, 1, ARPC_EABANDONED); /* the original: may have run */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(atomic_load(&kept[0]), "late", 4)); /* dropped */
    assert_int_equal(ARPC_ESHUTDOWN, arpc_reply(atomic_load(&kept[1]), "late", 4));
    raw_close(&r1);
    raw_close(&r2);

    s = server_on(dir, addr, sizeof(addr));
    struct raw_client r3;
    assert_true(raw_connect(&r3, addr, CLIENT_ID));
    assert_int_equal(epoch, r3.rc_hello.f_client_id); /* the client sends its calls again */
    assert_true(raw_request(&r3, 21, 1, 0, 0, "t.keep", "a", 1));
    raw_expect_error(&r3, 21, ARPC_EABANDONED); /* before: run again (and left unanswered here) */
    assert_true(raw_request(&r3, 22, 2, 0, 0, "t.keep", "b", 1));
    raw_expect_error(&r3, 22, ARPC_EABANDONED);
    assert_int_equal(2, atomic_load(&runs)); /* each ran once, before the stop */
    raw_close(&r3);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

/* The same for a call answered at its deadline whose handler replied late after the
 * application had stopped the loop the server runs on: the late result could not reach the
 * loop, so the stop logs ARPC_EABANDONED for it, as for a handler that had not replied.
 * Before, the stop let go of its handle and logged nothing: the new server ran the re-sent
 * copy again (review 244). */
static void test_late_reply_after_loop_stop_not_run_again(void **state)
{
    (void)state;
    atomic_store(&runs, 0);
    latch_reset();
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_server *s;
    arpc_server_options so = {.log_dir = dir, .workers = 2, .loop = loop};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client r1;
    assert_true(raw_connect(&r1, addr, CLIENT_ID));
    uint64_t epoch = r1.rc_hello.f_client_id;
    uint64_t xid = 1;
    assert_int_equal(ARPC_ETIMEDOUT, raw_call_taken_in_time(&r1, &xid, 1, 0, 50, "t.keep", "a", 1));
    assert_true(latch_wait(1, WAIT_MS));
    arpc_loop_stop(loop);
    /* Answered at its deadline already; the loop cannot take the late result. */
    int rc = arpc_reply(atomic_load(&kept[0]), "late", 4);
    assert_true(rc == ARPC_ESHUTDOWN || rc == ARPC_ETIMEDOUT);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_loop_destroy(loop);
    raw_close(&r1);

    s = server_on(dir, addr, sizeof(addr));
    struct raw_client r2;
    assert_true(raw_connect(&r2, addr, CLIENT_ID));
    assert_int_equal(epoch, r2.rc_hello.f_client_id);
    assert_true(raw_request(&r2, 21, 1, 0, 0, "t.keep", "a", 1));
    raw_expect_error(&r2, 21, ARPC_EABANDONED); /* before: run again */
    assert_int_equal(1, atomic_load(&runs));
    raw_close(&r2);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    server_proc_rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* one case: e.g. "*driven*" */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unanswered_calls_not_run_again_after_restart),
        cmocka_unit_test(test_late_reply_after_loop_stop_not_run_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
