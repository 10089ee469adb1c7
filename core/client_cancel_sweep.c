/*
 * Cancels that could not reach the loop on their own (core/client_api.c: no memory for the
 * cancel's job).
 *
 * Why. A cancelled call's future is complete at once, on the cancelling thread, but only the
 * loop can take the call out of the pending table, free its slot and tell the server (a
 * CANCEL frame: a call that has not started will not run). Without a job to carry the
 * cancel there, a call already sent kept its slot, its memory and its run on the server
 * until its reply or its deadline (for ever without one).
 *
 * How, at no cost per call: the client has one sweep job of its own (cl_cancel_sweep). A
 * cancel without a job posts it unless it is on the lane already (cl_sweep_posted, taken by
 * exchange); the sweep gives the flag back before it looks, so a cancel that finds the flag
 * taken completed its future before the sweep's look (the exchanges order them), and is seen.
 * The sweep settles every call the loop holds whose future is complete, or being completed,
 * while the call is not finished: only a cancel completes a call's future before the loop
 * finishes it. A cancel's own job that comes later finds its call finished and only lets go
 * of its share.
 *
 * Cost: a pass over the pending table and the waiting list per sweep, restarted after each call
 * it settles (settling changes the table); sweeps happen only when an allocation failed.
 */
#include "arpc/error.h"
#include "async/future_internal.h"
#include "core/client_internal.h"
#include "core/client_resend.h"

/* Whether a cancel completed the call (or is completing it: its hook, which posted this
 * sweep, runs after the claim and before the result is out). Only the loop completes a call
 * otherwise, when it finishes it. */
static bool sweep_cancelled(struct client_call *call)
{
    return !call->cc_finished && (arpc_future_done(&call->cc_future) || arpc_future_settling(&call->cc_future));
}

/* A call the loop holds that a cancel completed, not yet settled: NULL if none. */
static struct client_call *sweep_find(arpc_client *c)
{
    struct pending_iter it;
    struct client_call *call;
    pending_iter_init(&it);
    while (pending_next(&c->cl_pending, &it, &call))
        if (sweep_cancelled(call))
            return call;
    for (uint32_t pos = c->cl_waiting.wc_head; (call = waiting_at(&c->cl_waiting, &pos)) != NULL; pos++)
        if (sweep_cancelled(call))
            return call;
    return NULL;
}

static void sweep_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    arpc_client *c = ARPC_DLIST_ENTRY(job, arpc_client, cl_cancel_sweep); /* (a container_of) */
    /* Acquire: the futures that cancels completed before they found the flag taken. */
    (void)atomic_exchange(&c->cl_sweep_posted, false);
    if (!c->cl_cleaned) { /* (closed: every call was ended, and the table is gone) */
        client_direct_catch_up(c); /* a call its caller wrote reaches the loop first */
        struct client_call *call;
        while ((call = sweep_find(c)) != NULL)
            calls_cancel_settle(call); /* finished: the loop's share is let go */
    }
    client_release(c);
}

void cancel_sweep_post(arpc_client *c)
{
    if (atomic_exchange(&c->cl_sweep_posted, true))
        return; /* on the lane, and not yet looking: it will see our future complete */
    arpc_loop_job_init(&c->cl_cancel_sweep, sweep_run);
    client_retain(c);
    if (arpc_loop_post(c->cl_loop, &c->cl_cancel_sweep) != ARPC_OK) {
        atomic_store(&c->cl_sweep_posted, false); /* a stopped loop: no call is settled any more */
        client_release(c);
    }
}
