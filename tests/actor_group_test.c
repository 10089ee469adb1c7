/*
 * arpc_actor_group: exactly-once delivery and per-key order under back-pressure, round-robin
 * spread, stop modes, naming and allocation failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/actor.h"
#include "arpc/alloc.h"
#include "arpc/error.h"
#include "async/actor_internal.h"
#include "base/alloc.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define SCALE 5 /* TSan is ~10x slower: 200k messages instead of 1M */
#else
#define SCALE 1
#endif

/* ---- 1M messages, 4 producers, 2 actors, 1024-slot mailboxes ----
 * Message id = producer * PER_PRODUCER + i; it is sent with key producer * KEYS + i % KEYS and
 * carries that key's sequence number i / KEYS. Each key is produced by one producer thread, so
 * its messages must arrive in sequence. The per-key state and the hit bytes are plain memory:
 * only the key's actor touches them (by contract), and TSan checks that claim. */

enum {
    BULK_PRODUCERS = 4,
    BULK_KEYS = 50, /* per producer */
    BULK_TOTAL = 1000000 / SCALE,
    BULK_PER_PRODUCER = BULK_TOTAL / BULK_PRODUCERS,
    BULK_ALL_KEYS = BULK_PRODUCERS * BULK_KEYS,
};

static unsigned char *bulk_hits;
static uint32_t bulk_next_seq[BULK_ALL_KEYS];
static arpc_actor *bulk_owner[BULK_ALL_KEYS];

static void on_bulk(arpc_actor *actor, void *arg, int status)
{
    uint32_t id = (uint32_t)((uintptr_t)arg - 1);
    uint32_t p = id / BULK_PER_PRODUCER, i = id % BULK_PER_PRODUCER;
    uint32_t key = p * BULK_KEYS + i % BULK_KEYS, seq = i / BULK_KEYS;
    CHECK(status == ARPC_OK);
    if (bulk_owner[key] == NULL)
        bulk_owner[key] = actor;
    CHECK(bulk_owner[key] == actor);
    CHECK(bulk_next_seq[key] == seq);
    bulk_next_seq[key] = seq + 1;
    bulk_hits[id]++;
}

struct producer {
    arpc_actor_group *g;
    uint32_t p;
};

static void *bulk_producer(void *arg)
{
    struct producer *pr = arg;
    for (uint32_t i = 0; i < BULK_PER_PRODUCER; i++) {
        uint32_t id = pr->p * BULK_PER_PRODUCER + i;
        uint64_t key = pr->p * BULK_KEYS + i % BULK_KEYS;
        int rc = arpc_actor_group_post_key(pr->g, key, on_bulk, (void *)(uintptr_t)(id + 1));
        CHECK(rc == ARPC_OK);
    }
    return NULL;
}

static void test_million_exactly_once_in_key_order(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    memset(bulk_next_seq, 0, sizeof(bulk_next_seq));
    memset(bulk_owner, 0, sizeof(bulk_owner));
    bulk_hits = calloc(BULK_TOTAL, 1);
    assert_non_null(bulk_hits);

    arpc_actor_group *g;
    arpc_actor_options o = {.mailbox_size = 1024, .name = "bulk"};
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&g, 2, &o));
    struct producer pr[BULK_PRODUCERS];
    pthread_t t[BULK_PRODUCERS];
    for (uint32_t p = 0; p < BULK_PRODUCERS; p++) {
        pr[p] = (struct producer){g, p};
        assert_int_equal(0, pthread_create(&t[p], NULL, bulk_producer, &pr[p]));
    }
    for (int p = 0; p < BULK_PRODUCERS; p++)
        pthread_join(t[p], NULL);
    assert_int_equal(ARPC_OK, arpc_actor_group_stop(g, ARPC_ACTOR_DRAIN));

    assert_int_equal(0, atomic_load(&bad_line));
    for (uint32_t id = 0; id < BULK_TOTAL; id++) {
        if (bulk_hits[id] != 1)
            fail_msg("message %u delivered %u times", id, bulk_hits[id]);
    }
    for (uint32_t k = 0; k < BULK_ALL_KEYS; k++)
        assert_int_equal(BULK_PER_PRODUCER / BULK_KEYS, bulk_next_seq[k]);
    /* 200 keys over 2 actors: each actor gets a fair share. */
    uint64_t a0 = arpc_actor_processed(arpc_actor_group_member(g, 0));
    uint64_t a1 = arpc_actor_processed(arpc_actor_group_member(g, 1));
    assert_int_equal(BULK_TOTAL, a0 + a1);
    assert_true(a0 > BULK_TOTAL / 4 && a1 > BULK_TOTAL / 4);
    arpc_actor_group_destroy(g);
    free(bulk_hits);
}

/* ---- round-robin: one shared cursor, so n * k posts give each actor exactly k ---- */

enum { RR_ACTORS = 3, RR_PRODUCERS = 2, RR_PER_PRODUCER = 60000 / SCALE };
static atomic_uint rr_runs;

static void on_rr(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    CHECK(status == ARPC_OK);
    atomic_fetch_add(&rr_runs, 1);
}

static void *rr_producer(void *arg)
{
    arpc_actor_group *g = arg;
    for (int i = 0; i < RR_PER_PRODUCER; i++)
        CHECK(arpc_actor_group_post(g, on_rr, NULL) == ARPC_OK);
    return NULL;
}

static void test_round_robin_spreads_evenly(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    atomic_store(&rr_runs, 0);
    arpc_actor_group *g;
    arpc_actor_options o = {.mailbox_size = 256};
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&g, RR_ACTORS, &o));
    pthread_t t[RR_PRODUCERS];
    for (int i = 0; i < RR_PRODUCERS; i++)
        assert_int_equal(0, pthread_create(&t[i], NULL, rr_producer, g));
    for (int i = 0; i < RR_PRODUCERS; i++)
        pthread_join(t[i], NULL);
    arpc_actor_group_stop(g, ARPC_ACTOR_DRAIN);
    unsigned total = RR_PRODUCERS * RR_PER_PRODUCER;
    assert_int_equal(total, atomic_load(&rr_runs));
    for (unsigned i = 0; i < RR_ACTORS; i++)
        assert_int_equal(total / RR_ACTORS, arpc_actor_processed(arpc_actor_group_member(g, i)));
    assert_int_equal(0, atomic_load(&bad_line));
    arpc_actor_group_destroy(g);
}

/* ---- keys: equal keys always reach the same actor, whatever their bit pattern ---- */

static arpc_actor *key_seen;

static void on_key(arpc_actor *actor, void *arg, int status)
{
    (void)arg;
    (void)status;
    key_seen = actor; /* read after a latch wait: the latch orders it */
    latch_add();
}

static void test_equal_keys_same_actor(void **state)
{
    (void)state;
    arpc_actor_group *g;
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&g, 4, NULL));
    static const uint64_t keys[] = {0, 1, 2, 3, 1u << 20, UINT64_MAX, 0x8000000000000000ULL};
    unsigned used[4] = {0};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        arpc_actor *first = NULL;
        for (int rep = 0; rep < 5; rep++) {
            latch_reset();
            assert_int_equal(ARPC_OK, arpc_actor_group_post_key(g, keys[k], on_key, NULL));
            assert_true(latch_wait(1, TEST_WAIT_MS));
            arpc_actor *seen = key_seen; /* latch_add's unlock, latch_wait's lock order it */
            if (first == NULL)
                first = seen;
            assert_ptr_equal(first, seen);
        }
        assert_ptr_equal(first, arpc_actor_group_pick_key(g, keys[k])); /* for jobs: the same */
        for (unsigned i = 0; i < 4; i++)
            used[i] += arpc_actor_group_member(g, i) == first;
    }
    /* Many consecutive small keys spread over every member. */
    for (uint64_t k = 0; k < 64; k++)
        assert_int_equal(ARPC_OK, arpc_actor_group_post_key(g, k, on_rr, NULL));
    arpc_actor_group_stop(g, ARPC_ACTOR_DRAIN);
    for (unsigned i = 0; i < 4; i++)
        assert_true(arpc_actor_processed(arpc_actor_group_member(g, i)) > used[i] * 5);
    arpc_actor_group_destroy(g);
}

/* ---- size, members, names ---- */

static void test_size_and_members(void **state)
{
    (void)state;
    arpc_actor_group *g;
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_create(NULL, 1, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&g, 0, NULL));
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cpus > 0 ? cpus : 1, arpc_actor_group_size(g));
    for (unsigned i = 0; i < arpc_actor_group_size(g); i++)
        assert_non_null(arpc_actor_group_member(g, i));
    assert_null(arpc_actor_group_member(g, arpc_actor_group_size(g)));
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_post(g, NULL, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_post(NULL, on_rr, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_post_key(NULL, 1, on_rr, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_stop(NULL, ARPC_ACTOR_DRAIN));
    assert_int_equal(0, arpc_actor_group_size(NULL));
    arpc_actor_group_destroy(g);
    arpc_actor_group_destroy(NULL);
}

static char names[3][32];

static void on_name(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)status;
    pthread_getname_np(pthread_self(), names[(uintptr_t)arg], sizeof(names[0]));
    latch_add();
}

static void test_member_names_keep_index(void **state)
{
    (void)state;
    latch_reset();
    memset(names, 0, sizeof(names));
    arpc_actor_group *g;
    arpc_actor_options o = {.name = "a-rather-long-pool-name"};
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&g, 3, &o));
    for (uintptr_t i = 0; i < 3; i++)
        assert_int_equal(ARPC_OK, arpc_actor_post(arpc_actor_group_member(g, (unsigned)i),
                                                  on_name, (void *)i));
    assert_true(latch_wait(3, TEST_WAIT_MS));
    arpc_actor_group_destroy(g);
    assert_string_equal("a-rather-long-0", names[0]);
    assert_string_equal("a-rather-long-1", names[1]);
    assert_string_equal("a-rather-long-2", names[2]);
}

/* ---- stop ---- */

static atomic_uint n_ok, n_cancelled, n_accepted;

static void on_counted(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    free(arg);
    atomic_fetch_add(status == ARPC_OK ? &n_ok : &n_cancelled, 1);
}

static int post_counted(arpc_actor_group *g)
{
    void *m = malloc(16);
    int rc = arpc_actor_group_post(g, on_counted, m);
    if (rc == ARPC_OK)
        atomic_fetch_add(&n_accepted, 1);
    else
        free(m);
    return rc;
}

static void on_nothing(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    (void)status;
}

/* Blocks member 0 until a stop has closed its mailbox (its self-post is refused). */
static void on_gate(arpc_actor *actor, void *arg, int status)
{
    (void)arg;
    CHECK(status == ARPC_OK);
    latch_add();
    CHECK(WAIT_UNTIL(arpc_actor_post(actor, on_nothing, NULL) != ARPC_OK));
}

struct stopper {
    arpc_actor_group *g;
    enum arpc_actor_stop_mode mode;
    int rc;
};

static void *stopper_main(void *arg)
{
    struct stopper *s = arg;
    s->rc = arpc_actor_group_stop(s->g, s->mode);
    return NULL;
}

static void run_group_stop(enum arpc_actor_stop_mode mode)
{
    atomic_store(&n_ok, 0);
    atomic_store(&n_cancelled, 0);
    atomic_store(&n_accepted, 0);
    atomic_store(&bad_line, 0);
    latch_reset();
    arpc_actor_group *g;
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&g, 2, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_post(arpc_actor_group_member(g, 0), on_gate, NULL));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ARPC_OK, post_counted(g));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* the gate runs: a DISCARD must not cancel it */
    struct stopper s = {g, mode, -1};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, stopper_main, &s));
    pthread_join(t, NULL);
    assert_int_equal(ARPC_OK, s.rc);
    assert_int_equal(ARPC_ESHUTDOWN, post_counted(g));
    assert_int_equal(ARPC_ESHUTDOWN, arpc_actor_group_post_key(g, 7, on_counted, NULL));
    assert_int_equal(atomic_load(&n_accepted), atomic_load(&n_ok) + atomic_load(&n_cancelled));
    if (mode == ARPC_ACTOR_DRAIN)
        assert_int_equal(0, atomic_load(&n_cancelled));
    else
        assert_true(atomic_load(&n_cancelled) >= 500); /* member 0's half, behind the gate */
    assert_int_equal(ARPC_OK, arpc_actor_group_stop(g, ARPC_ACTOR_DISCARD)); /* idempotent */
    assert_int_equal(0, atomic_load(&bad_line));
    arpc_actor_group_destroy(g);
}

static void test_stop_drain(void **state)
{
    (void)state;
    run_group_stop(ARPC_ACTOR_DRAIN);
}

static void test_stop_discard(void **state)
{
    (void)state;
    run_group_stop(ARPC_ACTOR_DISCARD);
}

static arpc_actor_group *busy_group;
static atomic_int busy_rc;

static void on_stop_group(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    (void)status;
    atomic_store(&busy_rc, arpc_actor_group_stop(busy_group, ARPC_ACTOR_DRAIN));
    latch_add();
}

static void test_stop_from_member_is_ebusy(void **state)
{
    (void)state;
    latch_reset();
    atomic_store(&busy_rc, -1);
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&busy_group, 2, NULL));
    assert_int_equal(ARPC_OK,
                     arpc_actor_post(arpc_actor_group_member(busy_group, 1), on_stop_group, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(ARPC_EBUSY, atomic_load(&busy_rc));
    /* Nothing was stopped: both members still take work. */
    assert_int_equal(ARPC_OK, arpc_actor_group_post(busy_group, on_rr, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_group_post(busy_group, on_rr, NULL));
    arpc_actor_group_destroy(busy_group);
}

/* ---- out of memory at every allocation of create: ENOMEM, nothing leaked ---- */

static void test_create_out_of_memory(void **state)
{
    (void)state;
    test_alloc_install();
    int rc = ARPC_ENOMEM, budget;
    for (budget = 0; rc == ARPC_ENOMEM && budget < 32; budget++) {
        atomic_store(&test_alloc_budget, budget);
        arpc_actor_group *g = (arpc_actor_group *)(uintptr_t)1;
        rc = arpc_actor_group_create(&g, 3, NULL);
        if (rc == ARPC_OK) {
            arpc_actor_group_destroy(g);
        } else {
            assert_int_equal(ARPC_ENOMEM, rc);
            assert_null(g);
        }
        assert_int_equal(0, atomic_load(&test_alloc_live));
    }
    arpc_alloc_replace(NULL);
    assert_int_equal(ARPC_OK, rc);
    assert_int_equal(1 + 3 + 1, budget); /* the group + an actor x 3, then success */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_million_exactly_once_in_key_order),
        cmocka_unit_test(test_round_robin_spreads_evenly),
        cmocka_unit_test(test_equal_keys_same_actor),
        cmocka_unit_test(test_size_and_members),
        cmocka_unit_test(test_member_names_keep_index),
        cmocka_unit_test(test_stop_drain),
        cmocka_unit_test(test_stop_discard),
        cmocka_unit_test(test_stop_from_member_is_ebusy),
        cmocka_unit_test(test_create_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
