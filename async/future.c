/*
 * Design notes.
 *
 * State word (f_state, 32 bits so it can be a futex):
 *   CLAIMED  one completer (complete or cancel) won; set with one atomic OR, so exactly one
 *            caller sees it clear. The winner alone writes f_data / f_len.
 *   DONE     the result is published. Set with release after the winner's writes, in the
 *            same RMW as the status (bits 8-31: no field of its own, so a call's block stays
 *            at its size with the 64-bit f_refs below); readers load it with acquire before
 *            reading the result.
 *   WAITERS  a thread sleeps (or is about to) on the word, so the completer must make the
 *            wake system call. Waiters set it with an RMW on the same word as DONE: the
 *            total order of those two RMWs guarantees that either the completer sees WAITERS
 *            or the waiter sees DONE, and the kernel re-checks the word before sleeping.
 *
 * Callbacks: a lock-free LIFO of nodes (f_cbs). then() pushes with a CAS; completion, after
 * publishing DONE, swaps the head for the CLOSED sentinel and runs the nodes it took, in
 * registration order. A then() that finds DONE or CLOSED runs its callback itself (DONE comes
 * first, and a waiter woken by it may register before the swap: the callback must still run
 * before then() returns, arpc/future.h). A node is either in the list before the swap (run by
 * the completer) or saw DONE or CLOSED (run by then()): exactly once in every interleaving. The first then() uses the callback slot embedded in the future
 * (f_first_fn/arg), so the common single-callback case (a cq, a wait_any) does not allocate.
 * The slot has no link of its own (8 bytes less per call): it goes in only onto an empty
 * list, so it is always the tail, and the list holds it as the shared marker cb_first. A then()
 * whose CAS onto the empty list loses takes a node like any later one.
 *
 * References (f_refs): three kinds of holders, counted in one 64-bit word so that each change
 * is one atomic RMW and the thread that takes the word to zero knows it was the last of all:
 *   USER  (bits 32-63) the user's handles: create/retain hand one out, release drops one.
 *   KEPT  (bits 16-31) references kept for a later taker (a completion queue's entry): they
 *         keep the future wanted, and become a USER one when handed over (one RMW moving the
 *         unit, so the word never passes through zero on the way).
 *   HOLD  (bits 0-15)  producers' holds (a call, a JSON-RPC call): keep the block alive and
 *         nothing more, so they never stand in for the user.
 * The user's handle is live while USER > 0 (future_live checks it): a release with USER at
 * zero is a double release, reported as misuse even while a producer keeps the block alive.
 * Without that split a second release dropped the producer's reference unseen, and the
 * damage showed when the producer let go (issue #10). A pending future whose USER and KEPT
 * reach zero while a producer holds it goes on without a user (releasing a call's future does
 * not cancel the call); when the last of all goes and it is still pending, the releaser takes
 * a USER reference back (no other thread can reach it), cancels, and releases again.
 *
 * Callbacks use f through the public API, so they run with a USER reference: the completer's
 * own (complete/cancel need one), or, when a producer completes with its HOLD
 * (arpc_future_complete_drop, every user may be gone), one it borrows for them and drops with
 * its HOLD in one RMW afterwards. Whoever completes holds a reference of some kind, so the
 * future outlives the wake-up and the callbacks even when a woken waiter releases at once.
 *
 * Memory order: adding a reference is relaxed (the adder already holds one, so the block
 * cannot go under it); dropping one is acquire-release, so everything any holder wrote
 * happens-before the free by the last (as base/refcount.h). The liveness check is a relaxed
 * load: a diagnostic, not a synchronisation; a double release racing with the legitimate
 * one on another thread is caught only when the count says so (undefined otherwise, as for
 * other handles). A USER count found already at zero by a put is never "fixed": the word is
 * left nonzero, so the block leaks rather than being freed under someone (NDEBUG builds).
 */
#include "arpc/future.h"

#include <assert.h>
#include <ck_pr.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "arpc/error.h"
#include "async/futex.h"
#include "async/future_internal.h"
#include "async/loop_internal.h"
#include "base/clock.h"
#include "base/handle.h"
#include "base/log.h"
#include "base/refcount.h"
#include "base/alloc.h"

enum {
    ST_CLAIMED = 1u << 0,
    ST_DONE = 1u << 1,
    ST_WAITERS = 1u << 2,
    ST_FIRST_CB = 1u << 3, /* the embedded callback slot elected by a then(); a waiter that
                            * sees the word change wakes and looks again (harmless) */
    ST_EMBEDDED = 1u << 4, /* arpc_future_init_embedded: f_owner's hooks, not future_alone's; set once,
                            * before f is shared */
    ST_HOME = 1u << 5,     /* the slot names the loop that completes f (arpc_future_set_home),
                            * with ST_FIRST_CB so no then() takes it; set once, before f is shared */
    ST_ARPCS = 1u << 6,    /* arpc_future_make_arpcs: a future of its own that arpc alone
                            * completes and hooks, as an embedded one; set once, before f is shared */
    ST_OWNER_LATCH = 1u << 7, /* the owner's (arpc_future_owner_latch): a bit of the word rather
                               * than a byte of its block; a waiter sees the word change, wakes
                               * and looks again (harmless) */
    ST_STATUS_SHIFT = 8,   /* the final status, set with DONE */
};
#define ST_STATUS_MAX 0xffffffu

/* One per outstanding call, inside the call's block (core/client_call.c): its size counts. */
_Static_assert(sizeof(void *) != 8 || sizeof(struct arpc_future) <= 64, "a future grew past 64 bytes");

/* A future of its own (arpc_future_create): its cancel hook after it. An embedded one has a
 * constant owner's instead (f_owner), so a call's block does not carry a hook's argument. */
struct future_alone {
    arpc_future fa_future;
    arpc_future_cancel_fn fa_on_cancel;
    void *fa_arg;
    size_t fa_len; /* its result's length (an embedded future's: f_len) */
};

static struct future_alone *future_alone(arpc_future *f)
{
    return (struct future_alone *)((char *)f - offsetof(struct future_alone, fa_future));
}

static int state_status(uint32_t s) { return (int)(s >> ST_STATUS_SHIFT); }

/* f_refs' fields (design notes). */
#define REF_HOLD UINT64_C(1)
#define REF_KEPT (UINT64_C(1) << 16)
#define REF_USER (UINT64_C(1) << 32)
#define REF_FIELD_MAX 0xffffu /* HOLD and KEPT are 16 bits wide */

static uint64_t future_refs(const arpc_future *f)
{
    return atomic_load_explicit(&((arpc_future *)f)->f_refs, memory_order_relaxed);
}

static uint32_t refs_user(uint64_t refs) { return (uint32_t)(refs >> 32); }
static uint32_t refs_kept(uint64_t refs) { return (uint32_t)(refs >> 16) & REF_FIELD_MAX; }

static bool future_embedded(const arpc_future *f)
{
    return (atomic_load_explicit(&f->f_state, memory_order_relaxed) & ST_EMBEDDED) != 0;
}

/* Completed and hooked by arpc alone: embedded, or made so (arpc_future_make_arpcs). */
static bool future_arpcs(const arpc_future *f)
{
    return (atomic_load_explicit(&f->f_state, memory_order_relaxed) & (ST_EMBEDDED | ST_ARPCS)) != 0;
}

/* The result's length (f completed with data: its claim is seen). */
static size_t future_len(const arpc_future *f)
{
    if (future_embedded(f))
        return f->f_len;
    return future_alone((arpc_future *)f)->fa_len; /* (read only) */
}

/* Spins before sleeping: RPC replies often land within microseconds, and a futex sleep plus
 * wake-up costs more than that. A few microseconds of pause instructions at most. */
#define FUTURE_SPIN 256

/* Marks a callback list as closed: completion has taken it, later then() calls run inline. */
static struct future_cb cb_closed;
/* Stands in the list for the future's embedded callback slot (always the tail): never
 * written, never run as a node. */
static struct future_cb cb_first;

static uint32_t future_state(const arpc_future *f)
{
    return atomic_load_explicit(&f->f_state, memory_order_acquire);
}

static bool future_claim(arpc_future *f)
{
    /* Relaxed: the claim only elects the writer; publication is ordered by DONE. */
    uint32_t old = atomic_fetch_or_explicit(&f->f_state, ST_CLAIMED, memory_order_relaxed);
    return (old & ST_CLAIMED) == 0;
}

static void future_run_callbacks(arpc_future *f, struct future_cb *list)
{
    /* The list is newest first: reverse it to run in registration order. The embedded slot,
     * when in it, is its tail: the oldest, run first. */
    struct future_cb *ordered = NULL;
    while (list != NULL && list != &cb_first) {
        struct future_cb *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    if (list == &cb_first)
        f->f_first_fn(f, f->f_first_arg);
    while (ordered != NULL) {
        struct future_cb *next = ordered->next;
        ordered->fn(f, ordered->arg);
        arpc_free(ordered);
        ordered = next;
    }
}

/* The claim winner, after writing the result: publish it with status, wake sleepers. Returns
 * the callbacks to run (future_run_callbacks), whose runner must hold a USER reference. */
static struct future_cb *future_publish(arpc_future *f, int status)
{
    /* EPENDING would make poll() ambiguous, and the word has 24 bits for the status: a
     * producer bug, reported as EINVAL. */
    if (status == ARPC_EPENDING || status < 0 || (unsigned)status > ST_STATUS_MAX)
        status = ARPC_EINVAL;
    /* Release: the result written by this thread is visible to whoever observes DONE. */
    uint32_t done = ST_DONE | (uint32_t)status << ST_STATUS_SHIFT;
    uint32_t old = atomic_fetch_or_explicit(&f->f_state, done, memory_order_release);
    if (old & ST_WAITERS)
        arpc_futex_wake_all((const uint32_t *)&f->f_state);
    /* Acquire: the nodes (and their fields) pushed by other threads' CAS-release. Closing
     * after DONE means a then() that sees CLOSED also sees the result. */
    return atomic_exchange_explicit(&f->f_cbs, &cb_closed, memory_order_acq_rel);
}

/* A NULL future is EINVAL; a released one is misuse (base/handle.h), also while a producer
 * still holds its block (no USER reference left). */
static bool future_live(const arpc_future *f, const char *fn)
{
    if (!arpc_handle_check(f, ARPC_MAGIC_FUTURE, "future", fn))
        return false;
    if (refs_user(future_refs(f)) == 0)
        return arpc_handle_misuse(f, "future", fn);
    return true;
}

bool arpc_future_live(const arpc_future *f, const char *fn) { return future_live(f, fn); }

static void future_put(arpc_future *f, uint64_t n, const char *fn);
static bool future_cancel(arpc_future *f, bool hold);

/* Whoever took f_refs to zero. */
static void future_last(arpc_future *f)
{
    uint32_t state = future_state(f);
    if ((state & (ST_CLAIMED | ST_DONE)) == ST_CLAIMED) {
        /* Being settled up the stack: a cancel's hook (or its callbacks) released a reference
         * nobody held any more (the last went before, which started the cancel, in the branch
         * below). The settler still uses f: a leak, not a free (and not this branch again, for
         * ever, which overflowed the stack). */
        (void)arpc_handle_misuse(f, "future", "arpc_future_release (inside its cancel)");
        return;
    }
    if (!(state & ST_DONE)) {
        /* Take a USER reference back so the callbacks that cancel runs borrow a live future
         * (they may retain it), then drop it again. */
        atomic_store_explicit(&f->f_refs, REF_USER, memory_order_relaxed);
        (void)future_cancel(f, false);
        future_put(f, REF_USER, "arpc_future_release");
        return;
    }
    arpc_handle_poison(f); /* a later call is caught while the memory is not reused */
    if (future_state(f) & ST_HOME)
        arpc_loop_mem_release(f->f_first_arg); /* (arpc_future_set_home's) */
    arpc_free(atomic_load_explicit(&f->f_data, memory_order_relaxed));
    if (future_embedded(f))
        f->f_owner->fo_free(f); /* its owner's block */
    else
        arpc_free(future_alone(f));
}

/* Drops n (units of the fields, see the design notes); the last frees. fn names the public
 * call when n holds a USER unit, for the misuse report. */
static void future_put(arpc_future *f, uint64_t n, const char *fn)
{
    uint64_t old = atomic_fetch_sub_explicit(&f->f_refs, n, memory_order_acq_rel);
    if (refs_user(n) > refs_user(old)) {
        /* A release raced past the check with the last USER reference gone: the word is now
         * garbage and never zero again, so the block leaks instead of being freed twice. */
        (void)arpc_handle_misuse(f, "future", fn);
        return;
    }
    if (old == n)
        future_last(f);
}

/* A future on its own (free_fn NULL) or embedded in its producer's block. */
static void future_init(arpc_future *f, const struct arpc_future_owner *owner)
{
    atomic_init(&f->f_magic, ARPC_MAGIC_FUTURE);
    atomic_init(&f->f_state, owner != NULL ? ST_EMBEDDED : 0);
    atomic_init(&f->f_refs, REF_USER); /* the caller's */
    atomic_init(&f->f_cbs, NULL);
    f->f_len = 0;
    f->f_owner_word = 0;
    atomic_init(&f->f_data, NULL);
    f->f_owner = owner;
}

void arpc_future_init_embedded(arpc_future *f, const struct arpc_future_owner *owner) { future_init(f, owner); }

void arpc_future_init_embedded_held(arpc_future *f, const struct arpc_future_owner *owner, unsigned holds)
{
    future_init(f, owner);
    atomic_init(&f->f_refs, REF_USER + holds * REF_HOLD);
}

int arpc_future_create(arpc_future **out)
{
    if (out == NULL)
        return ARPC_EINVAL;
    struct future_alone *a = arpc_malloc(sizeof(*a));
    if (a == NULL)
        return ARPC_ENOMEM;
    future_init(&a->fa_future, NULL);
    a->fa_on_cancel = NULL;
    a->fa_arg = NULL;
    a->fa_len = 0;
    *out = &a->fa_future;
    return ARPC_OK;
}

/* Claims f and writes its result: false (data freed) when it was complete already. The caller
 * publishes. */
static bool future_settle(arpc_future *f, void *data, size_t len)
{
    if (!future_claim(f)) {
        arpc_free(data);
        return false;
    }
    if (future_embedded(f)) {
        /* A frame's body, under a client's max_frame (32 bits), or a short text: never more
         * (f_len). Users cannot complete an embedded future (arpc_future_complete). */
        assert(len <= UINT32_MAX);
        f->f_len = data != NULL ? (uint32_t)len : 0;
    } else {
        future_alone(f)->fa_len = data != NULL ? len : 0;
    }
    /* Release: whoever reads this result for a completer's name sees the claim too
     * (arpc_future_completer); a plain store on x86. */
    atomic_store_explicit(&f->f_data, data, memory_order_release);
    return true;
}

bool arpc_future_complete_owned(arpc_future *f, int status, void *data, size_t len)
{
    if (!future_settle(f, data, len))
        return false;
    future_run_callbacks(f, future_publish(f, status)); /* they borrow the caller's USER reference */
    return true;
}

bool arpc_future_complete(arpc_future *f, int status, void *data, size_t len)
{
    if (!future_live(f, __func__)) {
        arpc_free(data);
        return false;
    }
    if (future_arpcs(f)) {
        /* A call's: its client completes it, and would find it done by someone else with its
         * slot and its share of the client still held (a close then waited for ever). */
        arpc_log(ARPC_LOG_ERROR, "%s on %p: a future arpc made (a call's) is completed by arpc alone", __func__,
                 (void *)f);
#ifndef NDEBUG
        abort();
#endif
        arpc_free(data);
        return false;
    }
    return arpc_future_complete_owned(f, status, data, len);
}

bool arpc_future_complete_drop(arpc_future *f, int status, void *data, size_t len)
{
    bool won = future_settle(f, data, len);
    struct future_cb *cbs = won ? future_publish(f, status) : NULL;
    if (cbs == NULL) {
        future_put(f, REF_HOLD, __func__);
        return won;
    }
    /* Every user may be gone (a call goes on without them): the callbacks borrow a USER
     * reference, dropped with the HOLD in one RMW. */
    atomic_fetch_add_explicit(&f->f_refs, REF_USER, memory_order_relaxed);
    future_run_callbacks(f, cbs);
    future_put(f, REF_USER + REF_HOLD, "arpc_future_release");
    return true;
}

bool arpc_future_cancel(arpc_future *f) { return future_live(f, __func__) && future_cancel(f, true); }

/* The claim winner's cancel. hold: a reference of its own for the hook and the callbacks, so
 * that a hook releasing the caller's last one (a producer dropping its work and its
 * reference, which the canceller lent) frees f only once they are done; future_last, which
 * lends them the last reference itself, does without. */
static bool future_cancel(arpc_future *f, bool hold)
{
    if (!future_claim(f))
        return false;
    if (hold)
        atomic_fetch_add_explicit(&f->f_refs, REF_USER, memory_order_relaxed);
    atomic_store_explicit(&f->f_data, NULL, memory_order_relaxed); /* no result; not the completer's name */
    /* Only the claim winner gets here, so the producer hears of it at most once, and before
     * anyone can observe ARPC_ECANCELLED. */
    uint32_t s = atomic_load_explicit(&f->f_state, memory_order_relaxed);
    if (!(s & ST_EMBEDDED)) {
        struct future_alone *a = future_alone(f);
        if (a->fa_on_cancel != NULL)
            a->fa_on_cancel(f, a->fa_arg);
    } else if (f->f_owner->fo_on_cancel != NULL) {
        f->f_owner->fo_on_cancel(f, NULL);
    }
    future_run_callbacks(f, future_publish(f, ARPC_ECANCELLED)); /* they borrow the caller's USER reference */
    if (hold)
        future_put(f, REF_USER, "arpc_future_cancel");
    return true;
}

bool arpc_future_done(const arpc_future *f) { return (future_state(f) & ST_DONE) != 0; }

bool arpc_future_owner_latch(arpc_future *f)
{
    return (atomic_fetch_or_explicit(&f->f_state, ST_OWNER_LATCH, memory_order_seq_cst) & ST_OWNER_LATCH) != 0;
}

bool arpc_future_settling(const arpc_future *f)
{
    return (future_state(f) & (ST_CLAIMED | ST_DONE)) == ST_CLAIMED;
}

bool arpc_future_repost_while_settling(const arpc_future *f, struct arpc_loop *loop, struct arpc_loop_job *job,
                                       arpc_loop_job_fn fn)
{
    if (!arpc_future_settling(f))
        return false;
    arpc_loop_job_init(job, fn);
    return arpc_loop_post(loop, job) == ARPC_OK;
}

void arpc_future_on_cancel(arpc_future *f, arpc_future_cancel_fn fn, void *arg)
{
    if (!future_live(f, __func__))
        return;
    if (!future_arpcs(f)) {
        future_alone(f)->fa_on_cancel = fn;
        future_alone(f)->fa_arg = arg;
    } else {
        /* Its owner's hook is fixed (arpc_future_init_embedded, _make_arpcs): another would
         * have broken the call (and an embedded one has no room for it). Said, ignored. */
        arpc_log(ARPC_LOG_ERROR, "arpc_future_on_cancel on %p: a future arpc made keeps its own hook", (void *)f);
    }
}

void arpc_future_make_arpcs(arpc_future *f, arpc_future_cancel_fn on_cancel, void *arg)
{
    future_alone(f)->fa_on_cancel = on_cancel;
    future_alone(f)->fa_arg = arg;
    atomic_fetch_or_explicit(&f->f_state, ST_ARPCS, memory_order_relaxed); /* not yet shared */
}

int arpc_future_poll(const arpc_future *f)
{
    if (!future_live(f, __func__))
        return ARPC_EINVAL;
    uint32_t s = future_state(f);
    return (s & ST_DONE) ? state_status(s) : ARPC_EPENDING;
}

const void *arpc_future_data(const arpc_future *f, size_t *len)
{
    void *data = NULL;
    if (future_live(f, __func__) && (future_state(f) & ST_DONE))
        data = atomic_load_explicit(&f->f_data, memory_order_relaxed);
    if (len != NULL)
        *len = data != NULL ? future_len(f) : 0;
    return data;
}

void *arpc_future_take(arpc_future *f, size_t *len)
{
    void *data = NULL;
    /* The exchange makes concurrent take() calls hand the buffer to exactly one of them. */
    if (future_live(f, __func__) && (future_state(f) & ST_DONE))
        data = atomic_exchange_explicit(&f->f_data, NULL, memory_order_relaxed);
    if (len != NULL)
        *len = data != NULL ? future_len(f) : 0;
    return data;
}

/* ---- callbacks ---- */

/* The embedded slot, onto an empty list (head is NULL): true when cb is in. Otherwise head is
 * what the list holds now, and the slot stays unused for good. */
static bool future_then_first(arpc_future *f, struct future_cb **head, arpc_future_cb cb, void *arg)
{
    /* Relaxed: only elects the user of the slot; its fields are published by the CAS. */
    if (atomic_fetch_or_explicit(&f->f_state, ST_FIRST_CB, memory_order_relaxed) & ST_FIRST_CB)
        return false;
    f->f_first_fn = cb;
    f->f_first_arg = arg;
    /* Release publishes the slot to the completer; acquire on failure pairs with its swap. */
    return atomic_compare_exchange_strong_explicit(&f->f_cbs, head, &cb_first, memory_order_release,
                                                   memory_order_acquire);
}

int arpc_future_then(arpc_future *f, arpc_future_cb cb, void *arg)
{
    if (!future_live(f, __func__) || cb == NULL)
        return ARPC_EINVAL;
    /* Complete already (a waiter woken by the completer, which has yet to take the list):
     * run here and now, as promised, not later on the completer's thread. The list taken
     * then never holds this one, so it still runs exactly once. Acquire pairs with DONE's
     * release: the result is visible to cb. */
    if (future_state(f) & ST_DONE) {
        cb(f, arg);
        return ARPC_OK;
    }
    struct future_cb *head = atomic_load_explicit(&f->f_cbs, memory_order_acquire);
    if (head == NULL && future_then_first(f, &head, cb, arg))
        return ARPC_OK;
    if (head == &cb_closed) {
        cb(f, arg); /* already complete: no node needed */
        return ARPC_OK;
    }
    struct future_cb *node = arpc_malloc(sizeof(*node));
    if (node == NULL)
        return ARPC_ENOMEM;
    node->fn = cb;
    node->arg = arg;
    do {
        if (head == &cb_closed) {
            arpc_free(node); /* completed meanwhile */
            cb(f, arg);
            return ARPC_OK;
        }
        node->next = head;
        /* Release publishes the node's fields to the completer; acquire on failure pairs
         * with the completer's swap when we see CLOSED. */
    } while (!atomic_compare_exchange_weak_explicit(&f->f_cbs, &head, node, memory_order_release,
                                                    memory_order_acquire));
    return ARPC_OK;
}

/* ---- references ---- */

void arpc_future_retain(arpc_future *f)
{
    if (future_live(f, __func__))
        atomic_fetch_add_explicit(&f->f_refs, REF_USER, memory_order_relaxed);
}

void arpc_future_release(arpc_future *f)
{
    if (future_live(f, __func__))
        future_put(f, REF_USER, __func__);
}

void arpc_future_hold(arpc_future *f)
{
    uint64_t before = atomic_fetch_add_explicit(&f->f_refs, REF_HOLD, memory_order_relaxed);
    /* A call holds one per send queued on its one connection, and two of its own: 65,535 would
     * carry into KEPT. Checked in debug builds only (the per-call path). */
    assert((before & REF_FIELD_MAX) < REF_FIELD_MAX);
    (void)before;
}

void arpc_future_drop(arpc_future *f)
{
    /* future_put without its check of the USER field, which a HOLD unit never touches: a call's
     * block drops two or more holds per call (docs/PERFORMANCE.md). */
    if (atomic_fetch_sub_explicit(&f->f_refs, REF_HOLD, memory_order_acq_rel) == REF_HOLD)
        future_last(f);
}

bool arpc_future_keep(arpc_future *f)
{
    /* One per arpc_cq_attach: refused well short of the field's 16 bits, so attaches racing
     * at the bound cannot carry into USER. */
    if (refs_kept(future_refs(f)) >= REF_FIELD_MAX - 256)
        return false;
    atomic_fetch_add_explicit(&f->f_refs, REF_KEPT, memory_order_relaxed);
    return true;
}

void arpc_future_hand_over(arpc_future *f)
{
    /* One unit moves from KEPT to USER: the word never passes through zero. */
    atomic_fetch_add_explicit(&f->f_refs, REF_USER - REF_KEPT, memory_order_relaxed);
}

void arpc_future_unkeep(arpc_future *f) { future_put(f, REF_KEPT, __func__); }

/* ---- waiting ---- */

/* Waits for DONE until deadline_ns (ARPC_NEVER: forever). spin: spin briefly first (not for
 * polls). */
static int future_wait_until(arpc_future *f, uint64_t deadline_ns, bool spin)
{
    for (int i = 0; spin && i < FUTURE_SPIN; i++) {
        uint32_t s = future_state(f);
        if (s & ST_DONE)
            return state_status(s);
        ck_pr_stall();
    }
    for (;;) {
        uint32_t s = future_state(f);
        if (s & ST_DONE)
            return state_status(s);
        if (deadline_ns != ARPC_NEVER && arpc_now_ns() >= deadline_ns)
            return ARPC_EPENDING;
        if (!(s & ST_WAITERS)) {
            s = atomic_fetch_or_explicit(&f->f_state, ST_WAITERS, memory_order_acquire);
            s |= ST_WAITERS;
            if (s & ST_DONE)
                return state_status(s);
        }
        /* Returns at once if the word changed since s (DONE set): we loop and see it. */
        arpc_futex_wait((const uint32_t *)&f->f_state, s, deadline_ns);
    }
}

void arpc_future_set_home(arpc_future *f, struct arpc_loop *loop)
{
    arpc_loop_mem_retain(loop); /* until f is freed: a waiter may read it from f (future_last) */
    f->f_first_fn = NULL;
    f->f_first_arg = loop;
    atomic_fetch_or_explicit(&f->f_state, ST_FIRST_CB | ST_HOME, memory_order_relaxed);
}

arpc_loop *arpc_future_home(const arpc_future *f)
{
    uint32_t s = future_state(f);
    return (s & (ST_HOME | ST_DONE)) == ST_HOME ? f->f_first_arg : NULL;
}

void arpc_future_set_completer(arpc_future *f, struct arpc_loop *loop)
{
    atomic_store_explicit(&f->f_data, (void *)loop, memory_order_relaxed);
}

struct arpc_loop *arpc_future_completer(const arpc_future *f)
{
    /* The name is read before the state, acquiring: a result read here comes with its claim
     * (future_settle's release), so the state says claimed and no result is taken for a name. */
    void *name = atomic_load_explicit(&f->f_data, memory_order_acquire);
    return (future_state(f) & (ST_CLAIMED | ST_HOME)) == 0 ? name : NULL;
}

/* A result's buffer never equals a loop that is running, so a match is the completer's
 * name: f was pending when its field was read. */
bool arpc_future_stuck_here(const arpc_future *f)
{
    arpc_loop *here = arpc_loop_current();
    return here != NULL && atomic_load_explicit(&f->f_data, memory_order_relaxed) == (void *)here;
}

arpc_loop *arpc_future_loop_to_run(const arpc_future *f)
{
    arpc_loop *home = arpc_future_home(f);
    if (home != NULL || arpc_future_stuck_here(f))
        return home;
    return arpc_loop_owned_named(atomic_load_explicit(&f->f_data, memory_order_relaxed));
}

int arpc_future_sleep_until(arpc_future *f, uint64_t deadline_ns)
{
    return future_wait_until(f, deadline_ns, true);
}

/* Waits for f until deadline_ns: drives its home loop if it has one. ARPC_EBUSY inside that
 * loop, where the wait could never end (unless f is done by then: a cancel from elsewhere). */
static int future_wait_for_home(arpc_future *f, uint64_t deadline_ns, bool spin)
{
    arpc_loop *home = arpc_future_loop_to_run(f);
    int rc;
    if (home != NULL) {
        /* A call's cancel reaches its loop (the hook posts a job); another producer's future
         * may be completed on another thread without waking the loop: its completion wakes a
         * driver. */
        rc = future_embedded(f) ? arpc_loop_wait_until(home, f, deadline_ns)
                                : arpc_loop_wait_foreign_until(home, f, deadline_ns);
    } else if (arpc_future_stuck_here(f)) {
        rc = ARPC_EBUSY;
    } else {
        return future_wait_until(f, deadline_ns, spin);
    }
    return rc == ARPC_EBUSY && arpc_future_done(f) ? arpc_future_poll(f) : rc;
}

int arpc_future_wait(arpc_future *f)
{
    if (!future_live(f, __func__))
        return ARPC_EINVAL;
    return future_wait_for_home(f, ARPC_NEVER, true);
}

int arpc_future_wait_for(arpc_future *f, int64_t timeout_ms)
{
    if (!future_live(f, __func__))
        return ARPC_EINVAL;
    if (timeout_ms == 0)
        return arpc_future_poll(f);
    return future_wait_for_home(f, arpc_deadline_from_ms(timeout_ms), true);
}

int arpc_future_wait_all(arpc_future *const *fs, size_t n, int64_t timeout_ms)
{
    if (n > 0 && fs == NULL)
        return ARPC_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!future_live(fs[i], __func__))
            return ARPC_EINVAL;
    uint64_t deadline = arpc_deadline_from_ms(timeout_ms);
    for (size_t i = 0; i < n; i++) {
        int rc = timeout_ms == 0 ? arpc_future_poll(fs[i]) : future_wait_for_home(fs[i], deadline, true);
        if (!arpc_future_done(fs[i]))
            return rc; /* ARPC_EPENDING, or ARPC_EBUSY inside its home loop */
    }
    return ARPC_OK;
}
