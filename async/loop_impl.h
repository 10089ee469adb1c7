/*
 * The loop's insides, shared by the files that implement it (and by nothing else):
 *   async/loop.c         life cycle: create, start/run, stop, destroy, stop hooks
 *   async/loop_lanes.c   how work reaches the loop: the lane (jobs and submitted tasks), wake-ups
 *   async/loop_timers.c  the deadline heap under one ev_timer
 *   async/loop_wait.c    waiting on a loop: run_until, wait, run_sync
 *   async/loop_cold.c    cold fd watchers, a bounded slice of them per turn
 *   async/loop_bulk.c    bytes of large bodies read per turn, across connections
 * The reasoning for each part is in the design notes at the top of its file.
 */
#ifndef ARPC_ASYNC_LOOP_IMPL_H
#define ARPC_ASYNC_LOOP_IMPL_H

#include <ck_stack.h>
#include <pthread.h>
#include <stdatomic.h>

#include "async/loop_internal.h"
#include "base/cacheline.h"
#include "base/entry.h"
#include "base/fork_gen.h"
#include "base/handle.h"
#include "base/log_throttle.h"
#include "base/node_pool.h"
#include "base/refcount.h"

#define LOOP_DRAIN_BATCH 1024u /* jobs (tasks included) per wake-up before the loop polls again */
#define LOOP_GIVE_BACK 64u     /* tasks started before their places and nodes go back, at most */
#define LOOP_FIRE_BATCH 1024u  /* deadlines per timer callback, for the same reason */

/* Who runs a loop (l_state). LOOP_WAITED is or'ed into LOOP_RUNNING by a thread that sleeps
 * on the word until the run ends, so that ending a run costs a futex wake only then.
 * LOOP_STEP is or'ed into it by a submitter's step (loop_lanes.c), so that a claim failing on
 * it knows to wait a moment instead of reporting ARPC_EBUSY. */
enum loop_state { LOOP_IDLE, LOOP_RUNNING, LOOP_DONE, LOOP_WAITED = 4, LOOP_STEP = 8 };
#define LOOP_FLAGS ((uint32_t)(LOOP_WAITED | LOOP_STEP)) /* only ever with LOOP_RUNNING */

struct loop_hook {
    void (*fn)(arpc_loop *loop, void *arg);
    void *arg;
};

struct arpc_loop {
    arpc_magic l_magic;            /* first (base/handle.h): live until loop_free */
    unsigned l_fork_gen;           /* the process it was made in (base/fork_gen.h): loop_live */
    _Atomic bool l_destroying;     /* arpc_loop_destroy was called: a second call is misuse */
    atomic_int l_users;            /* servers and clients on it that the user made (arpc_loop_users_add) */
    /* The struct's memory: its destroy's, and one per future and completion queue that names
     * it as the loop to drive (arpc_loop_mem_retain): a waiter that read it there may still
     * look at it once a destroy on another thread is over (it then finds it done). */
    arpc_refcount l_mem_refs;
    /* Shared with other threads. */
    ck_stack_t l_lane;             /* jobs (arpc_loop_post) and tasks (arpc_loop_submit) */
    ck_stack_t l_lazy;             /* jobs that wake nobody (arpc_loop_post_lazy) */
    /* In (or about to enter) its poll: see arpc_loop_idle. Written by the loop twice per
     * iteration, read by every worker's reply: a cache line of its own, so that neither
     * slows the posters' CAS on l_lane. */
    ARPC_CACHELINE_GAP(l_asleep_gap0);
    atomic_bool l_asleep;
    atomic_uint l_lazy_soon;       /* 1: lazy jobs must not wait while an owner needs it (loop_lanes.c) */
    _Atomic uint64_t l_lazy_by_ns; /* non-zero: when lazy jobs must have run, the earliest asked */
    _Atomic uint64_t l_sleep_until; /* asleep: its first deadline's time (ARPC_NEVER: none), set first */
    atomic_int l_lazy_urgent;      /* owners that need that now (arpc_loop_lazy_urgent) */
    ARPC_CACHELINE_GAP(l_asleep_gap1);
    struct arpc_entry l_entry;     /* posters between their closed check and their wake-up */
    atomic_int l_wake_pending;     /* a wake-up is sent or being sent, its drain not yet begun */
    atomic_int l_stopping;         /* 0; 1: a stop is under way; 2: its wake-up is sent */
    atomic_uint l_queued;          /* submitted tasks not yet started (the bound's count) */
    unsigned l_submit_bound;       /* other threads' submits wait while l_queued is there */
    atomic_uint l_room_waiters;    /* submits waiting for room outside l_entry: the free waits */
    struct arpc_node_pool l_tasks; /* the submitted tasks' nodes */
    _Atomic uint64_t l_wakeups;    /* wake_cb runs, for tests; written by the loop thread only */

    /* Loop thread only (or before the loop runs). */
    struct ev_loop *l_ev;
    ev_async l_wake;
    ev_prepare l_prepare;
    ev_check l_lazy_check;         /* runs the lazy jobs once the loop wakes (loop_lanes.c) */
    ev_prepare l_sleep_mark;       /* marks l_asleep as the loop goes to its poll */
    ev_check l_wake_mark;          /* and clears it as the loop leaves it */
    ev_timer l_timer;
    bool l_timer_armed;
    uint64_t l_timer_when; /* what l_timer is armed for, when l_timer_armed */
    struct arpc_deadline_heap l_deadlines;
    struct loop_hook *l_hooks;
    size_t l_nhooks;
    ck_stack_entry_t *l_taken; /* taken from the lane, not yet run (FIFO, oldest first) */
    struct arpc_node_chain l_spent; /* started tasks' nodes, not yet given back */
    bool l_draining;          /* inside a drain: local submits and posts need no wake-up */
    bool l_finishing;         /* the final drain has begun */
    bool l_finished;          /* final drain and hooks done: ev_run may return for good */
    bool l_destroy_requested; /* destroy was called on the loop thread */
    bool l_prepare_due;       /* see arpc_loop_prepare_due */
    bool l_counted_awake;     /* counted in async/awake.h: between a check and a prepare */
    double l_now;             /* arpc_loop_now: CLOCK_MONOTONIC seconds, set at each wake-up mark */
    bool l_in_turn;           /* between the wake-up mark (the first check watcher) and the lazy
                               * jobs' watcher (the last) of one iteration: a lazy job posted now
                               * runs before the next poll (arpc_loop_post_local) */
    struct loop_poll_set *l_poll; /* pollable loops: the mirror of the fd watchers (loop_pollable.c) */
    struct loop_cold *l_cold;     /* cold fd watchers (loop_cold.c); NULL until the first */
    struct arpc_log_throttle l_peer_log; /* lines about what peers did (core/peer_log.c) */
    unsigned l_bulk_turn;     /* ev_iteration of the turn l_bulk_left is for (loop_bulk.c) */
    size_t l_bulk_left;       /* bytes of bulk reads that turn may still spend */
    bool l_wrapped;           /* l_ev is the application's (arpc_loop_wrap): never ours to run or free */
    bool l_owned;             /* wrapped or pollable: only l_owner runs it, never a thread of its own */
    pthread_t l_owner;        /* the thread that created (or wrapped) it */
    arpc_loop *l_owned_next;  /* owned: the next of its owner's owned loops (loop_tl_owned) */

    pthread_mutex_t l_sync_mtx; /* run_sync on a stopped loop: one caller at a time acts as its thread */

    /* Who runs the loop: claimed and given back with atomics, since a caller-driven client
     * claims it for every blocking call (loop_claim, loop_release, loop_state_wait). */
    _Atomic uint32_t l_state; /* enum loop_state */
    _Atomic bool l_started;   /* arpc_loop_start made it a thread of its own */
    pthread_mutex_t l_mtx;    /* arpc_loop_start against its thread's self-free (loop.c) */
    pthread_t l_thread;
};

/* Entry points' handle check (base/handle.h): false for NULL, misuse reported otherwise. */
static inline bool loop_live(const arpc_loop *loop, const char *fn)
{
    return arpc_handle_check(loop, ARPC_MAGIC_LOOP, "loop", fn) && arpc_fork_gen_here(loop->l_fork_gen, loop, "loop", fn);
}

/* The loop the calling thread is running, if any (loop.c). */
extern _Thread_local arpc_loop *loop_tl_current;

/* A wrapped loop's owner thread: the only thread that may run it (loop.c). */
bool loop_owned_here(const arpc_loop *loop);

/* Whether the calling thread is inside the loop: running it, or (wrapped) inside the
 * application's ev_run on it. Such a thread must never wait for the loop. */
bool loop_inside(const arpc_loop *loop);

/* loop_lanes.c */
void loop_lanes_init(arpc_loop *loop, unsigned submit_bound);
void loop_lanes_fini(arpc_loop *loop);           /* after the final drain */
/* A run of ev ended (which it does after its check watcher, which counts the loop as running
 * in async/awake.h): uncounted, since the thread may now sleep elsewhere (a caller-driven
 * run's return, a loop's last run). Called by whoever ran it, as it gives the loop up. */
void loop_awake_leave(arpc_loop *loop);
void loop_wake(arpc_loop *loop);                 /* any thread: a drain starts after this */
void loop_wake_cb(struct ev_loop *ev, ev_async *w, int revents);
void loop_lanes_close(arpc_loop *loop);          /* any thread: refuse further posts, wait for those in flight */
void loop_drain_all(arpc_loop *loop);            /* loop thread: every task and job accepted so far */

/* loop_timers.c */
void loop_timers_init(arpc_loop *loop);
void loop_timers_fini(arpc_loop *loop);
/* Loop thread: when its first deadline will have woken it at the latest (loop_poll_slack_ns
 * added), or ARPC_NEVER. */
uint64_t loop_next_deadline_ns(arpc_loop *loop);
/* How late a poll with a timeout of timeout_ns may wake: libev's epoll rounds a timeout up to
 * 1 ms, and the kernel adds its timer slack, timeout / 1000 (timeout / 200 for a niced thread:
 * the larger is assumed), at least 50 us (a thread's default timer_slack_ns; an application
 * that raises its own with prctl widens it), at most 100 ms (fs/select.c). */
#define LOOP_KERNEL_SLACK_DIV 200u
#define LOOP_KERNEL_SLACK_MIN_NS 50000u
#define LOOP_KERNEL_SLACK_MAX_NS 100000000u
uint64_t loop_poll_slack_ns(uint64_t timeout_ns);

/* loop_pollable.c */
int loop_poll_init(arpc_loop *loop);   /* a pollable loop's set: ARPC_OK or ARPC_ESYSTEM/ENOMEM */
void loop_poll_fini(arpc_loop *loop);
void loop_poll_signal(arpc_loop *loop); /* any thread: after each ev_async_send, so the fd wakes too */

/* loop_cold.c */
void loop_cold_fini(arpc_loop *loop); /* before the ev loop goes: its watcher and set */

/* loop.c */
void loop_finish(arpc_loop *loop);               /* loop thread: final drain and hooks; once */
int loop_claim(arpc_loop *loop);                 /* IDLE -> RUNNING, or ARPC_EBUSY / ARPC_ESHUTDOWN */
/* After a loop_claim that said ARPC_EBUSY: true when the claim may succeed in a moment, as the
 * holder is only a submitter's step (loop_lanes.c) or the loop is free again. */
bool loop_busy_briefly(arpc_loop *loop);
void loop_end_run(arpc_loop *loop);              /* after a run that saw l_finished: free or mark DONE */
void loop_release(arpc_loop *loop);              /* a caller-driven run gives the loop back (IDLE) */
/* Not on the loop thread: sleeps until nobody runs the loop; returns IDLE or DONE. */
enum loop_state loop_state_wait(arpc_loop *loop);

#endif
