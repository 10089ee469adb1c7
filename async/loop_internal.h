/*
 * Internal loop API for the core: the libev loop, the job lane, waiting, and deadlines.
 *
 * Deadlines: one libev timer per loop sits over a binary min-heap of arpc_deadline entries
 * (async/deadline_heap.h), so 100k pending deadlines cost one timer; arm and cancel are
 * O(log n). Deadlines are intrusive (the caller embeds the struct, e.g. in a pending call),
 * so arming one allocates nothing unless the heap must grow.
 *
 * Unless a function says otherwise, it must be called on the loop thread.
 */
#ifndef ARPC_ASYNC_LOOP_INTERNAL_H
#define ARPC_ASYNC_LOOP_INTERNAL_H

#include <ck_stack.h>
#include <ev.h>
#include <stdatomic.h>

#include "arpc/future.h"
#include "arpc/loop.h"
#include "async/deadline_heap.h"

struct ev_loop *arpc_loop_ev(arpc_loop *loop);

/* ---- the job lane: arpc's one way to hand work to a loop from any thread ----
 * A job is embedded in the object it works on (a call, a reply, a request), so posting it
 * allocates nothing. Posting never waits: no bounded queue, no lock (one CAS onto a Concurrency
 * Kit stack). Jobs run on the loop thread in the order they were posted (FIFO per poster; a
 * total order across posters), one wake-up per batch (async/loop_lanes.c). */
struct arpc_loop_job;
typedef void (*arpc_loop_job_fn)(arpc_loop *loop, struct arpc_loop_job *job);
struct arpc_loop_job {
    ck_stack_entry_t j_link;
    arpc_loop_job_fn j_fn;
};

static inline void arpc_loop_job_init(struct arpc_loop_job *job, arpc_loop_job_fn fn)
{
    job->j_link.next = NULL;
    job->j_fn = fn;
}

/* Any thread. ARPC_OK: job->j_fn(loop, job) will run exactly once on the loop thread (even if
 * the loop is stopped meanwhile: the final drain runs it). ARPC_ESHUTDOWN: the loop is
 * stopping or stopped; the job will not run and still belongs to the caller. */
int arpc_loop_post(arpc_loop *loop, struct arpc_loop_job *job);

/* As arpc_loop_post, but wakes nobody: the job runs when the loop next wakes for any other
 * reason (I/O, a deadline, another post: after that iteration's I/O callbacks, or first in a
 * drain of the lane), or at its final drain. For work that may wait that long and must not cost a
 * wake-up of its own (the bookkeeping of a reply its worker wrote itself); the poster makes
 * sure something wakes the loop in time (a deadline), or calls arpc_loop_kick. Lazy jobs
 * posted before a drain run before that drain's lane jobs. */
int arpc_loop_post_lazy(arpc_loop *loop, struct arpc_loop_job *job);
/* The loop's own thread (or its caller's, driving it): as arpc_loop_post, for a job this
 * thread hands itself to run once what it is doing returns. When nothing posted earlier waits
 * on the lane, it runs as a lazy job does, after this iteration's I/O callbacks, with no
 * wake-up and no poll before it (a client's calls started in its replies' callbacks go out in
 * the same turn as the replies: docs/PERFORMANCE.md, "Small frames written from one stage, and
 * a batch of 64 frames"), if posted from a callback of that iteration's (I/O, a timer, a lane
 * job); else (nothing left of the iteration to run it, e.g. from a prepare watcher, or earlier
 * posts waiting) it joins the lane behind what waits there, waking the loop as a post does.
 * Either way it runs after every job posted before it and before any posted after it on this
 * thread. */
int arpc_loop_post_local(arpc_loop *loop, struct arpc_loop_job *job);
/* Any thread, while the loop cannot be destroyed: wakes the loop (one wake-up per batch, as a
 * post does), so its lazy jobs run. */
void arpc_loop_kick(arpc_loop *loop);
/* Any thread, after arpc_loop_post_lazy: the lazy jobs posted so far must not wait for some
 * other event to wake the loop while an owner says it needs them (arpc_loop_lazy_urgent: work
 * that frees a flow limit's hold, whose connection is not read meanwhile, so no other event
 * may come). A loop at work runs them at this iteration's end, as ever, with no wake-up; one
 * asleep, or on its way to its poll, is woken (a flag and l_asleep, Dekker's pattern with the
 * loop's last prepare watcher). While no owner needs it, nothing more than a lazy post: a
 * wake-up per batch would cost the pipelined pool a sixth of its calls. */
void arpc_loop_lazy_soon(arpc_loop *loop);
/* Loop thread: delta (+1 / -1) owners that need arpc_loop_lazy_soon to wake the loop (a
 * connection whose input is held). Read by posters relaxed: one counted on the loop thread
 * before its sleep is seen by its own last prepare watcher, which wakes it for a flagged job. */
void arpc_loop_lazy_urgent(arpc_loop *loop, int delta);
/* As arpc_loop_post_lazy, for a job that must run within within_ns: a loop at work runs it at
 * this iteration's end with no wake-up; one asleep or on its way to its poll is woken, by the
 * same Dekker pair as arpc_loop_lazy_soon, unless a deadline of its own turns it by then (the
 * wake-up would buy nothing), counting the poll's rounding and the kernel's timer slack
 * (loop_poll_slack_ns). 0: woken whenever it sleeps. A pollable loop is always woken. */
int arpc_loop_post_lazy_within(arpc_loop *loop, struct arpc_loop_job *job, uint64_t within_ns);
/* Any thread, while the loop cannot be destroyed: true when the loop sleeps in its poll (or is
 * about to) with no job posted, lazy or not, and no wake-up on its way, i.e. work handed to it
 * now would wake it for that alone. False while it runs callbacks (reads, a drain) and, for a
 * pollable loop, between its steps. A snapshot, for heuristics only (a worker writes its reply
 * itself only when the loop would otherwise be woken for it alone, core/reply_direct.c). */
bool arpc_loop_idle(arpc_loop *loop);

/* Any thread, even once loop may have been freed: whether the calling thread is the one running
 * loop now (its own thread, a caller driving it, its final drain). By identity alone, loop is
 * never read. False inside an application's own ev_run on a wrapped loop, where
 * arpc_loop_on_thread says true. */
extern _Thread_local arpc_loop *loop_tl_current; /* async/loop.c; read only here in core */
static inline bool arpc_loop_running_here(const arpc_loop *loop) { return loop_tl_current == loop; }

/* The loop's throttle for log lines about what peers did (core/peer_log.h). Loop thread. */
struct arpc_log_throttle *arpc_loop_peer_log(arpc_loop *loop);

/* Runs fn(loop, arg) on the loop thread and waits for it to return: the one "do this on the
 * loop and wait" of arpc (stop steps, close). On the loop thread it runs fn at once. If
 * nobody runs the loop the caller drives it (arpc_loop_run_until) while it waits. If the loop
 * is stopping or stopped, it waits until no thread runs it and then runs fn on the calling
 * thread (nothing else touches the loop's objects any more), and returns ARPC_ESHUTDOWN
 * instead of ARPC_OK. Either way fn has run exactly once when it returns. The loop must not be
 * destroyed meanwhile. */
int arpc_loop_run_sync(arpc_loop *loop, arpc_task_fn fn, void *arg);
/* An empty step on loop (arpc_loop_run_sync): once it returned ARPC_OK, every job posted to
 * the lane before it has run (the lane is FIFO). ARPC_ESHUTDOWN: a stopped loop, whose final
 * drain ran them. Not on the loop's thread. */
int arpc_loop_fence(arpc_loop *loop);
/* Fences loop until *count is 0: a close waiting for callers on their way in, whose jobs on
 * the loop end them. On a stopped loop, which refuses their jobs so that they leave on their
 * own threads at once, it spins instead. Not on the loop's thread. */
void arpc_loop_fence_until_zero(arpc_loop *loop, atomic_size_t *count);

/* Arms d to fire at when_ns (arpc_now_ns clock); re-arming an armed deadline moves it.
 * Returns ARPC_OK or ARPC_ENOMEM. When it fires, d is disarmed first, then d->fn(d, d->arg)
 * runs on the loop thread; the callback may re-arm d or arm/cancel others. */
int arpc_deadline_arm(arpc_loop *loop, struct arpc_deadline *d, uint64_t when_ns);

/* arpc_deadline_arm at seconds from now (saturating; <= 0: due now). */
int arpc_deadline_arm_after_s(arpc_loop *loop, struct arpc_deadline *d, double seconds);

/* The loop's time, in seconds on CLOCK_MONOTONIC (arpc_now_ns's clock): read as the loop
 * leaves each poll, so that the per-frame stamps of the connection limits and the heartbeat
 * cost a load, as ev_now did. Not ev_now: libev's is the wall clock, and a step of it (an NTP
 * step, a resumed VM, date -s) closed every connection at once or turned the timeouts off for
 * the size of the step. arpc_loop_now_update reads the clock again first (a sweep that
 * compares against it after a long callback). Loop thread. */
double arpc_loop_now(const arpc_loop *loop);
double arpc_loop_now_update(arpc_loop *loop);

/* Disarms d; a no-op when not armed. O(log n). */
void arpc_deadline_cancel(arpc_loop *loop, struct arpc_deadline *d);

/* Every start and stop of an fd watcher goes through these (never ev_io_start/ev_io_stop
 * directly), so a pollable loop (arpc_loop_options.pollable) mirrors what it waits for into the
 * fd it gives the application (async/loop_pollable.c). Starting an active watcher or stopping
 * an inactive one does nothing, as in libev. */
void arpc_loop_io_start(arpc_loop *loop, ev_io *w);
void arpc_loop_io_stop(arpc_loop *loop, ev_io *w);

/* ---- cold fd watchers (async/loop_cold.c) ----
 * A read watcher started cold is not one of libev's: its fd sits in a set of the loop's own,
 * of which at most a budget of ready fds (4 by default) is served per loop turn, after the
 * loop's other watchers, round-robin. For fds that must not make a turn long by their numbers
 * (a server's connections before their first request: a flood of connects, or of closes),
 * while the loop's other fds are served first and every turn stays short. Its callback is
 * invoked as libev would (revents EV_READ, hangups and errors included); ev_feed_event works
 * on it as on any watcher. Same rules as arpc_loop_io_start/stop, but w must be an
 * EV_READ watcher, not active in libev, started cold at most once until stopped cold, and
 * stopped cold before its fd is closed. Works on every kind of loop (the set's fd is one
 * ordinary watcher). cold_start: ARPC_OK, or ARPC_ENOMEM / ARPC_ESYSTEM (the caller may
 * start it in libev instead). cold_stop drops an event fed to w too. */
int arpc_loop_cold_start(arpc_loop *loop, ev_io *w);
/* As cold_start, but w is invoked for its fd's hangups and errors only (EPOLLHUP, EPOLLERR:
 * the peer is gone both ways), never for bytes to read or the end of their stream: for a
 * connection whose peer finished sending, while it is still written to. */
int arpc_loop_cold_start_hangup(arpc_loop *loop, ev_io *w);
void arpc_loop_cold_stop(arpc_loop *loop, ev_io *w);
/* Cold fds served per turn from now on (> 0), e.g. a small one for a test. ARPC_EINVAL for 0,
 * ARPC_EBUSY from inside a cold watcher's callback, ARPC_ENOMEM. */
int arpc_loop_cold_budget(arpc_loop *loop, unsigned per_turn);
/* Cold watchers started and not stopped. */
size_t arpc_loop_cold_count(arpc_loop *loop);

/* ---- bulk reads per turn (async/loop_bulk.c) ----
 * Bytes of large frames' bodies one loop turn reads across all its connections: a connection
 * already reads at most 64 KiB of a body per readiness (core/conn.c), but every ready one does,
 * so 20 peers streaming large frames made turns of milliseconds that the other connections'
 * calls waited behind. Loop thread. spent: this turn's budget is used up (the caller leaves
 * its bytes in the socket for a later turn: the fd stays ready); spend: n bytes were read. */
bool arpc_loop_bulk_spent(arpc_loop *loop);
void arpc_loop_bulk_spend(arpc_loop *loop, size_t n);

/* Loop thread: a prepare watcher was started with work for the next iteration (a connection's
 * flush), so a loop driven one non-blocking step at a time (arpc_loop_run_nowait) must iterate
 * again before its driver may sleep. */
void arpc_loop_prepare_due(arpc_loop *loop);

/* A server or client the user put on loop (its options' loop) comes (+1) or has let go of it
 * for good (-1): arpc_loop_destroy refuses, with an ERROR line, while any is left. Any thread. */
void arpc_loop_users_add(arpc_loop *loop, int delta);

/* The loop's memory outlives its destroy while futures or completion queues name it as the
 * loop a waiter drives (arpc_future_set_home, a queue's home): a waiter on another thread may
 * have read it there just before the destroy, and finds it done (LOOP_DONE, or its own
 * thread's: it then sleeps on what it waits for) instead of freed memory. Only the fields a
 * waiter reads before it sees that stay meaningful. Any thread; retain only while the loop's
 * memory is known to be held (by its creator, or a future that names it). */
void arpc_loop_mem_retain(arpc_loop *loop);
void arpc_loop_mem_release(arpc_loop *loop);

/* Deadlines currently armed on the loop. */
size_t arpc_loop_deadline_count(arpc_loop *loop);

/* Runs fn(arg) on the loop thread just before the loop returns from a stop (after the final
 * drain of submitted tasks), e.g. so a client can fail its pending calls. At most a few per
 * loop; returns ARPC_ENOMEM. Loop thread only, or before the loop runs. */
int arpc_loop_on_stop(arpc_loop *loop, void (*fn)(arpc_loop *loop, void *arg), void *arg);

/* Removes one registration of (fn, arg). True if it was removed (it will not run); false if
 * it was not registered or the hooks already started running. Loop thread only. */
bool arpc_loop_off_stop(arpc_loop *loop, void (*fn)(arpc_loop *loop, void *arg), void *arg);

/* How many times the loop was woken to drain submitted tasks (ev_async callbacks), so tests
 * can check that wake-ups are batched. Any thread; a relaxed snapshot. */
uint64_t arpc_loop_wakeups(arpc_loop *loop);

/* Waits for f on any thread but the loop's: blocks if a thread runs the loop, or runs the
 * loop here (arpc_loop_run_until) while nobody does. ARPC_EBUSY on the loop thread itself
 * (it would wait for itself). Otherwise f's status. loop NULL: a loop thread of the caller's
 * own (a client's) completes f, so this only sleeps (arpc_future_wait); a caller that must
 * not touch its client once it handed the call over chooses the loop before. */
int arpc_loop_wait(arpc_loop *loop, arpc_future *f);
/* As arpc_loop_wait, giving up at deadline_ns (base/clock.h; ARPC_NEVER: never) with
 * ARPC_EPENDING. */
int arpc_loop_wait_until(arpc_loop *loop, arpc_future *f, uint64_t deadline_ns);
/* As arpc_loop_wait_until, for a future another thread may complete (the others are completed
 * on the loop): a wait that runs the loop is woken by its completion, as arpc_loop_run_until's
 * is (costs a then-callback and a small block per wait that runs the loop). */
int arpc_loop_wait_foreign_until(arpc_loop *loop, arpc_future *f, uint64_t deadline_ns);

/* As arpc_loop_wait_until, for any condition: done(arg) polls it; sleep(arg, deadline_ns)
 * blocks until it may be done or deadline_ns passes, whichever is first (it may return early),
 * and is used while another thread runs the loop. What makes it done must run on the loop or
 * wake the loop (a call's completion, cancel or deadline does), or make wake_fd readable (-1:
 * none; a wait that runs the loop watches it: a completion queue's eventfd, which pushes from
 * other threads and its destroy signal). When it is, woken(arg) runs (NULL: nothing) before
 * done is looked at again: it must leave the fd readable only while there is news, or the
 * wait would spin (a stale signal cleared). ARPC_OK, ARPC_EPENDING, or ARPC_EBUSY on the loop
 * thread. */
int arpc_loop_wait_cond_until(arpc_loop *loop, bool (*done)(void *arg), void (*sleep)(void *arg, uint64_t deadline_ns),
                              void *arg, uint64_t deadline_ns, int wake_fd, void (*woken)(void *arg));

/* The loop whose callback the calling thread runs (its own thread, a waiter driving it, a
 * pollable step, a final drain), or NULL. */
struct arpc_loop *arpc_loop_current(void);
/* The wrapped or pollable loop this thread owns (created or wrapped, not yet destroyed) whose
 * address is name, or NULL: a safe look at a name that may be stale (a future's completer read
 * as the future completes: a result's buffer never equals a live loop). */
struct arpc_loop *arpc_loop_owned_named(const void *name);

/* True for a loop that only its waiters run, or a thread lent with arpc_loop_run (caller-
 * driven): not wrapped, not pollable (the application's event loop runs those), not started on
 * a thread of its own. A snapshot: a loop may be started later. */
bool arpc_loop_waiters_run(const arpc_loop *loop);

/* Waits until no thread runs the loop (it finished, or a caller-driven run gave it back).
 * Not from the loop thread. Returns true when the loop has finished for good: its final
 * drain and stop hooks have run, and no loop thread touches anything any more. */
bool arpc_loop_wait_not_running(arpc_loop *loop);

#endif
