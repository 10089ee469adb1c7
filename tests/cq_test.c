/* arpc_cq: order, fd readiness, timeouts, teardown with pending futures, producer stress. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <ck_pr.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arpc/alloc.h"
#include "arpc/cq.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "base/alloc.h"
#include "support/test_util.h"

#define STRESS_TOTAL 100000

/* ---- helpers ---- */

static arpc_future *new_future(void)
{
    arpc_future *f = NULL;
    assert_int_equal(ARPC_OK, arpc_future_create(&f));
    return f;
}

static arpc_cq *new_cq(void)
{
    arpc_cq *cq = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    assert_true(arpc_cq_fd(cq) >= 0);
    return cq;
}

static bool readable(const arpc_cq *cq, int timeout_ms)
{
    struct pollfd p = {.fd = arpc_cq_fd(cq), .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void *tag_of(uintptr_t i) { return (void *)(i + 1); } /* never NULL */
static uintptr_t index_of(void *tag) { return (uintptr_t)tag - 1; }

/* Takes one entry, checks its tag and status, and releases it. */
static void expect_next(arpc_cq *cq, uintptr_t index, int status)
{
    arpc_future *f = NULL;
    void *tag = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_trynext(cq, &f, &tag));
    assert_non_null(f);
    assert_int_equal(index, index_of(tag));
    assert_int_equal(status, arpc_future_poll(f));
    arpc_future_release(f);
}

static void expect_empty(arpc_cq *cq)
{
    arpc_future *f = (arpc_future *)1;
    assert_int_equal(ARPC_EAGAIN, arpc_cq_trynext(cq, &f, NULL));
    assert_null(f);
    assert_int_equal(0, arpc_cq_size(cq));
    assert_false(readable(cq, 0));
}

/* ---- single-threaded ---- */

static void test_empty(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    expect_empty(cq);
    arpc_future *f = NULL;
    assert_int_equal(ARPC_EAGAIN, arpc_cq_next_for(cq, 0, &f, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_cq_attach(cq, NULL, NULL));
    arpc_future *g = new_future();
    assert_int_equal(ARPC_EINVAL, arpc_cq_attach(NULL, g, NULL));
    arpc_future_release(g);
    arpc_cq_destroy(cq);
}

static void test_fd_tracks_emptiness(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future *f[2] = {new_future(), new_future()};
    for (uintptr_t i = 0; i < 2; i++)
        assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f[i], tag_of(i)));
    expect_empty(cq); /* attached, not complete: nothing to take */

    assert_true(arpc_future_complete(f[1], ARPC_EHANDLER, NULL, 0));
    assert_true(readable(cq, 0));
    assert_int_equal(1, arpc_cq_size(cq));
    assert_true(arpc_future_complete(f[0], ARPC_OK, NULL, 0));
    assert_true(readable(cq, 0));
    assert_int_equal(2, arpc_cq_size(cq));

    expect_next(cq, 1, ARPC_EHANDLER); /* completion order, not attach order */
    assert_true(readable(cq, 0));
    expect_next(cq, 0, ARPC_OK);
    expect_empty(cq);

    /* Again after draining: the fd re-arms. */
    arpc_future *g = new_future();
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, g, tag_of(7)));
    assert_true(arpc_future_cancel(g));
    assert_true(readable(cq, 0));
    expect_next(cq, 7, ARPC_ECANCELLED);
    expect_empty(cq);

    arpc_future_release(g);
    arpc_future_release(f[0]);
    arpc_future_release(f[1]);
    arpc_cq_destroy(cq);
}

static void test_attach_completed(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future *f = new_future();
    char *data = arpc_malloc(4);
    memcpy(data, "abc", 4);
    assert_true(arpc_future_complete(f, ARPC_OK, data, 4));
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, NULL)); /* queued at once */
    arpc_future_release(f); /* the queue holds its own reference */
    assert_true(readable(cq, 0));

    arpc_future *got = NULL;
    void *tag = (void *)1;
    assert_int_equal(ARPC_OK, arpc_cq_next(cq, &got, &tag));
    assert_ptr_equal(f, got);
    assert_null(tag);
    assert_string_equal("abc", arpc_future_data(got, NULL));
    arpc_future_release(got);
    expect_empty(cq);
    arpc_cq_destroy(cq);
}

static void test_release_attached_pending_is_not_cancel(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future *f = new_future();
    arpc_future_retain(f); /* the producer's reference */
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, tag_of(3)));
    arpc_future_release(f); /* the consumer's: the queue still holds one, f stays pending */
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(f));
    assert_true(arpc_future_complete(f, ARPC_OK, NULL, 0));
    arpc_future_release(f); /* the producer's */
    expect_next(cq, 3, ARPC_OK);
    arpc_cq_destroy(cq);
}

/* ---- timeouts and blocking ---- */

struct completer {
    pthread_t thread;
    arpc_future *f; /* owned: released after completing */
    int delay_ms;
};

static void *completer_main(void *arg)
{
    struct completer *c = arg;
    sleep_ms(c->delay_ms); /* only delays; nothing relies on it for ordering */
    arpc_future_complete(c->f, ARPC_OK, NULL, 0);
    arpc_future_release(c->f);
    return NULL;
}

static void test_next_for_timeout(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future *f = new_future();
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, tag_of(5)));

    arpc_future *got = (arpc_future *)1;
    int64_t t0 = now_ms();
    assert_int_equal(ARPC_EAGAIN, arpc_cq_next_for(cq, 30, &got, NULL));
    assert_true(now_ms() - t0 >= 29);
    assert_null(got);

    struct completer c = {.f = f, .delay_ms = 10}; /* takes our reference */
    assert_int_equal(0, pthread_create(&c.thread, NULL, completer_main, &c));
    void *tag = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_next_for(cq, TEST_WAIT_MS, &got, &tag));
    assert_ptr_equal(f, got);
    assert_int_equal(5, index_of(tag));
    pthread_join(c.thread, NULL);
    arpc_future_release(got);
    expect_empty(cq);
    arpc_cq_destroy(cq);
}

/* One producer completes futures in order; the blocked consumer sees that order. */
#define ORDER_N 2000

struct ordered_producer {
    arpc_future **fs; /* owns one reference to each */
};

static void *ordered_producer_main(void *arg)
{
    struct ordered_producer *p = arg;
    for (int i = 0; i < ORDER_N; i++) {
        arpc_future_complete(p->fs[i], ARPC_OK, NULL, 0);
        arpc_future_release(p->fs[i]);
    }
    return NULL;
}

static void test_order_across_threads(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future **fs = calloc(ORDER_N, sizeof(*fs));
    assert_non_null(fs);
    for (uintptr_t i = 0; i < ORDER_N; i++) {
        fs[i] = new_future();
        assert_int_equal(ARPC_OK, arpc_cq_attach(cq, fs[i], tag_of(i)));
    }
    struct ordered_producer p = {fs};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, ordered_producer_main, &p));
    for (uintptr_t i = 0; i < ORDER_N; i++) {
        arpc_future *f = NULL;
        void *tag = NULL;
        assert_int_equal(ARPC_OK, arpc_cq_next(cq, &f, &tag));
        assert_int_equal(i, index_of(tag));
        arpc_future_release(f);
    }
    pthread_join(t, NULL);
    expect_empty(cq);
    free(fs);
    arpc_cq_destroy(cq);
}

/* ---- teardown ---- */

struct counter {
    atomic_int calls;
};

static void count_cb(arpc_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&((struct counter *)arg)->calls, 1);
}

static void test_destroy_with_pending(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future *f[4];
    struct counter after = {0};
    for (uintptr_t i = 0; i < 4; i++) {
        f[i] = new_future();
        assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f[i], tag_of(i)));
    }
    assert_int_equal(ARPC_OK, arpc_future_then(f[2], count_cb, &after));
    assert_true(arpc_future_complete(f[0], ARPC_OK, NULL, 0)); /* queued, never taken */
    arpc_cq_destroy(cq);

    /* Completing after destroy: delivered nowhere, released, no crash; the last one frees
     * the queue (ASan: no leak, no use after free). */
    assert_true(arpc_future_complete(f[1], ARPC_OK, NULL, 0));
    assert_true(arpc_future_cancel(f[2]));
    assert_int_equal(1, atomic_load(&after.calls));
    for (int i = 0; i < 3; i++)
        arpc_future_release(f[i]);
    /* The last attached future completes on another thread. */
    struct completer c = {.f = f[3], .delay_ms = 0};
    assert_int_equal(0, pthread_create(&c.thread, NULL, completer_main, &c));
    pthread_join(c.thread, NULL);
}

static void test_destroy_releases_queued(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    for (uintptr_t i = 0; i < 3; i++) {
        arpc_future *f = new_future();
        char *data = arpc_malloc(16);
        assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, tag_of(i)));
        assert_true(arpc_future_complete(f, ARPC_OK, data, 16));
        arpc_future_release(f); /* only the queue holds it now */
    }
    assert_int_equal(3, arpc_cq_size(cq));
    arpc_cq_destroy(cq); /* releases all three (ASan checks) */
}

/* ---- many producers ---- */

#define PRODUCERS 4

struct stress {
    arpc_cq *cq;
    int id;
    atomic_int *seen; /* per tag */
    bool paced;       /* pause between completions, so the queue keeps running empty */
    pthread_t thread;
};

static void *stress_producer_main(void *arg)
{
    struct stress *s = arg;
    const uintptr_t per = STRESS_TOTAL / PRODUCERS;
    for (uintptr_t i = 0; i < per; i++) {
        arpc_future *f = NULL;
        if (arpc_future_create(&f) != ARPC_OK)
            abort();
        if (arpc_cq_attach(s->cq, f, tag_of((uintptr_t)s->id * per + i)) != ARPC_OK)
            abort();
        arpc_future_complete(f, ARPC_OK, NULL, 0);
        arpc_future_release(f);
        for (unsigned n = s->paced ? (unsigned)(i * 2654435761u) % 512 : 0; n > 0; n--)
            ck_pr_stall();
    }
    return NULL;
}

static void start_producers(struct stress *s, arpc_cq *cq, atomic_int *seen, bool paced)
{
    for (int i = 0; i < PRODUCERS; i++) {
        s[i] = (struct stress){.cq = cq, .id = i, .seen = seen, .paced = paced};
        assert_int_equal(0, pthread_create(&s[i].thread, NULL, stress_producer_main, &s[i]));
    }
}

/* Records one delivery; per producer, deliveries keep that producer's completion order. */
static void record(atomic_int *seen, uintptr_t *last, void *tag)
{
    const uintptr_t per = STRESS_TOTAL / PRODUCERS;
    uintptr_t i = index_of(tag);
    assert_true(i < STRESS_TOTAL);
    atomic_fetch_add(&seen[i], 1);
    if (last != NULL) {
        assert_true(last[i / per] == UINTPTR_MAX || last[i / per] < i);
        last[i / per] = i;
    }
}

/* A foreign event loop: poll the fd, drain with trynext. A lost wake-up hangs poll: fail. */
static void stress_poll_loop(bool paced)
{
    arpc_cq *cq = new_cq();
    atomic_int *seen = calloc(STRESS_TOTAL, sizeof(*seen));
    uintptr_t last[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++)
        last[i] = UINTPTR_MAX;
    struct stress s[PRODUCERS];
    start_producers(s, cq, seen, paced);
    int got = 0, wakeups = 0, spurious = 0;
    while (got < STRESS_TOTAL) {
        assert_true(readable(cq, 10000));
        wakeups++;
        int before = got;
        arpc_future *f;
        void *tag;
        while (arpc_cq_trynext(cq, &f, &tag) == ARPC_OK) {
            record(seen, last, tag);
            arpc_future_release(f);
            got++;
        }
        spurious += got == before;
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(s[i].thread, NULL);
    for (int i = 0; i < STRESS_TOTAL; i++)
        assert_int_equal(1, atomic_load(&seen[i]));
    expect_empty(cq);
    print_message("%d entries in %d wake-ups (%d found nothing)\n", got, wakeups, spurious);
    free(seen);
    arpc_cq_destroy(cq);
}

static void test_stress_poll_loop(void **state)
{
    (void)state;
    stress_poll_loop(false);
}

static void test_stress_poll_loop_paced(void **state)
{
    (void)state;
    stress_poll_loop(true);
}

/* Two consumers with next_for against four producers: each entry exactly once. */
struct consumer {
    arpc_cq *cq;
    atomic_int *seen;
    atomic_int *total;
    pthread_t thread;
    int rc; /* the take that ended it (shutdown_consumer_main) */
};

static void *consumer_main(void *arg)
{
    struct consumer *c = arg;
    while (atomic_load(c->total) < STRESS_TOTAL) {
        arpc_future *f;
        void *tag;
        if (arpc_cq_next_for(c->cq, 20, &f, &tag) != ARPC_OK)
            continue;
        uintptr_t i = index_of(tag);
        if (i < STRESS_TOTAL)
            atomic_fetch_add(&c->seen[i], 1);
        arpc_future_release(f);
        atomic_fetch_add(c->total, 1);
    }
    return NULL;
}

static void test_stress_two_consumers(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    atomic_int *seen = calloc(STRESS_TOTAL, sizeof(*seen));
    atomic_int total = 0;
    struct consumer c[2];
    for (int i = 0; i < 2; i++) {
        c[i] = (struct consumer){.cq = cq, .seen = seen, .total = &total};
        assert_int_equal(0, pthread_create(&c[i].thread, NULL, consumer_main, &c[i]));
    }
    struct stress s[PRODUCERS];
    start_producers(s, cq, seen, true);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(s[i].thread, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(c[i].thread, NULL);
    assert_int_equal(STRESS_TOTAL, atomic_load(&total));
    for (int i = 0; i < STRESS_TOTAL; i++)
        assert_int_equal(1, atomic_load(&seen[i]));
    expect_empty(cq);
    free(seen);
    arpc_cq_destroy(cq);
}

/* ---- out of memory ---- */

static void test_out_of_memory(void **state)
{
    (void)state;
    test_alloc_install();
    arpc_cq *cq = new_cq();
    arpc_future *f = new_future();
    struct counter cb = {0};
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, &cb)); /* uses f's embedded node */

    atomic_store(&test_alloc_budget, 0);
    arpc_cq *none = NULL;
    assert_int_equal(ARPC_ENOMEM, arpc_cq_create(&none));
    assert_int_equal(ARPC_ENOMEM, arpc_cq_attach(cq, f, NULL)); /* no entry */
    atomic_store(&test_alloc_budget, 1);
    assert_int_equal(ARPC_ENOMEM, arpc_cq_attach(cq, f, NULL)); /* entry, no callback node */
    atomic_store(&test_alloc_budget, -1);

    /* The failed attaches left no reference behind: this release is the last, cancels f,
     * and nothing is delivered; destroy then frees the queue (ASan checks both). */
    arpc_future_release(f);
    assert_int_equal(1, atomic_load(&cb.calls));
    expect_empty(cq);
    arpc_cq_destroy(cq);
    arpc_alloc_replace(NULL);
}

/* ---- destroy while consumers wait ---- */

/* Joins thread within the hang bound: a consumer never woken fails here, not at the test's
 * timeout. */
static void join_within(pthread_t thread)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += TEST_WAIT_S;
    assert_int_equal(0, pthread_timedjoin_np(thread, NULL, &until));
}

struct waiter {
    pthread_t thread;
    arpc_cq *cq;
    _Atomic int tid;
    int rc;
    arpc_future *got;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->tid, thread_id());
    w->rc = arpc_cq_next(w->cq, &w->got, NULL);
    return NULL;
}

/* Two consumers asleep in arpc_cq_next, a future still attached: destroy wakes both with
 * ARPC_ESHUTDOWN and the queue's memory outlives them (ASan). On the old code the waiters
 * went on using the freed queue (ASan: heap-use-after-free) or slept for ever. */
static void test_destroy_while_waiting(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future *f = new_future();
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, tag_of(1)));
    struct waiter w[2] = {{.cq = cq}, {.cq = cq}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(0, pthread_create(&w[i].thread, NULL, waiter_main, &w[i]));
    for (int i = 0; i < 2; i++) /* each inside, asleep: a consumer after the destroy would be misuse */
        assert_true(WAIT_UNTIL(atomic_load(&w[i].tid) != 0 && thread_in_poll(atomic_load(&w[i].tid))));
    arpc_cq_destroy(cq);
    for (int i = 0; i < 2; i++) {
        join_within(w[i].thread); /* old code: asleep for ever */
        assert_int_equal(ARPC_ESHUTDOWN, w[i].rc);
        assert_null(w[i].got);
    }
    assert_true(arpc_future_complete(f, ARPC_OK, NULL, 0)); /* its entry is released, not queued */
    arpc_future_release(f);
}

/* ---- shutdown: consumers end, the handle stays ---- */

/* What was queued is taken first; then every take says ARPC_ESHUTDOWN at once, the fd stays
 * readable, attaches are refused, and a future attached before completes into the queue. */
static void test_shutdown_takes_queued_first(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future *f[3];
    for (uintptr_t i = 0; i < 3; i++) {
        f[i] = new_future();
        assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f[i], tag_of(i)));
    }
    assert_true(arpc_future_complete(f[0], ARPC_OK, NULL, 0));
    assert_true(arpc_future_complete(f[1], ARPC_ETIMEDOUT, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_cq_shutdown(cq));
    assert_int_equal(ARPC_OK, arpc_cq_shutdown(cq)); /* idempotent */
    expect_next(cq, 0, ARPC_OK);
    expect_next(cq, 1, ARPC_ETIMEDOUT);
    arpc_future *got = (arpc_future *)1;
    assert_int_equal(ARPC_ESHUTDOWN, arpc_cq_trynext(cq, &got, NULL));
    assert_null(got);
    assert_int_equal(ARPC_ESHUTDOWN, arpc_cq_next_for(cq, 10 * TEST_WAIT_MS, &got, NULL)); /* no wait */
    assert_int_equal(ARPC_ESHUTDOWN, arpc_cq_next(cq, &got, NULL));
    assert_true(readable(cq, 0));
    assert_true(readable(cq, 0)); /* the takes above left it so: a poll loop sees the end */
    arpc_future *late = new_future();
    assert_int_equal(ARPC_ESHUTDOWN, arpc_cq_attach(cq, late, NULL));
    arpc_future_release(late);
    assert_true(arpc_future_complete(f[2], ARPC_OK, NULL, 0)); /* attached before: queued */
    assert_int_equal(1, arpc_cq_size(cq));
    expect_next(cq, 2, ARPC_OK);
    assert_int_equal(ARPC_ESHUTDOWN, arpc_cq_trynext(cq, &got, NULL));
    for (int i = 0; i < 3; i++)
        arpc_future_release(f[i]);
    assert_int_equal(ARPC_EINVAL, arpc_cq_shutdown(NULL));
    arpc_cq_destroy(cq);
}

/* A consumer that loops "take, handle, take again": a shutdown made while it handles its last
 * entry ends it at its next take (a destroy there would be a use after free: a misuse review
 * found that the documented way to end a consumer only worked for one asleep); two asleep in
 * next are woken. The queue is destroyed once all are joined. */
struct shut_consumer {
    pthread_t thread;
    arpc_cq *cq;
    sem_t *took;    /* posted after each take */
    sem_t *handled; /* waited for before the next take */
    int takes;
    int rc;
};

static void *shut_consumer_main(void *arg)
{
    struct shut_consumer *c = arg;
    arpc_future *f;
    while ((c->rc = arpc_cq_next(c->cq, &f, NULL)) == ARPC_OK) {
        c->takes++;
        arpc_future_release(f);
        sem_post(c->took);
        sem_wait(c->handled); /* "handling" it while the owner shuts the queue down */
    }
    return NULL;
}

static void test_shutdown_ends_consumers(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    sem_t took, handled;
    sem_init(&took, 0, 0);
    sem_init(&handled, 0, 0);
    struct shut_consumer busy = {.cq = cq, .took = &took, .handled = &handled};
    assert_int_equal(0, pthread_create(&busy.thread, NULL, shut_consumer_main, &busy));
    arpc_future *f = new_future();
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, tag_of(0)));
    assert_true(arpc_future_complete(f, ARPC_OK, NULL, 0));
    arpc_future_release(f);
    assert_true(sem_wait_secs(&took, TEST_WAIT_S)); /* it holds its entry, between two takes */
    struct waiter w[2] = {{.cq = cq}, {.cq = cq}};
    for (int i = 0; i < 2; i++)
        assert_int_equal(0, pthread_create(&w[i].thread, NULL, waiter_main, &w[i]));
    for (int i = 0; i < 2; i++)
        assert_true(WAIT_UNTIL(atomic_load(&w[i].tid) != 0 && thread_in_poll(atomic_load(&w[i].tid))));
    assert_int_equal(ARPC_OK, arpc_cq_shutdown(cq));
    sem_post(&handled);
    join_within(busy.thread);
    assert_int_equal(ARPC_ESHUTDOWN, busy.rc);
    assert_int_equal(1, busy.takes);
    for (int i = 0; i < 2; i++) {
        join_within(w[i].thread);
        assert_int_equal(ARPC_ESHUTDOWN, w[i].rc);
        assert_null(w[i].got);
    }
    arpc_cq_destroy(cq);
    sem_destroy(&took);
    sem_destroy(&handled);
}

/* A thread spinning on trynext of the empty queue clears its signal over and over: one of its
 * clears may read the shutdown's own signal, which must then stand again, or a consumer asleep
 * in next sleeps for ever (a review's stress program lost one within ~100 rounds when the
 * clear did not re-signal). Rounds with varied timing; a sleeper not woken fails the join
 * (without the re-signal, 4 runs of 4 failed; 2.6 s a run in Debug, 7 s under TSan). */
#define SPIN_ROUNDS 3000

struct spinner {
    pthread_t thread;
    arpc_cq *cq;
};

static void *spinner_main(void *arg)
{
    struct spinner *sp = arg;
    arpc_future *f;
    int rc;
    while ((rc = arpc_cq_trynext(sp->cq, &f, NULL)) != ARPC_ESHUTDOWN)
        if (rc == ARPC_OK)
            arpc_future_release(f);
    return NULL;
}

static void test_shutdown_wakes_sleepers_beside_a_spinning_taker(void **state)
{
    (void)state;
    unsigned seed = 12345;
    for (int round = 0; round < SPIN_ROUNDS; round++) {
        arpc_cq *cq = new_cq();
        struct waiter w[2] = {{.cq = cq}, {.cq = cq}};
        for (int i = 0; i < 2; i++)
            assert_int_equal(0, pthread_create(&w[i].thread, NULL, waiter_main, &w[i]));
        struct spinner sp = {.cq = cq};
        assert_int_equal(0, pthread_create(&sp.thread, NULL, spinner_main, &sp));
        seed = seed * 1103515245u + 12345u;
        for (unsigned n = (seed >> 16) % 20000; n > 0; n--) /* varied timing, not a wait */
            ck_pr_stall();
        assert_int_equal(ARPC_OK, arpc_cq_shutdown(cq));
        for (int i = 0; i < 2; i++) {
            join_within(w[i].thread);
            assert_int_equal(ARPC_ESHUTDOWN, w[i].rc);
        }
        join_within(sp.thread);
        arpc_cq_destroy(cq);
    }
}

/* Producers complete attached futures while two consumers take and the queue is shut down
 * midway: the consumers end, and what they took plus what is queued after the producers are
 * done is every entry, each exactly once (TSan: the shut flag against takes and pushes). */
#define SHUT_TOTAL 40000

struct shut_producer {
    pthread_t thread;
    arpc_future **futures;
    int from, to;
};

static void *shut_producer_main(void *arg)
{
    struct shut_producer *p = arg;
    for (int i = p->from; i < p->to; i++) {
        if (!arpc_future_complete(p->futures[i], ARPC_OK, NULL, 0))
            abort();
        for (unsigned n = (unsigned)i * 2654435761u % 1024; n > 0; n--) /* paced: the queue empties now and then */
            ck_pr_stall();
    }
    return NULL;
}

/* Takes until a take fails (the shutdown's ARPC_ESHUTDOWN). */
static void *shutdown_consumer_main(void *arg)
{
    struct consumer *c = arg;
    arpc_future *f;
    void *tag;
    while ((c->rc = arpc_cq_next(c->cq, &f, &tag)) == ARPC_OK) {
        atomic_fetch_add(&c->seen[index_of(tag)], 1);
        arpc_future_release(f);
        atomic_fetch_add(c->total, 1);
    }
    return NULL;
}

static void test_shutdown_while_producers_push(void **state)
{
    (void)state;
    arpc_cq *cq = new_cq();
    arpc_future **futures = calloc(SHUT_TOTAL, sizeof(*futures));
    atomic_int *seen = calloc(SHUT_TOTAL, sizeof(*seen));
    assert_true(futures != NULL && seen != NULL);
    for (int i = 0; i < SHUT_TOTAL; i++) {
        futures[i] = new_future();
        assert_int_equal(ARPC_OK, arpc_cq_attach(cq, futures[i], tag_of((uintptr_t)i)));
    }
    atomic_int taken = 0;
    struct consumer t[2];
    for (int i = 0; i < 2; i++) {
        t[i] = (struct consumer){.cq = cq, .seen = seen, .total = &taken};
        assert_int_equal(0, pthread_create(&t[i].thread, NULL, shutdown_consumer_main, &t[i]));
    }
    struct shut_producer p[2];
    for (int i = 0; i < 2; i++) {
        p[i] = (struct shut_producer){.futures = futures, .from = i * SHUT_TOTAL / 2, .to = (i + 1) * SHUT_TOTAL / 2};
        assert_int_equal(0, pthread_create(&p[i].thread, NULL, shut_producer_main, &p[i]));
    }
    assert_true(WAIT_UNTIL(atomic_load(&taken) >= SHUT_TOTAL / 8));
    assert_int_equal(ARPC_OK, arpc_cq_shutdown(cq));
    for (int i = 0; i < 2; i++) {
        join_within(t[i].thread);
        assert_int_equal(ARPC_ESHUTDOWN, t[i].rc);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(p[i].thread, NULL);
    arpc_future *f;
    void *tag;
    int rc, left = 0;
    while ((rc = arpc_cq_trynext(cq, &f, &tag)) == ARPC_OK) {
        atomic_fetch_add(&seen[index_of(tag)], 1);
        arpc_future_release(f);
        left++;
    }
    assert_int_equal(ARPC_ESHUTDOWN, rc);
    print_message("%d taken by the consumers, %d left queued after the shutdown\n", atomic_load(&taken), left);
    assert_int_equal(SHUT_TOTAL, atomic_load(&taken) + left);
    for (int i = 0; i < SHUT_TOTAL; i++) {
        assert_int_equal(1, atomic_load(&seen[i]));
        arpc_future_release(futures[i]);
    }
    free(futures);
    free(seen);
    arpc_cq_destroy(cq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_fd_tracks_emptiness),
        cmocka_unit_test(test_attach_completed),
        cmocka_unit_test(test_release_attached_pending_is_not_cancel),
        cmocka_unit_test(test_next_for_timeout),
        cmocka_unit_test(test_order_across_threads),
        cmocka_unit_test(test_destroy_with_pending),
        cmocka_unit_test(test_destroy_releases_queued),
        cmocka_unit_test(test_stress_poll_loop),
        cmocka_unit_test(test_stress_poll_loop_paced),
        cmocka_unit_test(test_stress_two_consumers),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_destroy_while_waiting),
        cmocka_unit_test(test_shutdown_takes_queued_first),
        cmocka_unit_test(test_shutdown_ends_consumers),
        cmocka_unit_test(test_shutdown_while_producers_push),
        cmocka_unit_test(test_shutdown_wakes_sleepers_beside_a_spinning_taker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
