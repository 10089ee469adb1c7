/*
 * arpc_dlist_sort (base/dlist.h) against a reference (an insertion sort of the same keys):
 * every length up to 70 and a few long ones, keys from a small range so that equal keys are
 * common, checking the order, the stability (equal keys keep their first order), and that
 * the prev links and the ends are made again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "base/dlist.h"

struct item {
    struct arpc_dlink link;
    unsigned key;
    unsigned first; /* its place before the sort */
};

static const struct item *item_of(const struct arpc_dlink *l)
{
    return (const struct item *)(const void *)((const char *)l - offsetof(struct item, link));
}

static bool key_before(const struct arpc_dlink *a, const struct arpc_dlink *b) { return item_of(a)->key < item_of(b)->key; }

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void check_sort(size_t n, unsigned range, uint64_t *seed)
{
    struct item *items = calloc(n + 1, sizeof(*items));
    unsigned *want = calloc(n + 1, sizeof(*want)); /* the firsts in the sorted order */
    assert_non_null(items);
    assert_non_null(want);
    struct arpc_dlist l = {0};
    for (size_t i = 0; i < n; i++) {
        items[i].key = (unsigned)(next_rand(seed) % range);
        items[i].first = (unsigned)i;
        arpc_dlist_insert_after(&l, l.dl_tail, &items[i].link);
    }
    /* Reference: a stable insertion sort of the indices by key. */
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        while (j > 0 && items[want[j - 1]].key > items[i].key) {
            want[j] = want[j - 1];
            j--;
        }
        want[j] = (unsigned)i;
    }
    arpc_dlist_sort(&l, key_before);
    size_t k = 0;
    const struct arpc_dlink *prev = NULL;
    for (const struct arpc_dlink *p = l.dl_head; p != NULL; p = p->dl_next, k++) {
        assert_true(k < n);
        assert_ptr_equal(p->dl_prev, prev);
        assert_int_equal(item_of(p)->first, want[k]);
        prev = p;
    }
    assert_int_equal(k, n);
    assert_ptr_equal(l.dl_tail, prev);
    free(items);
    free(want);
}

static void sorts_stably_at_every_small_length(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (size_t n = 0; n <= 70; n++)
        for (unsigned range = 1; range <= 8; range *= 2)
            for (int round = 0; round < 4; round++)
                check_sort(n, range, &seed);
}

static void sorts_long_lists(void **state)
{
    (void)state;
    uint64_t seed = 12345;
    check_sort(1000, 3, &seed);
    check_sort(4097, 100, &seed);
    check_sort(10000, 1u << 30, &seed);
}

static void sorted_and_reversed_lists(void **state)
{
    (void)state;
    struct item items[100];
    struct arpc_dlist l = {0};
    for (unsigned i = 0; i < 100; i++) {
        items[i].key = 99 - i;
        items[i].first = i;
        arpc_dlist_insert_after(&l, l.dl_tail, &items[i].link);
    }
    arpc_dlist_sort(&l, key_before);
    unsigned k = 0;
    for (const struct arpc_dlink *p = l.dl_head; p != NULL; p = p->dl_next)
        assert_int_equal(item_of(p)->key, k++);
    assert_int_equal(k, 100);
    arpc_dlist_sort(&l, key_before); /* sorted already: unchanged */
    k = 0;
    for (const struct arpc_dlink *p = l.dl_head; p != NULL; p = p->dl_next)
        assert_int_equal(item_of(p)->key, k++);
    assert_ptr_equal(l.dl_tail, &items[0].link);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sorts_stably_at_every_small_length),
        cmocka_unit_test(sorts_long_lists),
        cmocka_unit_test(sorted_and_reversed_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
