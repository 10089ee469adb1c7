/*
 * arpc/future.h: the result of one asynchronous operation (one RPC call).
 *
 * States: pending -> ok | error | cancelled. A future completes exactly once; every later
 * attempt to complete or cancel it is a harmless no-op that reports it lost the race.
 *
 * Result and ownership: a completed future holds a status (ARPC_OK or an arpc_error code)
 * and, for ARPC_OK and for some errors (e.g. ARPC_EHANDLER carries the handler's message),
 * a result buffer. The buffer belongs to the future: arpc_future_data() lends it until the
 * last reference is released; arpc_future_take() moves it to the caller, who frees it with
 * arpc_free().
 *
 * References: arpc_future_create() and every call that returns a future hand the caller one
 * reference; arpc_future_retain()/arpc_future_release() are thread-safe. Releasing the last
 * reference of a still-pending future cancels it first, so every `then` callback still runs
 * exactly once, unless its producer goes on with it (an RPC call holds its own until it
 * completes, arpc/client.h; a completion queue its entry's, arpc/cq.h). A release after your
 * last one, or any call on a future after it, aborts in debug builds (arpc/common.h, "API
 * misuse"), also while a producer still holds the future: its own reference is counted
 * apart, so it is never the one released. A callback may use the future it is given (it
 * borrows a reference) even when every user has released theirs. Two gaps in that check: a
 * release made while the future's callbacks run (they borrow a reference) is caught only when
 * they return, on the completing thread; and once a completion queue handed the future over
 * (arpc_cq_trynext), a stale release by its first owner drops the taker's reference unseen.
 * NULL is ARPC_EINVAL (or nothing).
 *
 * Threads: all functions are thread-safe. Callbacks registered with arpc_future_then() run
 * on the thread that completes the future (for RPC calls: the client's loop thread, so
 * they must not block) or, if the future is already complete at registration, immediately
 * on the registering thread before arpc_future_then() returns. Waiters (arpc_future_wait and
 * its kin) are woken as the status is published, before the callbacks run: a wait may return
 * while a callback still runs, so what a callback writes needs synchronisation of its own
 * (e.g. a semaphore it posts last).
 */
#ifndef ARPC_FUTURE_H
#define ARPC_FUTURE_H

#include "arpc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_future arpc_future;

/* Runs exactly once per registration, after the future completed (see Threads above). The
 * callback borrows f: retain it to keep it past the callback's return. */
typedef void (*arpc_future_cb)(arpc_future *f, void *arg);

/* ---- consumer side ---- */

/* ARPC_EPENDING while pending, otherwise the final status. Never blocks. */
ARPC_API int arpc_future_poll(const arpc_future *f);

/* Blocks until complete and returns the final status. A call's future on a client whose loop
 * only waiters run (caller-driven: created and never started, or lent with arpc_loop_run;
 * arpc/loop.h) is waited for as arpc_call waits: the waiting thread runs that loop while
 * nobody else does, so its reply and its deadline come in. Inside that loop (a callback it
 * runs) such a wait could never end: it returns ARPC_EBUSY at once, the future still pending.
 * So does a wait inside a callback that the loop completing the call runs on its own thread
 * (the client's own loop, or one started with arpc_loop_start), or inside a step of a
 * pollable loop that completes it: only that thread could complete it (a cancel from another
 * thread aside). A wrapped or pollable loop is the application's event loop's to run: a wait
 * on another thread sleeps until the owner's steps complete the call; a wait on its owner
 * thread, outside ev_run or arpc_loop_run_nowait, runs it until done, as arpc_call does there
 * (before, nothing ran it and such a wait never returned). */
ARPC_API int arpc_future_wait(arpc_future *f);

/* Waits at most timeout_ms (ARPC_FOREVER: no limit), as arpc_future_wait. Returns the final
 * status, ARPC_EPENDING if the wait timed out and the future is still pending, or ARPC_EBUSY
 * (still pending) inside the loop that must complete it. */
ARPC_API int arpc_future_wait_for(arpc_future *f, int64_t timeout_ms);

/* Registers cb(f, arg). Any number of callbacks may be registered; each runs exactly once.
 * Errors: ARPC_ENOMEM (cb will not run), ARPC_EINVAL. */
ARPC_API int arpc_future_then(arpc_future *f, arpc_future_cb cb, void *arg);

/* Cancels a pending future: it completes with ARPC_ECANCELLED and its producer is told (see
 * arpc_future_on_cancel). Idempotent and safe to race with completion. Returns true when this
 * call completed the future, false when it was already complete. */
ARPC_API bool arpc_future_cancel(arpc_future *f);

/* The result buffer, lent until the future is released (NULL with *len = 0 when there is
 * none, the future is pending, or the buffer was taken). len may be NULL. */
ARPC_API const void *arpc_future_data(const arpc_future *f, size_t *len);

/* Moves the result buffer to the caller (free with arpc_free). NULL if none or pending. */
ARPC_API void *arpc_future_take(arpc_future *f, size_t *len);

/* Takes one more reference / drops one, from any thread (the future is freed with the last,
 * and an attached then-callback or completion queue holds its own). Release NULL does
 * nothing; a release beyond the references held, or any use after the last, is misuse
 * (arpc/common.h). */
ARPC_API void arpc_future_retain(arpc_future *f);
ARPC_API void arpc_future_release(arpc_future *f);

/* Waits until every future is complete, driving their loops as arpc_future_wait does. Returns
 * ARPC_OK, ARPC_EPENDING on timeout, ARPC_EBUSY inside a loop that must complete one of them,
 * or ARPC_EINVAL (fs NULL with n > 0, or a NULL future among them). */
ARPC_API int arpc_future_wait_all(arpc_future *const *fs, size_t n, int64_t timeout_ms);

/* Waits until at least one future is complete and stores its position in *index (the lowest
 * position among those complete). Drives the loop of the first among them that only waiters
 * run (see arpc_future_wait; the others complete as their own loops run). Returns ARPC_OK,
 * ARPC_EPENDING on timeout, ARPC_EBUSY inside that loop (or inside the loop that alone
 * completes every one of them: see arpc_future_wait), ARPC_EINVAL (n == 0, fs or index NULL,
 * or a NULL future among them; a released one is misuse: arpc/common.h), ARPC_ENOMEM.
 * Memory: a wait registers a small callback on each future still pending, which stays until
 * that future completes (a registration cannot be taken back); a loop of short waits over
 * long calls holds one per wait and future meanwhile. To poll many futures again and again,
 * attach them to a completion queue (arpc/cq.h) instead: one registration each, for good. */
ARPC_API int arpc_future_wait_any(arpc_future *const *fs, size_t n, int64_t timeout_ms,
                                  size_t *index);

/* ---- producer side ---- */

/* Creates a pending future with one reference. Errors: ARPC_ENOMEM. */
ARPC_API int arpc_future_create(arpc_future **out);

/* Completes f with status (ARPC_OK or an arpc_error code; ARPC_EPENDING, a negative status or
 * one above 16,777,215 completes it with ARPC_EINVAL) and takes ownership of data (from arpc_malloc,
 * arpc/alloc.h; may be NULL). Returns true when this call completed f; false when f was already complete,
 * in which case data is freed. Callbacks run on the calling thread before this returns.
 * The caller must hold a reference to f for the duration of the call (a woken waiter may
 * release its own at once). For futures made with arpc_future_create only: on a future arpc
 * made (a call's) it is misuse, reported (an ERROR line, then abort() in builds without
 * NDEBUG; with NDEBUG, false, data freed and f untouched). */
ARPC_API bool arpc_future_complete(arpc_future *f, int status, void *data, size_t len);

/* Called when a consumer cancels f (at most once, on the cancelling thread, before
 * arpc_future_cancel returns), so the producer can drop the work. Set it before handing f out.
 * The hook may release a reference it owns, the last one included (the canceller's, when
 * producer and consumer are one): f stays valid until the hook and f's callbacks have run.
 * One released already is misuse (a release of a pending future's last reference cancels it,
 * and a hook that then releases again is reported: arpc/common.h, "API misuse").
 * For the producer of f only: on a future arpc made (a call's), another hook is misuse
 * (logged, ignored). */
typedef void (*arpc_future_cancel_fn)(arpc_future *f, void *arg);
ARPC_API void arpc_future_on_cancel(arpc_future *f, arpc_future_cancel_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif
