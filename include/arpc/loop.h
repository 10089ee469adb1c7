/*
 * arpc/loop.h: an event loop (libev) that owns sockets and timers, and accepts work from
 * any thread.
 *
 * A loop runs either on a thread of its own (arpc_loop_start) or on a thread the caller
 * lends it (arpc_loop_run, which returns once the loop is stopped). Whichever thread runs
 * it is "the loop thread"; every task submitted to the loop runs there, one at a time.
 *
 * Submission: any thread calls arpc_loop_submit(). Tasks travel on a lock-free Concurrency
 * Kit stack that the loop takes whole and runs in submission order (per submitting thread;
 * tasks from several threads interleave in the order they were pushed); a submitter never
 * waits for another one's push, and the loop is woken with one ev_async per batch. The
 * queue is bounded: when submit_ring_size tasks are queued and not yet started, a submitter
 * on another thread waits (spinning briefly, then yielding) for the loop to make room: that
 * is the loop's back-pressure. A submitter on the loop thread itself never waits; its tasks
 * count towards the bound but are always accepted. On a caller-driven loop (never started,
 * arpc_loop_run_until) that nobody runs, nobody else would make room: a submitter at the
 * bound runs the loop itself meanwhile, one non-blocking step at a time, as a wait for one of
 * its futures would (tasks and callbacks then run on its thread, the loop thread meanwhile;
 * a wait, arpc_loop_run_until, arpc_loop_run or arpc_loop_start on another thread waits for
 * such a step to end rather than report ARPC_EBUSY).
 *
 * Completion contract: a task that arpc_loop_submit() accepted (returned ARPC_OK) runs
 * exactly once, on the loop thread, even if the loop is stopped meanwhile: stopping runs
 * the tasks already accepted before the loop returns. After stop, submit fails with
 * ARPC_ESHUTDOWN and the task does not run.
 */
#ifndef ARPC_LOOP_H
#define ARPC_LOOP_H

#include "arpc/common.h"
#include "arpc/future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_loop arpc_loop;

/* A unit of work run on the loop thread. Must not block: it delays every socket the loop owns. */
typedef void (*arpc_task_fn)(arpc_loop *loop, void *arg);

typedef struct arpc_loop_options {
    /* The most tasks submitted and not yet started before a submitter on another thread
     * waits for room (the bound is exact; the loop thread's own submits may go past it).
     * 0 means the default (8192). */
    unsigned submit_ring_size;
    /* Make the loop pollable from another event loop: arpc_loop_fd and arpc_loop_run_nowait
     * (see below). Costs one epoll_ctl per socket watcher change. */
    bool pollable;
} arpc_loop_options;

/* Creates a stopped loop. opts may be NULL. Any thread. Errors: ARPC_EINVAL (out NULL, or an
 * options field this library lacks set: arpc/common.h), ARPC_ENOMEM, ARPC_ESYSTEM. */
ARPC_API int arpc_loop_create_v(arpc_loop **out, const arpc_loop_options *opts, size_t opts_size);
#define arpc_loop_create(out, ...) arpc_loop_create_v((out), (__VA_ARGS__), sizeof(arpc_loop_options))

/*
 * Your loop, not ours: arpc on a libev loop the application owns and runs.
 *
 * arpc_loop_wrap() makes an arpc loop whose watchers (sockets, timers, its wake-up) live on
 * ev; the application keeps running ev with ev_run as before, and arpc's callbacks (future
 * then-callbacks, inline handlers, completion-queue pushes) run inside that ev_run. Clients
 * and servers take the wrapped loop in their options (arpc_client_options.loop,
 * arpc_server_options.loop); handlers not inline still run on worker actors, whose replies
 * wake ev through an ev_async. A single-threaded program (inline handlers, then-callbacks or
 * arpc_cq) serves and calls on its one thread: nothing of arpc runs on another (a server
 * still starts its worker pool's threads, which sleep while no method uses them).
 *
 * Threads. The thread that calls arpc_loop_wrap is the loop's owner, and the only thread that
 * may run ev. Inside its ev_run it is the loop thread: calls that would wait for the loop
 * (arpc_call, arpc_client_connect/close, arpc_server_stop/destroy, arpc_loop_run_until) are
 * refused with ARPC_EBUSY there, as on any loop thread. Outside ev_run the owner may make
 * them: they run ev themselves until done (one iteration at a time, so the application's own
 * watchers on ev run meanwhile too). Any other thread may use the loop's clients and
 * servers; a call that waits then waits for the owner to run ev.
 *
 * Lifetime. arpc's standing watchers do not keep ev_run from returning (ev_unref); open
 * connections, listeners and armed deadlines do. arpc_loop_start and arpc_loop_run refuse a
 * wrapped loop (ARPC_EINVAL). Close the clients and destroy the servers on it first, then call
 * arpc_loop_destroy on the owner thread outside ev_run (anywhere else it logs an error and
 * does nothing); it stops arpc's watchers and leaves ev to the application.
 * Errors: ARPC_EINVAL (ev or out NULL, opts->pollable set: a wrapped loop is polled through ev,
 * or an options field this library lacks set), ARPC_ENOMEM, ARPC_ESYSTEM.
 */
struct ev_loop;
ARPC_API int arpc_loop_wrap_v(arpc_loop **out, struct ev_loop *ev, const arpc_loop_options *opts,
                              size_t opts_size);
#define arpc_loop_wrap(out, ev, ...) arpc_loop_wrap_v((out), (ev), (__VA_ARGS__), sizeof(arpc_loop_options))

/*
 * Or any other event loop (epoll, poll, glib, ...), still with no arpc thread: create the loop
 * with arpc_loop_options.pollable set, never start it, and let your loop watch
 * arpc_loop_fd(loop) for readability. Whenever it is readable, and whenever the timeout arpc
 * gave you expires, call arpc_loop_run_nowait: it runs what is ready (socket I/O, replies,
 * callbacks, timers) without blocking and says how long you may sleep before calling it again.
 *
 *     int timeout;
 *     for (;;) {
 *         arpc_loop_run_nowait(loop, &timeout);     // -1: no timer, wait for the fd
 *         int n = epoll_wait(epfd, events, 16, timeout);
 *         ...your own fds; arpc's needs nothing but the next arpc_loop_run_nowait...
 *     }
 *
 * The fd is an epoll set: register it level-triggered (plain EPOLLIN). Edge-triggered also
 * works if, after each wake-up, you call arpc_loop_run_nowait until the fd no longer polls
 * readable (poll with a zero timeout), since an edge is signalled only for new readiness.
 * Callbacks (then-callbacks, inline handlers) run inside arpc_loop_run_nowait, on your thread,
 * which is the loop thread while they run. Calls you start from your thread between steps are
 * picked up by the next step (their wake-up makes the fd readable). As with a wrapped loop,
 * the thread that created it owns it: only it runs steps; blocking calls (arpc_call, connect,
 * close, arpc_server_stop/destroy, destroy, and the waits of arpc/future.h and arpc/cq.h for
 * calls this loop completes) work from it outside a step (they run the loop
 * themselves until done: a server's stop, through its grace too); any
 * other thread may use the loop's clients and servers, and a call that waits then waits for
 * your steps. arpc_loop_start and arpc_loop_run refuse a pollable loop (ARPC_EINVAL); destroy
 * it from the owner thread, outside a step.
 */

/* The fd to poll for readability, or -1 (the loop is not pollable). Stays the same for the
 * loop's life; arpc closes it in arpc_loop_destroy. */
ARPC_API int arpc_loop_fd(arpc_loop *loop);

/* One non-blocking step of a pollable loop nobody else runs: runs what is ready, then sets
 * *timeout_ms (may be NULL) to how long the caller may sleep before the next step: 0 (more is
 * ready), -1 (no timer: until the fd is readable) or the milliseconds to the next timer.
 * Returns ARPC_OK, ARPC_EBUSY (not the thread that created the loop, or called from inside one
 * of its callbacks), ARPC_ESHUTDOWN (the loop was stopped and has finished), ARPC_EINVAL (NULL, or
 * a loop created without .pollable). */
ARPC_API int arpc_loop_run_nowait(arpc_loop *loop, int *timeout_ms);

/* Starts a thread that runs the loop. Errors: ARPC_EBUSY (already running), ARPC_ESHUTDOWN
 * (the loop ran and was stopped: a loop runs once; one stopped before it ever ran still
 * starts, for its final drain), ARPC_ESYSTEM, ARPC_EINVAL (a wrapped or pollable loop). */
ARPC_API int arpc_loop_start(arpc_loop *loop);

/* Runs the loop on the calling thread until arpc_loop_stop(). Returns ARPC_OK after a stop,
 * ARPC_EBUSY if the loop is already running elsewhere (also a loop another thread runs with
 * this function and someone stopped, until that run returns), ARPC_ESHUTDOWN if it ran and
 * was stopped (at once for a loop arpc_loop_start ran; one stopped before it ever ran runs
 * once, for its final drain, and returns ARPC_OK),
 * ARPC_EINVAL for a wrapped or pollable loop (the application runs those). */
ARPC_API int arpc_loop_run(arpc_loop *loop);

/* Runs the loop on the calling thread until f completes, timeout_ms passes (ARPC_FOREVER: no
 * limit) or the loop is stopped, then gives the loop back (it may be run again, by anyone).
 * This is how a single-threaded program drives a client without a loop thread of its own:
 * create the loop, pass it in arpc_client_options, never start it; arpc_call then runs it on
 * the calling thread until the reply arrives (no thread hop on the client side). While nobody
 * runs such a loop nothing progresses: wait for its futures with this function, or with
 * arpc_future_wait* or arpc_cq_next*, which run it the same way. Output a
 * run queued just before it ended (a one-way message, a request started while nobody ran the
 * loop) leaves when the loop next runs: every wait does so first, before it can sleep.
 * Returns f's status, ARPC_EPENDING on timeout, ARPC_EBUSY if another thread is running the
 * loop (or the caller is inside it), ARPC_ESHUTDOWN if the loop was stopped, ARPC_EINVAL. */
ARPC_API int arpc_loop_run_until(arpc_loop *loop, arpc_future *f, int64_t timeout_ms);

/* Submits fn(loop, arg) to run on the loop thread. Thread-safe. See the completion contract
 * above. From another thread it may wait for room (see Submission), never for another
 * submitter. A task takes a small node from the loop's pool (allocated only while the pool
 * grows to the most tasks ever queued at once).
 * Errors: ARPC_ESHUTDOWN (the loop is stopping or stopped, including while the submitter
 * waited for room), ARPC_EINVAL, ARPC_ENOMEM (no node could be allocated). */
ARPC_API int arpc_loop_submit(arpc_loop *loop, arpc_task_fn fn, void *arg);

/* Asks the loop to stop: already-accepted tasks still run, then the loop returns. Non-blocking,
 * idempotent, callable from any thread, including from a task or callback on the loop thread. */
ARPC_API void arpc_loop_stop(arpc_loop *loop);

/* Stops the loop, waits for its thread (when started with arpc_loop_start) and frees it.
 * While servers or clients made on it (their options' loop; JSON-RPC clients too) are not yet
 * destroyed and closed, it logs an error and does nothing (the loop is left, not freed under them).
 * Callable from any thread, but a wrapped or pollable loop only from the thread that created
 * it, outside ev_run or a step (anywhere else it logs an error and does nothing; see above).
 * Called from the loop thread (inside a task), the free is deferred
 * until the loop has returned. A submit already waiting for room on another thread returns
 * ARPC_ESHUTDOWN, and the free waits for it to be out. Do not use the loop after this call:
 * a second destroy (even one from a task while the first drains), or any call on the loop
 * after it, aborts in debug builds (arpc/common.h, "API misuse"). NULL does nothing. */
ARPC_API void arpc_loop_destroy(arpc_loop *loop);

/* True when called on the thread currently running the loop. */
ARPC_API bool arpc_loop_on_thread(const arpc_loop *loop);

#ifdef __cplusplus
}
#endif

#endif
