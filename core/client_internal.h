/*
 * The client's insides, shared by the files that implement it:
 *   core/client.c        life cycle: connect (through the HELLO answer), close
 *   core/client_conn.c   the connection: HELLO, frames from the server, GOAWAY, connection loss
 *   core/client_call.c   the call object: start, send, finish, deadline, cancel; the call API
 *
 * Threads: callers encode a request on their own thread and hand the call to the loop on the
 * loop's job lane (a job embedded in the call: no allocation, no lock, no waiting). Everything
 * else -- the pending table, the deadline heap, the socket -- is touched by the loop thread
 * only, so the only shared state is a handful of atomics (state, xid counter, counts, refs).
 *
 * Lifetime: the client is refcounted (base/refcount.h). The user's handle is one reference; a
 * cancel on its way to the loop holds another (a user may cancel while the client closes);
 * the loop's stop hook holds one while registered. Calls need none: they are posted before
 * close is called (the contract forbids starting calls once close has begun), and the lane
 * runs jobs in order, so close runs after them.
 */
#ifndef ARPC_CORE_CLIENT_INTERNAL_H
#define ARPC_CORE_CLIENT_INTERNAL_H

#include <stdatomic.h>

#include "arpc/client.h"
#include "async/loop_internal.h"
#include "base/refcount.h"
#include "base/u64_map.h"
#include "core/conn.h"
#include "transport/transport.h"

enum client_state { CL_OPEN, CL_DRAINING, CL_LOST, CL_CLOSED };

struct arpc_client {
    arpc_refcount cl_refs;
    atomic_int cl_state;        /* enum client_state */
    atomic_int cl_lost_reason;  /* why calls fail once not CL_OPEN */
    atomic_uint_fast64_t cl_next_xid;
    atomic_size_t cl_npending;  /* calls started and not yet completed */
    atomic_size_t cl_live;      /* call objects not yet freed: close waits for 0 */
    atomic_uint cl_server_max;  /* the server's frame limit, from its HELLO */
    arpc_loop *cl_loop;
    bool cl_owns_loop;
    uint64_t cl_id;
    int64_t cl_default_deadline_ms;
    uint32_t cl_max_frame;
    char cl_addr[ARPC_ADDR_MAX];
    /* loop thread only */
    struct arpc_conn cl_conn;
    struct arpc_u64_map cl_pending; /* xid -> struct client_call */
    arpc_future *cl_hello;          /* completed when the server's HELLO arrives (or the connection fails) */
    uint32_t cl_server_flags;       /* from the server's HELLO (enum arpc_hello_flag) */
    bool cl_cleaned;                /* pending calls failed and the connection closed */
    bool cl_hook;                   /* the loop stop hook is registered (and holds a reference) */
};

struct client_call {
    struct arpc_loop_job cc_job;      /* how the call reaches the loop */
    atomic_int cc_released;           /* see call_release_shared */
    arpc_future *cc_future;
    arpc_client *cc_client;
    uint64_t cc_xid;
    struct arpc_deadline cc_deadline; /* d_when_ns holds the deadline (0: none) until armed */
    uint8_t *cc_frame;                /* until handed to the connection */
};

/* client.c */
void client_retain(arpc_client *c);
void client_release(arpc_client *c);
int client_unavailable_reason(arpc_client *c);

/* client_conn.c (loop thread) */
void client_conn_attach(arpc_loop *loop, void *c);  /* a loop task: adopts the connected fd, sends HELLO */
void client_cleanup(arpc_client *c);               /* once: fails pending calls, closes the connection */
void client_on_loop_stop(arpc_loop *loop, void *c);

/* client_call.c (loop thread) */
void client_fail_all(arpc_client *c, int reason);
void call_finish(struct client_call *call, int status, void *data, size_t len);

#endif
