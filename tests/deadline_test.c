/*
 * Deadlines: the heap on its own (against a reference order), then deadlines on a running
 * loop: 100k armed at random times fire in (time, arm order), exactly once, never early,
 * cancelled ones never; callbacks may arm and cancel; a loop that stops fires nothing more.
 *
 * Callbacks on the loop thread only record what they saw; the test thread asserts.
 */
#include <errno.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "arpc/alloc.h"
#include "arpc/error.h"
#include "arpc/loop.h"
#include "async/deadline_heap.h"
#include "async/loop_internal.h"
#include "support/test_util.h"

/* ---- small helpers ---- */

static void no_fire(struct arpc_deadline *d, void *arg)
{
    (void)d;
    (*(int *)arg)++;
}

/* Every slot knows its index and no child is earlier than its parent. */
static void assert_heap_ok(const struct arpc_deadline_heap *h)
{
    for (size_t i = 0; i < h->h_len; i++) {
        const struct arpc_deadline *d = h->h_items[i];
        assert_int_equal(i, d->d_index);
        if (i == 0)
            continue;
        const struct arpc_deadline *p = h->h_items[(i - 1) / 2];
        assert_true(p->d_when_ns < d->d_when_ns ||
                    (p->d_when_ns == d->d_when_ns && p->d_seq < d->d_seq));
    }
}

/* ---- the heap alone ---- */

struct ref_ent {
    struct arpc_deadline d;
    uint64_t when;
    uint64_t order; /* our own arm counter, independent of d_seq */
    bool armed;
};

static bool ref_before(const struct ref_ent *a, const struct ref_ent *b)
{
    return a->when != b->when ? a->when < b->when : a->order < b->order;
}

/* The earliest armed entry by linear scan, or NULL. */
static struct ref_ent *ref_min(struct ref_ent *e, size_t n)
{
    struct ref_ent *best = NULL;
    for (size_t i = 0; i < n; i++) {
        if (e[i].armed && (best == NULL || ref_before(&e[i], best)))
            best = &e[i];
    }
    return best;
}

static void test_heap_random_vs_reference(void **state)
{
    (void)state;
    enum { N = 600, OPS = 20000 };
    struct ref_ent *e = calloc(N, sizeof(*e));
    assert_non_null(e);
    struct arpc_deadline_heap h;
    arpc_deadline_heap_init(&h);
    int fired = 0;
    for (size_t i = 0; i < N; i++)
        arpc_deadline_init(&e[i].d, no_fire, &fired);
    uint64_t seed = 0x9e3779b97f4a7c15ull, order = 0;
    size_t armed = 0;
    for (int op = 0; op < OPS; op++) {
        struct ref_ent *x = &e[rng_next(&seed) % N];
        unsigned what = (unsigned)(rng_next(&seed) % 8);
        if (what == 0 && armed > 0) { /* pop the top: must be the reference minimum */
            struct ref_ent *m = ref_min(e, N);
            assert_ptr_equal(&m->d, arpc_deadline_heap_top(&h));
            arpc_deadline_heap_remove(&h, &m->d);
            m->armed = false;
            armed--;
        } else if (x->armed && what < 4) { /* remove from wherever it is */
            arpc_deadline_heap_remove(&h, &x->d);
            x->armed = false;
            armed--;
        } else { /* arm, or move when armed; a small time range makes many ties */
            x->when = rng_next(&seed) % 64;
            x->order = order++;
            armed += !x->armed;
            x->armed = true;
            assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &x->d, x->when));
        }
        assert_int_equal(armed, arpc_deadline_heap_len(&h));
        for (size_t i = 0; i < N; i++)
            assert_int_equal(e[i].armed, arpc_deadline_is_armed(&e[i].d));
        if (op % 64 == 0)
            assert_heap_ok(&h);
    }
    /* Drain: the heap's order must equal the reference sort, entry by entry. */
    while (armed > 0) {
        struct ref_ent *m = ref_min(e, N);
        assert_ptr_equal(&m->d, arpc_deadline_heap_top(&h));
        arpc_deadline_heap_remove(&h, &m->d);
        assert_false(arpc_deadline_is_armed(&m->d));
        m->armed = false;
        armed--;
    }
    assert_null(arpc_deadline_heap_top(&h));
    assert_int_equal(0, fired); /* the heap never calls anything */
    arpc_deadline_heap_fini(&h);
    free(e);
}

static void test_heap_remove_middle(void **state)
{
    (void)state;
    enum { N = 101 };
    struct arpc_deadline d[N];
    struct arpc_deadline_heap h;
    arpc_deadline_heap_init(&h);
    for (size_t i = 0; i < N; i++) {
        arpc_deadline_init(&d[i], no_fire, NULL);
        assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &d[i], (i * 37) % N));
    }
    /* Remove whatever sits in the middle slots, and one twice (the second is a no-op). */
    for (int k = 0; k < 20; k++) {
        struct arpc_deadline *mid = h.h_items[h.h_len / 2];
        arpc_deadline_heap_remove(&h, mid);
        assert_false(arpc_deadline_is_armed(mid));
        arpc_deadline_heap_remove(&h, mid);
        assert_heap_ok(&h);
    }
    assert_int_equal(N - 20, arpc_deadline_heap_len(&h));
    uint64_t last = 0;
    while (arpc_deadline_heap_top(&h) != NULL) {
        struct arpc_deadline *t = arpc_deadline_heap_top(&h);
        assert_true(t->d_when_ns >= last);
        last = t->d_when_ns;
        arpc_deadline_heap_remove(&h, t);
        assert_heap_ok(&h);
    }
    arpc_deadline_heap_fini(&h);
}

static void test_heap_move_armed(void **state)
{
    (void)state;
    struct arpc_deadline a, b, c;
    struct arpc_deadline_heap h;
    arpc_deadline_heap_init(&h);
    arpc_deadline_init(&a, no_fire, NULL);
    arpc_deadline_init(&b, no_fire, NULL);
    arpc_deadline_init(&c, no_fire, NULL);
    assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &a, 10));
    assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &b, 20));
    assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &c, 30));
    assert_ptr_equal(&a, arpc_deadline_heap_top(&h));

    assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &c, 5)); /* move up */
    assert_int_equal(3, arpc_deadline_heap_len(&h));
    assert_ptr_equal(&c, arpc_deadline_heap_top(&h));
    assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &c, 40)); /* move down */
    assert_ptr_equal(&a, arpc_deadline_heap_top(&h));
    /* A tie with b: the re-arm is the newer arm, so b goes first. */
    assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &a, 20));
    assert_ptr_equal(&b, arpc_deadline_heap_top(&h));
    assert_heap_ok(&h);

    struct arpc_deadline *want[] = {&b, &a, &c};
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(want[i], arpc_deadline_heap_top(&h));
        arpc_deadline_heap_remove(&h, want[i]);
    }
    arpc_deadline_heap_fini(&h);
}

static void test_heap_fini_unarms_and_enomem(void **state)
{
    (void)state;
    struct arpc_deadline d[40];
    struct arpc_deadline_heap h;
    arpc_deadline_heap_init(&h);
    for (size_t i = 0; i < 40; i++) {
        arpc_deadline_init(&d[i], no_fire, NULL);
        assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &d[i], 40 - i));
    }
    /* Growing past the capacity fails cleanly; moving an armed entry needs no memory. */
    struct arpc_deadline extra[40];
    atomic_store(&test_alloc_budget, 0); /* every allocation fails */
    int rc = ARPC_OK;
    size_t pushed = 0;
    for (size_t i = 0; i < 40 && rc == ARPC_OK; i++) {
        arpc_deadline_init(&extra[i], no_fire, NULL);
        rc = arpc_deadline_heap_push(&h, &extra[i], 1);
        pushed += rc == ARPC_OK;
    }
    assert_int_equal(ARPC_ENOMEM, rc);
    assert_false(arpc_deadline_is_armed(&extra[pushed]));
    assert_int_equal(40 + pushed, arpc_deadline_heap_len(&h));
    assert_int_equal(ARPC_OK, arpc_deadline_heap_push(&h, &d[0], 0));
    atomic_store(&test_alloc_budget, -1);
    assert_ptr_equal(&d[0], arpc_deadline_heap_top(&h));
    assert_heap_ok(&h);

    arpc_deadline_heap_fini(&h);
    for (size_t i = 0; i < 40; i++)
        assert_false(arpc_deadline_is_armed(&d[i]));
    for (size_t i = 0; i < pushed; i++)
        assert_false(arpc_deadline_is_armed(&extra[i]));
    assert_int_equal(0, arpc_deadline_heap_len(&h));
}

/* ---- 100k deadlines on a running loop ---- */

#define MANY_DEADLINES 100000
#define EXTRA_EVERY 1000 /* every Nth firing arms a deadline due now and cancels a later one */

struct many_ent {
    struct arpc_deadline d;
    struct many_ctx *ctx;
    uint64_t order;
    int fired;
    bool cancelled;
};

struct many_ctx {
    arpc_loop *loop;
    struct many_ent *ents; /* MANY_DEADLINES, then the extra ones */
    size_t n, n_extra, n_extra_cap;
    uint64_t next_order, rng;
    size_t cancelled, fired;
    /* what the callbacks saw; asserted on the test thread */
    size_t off_thread, early, out_of_order, still_armed, fired_cancelled, arm_failures;
    size_t count_after_arm, cancelled_at_arm;
    uint64_t last_when, last_order, max_late_ns, arm_end_ns;
    bool any_fired;
    sem_t armed, done;
};

static void many_arm(struct many_ctx *c, struct many_ent *e, uint64_t when)
{
    e->order = c->next_order++;
    c->arm_failures += arpc_deadline_arm(c->loop, &e->d, when) != ARPC_OK;
}

static void many_fire(struct arpc_deadline *d, void *arg)
{
    struct many_ent *e = arg;
    struct many_ctx *c = e->ctx;
    uint64_t now = arpc_now_ns();
    c->off_thread += !arpc_loop_on_thread(c->loop);
    c->early += now < d->d_when_ns;
    c->still_armed += arpc_deadline_is_armed(d);
    c->fired_cancelled += e->cancelled;
    if (c->any_fired && (d->d_when_ns < c->last_when ||
                         (d->d_when_ns == c->last_when && e->order <= c->last_order)))
        c->out_of_order++;
    if (d->d_when_ns > c->arm_end_ns && now - d->d_when_ns > c->max_late_ns)
        c->max_late_ns = now - d->d_when_ns;
    c->any_fired = true;
    c->last_when = d->d_when_ns;
    c->last_order = e->order;
    e->fired++;
    c->fired++;
    if (c->fired % EXTRA_EVERY == 0 && c->n_extra < c->n_extra_cap) {
        /* Callbacks may arm (here: already due) and cancel other deadlines. */
        many_arm(c, &c->ents[c->n + c->n_extra++], now);
        struct many_ent *victim = &c->ents[rng_next(&c->rng) % c->n];
        if (arpc_deadline_is_armed(&victim->d)) {
            arpc_deadline_cancel(c->loop, &victim->d);
            victim->cancelled = true;
            c->cancelled++;
        }
    }
    if (arpc_loop_deadline_count(c->loop) == 0)
        sem_post(&c->done);
}

static void many_task_arm(arpc_loop *loop, void *arg)
{
    struct many_ctx *c = arg;
    uint64_t t0 = arpc_now_ns();
    for (size_t i = 0; i < c->n; i++) /* 3000 slots of 100 us over 300 ms: many ties */
        many_arm(c, &c->ents[i], t0 + (rng_next(&c->rng) % 3000) * 100000u);
    for (size_t i = 0; i < c->n; i++) {
        if (rng_next(&c->rng) % 3 == 0) {
            arpc_deadline_cancel(loop, &c->ents[i].d);
            c->ents[i].cancelled = true;
            c->cancelled++;
        }
    }
    c->arm_end_ns = arpc_now_ns();
    c->cancelled_at_arm = c->cancelled;
    c->count_after_arm = arpc_loop_deadline_count(loop);
    sem_post(&c->armed);
}

static void test_loop_many_deadlines(void **state)
{
    (void)state;
    struct many_ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->n = MANY_DEADLINES;
    c->n_extra_cap = MANY_DEADLINES / EXTRA_EVERY + 1;
    c->ents = calloc(c->n + c->n_extra_cap, sizeof(*c->ents));
    assert_non_null(c->ents);
    c->rng = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < c->n + c->n_extra_cap; i++) {
        c->ents[i].ctx = c;
        arpc_deadline_init(&c->ents[i].d, many_fire, &c->ents[i]);
    }
    sem_init(&c->armed, 0, 0);
    sem_init(&c->done, 0, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&c->loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(c->loop));
    assert_int_equal(ARPC_OK, arpc_loop_submit(c->loop, many_task_arm, c));

    assert_true(sem_wait_secs(&c->armed, 20));
    assert_true(sem_wait_secs(&c->done, 20));
    arpc_loop_destroy(c->loop); /* joins the loop thread: everything below is settled */

    /* The heap held every armed deadline (behind the loop's one ev_timer: there is no other). */
    assert_int_equal(c->n - c->cancelled_at_arm, c->count_after_arm);
    assert_in_range(c->cancelled_at_arm, c->n / 4, c->n / 2);
    assert_int_equal(0, c->off_thread);
    assert_int_equal(0, c->early);
    assert_int_equal(0, c->out_of_order);
    assert_int_equal(0, c->still_armed);
    assert_int_equal(0, c->fired_cancelled);
    assert_int_equal(0, c->arm_failures);
    assert_true(c->n_extra > 0);
    size_t want_fired = 0;
    for (size_t i = 0; i < c->n + c->n_extra; i++) {
        assert_int_equal(c->ents[i].cancelled ? 0 : 1, c->ents[i].fired);
        want_fired += !c->ents[i].cancelled;
    }
    assert_int_equal(want_fired, c->fired);
    assert_int_equal(c->n + c->n_extra - c->cancelled, c->fired);
    print_message("%zu fired, %zu cancelled, %zu armed by callbacks; latest %.3f ms late\n",
                  c->fired, c->cancelled, c->n_extra, (double)c->max_late_ns / 1e6);
    sem_destroy(&c->armed);
    sem_destroy(&c->done);
    free(c->ents);
    free(c);
}

/* ---- smaller semantics on a running loop ---- */

struct small_ctx {
    arpc_loop *loop;
    struct arpc_deadline a, b, tick;
    uint64_t a_when;
    int a_fired, b_fired, ticks;
    size_t early;
    sem_t done;
};

static void small_a(struct arpc_deadline *d, void *arg)
{
    struct small_ctx *c = arg;
    c->a_fired++;
    c->early += arpc_now_ns() < c->a_when;
    (void)d;
}

static void small_b(struct arpc_deadline *d, void *arg)
{
    struct small_ctx *c = arg;
    (void)d;
    c->b_fired++;
}

/* Re-arms itself 1 ms ahead five times, then lets the test finish. */
static void small_tick(struct arpc_deadline *d, void *arg)
{
    struct small_ctx *c = arg;
    if (++c->ticks < 5)
        arpc_deadline_arm(c->loop, d, arpc_now_ns() + 1000000u);
    else
        sem_post(&c->done);
}

static void small_task(arpc_loop *loop, void *arg)
{
    struct small_ctx *c = arg;
    uint64_t now = arpc_now_ns();
    arpc_deadline_arm(loop, &c->a, now + 50000000u);
    arpc_deadline_arm(loop, &c->b, now + 5000000u);
    arpc_deadline_cancel(loop, &c->b); /* never fires */
    arpc_deadline_cancel(loop, &c->b); /* cancel twice: a no-op */
    c->a_when = now + 10000000u;
    arpc_deadline_arm(loop, &c->a, c->a_when); /* moved earlier: fires once, at 10 ms */
    arpc_deadline_arm(loop, &c->tick, c->a_when + 1000000u);
}

static void test_loop_cancel_move_rearm(void **state)
{
    (void)state;
    struct small_ctx c = {0};
    sem_init(&c.done, 0, 0);
    arpc_deadline_init(&c.a, small_a, &c);
    arpc_deadline_init(&c.b, small_b, &c);
    arpc_deadline_init(&c.tick, small_tick, &c);
    assert_int_equal(ARPC_OK, arpc_loop_create(&c.loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(c.loop));
    assert_int_equal(ARPC_OK, arpc_loop_submit(c.loop, small_task, &c));
    assert_true(sem_wait_secs(&c.done, 20));
    arpc_loop_destroy(c.loop);
    assert_int_equal(1, c.a_fired);
    assert_int_equal(0, c.b_fired);
    assert_int_equal(0, c.early);
    assert_int_equal(5, c.ticks);
    sem_destroy(&c.done);
}

/* A callback that re-arms itself in the past must not keep the loop from its other work. */
struct past_ctx {
    arpc_loop *loop;
    struct arpc_deadline d;
    int fires, fires_when_task_ran;
    sem_t done;
};

static void past_task(arpc_loop *loop, void *arg)
{
    struct past_ctx *c = arg;
    (void)loop;
    c->fires_when_task_ran = c->fires;
}

static void past_fire(struct arpc_deadline *d, void *arg)
{
    struct past_ctx *c = arg;
    if (++c->fires == 1)
        arpc_loop_submit(c->loop, past_task, c); /* from a callback: needs its own wake-up */
    if (c->fires < 1000)
        arpc_deadline_arm(c->loop, d, 0);
    else
        sem_post(&c->done);
}

static void past_start(arpc_loop *loop, void *arg)
{
    struct past_ctx *c = arg;
    arpc_deadline_arm(loop, &c->d, 0);
}

static void test_loop_rearm_in_past_no_livelock(void **state)
{
    (void)state;
    struct past_ctx c = {.fires_when_task_ran = -1};
    sem_init(&c.done, 0, 0);
    arpc_deadline_init(&c.d, past_fire, &c);
    assert_int_equal(ARPC_OK, arpc_loop_create(&c.loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(c.loop));
    assert_int_equal(ARPC_OK, arpc_loop_submit(c.loop, past_start, &c));
    assert_true(sem_wait_secs(&c.done, 20));
    arpc_loop_destroy(c.loop);
    assert_int_equal(1000, c.fires);
    /* The task submitted by the first firing ran within a couple of loop iterations. */
    assert_in_range(c.fires_when_task_ran, 1, 3);
    sem_destroy(&c.done);
}

/* Deadlines still armed when the loop stops never fire, and are left unarmed. */
struct stop_ctx {
    struct arpc_deadline d;
    int fired;
    sem_t armed;
};

static void stop_arm(arpc_loop *loop, void *arg)
{
    struct stop_ctx *c = arg;
    arpc_deadline_arm(loop, &c->d, arpc_now_ns() + 3600ull * 1000000000u);
    sem_post(&c->armed);
}

static void test_loop_stop_leaves_deadlines_unfired(void **state)
{
    (void)state;
    struct stop_ctx c = {0};
    sem_init(&c.armed, 0, 0);
    arpc_deadline_init(&c.d, no_fire, &c.fired);
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    assert_int_equal(ARPC_OK, arpc_loop_submit(loop, stop_arm, &c));
    assert_true(sem_wait_secs(&c.armed, 20));
    assert_true(arpc_deadline_is_armed(&c.d));
    arpc_loop_destroy(loop);
    assert_false(arpc_deadline_is_armed(&c.d));
    assert_int_equal(0, c.fired);
    sem_destroy(&c.armed);
}

int main(void)
{
    test_alloc_install(); /* every test ends with nothing outstanding */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_heap_random_vs_reference),
        cmocka_unit_test_no_leak(test_heap_remove_middle),
        cmocka_unit_test_no_leak(test_heap_move_armed),
        cmocka_unit_test_no_leak(test_heap_fini_unarms_and_enomem),
        cmocka_unit_test_no_leak(test_loop_many_deadlines),
        cmocka_unit_test_no_leak(test_loop_cancel_move_rearm),
        cmocka_unit_test_no_leak(test_loop_rearm_in_past_no_livelock),
        cmocka_unit_test_no_leak(test_loop_stop_leaves_deadlines_unfired),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
