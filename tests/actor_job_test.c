/*
 * The actor's internal job API (async/actor_internal.h): jobs and public messages from 4
 * producers keep each producer's order and run once; without waiting, a post at the bound
 * gets ARPC_EAGAIN and a room waiter runs once room is back (at once when it already is, and
 * with ARPC_ESHUTDOWN at a stop); the actor's own posts never wait; and producers that pause
 * on EAGAIN and resume from their room waiter, racing a stop, lose nothing and run nothing
 * twice (a lost room wake-up would hang them: they wait for it with a time limit).
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

#include "arpc/error.h"
#include "async/actor_internal.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define SCALE 10 /* TSan is ~10x slower: fewer iterations, same shape */
#else
#define SCALE 1
#endif

/* ---- a job that records its runs ---- */

struct rec_job {
    struct arpc_actor_job rj_job; /* first: the job is the record */
    unsigned rj_producer;
    uint32_t rj_seq;
    int rj_rc; /* what the post said (-1: never posted) */
    atomic_int rj_ok, rj_cancelled;
};

static _Thread_local bool is_stopper;

/* ---- FIFO per producer, exactly once: jobs and messages mixed ---- */

enum { MIX_PRODUCERS = 4, MIX_PER = 200000 / SCALE, MIX_BOUND = 64 };

static struct rec_job *mix_jobs[MIX_PRODUCERS];
static uint32_t mix_next[MIX_PRODUCERS]; /* the actor's only */
static long mix_started, mix_max_queued;  /* the actor's only */
static atomic_long mix_accepted;

static void mix_consume(arpc_actor *a, struct rec_job *j, int status)
{
    CHECK(status == ARPC_OK);
    CHECK(arpc_actor_on_thread(a));
    CHECK(j->rj_seq == mix_next[j->rj_producer]);
    mix_next[j->rj_producer] = j->rj_seq + 1;
    atomic_fetch_add(&j->rj_ok, 1);
    long queued = atomic_load(&mix_accepted) - ++mix_started;
    if (queued > mix_max_queued)
        mix_max_queued = queued;
}

static void on_mix_job(arpc_actor *a, struct arpc_actor_job *job, int status)
{
    mix_consume(a, (struct rec_job *)job, status);
}

static void on_mix_msg(arpc_actor *a, void *arg, int status) { mix_consume(a, arg, status); }

struct producer {
    arpc_actor *a;
    unsigned p;
};

/* Even sequence numbers as jobs (waiting for room), odd ones as public messages. */
static void *mix_producer(void *arg)
{
    struct producer *pr = arg;
    for (uint32_t i = 0; i < MIX_PER; i++) {
        struct rec_job *j = &mix_jobs[pr->p][i];
        j->rj_producer = pr->p;
        j->rj_seq = i;
        arpc_actor_job_init(&j->rj_job, on_mix_job);
        j->rj_rc = i % 2 == 0 ? arpc_actor_post_job(pr->a, &j->rj_job, true)
                              : arpc_actor_post(pr->a, on_mix_msg, j);
        CHECK(j->rj_rc == ARPC_OK);
        atomic_fetch_add(&mix_accepted, 1);
    }
    return NULL;
}

static void test_jobs_and_messages_fifo_exactly_once(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    memset(mix_next, 0, sizeof(mix_next));
    mix_started = mix_max_queued = 0;
    atomic_store(&mix_accepted, 0);
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
    print_message("mailbox %d: at most %ld queued\n", MIX_BOUND, mix_max_queued);
    assert_int_equal(0, atomic_load(&bad_line));
    assert_true(mix_max_queued <= MIX_BOUND);
    for (unsigned p = 0; p < MIX_PRODUCERS; p++) {
        assert_int_equal(MIX_PER, mix_next[p]);
        for (uint32_t i = 0; i < MIX_PER; i++)
            assert_int_equal(1, atomic_load(&mix_jobs[p][i].rj_ok));
        free(mix_jobs[p]);
    }
}

/* ---- EAGAIN at the bound, and room waiters ---- */

enum { ROOM_BOUND = 8, ROOM_LOW = 4 };

static sem_t room_gate;
static atomic_long room_accepted, room_started;

static void on_gate(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)arg;
    if (status != ARPC_OK)
        return;
    latch_add();
    sem_wait_secs(&room_gate, TEST_WAIT_S);
}

static void on_room_job(arpc_actor *a, struct arpc_actor_job *job, int status)
{
    (void)a;
    struct rec_job *j = (struct rec_job *)job;
    if (status == ARPC_OK) {
        atomic_fetch_add(&room_started, 1);
        atomic_fetch_add(&j->rj_ok, 1);
        latch_add(); /* after the gate's count */
    } else {
        CHECK(status == ARPC_ECANCELLED);
        CHECK(is_stopper);
        atomic_fetch_add(&j->rj_cancelled, 1);
    }
}

struct probe {
    struct arpc_actor_room pr_room; /* first: the room is the probe */
    atomic_int pr_fired;
    atomic_int pr_status;
    atomic_bool pr_on_actor;
    atomic_bool pr_low; /* fewer than ROOM_LOW accepted and not started when it ran */
    sem_t pr_ran;
};

static void on_probe(arpc_actor *a, struct arpc_actor_room *room, int status)
{
    struct probe *pr = (struct probe *)room;
    atomic_store(&pr->pr_status, status);
    atomic_store(&pr->pr_on_actor, arpc_actor_on_thread(a));
    atomic_store(&pr->pr_low, atomic_load(&room_accepted) - atomic_load(&room_started) < ROOM_LOW);
    atomic_fetch_add(&pr->pr_fired, 1);
    sem_post(&pr->pr_ran); /* the last touch: the probe is its owner's again */
}

static void probe_init(struct probe *pr)
{
    memset(pr, 0, sizeof(*pr));
    arpc_actor_room_init(&pr->pr_room, on_probe);
    sem_init(&pr->pr_ran, 0, 0);
}

static void probe_fini(struct probe *pr) { sem_destroy(&pr->pr_ran); }

/* Waits for the waiter to run. */
static bool probe_wait(struct probe *pr) { return sem_wait_secs(&pr->pr_ran, TEST_WAIT_S); }

/* A fresh actor with a mailbox of ROOM_BOUND, and the counters reset. */
static arpc_actor *room_actor_create(void)
{
    atomic_store(&bad_line, 0);
    latch_reset();
    sem_init(&room_gate, 0, 0);
    atomic_store(&room_accepted, 0);
    atomic_store(&room_started, 0);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = ROOM_BOUND};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    return a;
}

/* Holds the actor in a gate message, then posts jobs without waiting until EAGAIN: exactly
 * ROOM_BOUND are accepted (the gate's place came back as it started). Returns the jobs. */
static struct rec_job *fill_behind_gate(arpc_actor *a)
{
    struct rec_job *jobs = calloc(ROOM_BOUND + 1, sizeof(*jobs));
    assert_non_null(jobs);
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_gate, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* it runs, alone in its take */
    int rc = ARPC_OK;
    unsigned n = 0;
    while (n <= ROOM_BOUND) {
        arpc_actor_job_init(&jobs[n].rj_job, on_room_job);
        jobs[n].rj_rc = rc = arpc_actor_post_job(a, &jobs[n].rj_job, false);
        if (rc != ARPC_OK)
            break;
        atomic_fetch_add(&room_accepted, 1);
        n++;
    }
    assert_int_equal(ARPC_EAGAIN, rc);
    assert_int_equal(ROOM_BOUND, n);
    return jobs;
}

static void test_eagain_at_bound_then_room(void **state)
{
    (void)state;
    arpc_actor *a = room_actor_create();
    struct rec_job *jobs = fill_behind_gate(a);
    struct rec_job extra;
    memset(&extra, 0, sizeof(extra));
    arpc_actor_job_init(&extra.rj_job, on_room_job);
    assert_int_equal(ARPC_EAGAIN, arpc_actor_post_job(a, &extra.rj_job, false)); /* still */

    /* Armed while the mailbox is full: does not run until the actor makes room. */
    struct probe full;
    probe_init(&full);
    assert_int_equal(ARPC_OK, arpc_actor_on_room(a, &full.pr_room));
    sleep_ms(30); /* only lets a wrong early run show: the right outcome needs none */
    assert_int_equal(0, atomic_load(&full.pr_fired));
    sem_post(&room_gate);
    assert_true(probe_wait(&full));
    assert_int_equal(ARPC_OK, atomic_load(&full.pr_status));
    assert_true(atomic_load(&full.pr_on_actor));
    assert_true(atomic_load(&full.pr_low));

    /* Armed once room is back: runs at once, on the actor's thread, even though nothing else
     * will wake the actor (the sleep only makes it likely that it sleeps by then). */
    assert_true(latch_wait(1 + ROOM_BOUND, TEST_WAIT_MS)); /* the gate, then every job */
    sleep_ms(20); /* only so that the actor is likely asleep: the right outcome needs none */
    struct probe late;
    probe_init(&late);
    assert_int_equal(ARPC_OK, arpc_actor_on_room(a, &late.pr_room));
    assert_true(probe_wait(&late));
    assert_int_equal(ARPC_OK, atomic_load(&late.pr_status));
    assert_true(atomic_load(&late.pr_on_actor));
    assert_int_equal(ARPC_OK, arpc_actor_post_job(a, &extra.rj_job, false)); /* room indeed */

    arpc_actor_destroy(a);
    /* Each ran once. */
    assert_int_equal(1, atomic_load(&full.pr_fired));
    assert_int_equal(1, atomic_load(&late.pr_fired));
    probe_fini(&full);
    probe_fini(&late);
    for (unsigned i = 0; i < ROOM_BOUND; i++)
        assert_int_equal(1, atomic_load(&jobs[i].rj_ok));
    assert_int_equal(1, atomic_load(&extra.rj_ok));
    assert_int_equal(0, atomic_load(&bad_line));
    free(jobs);
    sem_destroy(&room_gate);
}

/* Armed on a full mailbox, then the actor is stopped (DISCARD): the jobs are cancelled, the
 * waiter runs once with ARPC_ESHUTDOWN on the stopping thread; afterwards posting and arming
 * are refused. */
struct stopper {
    arpc_actor *a;
    int rc;
};

static void *stopper_main(void *arg)
{
    struct stopper *s = arg;
    is_stopper = true;
    s->rc = arpc_actor_stop(s->a, ARPC_ACTOR_DISCARD);
    return NULL;
}

static void test_room_waiter_at_stop(void **state)
{
    (void)state;
    arpc_actor *a = room_actor_create();
    struct rec_job *jobs = fill_behind_gate(a);
    struct probe pr;
    probe_init(&pr);
    assert_int_equal(ARPC_OK, arpc_actor_on_room(a, &pr.pr_room));
    struct stopper s = {a, -1};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, stopper_main, &s));
    /* Release the gate once the stop has begun (posts are refused): DISCARD is set by then. */
    struct arpc_actor_job *spare = &jobs[ROOM_BOUND].rj_job;
    int rc;
    assert_true(WAIT_UNTIL((rc = arpc_actor_post_job(a, spare, false)) != ARPC_EAGAIN));
    assert_int_equal(ARPC_ESHUTDOWN, rc);
    sem_post(&room_gate);
    pthread_join(t, NULL);
    assert_int_equal(ARPC_OK, s.rc);
    assert_int_equal(1, atomic_load(&pr.pr_fired));
    assert_int_equal(ARPC_ESHUTDOWN, atomic_load(&pr.pr_status));
    assert_false(atomic_load(&pr.pr_on_actor));
    for (unsigned i = 0; i < ROOM_BOUND; i++) {
        assert_int_equal(0, atomic_load(&jobs[i].rj_ok));
        assert_int_equal(1, atomic_load(&jobs[i].rj_cancelled));
    }
    struct probe after;
    probe_init(&after);
    assert_int_equal(ARPC_ESHUTDOWN, arpc_actor_on_room(a, &after.pr_room));
    assert_int_equal(ARPC_ESHUTDOWN, arpc_actor_post_job(a, &jobs[ROOM_BOUND].rj_job, false));
    assert_int_equal(ARPC_ESHUTDOWN, arpc_actor_post_job(a, &jobs[ROOM_BOUND].rj_job, true));
    arpc_actor_destroy(a);
    assert_int_equal(0, atomic_load(&after.pr_fired));
    assert_int_equal(0, atomic_load(&jobs[ROOM_BOUND].rj_ok));
    probe_fini(&pr);
    probe_fini(&after);
    assert_int_equal(0, atomic_load(&bad_line));
    free(jobs);
    sem_destroy(&room_gate);
}

/* ---- the actor's own posts never wait ---- */

enum { OWN_BOUND = 4, OWN_POSTS = 10 * OWN_BOUND };

static struct rec_job own_jobs[OWN_POSTS];
static atomic_int own_refused, own_msgs;

static void on_own_msg(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)arg;
    if (status == ARPC_OK)
        atomic_fetch_add(&own_msgs, 1);
}

static void on_own_spawner(arpc_actor *a, void *arg, int status)
{
    (void)arg;
    (void)status;
    for (int i = 0; i < OWN_POSTS; i++) {
        arpc_actor_job_init(&own_jobs[i].rj_job, on_room_job);
        if (arpc_actor_post_job(a, &own_jobs[i].rj_job, false) != ARPC_OK)
            atomic_fetch_add(&own_refused, 1);
        if (arpc_actor_post(a, on_own_msg, NULL) != ARPC_OK)
            atomic_fetch_add(&own_refused, 1);
    }
    latch_add();
}

static void test_own_posts_never_wait(void **state)
{
    (void)state;
    latch_reset();
    memset(own_jobs, 0, sizeof(own_jobs));
    atomic_store(&own_refused, 0);
    atomic_store(&own_msgs, 0);
    arpc_actor *a;
    arpc_actor_options o = {.mailbox_size = OWN_BOUND};
    assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
    assert_int_equal(ARPC_OK, arpc_actor_post(a, on_own_spawner, NULL));
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* 20 times the bound, neither refused nor waiting */
    arpc_actor_destroy(a);
    assert_int_equal(0, atomic_load(&own_refused));
    assert_int_equal(OWN_POSTS, atomic_load(&own_msgs));
    for (int i = 0; i < OWN_POSTS; i++)
        assert_int_equal(1, atomic_load(&own_jobs[i].rj_ok));
}

/* ---- pausing on EAGAIN, resuming from a room waiter, racing a stop ----
 * Producers post jobs without waiting; on EAGAIN each arms its own waiter and waits for it
 * (as the server's loop would pause reading), then retries; on ESHUTDOWN it stops. The test
 * stops the actor (DRAIN or DISCARD) after some jobs ran. Accepted jobs run exactly once (or
 * are cancelled once), refused ones never; every waiter armed runs exactly once. */

enum { PAUSE_ROUNDS = 16, PAUSE_PRODUCERS = 3, PAUSE_JOBS = 20000 / SCALE, PAUSE_BOUND = 16 };

struct pauser {
    arpc_actor *a;
    struct rec_job *jobs;
    struct probe room;
    int armed, fired_ok, fired_shut, lost; /* the producer's own */
};

static atomic_long pause_ran;
static long pause_stop_at;
static sem_t pause_reached;

static void on_pause_job(arpc_actor *a, struct arpc_actor_job *job, int status)
{
    on_room_job(a, job, status);
    if (status == ARPC_OK && atomic_fetch_add(&pause_ran, 1) + 1 == pause_stop_at)
        sem_post(&pause_reached);
    if (status == ARPC_OK && ((struct rec_job *)job)->rj_seq % 97 == 0)
        sched_yield(); /* a slow one now and then: the mailbox fills */
}

static void *pause_producer(void *arg)
{
    struct pauser *p = arg;
    for (uint32_t i = 0; i < PAUSE_JOBS; i++) {
        struct rec_job *j = &p->jobs[i];
        j->rj_seq = i;
        arpc_actor_job_init(&j->rj_job, on_pause_job);
        int rc;
        while ((rc = arpc_actor_post_job(p->a, &j->rj_job, false)) == ARPC_EAGAIN) {
            probe_init(&p->room);
            if (arpc_actor_on_room(p->a, &p->room.pr_room) != ARPC_OK) {
                probe_fini(&p->room);
                continue; /* refused: the actor is stopping, and the next post says so */
            }
            p->armed++;
            bool ran = probe_wait(&p->room);
            probe_fini(&p->room);
            if (!ran) {
                p->lost++; /* a room wake-up never came */
                return NULL;
            }
            if (atomic_load(&p->room.pr_status) == ARPC_OK)
                p->fired_ok++;
            else
                p->fired_shut++;
        }
        j->rj_rc = rc;
        if (rc == ARPC_ESHUTDOWN)
            break;
        CHECK(rc == ARPC_OK);
    }
    return NULL;
}

static void test_pause_resume_racing_stop(void **state)
{
    (void)state;
    atomic_store(&bad_line, 0);
    int armed = 0;
    for (int round = 0; round < PAUSE_ROUNDS; round++) {
        atomic_store(&pause_ran, 0);
        pause_stop_at = 1 + (round * 2749) % (PAUSE_JOBS * 2);
        sem_init(&pause_reached, 0, 0);
        arpc_actor *a;
        arpc_actor_options o = {.mailbox_size = PAUSE_BOUND};
        assert_int_equal(ARPC_OK, arpc_actor_create(&a, &o));
        struct pauser p[PAUSE_PRODUCERS];
        pthread_t t[PAUSE_PRODUCERS];
        for (int i = 0; i < PAUSE_PRODUCERS; i++) {
            memset(&p[i], 0, sizeof(p[i]));
            p[i].a = a;
            p[i].jobs = calloc(PAUSE_JOBS, sizeof(struct rec_job));
            assert_non_null(p[i].jobs);
            for (uint32_t k = 0; k < PAUSE_JOBS; k++)
                p[i].jobs[k].rj_rc = -1;
            assert_int_equal(0, pthread_create(&t[i], NULL, pause_producer, &p[i]));
        }
        assert_true(sem_wait_secs(&pause_reached, 30));
        is_stopper = true;
        enum arpc_actor_stop_mode mode = round % 2 ? ARPC_ACTOR_DISCARD : ARPC_ACTOR_DRAIN;
        assert_int_equal(ARPC_OK, arpc_actor_stop(a, mode));
        is_stopper = false;
        for (int i = 0; i < PAUSE_PRODUCERS; i++)
            pthread_join(t[i], NULL);
        arpc_actor_destroy(a);
        assert_int_equal(0, atomic_load(&bad_line));
        for (int i = 0; i < PAUSE_PRODUCERS; i++) {
            assert_int_equal(0, p[i].lost);
            assert_int_equal(p[i].armed, p[i].fired_ok + p[i].fired_shut);
            armed += p[i].armed;
            for (uint32_t k = 0; k < PAUSE_JOBS; k++) {
                const struct rec_job *j = &p[i].jobs[k];
                int runs = atomic_load(&j->rj_ok) + atomic_load(&j->rj_cancelled);
                assert_int_equal(j->rj_rc == ARPC_OK ? 1 : 0, runs);
            }
            free(p[i].jobs);
        }
        sem_destroy(&pause_reached);
    }
    print_message("%d room waiters armed and run\n", armed);
    assert_true(armed > 0); /* the producers did meet the bound */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_and_messages_fifo_exactly_once),
        cmocka_unit_test(test_eagain_at_bound_then_room),
        cmocka_unit_test(test_room_waiter_at_stop),
        cmocka_unit_test(test_own_posts_never_wait),
        cmocka_unit_test(test_pause_resume_racing_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
