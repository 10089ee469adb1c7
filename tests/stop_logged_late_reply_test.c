/*
 * With a reply log, a pool handler that the stop waits for past its grace replies after the
 * grace: its reply leaves once its record is durable, and the stop keeps the connection open
 * for it (bounded: core/server.c, SERVER_DUE_WAIT_MS). Before, the stop closed the connections
 * at the grace's end: the reply was logged but not sent, and its caller, told nothing, waited
 * for its deadline (or reconnect_give_up_ms) unless a server restarted on the log answered its
 * retry (a new user's trial, helper 243). Numbered (the reply cache's way: its waiters are
 * answered when the record is durable) and unnumbered (the durable reply's way: arpc_reply_durable).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/server_proc.h"
#include "support/test_util.h"

static sem_t handler_go;

/* Replies once the test lets it, after the stop's grace has ended (its GOAWAY came). */
static void h_slow(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    (void)sem_wait_secs(&handler_go, 20);
    if (arpc_request_seq(req) != 0)
        (void)arpc_reply(req, "late", 4);
    else
        (void)arpc_reply_durable(req, "fx", 2, "late", 4);
}

static void *stop_now(void *s)
{
    return (void *)(intptr_t)arpc_server_stop(s, 0);
}

static void late_reply_after_the_grace(uint64_t seq)
{
    assert_int_equal(0, sem_init(&handler_go, 0, 0));
    latch_reset();
    char dir[256], addr[256];
    server_proc_mkdir(dir, sizeof(dir));
    arpc_server *s;
    arpc_server_options o = {.log_dir = dir, .workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.slow", h_slow, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true(raw_request(&r, 1, seq, 0, 0, "t.slow", "x", 1));
    assert_true(latch_wait(1, 10000)); /* running on the pool */

    pthread_t stopper;
    assert_int_equal(0, pthread_create(&stopper, NULL, stop_now, s));
    struct raw_frame f;
    assert_true(raw_read(&r, &f, false)); /* the stop's GOAWAY: its grace (0) is over */
    assert_int_equal(ARPC_FRAME_GOAWAY, f.f.f_kind);
    assert_int_equal(0, sem_post(&handler_go));
    do
        assert_true(raw_read(&r, &f, false)); /* EOF here: the reply was not sent */
    while (f.f.f_kind == ARPC_FRAME_GOAWAY);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(1, f.f.f_xid);
    assert_int_equal(4, f.body_len);
    assert_memory_equal("late", f.body, 4);

    void *rc;
    assert_int_equal(0, pthread_join(stopper, &rc));
    assert_int_equal(ARPC_OK, (int)(intptr_t)rc);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    raw_close(&r);
    sem_destroy(&handler_go);
}

static void test_numbered_reply_after_the_grace(void **state)
{
    (void)state;
    late_reply_after_the_grace(1);
}

static void test_durable_reply_after_the_grace(void **state)
{
    (void)state;
    late_reply_after_the_grace(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbered_reply_after_the_grace),
        cmocka_unit_test(test_durable_reply_after_the_grace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
