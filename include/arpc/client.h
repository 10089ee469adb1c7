/*
 * arpc/client.h: calling remote methods.
 *
 * A client holds one connection to one server address and may be used by any number of
 * threads at once. Calls are pipelined: many may be outstanding, replies arrive in any
 * order and are matched to their calls by call id (xid) on the client's loop thread.
 *
 * Four ways to call (all copy the request bytes before returning; the caller keeps them):
 *   arpc_call        blocking: z = fn(x, y)
 *   arpc_call_async  returns an arpc_future (wait, poll, then-callback, cancel)
 *   arpc_go          delivers the completed future to an arpc_cq (Go's Client.Go)
 *   arpc_notify      one-way: no reply, no completion
 *
 * Outcomes of a call (the future's status):
 *   ARPC_OK           the handler's reply bytes are the result
 *   ARPC_EHANDLER     the handler failed; the result holds its message (not NUL-terminated)
 *   ARPC_ENOMETHOD    the server has no such method; the result holds the server's message
 *   ARPC_ETIMEDOUT    the deadline passed first (the call may still run on the server)
 *   ARPC_ECONNLOST    the connection broke with the call in flight (it may or may not have run)
 *   ARPC_ETOOLARGE    request larger than the server's or the client's frame limit (not sent),
 *                     or the reply larger than the client's limit (the handler ran; the
 *                     reply was not sent)
 *   ARPC_ESHUTDOWN    the client was closed, or the server is shutting down (did not run)
 *   ARPC_EREJECTED    the server refused the call (did not run)
 *   ARPC_ECANCELLED   the caller cancelled it
 * Every call completes: nothing waits forever once a deadline is set, and connection loss
 * or close completes all pending calls at once.
 */
#ifndef ARPC_CLIENT_H
#define ARPC_CLIENT_H

#include "arpc/common.h"
#include "arpc/cq.h"
#include "arpc/future.h"
#include "arpc/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_client arpc_client;

typedef struct arpc_client_options {
    /* The loop that owns the connection. NULL: the client starts and owns a loop thread. */
    arpc_loop *loop;
    int64_t connect_timeout_ms;  /* 0: 5000 */
    int64_t default_deadline_ms; /* for calls passing deadline 0; 0 here: no deadline */
    uint32_t max_frame;          /* largest request/reply body; 0: ARPC_DEFAULT_MAX_FRAME (16 MiB) */
    uint64_t client_id;          /* 0: random; sent in HELLO (for at-most-once calls, not built yet) */
} arpc_client_options;

/* Connects (blocking up to connect_timeout_ms, which covers the server's HELLO answer;
 * ARPC_FOREVER waits without limit). Not from a task on opts->loop (ARPC_EBUSY: connecting
 * waits for that loop) to "tcp://host:port", "unix:///path" or
 * "inproc://name". opts may be NULL. Errors: ARPC_EADDR, ARPC_ECONNREFUSED, ARPC_ETIMEDOUT,
 * ARPC_ENOMEM, ARPC_ESYSTEM. */
ARPC_API int arpc_client_connect(arpc_client **out, const char *addr, const arpc_client_options *opts);

/* Closes the connection, completes every pending call with ARPC_ESHUTDOWN, waits for the
 * loop to let go of the client, and frees it (and its loop, if the client owns one).
 * No call may be started on c once close has begun. Returns ARPC_OK; ARPC_EBUSY, doing
 * nothing, on the client's loop thread (e.g. inside a then-callback: it would wait for
 * itself); ARPC_EINVAL for NULL. A client does not reconnect: after ARPC_ECONNLOST, close it
 * and connect a new one. */
ARPC_API int arpc_client_close(arpc_client *c);

/* deadline_ms: 0 = the client's default, ARPC_FOREVER = none, otherwise ms from now. */

/* Blocking call. *reply and *reply_len are set (NULL / 0 unless data came back) on every
 * outcome. Returns ARPC_EBUSY, without calling, on the client's own loop thread (it
 * would wait for itself: use arpc_call_async there). On ARPC_OK (and ARPC_EHANDLER / ARPC_ENOMETHOD, which carry a message),
 * *reply receives a buffer the caller frees with arpc_free, and *reply_len its size; reply
 * may be NULL to discard it. Returns the call's outcome (see above). */
ARPC_API int arpc_call(arpc_client *c, const char *method, const void *req, size_t req_len,
                       void **reply, size_t *reply_len, int64_t deadline_ms);

/* Starts a call and returns its future (the caller owns one reference). Every outcome,
 * including immediate failures such as a closed client, arrives through the future.
 * The call holds its own reference until it completes, so releasing yours does not cancel
 * the call (fire and forget); use arpc_future_cancel for that.
 * Returns NULL only when memory for the future itself cannot be had. */
ARPC_API arpc_future *arpc_call_async(arpc_client *c, const char *method, const void *req,
                                      size_t req_len, int64_t deadline_ms);

/* Starts a call whose completed future is delivered to cq with tag. Returns ARPC_OK (the
 * outcome will reach cq, failures included) or ARPC_ENOMEM (nothing will reach cq). */
ARPC_API int arpc_go(arpc_client *c, const char *method, const void *req, size_t req_len,
                     int64_t deadline_ms, arpc_cq *cq, void *tag);

/* Sends a one-way message: no reply, no completion, no retry. ARPC_OK means queued for
 * sending, not delivered. Errors: ARPC_ESHUTDOWN, ARPC_ECONNLOST, ARPC_ETOOLARGE, ARPC_ENOMEM. */
ARPC_API int arpc_notify(arpc_client *c, const char *method, const void *req, size_t req_len);

/* Calls currently waiting for a reply (a snapshot). */
ARPC_API size_t arpc_client_pending(const arpc_client *c);

/* The client's 64-bit id (random unless set in the options). */
ARPC_API uint64_t arpc_client_id(const arpc_client *c);

#ifdef __cplusplus
}
#endif

#endif
