/*
 * How work reaches a loop: two lanes, one wake-up.
 *
 * The task ring (arpc_loop_submit): a bounded Concurrency Kit ring of (fn, arg) for the public
 * API. Bounded on purpose: a submitter that outruns the loop waits for room (back-pressure).
 *
 * The job lane (arpc_loop_post): an unbounded intrusive Concurrency Kit stack
 * (base/stack_fifo.h) of jobs embedded in the caller's own objects (a call, a reply). Posting
 * never waits and never allocates: one CAS. arpc's own hot paths use it (calls, cancels,
 * replies from workers), because they must never wait: a worker blocked on a full loop ring
 * while the loop is blocked on that worker's full mailbox is a deadlock (found in review,
 * reproduced), and a caller-driven loop nobody runs cannot make room for its own caller. The
 * drain takes the whole stack at once and runs it in push order (FIFO per poster).
 *
 * Wake-ups. Producers publish, then exchange l_wake_pending 0 -> 1, and only the one that saw
 * 0 calls ev_async_send: one wake-up per batch. The loop resets the flag at the start of
 * wake_cb, *before* it drains. The exchange (a seq_cst read-modify-write, after the publish)
 * and the reset (a seq_cst store, before the takes) are totally ordered: a producer whose
 * exchange saw 1 came before the reset, so the drain that follows sees its work; one whose
 * exchange saw 0 sends a new wake-up. Work published on the loop thread during a drain needs
 * no wake-up: the drain looks again before it returns.
 *
 * Fairness. One wake-up runs at most LOOP_DRAIN_BATCH tasks and jobs each, then wakes itself
 * again through the same flag: the eventfd write makes the next round wait for one poll, so
 * sockets and timers get their turn even under a flood (work that re-posts itself included).
 *
 * Producer gate (the ring only). ck_ring's MPSC enqueue makes each producer spin until every
 * producer holding an earlier ticket has published; with more submitting threads than cores,
 * a producer preempted between ticket and publish stalls all the others for a time slice (on
 * 2 cores, 4 threads needed 8 s for 40k tasks). Submitters on other threads therefore take
 * l_push_mtx (adaptive) around the push and its wake-up: 4 x 100k tasks then take ~0.1 s. The
 * loop thread's own submits skip it. The job lane needs no gate: a CAS push never waits for
 * another producer.
 *
 * Closing. After loop_lanes_close returns, every submit and post fails with ARPC_ESHUTDOWN,
 * and none is still on its way in: the ring's close waits for pushes past their check, and
 * the lane counts its posters the same way (l_lane_posters, incremented before the closed
 * check, decremented after the wake-up: the wake-up is a poster's last touch of the loop,
 * which is what lets a destroyer free it). The final drain then sees everything accepted.
 */
#include "async/loop_impl.h"

#include "arpc/error.h"
#include "base/backoff.h"
#include "base/stack_fifo.h"

CK_STACK_CONTAINER(struct arpc_loop_job, j_link, job_of)

void loop_lanes_init(arpc_loop *loop)
{
    ck_stack_init(&loop->l_lane);
    atomic_init(&loop->l_lane_closed, 0);
    atomic_init(&loop->l_lane_posters, 0);
    atomic_init(&loop->l_wake_pending, 0);
}

void loop_wake(arpc_loop *loop)
{
    if (atomic_exchange(&loop->l_wake_pending, 1) == 0)
        ev_async_send(loop->l_ev, &loop->l_wake);
}

/* Runs up to limit jobs from the lane; true when some may be left. */
static bool loop_drain_lane(arpc_loop *loop, size_t limit)
{
    size_t n = 0;
    while (n < limit) {
        ck_stack_entry_t *e = arpc_stack_take_fifo(&loop->l_lane);
        if (e == NULL)
            return false;
        while (e != NULL) {
            ck_stack_entry_t *next = e->next; /* the job may be freed by its own function */
            struct arpc_loop_job *job = job_of(e);
            job->j_fn(loop, job);
            e = next;
            n++;
        }
    }
    return !arpc_stack_is_empty(&loop->l_lane);
}

/* Runs up to limit tasks from the ring; true when it stopped at the limit. */
static bool loop_drain_ring(arpc_loop *loop, size_t limit)
{
    struct arpc_mpsc_task t;
    size_t n = 0;
    while (n < limit && arpc_mpsc_ring_pop(&loop->l_ring, &t)) {
        ((arpc_task_fn)t.fn)(loop, t.arg);
        n++;
    }
    return n == limit;
}

/* One round of both lanes; true when work may be left. */
static bool loop_drain(arpc_loop *loop, size_t limit)
{
    loop->l_draining = true;
    bool more = loop_drain_lane(loop, limit);
    more |= loop_drain_ring(loop, limit);
    more |= !arpc_stack_is_empty(&loop->l_lane); /* posted by a ring task just now */
    loop->l_draining = false;
    return more;
}

void loop_drain_all(arpc_loop *loop)
{
    while (loop_drain(loop, SIZE_MAX))
        ;
}

void loop_wake_cb(struct ev_loop *ev, ev_async *w, int revents)
{
    arpc_loop *loop = w->data;
    (void)ev;
    (void)revents;
    if (loop->l_finishing)
        return;
    /* Reset before draining: work that races the drain sends a fresh wake-up. */
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

void loop_lanes_close(arpc_loop *loop)
{
    arpc_mpsc_ring_close(&loop->l_ring);
    atomic_store(&loop->l_lane_closed, 1);
    unsigned attempt = 0;
    while (atomic_load(&loop->l_lane_posters) != 0)
        arpc_backoff_spin(&attempt);
}

int arpc_loop_post(arpc_loop *loop, struct arpc_loop_job *job)
{
    atomic_fetch_add(&loop->l_lane_posters, 1);
    if (atomic_load(&loop->l_lane_closed)) {
        atomic_fetch_sub(&loop->l_lane_posters, 1);
        return ARPC_ESHUTDOWN;
    }
    /* Everything the poster wrote to the job happens-before the job runs (the stack's edge). */
    arpc_stack_push(&loop->l_lane, &job->j_link);
    if (!(loop_tl_current == loop && loop->l_draining))
        loop_wake(loop);
    atomic_fetch_sub(&loop->l_lane_posters, 1);
    return ARPC_OK;
}

/* Other threads: one at a time through the gate (see "Producer gate"). */
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
    if (loop_tl_current == loop) {
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
