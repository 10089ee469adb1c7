/*
 * A one-way message's handler that logs its effect (arpc_reply_durable): the effect reaches
 * the reply log, and a restart hands it back to recover, in order with the others. Before,
 * arpc_reply_durable on a one-way request returned ARPC_OK and dropped the effect: the state
 * that applied it was ahead of the log, and a restart rebuilt one without it (under later
 * effects that may have depended on it).
 */
#define _GNU_SOURCE /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/effect_letters.h"
#include "support/test_util.h"

static atomic_int durable_rc = -1;

/* Logs its payload as its effect (a one-way message: the reply part is nothing). */
static void h_note(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *p = arpc_request_data(req, &len);
    atomic_store(&durable_rc, arpc_reply_durable(req, p, len, NULL, 0));
    latch_add();
}

static struct effect_letters recovered; /* what a restart hands back */

static void test_oneway_effect_is_logged(void **state)
{
    (void)state;
    latch_reset();
    char dir[] = "/tmp/arpc-oneway-effect-XXXXXX";
    assert_non_null(mkdtemp(dir));
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .log_dir = dir, .recover = effect_letters_recover, .recover_ctx = &recovered};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.note", h_note, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    /* A call, a one-way message, a call: the log keeps the handler's order. */
    void *reply;
    size_t len;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.note", "a", 1, &reply, &len, TEST_WAIT_MS));
    arpc_free(reply);
    assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", "b", 1));
    assert_true(latch_wait(2, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_call(c, "t.note", "c", 1, &reply, &len, TEST_WAIT_MS));
    arpc_free(reply);
    assert_int_equal(ARPC_OK, atomic_load(&durable_rc));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    recovered.el_count = 0;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(3, recovered.el_count); /* was 2: "ac" */
    assert_memory_equal("abc", recovered.el_letters, 3);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(0, system(cmd));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oneway_effect_is_logged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
