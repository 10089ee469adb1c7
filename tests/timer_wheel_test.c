/*
 * The timing wheel on its own (async/timer_wheel.h), against a reference: nodes fire exactly
 * once, never before their time, all of them by the expire that reaches it, earlier
 * milliseconds first; across near slots, block and round boundaries (mid and far levels),
 * cursor jumps, removals, and callbacks that add and remove; arpc_wheel_next never later than
 * the earliest node. Nodes keep no time: the wheel asks the owner's (ent_time), for an armed
 * node only, once each time the node moves: once at each round start it waits through (the
 * far list sorted out) and once more (a mid slot poured into near).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "async/timer_wheel.h"
#include "support/test_util.h"

struct ent {
    struct arpc_wheel_node n;
    uint64_t when;
    bool armed;
    bool past; /* its time had passed when added: it fires at the cursor, before later ones */
    unsigned fired;
    unsigned moves; /* times the wheel asked for its time since it was added */
    uint64_t added; /* the cursor when it was added */
    uint64_t due;  /* when it may fire: its time, or for a past one the cursor's */
};

struct run {
    struct ent *e;
    size_t count;
    uint64_t now;       /* the expire under way */
    uint64_t last_when; /* the latest time fired so far */
    size_t fired;
    struct arpc_wheel *w;
    uint64_t *seed;     /* non-NULL: callbacks also add and remove */
};

static struct ent *ent_of(struct arpc_wheel_node *n) { return (struct ent *)((char *)n - offsetof(struct ent, n)); }

/* The wheel's time function: the owner's record of the node's time. */
static uint64_t ent_time(const struct arpc_wheel_node *n, void *arg)
{
    (void)arg;
    struct ent *x = ent_of((struct arpc_wheel_node *)n);
    assert_true(x->armed);
    assert_true(arpc_wheel_node_armed(n));
    /* Once a round start it waits through, once from mid to near. */
    assert_true(++x->moves <= 1 + (x->when >> 16) - (x->added >> 16));
    return x->when;
}

/* Adds x at its time (x->when). */
static uint64_t ent_add(struct arpc_wheel *w, struct ent *x)
{
    x->moves = 0;
    x->added = w->w_now;
    x->armed = true;
    return arpc_wheel_add(w, &x->n, x->when);
}

static void on_fire(struct arpc_wheel_node *n, void *arg)
{
    struct run *r = arg;
    struct ent *x = ent_of(n);
    assert_true(x->armed);
    assert_false(arpc_wheel_node_armed(n));
    assert_true(x->when <= r->now);        /* never early */
    if (!x->past) { /* earlier milliseconds first */
        assert_true(x->when >= r->last_when);
        r->last_when = x->when;
    }
    x->armed = false;
    x->fired++;
    r->fired++;
    if (r->seed != NULL) { /* rearrange others from inside the callback */
        struct ent *y = &r->e[rng_next(r->seed) % r->count];
        if (y->armed) {
            arpc_wheel_remove(r->w, &y->n);
            y->armed = false;
        } else {
            y->when = r->now + rng_next(r->seed) % 100000; /* never this expire: after now */
            y->when += y->when == r->now;
            y->past = false;
            y->due = y->when;
            y->fired = 0;
            (void)ent_add(r->w, y);
        }
    }
}

/* The earliest armed time, or UINT64_MAX. */
static uint64_t ref_min(const struct run *r)
{
    uint64_t m = UINT64_MAX;
    for (size_t i = 0; i < r->count; i++)
        if (r->e[i].armed && r->e[i].when < m)
            m = r->e[i].when;
    return m;
}

static size_t ref_armed(const struct run *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->count; i++)
        k += r->e[i].armed;
    return k;
}

/* Expires up to now and checks everything due fired and nothing else did. */
static void expire_to(struct arpc_wheel *w, struct run *r, uint64_t now)
{
    uint64_t next = arpc_wheel_next(w);
    uint64_t min = ref_min(r);
    if (min < w->w_now)
        min = w->w_now; /* a node added with a past time waits for the cursor */
    assert_true(next <= min); /* the owner's deadline never waits past a node */
    r->now = now;
    r->last_when = 0;
    (void)arpc_wheel_expire(w, now, on_fire, r);
    for (size_t i = 0; i < r->count; i++) {
        if (r->e[i].armed) /* everything due fired (callbacks add after now only) */
            assert_true(r->e[i].due > now || r->seed != NULL);
        assert_true(r->e[i].fired <= 1 || r->seed != NULL);
    }
    assert_int_equal(ref_armed(r), arpc_wheel_count(w));
}

static void random_run(uint64_t start, uint64_t spread, bool from_callbacks)
{
    enum { N = 3000 };
    struct ent *e = calloc(N, sizeof(*e));
    struct arpc_wheel *w = malloc(sizeof(*w));
    assert_non_null(e);
    assert_non_null(w);
    uint64_t seed = 0x2545f4914f6cdd1dull ^ spread, now = start;
    struct run r = {.e = e, .count = N, .w = w, .seed = from_callbacks ? &seed : NULL};
    arpc_wheel_init(w, now, ent_time, NULL);
    for (int round = 0; round < 200; round++) {
        for (int k = 0; k < 60; k++) {
            struct ent *x = &e[rng_next(&seed) % N];
            if (x->armed) {
                arpc_wheel_remove(w, &x->n);
                arpc_wheel_remove(w, &x->n); /* a second remove is a no-op */
                x->armed = false;
            } else {
                /* Some already past, most ahead: near, mid and far levels alike. */
                uint64_t back = rng_next(&seed) % 4 == 0 ? spread / 8 : 0;
                x->when = now + rng_next(&seed) % spread - (back < now ? back : now);
                x->past = x->when < w->w_now;
                x->fired = 0;
                x->due = x->past ? w->w_now : x->when;
                uint64_t need = ent_add(w, x);
                assert_true(need <= (x->when > now ? x->when : now + 1));
            }
        }
        /* Small steps, one at the exact next time, and long jumps over blocks and rounds. */
        switch (rng_next(&seed) % 4) {
        case 0:
            now += 1;
            break;
        case 1:
            now += rng_next(&seed) % 300;
            break;
        case 2: {
            uint64_t next = arpc_wheel_next(w);
            if (next != ARPC_WHEEL_NONE && next > now)
                now = next;
            break;
        }
        default:
            now += rng_next(&seed) % (spread / 2 + 1);
        }
        expire_to(w, &r, now);
    }
    r.seed = NULL;
    expire_to(w, &r, now + 10 * spread); /* everything left */
    assert_int_equal(0, arpc_wheel_count(w));
    assert_int_equal(ARPC_WHEEL_NONE, arpc_wheel_next(w));
    arpc_wheel_fini(w);
    free(w);
    free(e);
}

static void test_near_only(void **state)
{
    (void)state;
    random_run(1000, 200, false);
}

static void test_mid_and_far(void **state)
{
    (void)state;
    random_run(5, 300000, false); /* up to ~4.6 rounds ahead */
}

static void test_large_clock(void **state)
{
    (void)state;
    random_run(UINT64_C(1) << 40 | 0xfff7, 70000, false); /* starts 9 ms before a block */
}

static void test_callbacks_add_and_remove(void **state)
{
    (void)state;
    random_run(77, 20000, true);
}

/* One node per millisecond across two rounds, expired a millisecond at a time: each fires at
 * exactly its own millisecond, in order, across every slot and level boundary. */
static void test_every_millisecond_in_order(void **state)
{
    (void)state;
    enum { N = 140000 };
    struct ent *e = calloc(N, sizeof(*e));
    struct arpc_wheel *w = malloc(sizeof(*w));
    assert_non_null(e);
    assert_non_null(w);
    uint64_t start = 65536 - 300; /* a block, then a round, are crossed early */
    arpc_wheel_init(w, start, ent_time, NULL);
    for (size_t i = 0; i < N; i++) { /* in reverse: the order of arming does not matter */
        struct ent *x = &e[N - 1 - i];
        x->when = x->due = start + (N - 1 - i);
        (void)ent_add(w, x);
    }
    struct run r = {.e = e, .count = N, .w = w};
    for (uint64_t now = start; now < start + N; now++) {
        assert_int_equal(now, arpc_wheel_next(w));
        r.now = now;
        r.last_when = 0;
        assert_int_equal(1, arpc_wheel_expire(w, now, on_fire, &r));
        assert_int_equal(1, e[now - start].fired);
    }
    assert_int_equal(0, arpc_wheel_count(w));
    free(w);
    free(e);
}

/* A removed node never fires; fini leaves nodes unarmed; a past time fires at once. */
static void test_remove_fini_and_past(void **state)
{
    (void)state;
    struct arpc_wheel w;
    struct ent a = {0}, b = {0}, c = {0};
    arpc_wheel_init(&w, 100000, ent_time, NULL);
    a.when = 100010;
    b.when = 200000; /* far */
    c.when = 5;      /* long past */
    c.past = true;
    a.due = a.when;
    b.due = b.when;
    c.due = 100000;
    (void)ent_add(&w, &a);
    (void)ent_add(&w, &b);
    assert_int_equal(100000, ent_add(&w, &c));
    arpc_wheel_remove(&w, &a.n);
    a.armed = false;
    struct run r = {.e = &c, .count = 1, .now = 150000, .w = &w};
    assert_int_equal(1, arpc_wheel_expire(&w, 150000, on_fire, &r)); /* c only */
    assert_int_equal(1, c.fired);
    assert_int_equal(0, a.fired);
    assert_true(arpc_wheel_node_armed(&b.n));
    assert_true(arpc_wheel_next(&w) <= b.when);
    arpc_wheel_fini(&w);
    assert_false(arpc_wheel_node_armed(&b.n));
    assert_int_equal(0, arpc_wheel_count(&w));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_near_only),
        cmocka_unit_test(test_mid_and_far),
        cmocka_unit_test(test_large_clock),
        cmocka_unit_test(test_callbacks_add_and_remove),
        cmocka_unit_test(test_every_millisecond_in_order),
        cmocka_unit_test(test_remove_fini_and_past),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
