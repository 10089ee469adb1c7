/*
 * base/node_pool: a node given back is taken again before anything is allocated, fini frees
 * every node given back, an empty pool with a failing allocator says NULL, and under
 * concurrent takers and givers no node is ever out to two threads at once (the ABA case the
 * generation count exists for), checked by an owner word in each node.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/node_pool.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define SCALE 10
#else
#define SCALE 1
#endif

struct node {
    ck_stack_entry_t n_link; /* the pool's, while the node is free */
    atomic_uint n_owner;     /* 0 while in the pool; the taking thread's number while out */
    unsigned n_stamp;        /* plain: written by the owner only */
};

static void test_reuse_before_allocating(void **state)
{
    (void)state;
    struct arpc_node_pool p;
    arpc_node_pool_init(&p, sizeof(struct node));
    struct node *a = arpc_node_pool_get(&p);
    struct node *b = arpc_node_pool_get(&p);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal(2, atomic_load(&test_alloc_live));
    arpc_node_pool_put(&p, a);
    arpc_node_pool_put(&p, b);
    /* Given back: taken again (last given, first taken), nothing allocated, even with a
     * failing allocator. */
    atomic_store(&test_alloc_budget, 0);
    assert_ptr_equal(b, arpc_node_pool_get(&p));
    assert_ptr_equal(a, arpc_node_pool_get(&p));
    assert_null(arpc_node_pool_get(&p)); /* empty, and the allocator fails */
    atomic_store(&test_alloc_budget, -1);
    /* A chain given back at once: the last added is taken first, as if put one by one. */
    struct arpc_node_chain c = {0};
    arpc_node_chain_add(&c, b);
    arpc_node_chain_add(&c, a);
    arpc_node_pool_put_chain(&p, &c);
    assert_int_equal(0, c.nc_n);
    assert_ptr_equal(a, arpc_node_pool_get(&p));
    assert_ptr_equal(b, arpc_node_pool_get(&p));
    arpc_node_pool_put(&p, a);
    arpc_node_pool_put(&p, b);
    arpc_node_pool_fini(&p); /* frees both: the teardown checks nothing is live */
}

/* ---- many threads taking and giving back ---- */

enum { STRESS_THREADS = 4, STRESS_ROUNDS = 200000 / SCALE, STRESS_HELD = 3 };

struct stress {
    struct arpc_node_pool *pool;
    unsigned id; /* 1.. */
    pthread_barrier_t *go;
};

static void *stress_main(void *arg)
{
    struct stress *s = arg;
    pthread_barrier_wait(s->go);
    for (unsigned r = 0; r < STRESS_ROUNDS; r++) {
        struct node *held[STRESS_HELD];
        unsigned n = 1 + r % STRESS_HELD;
        for (unsigned i = 0; i < n; i++) {
            held[i] = arpc_node_pool_get(s->pool);
            CHECK(held[i] != NULL);
            if (held[i] == NULL)
                return NULL;
            unsigned prev = atomic_exchange(&held[i]->n_owner, s->id);
            CHECK(prev == 0); /* out to nobody else */
            held[i]->n_stamp = s->id * 1000003u + r;
        }
        for (unsigned i = 0; i < n; i++) {
            CHECK(held[i]->n_stamp == s->id * 1000003u + r);
            CHECK(atomic_load(&held[i]->n_owner) == s->id);
            atomic_store(&held[i]->n_owner, 0);
            arpc_node_pool_put(s->pool, held[i]);
        }
    }
    return NULL;
}

static void test_concurrent_takers_never_share_a_node(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    struct arpc_node_pool p;
    arpc_node_pool_init(&p, sizeof(struct node));
    /* Warm the pool with zeroed owner words, so every node the threads meet is initialised. */
    struct node *warm[STRESS_THREADS * STRESS_HELD];
    for (unsigned i = 0; i < STRESS_THREADS * STRESS_HELD; i++) {
        warm[i] = arpc_node_pool_get(&p);
        assert_non_null(warm[i]);
        atomic_init(&warm[i]->n_owner, 0);
    }
    for (unsigned i = 0; i < STRESS_THREADS * STRESS_HELD; i++)
        arpc_node_pool_put(&p, warm[i]);
    long live = atomic_load(&test_alloc_live);
    atomic_store(&test_alloc_budget, 0); /* enough nodes for everyone: none is allocated */
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, STRESS_THREADS);
    pthread_t th[STRESS_THREADS];
    struct stress s[STRESS_THREADS];
    for (unsigned t = 0; t < STRESS_THREADS; t++) {
        s[t] = (struct stress){&p, t + 1, &go};
        assert_int_equal(0, pthread_create(&th[t], NULL, stress_main, &s[t]));
    }
    for (unsigned t = 0; t < STRESS_THREADS; t++)
        pthread_join(th[t], NULL);
    atomic_store(&test_alloc_budget, -1);
    pthread_barrier_destroy(&go);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(live, atomic_load(&test_alloc_live));
    arpc_node_pool_fini(&p);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_reuse_before_allocating),
        cmocka_unit_test_no_leak(test_concurrent_takers_never_share_a_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
