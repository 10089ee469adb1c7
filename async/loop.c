/*
 * Design notes.
 *
 * Wake-ups. Submitters push to the MPSC ring, then exchange l_wake_pending 0 -> 1 and only
 * the one that saw 0 calls ev_async_send: one wake-up per batch. The loop resets the flag at
 * the start of wake_cb, *before* it drains. The exchange (a seq_cst read-modify-write, after
 * the push) and the reset (a seq_cst store, before the pops) are totally ordered: a submitter
 * whose exchange saw 1 came before the reset, so the drain that follows the reset sees its
 * task; a submitter whose exchange saw 0 sends a new wake-up. No task is left asleep.
 *
 * Fairness. wake_cb runs at most LOOP_DRAIN_BATCH tasks, then wakes itself again through
 * the same flag: the eventfd write makes the next round wait for one poll, so sockets and
 * timers get their turn even under a flood of tasks (a task resubmitting itself included).
 * A task submitted on the loop thread during a drain needs no wake-up: the drain either
 * pops it or reaches the batch limit and re-arms.
 *
 * Producer gate. ck_ring's MPSC enqueue makes each producer wait, spinning without yielding,
 * until every producer holding an earlier ticket has published. When submitting threads
 * outnumber cores, a producer preempted between taking its ticket and publishing stalls all
 * the others for a time slice, and they in turn are preempted while holding tickets: on 2
 * cores, 4 threads needed 8 s to push 40k tasks. Submitters on other threads therefore take
 * l_push_mtx (adaptive: spins briefly, then sleeps) around the push and its wake-up, so at
 * most one of them is inside the enqueue; 4 threads x 100k tasks then take about 0.1 s, and
 * one uncontended submitter pays a lock/unlock pair. The loop thread's own submits do not
 * take it (the loop must not sleep on a submitter; only a stop does, once); they can still
 * wait, briefly, for the one gated producer to publish.
 *
 * Stopping. arpc_loop_stop closes the ring at once (from any thread: close only waits for
 * pushes already past their check, a few instructions), so every submit that returns after
 * stop fails with ARPC_ESHUTDOWN, then wakes the loop. The loop thread then runs the final
 * drain (every accepted task, including ones it pushed to itself before the close), the
 * on_stop hooks, and breaks out of ev_run. Tasks that run in the final drain and the hooks
 * cannot submit: the ring is closed, they get ARPC_ESHUTDOWN. Deadlines still armed do not
 * fire; freeing the loop leaves them unarmed. A stopped loop cannot run again: start and
 * run report ARPC_ESHUTDOWN.
 *
 * Which thread is the loop thread: a thread-local pointer set while a thread runs the loop
 * (no pthread_t compare races, and nesting is restored). A loop that never ran and is
 * destroyed runs its final drain and hooks on the destroying thread, which acts as the loop
 * thread for that time, so accepted tasks still run exactly once.
 *
 * Destroy. From another thread: stop, then join the thread (arpc_loop_start) or wait for
 * arpc_loop_run to return (l_cv), or do the final drain here (never ran); then free. Before
 * freeing it passes through l_push_mtx, under which submit and stop on other threads make
 * their last touch of the loop (the ev_async_send): a submitter's task may have run, and
 * told the destroyer so, while the submitter is still sending. From the loop thread (inside
 * a task, callback or hook): mark l_destroy_requested and stop; whoever ran the loop frees
 * it once ev_run has returned: the started thread detaches itself first, arpc_loop_run
 * frees it just before returning ARPC_OK (the caller must not touch the loop afterwards).
 *
 * Deadlines. One ev_timer over the heap. arm/cancel only touch the heap; the ev_prepare
 * watcher, which libev runs just before it computes how long to block, points the timer at
 * the heap top when that changed. A task that arms 100k deadlines thus re-arms the timer
 * once. The timer callback fires every due deadline that existed when it started; ones armed
 * (or moved) by those callbacks, even if already due, wait for the next loop iteration so a
 * callback re-arming itself in the past cannot livelock the loop, and the order (time, then
 * arm order) still holds.
 */
#define _GNU_SOURCE
#include "async/loop_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "arpc/error.h"
#include "arpc/future.h"
#include "async/mpsc_ring.h"
#include "base/alloc.h"
#include "base/backoff.h"
#include "base/clock.h"

#define LOOP_DEFAULT_RING 8192u
#define LOOP_DRAIN_BATCH 1024u /* tasks per wake-up before the loop polls again */
#define LOOP_FIRE_BATCH 1024u  /* deadlines per timer callback, for the same reason */

enum loop_state { LOOP_IDLE, LOOP_RUNNING, LOOP_DONE };

struct loop_hook {
    void (*fn)(arpc_loop *loop, void *arg);
    void *arg;
};

struct arpc_loop {
    /* Shared with other threads. */
    struct arpc_mpsc_ring l_ring;
    atomic_int l_wake_pending; /* a wake-up is sent or being sent, its drain not yet begun */
    atomic_int l_stopping;
    pthread_mutex_t l_push_mtx; /* other threads' submit and stop: one at a time (see notes) */
    _Atomic uint64_t l_wakeups; /* wake_cb runs, for tests; written by the loop thread only */

    /* Loop thread only (or before the loop runs). */
    struct ev_loop *l_ev;
    ev_async l_wake;
    ev_prepare l_prepare;
    ev_timer l_timer;
    bool l_timer_armed;
    uint64_t l_timer_when; /* what l_timer is armed for, when l_timer_armed */
    struct arpc_deadline_heap l_deadlines;
    struct loop_hook *l_hooks;
    size_t l_nhooks;
    bool l_draining;          /* inside a drain: local submits need no wake-up */
    bool l_finishing;         /* the final drain has begun */
    bool l_finished;          /* final drain and hooks done: ev_run may return for good */
    bool l_destroy_requested; /* destroy was called on the loop thread */

    /* Who runs the loop; guarded by l_mtx. */
    pthread_mutex_t l_mtx;
    pthread_cond_t l_cv; /* broadcast when l_state becomes LOOP_DONE */
    enum loop_state l_state;
    bool l_started;
    pthread_t l_thread;
};

/* The loop the calling thread is running, if any. */
static _Thread_local arpc_loop *tl_loop;

bool arpc_loop_on_thread(const arpc_loop *loop) { return loop != NULL && tl_loop == loop; }

struct ev_loop *arpc_loop_ev(arpc_loop *loop) { return loop->l_ev; }

size_t arpc_loop_deadline_count(arpc_loop *loop)
{
    return arpc_deadline_heap_len(&loop->l_deadlines);
}

uint64_t arpc_loop_wakeups(arpc_loop *loop)
{
    return atomic_load_explicit(&loop->l_wakeups, memory_order_relaxed);
}

/* Any thread: makes sure a drain starts after this call (see the design notes). */
static void loop_wake(arpc_loop *loop)
{
    if (atomic_exchange(&loop->l_wake_pending, 1) == 0)
        ev_async_send(loop->l_ev, &loop->l_wake);
}

/* Runs up to limit tasks. True when it stopped at the limit (tasks may be left). */
static bool loop_drain(arpc_loop *loop, size_t limit)
{
    struct arpc_mpsc_task t;
    size_t n = 0;
    loop->l_draining = true;
    while (n < limit && arpc_mpsc_ring_pop(&loop->l_ring, &t)) {
        ((arpc_task_fn)t.fn)(loop, t.arg);
        n++;
    }
    loop->l_draining = false;
    return n == limit;
}

/* Loop thread: the end of the loop's life (see "Stopping"). Runs once. */
static void loop_finish(arpc_loop *loop)
{
    if (loop->l_finishing)
        return;
    loop->l_finishing = true;
    arpc_mpsc_ring_close(&loop->l_ring); /* arpc_loop_stop closed it already; idempotent */
    loop_drain(loop, SIZE_MAX);
    /* Index, not pointer: a hook may register another hook (and move the array). */
    for (size_t i = 0; i < loop->l_nhooks; i++)
        loop->l_hooks[i].fn(loop, loop->l_hooks[i].arg);
    loop->l_finished = true;
    ev_break(loop->l_ev, EVBREAK_ALL);
}

static void wake_cb(struct ev_loop *ev, ev_async *w, int revents)
{
    arpc_loop *loop = w->data;
    (void)ev;
    (void)revents;
    if (loop->l_finishing)
        return;
    /* Reset before draining: a submit that races the drain sends a fresh wake-up. */
    atomic_store(&loop->l_wake_pending, 0);
    atomic_fetch_add_explicit(&loop->l_wakeups, 1, memory_order_relaxed);
    if (!atomic_load(&loop->l_stopping)) {
        bool more = loop_drain(loop, LOOP_DRAIN_BATCH);
        if (!atomic_load(&loop->l_stopping)) {
            if (more)
                loop_wake(loop); /* let one poll through, then continue */
            return;
        }
    }
    loop_finish(loop);
}

/* Loop thread: points the one ev_timer at top's time; NULL disarms it. */
static void loop_timer_set(arpc_loop *loop, const struct arpc_deadline *top)
{
    ev_timer_stop(loop->l_ev, &loop->l_timer);
    loop->l_timer_armed = top != NULL;
    if (top == NULL)
        return;
    loop->l_timer_when = top->d_when_ns;
    /* libev counts the delay from its cached loop time, which lags behind after long
     * callbacks. Read our clock first, then refresh libev's: the timer then cannot expire
     * before when_ns (timer_cb re-checks anyway, against rounding). */
    uint64_t now = arpc_now_ns();
    ev_now_update(loop->l_ev);
    ev_tstamp delay = top->d_when_ns > now ? (ev_tstamp)(top->d_when_ns - now) * 1e-9 : 0.;
    ev_timer_set(&loop->l_timer, delay, 0.);
    ev_timer_start(loop->l_ev, &loop->l_timer);
}

static void prepare_cb(struct ev_loop *ev, ev_prepare *w, int revents)
{
    arpc_loop *loop = w->data;
    (void)ev;
    (void)revents;
    const struct arpc_deadline *top = arpc_deadline_heap_top(&loop->l_deadlines);
    bool same = top != NULL ? loop->l_timer_armed && loop->l_timer_when == top->d_when_ns
                            : !loop->l_timer_armed;
    if (!same)
        loop_timer_set(loop, top);
}

static void timer_cb(struct ev_loop *ev, ev_timer *w, int revents)
{
    arpc_loop *loop = w->data;
    struct arpc_deadline_heap *h = &loop->l_deadlines;
    (void)ev;
    (void)revents;
    loop->l_timer_armed = false; /* one-shot: inactive now; prepare_cb re-arms it */
    uint64_t now = arpc_now_ns();
    uint64_t seq_end = h->h_next_seq; /* deadlines armed from here on wait one iteration */
    for (size_t n = 0; n < LOOP_FIRE_BATCH; n++) {
        struct arpc_deadline *d = arpc_deadline_heap_top(h);
        if (d == NULL || d->d_when_ns > now || d->d_seq >= seq_end)
            break;
        arpc_deadline_heap_remove(h, d); /* disarmed before its callback, which may re-arm it */
        d->d_fn(d, d->d_arg);
    }
}

int arpc_deadline_arm(arpc_loop *loop, struct arpc_deadline *d, uint64_t when_ns)
{
    return arpc_deadline_heap_push(&loop->l_deadlines, d, when_ns);
}

void arpc_deadline_cancel(arpc_loop *loop, struct arpc_deadline *d)
{
    arpc_deadline_heap_remove(&loop->l_deadlines, d);
}

int arpc_loop_on_stop(arpc_loop *loop, void (*fn)(arpc_loop *loop, void *arg), void *arg)
{
    if (loop == NULL || fn == NULL)
        return ARPC_EINVAL;
    struct loop_hook *hooks = arpc_realloc(loop->l_hooks, (loop->l_nhooks + 1) * sizeof(*hooks));
    if (hooks == NULL)
        return ARPC_ENOMEM;
    hooks[loop->l_nhooks++] = (struct loop_hook){fn, arg};
    loop->l_hooks = hooks;
    return ARPC_OK;
}

bool arpc_loop_off_stop(arpc_loop *loop, void (*fn)(arpc_loop *loop, void *arg), void *arg)
{
    if (loop->l_finishing)
        return false; /* the hooks are running (or ran): too late, the hook owns its work */
    for (size_t i = 0; i < loop->l_nhooks; i++) {
        if (loop->l_hooks[i].fn == fn && loop->l_hooks[i].arg == arg) {
            /* Keep registration order for the rest. */
            memmove(&loop->l_hooks[i], &loop->l_hooks[i + 1], (loop->l_nhooks - i - 1) * sizeof(*loop->l_hooks));
            loop->l_nhooks--;
            return true;
        }
    }
    return false;
}

static int loop_init_ev(arpc_loop *loop)
{
    loop->l_ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (loop->l_ev == NULL)
        return ARPC_ESYSTEM;
    ev_async_init(&loop->l_wake, wake_cb);
    loop->l_wake.data = loop;
    ev_async_start(loop->l_ev, &loop->l_wake); /* also what keeps ev_run from returning */
    ev_prepare_init(&loop->l_prepare, prepare_cb);
    loop->l_prepare.data = loop;
    ev_prepare_start(loop->l_ev, &loop->l_prepare);
    ev_timer_init(&loop->l_timer, timer_cb, 0., 0.);
    loop->l_timer.data = loop;
    return ARPC_OK;
}

static int loop_init_push_mtx(arpc_loop *loop)
{
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0)
        return -1;
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    int rc = pthread_mutex_init(&loop->l_push_mtx, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

int arpc_loop_create(arpc_loop **out, const arpc_loop_options *opts)
{
    if (out == NULL)
        return ARPC_EINVAL;
    *out = NULL;
    unsigned ring_size = LOOP_DEFAULT_RING;
    if (opts != NULL && opts->submit_ring_size != 0)
        ring_size = opts->submit_ring_size;
    arpc_loop *loop = arpc_calloc(1, sizeof(*loop));
    if (loop == NULL)
        return ARPC_ENOMEM;
    int rc = arpc_mpsc_ring_init(&loop->l_ring, ring_size);
    if (rc != ARPC_OK) {
        arpc_free(loop);
        return rc;
    }
    if (pthread_mutex_init(&loop->l_mtx, NULL) != 0)
        goto fail_ring;
    if (pthread_cond_init(&loop->l_cv, NULL) != 0)
        goto fail_mtx;
    if (loop_init_push_mtx(loop) != 0)
        goto fail_cv;
    if (loop_init_ev(loop) != ARPC_OK)
        goto fail_push_mtx;
    atomic_init(&loop->l_wake_pending, 0);
    atomic_init(&loop->l_stopping, 0);
    atomic_init(&loop->l_wakeups, 0);
    arpc_deadline_heap_init(&loop->l_deadlines);
    loop->l_state = LOOP_IDLE;
    *out = loop;
    return ARPC_OK;

fail_push_mtx:
    pthread_mutex_destroy(&loop->l_push_mtx);
fail_cv:
    pthread_cond_destroy(&loop->l_cv);
fail_mtx:
    pthread_mutex_destroy(&loop->l_mtx);
fail_ring:
    arpc_mpsc_ring_fini(&loop->l_ring);
    arpc_free(loop);
    return ARPC_ESYSTEM;
}

/* The loop has finished (its ring is drained and closed) and nobody will run it again. */
static void loop_free(arpc_loop *loop)
{
    /* Let other threads' submit/stop calls still in their wake-up finish with the loop. */
    pthread_mutex_lock(&loop->l_push_mtx);
    pthread_mutex_unlock(&loop->l_push_mtx);
    ev_async_stop(loop->l_ev, &loop->l_wake);
    ev_prepare_stop(loop->l_ev, &loop->l_prepare);
    ev_timer_stop(loop->l_ev, &loop->l_timer);
    ev_loop_destroy(loop->l_ev);
    arpc_deadline_heap_fini(&loop->l_deadlines);
    arpc_mpsc_ring_fini(&loop->l_ring);
    arpc_free(loop->l_hooks);
    pthread_mutex_destroy(&loop->l_push_mtx);
    pthread_cond_destroy(&loop->l_cv);
    pthread_mutex_destroy(&loop->l_mtx);
    arpc_free(loop);
}

/* Runs the loop on the calling thread until it has finished. */
static void loop_body(arpc_loop *loop)
{
    arpc_loop *outer = tl_loop;
    tl_loop = loop;
    while (!loop->l_finished)
        ev_run(loop->l_ev, 0);
    tl_loop = outer;
}

/* After loop_body, when destroy was not requested: wake a destroyer waiting for us. The
 * broadcast under the mutex is our last touch of the loop. */
static void loop_set_done(arpc_loop *loop)
{
    pthread_mutex_lock(&loop->l_mtx);
    loop->l_state = LOOP_DONE;
    pthread_cond_broadcast(&loop->l_cv);
    pthread_mutex_unlock(&loop->l_mtx);
}

/* With l_mtx held: IDLE -> RUNNING, or why not. */
static int loop_claim_locked(arpc_loop *loop)
{
    if (loop->l_state == LOOP_RUNNING)
        return ARPC_EBUSY;
    if (loop->l_state == LOOP_DONE)
        return ARPC_ESHUTDOWN;
    loop->l_state = LOOP_RUNNING;
    return ARPC_OK;
}

static void *loop_thread_main(void *arg)
{
    arpc_loop *loop = arg;
    pthread_setname_np(pthread_self(), "arpc-loop");
    loop_body(loop);
    if (!loop->l_destroy_requested) {
        loop_set_done(loop); /* arpc_loop_destroy will join us */
        return NULL;
    }
    /* Destroyed from one of our tasks: nobody joins us. Pass through the mutex first so
     * arpc_loop_start, which may still hold it after pthread_create, is done with the loop. */
    pthread_detach(pthread_self());
    pthread_mutex_lock(&loop->l_mtx);
    pthread_mutex_unlock(&loop->l_mtx);
    loop_free(loop);
    return NULL;
}

int arpc_loop_start(arpc_loop *loop)
{
    if (loop == NULL)
        return ARPC_EINVAL;
    pthread_mutex_lock(&loop->l_mtx);
    int rc = loop_claim_locked(loop);
    if (rc == ARPC_OK) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, loop_thread_main, loop) != 0) {
            loop->l_state = LOOP_IDLE;
            rc = ARPC_ESYSTEM;
        } else {
            loop->l_thread = thread;
            loop->l_started = true;
        }
    }
    pthread_mutex_unlock(&loop->l_mtx);
    return rc;
}

int arpc_loop_run(arpc_loop *loop)
{
    if (loop == NULL)
        return ARPC_EINVAL;
    pthread_mutex_lock(&loop->l_mtx);
    int rc = loop_claim_locked(loop);
    pthread_mutex_unlock(&loop->l_mtx);
    if (rc != ARPC_OK)
        return rc;
    loop_body(loop);
    if (loop->l_destroy_requested)
        loop_free(loop); /* destroyed from one of its tasks: the caller lent us the thread */
    else
        loop_set_done(loop);
    return ARPC_OK;
}

static void run_until_timeout_cb(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)w;
    (void)revents; /* only wakes ev_run(EVRUN_ONCE) so the caller re-checks its deadline */
}

int arpc_loop_run_until(arpc_loop *loop, arpc_future *f, int64_t timeout_ms)
{
    if (loop == NULL || f == NULL)
        return ARPC_EINVAL;
    if (tl_loop == loop)
        return ARPC_EBUSY; /* already inside this loop: waiting here would never return */
    pthread_mutex_lock(&loop->l_mtx);
    int rc = loop_claim_locked(loop);
    pthread_mutex_unlock(&loop->l_mtx);
    if (rc != ARPC_OK)
        return rc;
    arpc_loop *outer = tl_loop;
    tl_loop = loop;
    uint64_t until = arpc_deadline_from_ms(timeout_ms); /* saturates: INT64_MAX is never */
    ev_timer timeout;
    ev_timer_init(&timeout, run_until_timeout_cb, 0., 0.);
    if (timeout_ms > 0 && until != ARPC_NEVER) {
        ev_now_update(loop->l_ev);
        ev_timer_set(&timeout, (ev_tstamp)timeout_ms / 1e3, 0.);
        ev_timer_start(loop->l_ev, &timeout);
    }
    while (!loop->l_finished && arpc_future_poll(f) == ARPC_EPENDING &&
           (until == ARPC_NEVER || arpc_now_ns() < until))
        ev_run(loop->l_ev, timeout_ms == 0 ? EVRUN_NOWAIT : EVRUN_ONCE);
    ev_timer_stop(loop->l_ev, &timeout);
    tl_loop = outer;
    int status = arpc_future_poll(f);
    if (loop->l_finished) {
        /* Stopped while we ran it: end its run exactly as arpc_loop_run does. */
        if (loop->l_destroy_requested)
            loop_free(loop);
        else
            loop_set_done(loop);
        return status == ARPC_EPENDING ? ARPC_ESHUTDOWN : status;
    }
    pthread_mutex_lock(&loop->l_mtx);
    loop->l_state = LOOP_IDLE; /* free for the next caller to drive */
    pthread_cond_broadcast(&loop->l_cv);
    pthread_mutex_unlock(&loop->l_mtx);
    return status;
}

bool arpc_loop_wait_not_running(arpc_loop *loop)
{
    pthread_mutex_lock(&loop->l_mtx);
    while (loop->l_state == LOOP_RUNNING) /* run_until and loop_set_done broadcast l_cv */
        pthread_cond_wait(&loop->l_cv, &loop->l_mtx);
    bool done = loop->l_state == LOOP_DONE;
    pthread_mutex_unlock(&loop->l_mtx);
    return done;
}

int arpc_loop_wait(arpc_loop *loop, arpc_future *f)
{
    if (tl_loop == loop)
        return ARPC_EBUSY; /* the loop cannot wait for itself */
    for (;;) {
        int st = arpc_future_poll(f);
        if (st != ARPC_EPENDING)
            return st;
        pthread_mutex_lock(&loop->l_mtx);
        bool driven = loop->l_state == LOOP_RUNNING;
        bool own_thread = loop->l_started;
        pthread_mutex_unlock(&loop->l_mtx);
        if (driven) {
            /* Someone runs it; a caller-driven runner may give it back, so look again. */
            if (own_thread)
                return arpc_future_wait(f);
            st = arpc_future_wait_for(f, 1);
            if (st != ARPC_EPENDING)
                return st;
            continue;
        }
        int rc = arpc_loop_run_until(loop, f, ARPC_FOREVER);
        if (rc != ARPC_EBUSY && arpc_future_poll(f) == ARPC_EPENDING)
            return arpc_future_wait(f); /* stopped: whoever stopped it completes f */
    }
}

/* Other threads: one at a time through the gate (see "Producer gate" and "Destroy"). */
static int loop_push_remote(arpc_loop *loop, arpc_task_fn fn, void *arg)
{
    pthread_mutex_lock(&loop->l_push_mtx);
    int rc = arpc_mpsc_ring_try_push(&loop->l_ring, (arpc_mpsc_fn)fn, arg);
    if (rc != ARPC_ESHUTDOWN)
        loop_wake(loop); /* accepted: run it; full: make room */
    pthread_mutex_unlock(&loop->l_push_mtx);
    return rc;
}

int arpc_loop_submit(arpc_loop *loop, arpc_task_fn fn, void *arg)
{
    if (loop == NULL || fn == NULL)
        return ARPC_EINVAL;
    if (tl_loop == loop) {
        /* The loop thread cannot wait for itself: push_local overflows instead of failing. */
        int rc = arpc_mpsc_ring_push_local(&loop->l_ring, (arpc_mpsc_fn)fn, arg);
        if (rc == ARPC_OK && !loop->l_draining)
            loop_wake(loop);
        return rc;
    }
    int rc;
    unsigned attempt = 0;
    while ((rc = loop_push_remote(loop, fn, arg)) == ARPC_EAGAIN)
        arpc_backoff_spin(&attempt); /* full: the loop is awake and making room */
    return rc;
}

void arpc_loop_stop(arpc_loop *loop)
{
    if (loop == NULL)
        return;
    /* Under the gate, like a submit: a destroyer waits for our ev_async_send. */
    pthread_mutex_lock(&loop->l_push_mtx);
    if (atomic_exchange(&loop->l_stopping, 1) == 0) {
        arpc_mpsc_ring_close(&loop->l_ring);
        /* Not through l_wake_pending: wake_cb checks l_stopping whoever woke it. */
        ev_async_send(loop->l_ev, &loop->l_wake);
    }
    pthread_mutex_unlock(&loop->l_push_mtx);
}

/* From a thread other than the loop's: waits until nobody runs the loop any more, and
 * runs the final drain here if nobody ever did. */
static void loop_retire(arpc_loop *loop)
{
    pthread_mutex_lock(&loop->l_mtx);
    if (loop->l_started) {
        pthread_mutex_unlock(&loop->l_mtx);
        pthread_join(loop->l_thread, NULL);
        return;
    }
    while (loop->l_state == LOOP_RUNNING)
        pthread_cond_wait(&loop->l_cv, &loop->l_mtx);
    bool never_ran = loop->l_state == LOOP_IDLE;
    loop->l_state = LOOP_DONE;
    pthread_mutex_unlock(&loop->l_mtx);
    if (never_ran) {
        arpc_loop *outer = tl_loop;
        tl_loop = loop; /* we are the loop thread for the final drain */
        loop_finish(loop);
        tl_loop = outer;
    }
}

void arpc_loop_destroy(arpc_loop *loop)
{
    if (loop == NULL)
        return;
    if (tl_loop == loop) {
        /* Inside one of its own tasks or callbacks: the runner frees it after ev_run. */
        loop->l_destroy_requested = true;
        arpc_loop_stop(loop);
        return;
    }
    arpc_loop_stop(loop);
    loop_retire(loop);
    loop_free(loop);
}
