/*
 * arpc-bench handoff: many producer threads handing work to one consumer, the two hand-offs
 * every call crosses (issue #9's "4 producer threads x 1M posts into one actor, and 4 threads
 * x 1M loop submits"): arpc_actor_post into one actor, and arpc_loop_submit into one started
 * loop. Each producer posts --calls jobs (default 1,000,000) that count on the consumer's
 * thread; the time runs from the producers' common start to the consumer's last job.
 *
 * Design notes
 * - The producers start together (a barrier), so they contend as in a burst: the figure
 *   includes waits for room at the bound (posts wait when the mailbox or lane is full), which
 *   is the producers' cost, not the consumer's.
 * - The end is a job of the main thread's, posted after every producer returned: each
 *   producer's jobs are FIFO and the consumer runs them in one total order, so when that job
 *   runs, every job before it has run. It checks the count.
 * - Context switches per job (getrusage, the whole process) say how often a side slept.
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "arpc/actor.h"
#include "arpc/error.h"
#include "arpc/loop.h"
#include "bench.h"
#include "handoff.h"
#include "json.h"

struct handoff {
    arpc_actor *h_actor;  /* one of the two is set */
    arpc_loop *h_loop;
    uint64_t h_per;       /* jobs per producer */
    uint64_t h_count;     /* the consumer's thread only */
    pthread_barrier_t h_start;
    sem_t h_done;
    _Atomic int h_failed; /* a post that failed (its code), or ARPC_OK */
    uint64_t h_seen;      /* the count when the end job ran */
};

static void count_job(struct handoff *h) { h->h_count++; }

static void actor_job(arpc_actor *a, void *arg, int status)
{
    (void)a;
    if (status == ARPC_OK)
        count_job(arg);
}

static void loop_job(arpc_loop *loop, void *arg)
{
    (void)loop;
    count_job(arg);
}

static void end_job(struct handoff *h)
{
    h->h_seen = h->h_count;
    sem_post(&h->h_done);
}

static void actor_end(arpc_actor *a, void *arg, int status)
{
    (void)a;
    (void)status;
    end_job(arg);
}

static void loop_end(arpc_loop *loop, void *arg)
{
    (void)loop;
    end_job(arg);
}

static int post_one(struct handoff *h, bool end)
{
    if (h->h_actor != NULL)
        return arpc_actor_post(h->h_actor, end ? actor_end : actor_job, h);
    return arpc_loop_submit(h->h_loop, end ? loop_end : loop_job, h);
}

static void *producer(void *arg)
{
    struct handoff *h = arg;
    pthread_barrier_wait(&h->h_start);
    for (uint64_t i = 0; i < h->h_per; i++) {
        int rc = post_one(h, false);
        if (rc != ARPC_OK) {
            atomic_store_explicit(&h->h_failed, rc, memory_order_relaxed);
            break;
        }
    }
    return NULL;
}

struct handoff_result {
    double seconds;
    double ctx_per_job;
    bool ok;
};

/* One run: producers x per jobs into the actor or the loop h names. */
static struct handoff_result handoff_run(struct handoff *h, unsigned producers)
{
    struct handoff_result r = {0};
    pthread_t *threads = calloc(producers, sizeof(*threads));
    if (threads == NULL || pthread_barrier_init(&h->h_start, NULL, producers + 1) != 0) {
        free(threads);
        return r;
    }
    sem_init(&h->h_done, 0, 0);
    unsigned started = 0;
    while (started < producers && pthread_create(&threads[started], NULL, producer, h) == 0)
        started++;
    if (started < producers) { /* the barrier would never open: too few threads */
        fprintf(stderr, "arpc-bench handoff: could start only %u producer threads\n", started);
        abort();
    }
    uint64_t ctx0 = bench_ctx_switches();
    pthread_barrier_wait(&h->h_start);
    uint64_t t0 = bench_now_ns();
    for (unsigned i = 0; i < producers; i++)
        pthread_join(threads[i], NULL);
    bool posted = post_one(h, true) == ARPC_OK;
    if (posted)
        sem_wait(&h->h_done);
    uint64_t t1 = bench_now_ns();
    uint64_t ctx1 = bench_ctx_switches();
    uint64_t jobs = (uint64_t)producers * h->h_per;
    r.seconds = (double)(t1 - t0) / 1e9;
    r.ctx_per_job = jobs ? (double)(ctx1 - ctx0) / (double)jobs : 0;
    int failed = atomic_load_explicit(&h->h_failed, memory_order_relaxed);
    r.ok = posted && failed == ARPC_OK && h->h_seen == jobs;
    if (!r.ok)
        fprintf(stderr, "arpc-bench handoff: %llu of %llu jobs ran (post error %s)\n", (unsigned long long)h->h_seen,
                (unsigned long long)jobs, arpc_errname(failed));
    sem_destroy(&h->h_done);
    pthread_barrier_destroy(&h->h_start);
    free(threads);
    return r;
}

int bench_handoff_main(const struct bench_config *cfg)
{
    unsigned producers = cfg->threads;
    uint64_t per = cfg->calls;
    struct handoff ha = {.h_per = per}, hl = {.h_per = per};
    if (arpc_actor_create(&ha.h_actor, NULL) != ARPC_OK || arpc_loop_create(&hl.h_loop, NULL) != ARPC_OK ||
        arpc_loop_start(hl.h_loop) != ARPC_OK) {
        fprintf(stderr, "arpc-bench handoff: cannot create the actor or the loop\n");
        return 1;
    }
    struct handoff_result actor = handoff_run(&ha, producers);
    struct handoff_result loop = handoff_run(&hl, producers);
    arpc_actor_destroy(ha.h_actor);
    arpc_loop_destroy(hl.h_loop);

    double jobs = (double)producers * (double)per;
    fprintf(stderr, "\narpc-bench handoff: %u producer threads x %llu jobs each, into one consumer\n", producers,
            (unsigned long long)per);
    fprintf(stderr, "  %-26s %10s %14s %12s\n", "hand-off", "seconds", "jobs/s", "ctx/job");
    fprintf(stderr, "  %-26s %10.3f %14.0f %12.4f\n", "arpc_actor_post, 1 actor", actor.seconds,
            actor.seconds > 0 ? jobs / actor.seconds : 0, actor.ctx_per_job);
    fprintf(stderr, "  %-26s %10.3f %14.0f %12.4f\n", "arpc_loop_submit, 1 loop", loop.seconds,
            loop.seconds > 0 ? jobs / loop.seconds : 0, loop.ctx_per_job);

    struct bench_json j;
    bench_json_begin(&j, stdout);
    bench_json_str(&j, "mode", "handoff");
    bench_json_uint(&j, "producers", producers);
    bench_json_uint(&j, "jobs_per_producer", per);
    bench_json_num(&j, "actor_posts_s", actor.seconds);
    bench_json_num(&j, "actor_posts_per_s", actor.seconds > 0 ? jobs / actor.seconds : 0);
    bench_json_num(&j, "actor_ctx_switches_per_job", actor.ctx_per_job);
    bench_json_num(&j, "loop_submits_s", loop.seconds);
    bench_json_num(&j, "loop_submits_per_s", loop.seconds > 0 ? jobs / loop.seconds : 0);
    bench_json_num(&j, "loop_ctx_switches_per_job", loop.ctx_per_job);
    bench_json_bool(&j, "ok", actor.ok && loop.ok);
    bench_json_end(&j);
    return actor.ok && loop.ok ? 0 : 1;
}
