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

#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define EFFECT_BYTES (1u << 20)

static uint8_t *effect;
static atomic_int durable_rc, runs;

/* Applies its effect (as examples/bank_server.c does) and replies with it logged. */
static void h_apply(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    test_alloc_fail_next(EFFECT_BYTES, EFFECT_BYTES + 65536); /* the effect's record, about its size */
    atomic_store(&durable_rc, arpc_reply_durable(req, effect, EFFECT_BYTES, "ok", 2));
    test_alloc_fail_next(0, 0);
    latch_add();
}

static void test_effect_without_memory_stops_at_most_once(void **state)
{
    (void)state;
    test_alloc_sized_install();
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

static sem_t release_b;
static atomic_int recovered_effects;
static atomic_int b_refused; /* the b handlers' own: a's ENOMEM may be stored after theirs */

/* "b": waits to be released, then replies with a small effect logged; "a": as h_apply (its
 * effect's reply finds no memory). */
static void h_a_or_b(arpc_request *req, void *ctx)
{
    size_t len;
    const char *p = arpc_request_data(req, &len);
    if (len == 1 && p[0] == 'b') {
        atomic_fetch_add(&runs, 1);
        latch_add();
        sem_wait_secs(&release_b, TEST_WAIT_S);
        if (arpc_reply_durable(req, "B", 1, "ok", 2) != ARPC_OK)
            atomic_fetch_add(&b_refused, 1);
        latch_add();
        return;
    }
    h_apply(req, ctx);
}

static void count_effects(void *ctx, enum arpc_recover_kind kind, const void *data, size_t len)
{
    (void)ctx;
    (void)data;
    (void)len;
    if (kind == ARPC_RECOVER_EFFECT)
        atomic_fetch_add(&recovered_effects, 1);
}

/* A call that was running when an earlier call's effect was lost (it was admitted before the
 * server stopped taking numbered calls) finishes after: its effect was made on a state that
 * held the lost one, so it must not reach the log behind the hole, nor its reply say it was
 * done. It is answered ARPC_EABANDONED, and a restart recovers neither effect. Before, its
 * record was written and it was answered ARPC_OK: the restart rebuilt a state with the later
 * effect and without the one it was made on. */
static void test_effect_after_a_lost_one_is_not_logged(void **state)
{
    (void)state;
    test_alloc_sized_install();
    effect = calloc(1, EFFECT_BYTES);
    assert_non_null(effect);
    atomic_store(&runs, 0);
    atomic_store(&recovered_effects, 0);
    atomic_store(&b_refused, 0);
    sem_init(&release_b, 0, 0);
    latch_reset();
    char dir[] = "/tmp/arpc-effect-enomem-XXXXXX";
    assert_non_null(mkdtemp(dir));
    arpc_server *s;
    arpc_server_options so = {.workers = 3, .log_dir = dir, .recover = count_effects};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.apply", h_a_or_b, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));

    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0x5eee));
    assert_true(raw_request(&r, 1, 1, 0, 0, "t.apply", "b", 1));
    assert_true(raw_request(&r, 3, 0, 0, 0, "t.apply", "b", 1)); /* an unnumbered one too */
    assert_true(latch_wait(2, TEST_WAIT_MS)); /* both run, and wait */
    assert_true(raw_request(&r, 2, 2, 0, 0, "t.apply", "a", 1));
    assert_true(raw_next_is_error(&r, 2, ARPC_EABANDONED)); /* a's effect is lost: fail-stop */
    sem_post(&release_b);
    sem_post(&release_b);
    /* Were REPLYs: the b calls were "done". In either order. */
    bool got[4] = {false};
    for (int i = 0; i < 2; i++) {
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
        assert_int_equal(ARPC_EABANDONED, f.f.f_code);
        assert_true((f.f.f_xid == 1 || f.f.f_xid == 3) && !got[f.f.f_xid]);
        got[f.f.f_xid] = true;
    }
    assert_true(latch_wait(5, TEST_WAIT_MS));
    /* The b handlers' side saw nothing amiss. (Not durable_rc, which a's handler also writes,
     * after its reply left: read here, it was sometimes a's ENOMEM, stored after b's.) */
    assert_int_equal(0, atomic_load(&b_refused));
    raw_close(&r);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));

    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(0, atomic_load(&recovered_effects)); /* was 1: b's, without a's */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    assert_int_equal(3, atomic_load(&runs));
    sem_destroy(&release_b);
    free(effect);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(0, system(cmd));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_effect_without_memory_stops_at_most_once),
        cmocka_unit_test(test_effect_after_a_lost_one_is_not_logged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
