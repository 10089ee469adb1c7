/*
 * The server's request object, shared by the three files that handle it (loop thread unless
 * a function says otherwise):
 *   request.c           the object's life, the reply that leaves it, cancellation
 *   request_deadline.c  the answers the server gives in a handler's place (deadline, stop)
 *   request_dispatch.c  running handlers on their actors, and flow control at a full mailbox
 */
#ifndef ARPC_CORE_REQUEST_INTERNAL_H
#define ARPC_CORE_REQUEST_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "async/actor_internal.h"
#include "async/loop_internal.h"
#include "core/server_internal.h"

enum {
    RQ_IN_HANDLER = 1u << 0, /* holder: the handler has not returned yet */
    RQ_REPLY_DONE = 1u << 1, /* holder let go: the reply was delivered (or dropped) */
    RQ_REPLIED = 1u << 2,    /* marker: a reply began (a second one is refused) */
    RQ_CANCELLED = 1u << 3,  /* a CANCEL frame arrived for it */
    RQ_CANCEL_CB = 1u << 4,  /* rq_cancel_fn is set */
    RQ_STARTED = 1u << 5,    /* the handler was called */
    RQ_SERVER_ANSWERED = 1u << 6, /* the server answered the caller itself (rq_late_code) */
};

struct arpc_request {
    struct arpc_loop_job rq_job; /* lets go of the reply's holder on the loop, when no reply can */
    struct arpc_actor_job rq_actor_job; /* its post to its actor */
    struct server_conn *rq_conn;
    const struct arpc_method *rq_method;
    uint64_t rq_xid;
    uint64_t rq_seq;         /* numbered (at-most-once) call: its seq; 0 otherwise */
    uint64_t rq_ack;         /* the ack the request carried */
    uint64_t rq_deadline_ns; /* from the wire's budget, counted from arrival; ARPC_NEVER: none */
    atomic_uint rq_flags;
    bool rq_oneway;
    bool rq_tracked;         /* in its connection's table (a call that may be cancelled) */
    bool rq_awaiting;        /* in the server's sv_awaiting list (loop thread) */
    bool rq_counted;         /* counts toward its connection's flow limits (core/server_inflight.c) */
    signed char rq_pool_class; /* its block's class in the server's request pool (core/block_pool.h) */
    size_t rq_charge;        /* the bytes it owes its connection until its reply is queued */
    int rq_late_code;        /* RQ_SERVER_ANSWERED: what a late reply returns */
    struct arpc_deadline rq_deadline; /* the wire's deadline, armed on the loop */
    struct arpc_dlink rq_link;        /* sv_awaiting */
    arpc_request_cancel_fn rq_cancel_fn;
    void *rq_cancel_arg;
    uint64_t rq_dispatched_ns; /* the latency histogram's start (arpc_now_ns) */
    uint32_t rq_len;
    const uint8_t *rq_data;  /* the payload: rq_inline, or inside rq_body */
    uint8_t *rq_body;        /* a large frame's body buffer, kept as it was read (core/conn.h); NULL: none */
    size_t rq_body_cap;
    uint8_t rq_inline[];     /* a small payload's copy */
};

#define SHUTTING_DOWN "server shutting down"

/* The handler returned / the reply was handed over: whichever comes last frees the request
 * (any thread). */
void request_handler_done(arpc_request *req);
void request_reply_done(arpc_request *req);
/* The request leaves its connection's table: a CANCEL can no longer find it. */
void request_untrack(arpc_request *req);
/* Answers a call that will not run, with why (any thread). */
void request_refuse(arpc_request *req, int code, const char *why);

/* The call was answered with code (the handler's reply, or the server's in its place):
 * counted once in its method's stats with its latency (loop thread). */
void request_count_answer(arpc_request *req, int code);

/* Lists the call as waiting for a reply and arms its deadline / the reverse (request_deadline.c). */
void request_list(arpc_server *s, arpc_request *req);
void request_unlist(arpc_request *req);

#endif
