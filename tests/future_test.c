/* arpc_future: completion, waiting, callbacks, cancel races, wait_all / wait_any. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/alloc.h"
#include "arpc/cq.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "async/future_internal.h"
#include "base/alloc.h"
#include "support/test_util.h"

#define RACE_ROUNDS 10000

/* ---- helpers ---- */

static void *buf_of(const char *s)
{
    size_t n = strlen(s) + 1;
    void *p = arpc_malloc(n);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

static arpc_future *new_future(void)
{
    arpc_future *f = NULL;
    assert_int_equal(ARPC_OK, arpc_future_create(&f));
    assert_non_null(f);
    return f;
}

/* A callback that counts its calls and records the status and its turn. */
struct counter {
    atomic_int calls;
    int status;
    int turn;
    atomic_int *clock; /* shared sequence, to check registration order */
};

static void count_cb(arpc_future *f, void *arg)
{
    struct counter *c = arg;
    c->status = arpc_future_poll(f);
    if (c->clock != NULL)
        c->turn = atomic_fetch_add(c->clock, 1);
    atomic_fetch_add(&c->calls, 1);
}

static void count_hook(arpc_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* A thread that completes (or cancels) a future it owns a reference to, after a delay. */
struct completer {
    pthread_t thread;
    arpc_future *f;
    int status;
    int delay_ms;
    const char *text;
};

static void *completer_main(void *arg)
{
    struct completer *c = arg;
    if (c->delay_ms > 0)
        sleep_ms(c->delay_ms); /* only delays; nothing relies on it for ordering */
    arpc_future_complete(c->f, c->status, c->text ? buf_of(c->text) : NULL,
                         c->text ? strlen(c->text) + 1 : 0);
    arpc_future_release(c->f);
    return NULL;
}

/* Starts a completer holding its own reference to f. */
static void completer_start(struct completer *c, arpc_future *f, int status, int delay_ms,
                            const char *text)
{
    *c = (struct completer){.f = f, .status = status, .delay_ms = delay_ms, .text = text};
    arpc_future_retain(f);
    assert_int_equal(0, pthread_create(&c->thread, NULL, completer_main, c));
}

/* ---- basics ---- */

static void test_complete_once(void **state)
{
    (void)state;
    arpc_future *f = new_future();
    size_t len = 99;
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(f));
    assert_null(arpc_future_data(f, &len));
    assert_int_equal(0, len);
    assert_null(arpc_future_take(f, &len));

    assert_true(arpc_future_complete(f, ARPC_OK, buf_of("hello"), 6));
    assert_int_equal(ARPC_OK, arpc_future_poll(f));
    assert_int_equal(ARPC_OK, arpc_future_wait(f));
    assert_string_equal("hello", arpc_future_data(f, &len));
    assert_int_equal(6, len);

    /* Later attempts lose; the loser's buffer is freed (ASan would report a leak). */
    assert_false(arpc_future_complete(f, ARPC_EHANDLER, buf_of("late"), 5));
    assert_false(arpc_future_cancel(f));
    assert_int_equal(ARPC_OK, arpc_future_poll(f));
    assert_string_equal("hello", arpc_future_data(f, NULL));
    arpc_future_release(f);
}

static void test_error_with_data_and_no_data(void **state)
{
    (void)state;
    arpc_future *f = new_future();
    assert_true(arpc_future_complete(f, ARPC_EHANDLER, buf_of("boom"), 5));
    assert_int_equal(ARPC_EHANDLER, arpc_future_wait_for(f, 0));
    assert_string_equal("boom", arpc_future_data(f, NULL));
    arpc_future_release(f);

    f = new_future();
    size_t len = 7;
    assert_true(arpc_future_complete(f, ARPC_ECONNLOST, NULL, 123));
    assert_null(arpc_future_data(f, &len));
    assert_int_equal(0, len);
    arpc_future_release(f);
}

/* The status travels in the state word (24 bits): what does not fit, like EPENDING, is a
 * producer bug reported as EINVAL; the largest that fits comes back as given. */
static void test_status_range(void **state)
{
    (void)state;
    const int given[] = {ARPC_EPENDING, -1, 1 << 24, (1 << 24) - 1, ARPC_ECANCELLED};
    const int want[] = {ARPC_EINVAL, ARPC_EINVAL, ARPC_EINVAL, (1 << 24) - 1, ARPC_ECANCELLED};
    for (size_t i = 0; i < sizeof(given) / sizeof(given[0]); i++) {
        arpc_future *f = new_future();
        assert_true(arpc_future_complete(f, given[i], NULL, 0));
        assert_int_equal(want[i], arpc_future_poll(f));
        assert_int_equal(want[i], arpc_future_wait(f));
        arpc_future_release(f);
    }
}

static void test_take(void **state)
{
    (void)state;
    arpc_future *f = new_future();
    void *buf = buf_of("payload");
    assert_true(arpc_future_complete(f, ARPC_OK, buf, 8));
    size_t len = 0;
    void *got = arpc_future_take(f, &len);
    assert_ptr_equal(buf, got);
    assert_int_equal(8, len);
    /* Moved: the future no longer lends it, and a second take gets nothing. */
    assert_null(arpc_future_data(f, &len));
    assert_int_equal(0, len);
    assert_null(arpc_future_take(f, &len));
    assert_int_equal(ARPC_OK, arpc_future_poll(f));
    arpc_future_release(f);
    assert_string_equal("payload", got); /* still ours after the release */
    arpc_free(got);
}

/* ---- waiting ---- */

#define WAITERS 8

struct waiter {
    pthread_t thread;
    arpc_future *f;
    pthread_barrier_t *ready;
    int status;
    bool data_ok;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    pthread_barrier_wait(w->ready);
    w->status = arpc_future_wait(w->f);
    size_t len = 0;
    const char *d = arpc_future_data(w->f, &len);
    w->data_ok = d != NULL && len == 7 && strcmp(d, "shared") == 0;
    arpc_future_release(w->f);
    return NULL;
}

static void test_eight_waiters(void **state)
{
    (void)state;
    arpc_future *f = new_future();
    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, WAITERS + 1);
    struct waiter w[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        w[i] = (struct waiter){.f = f, .ready = &ready, .status = -1};
        arpc_future_retain(f);
        assert_int_equal(0, pthread_create(&w[i].thread, NULL, waiter_main, &w[i]));
    }
    pthread_barrier_wait(&ready);
    /* Not for correctness: gives the waiters time to get past spinning into the futex (the
     * right outcome needs none). */
    sleep_ms(20);
    struct completer c;
    completer_start(&c, f, ARPC_EHANDLER, 0, "shared");
    pthread_join(c.thread, NULL);
    for (int i = 0; i < WAITERS; i++) {
        pthread_join(w[i].thread, NULL);
        assert_int_equal(ARPC_EHANDLER, w[i].status);
        assert_true(w[i].data_ok);
    }
    pthread_barrier_destroy(&ready);
    arpc_future_release(f);
}

static void test_timed_wait(void **state)
{
    (void)state;
    arpc_future *f = new_future();
    int64_t t0 = now_ms();
    assert_int_equal(ARPC_EPENDING, arpc_future_wait_for(f, 30));
    assert_true(now_ms() - t0 >= 29); /* the deadline is absolute: no early return */
    assert_int_equal(ARPC_EPENDING, arpc_future_wait_for(f, 0));
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(f));

    struct completer c;
    completer_start(&c, f, ARPC_ENOMETHOD, 10, NULL);
    assert_int_equal(ARPC_ENOMETHOD, arpc_future_wait_for(f, TEST_WAIT_MS));
    assert_int_equal(ARPC_ENOMETHOD, arpc_future_poll(f));
    assert_int_equal(ARPC_ENOMETHOD, arpc_future_wait_for(f, ARPC_FOREVER));
    pthread_join(c.thread, NULL);
    arpc_future_release(f);
}

/* ---- callbacks ---- */

static void test_then_before_and_after(void **state)
{
    (void)state;
    atomic_int clock = 0;
    struct counter before[3] = {{.clock = &clock}, {.clock = &clock}, {.clock = &clock}};
    struct counter after = {0};
    arpc_future *f = new_future();
    for (int i = 0; i < 3; i++) /* the first uses the embedded slot, the rest allocate */
        assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, &before[i]));
    for (int i = 0; i < 3; i++)
        assert_int_equal(0, atomic_load(&before[i].calls));

    assert_true(arpc_future_complete(f, ARPC_EREJECTED, NULL, 0));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(1, atomic_load(&before[i].calls));
        assert_int_equal(ARPC_EREJECTED, before[i].status);
        assert_int_equal(i, before[i].turn); /* registration order */
    }
    /* Already complete: runs on this thread before then() returns. */
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, &after));
    assert_int_equal(1, atomic_load(&after.calls));
    assert_int_equal(ARPC_EREJECTED, after.status);

    arpc_future_cancel(f);
    arpc_future_release(f);
    for (int i = 0; i < 3; i++)
        assert_int_equal(1, atomic_load(&before[i].calls));
    assert_int_equal(1, atomic_load(&after.calls));
    assert_int_equal(ARPC_EINVAL, arpc_future_then(NULL, count_cb, &after));
}

/* A callback that registers another callback on the same future from inside. */
static void nesting_cb(arpc_future *f, void *arg)
{
    struct counter *inner = arg;
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, inner));
    /* The nested one ran inline, before then() returned. */
    assert_int_equal(1, atomic_load(&inner->calls));
}

static void test_then_inside_callback(void **state)
{
    (void)state;
    struct counter inner = {0};
    arpc_future *f = new_future();
    assert_int_equal(ARPC_OK, arpc_future_then(f, nesting_cb, &inner));
    assert_true(arpc_future_complete(f, ARPC_OK, NULL, 0));
    assert_int_equal(1, atomic_load(&inner.calls));
    arpc_future_release(f);
}

/* A racer thread in lockstep with the test: each round both pass `start` together, the racer
 * runs step once while the test does its part, and both meet at `done`. What the test writes
 * before `start` and reads after `done` needs no other synchronisation: the barriers order it. */
struct lockstep {
    pthread_barrier_t start, done;
    pthread_t thread;
    bool stop; /* written before `start` */
    void (*step)(void *arg);
    void *arg;
};

static void *lockstep_main(void *p)
{
    struct lockstep *l = p;
    for (;;) {
        pthread_barrier_wait(&l->start);
        if (l->stop)
            return NULL;
        l->step(l->arg);
        pthread_barrier_wait(&l->done);
    }
}

static void lockstep_start(struct lockstep *l, void (*step)(void *arg), void *arg)
{
    *l = (struct lockstep){.step = step, .arg = arg};
    pthread_barrier_init(&l->start, NULL, 2);
    pthread_barrier_init(&l->done, NULL, 2);
    assert_int_equal(0, pthread_create(&l->thread, NULL, lockstep_main, l));
}

static void lockstep_stop(struct lockstep *l)
{
    l->stop = true;
    pthread_barrier_wait(&l->start);
    pthread_join(l->thread, NULL);
    pthread_barrier_destroy(&l->start);
    pthread_barrier_destroy(&l->done);
}

/* then() racing complete(): every registration runs exactly once. */
struct then_racer {
    arpc_future *f;
    struct counter cbs[3];
};

static void then_racer_step(void *arg)
{
    struct then_racer *r = arg;
    for (int i = 0; i < 3; i++)
        arpc_future_then(r->f, count_cb, &r->cbs[i]);
}

static void test_then_races_complete(void **state)
{
    (void)state;
    struct then_racer r = {0};
    struct lockstep ls;
    lockstep_start(&ls, then_racer_step, &r);
    for (int round = 0; round < RACE_ROUNDS / 4; round++) {
        r.f = new_future();
        for (int i = 0; i < 3; i++)
            r.cbs[i] = (struct counter){0};
        pthread_barrier_wait(&ls.start);
        assert_true(arpc_future_complete(r.f, ARPC_OK, NULL, 0));
        pthread_barrier_wait(&ls.done);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(1, atomic_load(&r.cbs[i].calls));
            assert_int_equal(ARPC_OK, r.cbs[i].status);
        }
        arpc_future_release(r.f);
    }
    lockstep_stop(&ls);
}

/* Two threads' first then() calls race for the embedded slot on an empty list (the loser of
 * its CAS takes a node): every registration runs exactly once, each thread's in its order. */
struct then_pair {
    arpc_future *f;
    atomic_int clock;
    struct counter mine[3], theirs[3];
};

static void then_pair_step(void *arg)
{
    struct then_pair *p = arg;
    for (int i = 0; i < 3; i++)
        (void)arpc_future_then(p->f, count_cb, &p->theirs[i]); /* checked by the counts */
}

static void test_thens_race_for_the_embedded_slot(void **state)
{
    (void)state;
    struct then_pair p = {0};
    struct lockstep ls;
    lockstep_start(&ls, then_pair_step, &p);
    for (int round = 0; round < RACE_ROUNDS / 4; round++) {
        p.f = new_future();
        atomic_store(&p.clock, 0);
        for (int i = 0; i < 3; i++) {
            p.mine[i] = (struct counter){.clock = &p.clock};
            p.theirs[i] = (struct counter){.clock = &p.clock};
        }
        pthread_barrier_wait(&ls.start);
        for (int i = 0; i < 3; i++)
            assert_int_equal(ARPC_OK, arpc_future_then(p.f, count_cb, &p.mine[i]));
        pthread_barrier_wait(&ls.done);
        assert_true(arpc_future_complete(p.f, ARPC_OK, NULL, 0));
        for (int i = 0; i < 3; i++) {
            assert_int_equal(1, atomic_load(&p.mine[i].calls));
            assert_int_equal(1, atomic_load(&p.theirs[i].calls));
            if (i > 0) { /* each thread's registrations run in its order */
                assert_true(p.mine[i - 1].turn < p.mine[i].turn);
                assert_true(p.theirs[i - 1].turn < p.theirs[i].turn);
            }
        }
        arpc_future_release(p.f);
    }
    lockstep_stop(&ls);
}

/* A then() made once the future is seen complete (arpc_future_wait returned) runs its
 * callback on the registering thread before it returns, as arpc/future.h says, even when it
 * lands between the completer publishing the status (and waking the waiter) and taking the
 * callback list: a caller may free what the callback uses the moment then() returns. Both
 * threads on one CPU, the completer waking a sleeping waiter: the woken thread often runs at
 * once, in that window (it did in every run on the old code). */
struct then_after_wait {
    arpc_future *f;
    struct counter cb;
    int late_rounds; /* rounds whose callback had not run when then() returned */
};

static void then_after_wait_step(void *arg)
{
    struct then_after_wait *r = arg;
    assert_int_equal(ARPC_OK, arpc_future_wait(r->f));
    assert_int_equal(ARPC_OK, arpc_future_then(r->f, count_cb, &r->cb));
    if (atomic_load(&r->cb.calls) != 1)
        r->late_rounds++;
}

static void pin_to_cpu(pthread_t t, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(t, sizeof(set), &set); /* best effort: the checks hold either way */
}

static void test_then_after_wait_runs_before_returning(void **state)
{
    (void)state;
    struct then_after_wait r = {0};
    struct lockstep ls;
    cpu_set_t saved;
    pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved);
    int cpu = 0;
    while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &saved))
        cpu++;
    pin_to_cpu(pthread_self(), cpu);
    lockstep_start(&ls, then_after_wait_step, &r);
    pin_to_cpu(ls.thread, cpu);
    for (int round = 0; round < RACE_ROUNDS / 10; round++) {
        r.f = new_future();
        r.cb = (struct counter){0};
        uint32_t fresh = atomic_load(&r.f->f_state);
        pthread_barrier_wait(&ls.start);
        /* The waiter has announced itself on the state word (it sleeps, or is about to). */
        while (atomic_load(&r.f->f_state) == fresh)
            sched_yield();
        assert_true(arpc_future_complete(r.f, ARPC_OK, NULL, 0));
        pthread_barrier_wait(&ls.done);
        assert_int_equal(1, atomic_load(&r.cb.calls));
        arpc_future_release(r.f);
    }
    lockstep_stop(&ls);
    pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
    assert_int_equal(0, r.late_rounds);
}

/* ---- cancel ---- */

/* A producer's hook that drops its work and the reference the canceller lent it (a trial of
 * re-entrant calls: the release inside the hook recursed until the stack overflowed). */
static void release_in_hook(arpc_future *f, void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    arpc_future_release(f);
}

static void test_cancel_hook_releases_the_last_reference(void **state)
{
    (void)state;
    test_alloc_install();
    atomic_int hook = 0;
    struct counter cb = {0};
    arpc_future *f = new_future();
    arpc_future_on_cancel(f, release_in_hook, &hook);
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, &cb));
    assert_true(arpc_future_cancel(f)); /* the callbacks still ran on a live future; then it is freed */
    assert_int_equal(1, atomic_load(&hook));
    assert_int_equal(1, atomic_load(&cb.calls));
    assert_int_equal(ARPC_ECANCELLED, cb.status);
}

static void test_cancel_idempotent(void **state)
{
    (void)state;
    atomic_int hook = 0;
    struct counter cb = {0};
    arpc_future *f = new_future();
    arpc_future_on_cancel(f, count_hook, &hook);
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, &cb));
    assert_true(arpc_future_cancel(f));
    assert_int_equal(1, atomic_load(&hook));
    assert_int_equal(1, atomic_load(&cb.calls));
    assert_int_equal(ARPC_ECANCELLED, cb.status);
    assert_false(arpc_future_cancel(f));
    assert_false(arpc_future_complete(f, ARPC_OK, buf_of("too late"), 9));
    assert_int_equal(1, atomic_load(&hook));
    assert_int_equal(1, atomic_load(&cb.calls));
    assert_int_equal(ARPC_ECANCELLED, arpc_future_wait(f));
    assert_null(arpc_future_data(f, NULL));
    arpc_future_release(f);
}

static void test_complete_does_not_run_cancel_hook(void **state)
{
    (void)state;
    atomic_int hook = 0;
    arpc_future *f = new_future();
    arpc_future_on_cancel(f, count_hook, &hook);
    assert_true(arpc_future_complete(f, ARPC_OK, NULL, 0));
    assert_false(arpc_future_cancel(f));
    arpc_future_release(f);
    assert_int_equal(0, atomic_load(&hook));
}

struct cancel_racer {
    arpc_future *f;
    bool won;
};

static void cancel_racer_step(void *arg)
{
    struct cancel_racer *r = arg;
    r->won = arpc_future_cancel(r->f);
    arpc_future_release(r->f); /* the racer's own reference */
}

static void test_cancel_races_complete(void **state)
{
    (void)state;
    struct cancel_racer r = {0};
    struct lockstep ls;
    lockstep_start(&ls, cancel_racer_step, &r);
    int cancel_wins = 0;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        atomic_int hook = 0;
        struct counter cb = {0};
        r.f = new_future();
        arpc_future_on_cancel(r.f, count_hook, &hook);
        assert_int_equal(ARPC_OK, arpc_future_then(r.f, count_cb, &cb));
        arpc_future_retain(r.f);
        pthread_barrier_wait(&ls.start); /* both threads go */
        bool completed = arpc_future_complete(r.f, ARPC_OK, buf_of("reply"), 6);
        pthread_barrier_wait(&ls.done);

        assert_true(completed != r.won); /* exactly one winner */
        assert_int_equal(1, atomic_load(&cb.calls));
        assert_int_equal(completed ? ARPC_OK : ARPC_ECANCELLED, arpc_future_poll(r.f));
        assert_int_equal(arpc_future_poll(r.f), cb.status);
        assert_int_equal(r.won ? 1 : 0, atomic_load(&hook));
        if (completed)
            assert_string_equal("reply", arpc_future_data(r.f, NULL));
        else
            assert_null(arpc_future_data(r.f, NULL));
        cancel_wins += r.won;
        arpc_future_release(r.f);
    }
    lockstep_stop(&ls);
    print_message("cancel won %d of %d races\n", cancel_wins, RACE_ROUNDS);
}

/* A callback that keeps the future alive past the release that cancelled it. */
static void keep_cb(arpc_future *f, void *arg)
{
    arpc_future_retain(f);
    *(arpc_future **)arg = f;
}

static void test_release_pending_cancels(void **state)
{
    (void)state;
    atomic_int hook = 0;
    struct counter cb = {0};
    arpc_future *kept = NULL;
    arpc_future *f = new_future();
    arpc_future_on_cancel(f, count_hook, &hook);
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, &cb));
    assert_int_equal(ARPC_OK, arpc_future_then(f, keep_cb, &kept));
    arpc_future_release(f);
    assert_int_equal(1, atomic_load(&cb.calls));
    assert_int_equal(ARPC_ECANCELLED, cb.status);
    assert_int_equal(1, atomic_load(&hook));
    assert_ptr_equal(f, kept);
    assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(kept));
    arpc_future_release(kept);

    /* Not the last reference: no cancel. */
    f = new_future();
    arpc_future_retain(f);
    arpc_future_release(f);
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(f));
    arpc_future_release(f);
}

/* ---- wait_all / wait_any ---- */

static void test_wait_all(void **state)
{
    (void)state;
    enum { N = 4 };
    arpc_future *fs[N];
    struct completer c[N];
    assert_int_equal(ARPC_OK, arpc_future_wait_all(NULL, 0, 0));
    for (int i = 0; i < N; i++)
        fs[i] = new_future();
    assert_int_equal(ARPC_EPENDING, arpc_future_wait_all(fs, N, 0));
    assert_int_equal(ARPC_EPENDING, arpc_future_wait_all(fs, N, 20));
    for (int i = 0; i < N; i++)
        completer_start(&c[i], fs[i], i == 2 ? ARPC_ETIMEDOUT : ARPC_OK, 5 * i, NULL);
    assert_int_equal(ARPC_OK, arpc_future_wait_all(fs, N, 10000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(i == 2 ? ARPC_ETIMEDOUT : ARPC_OK, arpc_future_poll(fs[i]));
        pthread_join(c[i].thread, NULL);
    }
    assert_int_equal(ARPC_OK, arpc_future_wait_all(fs, N, 0));

    /* One stays pending: times out. */
    arpc_future *g[2] = {new_future(), new_future()};
    assert_true(arpc_future_complete(g[0], ARPC_OK, NULL, 0));
    int64_t t0 = now_ms();
    assert_int_equal(ARPC_EPENDING, arpc_future_wait_all(g, 2, 25));
    assert_true(now_ms() - t0 >= 24);
    for (int i = 0; i < 2; i++)
        arpc_future_release(g[i]);
    for (int i = 0; i < N; i++)
        arpc_future_release(fs[i]);
}

static void test_wait_any(void **state)
{
    (void)state;
    enum { N = 4 };
    arpc_future *fs[N];
    size_t index = 99;
    for (int i = 0; i < N; i++)
        fs[i] = new_future();
    assert_int_equal(ARPC_EINVAL, arpc_future_wait_any(fs, 0, 0, &index));
    assert_int_equal(ARPC_EPENDING, arpc_future_wait_any(fs, N, 0, &index));
    int64_t t0 = now_ms();
    assert_int_equal(ARPC_EPENDING, arpc_future_wait_any(fs, N, 25, &index));
    assert_true(now_ms() - t0 >= 24);

    /* Completed by another thread while we sleep. */
    struct completer c;
    completer_start(&c, fs[2], ARPC_OK, 10, NULL);
    assert_int_equal(ARPC_OK, arpc_future_wait_any(fs, N, TEST_WAIT_MS, &index));
    assert_int_equal(2, index);
    pthread_join(c.thread, NULL);

    /* The lowest complete position wins. */
    assert_true(arpc_future_complete(fs[3], ARPC_OK, NULL, 0));
    assert_true(arpc_future_complete(fs[1], ARPC_OK, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_future_wait_any(fs, N, ARPC_FOREVER, &index));
    assert_int_equal(1, index);

    /* fs[0] is still pending and carries the callbacks of the waits above: releasing it
     * cancels it, which fires them and frees their waiters (ASan checks the leak). */
    for (int i = 0; i < N; i++)
        arpc_future_release(fs[i]);
}

static void test_wait_any_repeated_timeouts(void **state)
{
    (void)state;
    arpc_future *fs[2] = {new_future(), new_future()};
    size_t index = 99;
    for (int i = 0; i < 5; i++)
        assert_int_equal(ARPC_EPENDING, arpc_future_wait_any(fs, 2, 1, &index));
    struct completer c;
    completer_start(&c, fs[1], ARPC_OK, 0, NULL);
    assert_int_equal(ARPC_OK, arpc_future_wait_any(fs, 2, ARPC_FOREVER, &index));
    assert_int_equal(1, index);
    pthread_join(c.thread, NULL);
    arpc_future_release(fs[0]);
    arpc_future_release(fs[1]);
}

/* ---- out of memory ---- */

static void test_out_of_memory(void **state)
{
    (void)state;
    test_alloc_install();
    struct counter first = {0}, second = {0};
    arpc_future *f = new_future();
    arpc_future *g = new_future();
    size_t index = 99;
    arpc_future *both[2] = {g, f};

    atomic_store(&test_alloc_budget, 0);
    arpc_future *h = NULL;
    assert_int_equal(ARPC_ENOMEM, arpc_future_create(&h));
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, &first)); /* embedded node */
    assert_int_equal(ARPC_ENOMEM, arpc_future_then(f, count_cb, &second));
    assert_int_equal(ARPC_ENOMEM, arpc_future_wait_any(both, 2, 10, &index)); /* no waiter */
    /* The waiter is allocated and registers on g (embedded node), then f's node fails:
     * g keeps a reference to the waiter until it completes. */
    atomic_store(&test_alloc_budget, 1);
    assert_int_equal(ARPC_ENOMEM, arpc_future_wait_any(both, 2, 10, &index));
    atomic_store(&test_alloc_budget, -1);

    assert_true(arpc_future_complete(f, ARPC_OK, NULL, 0));
    assert_int_equal(1, atomic_load(&first.calls));
    assert_int_equal(0, atomic_load(&second.calls)); /* its then() failed: never runs */
    arpc_future_release(f);
    arpc_future_release(g); /* cancels g: frees the waiter (ASan checks) */
    arpc_alloc_replace(NULL);
}

/* ---- a producer's hold and the user's references (issue #10) ---- */

/* A then-callback that reads the result and keeps f (a reference of its own). */
struct reader {
    atomic_int calls;
    int status;
    char text[16];
    arpc_future *kept;
};

static void read_and_keep_cb(arpc_future *f, void *arg)
{
    struct reader *r = arg;
    r->status = arpc_future_poll(f);
    const char *d = arpc_future_data(f, NULL);
    if (d != NULL)
        strncpy(r->text, d, sizeof(r->text) - 1);
    arpc_future_retain(f);
    r->kept = f;
    atomic_fetch_add(&r->calls, 1);
}

/* A call's shape: the producer holds f, the user releases theirs while it is pending. That
 * does not cancel it (the producer goes on), and the producer's completion runs the user's
 * callback with a borrowed reference: it may read and retain f though no user holds one. */
static void test_producer_goes_on_after_user_release(void **state)
{
    (void)state;
    test_alloc_install();
    atomic_int hook = 0;
    struct reader r = {0};
    arpc_future *f = new_future();
    arpc_future_on_cancel(f, count_hook, &hook);
    arpc_future_hold(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, read_and_keep_cb, &r));
    arpc_future_release(f);
    assert_int_equal(0, atomic_load(&hook));
    assert_int_equal(0, atomic_load(&r.calls));

    assert_true(arpc_future_complete_drop(f, ARPC_OK, buf_of("late"), 5));
    assert_int_equal(1, atomic_load(&r.calls));
    assert_int_equal(ARPC_OK, r.status);
    assert_string_equal("late", r.text);
    assert_int_equal(0, atomic_load(&hook));
    assert_ptr_equal(f, r.kept);
    assert_string_equal("late", arpc_future_data(r.kept, NULL));
    arpc_future_release(r.kept); /* the last reference: frees f and "late" (no_leak checks) */
}

/* Completed after every user let go, with and without a callback: freed by the producer's
 * drop, its result too; a producer that loses to a cancel just drops its hold. */
static void test_completed_after_user_released(void **state)
{
    (void)state;
    test_alloc_install();
    arpc_future *f = new_future();
    arpc_future_hold(f);
    arpc_future_release(f);
    assert_true(arpc_future_complete_drop(f, ARPC_OK, buf_of("nobody"), 7));

    struct counter cb = {0};
    f = new_future();
    arpc_future_hold(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, count_cb, &cb));
    arpc_future_release(f);
    assert_true(arpc_future_complete_drop(f, ARPC_EHANDLER, buf_of("error text"), 11));
    assert_int_equal(1, atomic_load(&cb.calls));
    assert_int_equal(ARPC_EHANDLER, cb.status); /* count_cb polled f with no user left */

    f = new_future();
    arpc_future_hold(f);
    assert_true(arpc_future_cancel(f));
    arpc_future_release(f);
    assert_false(arpc_future_complete_drop(f, ARPC_OK, buf_of("lost"), 5));

    f = new_future(); /* a producer that lets go without completing: cancelled then freed */
    atomic_int hook = 0;
    arpc_future_on_cancel(f, count_hook, &hook);
    arpc_future_hold(f);
    arpc_future_release(f);
    assert_int_equal(0, atomic_load(&hook));
    arpc_future_drop(f);
    assert_int_equal(1, atomic_load(&hook));
}

/* A completion queue's kept reference: the user may release theirs at once (the queue keeps
 * f wanted: no cancel), and the taker gets a USER reference of their own. */
static void test_queue_keeps_and_hands_over(void **state)
{
    (void)state;
    test_alloc_install();
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    atomic_int hook = 0;
    arpc_future *f = new_future();
    arpc_future_on_cancel(f, count_hook, &hook);
    arpc_future_hold(f); /* the producer's */
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, &hook));
    arpc_future_release(f);
    assert_int_equal(0, atomic_load(&hook));
    assert_true(arpc_future_complete_drop(f, ARPC_OK, buf_of("queued"), 7));
    arpc_future *got = NULL;
    void *tag = NULL;
    assert_int_equal(ARPC_OK, arpc_cq_trynext(cq, &got, &tag));
    assert_ptr_equal(f, got);
    assert_ptr_equal(&hook, tag);
    assert_string_equal("queued", arpc_future_data(got, NULL));
    arpc_future_release(got);

    /* Destroyed with an entry still queued and one still pending: both freed in the end. */
    f = new_future();
    arpc_future *g = new_future();
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, f, NULL));
    assert_int_equal(ARPC_OK, arpc_cq_attach(cq, g, NULL));
    assert_true(arpc_future_complete(f, ARPC_OK, NULL, 0));
    arpc_future_hold(g);
    arpc_future_release(f);
    arpc_future_release(g);
    arpc_cq_destroy(cq);
    assert_true(arpc_future_complete_drop(g, ARPC_OK, NULL, 0));
    assert_int_equal(0, atomic_load(&hook));
}

/* A queue's kept references have a 16-bit field: arpc_future_keep refuses well short of it
 * (arpc_cq_attach's ARPC_EBUSY), and the user's count is untouched by the attempts. */
static void test_keep_bound(void **state)
{
    (void)state;
    test_alloc_install();
    arpc_future *f = new_future();
    unsigned kept = 0;
    while (kept < 70000 && arpc_future_keep(f))
        kept++;
    assert_int_equal(65279, kept);
    assert_int_equal(ARPC_EPENDING, arpc_future_poll(f)); /* still the user's, live */
    assert_true(arpc_future_complete(f, ARPC_OK, NULL, 0));
    arpc_future_release(f);
    for (unsigned i = 0; i < kept; i++)
        arpc_future_unkeep(f); /* the last frees it (no_leak checks) */
}

/* The user releases on one thread while the producer completes on another, with callbacks
 * that use f: whatever the interleaving, no callback finds its future dead, each runs once,
 * and f is freed once (TSan and ASan check the rest). */
struct race_side {
    arpc_future *f;
    pthread_barrier_t *go;
};

static void poll_cb(arpc_future *f, void *arg)
{
    CHECK(arpc_future_poll(f) == ARPC_OK);
    arpc_future_retain(f); /* and let go again: a retain with no user left is fine here */
    arpc_future_release(f);
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void *race_producer(void *arg)
{
    struct race_side *side = arg;
    pthread_barrier_wait(side->go);
    arpc_future_complete_drop(side->f, ARPC_OK, NULL, 0);
    return NULL;
}

static void test_user_release_races_producer(void **state)
{
    (void)state;
    test_alloc_install();
    enum { ROUNDS = RACE_ROUNDS / 10 };
    atomic_int runs = 0;
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    for (int i = 0; i < ROUNDS; i++) {
        arpc_future *f = new_future();
        arpc_future_hold(f);
        assert_int_equal(ARPC_OK, arpc_future_then(f, poll_cb, &runs));
        struct race_side side = {f, &go};
        pthread_t t;
        assert_int_equal(0, pthread_create(&t, NULL, race_producer, &side));
        pthread_barrier_wait(&go);
        arpc_future_release(f);
        pthread_join(t, NULL);
    }
    pthread_barrier_destroy(&go);
    assert_int_equal(ROUNDS, atomic_load(&runs));
    assert_int_equal(0, atomic_load(&bad_line));
}

/* ---- an embedded future (a producer's block) ---- */

/* A block holding a future and what its owner's hooks count. */
struct owned_block {
    arpc_future ob_future;
    int ob_cancels; /* the owner's cancel hook: calls */
    int ob_frees;   /* the owner's free function: calls */
};

static struct owned_block *block_of(arpc_future *f)
{
    return (struct owned_block *)((char *)f - offsetof(struct owned_block, ob_future));
}

static void owned_cancel(arpc_future *f, void *arg)
{
    assert_null(arg); /* the owner finds itself from f */
    block_of(f)->ob_cancels++;
}

static void owned_free(arpc_future *f) { block_of(f)->ob_frees++; }

static const struct arpc_future_owner test_owner = {.fo_on_cancel = owned_cancel, .fo_free = owned_free};

/* An embedded future's cancel hook is its owner's, from the start, run once with NULL for its
 * argument; arpc_future_on_cancel cannot replace it (logged, ignored). The last reference gives
 * the block back through the owner, never arpc_free (the blocks are on the stack here: ASan
 * would catch a free). */
static void test_embedded_owner_hooks(void **state)
{
    (void)state;
    struct owned_block b = {0};
    arpc_future_init_embedded(&b.ob_future, &test_owner);
    atomic_int other = 0;
    arpc_future_on_cancel(&b.ob_future, count_hook, &other); /* not the owner's: ignored */
    assert_true(arpc_future_cancel(&b.ob_future));
    assert_false(arpc_future_cancel(&b.ob_future));
    assert_int_equal(1, b.ob_cancels);
    assert_int_equal(0, atomic_load(&other));
    assert_int_equal(ARPC_ECANCELLED, arpc_future_wait(&b.ob_future));
    arpc_future_release(&b.ob_future);
    assert_int_equal(1, b.ob_frees);

    struct owned_block c = {0};
    arpc_future_init_embedded_held(&c.ob_future, &test_owner, 2);
    assert_true(arpc_future_complete_owned(&c.ob_future, ARPC_OK, NULL, 0));
    assert_false(arpc_future_cancel(&c.ob_future)); /* complete: no hook */
    assert_int_equal(0, c.ob_cancels);
    arpc_future_release(&c.ob_future);
    arpc_future_drop(&c.ob_future);
    assert_int_equal(0, c.ob_frees); /* a producer's hold is left */
    arpc_future_drop(&c.ob_future);
    assert_int_equal(1, c.ob_frees);
}

/* The owner's latch (arpc_future_owner_latch): of two threads that each set it once, exactly
 * one is told it was set already, round after round; it is a bit of the state word, so it
 * neither completes the future nor changes its status, and a waiter still gets the result. */
struct latch_racer {
    arpc_future *f;
    pthread_barrier_t *go;
    bool second;
};

static void *latch_race(void *arg)
{
    struct latch_racer *r = arg;
    pthread_barrier_wait(r->go);
    r->second = arpc_future_owner_latch(r->f);
    return NULL;
}

static void *wait_result(void *arg)
{
    intptr_t rc = arpc_future_wait(arg);
    return (void *)rc;
}

static void test_owner_latch(void **state)
{
    (void)state;
    enum { ROUNDS = 2000 };
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    for (int i = 0; i < ROUNDS; i++) {
        struct owned_block b = {0};
        arpc_future_init_embedded_held(&b.ob_future, &test_owner, 1);
        pthread_t waiter, other;
        assert_int_equal(0, pthread_create(&waiter, NULL, wait_result, &b.ob_future));
        struct latch_racer mine = {.f = &b.ob_future, .go = &go}, theirs = mine;
        assert_int_equal(0, pthread_create(&other, NULL, latch_race, &theirs));
        latch_race(&mine);
        pthread_join(other, NULL);
        assert_true(mine.second != theirs.second);
        assert_true(arpc_future_owner_latch(&b.ob_future)); /* stays set */
        assert_int_equal(ARPC_EPENDING, arpc_future_poll(&b.ob_future));
        assert_true(arpc_future_complete_drop(&b.ob_future, ARPC_EDECODE, NULL, 0));
        void *rc;
        pthread_join(waiter, &rc);
        assert_int_equal(ARPC_EDECODE, (intptr_t)rc);
        arpc_future_release(&b.ob_future);
        assert_int_equal(1, b.ob_frees);
    }
    pthread_barrier_destroy(&go);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_once),
        cmocka_unit_test(test_error_with_data_and_no_data),
        cmocka_unit_test(test_status_range),
        cmocka_unit_test(test_take),
        cmocka_unit_test(test_eight_waiters),
        cmocka_unit_test(test_timed_wait),
        cmocka_unit_test(test_then_before_and_after),
        cmocka_unit_test(test_then_inside_callback),
        cmocka_unit_test(test_then_races_complete),
        cmocka_unit_test(test_thens_race_for_the_embedded_slot),
        cmocka_unit_test(test_then_after_wait_runs_before_returning),
        cmocka_unit_test(test_cancel_idempotent),
        cmocka_unit_test(test_complete_does_not_run_cancel_hook),
        cmocka_unit_test(test_cancel_races_complete),
        cmocka_unit_test(test_release_pending_cancels),
        cmocka_unit_test(test_wait_all),
        cmocka_unit_test(test_wait_any),
        cmocka_unit_test(test_wait_any_repeated_timeouts),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test_no_leak(test_producer_goes_on_after_user_release),
        cmocka_unit_test_no_leak(test_completed_after_user_released),
        cmocka_unit_test_no_leak(test_queue_keeps_and_hands_over),
        cmocka_unit_test_no_leak(test_user_release_races_producer),
        cmocka_unit_test_no_leak(test_keep_bound),
        cmocka_unit_test_no_leak(test_embedded_owner_hooks),
        cmocka_unit_test_no_leak(test_owner_latch),
        cmocka_unit_test_no_leak(test_cancel_hook_releases_the_last_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
