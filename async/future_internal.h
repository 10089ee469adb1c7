/*
 * The future's layout, for a producer that embeds one in a block of its own (the client's
 * call: one allocation holds the future, the call record and its request). Everyone else
 * uses arpc/future.h only and never sees these fields.
 */
#ifndef ARPC_ASYNC_FUTURE_INTERNAL_H
#define ARPC_ASYNC_FUTURE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "arpc/future.h"
#include "base/handle.h"
#include "base/refcount.h"

struct future_cb {
    struct future_cb *next; /* written before the publishing CAS, read after the swap */
    arpc_future_cb fn;
    void *arg;
};

/* Gives an embedded future's memory back to its owner (see arpc_future_init_embedded). */
typedef void (*arpc_future_free_fn)(arpc_future *f);

/* Field order packs the 4-byte fields together: one of these per outstanding call. */
struct arpc_future {
    arpc_magic f_magic; /* first: base/handle.h */
    _Atomic uint32_t f_state;     /* ST_* in future.c; the futex word */
    arpc_refcount f_refs;
    int f_status;                 /* written by the claim winner before DONE */
    _Atomic(struct future_cb *) f_cbs; /* pending callbacks, or &cb_closed once completed */
    struct future_cb f_first;
    size_t f_len;                 /* written by the claim winner before DONE; never changes afterwards */
    _Atomic(void *) f_data;       /* idem; take() swaps it for NULL */
    arpc_future_cancel_fn f_on_cancel; /* set by the producer before handing f out */
    union {                       /* which: the state's ST_EMBEDDED bit (future.c) */
        void *f_on_cancel_arg;    /* a future of its own (arpc_free'd) */
        arpc_future_free_fn f_free; /* an embedded one: its owner's (f_on_cancel gets NULL) */
    };
};

/*
 * Initialises f, which lives inside a block its producer owns, as arpc_future_create does
 * (pending, one reference). When its last reference goes, the result it still holds is
 * freed, f is marked dead for the handle checks, and free_fn(f) is called instead of
 * arpc_free(f): the owner frees the block once its other parts are done with too. Any
 * thread may drop the last reference, so free_fn must be thread-safe. The owner finds itself
 * from f (it knows where f lies in its block), so the cancel hook of an embedded future gets
 * NULL for its argument (arpc_future_on_cancel's arg is not stored: its room holds free_fn).
 */
void arpc_future_init_embedded(arpc_future *f, arpc_future_free_fn free_fn);

#endif
