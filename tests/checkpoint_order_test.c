/*
 * A checkpoint taken on the server's loop thread (an inline handler, between two effects)
 * takes its place in the reply log where it was taken: after the effects logged before it,
 * before those logged after it. Before, arpc_server_checkpoint always went through the loop's
 * job lane, while a reply made on the loop thread was logged at once: a handler that took a
 * checkpoint and then applied and logged its own effect left the STATE record after that
 * effect, and a restart rebuilt a state without it (the state did not hold it, and the effect
 * came before the STATE) though its caller had been told it was done.
 */
#define _GNU_SOURCE /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

/* The application's state: the effects applied, one byte each, in order. Loop thread only
 * while the server runs. */
struct app {
    arpc_server *server;
    char state[64];
    size_t len;
    int checkpoint_rc;
};

/* Inline on the loop: a 'c' checkpoints the state first (between two effects, as documented),
 * then every call applies its byte and logs it as its effect. */
static void h_apply(arpc_request *req, void *ctx)
{
    struct app *a = ctx;
    size_t len;
    const char *p = arpc_request_data(req, &len);
    if (len != 1 || a->len == sizeof(a->state)) {
        arpc_reply_error(req, "one byte");
        return;
    }
    if (*p == 'c')
        a->checkpoint_rc = arpc_server_checkpoint(a->server, a->state, a->len);
    a->state[a->len++] = *p;
    arpc_reply_durable(req, p, 1, NULL, 0);
}

/* The state rebuilt at start-up: the checkpoint, then the effects logged after it. */
static void recover(void *ctx, enum arpc_recover_kind kind, const void *data, size_t len)
{
    struct app *a = ctx;
    if (kind == ARPC_RECOVER_STATE && len <= sizeof(a->state)) {
        memcpy(a->state, data, len);
        a->len = len;
    } else if (kind == ARPC_RECOVER_EFFECT && len == 1 && a->len < sizeof(a->state)) {
        a->state[a->len++] = *(const char *)data;
    }
}

static void run_calls(const char *dir, struct app *a, const char *bytes)
{
    arpc_server_options so = {.workers = 1, .log_dir = dir, .recover = recover, .recover_ctx = a};
    assert_int_equal(ARPC_OK, arpc_server_create(&a->server, &so));
    arpc_method_options mo = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(a->server, "t.apply", h_apply, a, &mo));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(a->server, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    for (const char *b = bytes; *b != '\0'; b++) {
        void *reply;
        size_t len;
        assert_int_equal(ARPC_OK, arpc_call(c, "t.apply", b, 1, &reply, &len, TEST_WAIT_MS));
        arpc_free(reply);
    }
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(a->server));
}

static void test_checkpoint_on_the_loop_keeps_its_place(void **state)
{
    (void)state;
    char dir[] = "/tmp/arpc-checkpoint-order-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct app before = {.checkpoint_rc = -1};
    run_calls(dir, &before, "abcd");
    assert_int_equal(ARPC_OK, before.checkpoint_rc);
    assert_int_equal(4, before.len);
    assert_memory_equal("abcd", before.state, 4);

    /* Every call was answered OK, after its record was durable: a restart has them all. */
    struct app after = {0};
    arpc_server_options so = {.workers = 1, .log_dir = dir, .recover = recover, .recover_ctx = &after};
    assert_int_equal(ARPC_OK, arpc_server_create(&after.server, &so));
    assert_int_equal(ARPC_OK, arpc_server_destroy(after.server));
    assert_int_equal(4, after.len); /* was 3: "abd", c's effect before the STATE of "ab" */
    assert_memory_equal("abcd", after.state, 4);

    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(0, system(cmd));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint_on_the_loop_keeps_its_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
