/* The single-owner u64 map against a reference model: random puts/takes/gets, collisions,
 * growth, and iteration visiting every entry once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>

#include "arpc/error.h"
#include "base/u64_map.h"

static void test_put_take(void **state)
{
    (void)state;
    struct arpc_u64_map p;
    assert_int_equal(ARPC_OK, arpc_u64_map_init(&p, 4));
    int a, b;
    assert_int_equal(ARPC_OK, arpc_u64_map_put(&p, 1, &a));
    assert_int_equal(ARPC_OK, arpc_u64_map_put(&p, 2, &b));
    assert_int_equal(ARPC_EBUSY, arpc_u64_map_put(&p, 1, &b));
    assert_ptr_equal(&b, arpc_u64_map_take(&p, 2));
    assert_null(arpc_u64_map_take(&p, 2));
    assert_ptr_equal(&a, arpc_u64_map_take(&p, 1));
    assert_int_equal(0, arpc_u64_map_count(&p));
    arpc_u64_map_fini(&p);
}

/* Random operations against a dense reference array; keys from a small range force long
 * probe runs, wrap-around and backward shifts across the table's end. */
static void test_random_against_model(void **state)
{
    (void)state;
    enum { KEYS = 5000, OPS = 400000 };
    void **model = calloc(KEYS + 1, sizeof(*model));
    struct arpc_u64_map p;
    assert_int_equal(ARPC_OK, arpc_u64_map_init(&p, 8));
    unsigned seed = 1;
    size_t count = 0;
    for (int op = 0; op < OPS; op++) {
        uint64_t key = 1 + (uint64_t)(rand_r(&seed) % KEYS);
        void *val = (void *)(uintptr_t)(op + 1);
        if (rand_r(&seed) % 2) {
            int rc = arpc_u64_map_put(&p, key, val);
            if (model[key] != NULL) {
                assert_int_equal(ARPC_EBUSY, rc);
            } else {
                assert_int_equal(ARPC_OK, rc);
                model[key] = val;
                count++;
            }
        } else {
            assert_ptr_equal(model[key], arpc_u64_map_take(&p, key));
            if (model[key] != NULL)
                count--;
            model[key] = NULL;
        }
        uint64_t probe = 1 + (uint64_t)(rand_r(&seed) % KEYS);
        assert_ptr_equal(model[probe], arpc_u64_map_get(&p, probe));
        assert_int_equal(count, arpc_u64_map_count(&p));
    }
    for (uint64_t k = 1; k <= KEYS; k++)
        assert_ptr_equal(model[k], arpc_u64_map_take(&p, k));
    assert_int_equal(0, arpc_u64_map_count(&p));
    arpc_u64_map_fini(&p);
    free(model);
}

/* The client's pattern: a window of increasing xids, oldest completed first or at random. */
static void test_sliding_window(void **state)
{
    (void)state;
    struct arpc_u64_map p;
    assert_int_equal(ARPC_OK, arpc_u64_map_init(&p, 16));
    enum { WINDOW = 1000, TOTAL = 200000 };
    uint64_t window[WINDOW];
    unsigned seed = 3;
    uint64_t next = 1;
    for (int i = 0; i < WINDOW; i++) {
        window[i] = next;
        assert_int_equal(ARPC_OK, arpc_u64_map_put(&p, next, (void *)(uintptr_t)next));
        next++;
    }
    for (int i = 0; i < TOTAL; i++) {
        int slot = rand_r(&seed) % WINDOW;
        assert_ptr_equal((void *)(uintptr_t)window[slot], arpc_u64_map_take(&p, window[slot]));
        window[slot] = next;
        assert_int_equal(ARPC_OK, arpc_u64_map_put(&p, next, (void *)(uintptr_t)next));
        next++;
    }
    assert_int_equal(WINDOW, arpc_u64_map_count(&p));
    arpc_u64_map_fini(&p);
}

/* get finds what put stored, leaves it in place, and finds nothing for absent keys or key 0,
 * before and after growth. */
static void test_get(void **state)
{
    (void)state;
    struct arpc_u64_map p;
    assert_int_equal(ARPC_OK, arpc_u64_map_init(&p, 4));
    assert_null(arpc_u64_map_get(&p, 0));
    assert_null(arpc_u64_map_get(&p, 1));
    for (uint64_t k = 1; k <= 1000; k++) {
        assert_int_equal(ARPC_OK, arpc_u64_map_put(&p, k * 3, (void *)(uintptr_t)k));
        assert_ptr_equal((void *)(uintptr_t)k, arpc_u64_map_get(&p, k * 3));
    }
    for (uint64_t k = 1; k <= 1000; k++) { /* after every growth, still there */
        assert_ptr_equal((void *)(uintptr_t)k, arpc_u64_map_get(&p, k * 3));
        assert_null(arpc_u64_map_get(&p, k * 3 + 1));
    }
    assert_int_equal(1000, arpc_u64_map_count(&p)); /* get removed nothing */
    assert_ptr_equal((void *)(uintptr_t)7, arpc_u64_map_take(&p, 21));
    assert_null(arpc_u64_map_get(&p, 21));
    assert_null(arpc_u64_map_get(&p, 0));
    arpc_u64_map_fini(&p);
}

/* Iteration yields every (key, val) exactly once, nothing else, and stays done at the end;
 * an empty map yields nothing. */
static void test_iteration(void **state)
{
    (void)state;
    enum { N = 700 };
    struct arpc_u64_map p;
    assert_int_equal(ARPC_OK, arpc_u64_map_init(&p, 4));
    size_t pos = 0;
    uint64_t key;
    void *val;
    assert_false(arpc_u64_map_next(&p, &pos, &key, &val));
    assert_false(arpc_u64_map_next(&p, &pos, &key, &val));
    static int seen[N + 1];
    for (uint64_t k = 1; k <= N; k++)
        assert_int_equal(ARPC_OK, arpc_u64_map_put(&p, k * 1000003, (void *)(uintptr_t)k));
    for (uint64_t k = 2; k <= N; k += 2) /* holes, and backward shifts, before iterating */
        assert_ptr_equal((void *)(uintptr_t)k, arpc_u64_map_take(&p, k * 1000003));
    size_t n = 0;
    for (pos = 0; arpc_u64_map_next(&p, &pos, &key, &val);) {
        uint64_t k = (uint64_t)(uintptr_t)val;
        assert_true(k >= 1 && k <= N && k % 2 == 1);
        assert_int_equal(k * 1000003, key);
        assert_int_equal(0, seen[k]++);
        n++;
    }
    assert_int_equal(N / 2, n);
    assert_false(arpc_u64_map_next(&p, &pos, &key, &val));
    arpc_u64_map_fini(&p);
}

static int drained;
static void count_drained(void *call, void *arg)
{
    (void)call;
    (void)arg;
    drained++;
}

static void test_drain(void **state)
{
    (void)state;
    struct arpc_u64_map p;
    assert_int_equal(ARPC_OK, arpc_u64_map_init(&p, 4));
    for (uint64_t k = 1; k <= 300; k++)
        assert_int_equal(ARPC_OK, arpc_u64_map_put(&p, k, (void *)(uintptr_t)k));
    drained = 0;
    arpc_u64_map_drain(&p, count_drained, NULL);
    assert_int_equal(300, drained);
    assert_int_equal(0, arpc_u64_map_count(&p));
    assert_null(arpc_u64_map_take(&p, 7));
    assert_int_equal(ARPC_OK, arpc_u64_map_put(&p, 7, &p));
    assert_ptr_equal(&p, arpc_u64_map_take(&p, 7));
    arpc_u64_map_fini(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_take),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_sliding_window),
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_iteration),
        cmocka_unit_test(test_drain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
