/*
 * How work reaches a loop: one lane, one wake-up.
 *
 * The lane is an unbounded intrusive Concurrency Kit stack (base/stack_fifo.h) of jobs. A
 * post pushes with one CAS: no lock, and no poster ever waits for another (a poster
 * preempted anywhere holds up nobody). The drain takes the whole stack at once and runs it
 * in push order: FIFO per poster, and one total order across posters, tasks and jobs alike.
 *
 * Jobs (arpc_loop_post) are embedded in the caller's own objects (a call, a reply): posting
 * one never waits and never allocates. arpc's own hot paths use them because they must never
 * wait: a worker blocked on a full loop queue while the loop is blocked on that worker's full
 * mailbox is a deadlock (found in review, reproduced), and a caller-driven loop nobody runs
 * cannot make room for its own caller.
 *
 * Tasks (arpc_loop_submit, the public API) travel on the same lane, each in a small node
 * (struct loop_task) from the loop's node pool (base/node_pool.h: lock-free, no allocation
 * once warm). They are bounded: l_queued counts the tasks submitted and not yet given back,
 * and a submitter on another thread takes a place in it before it pushes (fetch_add, inside the
 * lane's entry; if that went past the bound, it gives the place back, leaves the entry and
 * waits with arpc_backoff_spin for the loop to make room: whoever queued the tasks that fill
 * it woke the loop). The loop gives places back, with the tasks' nodes, as it starts the
 * tasks, in batches (every LOOP_GIVE_BACK tasks, when it starts the last task of a take, and
 * at the end of each round): one atomic subtraction and one CAS per batch instead of per
 * task. The loop thread's own submits count too but never wait (it cannot wait for itself).
 * Nor can the caller of a caller-driven loop that nobody runs (it would run it next, and a
 * single-threaded program waited there for ever): a waiter finding such a loop idle claims it
 * and runs a non-blocking step itself (loop_step_for_room), its claim marked LOOP_STEP, so
 * that a driver, start or run finding the loop claimed by such a step waits for it instead of
 * reporting ARPC_EBUSY (loop_busy_briefly). Only failed takers push the count past the
 * bound, and only until they undo, so the tasks submitted and not yet started never exceed
 * the bound unless the loop itself submitted them.
 *
 * Wake-ups. A producer whose push found the lane empty (arpc_stack_push_first) then
 * exchanges l_wake_pending 0 -> 1, and only if it saw 0 calls ev_async_send: one wake-up per
 * batch. A push onto a non-empty lane needs none: the push at the bottom of that stack woke
 * the loop, and the take that finds it finds the later ones too. The loop resets the flag at
 * the start of wake_cb, *before* it drains. The exchange (a seq_cst read-modify-write, after
 * the publish) and the reset (a seq_cst store, before the take) are totally ordered: a
 * producer whose exchange saw 1 came before the reset, so the drain that follows sees its
 * work (or leaves it for a round it schedules itself); one whose exchange saw 0 sends a new
 * wake-up. (A plain load that sees 1 first is as good as the exchange seeing it.) Work
 * published on the loop thread during a drain needs no wake-up: the drain looks again
 * before it returns.
 *
 * Fairness. One wake-up runs at most LOOP_DRAIN_BATCH jobs (what is left of a take waits in
 * l_taken for the next round, ahead of anything newer), then wakes itself again through the
 * same flag: the eventfd write makes the next round wait for one poll, so sockets and timers
 * get their turn even under a flood (work that re-posts itself included).
 *
 * Lazy jobs (arpc_loop_post_lazy) go on a second stack, l_lazy, and wake nobody. A check
 * watcher of the lowest priority runs them each time the loop wakes up, after that
 * iteration's I/O callbacks: the bookkeeping of a reply that already left comes after the
 * request its client sent next has been read and handed on, off that call's path (the reply
 * cache and the flow limits take either order: an ack or a GOAWAY that overtakes a reply's
 * bookkeeping is honoured when it comes, core/reply_direct.c). Every drain runs them first too, and again after each
 * new take of the lane, so a lazy job pushed before a lane job runs before it (a stop's last
 * step, run_sync, relies on that; the final drain too), even when the drain was under way. Anything
 * they queue for writing is flushed by the prepare watchers of the same iteration. Costs one
 * load per iteration when there are none. In an application's loop (wrapped) the watcher does
 * not keep its ev_run going (ev_unref, as the loop's other standing watchers).
 *
 * Idle (arpc_loop_idle): a prepare watcher of the lowest priority, the last callback before
 * the poll, sets l_asleep; a check watcher of the highest priority, the first after it, clears
 * it. A poster reading
 * it true with both stacks empty and no wake-up pending knows its work would wake the loop
 * for itself alone (a worker's reply then leaves from the worker). Relaxed: a heuristic; a
 * stale answer costs a wake-up or a send, never correctness.
 *
 * Closing. After loop_lanes_close returns, every submit and post fails with ARPC_ESHUTDOWN,
 * and none is still on its way in: posters go through l_entry (base/entry.h), counted from
 * before the closed check to after the wake-up, their last touch of the loop, which is what
 * lets a destroyer free it. A submitter waiting for room is outside (it touches only l_queued
 * and the closed flag, and a stop does not wait for it: it sees the close and gives up). The
 * final drain then sees everything accepted.
 */
#include "async/awake.h"
#include "async/loop_impl.h"

#include "arpc/error.h"
#include "base/backoff.h"
#include "base/bound.h"
#include "base/clock.h"
#include "base/stack_fifo.h"

CK_STACK_CONTAINER(struct arpc_loop_job, j_link, job_of)

/* A task submitted with arpc_loop_submit, carried by the lane. */
struct loop_task {
    struct arpc_loop_job t_job; /* first: the job is the task */
    arpc_task_fn t_fn;
    void *t_arg;
};

static void loop_give_back(arpc_loop *loop);

/* Lazy jobs that must not wait through a poll: l_lazy_soon (non-zero) while an owner needs
 * that (arpc_loop_lazy_soon), l_lazy_by_ns (non-zero: the earliest time asked) unless the
 * loop's own deadline wakes it by then (arpc_loop_post_lazy_within). Each is set after its
 * job's push and cleared before the take that runs it: one set after the clear stays for the
 * next sleep, whose prepare (loop_sleep_mark_cb) sees it. */
static void loop_run_lazy(arpc_loop *loop)
{
    if (atomic_load_explicit(&loop->l_lazy_soon, memory_order_relaxed) != 0)
        atomic_store(&loop->l_lazy_soon, 0);
    if (atomic_load_explicit(&loop->l_lazy_by_ns, memory_order_relaxed) != 0)
        atomic_store(&loop->l_lazy_by_ns, 0);
    if (arpc_stack_is_empty(&loop->l_lazy))
        return;
    for (ck_stack_entry_t *e = arpc_stack_take_fifo(&loop->l_lazy), *next; e != NULL; e = next) {
        next = e->next; /* before the call: the job may be freed by its own function */
        struct arpc_loop_job *job = job_of(e);
        job->j_fn(loop, job);
    }
}

static void loop_lazy_cb(struct ev_loop *ev, ev_check *w, int revents)
{
    (void)ev;
    (void)revents;
    arpc_loop *loop = w->data;
    loop->l_in_turn = false; /* (lazy jobs posted from here on wait for a wake-up) */
    if (!loop->l_finishing) /* the final drain runs them */
        loop_run_lazy(loop);
}

static void loop_wake_mark_cb(struct ev_loop *ev, ev_check *w, int revents)
{
    (void)ev;
    (void)revents;
    arpc_loop *loop = w->data;
    (void)arpc_loop_now_update(loop); /* the first watcher of the turn: its I/O sees the time */
    loop->l_in_turn = true;
    atomic_store_explicit(&loop->l_asleep, false, memory_order_relaxed);
    if (!loop->l_counted_awake) {
        loop->l_counted_awake = true;
        arpc_awake_add(1);
    }
}

static void loop_sleep_mark_cb(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)ev;
    (void)revents;
    arpc_loop *loop = w->data;
    /* Its first deadline, before l_asleep: a poster that sees it asleep sees when it wakes
     * anyway. (Arming and firing deadlines is the loop's own business: while it sleeps the
     * time stays right.) */
    uint64_t until = loop_next_deadline_ns(loop);
    atomic_store_explicit(&loop->l_sleep_until, until, memory_order_relaxed);
    /* Seq-cst, then the flag: a poster of lazy jobs that must not wait (arpc_loop_lazy_soon,
     * arpc_loop_post_lazy_within) either sees l_asleep and wakes the loop, or is seen here
     * (Dekker's pattern). */
    atomic_store(&loop->l_asleep, true);
    uint64_t by = atomic_load(&loop->l_lazy_by_ns);
    if (by != 0 && until > by && atomic_exchange(&loop->l_lazy_by_ns, 0) != 0)
        loop_wake(loop);
    else if (atomic_load(&loop->l_lazy_soon) != 0 &&
             atomic_load_explicit(&loop->l_lazy_urgent, memory_order_relaxed) > 0 &&
             atomic_exchange(&loop->l_lazy_soon, 0) != 0)
        loop_wake(loop);
    loop_awake_leave(loop);
}

void loop_awake_leave(arpc_loop *loop)
{
    if (loop->l_counted_awake) {
        loop->l_counted_awake = false;
        arpc_awake_add(-1);
    }
}

void loop_lanes_init(arpc_loop *loop, unsigned submit_bound)
{
    ck_stack_init(&loop->l_lane);
    ck_stack_init(&loop->l_lazy);
    atomic_init(&loop->l_asleep, false);
    atomic_init(&loop->l_lazy_soon, 0);
    atomic_init(&loop->l_lazy_by_ns, 0);
    atomic_init(&loop->l_sleep_until, ARPC_NEVER);
    atomic_init(&loop->l_lazy_urgent, 0);
    ev_check_init(&loop->l_lazy_check, loop_lazy_cb);
    ev_set_priority(&loop->l_lazy_check, EV_MINPRI);
    loop->l_lazy_check.data = loop;
    ev_check_start(loop->l_ev, &loop->l_lazy_check);
    ev_check_init(&loop->l_wake_mark, loop_wake_mark_cb);
    ev_set_priority(&loop->l_wake_mark, EV_MAXPRI);
    loop->l_wake_mark.data = loop;
    ev_check_start(loop->l_ev, &loop->l_wake_mark);
    ev_prepare_init(&loop->l_sleep_mark, loop_sleep_mark_cb);
    ev_set_priority(&loop->l_sleep_mark, EV_MINPRI);
    loop->l_sleep_mark.data = loop;
    ev_prepare_start(loop->l_ev, &loop->l_sleep_mark);
    if (loop->l_wrapped) /* the application's ev_run must not wait for them (see the top) */
        for (int i = 0; i < 3; i++)
            ev_unref(loop->l_ev);
    loop->l_taken = NULL;
    loop->l_spent = (struct arpc_node_chain){0};
    arpc_entry_init(&loop->l_entry);
    atomic_init(&loop->l_wake_pending, 0);
    atomic_init(&loop->l_queued, 0);
    atomic_init(&loop->l_room_waiters, 0);
    loop->l_submit_bound = submit_bound;
    arpc_node_pool_init(&loop->l_tasks, sizeof(struct loop_task));
}

void loop_lanes_fini(arpc_loop *loop)
{
    /* Our own ev loop is destroyed by now with its watchers; the application's lives on and
     * must not keep ours (its reference is given back first, as loop_free does for the rest). */
    if (loop->l_wrapped) {
        for (int i = 0; i < 3; i++)
            ev_ref(loop->l_ev);
        ev_check_stop(loop->l_ev, &loop->l_lazy_check);
        ev_check_stop(loop->l_ev, &loop->l_wake_mark);
        ev_prepare_stop(loop->l_ev, &loop->l_sleep_mark);
    }
    loop_awake_leave(loop); /* it stopped running between a check and a prepare */
    arpc_node_pool_fini(&loop->l_tasks);
}

void loop_wake(arpc_loop *loop)
{
    if (atomic_load(&loop->l_wake_pending) == 0 && atomic_exchange(&loop->l_wake_pending, 1) == 0)
    {
        ev_async_send(loop->l_ev, &loop->l_wake);
        loop_poll_signal(loop);
    }
}

/* Runs up to limit jobs, oldest first: those left from the last take, then a new take.
 * True when some are left. */
static bool loop_drain_lane(arpc_loop *loop, size_t limit)
{
    for (size_t n = 0; n < limit; n++) {
        ck_stack_entry_t *e = loop->l_taken;
        if (e == NULL) {
            if ((e = arpc_stack_take_fifo(&loop->l_lane)) == NULL)
                return false;
            loop_run_lazy(loop); /* those pushed before the take's jobs run before them */
        }
        loop->l_taken = e->next; /* before the call: the job may be freed by its own function */
        struct arpc_loop_job *job = job_of(e);
        job->j_fn(loop, job);
    }
    return loop->l_taken != NULL || !arpc_stack_is_empty(&loop->l_lane);
}

/* One round; true when work may be left. */
static bool loop_drain(arpc_loop *loop, size_t limit)
{
    loop->l_draining = true;
    loop_run_lazy(loop);
    bool more = loop_drain_lane(loop, limit);
    loop_give_back(loop);
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

void loop_lanes_close(arpc_loop *loop) { arpc_entry_close(&loop->l_entry); }

/* Pushes a job and wakes the loop (inside a drain on the loop thread: no need), then leaves:
 * the poster's last touch of the loop. */
static void lane_push_leave(arpc_loop *loop, struct arpc_loop_job *job)
{
    /* Everything the poster wrote to the job happens-before the job runs (the stack's edge). */
    bool first = arpc_stack_push_first(&loop->l_lane, &job->j_link);
    if (first && !(loop_inside(loop) && loop->l_draining)) /* l_draining is the loop thread's */
        loop_wake(loop);
    arpc_entry_leave(&loop->l_entry);
}

int arpc_loop_post(arpc_loop *loop, struct arpc_loop_job *job)
{
    if (!arpc_entry_enter(&loop->l_entry))
        return ARPC_ESHUTDOWN;
    lane_push_leave(loop, job);
    return ARPC_OK;
}

int arpc_loop_post_local(arpc_loop *loop, struct arpc_loop_job *job)
{
    /* A lazy job runs at this iteration's last check watcher only if posted between its
     * first and that one (l_in_turn: the I/O, timer and lane callbacks); posted anywhere else
     * (a prepare watcher, a driver's own step) it would wait through the poll for something
     * else to wake the loop. And lazy jobs run before the lane's (every drain runs them
     * first): one would overtake a job already waiting there, so only an empty lane (none
     * taken and left either) takes this path. A job pushed on the lane after this look comes
     * after ours, as it should. */
    if (!loop->l_in_turn || loop->l_taken != NULL || !arpc_stack_is_empty(&loop->l_lane))
        return arpc_loop_post(loop, job);
    return arpc_loop_post_lazy(loop, job);
}

int arpc_loop_post_lazy(arpc_loop *loop, struct arpc_loop_job *job)
{
    if (!arpc_entry_enter(&loop->l_entry))
        return ARPC_ESHUTDOWN;
    arpc_stack_push(&loop->l_lazy, &job->j_link);
    arpc_entry_leave(&loop->l_entry);
    return ARPC_OK;
}

void arpc_loop_kick(arpc_loop *loop) { loop_wake(loop); }

void arpc_loop_lazy_urgent(arpc_loop *loop, int delta) { atomic_fetch_add_explicit(&loop->l_lazy_urgent, delta, memory_order_relaxed); }

/* Inside the loop's entry, after the lazy job's push: a loop asleep (or pollable: it is never
 * marked asleep between the application's steps, which poll its fd outside them) is woken,
 * unless wake (read after the mark, as the loop's prepare reads it after l_asleep) says no. */
static void lazy_soon_wake(arpc_loop *loop, bool wake)
{
    if (wake && (atomic_load(&loop->l_asleep) || loop->l_poll != NULL))
        loop_wake(loop);
}

void arpc_loop_lazy_soon(arpc_loop *loop)
{
    if (!arpc_entry_enter(&loop->l_entry))
        return; /* closing: its final drain runs them */
    atomic_store(&loop->l_lazy_soon, 1);
    lazy_soon_wake(loop, atomic_load_explicit(&loop->l_lazy_urgent, memory_order_relaxed) > 0);
    arpc_entry_leave(&loop->l_entry);
}

int arpc_loop_post_lazy_within(arpc_loop *loop, struct arpc_loop_job *job, uint64_t within_ns)
{
    if (!arpc_entry_enter(&loop->l_entry))
        return ARPC_ESHUTDOWN;
    uint64_t by_ns = within_ns == 0 ? 1 : arpc_now_ns() + within_ns; /* 0 means none asked */
    arpc_stack_push(&loop->l_lazy, &job->j_link);
    uint64_t by = atomic_load(&loop->l_lazy_by_ns); /* the earliest asked since the last run */
    while ((by == 0 || by_ns < by) && !atomic_compare_exchange_weak(&loop->l_lazy_by_ns, &by, by_ns))
        ;
    /* Asleep until a deadline of its own that comes by then (set before l_asleep): no need. */
    lazy_soon_wake(loop, loop->l_poll != NULL || !atomic_load(&loop->l_asleep) ||
                             atomic_load_explicit(&loop->l_sleep_until, memory_order_relaxed) > by_ns);
    arpc_entry_leave(&loop->l_entry);
    return ARPC_OK;
}

struct arpc_log_throttle *arpc_loop_peer_log(arpc_loop *loop) { return &loop->l_peer_log; }

bool arpc_loop_idle(arpc_loop *loop)
{
    return atomic_load_explicit(&loop->l_asleep, memory_order_relaxed) &&
           atomic_load_explicit(&loop->l_wake_pending, memory_order_relaxed) == 0 &&
           arpc_stack_is_empty(&loop->l_lane) && arpc_stack_is_empty(&loop->l_lazy);
}

/* Loop thread: the spent tasks' nodes go back to the pool and their places in the bound are
 * free again, all at once. */
static void loop_give_back(arpc_loop *loop)
{
    unsigned n = loop->l_spent.nc_n;
    if (n == 0)
        return;
    arpc_node_pool_put_chain(&loop->l_tasks, &loop->l_spent);
    atomic_fetch_sub(&loop->l_queued, n);
}

/* A task's job, on the loop thread: the node is spent before the task runs. */
static void loop_task_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    struct loop_task *t = (struct loop_task *)job;
    arpc_task_fn fn = t->t_fn;
    void *arg = t->t_arg;
    arpc_node_chain_add(&loop->l_spent, t);
    if (loop->l_spent.nc_n == LOOP_GIVE_BACK || loop->l_taken == NULL)
        loop_give_back(loop);
    fn(loop, arg);
}

/* A submitter at the bound of a caller-driven loop (never started, not the application's)
 * that nobody runs: nobody else would make room, so it runs one non-blocking step of the
 * loop here, as the loop thread, the way a wait for one of the loop's futures would. False
 * when the loop finished during the step: the waiter is uncounted from l_room_waiters and
 * must not touch the loop again (a task destroyed it: as its runner, we may just have freed
 * it). */
static bool loop_step_for_room(arpc_loop *loop)
{
    if (loop->l_owned || atomic_load_explicit(&loop->l_started, memory_order_acquire))
        return true; /* its thread, or its owner's steps, make room */
    /* Claimed as a step, so a driver that finds the loop claimed knows to wait for us instead
     * of saying ARPC_EBUSY (loop_busy_briefly). */
    uint32_t idle = LOOP_IDLE;
    if (!atomic_compare_exchange_strong_explicit(&loop->l_state, &idle, LOOP_RUNNING | LOOP_STEP,
                                                 memory_order_acquire, memory_order_relaxed))
        return true; /* someone runs it (or it finished: the caller sees the close) */
    arpc_loop *outer = loop_tl_current;
    loop_tl_current = loop;
    ev_run(loop->l_ev, EVRUN_NOWAIT); /* the wake-up of the tasks that fill it is pending */
    loop_tl_current = outer;
    if (!loop->l_finished) {
        loop_release(loop);
        return true;
    }
    atomic_fetch_sub(&loop->l_room_waiters, 1); /* before the free it may lead to */
    loop_end_run(loop);
    return false;
}

bool loop_busy_briefly(arpc_loop *loop)
{
    if (loop->l_owned)
        return false; /* only its owner runs it, never a submitter */
    /* One word: a claim that failed on a step (or on a run that has ended since) tries again;
     * one that failed on a real run says ARPC_EBUSY. */
    uint32_t s = atomic_load_explicit(&loop->l_state, memory_order_acquire);
    return s == LOOP_IDLE || (s & LOOP_STEP);
}

/* Another thread's submit, outside the lane's entry and counted in l_room_waiters, waits
 * until the bound looks open (ARPC_OK) or the lane is closed (ARPC_ESHUTDOWN; *gone: the loop
 * finished in a step of ours, and we are uncounted already). See the notes. */
static int loop_wait_room(arpc_loop *loop, bool *gone)
{
    unsigned attempt = 0;
    while (atomic_load_explicit(&loop->l_queued, memory_order_relaxed) >= loop->l_submit_bound) {
        if (arpc_entry_closed(&loop->l_entry))
            return ARPC_ESHUTDOWN;
        if (!loop_step_for_room(loop)) {
            *gone = true;
            return ARPC_ESHUTDOWN;
        }
        arpc_backoff_spin(&attempt);
    }
    return ARPC_OK;
}

int arpc_loop_submit(arpc_loop *loop, arpc_task_fn fn, void *arg)
{
    if (!loop_live(loop, __func__) || fn == NULL)
        return ARPC_EINVAL;
    /* The loop thread (or a wrapped loop's owner, which alone runs it) cannot wait for
     * itself: its tasks count, but never wait. */
    bool local = loop_tl_current == loop || loop_owned_here(loop);
    bool waiting = false; /* counted in l_room_waiters */
    bool gone = false;    /* the loop finished in a step this submit ran: touch nothing */
    int rc = ARPC_OK;
    for (;;) {
        if (!arpc_entry_enter(&loop->l_entry)) {
            rc = ARPC_ESHUTDOWN;
            break;
        }
        if (local) {
            atomic_fetch_add(&loop->l_queued, 1);
            break;
        }
        if (arpc_bound_take(&loop->l_queued, loop->l_submit_bound))
            break;
        /* Counted before leaving: the close waits for the leave, so the free sees the count. */
        if (!waiting)
            atomic_fetch_add(&loop->l_room_waiters, 1);
        waiting = true;
        arpc_entry_leave(&loop->l_entry);
        if ((rc = loop_wait_room(loop, &gone)) != ARPC_OK)
            break;
    }
    if (gone)
        return rc;
    if (waiting)
        atomic_fetch_sub(&loop->l_room_waiters, 1); /* inside the entry now, or our last touch */
    if (rc != ARPC_OK)
        return rc;
    struct loop_task *t = arpc_node_pool_get(&loop->l_tasks);
    if (t == NULL) {
        atomic_fetch_sub(&loop->l_queued, 1); /* the place is free again */
        arpc_entry_leave(&loop->l_entry);
        return ARPC_ENOMEM;
    }
    arpc_loop_job_init(&t->t_job, loop_task_run);
    t->t_fn = fn;
    t->t_arg = arg;
    lane_push_leave(loop, &t->t_job);
    return ARPC_OK;
}
