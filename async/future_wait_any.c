/*
 * Waiting for the first of several futures (arpc_future_wait_any).
 *
 * It registers one callback per future pointing at a small waiter object. It returns
 * as soon as one future completes, but the other callbacks stay registered until their
 * futures complete (a lock-free list cannot unlink them), so the waiter is refcounted: one
 * reference for the waiting thread, one per registered callback; the last one frees it.
 */
#include "arpc/future.h"

#include <stdatomic.h>

#include "arpc/error.h"
#include "async/futex.h"
#include "async/future_internal.h"
#include "async/loop_internal.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/entry.h"
#include "base/refcount.h"

enum {
    ANY_FIRED = 1u << 0,    /* some future completed */
    ANY_SLEEPING = 1u << 1, /* the waiting thread sleeps on w_word */
};

struct any_waiter {
    _Atomic uint32_t w_word;
    arpc_refcount w_refs;
    /* A wait that drives a loop sleeps in that loop's poll, not on w_word: the first firing
     * on another thread wakes the loop too, while the wait lasts (w_entry closes as it ends,
     * so no firing touches the loop afterwards). One registration per future serves both
     * ways of waiting. */
    _Atomic(arpc_loop *) w_loop;
    struct arpc_entry w_entry;
};

static void any_waiter_unref(struct any_waiter *w, size_t n)
{
    if (arpc_refcount_put_n(&w->w_refs, (unsigned)n))
        arpc_free(w);
}

static void any_waiter_fire(arpc_future *f, void *arg)
{
    struct any_waiter *w = arg;
    /* Only the first firing wakes, and only if the waiter sleeps. This callback's reference
     * keeps w alive through the wake even if the waiter returns at once. */
    uint32_t old = atomic_fetch_or_explicit(&w->w_word, ANY_FIRED, memory_order_release);
    if ((old & (ANY_FIRED | ANY_SLEEPING)) == ANY_SLEEPING)
        arpc_futex_wake_all((const uint32_t *)&w->w_word);
    if (!(old & ANY_FIRED) && arpc_entry_enter(&w->w_entry)) {
        /* Dekker with the wait (its store of w_loop, then its look at the futures): our
         * future's DONE was published before this load, the wait's w_loop before its look. */
        atomic_thread_fence(memory_order_seq_cst);
        arpc_loop *loop = atomic_load(&w->w_loop);
        if (loop != NULL && loop != arpc_loop_current()) /* its own thread looks anyway */
            arpc_loop_kick(loop);
        arpc_entry_leave(&w->w_entry);
    }
    any_waiter_unref(w, 1);
}

static bool any_done(arpc_future *const *fs, size_t n, size_t *index)
{
    for (size_t i = 0; i < n; i++) {
        if (arpc_future_done(fs[i])) {
            *index = i;
            return true;
        }
    }
    return false;
}

/* Registers w on fs[0..n); stops early once one fired (its scan will find it). */
static int any_waiter_register(struct any_waiter *w, arpc_future *const *fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((atomic_load_explicit(&w->w_word, memory_order_relaxed) & ANY_FIRED) ||
            arpc_future_then(fs[i], any_waiter_fire, w) != ARPC_OK) {
            any_waiter_unref(w, n - i); /* references reserved for the unregistered ones */
            return (atomic_load_explicit(&w->w_word, memory_order_relaxed) & ANY_FIRED)
                       ? ARPC_OK
                       : ARPC_ENOMEM;
        }
    }
    return ARPC_OK;
}

static int any_waiter_sleep(struct any_waiter *w, arpc_future *const *fs, size_t n,
                            uint64_t deadline, size_t *index)
{
    for (;;) {
        /* A callback fires only after its future published DONE, so FIRED implies the scan
         * finds a completed future. */
        if (any_done(fs, n, index))
            return ARPC_OK;
        if (deadline != ARPC_NEVER && arpc_now_ns() >= deadline)
            return ARPC_EPENDING;
        uint32_t s = atomic_fetch_or_explicit(&w->w_word, ANY_SLEEPING, memory_order_acquire);
        if (s & ANY_FIRED)
            continue;
        arpc_futex_wait((const uint32_t *)&w->w_word, s | ANY_SLEEPING, deadline);
    }
}

/* wait_any's condition for a wait that may drive a loop (arpc_loop_wait_cond_until). */
struct any_wait {
    struct any_waiter *aw_waiter;
    arpc_future *const *aw_fs;
    size_t aw_n;
    size_t *aw_index;
};

static bool any_wait_done(void *arg)
{
    struct any_wait *a = arg;
    return any_done(a->aw_fs, a->aw_n, a->aw_index);
}

static void any_wait_sleep(void *arg, uint64_t deadline_ns)
{
    struct any_wait *a = arg;
    (void)any_waiter_sleep(a->aw_waiter, a->aw_fs, a->aw_n, deadline_ns, a->aw_index);
}

/* True when the calling thread is inside the loop that alone completes each of fs (see
 * arpc_future_stuck_here): a wait for any of them could never end. */
static bool all_stuck_here(arpc_future *const *fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!arpc_future_stuck_here(fs[i]))
            return false;
    return true;
}

/* The one loop a wait for any of fs drives, or NULL: a caller-driven home first, whichever
 * future names it (nobody else runs it; see arpc_future_home), else an owned loop of this
 * thread that completes one of them (arpc_future_loop_to_run). Futures of other loops complete
 * while their own drivers run them. */
static arpc_loop *any_home(arpc_future *const *fs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        arpc_loop *home = arpc_future_home(fs[i]);
        if (home != NULL)
            return home;
    }
    for (size_t i = 0; i < n; i++) {
        arpc_loop *owned = arpc_future_loop_to_run(fs[i]); /* no home among fs: an owned loop or NULL */
        if (owned != NULL)
            return owned;
    }
    return NULL;
}

int arpc_future_wait_any(arpc_future *const *fs, size_t n, int64_t timeout_ms, size_t *index)
{
    if (n == 0 || fs == NULL || index == NULL)
        return ARPC_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!arpc_future_live(fs[i], __func__))
            return ARPC_EINVAL;
    if (any_done(fs, n, index))
        return ARPC_OK;
    if (timeout_ms == 0)
        return ARPC_EPENDING;
    uint64_t deadline = arpc_deadline_from_ms(timeout_ms);

    struct any_waiter *w = arpc_malloc(sizeof(*w));
    if (w == NULL)
        return ARPC_ENOMEM;
    atomic_init(&w->w_word, 0);
    arpc_refcount_init(&w->w_refs, (unsigned)(n + 1));
    atomic_init(&w->w_loop, NULL);
    arpc_entry_init(&w->w_entry);
    int rc = any_waiter_register(w, fs, n);
    arpc_loop *home = rc == ARPC_OK ? any_home(fs, n) : NULL;
    if (home != NULL) {
        struct any_wait a = {w, fs, n, index};
        /* Futures of other producers (JSON-RPC), and calls of other clients (completed by their
         * own loops), may be completed on other threads without waking this loop: the waiter's
         * firing wakes it (set before the drive's first look: a firing that misses it came
         * before, and that look sees its future done). */
        atomic_store(&w->w_loop, home);
        atomic_thread_fence(memory_order_seq_cst); /* before the drive's first look: see any_waiter_fire */
        rc = arpc_loop_wait_cond_until(home, any_wait_done, any_wait_sleep, &a, deadline, -1, NULL);
        arpc_entry_close(&w->w_entry); /* the loop may go once the wait returns */
        if (rc == ARPC_EBUSY && any_done(fs, n, index))
            rc = ARPC_OK;
    } else if (rc == ARPC_OK && all_stuck_here(fs, n)) {
        rc = any_done(fs, n, index) ? ARPC_OK : ARPC_EBUSY;
    } else if (rc == ARPC_OK) {
        rc = any_waiter_sleep(w, fs, n, deadline, index);
    }
    any_waiter_unref(w, 1);
    return rc;
}
