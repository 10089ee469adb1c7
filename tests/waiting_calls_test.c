/*
 * The client's waiting calls (core/waiting_calls.c) against a reference model (a plain array
 * in arrival order): pushes and removals anywhere, the first call and its give-up time, walks
 * that end calls as they go, compaction and growth (every call told its new slot), the last
 * removal giving the memory back, a push without memory, and the two sorts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>

#include "arpc/error.h"
#include "core/client_internal.h"
#include "core/waiting_calls.h"
#include "support/test_util.h"

static struct client_call *calls_new(size_t n) { return calloc(n, sizeof(struct client_call)); }

/* Every call of model[0, n) is in w, in that order, in the slot it was told, with its give-up
 * time (the call's index here, times 10); nothing else is. */
static void check(const struct waiting_calls *w, struct client_call *const *model, size_t n, struct client_call *base)
{
    assert_int_equal(n, waiting_count(w));
    size_t k = 0;
    struct client_call *call;
    for (uint32_t pos = w->wc_head; (call = waiting_at(w, &pos)) != NULL; pos++, k++) {
        assert_true(k < n);
        assert_ptr_equal(model[k], call);
        assert_int_equal(pos, call->cc_wait_pos);
        assert_int_equal((uint64_t)(call - base) * 10, w->wc_slots[pos].ws_give_up);
    }
    assert_int_equal(n, k);
    uint64_t give_up = 1;
    if (n == 0) {
        assert_null(waiting_first(w, &give_up));
        assert_null(w->wc_slots); /* nothing kept */
    } else {
        assert_ptr_equal(model[0], waiting_first(w, &give_up));
        assert_int_equal((uint64_t)(model[0] - base) * 10, give_up);
    }
}

static void push(struct waiting_calls *w, struct client_call *base, size_t i)
{
    assert_int_equal(ARPC_OK, waiting_push(w, &base[i], (uint64_t)i * 10));
}

/* Removes model[at]. */
static void remove_at(struct waiting_calls *w, struct client_call **model, size_t *n, size_t at)
{
    waiting_remove(w, model[at]);
    for (size_t j = at; j + 1 < *n; j++)
        model[j] = model[j + 1];
    (*n)--;
}

/* Random pushes and removals (from the head most often, as give-ups and re-sends take them,
 * else anywhere, as deadlines and cancels do), checked against the model after each. */
static void test_against_model(void **state)
{
    (void)state;
    enum { CALLS = 3000, STEPS = 20000 };
    test_alloc_install();
    struct client_call *base = calls_new(CALLS);
    struct client_call **model = calloc(CALLS, sizeof(*model));
    struct waiting_calls w = {0};
    size_t n = 0, next = 0;
    srand(7);
    for (size_t step = 0; step < STEPS; step++) {
        int r = rand() % 100;
        if (n == 0 || (r < 52 && next < CALLS)) {
            if (next == CALLS)
                break;
            push(&w, base, next);
            model[n++] = &base[next++];
        } else if (r < 80) {
            remove_at(&w, model, &n, 0);
        } else {
            remove_at(&w, model, &n, (size_t)rand() % n);
        }
        check(&w, model, n, base);
    }
    while (n > 0)
        remove_at(&w, model, &n, n / 2);
    check(&w, model, 0, base);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    free(model);
    free(base);
}

/* A full array at most half used is compacted in place (no allocation); one more than half
 * used doubles. */
static void test_compacts_or_grows(void **state)
{
    (void)state;
    enum { CALLS = 64 };
    test_alloc_install();
    struct client_call *base = calls_new(CALLS);
    struct client_call *model[CALLS];
    struct waiting_calls w = {0};
    size_t n = 0;
    for (size_t i = 0; i < 16; i++) {
        push(&w, base, i);
        model[n++] = &base[i];
    }
    assert_int_equal(16, w.wc_cap);
    for (size_t i = 0; i < 8; i++) /* the first half leaves */
        remove_at(&w, model, &n, 0);
    long live = atomic_load(&test_alloc_live);
    push(&w, base, 16); /* full, half used: compacted */
    model[n++] = &base[16];
    assert_int_equal(16, w.wc_cap);
    assert_int_equal(live, atomic_load(&test_alloc_live));
    assert_int_equal(0, w.wc_head);
    check(&w, model, n, base);
    for (size_t i = 17; i < 25; i++) { /* 16 in all: full again, all used */
        push(&w, base, i);
        model[n++] = &base[i];
    }
    push(&w, base, 25); /* doubles */
    model[n++] = &base[25];
    assert_int_equal(32, w.wc_cap);
    check(&w, model, n, base);
    while (n > 0)
        remove_at(&w, model, &n, n - 1);
    check(&w, model, 0, base);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    free(base);
}

/* Without memory for the first array or a larger one: ARPC_ENOMEM, the others intact. */
static void test_push_without_memory(void **state)
{
    (void)state;
    test_alloc_install();
    struct client_call *base = calls_new(20);
    struct client_call *model[20];
    struct waiting_calls w = {0};
    size_t n = 0;
    atomic_store(&test_alloc_budget, 0);
    assert_int_equal(ARPC_ENOMEM, waiting_push(&w, &base[0], 0));
    check(&w, model, 0, base);
    atomic_store(&test_alloc_budget, -1);
    for (size_t i = 0; i < 16; i++) {
        push(&w, base, i);
        model[n++] = &base[i];
    }
    atomic_store(&test_alloc_budget, 0);
    assert_int_equal(ARPC_ENOMEM, waiting_push(&w, &base[16], 160));
    atomic_store(&test_alloc_budget, -1);
    check(&w, model, n, base);
    push(&w, base, 16);
    model[n++] = &base[16];
    check(&w, model, n, base);
    waiting_fini(&w);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    free(base);
}

/* A walk that ends calls as it goes (calls_drop_cancelled, the cancel sweep) sees every call
 * once, the last removal (which frees the array) included. */
static void test_walk_removing(void **state)
{
    (void)state;
    enum { CALLS = 40 };
    test_alloc_install();
    struct client_call *base = calls_new(CALLS);
    struct waiting_calls w = {0};
    for (size_t i = 0; i < CALLS; i++)
        push(&w, base, i);
    size_t seen = 0;
    struct client_call *call;
    for (uint32_t pos = w.wc_head; (call = waiting_at(&w, &pos)) != NULL; pos++) {
        assert_ptr_equal(&base[seen++], call);
        if ((call - base) % 3 != 1)
            waiting_remove(&w, call);
    }
    assert_int_equal(CALLS, seen);
    seen = 0;
    for (uint32_t pos = w.wc_head; (call = waiting_at(&w, &pos)) != NULL; pos++) {
        assert_int_equal(1, (call - base) % 3);
        waiting_remove(&w, call);
        seen++;
    }
    assert_int_equal(CALLS / 3, seen);
    assert_null(w.wc_slots);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    free(base);
}

static bool by_order(const struct waiting_slot *a, const struct waiting_slot *b)
{
    return call_order_before(a->ws_call->cc_order, b->ws_call->cc_order);
}

static bool by_give_up(const struct waiting_slot *a, const struct waiting_slot *b)
{
    return a->ws_give_up < b->ws_give_up;
}

/* The re-sends' sort by arrival order (wrapping) and the sort back by give-up time, stable:
 * calls of the same give-up time keep their order. */
static void test_sorts(void **state)
{
    (void)state;
    enum { CALLS = 300 };
    test_alloc_install();
    struct client_call *base = calls_new(CALLS);
    struct waiting_calls w = {0};
    for (size_t i = 0; i < CALLS; i++) {
        base[i].cc_order = UINT32_MAX - 100 + (uint32_t)((i * 7) % CALLS); /* wraps past 0 */
        assert_int_equal(ARPC_OK, waiting_push(&w, &base[i], (uint64_t)(i % 5))); /* 5 give-up times */
        if (i % 4 == 3)
            waiting_remove(&w, &base[i - 1]);
    }
    waiting_sort(&w, by_order);
    struct client_call *call, *prev = NULL;
    size_t n = 0;
    for (uint32_t pos = w.wc_head; (call = waiting_at(&w, &pos)) != NULL; pos++, n++, prev = call) {
        assert_int_equal(pos, call->cc_wait_pos);
        assert_int_equal(n, pos); /* compacted */
        if (prev != NULL)
            assert_true(call_order_before(prev->cc_order, call->cc_order));
    }
    assert_int_equal(CALLS - CALLS / 4, n);
    waiting_sort(&w, by_give_up);
    prev = NULL;
    for (uint32_t pos = w.wc_head; (call = waiting_at(&w, &pos)) != NULL; pos++, prev = call) {
        assert_int_equal(pos, call->cc_wait_pos);
        if (prev == NULL)
            continue;
        uint64_t a = (uint64_t)(prev - base) % 5, b = (uint64_t)(call - base) % 5;
        assert_true(a <= b);
        if (a == b) /* a tie: still in arrival order */
            assert_true(call_order_before(prev->cc_order, call->cc_order));
    }
    waiting_fini(&w);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_model),
        cmocka_unit_test(test_compacts_or_grows),
        cmocka_unit_test(test_push_without_memory),
        cmocka_unit_test(test_walk_removing),
        cmocka_unit_test(test_sorts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
