/*
 * arpc/cq.h: a completion queue, like the Done channel of Go's rpc.Client.Go.
 *
 * Futures attached to a queue are delivered to it when they complete, in completion order,
 * each with the tag given at attach time. A program drains it with arpc_cq_next (blocking),
 * arpc_cq_next_for (timed) or arpc_cq_trynext (non-blocking).
 *
 * A server can deliver a method's requests to a queue too (arpc_method_options.queue in
 * arpc/server.h): each arrives as an entry whose future is already complete (release it) and
 * whose tag is the arpc_request *, to be answered with arpc_reply / arpc_reply_error (always:
 * the reply frees it). One queue may carry both calls' completions and requests; nothing in
 * the entry tells them apart (a request's future is ARPC_OK with no data, as an empty reply
 * may be) but the tag, so give calls tags a request cannot be, or give each kind a queue.
 *
 * Integration with a foreign event loop: arpc_cq_fd() is an eventfd that is readable while
 * the queue holds entries. Watch it for readability (poll, epoll, libev, ...) and call
 * arpc_cq_trynext() until it returns ARPC_EAGAIN. The fd may, rarely, be readable when a
 * racing consumer has just emptied the queue; arpc_cq_trynext() then returns ARPC_EAGAIN
 * and clears it, so a poll loop never spins. Never read or close the fd yourself.
 * The fd says when calls complete, not what makes them complete: a call of a client on a
 * caller-driven loop (created and never started, arpc/loop.h) completes only while some
 * thread runs that loop, so polling this fd alone waits for nothing. Start the client's loop,
 * use the default client (a loop thread of its own), make the loop pollable and poll its fd
 * too (arpc_loop_fd, arpc_loop_run_nowait), or let arpc_cq_next drive it.
 * The fd is made readable when the queue goes from empty to not empty, not once per entry
 * (a write per completion would cost the producer a system call each): level-triggered
 * watches (poll, epoll without EPOLLET, libev) may take any number of entries per wake-up,
 * e.g. a fair share, and are woken again while entries remain; with EPOLLET no new edge
 * comes while the queue holds entries, so drain it until ARPC_EAGAIN at every wake-up: an
 * entry left behind is not signalled again.
 *
 * Unbounded: completions are never dropped or delayed for lack of room (unlike a full Go
 * channel). Producers (usually a client's loop thread) never block or take a lock; they push
 * onto a Concurrency Kit lock-free stack. Consumers may be several threads.
 *
 * Lifetime: arpc_cq_destroy() may be called while futures are still attached; the queue is
 * freed once the last of them has been delivered (their futures are released then). So a
 * future that never completes keeps its queue: a call's always completes (by its deadline,
 * its client's close), but a future made with arpc_future_create and attached, then dropped
 * by its producer while pending, holds the queue for good (a leak a leak checker reports):
 * complete or cancel such futures before letting them go.
 */
#ifndef ARPC_CQ_H
#define ARPC_CQ_H

#include "arpc/common.h"
#include "arpc/future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_cq arpc_cq;

/* Any thread. Errors: ARPC_EINVAL (out NULL), ARPC_ENOMEM, ARPC_ESYSTEM (no eventfd). */
ARPC_API int arpc_cq_create(arpc_cq **out);

/* Releases the caller's handle. Futures still queued are released; futures still pending are
 * released when they complete. Consumers waiting in arpc_cq_next / _next_for at the time
 * return ARPC_ESHUTDOWN, but a consumer between two takes (handling an entry) would come back
 * to a freed queue: to end consumer threads, arpc_cq_shutdown, join them, then destroy. A
 * call on the queue after destroy is misuse, as is a second destroy (arpc/common.h, "API
 * misuse": an abort in debug builds), and a destroy while a server's method delivers requests
 * to the queue (arpc_method_options.queue), before that server's stop is over: refused, with
 * an ERROR line "... destroy the server first" (an abort in debug builds; with NDEBUG the
 * queue stays as it is): such a queue is shut down, its consumers joined, the server stopped,
 * then the queue destroyed.
 * NULL does nothing. */
ARPC_API void arpc_cq_destroy(arpc_cq *cq);

/* Ends the queue's consumers, keeping the handle valid until arpc_cq_destroy: from now on a
 * take that finds the queue empty returns ARPC_ESHUTDOWN instead of ARPC_EAGAIN or waiting
 * (entries already queued are still taken first, so no completion in the queue is lost), the
 * consumers asleep in next / next_for wake, the fd stays readable (a poll loop wakes, and its
 * trynext then says ARPC_ESHUTDOWN: stop polling the fd), and arpc_cq_attach (arpc_go, a
 * server's method delivering here) is refused with ARPC_ESHUTDOWN. Futures attached before
 * and still pending are not waited for: their entries are queued when they complete, and
 * released by the destroy if nobody takes them. So a consumer thread loops until a take says
 * ARPC_ESHUTDOWN; the owner calls this, joins the consumers, then destroys (gRPC's
 * CompletionQueue::Shutdown, without waiting for what is pending). Idempotent; any thread,
 * callbacks and consumers included; lock-free (one store, one eventfd write). Returns ARPC_OK;
 * ARPC_EINVAL for NULL (a destroyed queue is misuse). */
ARPC_API int arpc_cq_shutdown(arpc_cq *cq);

/* Delivers f to cq with tag when f completes (at once if it already has). The queue takes its
 * own reference to f, handed to whoever takes the entry; the caller keeps theirs (releasing it
 * once is fine, twice is misuse). Errors: ARPC_ENOMEM, ARPC_EINVAL, ARPC_EBUSY (f is attached
 * to 65,279 queues already), ARPC_ESHUTDOWN (arpc_cq_shutdown was called). */
ARPC_API int arpc_cq_attach(arpc_cq *cq, arpc_future *f, void *tag);

/* Takes the oldest completed entry. On ARPC_OK, *f holds one reference the caller must
 * release, and *tag (if tag is not NULL) the attach tag.
 * trynext: ARPC_EAGAIN when empty. next_for: ARPC_EAGAIN when still empty after timeout_ms.
 * next: blocks until an entry arrives. While calls of a client on a caller-driven loop (created
 * and never started, or lent with arpc_loop_run; arpc/future.h) are attached and pending,
 * next and next_for run that loop while nobody else does, so their replies come in (one such
 * loop per queue: the first attached call's); inside that loop they return ARPC_EBUSY. The
 * same on the thread that owns a wrapped or pollable loop, outside its steps, while calls
 * that loop completes are attached (the first attached call's loop).
 * Likewise, inside the loop a thread runs for a client (its own loop thread, or a loop
 * started with arpc_loop_start or stepped as pollable: a callback there), next and next_for
 * on an empty queue return ARPC_EBUSY at once when every attached, pending future is a call
 * that loop completes (one such loop per queue: the first attached call's): the loop cannot
 * read their replies while its callback waits. next and next_for return ARPC_ESHUTDOWN when
 * the queue is destroyed while they wait; all three return it for an empty queue once
 * arpc_cq_shutdown was called. Any thread, several at once (each entry goes to one
 * of them). ARPC_EINVAL: f NULL, or cq NULL (or destroyed, with NDEBUG: misuse). */
ARPC_API int arpc_cq_trynext(arpc_cq *cq, arpc_future **f, void **tag);
ARPC_API int arpc_cq_next_for(arpc_cq *cq, int64_t timeout_ms, arpc_future **f, void **tag);
ARPC_API int arpc_cq_next(arpc_cq *cq, arpc_future **f, void **tag);

/* The eventfd described above; valid until arpc_cq_destroy. Any thread. -1 for a NULL queue
 * (and, with NDEBUG, a destroyed one: misuse, reported as arpc/common.h says). */
ARPC_API int arpc_cq_fd(const arpc_cq *cq);

/* Entries waiting to be taken (a snapshot). Any thread; 0 for NULL. */
ARPC_API size_t arpc_cq_size(const arpc_cq *cq);

#ifdef __cplusplus
}
#endif

#endif
