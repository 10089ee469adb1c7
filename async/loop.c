/*
 * Design notes: the life of a loop.
 *
 * Stopping. arpc_loop_stop closes the lane (from any thread: closing only waits for posters
 * already past their check, a few instructions; see async/loop_lanes.c), so every submit or
 * post that returns after stop fails with ARPC_ESHUTDOWN, then wakes the loop. The loop
 * thread then runs the final drain (every accepted task and job, including ones it pushed to
 * itself before the close), the on_stop hooks, and breaks out of ev_run. Work that runs in
 * the final drain and the hooks cannot submit: the lane is closed. Deadlines still armed do
 * not fire; freeing the loop leaves them unarmed. A stopped loop cannot run again: start and
 * run report ARPC_ESHUTDOWN (a started loop's at once, even while its thread is on its way
 * out); one stopped before it ever ran runs once, for that final drain.
 *
 * Which thread is the loop thread: a thread-local pointer set while a thread runs the loop
 * (no pthread_t compare races, and nesting is restored). A loop that never ran and is
 * destroyed runs its final drain and hooks on the destroying thread, which acts as the loop
 * thread for that time, so accepted work still runs exactly once.
 *
 * Destroy. From another thread: stop, then join the thread (arpc_loop_start) or wait for
 * arpc_loop_run to return (loop_state_wait), or do the final drain here (never ran); then free.
 * Three kinds of caller may still be touching the loop then, each counted: posters in their
 * wake-up (l_entry, which the close waited out), submitters waiting for room (l_room_waiters,
 * async/loop_lanes.c) and the first stopper in its ev_async_send (l_stopping is 1 until it is
 * done, and the free waits for 2). No lock: a
 * stopper never waits for a poster's lock, nor a poster for anyone. From the loop thread
 * (inside a task, job, callback or hook): mark l_destroy_requested and stop; whoever ran the
 * loop frees it once ev_run has returned: the started thread detaches itself first,
 * arpc_loop_run frees it just before returning ARPC_OK (the caller must not touch the loop
 * afterwards).
 */
#define _GNU_SOURCE
#include "async/awake.h"
#include "async/loop_impl.h"

#include <string.h>

#include "arpc/error.h"
#include "async/futex.h"
#include "base/alloc.h"
#include "base/backoff.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/options.h"
#include "base/thread.h"

#define LOOP_DEFAULT_SUBMIT_BOUND 8192u

_Thread_local arpc_loop *loop_tl_current;

bool loop_owned_here(const arpc_loop *loop)
{
    return loop->l_owned && pthread_equal(loop->l_owner, pthread_self());
}

bool loop_inside(const arpc_loop *loop)
{
    /* ev_depth is only read on the owner thread, the one thread that runs a wrapped ev. */
    return loop_tl_current == loop || (loop_owned_here(loop) && ev_depth(loop->l_ev) > 0);
}

arpc_loop *arpc_loop_current(void) { return loop_tl_current; }

/* This thread's wrapped and pollable loops, from creation to destroy (both on this thread:
 * arpc_loop_destroy refuses an owned loop anywhere else), so the list needs no lock. */
static _Thread_local arpc_loop *loop_tl_owned;

arpc_loop *arpc_loop_owned_named(const void *name)
{
    for (arpc_loop *l = loop_tl_owned; l != NULL; l = l->l_owned_next)
        if (l == name)
            return l;
    return NULL;
}

static void loop_owned_forget(arpc_loop *loop)
{
    for (arpc_loop **p = &loop_tl_owned; *p != NULL; p = &(*p)->l_owned_next)
        if (*p == loop) {
            *p = loop->l_owned_next;
            return;
        }
}

bool arpc_loop_waiters_run(const arpc_loop *loop)
{
    return !loop->l_owned && !atomic_load_explicit(&loop->l_started, memory_order_acquire);
}

bool arpc_loop_on_thread(const arpc_loop *loop) { return loop_live(loop, __func__) && loop_inside(loop); }

struct ev_loop *arpc_loop_ev(arpc_loop *loop) { return loop->l_ev; }

uint64_t arpc_loop_wakeups(arpc_loop *loop)
{
    return atomic_load_explicit(&loop->l_wakeups, memory_order_relaxed);
}

void loop_finish(arpc_loop *loop)
{
    if (loop->l_finishing)
        return;
    loop->l_finishing = true;
    loop_lanes_close(loop); /* arpc_loop_stop closed it already; idempotent */
    loop_drain_all(loop);
    /* Index, not pointer: a hook may register another hook (and move the array). */
    for (size_t i = 0; i < loop->l_nhooks; i++)
        loop->l_hooks[i].fn(loop, loop->l_hooks[i].arg);
    loop->l_finished = true;
    if (!loop->l_wrapped || loop_tl_current == loop)
        ev_break(loop->l_ev, EVBREAK_ALL); /* never the application's own ev_run */
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

static int loop_init_ev(arpc_loop *loop, struct ev_loop *app_ev)
{
    loop->l_ev = app_ev != NULL ? app_ev : ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (loop->l_ev == NULL)
        return ARPC_ESYSTEM;
    ev_async_init(&loop->l_wake, loop_wake_cb);
    loop->l_wake.data = loop;
    ev_async_start(loop->l_ev, &loop->l_wake); /* also what keeps ev_run from returning */
    loop_timers_init(loop);
    if (app_ev != NULL) {
        /* In the application's loop our standing watchers must not keep its ev_run going:
         * connections, timers and queued work still do, while they are active. */
        ev_unref(loop->l_ev);
        ev_unref(loop->l_ev);
    }
    return ARPC_OK;
}

static int loop_new(arpc_loop **out, const arpc_loop_options *caller_opts, size_t opts_size,
                    struct ev_loop *app_ev)
{
    arpc_loop_options copy;
    int opts_rc = arpc_options_copy(&copy, sizeof(copy), caller_opts, opts_size);
    const arpc_loop_options *opts = caller_opts != NULL ? &copy : NULL;
    if (out == NULL)
        return ARPC_EINVAL;
    *out = NULL;
    if (opts_rc != ARPC_OK)
        return opts_rc;
    if (opts != NULL && opts->pollable && app_ev != NULL)
        return ARPC_EINVAL; /* a wrapped loop is polled through the application's own ev */
    unsigned bound = LOOP_DEFAULT_SUBMIT_BOUND;
    if (opts != NULL && opts->submit_ring_size != 0)
        bound = opts->submit_ring_size;
    arpc_awake_init(); /* its descriptor opens at a known point (async/awake.c) */
    arpc_loop *loop = arpc_calloc(1, sizeof(*loop));
    if (loop == NULL)
        return ARPC_ENOMEM;
    int rc = ARPC_ESYSTEM; /* what a failure below returns, unless it says otherwise */
    atomic_init(&loop->l_magic, ARPC_MAGIC_LOOP);
    loop->l_fork_gen = arpc_fork_gen_start();
    atomic_init(&loop->l_destroying, false);
    atomic_init(&loop->l_users, 0);
    arpc_refcount_init(&loop->l_mem_refs, 1);
    if (pthread_mutex_init(&loop->l_mtx, NULL) != 0)
        goto fail;
    if (pthread_mutex_init(&loop->l_sync_mtx, NULL) != 0)
        goto fail_mtx;
    loop->l_wrapped = app_ev != NULL;
    loop->l_owned = app_ev != NULL || (opts != NULL && opts->pollable);
    loop->l_owner = pthread_self();
    if (loop_init_ev(loop, app_ev) != ARPC_OK)
        goto fail_sync_mtx;
    if (opts != NULL && opts->pollable && (rc = loop_poll_init(loop)) != ARPC_OK)
        goto fail_ev; /* ARPC_ENOMEM or ARPC_ESYSTEM, as it said (review 239) */
    loop_lanes_init(loop, bound);
    atomic_init(&loop->l_stopping, 0);
    atomic_init(&loop->l_wakeups, 0);
    atomic_init(&loop->l_state, LOOP_IDLE);
    atomic_init(&loop->l_started, false);
    if (loop->l_owned) {
        loop->l_owned_next = loop_tl_owned;
        loop_tl_owned = loop;
    }
    *out = loop;
    return ARPC_OK;

fail_ev:
    loop_timers_fini(loop);
    ev_async_stop(loop->l_ev, &loop->l_wake);
    ev_loop_destroy(loop->l_ev);
fail_sync_mtx:
    pthread_mutex_destroy(&loop->l_sync_mtx);
fail_mtx:
    pthread_mutex_destroy(&loop->l_mtx);
fail:
    arpc_free(loop);
    return rc;
}

int arpc_loop_create_v(arpc_loop **out, const arpc_loop_options *opts, size_t opts_size)
{
    return loop_new(out, opts, opts_size, NULL);
}

int arpc_loop_wrap_v(arpc_loop **out, struct ev_loop *ev, const arpc_loop_options *opts, size_t opts_size)
{
    if (ev == NULL) {
        if (out != NULL)
            *out = NULL;
        return ARPC_EINVAL;
    }
    return loop_new(out, opts, opts_size, ev);
}

/* The loop has finished (its lane is drained and closed) and nobody will run it again. */
static void loop_free(arpc_loop *loop)
{
    /* The first stopper may still be in its ev_async_send: let it finish with the loop. */
    unsigned attempt = 0;
    while (atomic_load(&loop->l_stopping) != 2)
        arpc_backoff_spin(&attempt);
    /* Submitters waiting for room when the lane closed: they see it and leave (loop_lanes.c). */
    while (atomic_load(&loop->l_room_waiters) != 0)
        arpc_backoff_spin(&attempt);
    if (loop->l_wrapped) {
        ev_ref(loop->l_ev); /* give back the references loop_init_ev took off */
        ev_ref(loop->l_ev);
    }
    ev_async_stop(loop->l_ev, &loop->l_wake);
    loop_timers_fini(loop);
    loop_cold_fini(loop);
    if (!loop->l_wrapped)
        ev_loop_destroy(loop->l_ev);
    loop_poll_fini(loop);
    loop_lanes_fini(loop);
    arpc_free(loop->l_hooks);
    pthread_mutex_destroy(&loop->l_sync_mtx);
    pthread_mutex_destroy(&loop->l_mtx);
    arpc_handle_poison(loop);
    arpc_loop_mem_release(loop); /* the memory itself, once no future or queue names it */
}

void arpc_loop_mem_retain(arpc_loop *loop) { arpc_refcount_get(&loop->l_mem_refs); }

void arpc_loop_mem_release(arpc_loop *loop)
{
    if (arpc_refcount_put(&loop->l_mem_refs))
        arpc_free(loop);
}

/* Runs the loop on the calling thread until it has finished. */
static void loop_body(arpc_loop *loop)
{
    arpc_loop *outer = loop_tl_current;
    loop_tl_current = loop;
    while (!loop->l_finished)
        ev_run(loop->l_ev, 0);
    loop_tl_current = outer;
}

/* Ends a run (state: IDLE or DONE) and wakes whoever sleeps for that. The waker may touch
 * the word after a waiter has seen the new state and freed the loop: a private futex wake
 * only hashes the address, and a sleeper elsewhere tolerates a spurious wake. */
static void loop_set_state(arpc_loop *loop, enum loop_state state)
{
    uint32_t was = atomic_exchange_explicit(&loop->l_state, state, memory_order_acq_rel);
    if (was & LOOP_WAITED)
        arpc_futex_wake_all((const uint32_t *)&loop->l_state);
}

enum loop_state loop_state_wait(arpc_loop *loop)
{
    for (;;) {
        uint32_t s = atomic_load_explicit(&loop->l_state, memory_order_acquire);
        if ((s & ~LOOP_FLAGS) != LOOP_RUNNING)
            return (enum loop_state)s; /* IDLE or DONE: no flags */
        if (!(s & LOOP_WAITED)) {
            if (!atomic_compare_exchange_weak_explicit(&loop->l_state, &s, s | LOOP_WAITED, memory_order_acq_rel,
                                                       memory_order_acquire))
                continue; /* the run ended, or another waiter marked it: look again */
            s |= LOOP_WAITED;
        }
        arpc_futex_wait((const uint32_t *)&loop->l_state, s, ARPC_NEVER);
    }
}

void loop_end_run(arpc_loop *loop)
{
    loop_awake_leave(loop);
    if (loop->l_destroy_requested)
        loop_free(loop); /* destroyed from one of its tasks: the caller lent us the thread */
    else
        loop_set_state(loop, LOOP_DONE); /* our last touch of the loop */
}

void loop_release(arpc_loop *loop)
{
    loop_awake_leave(loop);
    loop_set_state(loop, LOOP_IDLE);
}

int loop_claim(arpc_loop *loop)
{
    uint32_t s = LOOP_IDLE;
    if (atomic_compare_exchange_strong_explicit(&loop->l_state, &s, LOOP_RUNNING, memory_order_acquire,
                                                memory_order_acquire))
        return ARPC_OK;
    return s == LOOP_DONE ? ARPC_ESHUTDOWN : ARPC_EBUSY;
}

/* loop_claim for a run that keeps the loop (start, run): a submitter's step holding it for
 * a moment (loop_lanes.c) is waited out, not reported as ARPC_EBUSY. A started loop that was
 * stopped is ARPC_ESHUTDOWN whether or not its thread has finished yet (a run right after the
 * stop found that thread still on its way out and said ARPC_EBUSY); one stopped before it
 * ever ran still runs once, for its final drain. */
static int loop_claim_run(arpc_loop *loop)
{
    if (atomic_load(&loop->l_stopping) != 0 && atomic_load_explicit(&loop->l_started, memory_order_acquire))
        return ARPC_ESHUTDOWN;
    int rc;
    unsigned attempt = 0;
    while ((rc = loop_claim(loop)) == ARPC_EBUSY && loop_busy_briefly(loop))
        arpc_backoff_spin(&attempt);
    return rc;
}

static void *loop_thread_main(void *arg)
{
    arpc_loop *loop = arg;
    pthread_setname_np(pthread_self(), "arpc-loop");
    loop_body(loop);
    if (!loop->l_destroy_requested) {
        loop_set_state(loop, LOOP_DONE); /* arpc_loop_destroy will join us */
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

/* A wrapped or pollable loop is run by the application: arpc_loop_start/run on one is refused,
 * and said (a bare ARPC_EINVAL left a new user guessing). */
static bool loop_refuse_owned(const arpc_loop *loop, const char *fn)
{
    if (!loop->l_owned)
        return false;
    arpc_log(ARPC_LOG_WARN, "%s refused: this loop is %s, run by the application (arpc/loop.h)", fn,
             loop->l_wrapped ? "wrapped (an ev_loop of the application's)" : "pollable (arpc_loop_fd and arpc_loop_run_nowait)");
    return true;
}

int arpc_loop_start(arpc_loop *loop)
{
    if (!loop_live(loop, __func__) || loop_refuse_owned(loop, __func__))
        return ARPC_EINVAL;
    pthread_mutex_lock(&loop->l_mtx);
    int rc = loop_claim_run(loop);
    if (rc == ARPC_OK) {
        pthread_t thread;
        if (arpc_thread_create(&thread, loop_thread_main, loop) != 0) { /* takes no signals */
            loop_set_state(loop, LOOP_IDLE);
            rc = ARPC_ESYSTEM;
        } else {
            loop->l_thread = thread;
            atomic_store_explicit(&loop->l_started, true, memory_order_release);
        }
    }
    pthread_mutex_unlock(&loop->l_mtx);
    return rc;
}

int arpc_loop_run(arpc_loop *loop)
{
    if (!loop_live(loop, __func__) || loop_refuse_owned(loop, __func__))
        return ARPC_EINVAL;
    int rc = loop_claim_run(loop);
    if (rc != ARPC_OK)
        return rc;
    loop_body(loop);
    loop_end_run(loop);
    return ARPC_OK;
}

void arpc_loop_stop(arpc_loop *loop)
{
    if (!loop_live(loop, __func__))
        return;
    loop_lanes_close(loop); /* every stopper: once it returns, nothing is accepted any more */
    int running = 0;
    if (atomic_compare_exchange_strong(&loop->l_stopping, &running, 1)) {
        /* Not through l_wake_pending: wake_cb checks l_stopping whoever woke it. */
        ev_async_send(loop->l_ev, &loop->l_wake);
        loop_poll_signal(loop);
        atomic_store(&loop->l_stopping, 2); /* our last touch of the loop (see Destroy) */
    }
}

/* From a thread other than the loop's: waits until nobody runs the loop any more, and
 * runs the final drain here if nobody ever did. */
static void loop_retire(arpc_loop *loop)
{
    if (atomic_load_explicit(&loop->l_started, memory_order_acquire)) { /* and l_thread with it */
        pthread_join(loop->l_thread, NULL);
        return;
    }
    uint32_t was;
    do
        was = loop_state_wait(loop);
    while (was != LOOP_DONE && !atomic_compare_exchange_weak_explicit(&loop->l_state, &was, LOOP_DONE,
                                                                       memory_order_acq_rel, memory_order_acquire));
    if (was == LOOP_IDLE) { /* never ran */
        arpc_loop *outer = loop_tl_current;
        loop_tl_current = loop; /* we are the loop thread for the final drain */
        loop_finish(loop);
        loop_tl_current = outer;
    }
}

void arpc_loop_users_add(arpc_loop *loop, int delta) { atomic_fetch_add(&loop->l_users, delta); }

void arpc_loop_destroy(arpc_loop *loop)
{
    if (!loop_live(loop, __func__))
        return;
    if (loop->l_owned && (!loop_owned_here(loop) || loop_inside(loop))) {
        /* Only the owner, outside its ev_run or steps, may finish it: anyone else would race
         * the owner running it, and nobody could free it after a callback returns. */
        arpc_log(ARPC_LOG_ERROR, "arpc_loop_destroy: a wrapped or pollable loop is destroyed by the thread that "
                                 "created it, outside ev_run or arpc_loop_run_nowait; the loop is left as it is");
        return;
    }
    int users = atomic_load(&loop->l_users);
    if (users > 0) {
        /* Freeing it would leave them a loop to use after free (the next call, close or
         * destroy): the loop is leaked instead, and said. */
        arpc_log(ARPC_LOG_ERROR, "arpc_loop_destroy: %d server(s) or client(s) still use this loop: destroy and close "
                 "them first; the loop is left as it is", users);
        return;
    }
    /* A second destroy while the first is under way (its final drain, or from one of the
     * loop's own tasks, where the free waits for ev_run to return): the magic is still live. */
    if (atomic_exchange(&loop->l_destroying, true)) {
        (void)arpc_handle_misuse(loop, "loop", __func__);
        return;
    }
    if (loop_tl_current == loop) {
        /* Inside one of its own tasks or callbacks: the runner frees it after ev_run. */
        loop->l_destroy_requested = true;
        arpc_loop_stop(loop);
        return;
    }
    arpc_loop_stop(loop);
    loop_retire(loop);
    if (loop->l_owned)
        loop_owned_forget(loop); /* on its owner's thread (checked above) */
    loop_free(loop);
}
