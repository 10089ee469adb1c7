/*
 * Waiting on a loop: for a future (arpc_loop_run_until, arpc_loop_wait) or for a function run
 * on the loop (arpc_loop_run_sync).
 *
 * A loop may be run by its own thread, by a thread lent with arpc_loop_run, or by nobody: then
 * whoever waits drives it (arpc_loop_run_until claims it, runs ev_run until the wait is over,
 * and gives it back). A waiter therefore looks at who runs the loop: its own thread -> sleep
 * until done; another waiter driving it -> sleep in short slices, because that waiter may give
 * the loop back the moment its own wait ends (then we drive it); nobody -> drive it here.
 * Every wait is one of these, written once (loop_wait_cond) for any condition (loop_cond).
 */
#include "async/loop_impl.h"

#include <sched.h>

#include "arpc/error.h"
#include "async/futex.h"
#include "async/future_internal.h"
#include "base/alloc.h"
#include "base/backoff.h"
#include "base/clock.h"
#include "base/refcount.h"

/* Something to wait for: done() polls it; sleep() blocks until it may be done or until
 * deadline_ns, whichever is first (it may return early); settling() (may be NULL) says it is
 * being finished on another thread right now, so a driver must not block in poll: that
 * thread may have woken the loop already (a cancel's hook posts its job before the cancel is
 * published) and will not wake it again. */
struct loop_cond {
    bool (*c_done)(void *arg);
    void (*c_sleep)(void *arg, uint64_t deadline_ns);
    bool (*c_settling)(void *arg);
    void *c_arg;
    arpc_future *const *c_foreign; /* futures other threads may complete (see loop_drive) */
    size_t c_nforeign;
    int c_wake_fd; /* readable when other threads changed c (see loop_drive); -1: none */
    void (*c_woken)(void *arg); /* run when c_wake_fd woke the drive; NULL: nothing */
};

static bool cond_settling(const struct loop_cond *c) { return c->c_settling != NULL && c->c_settling(c->c_arg); }

static bool future_done(void *f) { return arpc_future_poll(f) != ARPC_EPENDING; }

static bool future_settling(void *f) { return arpc_future_settling(f); }

static void future_sleep(void *f, uint64_t deadline_ns)
{
    (void)arpc_future_sleep_until(f, deadline_ns); /* not arpc_future_wait_for: that would drive */
}

static void run_until_timeout_cb(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)w;
    (void)revents; /* only wakes ev_run(EVRUN_ONCE) so the driver re-checks its deadline */
}

/* The last prepare watcher of an iteration (lowest priority): work done in this iteration,
 * including in other prepare watchers (a connection flushes there, and may close), may have
 * ended the wait. Then the iteration must not go on to block in poll. */
static void drive_check_cb(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)revents;
    const struct loop_cond *c = w->data;
    if (c->c_done(c->c_arg) || cond_settling(c))
        ev_break(ev, EVBREAK_ONE);
}

/* The wait's wake fd is readable: the loop's iteration ends, and the wait looks at its
 * condition. The fd is its owner's to read: c_woken clears a signal that no longer means
 * anything (the fd is level-triggered: left readable, the drive would spin). */
static void drive_wake_cb(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    const struct loop_cond *c = w->data;
    if (c->c_woken != NULL)
        c->c_woken(c->c_arg);
    ev_break(ev, EVBREAK_ONE);
}

/* A wait for futures that another thread may complete: nothing on the loop would wake it,
 * so each future's callback does (loop_wake). A callback may run after the wait is over, so
 * it reaches the loop through this small object, which the wait disconnects when it ends. */
struct drive_waker {
    arpc_refcount dw_refs;
    pthread_mutex_t dw_mtx;
    arpc_loop *dw_loop; /* NULL once the wait is over */
};

static void drive_waker_put(struct drive_waker *w)
{
    if (arpc_refcount_put(&w->dw_refs)) {
        pthread_mutex_destroy(&w->dw_mtx);
        arpc_free(w);
    }
}

static void drive_waker_fire(arpc_future *f, void *arg)
{
    (void)f;
    struct drive_waker *w = arg;
    pthread_mutex_lock(&w->dw_mtx);
    if (w->dw_loop != NULL)
        loop_wake(w->dw_loop);
    pthread_mutex_unlock(&w->dw_mtx);
    drive_waker_put(w);
}

static void drive_waker_end(struct drive_waker *w);

/* A waker on each of fs[0..n) (one done already wakes the loop once, harmlessly). NULL
 * without memory (then the wait looks again every ms). */
static struct drive_waker *drive_waker_new(arpc_loop *loop, arpc_future *const *fs, size_t n)
{
    struct drive_waker *w = arpc_malloc(sizeof(*w));
    if (w == NULL)
        return NULL;
    arpc_refcount_init(&w->dw_refs, 1); /* the wait's; one more per callback */
    pthread_mutex_init(&w->dw_mtx, NULL);
    w->dw_loop = loop;
    for (size_t i = 0; i < n; i++) {
        arpc_refcount_get(&w->dw_refs);
        if (arpc_future_then(fs[i], drive_waker_fire, w) != ARPC_OK) {
            arpc_refcount_put(&w->dw_refs); /* not the last: the wait's is held */
            drive_waker_end(w);
            return NULL;
        }
    }
    return w;
}

static void drive_waker_end(struct drive_waker *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->dw_mtx);
    w->dw_loop = NULL;
    pthread_mutex_unlock(&w->dw_mtx);
    drive_waker_put(w);
}

/* Claims the loop and runs it on this thread until c is done, until_ns passes (nowait: one
 * non-blocking iteration), or the loop finishes; then gives it back. c's foreign futures may
 * be completed by another thread (arpc's own complete on the loop): their completion wakes
 * the loop. ARPC_OK (done), ARPC_EPENDING (time is up), ARPC_ESHUTDOWN (finished),
 * ARPC_EBUSY (someone else runs it). */
static int loop_drive(arpc_loop *loop, const struct loop_cond *c, uint64_t until_ns, bool nowait)
{
    if (loop->l_owned && !loop_owned_here(loop))
        return ARPC_EBUSY; /* the application's thread runs it */
    /* Made in the parent of this child of a fork: its sockets are the parent's to read. */
    if (!arpc_fork_gen_here(loop->l_fork_gen, loop, "loop", "a wait that would drive it"))
        return ARPC_EINVAL;
    int rc = loop_claim(loop);
    if (rc != ARPC_OK)
        return rc;
    arpc_loop *outer = loop_tl_current;
    loop_tl_current = loop;
    bool foreign = c->c_nforeign > 0 && !nowait;
    struct drive_waker *waker = foreign ? drive_waker_new(loop, c->c_foreign, c->c_nforeign) : NULL;
    ev_timer timeout;
    ev_timer_init(&timeout, run_until_timeout_cb, 0., 0.);
    uint64_t tick = foreign && waker == NULL ? 1 : 0; /* no waker: look every ms */
    if (!nowait && (until_ns != ARPC_NEVER || tick)) {
        ev_now_update(loop->l_ev);
        double left = until_ns == ARPC_NEVER ? 1e9 : (double)arpc_ms_left(until_ns) / 1e3;
        ev_timer_set(&timeout, tick && left > 1e-3 ? 1e-3 : left, tick ? 1e-3 : 0.);
        ev_timer_start(loop->l_ev, &timeout);
    }
    ev_prepare check;
    ev_prepare_init(&check, drive_check_cb);
    ev_set_priority(&check, EV_MINPRI);
    check.data = (void *)c;
    ev_prepare_start(loop->l_ev, &check);
    /* Other threads' changes that nothing on the loop would see (a completion queue's pushes
     * and destroy): their fd wakes the poll, and the prepare above looks at c. */
    ev_io wake;
    ev_io_init(&wake, drive_wake_cb, c->c_wake_fd, EV_READ);
    wake.data = (void *)c;
    if (c->c_wake_fd >= 0 && !nowait)
        ev_io_start(loop->l_ev, &wake);
    do {
        if (loop->l_finished || c->c_done(c->c_arg))
            break;
        ev_run(loop->l_ev, nowait ? EVRUN_NOWAIT : EVRUN_ONCE);
        if (cond_settling(c))
            sched_yield(); /* its completer is between claim and publish: let it finish */
    } while (!nowait && (until_ns == ARPC_NEVER || arpc_now_ns() < until_ns));
    ev_prepare_stop(loop->l_ev, &check);
    ev_io_stop(loop->l_ev, &wake);
    ev_timer_stop(loop->l_ev, &timeout);
    drive_waker_end(waker);
    loop_tl_current = outer;
    bool done = c->c_done(c->c_arg);
    if (loop->l_finished) {
        loop_end_run(loop); /* stopped while we ran it: end its run as arpc_loop_run does */
        return done ? ARPC_OK : ARPC_ESHUTDOWN;
    }
    loop_release(loop); /* free for the next caller to drive */
    return done ? ARPC_OK : ARPC_EPENDING;
}

/* Waits (not on the loop thread) until c is done or until_ns: ARPC_OK or ARPC_EPENDING. */
static int loop_wait_cond(arpc_loop *loop, const struct loop_cond *c, uint64_t until_ns)
{
    for (;;) {
        if (c->c_done(c->c_arg))
            return ARPC_OK;
        uint64_t now = arpc_now_ns();
        if (until_ns != ARPC_NEVER && now >= until_ns)
            return ARPC_EPENDING;
        uint32_t state = atomic_load_explicit(&loop->l_state, memory_order_acquire) & ~LOOP_FLAGS;
        bool driven = state == LOOP_RUNNING;
        bool own_thread = atomic_load_explicit(&loop->l_started, memory_order_acquire) ||
                          (loop->l_owned && !loop_owned_here(loop));
        bool finished = state == LOOP_DONE;
        if (own_thread || finished) {
            c->c_sleep(c->c_arg, until_ns); /* its thread, or whoever stopped it, finishes c */
            continue;
        }
        if (driven && loop_busy_briefly(loop)) {
            sched_yield(); /* a submitter's step (async/loop_lanes.c): over in a moment */
            continue;
        }
        if (driven) {
            /* A waiter drives it and may give it back any moment: look again soon. */
            uint64_t slice = arpc_deadline_after(now, 1);
            c->c_sleep(c->c_arg, slice < until_ns ? slice : until_ns);
            continue;
        }
        int rc = loop_drive(loop, c, until_ns, false);
        if (rc == ARPC_OK || rc == ARPC_EPENDING)
            return rc;
        if (rc == ARPC_EINVAL) { /* not this process's loop: the wait ends by its time alone */
            c->c_sleep(c->c_arg, until_ns);
            continue;
        }
        /* EBUSY (someone grabbed it first) or ESHUTDOWN (it finished): look again. */
    }
}

int arpc_loop_run_until(arpc_loop *loop, arpc_future *f, int64_t timeout_ms)
{
    if (!loop_live(loop, __func__) || f == NULL)
        return ARPC_EINVAL;
    if (loop_inside(loop))
        return ARPC_EBUSY; /* already inside this loop: waiting here would never return */
    arpc_future *one[1] = {f};
    struct loop_cond c = {future_done, future_sleep, future_settling, f, one, 1, -1, NULL};
    uint64_t until = arpc_deadline_from_ms(timeout_ms);
    int rc;
    unsigned attempt = 0;
    /* A submitter's step (async/loop_lanes.c) holds the loop for a moment: wait it out. */
    while ((rc = loop_drive(loop, &c, until, timeout_ms == 0)) == ARPC_EBUSY && loop_busy_briefly(loop))
        arpc_backoff_spin(&attempt);
    if (rc == ARPC_EBUSY || rc == ARPC_EPENDING || rc == ARPC_ESHUTDOWN)
        return rc;
    return arpc_future_poll(f);
}

static int loop_wait_future(arpc_loop *loop, arpc_future *f, uint64_t deadline_ns, bool foreign)
{
    if (loop_inside(loop))
        return ARPC_EBUSY; /* the loop cannot wait for itself */
    arpc_future *one[1] = {f};
    struct loop_cond c = {future_done, future_sleep, future_settling, f, one, foreign ? 1 : 0, -1, NULL};
    if (loop_wait_cond(loop, &c, deadline_ns) != ARPC_OK)
        return ARPC_EPENDING;
    return arpc_future_poll(f);
}

int arpc_loop_wait_cond_until(arpc_loop *loop, bool (*done)(void *arg), void (*sleep)(void *arg, uint64_t deadline_ns),
                              void *arg, uint64_t deadline_ns, int wake_fd, void (*woken)(void *arg))
{
    if (loop_inside(loop))
        return ARPC_EBUSY;
    struct loop_cond c = {done, sleep, NULL, arg, NULL, 0, wake_fd, woken};
    return loop_wait_cond(loop, &c, deadline_ns);
}

int arpc_loop_wait_until(arpc_loop *loop, arpc_future *f, uint64_t deadline_ns)
{
    return loop_wait_future(loop, f, deadline_ns, false);
}

int arpc_loop_wait_foreign_until(arpc_loop *loop, arpc_future *f, uint64_t deadline_ns)
{
    return loop_wait_future(loop, f, deadline_ns, true);
}

int arpc_loop_wait(arpc_loop *loop, arpc_future *f)
{
    return loop == NULL ? arpc_future_wait(f) : arpc_loop_wait_until(loop, f, ARPC_NEVER);
}

bool arpc_loop_wait_not_running(arpc_loop *loop)
{
    return loop_state_wait(loop) == LOOP_DONE;
}

/* ---- run_sync ---- */

struct sync_job {
    struct arpc_loop_job sj_job;
    arpc_task_fn sj_fn;
    void *sj_arg;
    _Atomic uint32_t sj_done;
};

static void sync_job_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct sync_job *s = (struct sync_job *)job;
    s->sj_fn(loop, s->sj_arg);
    atomic_store_explicit(&s->sj_done, 1, memory_order_release);
    /* The waiter may return (its stack frame, s, gone) as soon as it sees the store: a wake on
     * a dead address is harmless (a private futex wake only hashes the address). */
    arpc_futex_wake_all((const uint32_t *)&s->sj_done);
}

static bool sync_done(void *arg)
{
    struct sync_job *s = arg;
    return atomic_load_explicit(&s->sj_done, memory_order_acquire) != 0;
}

static void sync_sleep(void *arg, uint64_t deadline_ns)
{
    struct sync_job *s = arg;
    arpc_futex_wait((const uint32_t *)&s->sj_done, 0, deadline_ns);
}

int arpc_loop_run_sync(arpc_loop *loop, arpc_task_fn fn, void *arg)
{
    if (loop_inside(loop)) {
        fn(loop, arg); /* we are the loop thread: never queue and wait for ourselves */
        return ARPC_OK;
    }
    struct sync_job s = {.sj_fn = fn, .sj_arg = arg};
    arpc_loop_job_init(&s.sj_job, sync_job_run);
    atomic_init(&s.sj_done, 0);
    if (arpc_loop_post(loop, &s.sj_job) == ARPC_OK) {
        struct loop_cond c = {sync_done, sync_sleep, NULL, &s, NULL, 0, -1, NULL};
        loop_wait_cond(loop, &c, ARPC_NEVER); /* an accepted job runs, even if the loop stops */
        return ARPC_OK;
    }
    /* The loop is stopping or stopped: once no thread runs it, nothing else touches what fn
     * touches, so fn runs here, as the loop thread -- one caller at a time, as on the loop. */
    arpc_loop_wait_not_running(loop);
    pthread_mutex_lock(&loop->l_sync_mtx);
    arpc_loop *outer = loop_tl_current;
    loop_tl_current = loop;
    fn(loop, arg);
    loop_tl_current = outer;
    pthread_mutex_unlock(&loop->l_sync_mtx);
    return ARPC_ESHUTDOWN;
}

static void step_nothing(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
}

int arpc_loop_fence(arpc_loop *loop) { return arpc_loop_run_sync(loop, step_nothing, NULL); }

void arpc_loop_fence_until_zero(arpc_loop *loop, atomic_size_t *count)
{
    unsigned attempt = 0;
    while (atomic_load(count) != 0)
        if (arpc_loop_fence(loop) != ARPC_OK)
            arpc_backoff_spin(&attempt);
}
