/*
 * Runs of posts into an actor (async/actor_internal.h: arpc_actor_reserve, then
 * arpc_actor_post_chain), the server loop's way of posting the requests of one read:
 * producers posting runs, mixed with single jobs, keep each producer's order, run each job
 * once and never hold more than the bound; a reservation near the bound gets what is left and
 * 0 at it, and places given back unused bring a room waiter's room back; producers posting
 * runs while the actor is stopped lose nothing and run nothing twice.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arpc/error.h"
#include "async/actor_internal.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define SCALE 10 /* TSan is ~10x slower: fewer iterations, same shape */
#else
#define SCALE 1
#endif

struct rec_job {
    struct arpc_actor_job rj_job; /* first: the job is the record */
    unsigned rj_producer;
    uint32_t rj_seq;
    bool rj_posted;
    atomic_int rj_ok, rj_cancelled;
};

static _Thread_local bool is_stopper;

/* Links jobs[from..to) oldest first, as arpc_actor_post_chain takes them; the run's first
 * job, or NULL for none. */
static struct arpc_actor_job *link_run(struct rec_job *jobs, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; i++)
        jobs[i].rj_job.aj_run_next = i + 1 < to ? &jobs[i + 1].rj_job : NULL;
    return from < to ? &jobs[from].rj_job : NULL;
}

/* ---- FIFO per producer, exactly once, the bound ---- */

enum { MIX_PRODUCERS = 4, MIX_PER = 200000 / SCALE, MIX_BOUND = 64, MIX_RUN = 16 };

static struct rec_job *mix_jobs[MIX_PRODUCERS];
static uint32_t mix_next[MIX_PRODUCERS]; /* the actor's only */
static long mix_started, mix_max_queued;  /* the actor's only */
static atomic_long mix_reserved;          /* places producers hold or used */

static void on_mix_job(arpc_actor *a, struct arpc_actor_job *job, int status)
{
    struct rec_job *j = (struct rec_job *)job;
    CHECK(status == ARPC_OK);
    CHECK(arpc_actor_on_thread(a));
    CHECK(j->rj_seq == mix_next[j->rj_producer]);
    mix_next[j->rj_producer] = j->rj_seq + 1;
    atomic_fetch_add(&j->rj_ok, 1);
    /* Places held (reserved, or posted and not started) never exceed the bound. */
    long queued = atomic_load(&mix_reserved) - ++mix_started;
    if (queued > mix_max_queued)
        mix_max_queued = queued;
}

struct producer {
    arpc_actor *a;
    unsigned p;
};

/* Runs of 1..MIX_RUN jobs on reserved places, some of the places given back unused; at the
 * bound, one job posted alone (it waits for room). */
static void *mix_producer(void *arg)
{
    struct producer *pr = arg;
    struct rec_job *jobs = mix_jobs[pr->p];
    uint32_t i = 0, round = 0;
    while (i < MIX_PER) {
        unsigned want = 1 + (round++ * 7) % MIX_RUN;
        /* Counted once reserved, before any of them is posted: the actor's count of places
         * held never misses a job posted and not started. */
        unsigned got = arpc_actor_reserve(pr->a, want);
        atomic_fetch_add(&mix_reserved, got);
        if (got == 0) {
            jobs[i].rj_producer = pr->p;
            jobs[i].rj_seq = i;
            arpc_actor_job_init(&jobs[i].rj_job, on_mix_job);
            CHECK(arpc_actor_post_job(pr->a, &jobs[i].rj_job, true) == ARPC_OK);
            atomic_fetch_add(&mix_reserved, 1); /* after: it may have waited for room */
            i++;
            continue;
        }
        uint32_t n = got - (round % 3 == 0 && got > 1 ? 1 : 0); /* now and then one unused */
        if (n > MIX_PER - i)
            n = MIX_PER - i;
        for (uint32_t k = i; k < i + n; k++) {
            jobs[k].rj_producer = pr->p;
            jobs[k].rj_seq = k;
            arpc_actor_job_init(&jobs[k].rj_job, on_mix_job);
        }
        struct arpc_actor_job *first = link_run(jobs, i, i + n);
        /* Uncounted before they go back: another producer may take them at once. */
        atomic_fetch_sub(&mix_reserved, got - n);
        CHECK(arpc_actor_post_chain(pr->a, first, got - n) == ARPC_OK);
        i += n;
    }
    return NULL;
}

static void test_runs_fifo_exactly_once_bounded(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    memset(mix_next, 0, sizeof(mix_next));
    mix_started = mix_max_queued = 0;
    atomic_store(&mix_reserved, 0);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = MIX_BOUND};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    pthread_t t[MIX_PRODUCERS];
    struct producer pr[MIX_PRODUCERS];
    for (unsigned p = 0; p < MIX_PRODUCERS; p++) {
        mix_jobs[p] = calloc(MIX_PER, sizeof(struct rec_job));
        assert_non_null(mix_jobs[p]);
        pr[p] = (struct producer){a, p};
        assert_int_equal(0, pthread_create(&t[p], NULL, mix_producer, &pr[p]));
    }
    for (unsigned p = 0; p < MIX_PRODUCERS; p++)
        pthread_join(t[p], NULL);
    arpc_actor_destroy(a);
    print_message("mailbox %d: at most %ld places held\n", MIX_BOUND, mix_max_queued);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_true(mix_max_queued <= MIX_BOUND);
    for (unsigned p = 0; p < MIX_PRODUCERS; p++) {
        assert_int_equal(MIX_PER, mix_next[p]);
        for (uint32_t i = 0; i < MIX_PER; i++)
            assert_int_equal(1, atomic_load(&mix_jobs[p][i].rj_ok));
        free(mix_jobs[p]);
    }
}

/* ---- reserving near the bound; places given back bring room back ---- */

enum { ROOM_BOUND = 8 };

static sem_t gate;

static void on_gate(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)arg;
    if (status != ARPC_OK)
        return;
    latch_add();
    sem_wait_secs(&gate, TEST_WAIT_S);
}

static void on_plain_job(arpc_actor *a, struct arpc_actor_job *job, int status)
{
    (void)a;
    struct rec_job *j = (struct rec_job *)job;
    if (status == ARPC_OK)
        atomic_fetch_add(&j->rj_ok, 1);
    else
        atomic_fetch_add(&j->rj_cancelled, 1);
}

struct probe {
    struct arpc_actor_room pr_room; /* first */
    atomic_int pr_fired;
    sem_t pr_ran;
};

static void on_probe(arpc_actor *a, struct arpc_actor_room *room, int status)
{
    (void)a;
    (void)status;
    struct probe *pr = (struct probe *)room;
    atomic_fetch_add(&pr->pr_fired, 1);
    sem_post(&pr->pr_ran);
}

static void test_reserve_at_bound_and_give_back(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    latch_reset();
    sem_init(&gate, 0, 0);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = ROOM_BOUND};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_gate, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* running, its place given back */

    assert_int_equal(5u, arpc_actor_reserve(a, 5));
    assert_int_equal(3u, arpc_actor_reserve(a, 5)); /* what is left */
    assert_int_equal(0u, arpc_actor_reserve(a, 1)); /* at the bound */
    struct rec_job one;
    memset(&one, 0, sizeof(one));
    arpc_actor_job_init(&one.rj_job, on_plain_job);
    assert_int_equal(ARPC_EAGAIN, arpc_actor_post_job(a, &one.rj_job, false));

    /* A room waiter armed at the bound runs once places reserved go back unused, with no job
     * started: the give-back plays the actor's part. */
    struct probe pr = {0};
    arpc_actor_room_init(&pr.pr_room, on_probe);
    sem_init(&pr.pr_ran, 0, 0);
    assert_int_equal(ARPC_OK, arpc_actor_on_room(a, &pr.pr_room));
    struct rec_job run[3];
    memset(run, 0, sizeof(run));
    for (int i = 0; i < 3; i++)
        arpc_actor_job_init(&run[i].rj_job, on_plain_job);
    /* 3 of the first 5 used, 2 given back: 6 held, over the low-water mark (4). */
    assert_int_equal(ARPC_OK, arpc_actor_post_chain(a, link_run(run, 0, 3), 2));
    assert_int_equal(ARPC_OK, arpc_actor_post_chain(a, NULL, 3)); /* the other 3 back: 3 held */
    sem_post(&gate); /* the actor runs the waiter after its take at the latest */
    assert_true(sem_wait_secs(&pr.pr_ran, TEST_WAIT_S));
    assert_int_equal(ARPC_OK, arpc_actor_post_job(a, &one.rj_job, false)); /* room indeed */
    arpc_actor_destroy(a);
    assert_int_equal(1, atomic_load(&pr.pr_fired));
    for (int i = 0; i < 3; i++)
        assert_int_equal(1, atomic_load(&run[i].rj_ok));
    assert_int_equal(1, atomic_load(&one.rj_ok));
    sem_destroy(&pr.pr_ran);
    sem_destroy(&gate);
}

/* ---- a job posted in a run, then alone ---- */

/* A job keeps its run's link after it ran (the server's request states are reused): posted
 * alone later, it runs alone, and the jobs it once led do not run again. */
static void test_job_of_a_run_posted_alone(void **state)
{
    (void)state;
    arpc_actor *a;
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, NULL));
    struct rec_job run[3];
    memset(run, 0, sizeof(run));
    for (int i = 0; i < 3; i++)
        arpc_actor_job_init(&run[i].rj_job, on_plain_job);
    assert_int_equal(3u, arpc_actor_reserve(a, 3));
    assert_int_equal(ARPC_OK, arpc_actor_post_chain(a, link_run(run, 0, 3), 0));
    assert_true(WAIT_UNTIL(atomic_load(&run[2].rj_ok) == 1));
    assert_int_equal(ARPC_OK, arpc_actor_post_job(a, &run[0].rj_job, false)); /* its link still set */
    assert_true(WAIT_UNTIL(atomic_load(&run[0].rj_ok) == 2));
    arpc_actor_destroy(a); /* every job posted has run: nothing is left to run twice */
    assert_int_equal(1, atomic_load(&run[1].rj_ok));
    assert_int_equal(1, atomic_load(&run[2].rj_ok));
}

/* ---- runs posted while the actor stops ---- */

enum { STOP_PRODUCERS = 3, STOP_JOBS = 20000 / SCALE, STOP_ROUNDS = 6, STOP_BOUND = 32 };

struct stop_producer {
    arpc_actor *a;
    struct rec_job *jobs;
    sem_t *started;
};

static void on_stop_job(arpc_actor *a, struct arpc_actor_job *job, int status)
{
    (void)a;
    struct rec_job *j = (struct rec_job *)job;
    if (status == ARPC_OK) {
        atomic_fetch_add(&j->rj_ok, 1);
    } else {
        CHECK(status == ARPC_ECANCELLED);
        CHECK(is_stopper);
        atomic_fetch_add(&j->rj_cancelled, 1);
    }
}

static void *stop_producer_main(void *arg)
{
    struct stop_producer *p = arg;
    uint32_t i = 0;
    bool told = false;
    while (i < STOP_JOBS) {
        if (!told && i >= STOP_JOBS / 8) {
            sem_post(p->started);
            told = true;
        }
        unsigned got = arpc_actor_reserve(p->a, 1 + i % 12);
        if (got == 0) { /* at the bound, or stopping: one job alone says which */
            arpc_actor_job_init(&p->jobs[i].rj_job, on_stop_job);
            int rc = arpc_actor_post_job(p->a, &p->jobs[i].rj_job, true);
            if (rc != ARPC_OK) {
                CHECK(rc == ARPC_ESHUTDOWN);
                break;
            }
            p->jobs[i++].rj_posted = true;
            continue;
        }
        uint32_t n = got < STOP_JOBS - i ? got : STOP_JOBS - i;
        for (uint32_t k = i; k < i + n; k++)
            arpc_actor_job_init(&p->jobs[k].rj_job, on_stop_job);
        int rc = arpc_actor_post_chain(p->a, link_run(p->jobs, i, i + n), got - n);
        if (rc != ARPC_OK) {
            CHECK(rc == ARPC_ESHUTDOWN);
            break;
        }
        for (uint32_t k = i; k < i + n; k++)
            p->jobs[k].rj_posted = true;
        i += n;
    }
    if (!told)
        sem_post(p->started);
    return NULL;
}

static void test_runs_racing_stop(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    for (int round = 0; round < STOP_ROUNDS; round++) {
        sem_t started;
        sem_init(&started, 0, 0);
        arpc_actor *a;
        arpc_actor_options o = {.mailbox_size = STOP_BOUND};
        assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
        struct stop_producer p[STOP_PRODUCERS];
        pthread_t t[STOP_PRODUCERS];
        for (int i = 0; i < STOP_PRODUCERS; i++) {
            p[i] = (struct stop_producer){a, calloc(STOP_JOBS, sizeof(struct rec_job)), &started};
            assert_non_null(p[i].jobs);
            assert_int_equal(0, pthread_create(&t[i], NULL, stop_producer_main, &p[i]));
        }
        for (int i = 0; i < STOP_PRODUCERS; i++)
            assert_true(sem_wait_secs(&started, TEST_WAIT_S));
        is_stopper = true;
        assert_int_equal(ARPC_OK, arpc_actor_stop(a, round % 2 ? ARPC_ACTOR_DISCARD : ARPC_ACTOR_DRAIN));
        is_stopper = false;
        for (int i = 0; i < STOP_PRODUCERS; i++)
            pthread_join(t[i], NULL);
        arpc_actor_destroy(a);
        assert_int_equal(0, atomic_load(&bad_line));
        for (int i = 0; i < STOP_PRODUCERS; i++) {
            for (uint32_t k = 0; k < STOP_JOBS; k++) {
                const struct rec_job *j = &p[i].jobs[k];
                int runs = atomic_load(&j->rj_ok) + atomic_load(&j->rj_cancelled);
                assert_int_equal(j->rj_posted ? 1 : 0, runs);
                if (round % 2 == 0) /* DRAIN: every accepted job ran */
                    assert_int_equal(j->rj_posted ? 1 : 0, atomic_load(&j->rj_ok));
            }
            free(p[i].jobs);
        }
        sem_destroy(&started);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_fifo_exactly_once_bounded),
        cmocka_unit_test(test_reserve_at_bound_and_give_back),
        cmocka_unit_test(test_job_of_a_run_posted_alone),
        cmocka_unit_test(test_runs_racing_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
