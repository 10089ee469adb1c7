/*
 * arpc_actor: one message at a time, in order (per producer, 4 x 200k), exactly-once
 * delivery across stop, back-pressure (the bound is never exceeded, measured by the actor)
 * and self-posts, idle sleep, a destroy right after a message ran, out of memory and the
 * node pool. The internal job API (async/actor_internal.h) is in actor_job_test.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "arpc/actor.h"
#include "arpc/alloc.h"
#include "arpc/error.h"
#include "base/alloc.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define SCALE 10 /* TSan is ~10x slower: fewer iterations, same shape */
#else
#define SCALE 1
#endif

/* ---- heap messages: a leak or a double delivery shows up under ASan ---- */

#define MAX_MSGS (1u << 16)

struct msg {
    unsigned id;
};

static atomic_uint n_ids, n_ok, n_cancelled;
static atomic_uint hits[MAX_MSGS];
static atomic_bool accepted[MAX_MSGS];
static _Thread_local bool is_stopper; /* set by the thread that will deliver cancellations */

static void counters_reset(void)
{
    atomic_store(&bad_line, 0);
    atomic_store(&n_ids, 0);
    atomic_store(&n_ok, 0);
    atomic_store(&n_cancelled, 0);
    for (unsigned i = 0; i < MAX_MSGS; i++) {
        atomic_store(&hits[i], 0);
        atomic_store(&accepted[i], false);
    }
    latch_reset();
}

static void on_msg(arpc_actor *actor, void *arg, int status)
{
    struct msg *m = arg;
    atomic_fetch_add(&hits[m->id], 1);
    if (status == ARPC_OK) {
        CHECK(arpc_actor_on_thread(actor));
        atomic_fetch_add(&n_ok, 1);
    } else {
        CHECK(status == ARPC_ECANCELLED);
        CHECK(!arpc_actor_on_thread(actor));
        CHECK(is_stopper); /* cancellations run on the thread that stops */
        atomic_fetch_add(&n_cancelled, 1);
    }
    free(m);
    latch_add();
}

/* Posts one counted heap message from any thread; frees it itself if the post is refused. */
static int post_msg(arpc_actor *a)
{
    unsigned id = atomic_fetch_add(&n_ids, 1);
    if (id >= MAX_MSGS)
        abort(); /* the test itself is broken */
    struct msg *m = malloc(sizeof(*m));
    if (m == NULL)
        abort();
    m->id = id;
    int rc = arpc_actor_post(a, on_msg, m);
    if (rc == ARPC_OK)
        atomic_store(&accepted[id], true);
    else
        free(m);
    return rc;
}

static unsigned n_accepted(void)
{
    unsigned n = 0, ids = atomic_load(&n_ids);
    for (unsigned i = 0; i < ids && i < MAX_MSGS; i++)
        n += atomic_load(&accepted[i]);
    return n;
}

/* Accepted messages were delivered exactly once, refused ones never; no handler failed. */
static void assert_each_delivered_once(void)
{
    unsigned ids = atomic_load(&n_ids);
    for (unsigned i = 0; i < ids && i < MAX_MSGS; i++)
        assert_int_equal(atomic_load(&accepted[i]) ? 1 : 0, atomic_load(&hits[i]));
    assert_int_equal(n_accepted(), atomic_load(&n_ok) + atomic_load(&n_cancelled));
    assert_int_equal(0, atomic_load(&bad_line));
}

/* ---- basic contract ---- */

static void test_post_runs_on_actor_thread(void **state)
{
    (void)state;
    counters_reset();
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_false(arpc_actor_on_thread(a));
    assert_int_equal(ARPC_OK, post_msg(a));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(1, atomic_load(&n_ok));
    assert_int_equal(ARPC_OK, arpc_actor_stop(a, ARPC_ACTOR_DRAIN));
    assert_int_equal(1, arpc_actor_processed(a));
    arpc_actor_destroy(a);
    assert_each_delivered_once();
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    arpc_actor *a;
    assert_int_equal(ARPC_EINVAL, arpc_actor_create(NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_post(a, NULL, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_post(NULL, on_msg, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_actor_stop(a, (enum arpc_actor_stop_mode)7));
    assert_int_equal(ARPC_EINVAL, arpc_actor_stop(NULL, ARPC_ACTOR_DRAIN));
    assert_false(arpc_actor_on_thread(NULL));
    arpc_actor_destroy(a);
    arpc_actor_destroy(NULL);
}

static void test_post_after_stop_is_eshutdown(void **state)
{
    (void)state;
    counters_reset();
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_stop(a, ARPC_ACTOR_DRAIN));
    assert_int_equal(ARPC_ESHUTDOWN, post_msg(a));
    /* Idempotent, in either mode. */
    assert_int_equal(ARPC_OK, arpc_actor_stop(a, ARPC_ACTOR_DRAIN));
    assert_int_equal(ARPC_OK, arpc_actor_stop(a, ARPC_ACTOR_DISCARD));
    assert_int_equal(ARPC_ESHUTDOWN, post_msg(a));
    arpc_actor_destroy(a);
    assert_int_equal(0, atomic_load(&n_ok) + atomic_load(&n_cancelled));
}

/* ---- order and one-at-a-time ---- */

static unsigned fifo_next; /* touched only by the actor's messages: no lock by contract */
static atomic_bool fifo_broken;

static void on_fifo(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    CHECK(status == ARPC_OK);
    if ((uintptr_t)arg != fifo_next)
        atomic_store(&fifo_broken, true);
    fifo_next++;
}

static void test_single_producer_order_kept(void **state)
{
    (void)state;
    enum { N = 100000 };
    fifo_next = 0;
    atomic_store(&fifo_broken, false);
    atomic_store(&bad_line, 0);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = 64}; /* the producer waits for room often */
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    for (uintptr_t i = 0; i < N / SCALE; i++)
        assert_int_equal(ARPC_OK, arpc_actor_post(a, on_fifo, (void *)i));
    arpc_actor_destroy(a); /* DRAIN, and the join orders fifo_next for us */
    assert_false(atomic_load(&fifo_broken));
    assert_int_equal(N / SCALE, fifo_next);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* 4 producers x 200k into a 64-message mailbox: each producer's messages arrive in its order,
 * each once, and the messages accepted and not yet started never exceed the bound (measured
 * by the actor at every message; accepted is counted after post returns, so it can only
 * undercount). */
enum { SEQ_PRODUCERS = 4, SEQ_PER = 200000 / SCALE, SEQ_BOUND = 64 };

static uint32_t seq_next[SEQ_PRODUCERS]; /* the actor's only */
static long seq_started, seq_max_queued; /* the actor's only */
static atomic_long seq_accepted;

static void on_seq(arpc_actor *actor, void *arg, int status)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned p = (unsigned)(v >> 32);
    uint32_t seq = (uint32_t)v;
    CHECK(status == ARPC_OK);
    CHECK(arpc_actor_on_thread(actor));
    CHECK(p < SEQ_PRODUCERS && seq == seq_next[p]);
    if (p < SEQ_PRODUCERS)
        seq_next[p] = seq + 1;
    long queued = atomic_load(&seq_accepted) - ++seq_started;
    if (queued > seq_max_queued)
        seq_max_queued = queued;
}

static void *seq_producer(void *arg)
{
    arpc_actor **a = arg;
    static atomic_uint next_id;
    uintptr_t p = atomic_fetch_add(&next_id, 1) % SEQ_PRODUCERS;
    for (uintptr_t i = 0; i < SEQ_PER; i++) {
        if (arpc_actor_post(*a, on_seq, (void *)(p << 32 | i)) != ARPC_OK)
            abort();
        atomic_fetch_add(&seq_accepted, 1);
    }
    return NULL;
}

static void test_fifo_per_producer_exactly_once_bounded(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    memset(seq_next, 0, sizeof(seq_next));
    seq_started = seq_max_queued = 0;
    atomic_store(&seq_accepted, 0);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = SEQ_BOUND};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    pthread_t t[SEQ_PRODUCERS];
    for (int i = 0; i < SEQ_PRODUCERS; i++)
        assert_int_equal(0, pthread_create(&t[i], NULL, seq_producer, &a));
    for (int i = 0; i < SEQ_PRODUCERS; i++)
        pthread_join(t[i], NULL);
    arpc_actor_destroy(a); /* DRAIN, and the join orders the actor's counters for us */
    print_message("mailbox %d: at most %ld queued\n", SEQ_BOUND, seq_max_queued);
    assert_int_equal(0, atomic_load(&bad_line));
    for (int p = 0; p < SEQ_PRODUCERS; p++)
        assert_int_equal(SEQ_PER, seq_next[p]);
    assert_int_equal((long)SEQ_PRODUCERS * SEQ_PER, seq_started);
    assert_true(seq_max_queued <= SEQ_BOUND);
}

static atomic_int inside, inside_max;
static atomic_uint overlap_done;
static unsigned overlap_plain; /* a plain counter: TSan flags it if two handlers overlap */

static void on_exclusive(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    int now = atomic_fetch_add(&inside, 1) + 1;
    int seen = atomic_load(&inside_max);
    while (now > seen && !atomic_compare_exchange_weak(&inside_max, &seen, now))
        ;
    overlap_plain++;
    for (volatile int spin = 0; spin < 50; spin++)
        ;
    atomic_fetch_sub(&inside, 1);
    if (status == ARPC_OK)
        atomic_fetch_add(&overlap_done, 1);
}

enum { EXCL_PRODUCERS = 4, EXCL_PER_PRODUCER = 50000 / SCALE };

static void *exclusive_producer(void *arg)
{
    arpc_actor *a = arg;
    for (int i = 0; i < EXCL_PER_PRODUCER; i++) {
        if (arpc_actor_post(a, on_exclusive, NULL) != ARPC_OK)
            abort();
    }
    return NULL;
}

static void test_one_message_at_a_time(void **state)
{
    (void)state;
    atomic_store(&inside, 0);
    atomic_store(&inside_max, 0);
    atomic_store(&overlap_done, 0);
    overlap_plain = 0;
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = 256};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    pthread_t t[EXCL_PRODUCERS];
    for (int i = 0; i < EXCL_PRODUCERS; i++)
        assert_int_equal(0, pthread_create(&t[i], NULL, exclusive_producer, a));
    for (int i = 0; i < EXCL_PRODUCERS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(ARPC_OK, arpc_actor_stop(a, ARPC_ACTOR_DRAIN));
    assert_int_equal(1, atomic_load(&inside_max));
    assert_int_equal(EXCL_PRODUCERS * EXCL_PER_PRODUCER, atomic_load(&overlap_done));
    assert_int_equal(EXCL_PRODUCERS * EXCL_PER_PRODUCER, overlap_plain);
    assert_int_equal(EXCL_PRODUCERS * EXCL_PER_PRODUCER, arpc_actor_processed(a));
    arpc_actor_destroy(a);
}

/* ---- stop modes ----
 * The first message is a gate: it keeps posting counted messages to its own actor (self-posts
 * never wait) until the post fails with ARPC_ESHUTDOWN, i.e. until a helper thread's stop has
 * closed the mailbox. Everything behind the gate was accepted before the stop. The stop
 * starts only once the gate runs (first latch count), or DISCARD would cancel the gate too. */

static void on_gate(arpc_actor *actor, void *arg, int status)
{
    (void)arg;
    CHECK(status == ARPC_OK);
    latch_add(); /* nothing else can run before the gate returns */
    int rc;
    CHECK(WAIT_UNTIL((rc = post_msg(actor)) != ARPC_OK));
    CHECK(rc == ARPC_ESHUTDOWN);
}

struct stopper {
    arpc_actor *actor;
    enum arpc_actor_stop_mode mode;
    int rc;
};

static void *stopper_main(void *arg)
{
    struct stopper *s = arg;
    is_stopper = true;
    s->rc = arpc_actor_stop(s->actor, s->mode);
    return NULL;
}

static void run_gated_stop(enum arpc_actor_stop_mode mode, unsigned queued)
{
    counters_reset();
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_gate, NULL));
    for (unsigned i = 0; i < queued; i++)
        assert_int_equal(ARPC_OK, post_msg(a));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    struct stopper s = {a, mode, -1};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, stopper_main, &s));
    pthread_join(t, NULL);
    assert_int_equal(ARPC_OK, s.rc);
    assert_int_equal(ARPC_ESHUTDOWN, post_msg(a));
    assert_each_delivered_once();
    arpc_actor_destroy(a);
}

static void test_stop_drain_runs_everything_accepted(void **state)
{
    (void)state;
    run_gated_stop(ARPC_ACTOR_DRAIN, 1000);
    assert_int_equal(0, atomic_load(&n_cancelled));
    assert_true(atomic_load(&n_ok) >= 1000);
}

static void test_stop_discard_cancels_the_rest(void **state)
{
    (void)state;
    run_gated_stop(ARPC_ACTOR_DISCARD, 1000);
    assert_int_equal(0, atomic_load(&n_ok)); /* only the gate ran, and it is not counted */
    assert_true(atomic_load(&n_cancelled) >= 1000);
}

/* Discard while several producers are mid-flight on a small mailbox: whatever each post
 * reported, accepted messages are delivered exactly once and refused ones never are. */
static atomic_bool storm_stop;

static void *storm_producer(void *arg)
{
    arpc_actor *a = arg;
    while (!atomic_load(&storm_stop)) {
        if (post_msg(a) == ARPC_ESHUTDOWN)
            break;
        if (atomic_load(&n_ids) > MAX_MSGS - 64)
            break;
    }
    return NULL;
}

static void on_slow(arpc_actor *actor, void *arg, int status)
{
    on_msg(actor, arg, status);
    sched_yield();
}

static void test_stop_discard_under_load(void **state)
{
    (void)state;
    counters_reset();
    atomic_store(&storm_stop, false);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = 16};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    /* Slow messages first, so the stop finds a backlog to cancel. */
    for (int i = 0; i < 8; i++) {
        struct msg *m = malloc(sizeof(*m));
        assert_non_null(m);
        m->id = atomic_fetch_add(&n_ids, 1);
        atomic_store(&accepted[m->id], true);
        assert_int_equal(ARPC_OK, arpc_actor_post(a, on_slow, m));
    }
    pthread_t p[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(0, pthread_create(&p[i], NULL, storm_producer, a));
    while (atomic_load(&n_ids) < 200) /* the producers are under way */
        sched_yield();
    is_stopper = true;
    assert_int_equal(ARPC_OK, arpc_actor_stop(a, ARPC_ACTOR_DISCARD));
    is_stopper = false;
    atomic_store(&storm_stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(p[i], NULL);
    assert_each_delivered_once();
    assert_int_equal(atomic_load(&n_ok), arpc_actor_processed(a));
    arpc_actor_destroy(a);
}

/* A cancellation callback may call stop again (idempotent) and sees post refused. */
static atomic_int reentry_stop_rc, reentry_post_rc;
static atomic_uint reentry_calls;

static void on_reentrant_cancel(arpc_actor *actor, void *arg, int status)
{
    (void)arg;
    if (status != ARPC_ECANCELLED)
        return;
    atomic_fetch_add(&reentry_calls, 1);
    atomic_store(&reentry_stop_rc, arpc_actor_stop(actor, ARPC_ACTOR_DISCARD));
    atomic_store(&reentry_post_rc, arpc_actor_post(actor, on_reentrant_cancel, NULL));
}

static void test_stop_reentered_from_cancellation(void **state)
{
    (void)state;
    counters_reset();
    atomic_store(&reentry_calls, 0);
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_gate, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_reentrant_cancel, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    struct stopper s = {a, ARPC_ACTOR_DISCARD, -1};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, stopper_main, &s));
    pthread_join(t, NULL);
    assert_int_equal(ARPC_OK, s.rc);
    assert_int_equal(1, atomic_load(&reentry_calls));
    assert_int_equal(ARPC_OK, atomic_load(&reentry_stop_rc));
    assert_int_equal(ARPC_ESHUTDOWN, atomic_load(&reentry_post_rc));
    assert_each_delivered_once();
    arpc_actor_destroy(a);
}

/* ---- calls from the actor's own thread ---- */

static atomic_int own_stop_rc;
static atomic_bool own_on_thread;

static void on_stop_self(arpc_actor *actor, void *arg, int status)
{
    (void)arg;
    (void)status;
    atomic_store(&own_on_thread, arpc_actor_on_thread(actor));
    atomic_store(&own_stop_rc, arpc_actor_stop(actor, ARPC_ACTOR_DRAIN));
    latch_add();
}

static void test_stop_from_own_thread_is_ebusy(void **state)
{
    (void)state;
    latch_reset();
    atomic_store(&own_stop_rc, -1);
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_stop_self, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(ARPC_EBUSY, atomic_load(&own_stop_rc));
    assert_true(atomic_load(&own_on_thread));
    /* Still running: it accepts and runs work. */
    counters_reset();
    assert_int_equal(ARPC_OK, post_msg(a));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    arpc_actor_destroy(a);
    assert_each_delivered_once();
}

enum { SELF_CHILDREN = 1000, SELF_EXTERNAL = 20000 / SCALE };
static atomic_uint self_runs;
static atomic_int self_post_failures;

static void on_child(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    if (status == ARPC_OK)
        atomic_fetch_add(&self_runs, 1);
}

/* Posts SELF_CHILDREN messages to its own 8-slot mailbox: must not wait for itself. */
static void on_spawner(arpc_actor *actor, void *arg, int status)
{
    (void)arg;
    if (status != ARPC_OK)
        return;
    for (int i = 0; i < SELF_CHILDREN; i++) {
        if (arpc_actor_post(actor, on_child, NULL) != ARPC_OK)
            atomic_fetch_add(&self_post_failures, 1);
    }
}

static void *self_external_producer(void *arg)
{
    arpc_actor *a = arg;
    for (int i = 0; i < SELF_EXTERNAL; i++) {
        if (arpc_actor_post(a, i % 1000 == 0 ? on_spawner : on_child, NULL) != ARPC_OK)
            abort();
    }
    return NULL;
}

static void test_self_post_full_mailbox_does_not_deadlock(void **state)
{
    (void)state;
    atomic_store(&self_runs, 0);
    atomic_store(&self_post_failures, 0);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = 8};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    /* An external producer keeps the small mailbox full while spawners post past its bound. */
    pthread_t p;
    assert_int_equal(0, pthread_create(&p, NULL, self_external_producer, a));
    pthread_join(p, NULL);
    arpc_actor_destroy(a);
    unsigned spawners = (SELF_EXTERNAL + 999) / 1000;
    unsigned children = SELF_EXTERNAL - spawners;
    assert_int_equal(0, atomic_load(&self_post_failures));
    assert_int_equal(children + spawners * SELF_CHILDREN, atomic_load(&self_runs));
}

/* ---- sleeping, naming, teardown ---- */

static atomic_bool clock_ok;
static clockid_t actor_clock;

static void on_get_clock(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    (void)status;
    atomic_store(&clock_ok, pthread_getcpuclockid(pthread_self(), &actor_clock) == 0);
    latch_add();
}

static int64_t cpu_ns(clockid_t c)
{
    struct timespec ts;
    assert_int_equal(0, clock_gettime(c, &ts));
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void test_idle_actor_sleeps(void **state)
{
    (void)state;
    latch_reset();
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_get_clock, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_true(atomic_load(&clock_ok));
    assert_true(WAIT_UNTIL(arpc_actor_processed(a) == 1)); /* it finished the message */
    int64_t before = cpu_ns(actor_clock);
    sleep_ms(200); /* the window watched: the subject, not a wait */
    int64_t used = cpu_ns(actor_clock) - before;
    /* A spinning actor would burn ~200 ms; a sleeping one a few wake-ups' worth. */
    assert_true(used < 20 * 1000000);
    /* And it wakes up for new work after sleeping. */
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_get_clock, NULL));
    assert_true(latch_wait(2, TEST_WAIT_MS));
    arpc_actor_destroy(a);
}

static char seen_name[32];

static void on_get_name(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    (void)status;
    pthread_getname_np(pthread_self(), seen_name, sizeof(seen_name));
    latch_add();
}

static void test_thread_name_truncated(void **state)
{
    (void)state;
    latch_reset();
    memset(seen_name, 0, sizeof(seen_name));
    arpc_actor *a;
    arpc_actor_options o = {.name = "arpc-test-actor-with-a-long-name"};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_get_name, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    arpc_actor_destroy(a);
    assert_string_equal("arpc-test-actor", seen_name);
}

static void test_destroy_drains(void **state)
{
    (void)state;
    counters_reset();
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    for (int i = 0; i < 500; i++)
        assert_int_equal(ARPC_OK, post_msg(a));
    arpc_actor_destroy(a);
    assert_int_equal(500, atomic_load(&n_ok));
    assert_each_delivered_once();
}

/* ---- destroy right after a message ran ----
 * A poster's last touch of the actor is its wake-up (the event count), which may come after
 * its message has run: a destroy made as soon as the message ran must wait for it (ASan sees
 * a use after free if not). */

enum { AFTER_RAN_ROUNDS = 300 };

static void on_after_ran(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)status;
    sem_post(arg);
}

struct after_ran {
    arpc_actor *a;
    sem_t ran;
};

static void *after_ran_poster(void *arg)
{
    struct after_ran *r = arg;
    CHECK(arpc_actor_post(r->a, on_after_ran, &r->ran) == ARPC_OK);
    return NULL;
}

static void test_destroy_right_after_message_ran(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    for (int round = 0; round < AFTER_RAN_ROUNDS / SCALE; round++) {
        struct after_ran r;
        sem_init(&r.ran, 0, 0);
        assert_int_equal(ARPC_OK, arpc_actor_create(&r.a, NULL));
        pthread_t th;
        assert_int_equal(0, pthread_create(&th, NULL, after_ran_poster, &r));
        assert_true(sem_wait_secs(&r.ran, 20));
        arpc_actor_destroy(r.a); /* the poster may not have returned yet */
        pthread_join(th, NULL);
        sem_destroy(&r.ran);
    }
    assert_int_equal(0, atomic_load(&bad_line));
}

/* ---- out of memory: every allocation in create may fail, nothing leaks ---- */

static void test_create_out_of_memory(void **state)
{
    (void)state;
    test_alloc_install();
    int rc = ARPC_ENOMEM;
    int budget;
    for (budget = 0; rc == ARPC_ENOMEM && budget < 16; budget++) {
        atomic_store(&test_alloc_budget, budget);
        arpc_actor *a = (arpc_actor *)(uintptr_t)1;
        rc = arpc_actor_create(&a, NULL);
        if (rc == ARPC_OK) {
            arpc_actor_destroy(a);
        } else {
            assert_int_equal(ARPC_ENOMEM, rc);
            assert_null(a);
        }
        assert_int_equal(0, atomic_load(&test_alloc_live));
    }
    arpc_alloc_replace(NULL);
    assert_int_equal(ARPC_OK, rc);
    assert_true(budget > 1); /* at least one failure path was exercised */
}

/* A post whose message node cannot be allocated (an empty pool and a failing allocator) is
 * refused with ARPC_ENOMEM, from the actor's own thread as from another, and every accepted
 * one still runs once. */
static atomic_int oom_refused, oom_other;
static atomic_uint oom_accepted, oom_runs;

static void on_oom_child(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    if (status == ARPC_OK)
        atomic_fetch_add(&oom_runs, 1);
}

static void count_post_rc(int rc)
{
    if (rc == ARPC_OK)
        atomic_fetch_add(&oom_accepted, 1);
    else if (rc == ARPC_ENOMEM)
        atomic_fetch_add(&oom_refused, 1);
    else
        atomic_fetch_add(&oom_other, 1);
}

static void on_oom_spawner(arpc_actor *actor, void *arg, int status)
{
    (void)arg;
    (void)status;
    atomic_store(&test_alloc_budget, 0); /* this thread is the only one allocating now */
    for (int i = 0; i < 32; i++) /* 8 times the bound: a self-post never waits for room */
        count_post_rc(arpc_actor_post(actor, on_oom_child, NULL));
    atomic_store(&test_alloc_budget, -1);
    latch_add();
}

static void test_post_out_of_memory(void **state)
{
    (void)state;
    test_alloc_install();
    atomic_store(&oom_refused, 0);
    atomic_store(&oom_other, 0);
    atomic_store(&oom_accepted, 0);
    atomic_store(&oom_runs, 0);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = 4};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    /* From another thread, on a fresh actor (no node in its pool). */
    atomic_store(&test_alloc_budget, 0);
    assert_int_equal(ARPC_ENOMEM, arpc_actor_post(a, on_oom_child, NULL));
    atomic_store(&test_alloc_budget, -1);
    /* From the actor's own thread. */
    latch_reset();
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_oom_spawner, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* before the stop closes the mailbox */
    arpc_actor_destroy(a);
    arpc_alloc_replace(NULL);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    assert_int_equal(0, atomic_load(&oom_other));
    assert_true(atomic_load(&oom_refused) >= 16); /* at most a few nodes came back in time */
    assert_int_equal(32, atomic_load(&oom_accepted) + atomic_load(&oom_refused));
    assert_int_equal(atomic_load(&oom_accepted), atomic_load(&oom_runs));
}

/* Once warm, posting allocates nothing: the nodes of messages that ran are used again. */
static sem_t warm_gate;

static void on_warm_gate(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    (void)status;
    sem_wait(&warm_gate);
}

static void on_warm(arpc_actor *actor, void *arg, int status)
{
    (void)actor;
    (void)arg;
    (void)status;
    latch_add();
}

static void test_warm_pool_allocates_nothing(void **state)
{
    (void)state;
    enum { WARM = 100 };
    test_alloc_install();
    sem_init(&warm_gate, 0, 0);
    latch_reset();
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = 1000};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    /* WARM messages queued at once behind a gate: the pool grows to WARM + 1 nodes. */
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_warm_gate, NULL));
    for (int i = 0; i < WARM; i++)
        assert_int_equal(ARPC_OK, arpc_actor_post(a, on_warm, NULL));
    long live = atomic_load(&test_alloc_live);
    sem_post(&warm_gate);
    assert_true(latch_wait(WARM, TEST_WAIT_MS));
    /* Every message ran: nodes come back (all but the last one's, perhaps, yet). */
    atomic_store(&test_alloc_budget, 0);
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < WARM; i++)
            assert_int_equal(ARPC_OK, arpc_actor_post(a, on_warm, NULL));
        assert_true(latch_wait((unsigned)(WARM * (round + 2)), TEST_WAIT_MS));
    }
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(live, atomic_load(&test_alloc_live));
    arpc_actor_destroy(a);
    arpc_alloc_replace(NULL);
    assert_int_equal(0, atomic_load(&test_alloc_live));
    sem_destroy(&warm_gate);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_runs_on_actor_thread),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_post_after_stop_is_eshutdown),
        cmocka_unit_test(test_single_producer_order_kept),
        cmocka_unit_test(test_fifo_per_producer_exactly_once_bounded),
        cmocka_unit_test(test_one_message_at_a_time),
        cmocka_unit_test(test_stop_drain_runs_everything_accepted),
        cmocka_unit_test(test_stop_discard_cancels_the_rest),
        cmocka_unit_test(test_stop_discard_under_load),
        cmocka_unit_test(test_stop_reentered_from_cancellation),
        cmocka_unit_test(test_stop_from_own_thread_is_ebusy),
        cmocka_unit_test(test_self_post_full_mailbox_does_not_deadlock),
        cmocka_unit_test(test_idle_actor_sleeps),
        cmocka_unit_test(test_thread_name_truncated),
        cmocka_unit_test(test_destroy_drains),
        cmocka_unit_test(test_destroy_right_after_message_ran),
        cmocka_unit_test(test_create_out_of_memory),
        cmocka_unit_test(test_post_out_of_memory),
        cmocka_unit_test(test_warm_pool_allocates_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
