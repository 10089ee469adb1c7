/*
 * A handler's effect (arpc_reply_durable) that comes after the server answered its caller at
 * the call's deadline reaches the reply log all the same, numbered call or not: the
 * application's state holds it, and later effects were made on that state. Before, a call
 * that was not numbered (ARPC_AT_LEAST_ONCE, ARPC_NO_RETRY) kept nothing of the server for
 * its late reply: the effect was dropped with it, arpc_reply_durable returned ARPC_ETIMEDOUT
 * as it does for a numbered call whose effect is logged, and a restart rebuilt a state
 * without it under the effects logged after it.
 */
#define _GNU_SOURCE /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/effect_letters.h"
#include "support/test_util.h"

static sem_t answered;         /* the server answered the slow call in its handler's place */
static atomic_int late_rc = -1; /* what the slow call's arpc_reply_durable returned */

static void on_answered(arpc_request *req, void *arg)
{
    (void)req;
    (void)arg;
    sem_post(&answered);
}

/* Logs its payload byte as its effect; an 's' first waits until the server has answered the
 * call itself (its deadline), so its effect comes late. */
static void h_apply(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const char *p = arpc_request_data(req, &len);
    if (len == 1 && *p == 's') {
        assert_int_equal(ARPC_OK, arpc_request_on_cancel(req, on_answered, NULL));
        assert_true(sem_wait_secs(&answered, TEST_WAIT_S));
        atomic_store(&late_rc, arpc_reply_durable(req, p, 1, NULL, 0));
        return;
    }
    arpc_reply_durable(req, p, len, NULL, 0);
}

static struct effect_letters recovered; /* what a restart hands back */

static void late_effect_is_logged(enum arpc_call_semantics semantics)
{
    sem_init(&answered, 0, 0);
    atomic_store(&late_rc, -1);
    char dir[] = "/tmp/arpc-late-effect-XXXXXX";
    assert_non_null(mkdtemp(dir));
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .log_dir = dir, .recover = effect_letters_recover, .recover_ctx = &recovered};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.apply", h_apply, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    arpc_client_options co = {.semantics = semantics};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    void *reply;
    size_t len;
    /* Long enough for the handler to start under any load (else EEXPIRED: it never runs). */
    arpc_call_options slow = {.deadline_ms = 2000};
    int rc = arpc_call_opts(c, "t.apply", "s", 1, &reply, &len, &slow);
    assert_int_equal(ARPC_ETIMEDOUT, rc);
    arpc_free(reply); /* the server's timeout text, when its answer came before our deadline */
    /* The next call runs on the same worker, after the slow one's late reply. */
    assert_int_equal(ARPC_OK, arpc_call(c, "t.apply", "b", 1, &reply, &len, TEST_WAIT_MS));
    arpc_free(reply);
    assert_int_equal(ARPC_ETIMEDOUT, atomic_load(&late_rc)); /* the reply itself is dropped */
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    recovered.el_count = 0;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(2, recovered.el_count); /* was 1 ("b") for a call that is not numbered */
    assert_memory_equal("sb", recovered.el_letters, 2);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(0, system(cmd));
    sem_destroy(&answered);
}

static void test_at_most_once(void **state)
{
    (void)state;
    late_effect_is_logged(ARPC_AT_MOST_ONCE);
}

static void test_at_least_once(void **state)
{
    (void)state;
    late_effect_is_logged(ARPC_AT_LEAST_ONCE);
}

static void test_no_retry(void **state)
{
    (void)state;
    late_effect_is_logged(ARPC_NO_RETRY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_at_most_once),
        cmocka_unit_test(test_at_least_once),
        cmocka_unit_test(test_no_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
