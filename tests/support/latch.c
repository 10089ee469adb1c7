/* The counting latch: a mutex and condition variable, so waiters sleep rather than spin. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <time.h>

#include "support/test_util.h"

static pthread_mutex_t latch_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t latch_cv = PTHREAD_COND_INITIALIZER;
static unsigned latch_count; /* under latch_mu */

void latch_reset(void)
{
    pthread_mutex_lock(&latch_mu);
    latch_count = 0;
    pthread_mutex_unlock(&latch_mu);
}

void latch_add(void)
{
    pthread_mutex_lock(&latch_mu);
    latch_count++;
    pthread_cond_broadcast(&latch_cv);
    pthread_mutex_unlock(&latch_mu);
}

bool latch_wait(unsigned target, int timeout_ms)
{
    /* pthread_cond_timedwait takes an absolute CLOCK_REALTIME time. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&latch_mu);
    int err = 0;
    while (latch_count < target && err != ETIMEDOUT)
        err = pthread_cond_timedwait(&latch_cv, &latch_mu, &dl);
    bool ok = latch_count >= target;
    pthread_mutex_unlock(&latch_mu);
    return ok;
}

struct thread_run {
    void (*tr_fn)(void *arg);
    void *tr_arg;
    sem_t tr_done;
};

static void *thread_run_main(void *arg)
{
    struct thread_run *r = arg;
    r->tr_fn(r->tr_arg);
    sem_post(&r->tr_done);
    return NULL;
}

bool thread_ends_within(void (*fn)(void *arg), void *arg, int secs)
{
    /* On the heap: a thread left running must not outlive what it points to. */
    struct thread_run *r = malloc(sizeof(*r));
    if (r == NULL)
        return false;
    r->tr_fn = fn;
    r->tr_arg = arg;
    sem_init(&r->tr_done, 0, 0);
    pthread_t th;
    if (pthread_create(&th, NULL, thread_run_main, r) != 0) {
        sem_destroy(&r->tr_done);
        free(r);
        return false;
    }
    if (!sem_wait_secs(&r->tr_done, secs)) {
        pthread_detach(th); /* r stays: the thread may still use it */
        return false;
    }
    pthread_join(th, NULL);
    sem_destroy(&r->tr_done);
    free(r);
    return true;
}

bool sem_wait_secs(sem_t *s, int secs)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += secs;
    while (sem_timedwait(s, &ts) != 0) {
        if (errno != EINTR)
            return false;
    }
    return true;
}
