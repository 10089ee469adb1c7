/*
 * The loop's lane (arpc_loop_post and arpc_loop_submit, async/loop_lanes.c) and
 * arpc_loop_run_sync (async/loop_wait.c). loop_test.c covers submit's own contract (the bound,
 * stop and destroy); this file covers the lane's: FIFO per producer and exactly once under
 * many producers, for jobs, for tasks, and for both mixed on one lane (one order); jobs
 * posting jobs; posts and submits racing a stop (accepted => runs once, refused => never
 * runs); an unbounded lane on a loop nobody runs; and run_sync from every kind of thread and
 * loop state, and racing a stop.
 * Three regression tests guard bugs found here: run_sync's stopped-loop path running two fns
 * at once, and run_until missing a completion made in a prepare watcher or on another thread.
 *
 * Jobs record what they saw (CHECK, counters); the test thread asserts once they are done.
 */
#define _GNU_SOURCE
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

#include <cmocka.h>

#include <ev.h>

#include "arpc/error.h"
#include "arpc/loop.h"
#include "async/loop_impl.h"
#include "async/loop_internal.h"
#include "base/stack_fifo.h"
#include "support/test_util.h"

/* ---- jobs that carry their producer and sequence number ---- */

struct seq_job {
    struct arpc_loop_job sj_job;
    struct lanes *sj_lanes;
    unsigned sj_producer;
    uint32_t sj_seq;
    int sj_post_rc; /* what arpc_loop_post or arpc_loop_submit said (-1: never posted) */
    atomic_int sj_runs;
};

#define MAX_PRODUCERS 4

/* Producers, each posting its own array of jobs in sequence. */
struct lanes {
    arpc_loop *loop;
    struct seq_job *jobs[MAX_PRODUCERS];
    unsigned producers;
    uint32_t per_producer; /* jobs in each array (the last may be kept for after a stop) */
    enum { BY_POST, BY_SUBMIT, BY_BOTH } how; /* BY_BOTH: odd sequence numbers are submitted */
    bool stop_race;        /* producers stop at their first ESHUTDOWN, then post once more */
    sem_t stopped;         /* stop_race: the test has stopped the loop */
    /* loop thread only */
    uint32_t next_seq[MAX_PRODUCERS];
    long ran;
    long signal_at; /* post `reached` when ran gets there */
    bool self_stop; /* ... and stop the loop from that job */
    sem_t reached;
    arpc_future *all_ran; /* if set: completed when ran gets to signal_at */
};

static void lanes_init(struct lanes *l, unsigned producers, uint32_t per_producer)
{
    memset(l, 0, sizeof(*l));
    l->producers = producers;
    l->per_producer = per_producer;
    sem_init(&l->reached, 0, 0);
    sem_init(&l->stopped, 0, 0);
    for (unsigned p = 0; p < producers; p++) {
        l->jobs[p] = calloc(per_producer, sizeof(struct seq_job));
        assert_non_null(l->jobs[p]);
        for (uint32_t i = 0; i < per_producer; i++)
            l->jobs[p][i].sj_post_rc = -1;
    }
}

static void lanes_fini(struct lanes *l)
{
    for (unsigned p = 0; p < l->producers; p++)
        free(l->jobs[p]);
    sem_destroy(&l->reached);
    sem_destroy(&l->stopped);
}

/* On the loop thread: each producer's jobs arrive in sequence, each once. */
static void seq_job_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct seq_job *j = (struct seq_job *)job;
    struct lanes *l = j->sj_lanes;
    CHECK(arpc_loop_on_thread(loop));
    CHECK(j->sj_seq == l->next_seq[j->sj_producer]);
    l->next_seq[j->sj_producer] = j->sj_seq + 1;
    atomic_fetch_add_explicit(&j->sj_runs, 1, memory_order_relaxed);
    if (++l->ran == l->signal_at) {
        if (l->self_stop)
            arpc_loop_stop(loop);
        if (l->all_ran != NULL)
            arpc_future_complete(l->all_ran, ARPC_OK, NULL, 0);
        sem_post(&l->reached);
    }
}

/* The same record, submitted as a task instead of posted as a job. */
static void seq_task_run(arpc_loop *loop, void *arg) { seq_job_run(loop, arg); }

static int post_seq(struct lanes *l, unsigned p, uint32_t i)
{
    struct seq_job *j = &l->jobs[p][i];
    j->sj_lanes = l;
    j->sj_producer = p;
    j->sj_seq = i;
    arpc_loop_job_init(&j->sj_job, seq_job_run);
    if (l->how == BY_SUBMIT || (l->how == BY_BOTH && i % 2 == 1))
        j->sj_post_rc = arpc_loop_submit(l->loop, seq_task_run, j);
    else
        j->sj_post_rc = arpc_loop_post(l->loop, &j->sj_job);
    return j->sj_post_rc;
}

struct producer_arg {
    struct lanes *l;
    unsigned p;
};

static void *producer(void *arg)
{
    struct producer_arg *a = arg;
    struct lanes *l = a->l;
    uint32_t n = l->stop_race ? l->per_producer - 1 : l->per_producer;
    for (uint32_t i = 0; i < n; i++) {
        if (post_seq(l, a->p, i) != ARPC_OK && l->stop_race)
            break;
    }
    if (l->stop_race) {
        /* After the stop has returned, a post is refused (and never runs). */
        CHECK(sem_wait_secs(&l->stopped, 60));
        CHECK(post_seq(l, a->p, l->per_producer - 1) == ARPC_ESHUTDOWN);
    }
    return NULL;
}

static void run_producers(struct lanes *l, pthread_t *th, struct producer_arg *args)
{
    for (unsigned p = 0; p < l->producers; p++) {
        args[p] = (struct producer_arg){l, p};
        assert_int_equal(0, pthread_create(&th[p], NULL, producer, &args[p]));
    }
}

static void join_producers(struct lanes *l, pthread_t *th)
{
    for (unsigned p = 0; p < l->producers; p++)
        pthread_join(th[p], NULL);
}

/* After the loop is gone: every accepted job ran once, every refused one never; the loop
 * ran exactly the accepted ones. Returns how many were accepted. */
static long check_exactly_once(struct lanes *l)
{
    long accepted = 0;
    for (unsigned p = 0; p < l->producers; p++) {
        for (uint32_t i = 0; i < l->per_producer; i++) {
            const struct seq_job *j = &l->jobs[p][i];
            if (j->sj_post_rc == ARPC_OK) {
                accepted++;
                assert_int_equal(1, atomic_load(&j->sj_runs));
            } else {
                assert_true(j->sj_post_rc == ARPC_ESHUTDOWN || j->sj_post_rc == -1);
                assert_int_equal(0, atomic_load(&j->sj_runs));
            }
        }
    }
    assert_int_equal(accepted, l->ran);
    return accepted;
}

/* ---- FIFO per producer, exactly once ---- */

#define FIFO_PER_PRODUCER 200000

static void run_fifo_per_producer_exactly_once(int how)
{
    atomic_store(&bad_line, 0);
    struct lanes l;
    lanes_init(&l, 4, FIFO_PER_PRODUCER);
    l.how = how;
    l.signal_at = 4L * FIFO_PER_PRODUCER;
    assert_int_equal(ARPC_OK, arpc_loop_create(&l.loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(l.loop));
    pthread_t th[MAX_PRODUCERS];
    struct producer_arg args[MAX_PRODUCERS];
    run_producers(&l, th, args);
    join_producers(&l, th);
    assert_true(sem_wait_secs(&l.reached, 60));
    arpc_loop_destroy(l.loop);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(l.signal_at, check_exactly_once(&l));
    for (unsigned p = 0; p < l.producers; p++)
        assert_int_equal(FIFO_PER_PRODUCER, l.next_seq[p]);
    lanes_fini(&l);
}

static void test_fifo_per_producer_exactly_once(void **state)
{
    (void)state;
    run_fifo_per_producer_exactly_once(BY_POST);
}

/* Tasks ride the lane in nodes, bounded (the default 8192 here: producers meet it). */
static void test_submit_fifo_per_producer_exactly_once(void **state)
{
    (void)state;
    run_fifo_per_producer_exactly_once(BY_SUBMIT);
}

/* Jobs and tasks from one producer keep its order between them: one lane, one order. */
static void test_posts_and_submits_share_one_order(void **state)
{
    (void)state;
    run_fifo_per_producer_exactly_once(BY_BOTH);
}

/* ---- posts racing a stop ---- */

#define RACE_ROUNDS 40
#define RACE_JOBS 20000

/* Three producers post (or submit, or both) until refused while the loop is stopped after a
 * varying number of jobs, from the test thread or from a job: accepted => ran once (the final
 * drain included), refused => never ran; a post made after the stop returned is refused. */
static void test_posts_race_stop(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    long refused_total = 0;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        struct lanes l;
        lanes_init(&l, 3, RACE_JOBS + 1);
        l.how = round % 3; /* posts, submits, both */
        l.stop_race = true;
        l.signal_at = round % 4 == 0 ? 0 : 1 + (round * 331) % 5000;
        l.self_stop = round % 2;
        assert_int_equal(ARPC_OK, arpc_loop_create(&l.loop, NULL));
        assert_int_equal(ARPC_OK, arpc_loop_start(l.loop));
        pthread_t th[MAX_PRODUCERS];
        struct producer_arg args[MAX_PRODUCERS];
        run_producers(&l, th, args);
        if (l.signal_at > 0)
            assert_true(sem_wait_secs(&l.reached, 60));
        if (!l.self_stop || l.signal_at == 0)
            arpc_loop_stop(l.loop);
        for (unsigned p = 0; p < l.producers; p++)
            sem_post(&l.stopped);
        join_producers(&l, th);
        arpc_loop_destroy(l.loop); /* after the final drain */
        assert_int_equal(0, atomic_load(&bad_line));
        long accepted = check_exactly_once(&l);
        assert_true(accepted >= l.signal_at);
        for (unsigned p = 0; p < l.producers; p++)
            refused_total += l.jobs[p][RACE_JOBS].sj_post_rc == ARPC_ESHUTDOWN;
        lanes_fini(&l);
    }
    assert_int_equal(RACE_ROUNDS * 3, refused_total);
}

/* ---- a caller-driven loop: the lane has no bound ---- */

/* 100k jobs posted (from the test thread and two others) to a loop nobody runs, with a
 * submit bound of 16 (jobs do not count in it): none is refused, none runs until the test
 * drives the loop, then all run, once, in order. */
static void test_caller_driven_lane_unbounded(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    enum { PER = 100000 / 3 + 1 };
    struct lanes l;
    lanes_init(&l, 3, PER);
    l.signal_at = 3L * PER;
    assert_int_equal(ARPC_OK, arpc_future_create(&l.all_ran));
    arpc_loop_options o = {.submit_ring_size = 16};
    assert_int_equal(ARPC_OK, arpc_loop_create(&l.loop, &o));
    pthread_t th[MAX_PRODUCERS];
    struct producer_arg args[MAX_PRODUCERS];
    l.producers = 2; /* producers 0 and 1 on threads, 2 on this thread */
    run_producers(&l, th, args);
    for (uint32_t i = 0; i < PER; i++)
        assert_int_equal(ARPC_OK, post_seq(&l, 2, i));
    join_producers(&l, th);
    l.producers = 3;
    assert_int_equal(0, l.ran); /* nobody ran it */
    assert_int_equal(ARPC_OK, arpc_loop_run_until(l.loop, l.all_ran, ARPC_FOREVER));
    assert_int_equal(0, atomic_load(&bad_line));
    arpc_loop_destroy(l.loop);
    assert_int_equal(l.signal_at, check_exactly_once(&l));
    arpc_future_release(l.all_ran);
    lanes_fini(&l);
}

/* ---- a job that posts a job ---- */

struct chain {
    struct arpc_loop_job ch_job;
    struct arpc_loop_job ch_child;
    int parent_runs, child_runs, child_rc;
    int hops_left; /* the child re-posts itself this many times */
    int hops_run;
    bool child_ran_inside_parent;
    bool in_parent;
    sem_t done;
};

static void chain_child(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct chain *ch = (struct chain *)((char *)job - offsetof(struct chain, ch_child));
    CHECK(arpc_loop_on_thread(loop));
    if (ch->in_parent)
        ch->child_ran_inside_parent = true;
    ch->hops_run++;
    if (ch->hops_left-- > 0) {
        arpc_loop_job_init(&ch->ch_child, chain_child);
        CHECK(arpc_loop_post(loop, &ch->ch_child) == ARPC_OK);
        return;
    }
    ch->child_runs++;
    sem_post(&ch->done);
}

static void chain_parent(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct chain *ch = (struct chain *)job;
    ch->in_parent = true;
    ch->parent_runs++;
    arpc_loop_job_init(&ch->ch_child, chain_child);
    ch->child_rc = arpc_loop_post(loop, &ch->ch_child);
    CHECK(ch->hops_run == 0); /* not run inside the post */
    ch->in_parent = false;
}

/* A job posted by a job runs after it, once; a job that re-posts itself thousands of times
 * (more than one drain batch) runs every time, once. */
static void test_job_posts_job(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    static const int hops[] = {0, 1, 5000};
    for (size_t i = 0; i < sizeof(hops) / sizeof(hops[0]); i++) {
        struct chain ch = {.hops_left = hops[i]};
        sem_init(&ch.done, 0, 0);
        arpc_loop_job_init(&ch.ch_job, chain_parent);
        assert_int_equal(ARPC_OK, arpc_loop_post(loop, &ch.ch_job));
        assert_true(sem_wait_secs(&ch.done, 20));
        /* The loop wrote every field before its sem_post. */
        assert_int_equal(1, ch.parent_runs);
        assert_int_equal(ARPC_OK, ch.child_rc);
        assert_int_equal(1, ch.child_runs);
        assert_int_equal(hops[i] + 1, ch.hops_run);
        assert_false(ch.child_ran_inside_parent);
        sem_destroy(&ch.done);
    }
    arpc_loop_destroy(loop);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* ---- arpc_loop_run_sync ---- */

struct probe {
    int runs;
    pthread_t ran_on;
    bool on_thread; /* arpc_loop_on_thread(loop) inside fn */
    bool hook_ran_before; /* stopped loop: its final drain and hooks ran before fn */
    const bool *hook_flag;
    int nested_rc;
    struct probe *nested; /* run_sync'ed from inside fn */
    const int *before;    /* a counter that must be 1 by the time fn runs */
    bool before_ok;
};

static void probe_fn(arpc_loop *loop, void *arg)
{
    struct probe *p = arg;
    p->runs++;
    p->ran_on = pthread_self();
    p->on_thread = arpc_loop_on_thread(loop);
    if (p->hook_flag != NULL)
        p->hook_ran_before = *p->hook_flag;
    if (p->before != NULL)
        p->before_ok = *p->before == 1;
    if (p->nested != NULL) {
        p->nested_rc = arpc_loop_run_sync(loop, probe_fn, p->nested);
        CHECK(p->nested->runs == 1); /* inline: done when run_sync returns */
    }
}

struct counted_job {
    struct arpc_loop_job job; /* first: the job is the struct */
    int count;
};

static void count_job(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    ((struct counted_job *)job)->count++;
}

/* From another thread: fn runs on the loop thread and has finished when run_sync returns.
 * From the loop thread itself (fn calling run_sync): the inner fn runs inline. */
static void test_run_sync_started_loop(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    struct probe inner = {0};
    struct probe outer = {.nested = &inner, .nested_rc = -1};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, probe_fn, &outer));
    assert_int_equal(1, outer.runs);
    assert_true(outer.on_thread);
    assert_false(pthread_equal(outer.ran_on, pthread_self()));
    assert_int_equal(ARPC_OK, outer.nested_rc);
    assert_int_equal(1, inner.runs);
    assert_true(inner.on_thread);
    assert_true(pthread_equal(outer.ran_on, inner.ran_on));
    assert_false(arpc_loop_on_thread(loop));
    arpc_loop_destroy(loop);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* A loop nobody runs: the caller drives it, so fn runs on the calling thread, as the loop
 * thread, after the jobs posted before it. */
static void test_run_sync_caller_driven(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    struct counted_job cj = {.count = 0};
    arpc_loop_job_init(&cj.job, count_job);
    assert_int_equal(ARPC_OK, arpc_loop_post(loop, &cj.job));
    struct probe inner = {0};
    struct probe p = {.before = &cj.count, .nested = &inner};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, probe_fn, &p));
    assert_int_equal(1, p.runs);
    assert_true(p.on_thread);
    assert_true(pthread_equal(p.ran_on, pthread_self()));
    assert_true(p.before_ok); /* FIFO: the earlier job ran first */
    assert_int_equal(1, inner.runs);
    assert_false(arpc_loop_on_thread(loop)); /* given back */
    /* And again: the loop can be driven any number of times. */
    struct probe again = {0};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, probe_fn, &again));
    assert_int_equal(1, again.runs);
    assert_int_equal(1, cj.count);
    arpc_loop_destroy(loop);
    assert_int_equal(0, atomic_load(&bad_line));
}

static void set_flag_hook(arpc_loop *loop, void *arg)
{
    (void)loop;
    *(bool *)arg = true;
}

/* A stopped loop: run_sync waits until nothing runs the loop (its final drain and stop hooks
 * are done), then runs fn on the calling thread, as the loop thread, and says ESHUTDOWN. */
static void test_run_sync_stopped_loop(void **state)
{
    (void)state;
    for (int started = 0; started < 2; started++) {
        arpc_loop *loop;
        bool hooked = false;
        assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
        assert_int_equal(ARPC_OK, arpc_loop_on_stop(loop, set_flag_hook, &hooked));
        if (started)
            assert_int_equal(ARPC_OK, arpc_loop_start(loop));
        arpc_loop_stop(loop);
        struct probe p = {.hook_flag = &hooked};
        assert_int_equal(ARPC_ESHUTDOWN, arpc_loop_run_sync(loop, probe_fn, &p));
        assert_int_equal(1, p.runs);
        assert_true(p.on_thread);
        assert_true(pthread_equal(p.ran_on, pthread_self()));
        if (started)
            assert_true(p.hook_ran_before);
        assert_false(arpc_loop_on_thread(loop));
        arpc_loop_destroy(loop);
        assert_true(hooked);
    }
}

/* run_sync from several threads while the loop is stopped: fn runs exactly once either way;
 * ARPC_OK means it ran on the loop (its thread, or a caller driving it), ARPC_ESHUTDOWN on the
 * calling thread. On started and on caller-driven loops. */
#define SYNC_RACE_ROUNDS 60
#define SYNC_RACE_THREADS 3

struct sync_racer {
    arpc_loop *loop;
    pthread_barrier_t *go;
    struct probe probe;
    pthread_t self;
    int rc;
};

static void *sync_racer(void *arg)
{
    struct sync_racer *r = arg;
    r->self = pthread_self();
    pthread_barrier_wait(r->go);
    r->rc = arpc_loop_run_sync(r->loop, probe_fn, &r->probe);
    return NULL;
}

static void test_run_sync_races_stop(void **state)
{
    (void)state;
    int ok = 0, shut = 0;
    for (int round = 0; round < SYNC_RACE_ROUNDS; round++) {
        bool started = round % 2 == 0;
        arpc_loop *loop;
        assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
        pthread_t loop_thread = pthread_self();
        if (started) {
            assert_int_equal(ARPC_OK, arpc_loop_start(loop));
            struct probe first = {0};
            assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, probe_fn, &first));
            loop_thread = first.ran_on;
        }
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, SYNC_RACE_THREADS + 1);
        struct sync_racer r[SYNC_RACE_THREADS];
        pthread_t th[SYNC_RACE_THREADS];
        for (int i = 0; i < SYNC_RACE_THREADS; i++) {
            r[i] = (struct sync_racer){.loop = loop, .go = &go, .rc = -1};
            assert_int_equal(0, pthread_create(&th[i], NULL, sync_racer, &r[i]));
        }
        pthread_barrier_wait(&go);
        arpc_loop_stop(loop);
        for (int i = 0; i < SYNC_RACE_THREADS; i++)
            pthread_join(th[i], NULL);
        arpc_loop_destroy(loop);
        pthread_barrier_destroy(&go);
        for (int i = 0; i < SYNC_RACE_THREADS; i++) {
            assert_int_equal(1, r[i].probe.runs);
            assert_true(r[i].probe.on_thread);
            if (r[i].rc == ARPC_OK) {
                ok++;
                if (started)
                    assert_true(pthread_equal(loop_thread, r[i].probe.ran_on));
            } else {
                assert_int_equal(ARPC_ESHUTDOWN, r[i].rc);
                assert_true(pthread_equal(r[i].self, r[i].probe.ran_on));
                shut++;
            }
        }
    }
    assert_int_equal(SYNC_RACE_ROUNDS * SYNC_RACE_THREADS, ok + shut);
}

/* Regression: on a stopped loop, callers of arpc_loop_run_sync each run their fn on their own
 * thread "as the loop thread"; two must never do so at once (they touch the loop's objects:
 * e.g. two clients of one stopped loop closed from two threads edit its stop hooks). Found by
 * this test (dozens of overlaps in 20 rounds), fixed with a per-loop mutex on that path. */
#define EXCL_THREADS 4
#define EXCL_ROUNDS 20

static atomic_int excl_inside, excl_overlaps;

/* Loop work: one at a time. Stays inside for a while so that a second one would meet it. */
static void exclusive_fn(arpc_loop *loop, void *arg)
{
    (void)arg;
    CHECK(arpc_loop_on_thread(loop));
    if (atomic_fetch_add(&excl_inside, 1) != 0)
        atomic_fetch_add(&excl_overlaps, 1);
    for (int i = 0; i < 200; i++)
        sched_yield();
    atomic_fetch_sub(&excl_inside, 1);
}

struct excl_caller {
    arpc_loop *loop;
    pthread_barrier_t *go;
    int rc;
};

static void *excl_caller_main(void *p)
{
    struct excl_caller *e = p;
    pthread_barrier_wait(e->go);
    e->rc = arpc_loop_run_sync(e->loop, exclusive_fn, NULL);
    return NULL;
}

static void test_run_sync_stopped_loop_one_at_a_time(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    atomic_store(&excl_overlaps, 0);
    for (int round = 0; round < EXCL_ROUNDS; round++) {
        arpc_loop *loop;
        assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
        assert_int_equal(ARPC_OK, arpc_loop_start(loop));
        arpc_loop_stop(loop);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, EXCL_THREADS);
        struct excl_caller e[EXCL_THREADS];
        pthread_t th[EXCL_THREADS];
        for (int i = 0; i < EXCL_THREADS; i++) {
            e[i] = (struct excl_caller){.loop = loop, .go = &go, .rc = -1};
            assert_int_equal(0, pthread_create(&th[i], NULL, excl_caller_main, &e[i]));
        }
        for (int i = 0; i < EXCL_THREADS; i++) {
            pthread_join(th[i], NULL);
            assert_int_equal(ARPC_ESHUTDOWN, e[i].rc);
        }
        pthread_barrier_destroy(&go);
        arpc_loop_destroy(loop);
    }
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(0, atomic_load(&excl_overlaps));
}

/* ---- run_until and a completion before the poll ---- */

/* Long enough that only a missed wake-up reaches it; half of it still tells "at once" from "at
 * the timeout" (or from libev's longest poll, 59.743 s, which ends a missed wake-up's sleep by
 * itself) on a loaded machine. */
#define RUN_UNTIL_TIMEOUT_MS 60000

/* Regression: a future completed in a prepare watcher (libev runs them before it polls; a
 * connection flushes there, and may close and fail its calls there) must end
 * arpc_loop_run_until at once, not after its timeout (or never, with ARPC_FOREVER). Fixed
 * with a lowest-priority prepare watcher in the driver that breaks the iteration. */
static void complete_in_prepare(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)revents;
    ev_prepare_stop(ev, w);
    arpc_future_complete(w->data, ARPC_OK, NULL, 0);
}

static void start_prepare(arpc_loop *loop, void *w) { ev_prepare_start(arpc_loop_ev(loop), w); }

static void test_run_until_sees_completion_in_prepare(void **state)
{
    (void)state;
    arpc_loop *loop;
    arpc_future *f;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_future_create(&f));
    ev_prepare w;
    ev_prepare_init(&w, complete_in_prepare);
    w.data = f;
    /* Started in a job: it runs at the start of the next iteration, the one run_until makes. */
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, start_prepare, &w));
    int64_t t0 = now_ms();
    assert_int_equal(ARPC_OK, arpc_loop_run_until(loop, f, RUN_UNTIL_TIMEOUT_MS));
    assert_true(now_ms() - t0 < RUN_UNTIL_TIMEOUT_MS / 2); /* at once, not at the timeout */
    arpc_loop_destroy(loop);
    arpc_future_release(f);
}

/* Regression: a future completed by a thread other than the loop's must end
 * arpc_loop_run_until at once; nothing on the loop wakes it otherwise. Fixed with a waker
 * registered on the future (arpc's own futures complete on the loop and need none). */
struct offloop {
    arpc_loop *loop;
    arpc_future *f;
    int rc;
    sem_t started;
};

static void *offloop_driver(void *p)
{
    struct offloop *o = p;
    sem_post(&o->started);
    o->rc = arpc_loop_run_until(o->loop, o->f, RUN_UNTIL_TIMEOUT_MS);
    return NULL;
}

static void test_run_until_sees_completion_off_the_loop(void **state)
{
    (void)state;
    struct offloop o = {.rc = -1};
    sem_init(&o.started, 0, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&o.loop, NULL));
    assert_int_equal(ARPC_OK, arpc_future_create(&o.f));
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, offloop_driver, &o));
    assert_true(sem_wait_secs(&o.started, 60));
    sleep_ms(30); /* only so that the driver is asleep in the poll: the right outcome needs none */
    int64_t t0 = now_ms();
    arpc_future_complete(o.f, ARPC_OK, NULL, 0);
    pthread_join(th, NULL);
    assert_int_equal(ARPC_OK, o.rc);
    assert_true(now_ms() - t0 < RUN_UNTIL_TIMEOUT_MS / 2); /* at once, not at the timeout */
    arpc_loop_destroy(o.loop);
    arpc_future_release(o.f);
    sem_destroy(&o.started);
}


/* ---- a job the loop's thread posts itself from a read (arpc_loop_post_local) ---- */

/* A byte arrives on a pipe; its read callback (on the loop, outside any drain, as a client's
 * reply is read) posts jobs, and each job notes how many polls the loop had begun (prepare
 * watchers run just before each) and its place in the order. */
struct local_post {
    ev_io lp_io;
    ev_prepare lp_prepare;
    int lp_fd[2];
    unsigned lp_polls;           /* prepare watcher runs so far */
    unsigned lp_polls_at_read;
    bool lp_lane_first;          /* the read posts a lane job before the local one */
    struct arpc_loop_job lp_lane, lp_local, lp_after;
    unsigned lp_order[2], lp_ran; /* 1: lane job, 2: local job, 3: the lane job posted after */
    unsigned lp_polls_at_local;
    arpc_future *lp_done;
    arpc_loop *lp_loop;
};

static struct local_post *local_post_of(struct arpc_loop_job *job, size_t offset)
{
    return (struct local_post *)((char *)job - offset);
}

static void local_post_note(struct local_post *lp, unsigned which)
{
    CHECK(lp->lp_ran < 2);
    lp->lp_order[lp->lp_ran++] = which;
    if (lp->lp_ran == 2) /* each case posts two jobs */
        arpc_future_complete(lp->lp_done, ARPC_OK, NULL, 0);
}

static void local_post_lane(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    local_post_note(local_post_of(job, offsetof(struct local_post, lp_lane)), 1);
}

static void local_post_local(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct local_post *lp = local_post_of(job, offsetof(struct local_post, lp_local));
    lp->lp_polls_at_local = lp->lp_polls;
    local_post_note(lp, 2);
}

static void local_post_after(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    local_post_note(local_post_of(job, offsetof(struct local_post, lp_after)), 3);
}

static void local_post_count_poll(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)ev;
    (void)revents;
    ((struct local_post *)w->data)->lp_polls++;
}

static void local_post_read(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    struct local_post *lp = w->data;
    arpc_loop *loop = lp->lp_loop;
    char byte;
    CHECK(read(lp->lp_fd[0], &byte, 1) == 1);
    ev_io_stop(ev, w);
    lp->lp_polls_at_read = lp->lp_polls;
    if (lp->lp_lane_first)
        CHECK(arpc_loop_post(loop, &lp->lp_lane) == ARPC_OK);
    CHECK(arpc_loop_post_local(loop, &lp->lp_local) == ARPC_OK);
    if (!lp->lp_lane_first)
        CHECK(arpc_loop_post(loop, &lp->lp_after) == ARPC_OK);
}

static void local_post_watch(arpc_loop *loop, void *arg)
{
    struct local_post *lp = arg;
    ev_io_start(arpc_loop_ev(loop), &lp->lp_io);
    ev_prepare_start(arpc_loop_ev(loop), &lp->lp_prepare);
}

static void local_post_unwatch(arpc_loop *loop, void *arg)
{
    ev_prepare_stop(arpc_loop_ev(loop), &((struct local_post *)arg)->lp_prepare);
}

static void local_post_run(bool lane_first, struct local_post *lp)
{
    memset(lp, 0, sizeof(*lp));
    lp->lp_lane_first = lane_first;
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    lp->lp_loop = loop;
    assert_int_equal(ARPC_OK, arpc_future_create(&lp->lp_done));
    assert_int_equal(0, pipe(lp->lp_fd));
    ev_io_init(&lp->lp_io, local_post_read, lp->lp_fd[0], EV_READ);
    lp->lp_io.data = lp;
    ev_prepare_init(&lp->lp_prepare, local_post_count_poll);
    lp->lp_prepare.data = lp;
    arpc_loop_job_init(&lp->lp_lane, local_post_lane);
    arpc_loop_job_init(&lp->lp_local, local_post_local);
    arpc_loop_job_init(&lp->lp_after, local_post_after);
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, local_post_watch, lp));
    assert_int_equal(1, write(lp->lp_fd[1], "x", 1));
    assert_int_equal(ARPC_OK, arpc_loop_run_until(loop, lp->lp_done, RUN_UNTIL_TIMEOUT_MS));
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(loop, local_post_unwatch, lp));
    arpc_loop_destroy(loop);
    arpc_future_release(lp->lp_done);
    close(lp->lp_fd[0]);
    close(lp->lp_fd[1]);
}

/* Nothing waits on the lane: the job runs in the read's own iteration, no poll before it (a
 * post there woke the loop and ran it only after one more poll), and before a lane job the
 * read posted after it. */
static void test_post_local_runs_before_the_next_poll(void **state)
{
    (void)state;
    struct local_post lp;
    local_post_run(false, &lp);
    assert_int_equal(lp.lp_polls_at_read, lp.lp_polls_at_local);
    assert_int_equal(2, lp.lp_ran);
    assert_int_equal(2, lp.lp_order[0]);
    assert_int_equal(3, lp.lp_order[1]);
}

/* A job waits on the lane already: the local one runs after it, not before (a lazy job would
 * have overtaken it). */
static void test_post_local_keeps_behind_the_lane(void **state)
{
    (void)state;
    struct local_post lp;
    local_post_run(true, &lp);
    assert_int_equal(2, lp.lp_ran);
    assert_int_equal(1, lp.lp_order[0]);
    assert_int_equal(2, lp.lp_order[1]);
}

/* Posted from a prepare watcher, after the iteration's last check watcher and just before the
 * poll: nothing else is due, so a lazy job would wait in the poll until the timeout; it must
 * wake the loop as a post does, and run at once. */
struct local_in_prepare {
    ev_prepare lip_prepare;
    arpc_loop *lip_loop;
    struct arpc_loop_job lip_job;
    arpc_future *lip_done;
};

static void local_in_prepare_job(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct local_in_prepare *l =
        (struct local_in_prepare *)((char *)job - offsetof(struct local_in_prepare, lip_job));
    arpc_future_complete(l->lip_done, ARPC_OK, NULL, 0);
}

static void local_in_prepare_cb(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)revents;
    struct local_in_prepare *l = w->data;
    ev_prepare_stop(ev, w);
    CHECK(arpc_loop_post_local(l->lip_loop, &l->lip_job) == ARPC_OK);
}

static void local_in_prepare_start(arpc_loop *loop, void *arg)
{
    ev_prepare_start(arpc_loop_ev(loop), &((struct local_in_prepare *)arg)->lip_prepare);
}

static void test_post_local_from_a_prepare_watcher_wakes(void **state)
{
    (void)state;
    struct local_in_prepare l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(ARPC_OK, arpc_loop_create(&l.lip_loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(l.lip_loop));
    assert_int_equal(ARPC_OK, arpc_future_create(&l.lip_done));
    ev_prepare_init(&l.lip_prepare, local_in_prepare_cb);
    l.lip_prepare.data = &l;
    arpc_loop_job_init(&l.lip_job, local_in_prepare_job);
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(l.lip_loop, local_in_prepare_start, &l));
    /* Nothing else happens on this loop (its thread sleeps in its poll once the prepare
     * watcher has run): only the job's own wake-up ends the wait. */
    /* (Without its wake-up the job ran when libev's poll gave up on its own, after 59.7 s.) */
    assert_int_equal(ARPC_OK, arpc_future_wait_for(l.lip_done, RUN_UNTIL_TIMEOUT_MS / 2));
    arpc_loop_destroy(l.lip_loop);
    arpc_future_release(l.lip_done);
}

/* ---- a lazy job posted before a run_sync runs before its fn ---- */

/* arpc_server_stop's last step (step_last_replies) relies on it: a reply a worker posted
 * lazily (its stale arpc_loop_idle said the loop slept) before the stop's post must have run
 * once the step has. Here the lazy job is posted while a drain runs a lane job (after that
 * drain ran the lazy stack), and the run_sync's job is pushed before that lane job returns:
 * the same drain then takes the lane again and finds the sync job. */
struct lazy_order {
    struct arpc_loop_job lo_blocker; /* a lane job that holds the drain */
    struct arpc_loop_job lo_lazy;
    sem_t lo_in_blocker, lo_release;
    atomic_int lo_lazy_runs;
    int lo_lazy_runs_seen_by_sync; /* -1: the sync fn has not run */
    arpc_loop *lo_loop;
};

static void lazy_order_blocker(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct lazy_order *o = (struct lazy_order *)((char *)job - offsetof(struct lazy_order, lo_blocker));
    sem_post(&o->lo_in_blocker);
    CHECK(sem_wait_secs(&o->lo_release, 20));
}

static void lazy_order_lazy(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    struct lazy_order *o = (struct lazy_order *)((char *)job - offsetof(struct lazy_order, lo_lazy));
    atomic_fetch_add(&o->lo_lazy_runs, 1);
}

static void lazy_order_sync(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct lazy_order *o = arg;
    o->lo_lazy_runs_seen_by_sync = atomic_load(&o->lo_lazy_runs);
}

static void *lazy_order_syncer(void *arg)
{
    struct lazy_order *o = arg;
    arpc_loop_run_sync(o->lo_loop, lazy_order_sync, o);
    return NULL;
}

static void test_run_sync_after_lazy_posted_during_drain(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    struct lazy_order o = {.lo_lazy_runs_seen_by_sync = -1};
    sem_init(&o.lo_in_blocker, 0, 0);
    sem_init(&o.lo_release, 0, 0);
    assert_int_equal(ARPC_OK, arpc_loop_create(&o.lo_loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(o.lo_loop));
    arpc_loop_job_init(&o.lo_blocker, lazy_order_blocker);
    arpc_loop_job_init(&o.lo_lazy, lazy_order_lazy);
    assert_int_equal(ARPC_OK, arpc_loop_post(o.lo_loop, &o.lo_blocker));
    assert_true(sem_wait_secs(&o.lo_in_blocker, 20)); /* the drain ran the lazy stack already */
    assert_int_equal(ARPC_OK, arpc_loop_post_lazy(o.lo_loop, &o.lo_lazy));
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, lazy_order_syncer, &o));
    while (arpc_stack_is_empty(&o.lo_loop->l_lane)) /* the sync job is pushed, after the lazy one */
        sched_yield();
    sem_post(&o.lo_release);
    pthread_join(t, NULL);
    assert_int_equal(1, o.lo_lazy_runs_seen_by_sync);
    arpc_loop_destroy(o.lo_loop);
    assert_int_equal(1, atomic_load(&o.lo_lazy_runs));
    assert_int_equal(0, atomic_load(&bad_line));
    sem_destroy(&o.lo_in_blocker);
    sem_destroy(&o.lo_release);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_fifo_per_producer_exactly_once),
        cmocka_unit_test_no_leak(test_submit_fifo_per_producer_exactly_once),
        cmocka_unit_test_no_leak(test_posts_and_submits_share_one_order),
        cmocka_unit_test_no_leak(test_job_posts_job),
        cmocka_unit_test_no_leak(test_posts_race_stop),
        cmocka_unit_test_no_leak(test_caller_driven_lane_unbounded),
        cmocka_unit_test_no_leak(test_run_sync_started_loop),
        cmocka_unit_test_no_leak(test_run_sync_caller_driven),
        cmocka_unit_test_no_leak(test_run_sync_stopped_loop),
        cmocka_unit_test_no_leak(test_run_sync_races_stop),
        cmocka_unit_test_no_leak(test_run_sync_stopped_loop_one_at_a_time),
        cmocka_unit_test_no_leak(test_run_until_sees_completion_in_prepare),
        cmocka_unit_test_no_leak(test_run_until_sees_completion_off_the_loop),
        cmocka_unit_test_no_leak(test_run_sync_after_lazy_posted_during_drain),
        cmocka_unit_test_no_leak(test_post_local_runs_before_the_next_poll),
        cmocka_unit_test_no_leak(test_post_local_keeps_behind_the_lane),
        cmocka_unit_test_no_leak(test_post_local_from_a_prepare_watcher_wakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
