/*
 * An exactly-once reply whose effect cannot be logged: arpc_reply_durable runs out of memory
 * encoding the reply that would carry the effect. Its caller is answered ARPC_EABANDONED (it may
 * have run), and, since an application that applied the effect now has a state ahead of its
 * log, the server stops taking at-most-once calls (ARPC_ESYSTEM), as after a log record that
 * failed, instead of logging later effects on top of one the log never saw (a restart would
 * rebuild a state that never held it, under effects that depended on it).
 *
 * The allocation made to fail is the one of the effect's size, once, on the handler's thread.
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
#include "support/raw_client.h"
#include "support/test_util.h"

#define EFFECT_BYTES (1u << 20)

static atomic_bool fail_next_effect; /* fail the next allocation of about EFFECT_BYTES */

static void *failing_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (n >= EFFECT_BYTES && n < EFFECT_BYTES + 65536 && atomic_exchange(&fail_next_effect, false))
        return NULL;
    return malloc(n);
}
static void *plain_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    return realloc(p, n);
}
static void plain_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static uint8_t *effect;
static atomic_int durable_rc, runs;

/* Applies its effect (as examples/bank_server.c does) and replies with it logged. */
static void h_apply(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    atomic_store(&fail_next_effect, true);
    atomic_store(&durable_rc, arpc_reply_durable(req, effect, EFFECT_BYTES, "ok", 2));
    atomic_store(&fail_next_effect, false);
    latch_add();
}

static void test_effect_without_memory_stops_at_most_once(void **state)
{
    (void)state;
    static const arpc_allocator alloc = {failing_malloc, plain_realloc, plain_free, NULL};
    arpc_set_allocator(&alloc);
    effect = calloc(1, EFFECT_BYTES);
    assert_non_null(effect);
    latch_reset();
    char dir[] = "/tmp/arpc-effect-enomem-XXXXXX";
    assert_non_null(mkdtemp(dir));
    arpc_server *s;
    arpc_server_options so = {.workers = 1, .log_dir = dir};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.apply", h_apply, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));

    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.apply", "x", 1));
    assert_true(raw_next_is_error(&r, 1, ARPC_EABANDONED)); /* it may have run */
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(ARPC_ENOMEM, atomic_load(&durable_rc));
    /* The next numbered call is refused: the log no longer holds what the state does. */
    assert_true(raw_request(&r, 2, 2, 0, 0, "t.apply", "y", 1));
    assert_true(raw_next_is_error(&r, 2, ARPC_ESYSTEM));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    /* A restart rebuilds from the log (without the effect) and takes numbered calls again. */
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.apply", h_apply, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    assert_true(raw_connect(&r, addr, 0x5eed));
    assert_true(raw_request(&r, 3, 1, 0, 0, "t.apply", "x", 1)); /* the first call, re-sent */
    assert_true(raw_next_is_error(&r, 3, ARPC_EABANDONED)); /* answered from the log: not run again */
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(1, atomic_load(&runs)); /* the handler ran once in all */
    free(effect);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(0, system(cmd));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_effect_without_memory_stops_at_most_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
