/*
 * The future's layout, for a producer that embeds one in a block of its own (the client's
 * call: one allocation holds the future, the call record and its request), and the producers'
 * side of its references. Everyone else uses arpc/future.h only and never sees these.
 *
 * References (async/future.c's design notes): the user's (arpc_future_retain/release) are
 * counted apart from the producers', so a user's double release is caught even while a
 * producer keeps the future alive, and never drops the producer's reference. A producer
 * inside arpc therefore never uses the public retain/release for its own reference: it holds
 * (arpc_future_hold/drop/complete_drop), or, for a reference it hands to a user later (a
 * completion queue's entry), keeps (arpc_future_keep/hand_over/unkeep). None of these check
 * the user's handle: a producer finishing a future nobody holds any more is normal.
 */
#ifndef ARPC_ASYNC_FUTURE_INTERNAL_H
#define ARPC_ASYNC_FUTURE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "arpc/future.h"
#include "async/loop_internal.h"
#include "base/handle.h"
#include "base/refcount.h"

struct arpc_loop;

struct future_cb {
    struct future_cb *next; /* written before the publishing CAS, read after the swap */
    arpc_future_cb fn;
    void *arg;
};

/* Gives an embedded future's memory back to its owner (see arpc_future_init_embedded). */
typedef void (*arpc_future_free_fn)(arpc_future *f);

/* An embedded future's owner: one constant per kind of owner, so that a future keeps one
 * pointer for both hooks (8 bytes a call less than a hook and a free function of its own). */
struct arpc_future_owner {
    arpc_future_cancel_fn fo_on_cancel; /* the cancel hook, with NULL for its argument */
    arpc_future_free_fn fo_free;        /* see arpc_future_init_embedded */
};

/* Field order packs the 4-byte fields together: one of these per outstanding call (64 bytes). */
struct arpc_future {
    arpc_magic f_magic; /* first: base/handle.h */
    _Atomic uint32_t f_state;     /* ST_* and the final status, in future.c; the futex word */
    _Atomic uint64_t f_refs;      /* USER | KEPT | HOLD fields, see future.c */
    _Atomic(struct future_cb *) f_cbs; /* pending callbacks, or &cb_closed once completed */
    arpc_future_cb f_first_fn;    /* the first then()'s, when it found no other (future.c) */
    void *f_first_arg;
    /* An embedded future's result length: written by the claim winner before DONE, never
     * changed afterwards. 32 bits: arpc completes embedded futures only, with frame bodies
     * (under 4 GiB); a future of its own keeps a size_t in its allocation (future.c). */
    uint32_t f_len;
    /* Four bytes of the embedding owner's (a client's call: core/client_internal.h), beside
     * f_len so that neither leaves a hole; future.c only zeroes them at init. */
    uint32_t f_owner_word;
    _Atomic(void *) f_data;       /* as f_len; take() swaps it for NULL */
    /* An embedded future's owner (the state's ST_EMBEDDED bit); NULL for a future of its own,
     * whose cancel hook and argument follow it in its allocation (future.c). */
    const struct arpc_future_owner *f_owner;
};

/*
 * Initialises f, which lives inside a block its producer owns, as arpc_future_create does
 * (pending, one reference). owner (never NULL) must outlive f: a constant. When f's last
 * reference goes, the result it still holds is freed, f is marked dead for the handle checks,
 * and owner->fo_free(f) is called instead of arpc_free(f): the owner frees the block once its
 * other parts are done with too. Any thread may drop the last reference, so fo_free must be
 * thread-safe. The owner finds itself from f (it knows where f lies in its block), so its
 * cancel hook (fo_on_cancel, from the start: a cancel can only come once f is handed out)
 * gets NULL for its argument. arpc_future_on_cancel on f is misuse (logged, ignored: an
 * embedded future has no room for another hook).
 */
void arpc_future_init_embedded(arpc_future *f, const struct arpc_future_owner *owner);

/* arpc_future_init_embedded with holds producer's holds as well (arpc_future_hold; 1 or 2): no
 * atomic operation, for a future not yet shared with any other thread. */
void arpc_future_init_embedded_held(arpc_future *f, const struct arpc_future_owner *owner, unsigned holds);

/*
 * Names the loop that completes f when no thread of arpc's runs that loop (a client's call on
 * a caller-driven loop: created and never started, or lent with arpc_loop_run), so that a
 * wait on f drives the loop as arpc_call does instead of sleeping for ever, and refuses with
 * ARPC_EBUSY inside it (async/loop_wait.c). Call it before f is handed out. The name takes
 * f's embedded callback slot (no field of its own: a call's block keeps its size), so every
 * then() on f takes a node.
 */
void arpc_future_set_home(arpc_future *f, struct arpc_loop *loop);

/* The loop a wait on f must drive (arpc_future_set_home), or NULL: f is done, or a thread of
 * arpc's completes it. */
struct arpc_loop *arpc_future_home(const arpc_future *f);

/*
 * Names the loop whose thread completes f when arpc's own thread or the application's event
 * loop runs that loop (a client's call on its own loop, or on one started with
 * arpc_loop_start), so that a wait on f inside that loop (a callback it runs), which could
 * never end, returns ARPC_EBUSY. Call it before f is handed out. The name sits in the
 * result's field while f is pending (completion overwrites it) and is only ever compared with
 * the loop the waiting thread is in, never followed: no room taken, and a loop gone since is
 * never touched.
 */
void arpc_future_set_completer(arpc_future *f, struct arpc_loop *loop);

/* Makes f (arpc_future_create's, not yet handed out) a future arpc made, as an embedded one
 * is: on_cancel(f, arg) is its cancel hook, and arpc_future_complete and arpc_future_on_cancel
 * on it are misuse, refused (a producer that counts on its hook running whenever its own
 * completion loses, as the JSON-RPC client does, would wait for ever). The producer completes
 * it with arpc_future_complete_owned or _drop. */
void arpc_future_make_arpcs(arpc_future *f, arpc_future_cancel_fn on_cancel, void *arg);

/* The loop named by arpc_future_set_completer while f is pending, or NULL (none named, or f
 * is complete or being completed). Only to compare with arpc_loop_current(), never to follow:
 * the loop may be gone. */
struct arpc_loop *arpc_future_completer(const arpc_future *f);

/* Sleeps until f is done or deadline_ns passes (ARPC_NEVER: never), whatever its home: for
 * the loop's own wait, which drives the loop itself. f's status or ARPC_EPENDING. */
int arpc_future_sleep_until(arpc_future *f, uint64_t deadline_ns);

/* True when f can only be completed by the loop the calling thread is inside (its completer),
 * where a wait could never end. */
bool arpc_future_stuck_here(const arpc_future *f);

/* The loop a wait on f runs: its home (a caller-driven loop), or, on the thread that owns the
 * wrapped or pollable loop completing it, that loop, outside its steps (inside, the wait is
 * stuck: arpc_future_stuck_here, NULL): nobody else would run it meanwhile, and arpc_call runs
 * it there too. NULL: the wait sleeps (or, stuck, is refused). */
struct arpc_loop *arpc_future_loop_to_run(const arpc_future *f);

/* The public entry check: NULL is false; a released future (no USER reference left) or a
 * pointer that is not a future is misuse (base/handle.h). fn: the public name to report. */
bool arpc_future_live(const arpc_future *f, const char *fn);

/* A producer's hold: keeps f's block alive, never stands in for the user (releasing the
 * user's last reference of a held pending future does not cancel it). The caller already
 * holds a reference of some kind. Any thread. */
void arpc_future_hold(arpc_future *f);

/* Drops a hold; the last reference of any kind frees f (cancelling it first if pending). */
void arpc_future_drop(arpc_future *f);

/* Completes f as arpc_future_complete does, for its producer, whoever made it: the public
 * entry refuses a future arpc made (a call's, embedded), which its client completes here. */
bool arpc_future_complete_owned(arpc_future *f, int status, void *data, size_t len);

/* Completes f as arpc_future_complete does, then drops the caller's hold: for a producer
 * whose user may be gone. The callbacks borrow a USER reference meanwhile. Returns true when
 * this call completed f (false: it was complete already, data is freed). */
bool arpc_future_complete_drop(arpc_future *f, int status, void *data, size_t len);

/* Sets the latch kept for f's owner in f's state word and says whether it was set already
 * (an atomic exchange, sequentially consistent): of two parties that each call it once, the
 * second knows it is second (a client's call: its loop and a cancelling thread, whichever
 * lets go second frees). Any thread; f's block must be alive. */
bool arpc_future_owner_latch(arpc_future *f);

/* True once f is complete (arpc_future_poll without the user's handle check). */
bool arpc_future_done(const arpc_future *f);

/* True while f is being completed on some thread (claimed, not yet published): a cancel runs
 * its hook in that window, and whatever the hook wakes must not go back to sleep before the
 * result is out (async/loop_wait.c). A snapshot; any thread. */
bool arpc_future_settling(const arpc_future *f);

/* Loop thread, from a job a cancel's hook posted (job, running fn): while f is settling, posts
 * job again to run fn, and returns true. The hook runs before the cancel publishes
 * ARPC_ECANCELLED, so the loop turns again until it has: an application driving the loop
 * (arpc_loop_run_nowait, a look at f, then poll) finds f done after the turn that heard the
 * cancel, instead of sleeping on a pending one. False once f is published (or the loop
 * refuses the post: stopping): the job may let go. */
bool arpc_future_repost_while_settling(const arpc_future *f, struct arpc_loop *loop, struct arpc_loop_job *job,
                                       arpc_loop_job_fn fn);

/* A reference kept for a later taker (a completion queue's entry): keeps f wanted, like a
 * user's, but the user's count is apart. The caller holds a live USER reference (checked by
 * arpc_future_live). False when f has too many kept already (65,279). */
bool arpc_future_keep(arpc_future *f);

/* The kept reference becomes the taker's USER reference (one atomic step). */
void arpc_future_hand_over(arpc_future *f);

/* Drops a kept reference nobody took; the last reference of any kind frees f. */
void arpc_future_unkeep(arpc_future *f);

#endif
