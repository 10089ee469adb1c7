/*
 * Design notes.
 *
 * Hand-off: a completed future's entry is pushed by the completing thread (usually a client
 * loop) onto a Concurrency Kit stack with ck_stack_push_upmc: lock-free, never blocks. A
 * consumer takes the whole stack at once (ck_stack_batch_pop_upmc), reverses it into a
 * consumer-side FIFO and serves from there, so entries come out in completion (push) order:
 * every entry left in the FIFO was pushed before anything still on the stack.
 *
 * Consumers serialise on cq_lock. Producers never take it. The lock protects the FIFO, which
 * has a single owner at a time, and keeps batches in order: two consumers each grabbing a
 * batch could otherwise hand out the newer one first.
 *
 * Readiness (the eventfd is readable iff the queue is not empty, once racing calls settle):
 * cq_count counts entries pushed minus entries taken. Producers count *after* pushing, so a
 * consumer may take an entry before it is counted and drive the count to -1 briefly; it is
 * signed for that reason, and count <= entries present always holds.
 *   - producer: push, then count++; on 0 -> 1 it writes the eventfd.
 *   - consumer: take, then count--; on 1 -> 0 it reads (clears) the eventfd and re-checks
 *     the count: a producer may have gone 0 -> 1 and written just before the read, and its
 *     signal must not be lost, so a positive count re-arms the eventfd.
 *   - trynext on an empty queue clears the same way. A producer that went 0 -> 1 but was
 *     slow to write can leave the fd readable after a consumer already took its entry; the
 *     next empty trynext clears that, so a poll loop never spins.
 * Only consumers decrement and they are serialised, so during one consumer's clear-and-
 * re-check the count can only grow.
 *
 * Driving: a call of a caller-driven client completes only while some thread runs its loop
 * (arpc_future_set_home). While entries of such calls are attached and not yet pushed
 * (cq_homed), a waiting consumer runs that loop, as a wait on the future would; with none
 * left it only polls the eventfd, and never touches the loop (which may be gone by then).
 * One loop per queue: the first attached future's names it; futures of other such loops are
 * not driven (their own waiters run them). The driven loop also watches the eventfd (another
 * thread's push, a destroy); a wake-up by it that finds nothing clears a stale signal
 * (cq_drive_woken), as an empty trynext does, or the loop would spin on it.
 *
 * Refusing: a call of a client whose loop a thread runs (its own, or one started and shared)
 * names that loop its completer (arpc_future_set_completer). A consumer inside that loop (a
 * callback on its thread) waiting for an empty queue whose every attached, pending entry is
 * such a call would wait for itself: it gets ARPC_EBUSY. cq_tally counts the attached
 * entries not yet taken (untaken; consumers take them under cq_lock) and those not yet
 * pushed whose completer is cq_completer (completing; the first attached future's completer,
 * one per queue like the home), uncounted just before their push. The two share one word so
 * a reader never sees an attach half counted: a consumer under cq_lock that finds the queue
 * empty and the two equal knows every entry it could take is a call of that loop still
 * pending. The name is only compared with the consumer's loop, never followed.
 *
 * Waking the refused: a consumer inside that loop may have gone to sleep while another
 * entry was still to come, and then another consumer took that entry and cleared the
 * eventfd: nothing would wake it, and it would wait for itself after all. Such consumers are
 * counted while they look and sleep (cq_inside); whoever leaves the tally at "only calls of
 * the completer left" with one counted signals the eventfd (a take, a failed attach, an
 * attach of such a call), and a clear leaves the signal standing in that state, so a
 * consumer inside looks again and is refused. The count is kept only by consumers on a loop
 * thread that is the completer or while none is named, so a stale signal wakes nobody else
 * more than once.
 *
 * Lifetime: cq_refs is the user's handle plus one per attached entry not yet pushed (each
 * callback holds one until after its push, so the cq outlives the push and the eventfd
 * write), plus one per consumer inside trynext / next / next_for. A consumer takes its
 * reference the way a client's callers come in (base/handle.h, arpc_handle_enter: counted in
 * cq_entering, then the handle looked at again), and destroy() waits for cq_entering to
 * reach 0 after killing the handle: a few instructions, never a wait of the consumer's. So a
 * destroy while consumers wait is not misuse: it sets cq_closed and signals, the consumers
 * return ARPC_ESHUTDOWN, and the last reference frees. Once closed, a clear leaves the
 * signal standing, so every sleeper sees it. Entries on the stack or in the FIFO hold no cq reference: destroy() drains them,
 * and the final unref drains whatever callbacks pushed after that. The eventfd is closed only
 * on the final unref, so a late producer never writes to a recycled descriptor.
 *
 * Shutdown: a destroy ends only the consumers asleep at that moment; one between two takes
 * (handling its last entry) would come back to a dead handle. arpc_cq_shutdown sets cq_shut
 * and signals, and the handle stays: every take that finds the queue empty says
 * ARPC_ESHUTDOWN from then on (what was queued is taken first), and attaches are refused. As
 * for a destroy, a clear leaves the signal standing, and one that read a signal made after
 * its look re-signals, so no sleeper misses it.
 */
#include "arpc/cq.h"

#include <ck_stack.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "arpc/error.h"
#include "async/cq_internal.h"
#include "async/futex.h"
#include "async/future_internal.h"
#include "async/loop_internal.h"
#include "base/clock.h"
#include "base/fork_gen.h"
#include "base/handle.h"
#include "base/refcount.h"
#include "base/stack_fifo.h"
#include "base/alloc.h"

struct cq_entry {
    ck_stack_entry_t e_link;
    arpc_future *e_future; /* one kept reference (async/future_internal.h), handed to the consumer */
    void *e_tag;
    arpc_cq *e_cq;
    bool e_homed;      /* counted in cq_homed until pushed */
    bool e_completing; /* counted in cq_completing until just before its push */
};

CK_STACK_CONTAINER(struct cq_entry, e_link, cq_entry_of)

struct arpc_cq {
    arpc_magic cq_magic;       /* first: base/handle.h; dead from arpc_cq_destroy on */
    ck_stack_t cq_done;        /* completed entries, newest first; producers push lock-free */
    _Atomic long cq_count;     /* pushed minus taken; see the design notes */
    arpc_refcount cq_refs;
    atomic_bool cq_closed;     /* destroy() called: completions release at once */
    atomic_bool cq_shut;       /* arpc_cq_shutdown called: an empty take says ARPC_ESHUTDOWN */
    atomic_uint cq_users;      /* servers' methods delivering here (arpc_cq_users_add) */
    int cq_efd;
    unsigned cq_fork_gen;      /* the process it was made in (base/fork_gen.h): cq_live, cq_enter */
    pthread_mutex_t cq_lock;   /* consumers only */
    ck_stack_entry_t *cq_fifo; /* under cq_lock: taken from cq_done, oldest first */
    _Atomic(struct arpc_loop *) cq_home; /* the loop a consumer drives (design notes) */
    _Atomic long cq_homed;     /* attached entries of cq_home's calls, not yet pushed */
    _Atomic(struct arpc_loop *) cq_completer; /* see "Refusing" in the design notes */
    _Atomic uint64_t cq_tally; /* untaken (low half), completing (high): the design notes */
    _Atomic int cq_inside;     /* consumers waiting inside cq_completer ("Waking the refused") */
    atomic_size_t cq_entering; /* consumers between their look at the handle and their reference */
};

/* ---- the tally ("Refusing" in the design notes) ---- */

#define TALLY_UNTAKEN ((uint64_t)1)
#define TALLY_COMPLETING ((uint64_t)1 << 32)

static uint64_t tally_of(bool completing) { return TALLY_UNTAKEN + (completing ? TALLY_COMPLETING : 0); }

/* Attached entries not yet pushed whose completer is cq_completer: the tally's high half. */
static uint64_t cq_completing(arpc_cq *cq) { return atomic_load(&cq->cq_tally) >> 32; }

/* True when the queue is empty and every entry still to take is a pending call of
 * cq_completer. */
static bool cq_only_completing_left(arpc_cq *cq)
{
    uint64_t t = atomic_load(&cq->cq_tally);
    uint64_t completing = t >> 32;
    return completing > 0 && completing == (uint32_t)t && atomic_load(&cq->cq_count) <= 0;
}

/* A consumer waits inside the completer while only the completer's calls are left: it must be
 * woken to be refused ("Waking the refused"). */
static bool cq_refused_inside(arpc_cq *cq) { return atomic_load(&cq->cq_inside) > 0 && cq_only_completing_left(cq); }

/* ---- eventfd ---- */

static void cq_signal(arpc_cq *cq)
{
    uint64_t one = 1;
    /* Cannot fail short of counter overflow (2^64 - 1 writes without a read). */
    ssize_t n = write(cq->cq_efd, &one, sizeof(one));
    (void)n;
}

/* Destroyed or shut down: every sleeper and poller must see it (the design notes). */
static bool cq_ended(arpc_cq *cq) { return atomic_load(&cq->cq_closed) || atomic_load(&cq->cq_shut); }

/* Consumers only, under cq_lock. */
static void cq_clear(arpc_cq *cq)
{
    if (cq_ended(cq))
        return;
    uint64_t v;
    ssize_t n = read(cq->cq_efd, &v, sizeof(v)); /* EAGAIN when already clear */
    (void)n;
    /* Seq-cst: ordered after the read, like the producer's count++ before its write. A
     * consumer inside the completer must see its refusal ("Waking the refused"); a destroy or
     * shutdown whose signal this read took must leave it standing. */
    if (atomic_load(&cq->cq_count) > 0 || cq_refused_inside(cq) || cq_ended(cq))
        cq_signal(cq);
}

/* After a change of the tally: see "Waking the refused" in the design notes. */
static void cq_wake_inside(arpc_cq *cq)
{
    if (cq_refused_inside(cq))
        cq_signal(cq);
}

/* ---- the hand-off ---- */

/* Producer side: never blocks. e must not be touched afterwards (a consumer may free it). */
static void cq_push(arpc_cq *cq, struct cq_entry *e)
{
    /* Everything written before (the entry, the future's result) happens-before the take. */
    arpc_stack_push(&cq->cq_done, &e->e_link);
    if (atomic_fetch_add(&cq->cq_count, 1) == 0)
        cq_signal(cq);
}

/* Consumer side, under cq_lock (or sole owner): the next entry in completion order. */
static struct cq_entry *cq_take_locked(arpc_cq *cq)
{
    if (cq->cq_fifo == NULL)
        cq->cq_fifo = arpc_stack_take_fifo(&cq->cq_done);
    ck_stack_entry_t *link = cq->cq_fifo;
    if (link == NULL)
        return NULL;
    cq->cq_fifo = link->next;
    return cq_entry_of(link);
}

static void cq_drain_locked(arpc_cq *cq)
{
    struct cq_entry *e;
    while ((e = cq_take_locked(cq)) != NULL) {
        arpc_future_unkeep(e->e_future); /* complete: frees, runs nothing */
        arpc_free(e);
    }
}

static void cq_unref(arpc_cq *cq)
{
    /* Every push happened before the free (base/refcount.h). */
    if (!arpc_refcount_put(&cq->cq_refs))
        return;
    cq_drain_locked(cq); /* sole owner: entries pushed after destroy() drained */
    struct arpc_loop *home = atomic_load_explicit(&cq->cq_home, memory_order_relaxed);
    if (home != NULL)
        arpc_loop_mem_release(home); /* (cq_designates_home's) */
    close(cq->cq_efd);
    pthread_mutex_destroy(&cq->cq_lock);
    arpc_free(cq);
}

/* True when loop names the loop slot designates: the first non-NULL loop offered claims the
 * slot for good, later ones match it or not (one home, one completer per queue). */
static bool cq_designates(_Atomic(struct arpc_loop *) *slot, struct arpc_loop *loop)
{
    struct arpc_loop *first = NULL;
    return loop != NULL && (atomic_compare_exchange_strong(slot, &first, loop) || first == loop);
}

/* cq_designates for the home slot: the queue holds the home's memory from then on (a
 * consumer reads it there, and may look at it after another thread destroyed the loop). The
 * future that offers it holds it until then (arpc_future_set_home). */
static bool cq_designates_home(arpc_cq *cq, struct arpc_loop *loop)
{
    struct arpc_loop *first = NULL;
    if (loop != NULL && atomic_compare_exchange_strong(&cq->cq_home, &first, loop)) {
        arpc_loop_mem_retain(loop);
        return true;
    }
    return loop != NULL && first == loop;
}

/* An attached entry is counted before its then(), which may push at once ("Refusing" in the
 * design notes). */
static void cq_count_attached(arpc_cq *cq, const struct cq_entry *e)
{
    if (e->e_homed)
        atomic_fetch_add(&cq->cq_homed, 1);
    atomic_fetch_add(&cq->cq_tally, tally_of(e->e_completing));
    if (e->e_completing)
        cq_wake_inside(cq);
}

/* An attach that failed: the counts as before it. */
static void cq_uncount(arpc_cq *cq, const struct cq_entry *e)
{
    atomic_fetch_sub(&cq->cq_tally, tally_of(e->e_completing));
    if (e->e_homed)
        atomic_fetch_sub(&cq->cq_homed, 1);
    cq_wake_inside(cq);
}

/* The then-callback of an attached future, on the completing thread. */
static void cq_on_complete(arpc_future *f, void *arg)
{
    struct cq_entry *e = arg;
    arpc_cq *cq = e->e_cq;
    bool homed = e->e_homed; /* e may be taken and freed once pushed */
    if (e->e_completing)
        atomic_fetch_sub(&cq->cq_tally, TALLY_COMPLETING); /* before the push: "Refusing" */
    if (atomic_load_explicit(&cq->cq_closed, memory_order_acquire)) {
        /* Nobody will take it; the completer's reference keeps f alive meanwhile. */
        arpc_future_unkeep(f);
        arpc_free(e);
    } else {
        cq_push(cq, e);
    }
    if (homed)
        atomic_fetch_sub(&cq->cq_homed, 1); /* after the push: a driver sees the entry first */
    cq_unref(cq);
}

/* ---- public API ---- */

/* A NULL queue is EINVAL; a destroyed one is misuse (base/handle.h); one made in the parent
 * of this child of a fork is refused (base/fork_gen.h): its eventfd is the parent's, and a
 * consumer here would clear the signal the parent's consumer waits for. */
static bool cq_live(const arpc_cq *cq, const char *fn)
{
    return arpc_handle_check(cq, ARPC_MAGIC_CQ, "cq", fn) && arpc_fork_gen_here(cq->cq_fork_gen, cq, "cq", fn);
}

int arpc_cq_create(arpc_cq **out)
{
    if (out == NULL)
        return ARPC_EINVAL;
    arpc_cq *cq = arpc_malloc(sizeof(*cq));
    if (cq == NULL)
        return ARPC_ENOMEM;
    cq->cq_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (cq->cq_efd < 0) {
        arpc_free(cq);
        return ARPC_ESYSTEM;
    }
    if (pthread_mutex_init(&cq->cq_lock, NULL) != 0) {
        close(cq->cq_efd);
        arpc_free(cq);
        return ARPC_ESYSTEM;
    }
    ck_stack_init(&cq->cq_done);
    atomic_init(&cq->cq_count, 0);
    atomic_init(&cq->cq_magic, ARPC_MAGIC_CQ);
    cq->cq_fork_gen = arpc_fork_gen_start();
    arpc_refcount_init(&cq->cq_refs, 1);
    atomic_init(&cq->cq_closed, false);
    atomic_init(&cq->cq_shut, false);
    atomic_init(&cq->cq_users, 0);
    cq->cq_fifo = NULL;
    atomic_init(&cq->cq_home, NULL);
    atomic_init(&cq->cq_homed, 0);
    atomic_init(&cq->cq_completer, NULL);
    atomic_init(&cq->cq_tally, 0);
    atomic_init(&cq->cq_inside, 0);
    atomic_init(&cq->cq_entering, 0);
    *out = cq;
    return ARPC_OK;
}

void arpc_cq_users_add(arpc_cq *cq, int n) { atomic_fetch_add(&cq->cq_users, (unsigned)n); }

void arpc_cq_destroy(arpc_cq *cq)
{
    if (!cq_live(cq, __func__) ||
        arpc_handle_in_use(cq, atomic_load(&cq->cq_users), "arpc_method_options.queue", __func__) ||
        !arpc_handle_kill(cq, ARPC_MAGIC_CQ, "cq", __func__))
        return;
    /* A consumer that looked at the handle before the kill has its reference in a few
     * instructions (cq_enter); one after sees it dead. */
    while (atomic_load(&cq->cq_entering) != 0)
        sched_yield();
    atomic_store(&cq->cq_closed, true);
    pthread_mutex_lock(&cq->cq_lock);
    cq_drain_locked(cq);
    pthread_mutex_unlock(&cq->cq_lock);
    cq_signal(cq); /* consumers waiting return ARPC_ESHUTDOWN */
    cq_unref(cq);
}

int arpc_cq_shutdown(arpc_cq *cq)
{
    if (!cq_live(cq, __func__))
        return ARPC_EINVAL;
    atomic_store(&cq->cq_shut, true); /* before the signal: whoever it wakes sees it */
    cq_signal(cq);
    return ARPC_OK;
}

int arpc_cq_attach(arpc_cq *cq, arpc_future *f, void *tag)
{
    if (!cq_live(cq, __func__) || !arpc_future_live(f, __func__))
        return ARPC_EINVAL;
    if (atomic_load(&cq->cq_shut))
        return ARPC_ESHUTDOWN;
    struct cq_entry *e = arpc_malloc(sizeof(*e));
    if (e == NULL)
        return ARPC_ENOMEM;
    e->e_future = f;
    e->e_tag = tag;
    e->e_cq = cq;
    e->e_homed = cq_designates_home(cq, arpc_future_home(f));
    e->e_completing = cq_designates(&cq->cq_completer, arpc_future_completer(f));
    cq_count_attached(cq, e);
    /* Kept, not a USER reference: the caller's second release is caught instead of dropping
     * the queue's. */
    if (!arpc_future_keep(f)) {
        cq_uncount(cq, e);
        arpc_free(e);
        return ARPC_EBUSY;
    }
    arpc_refcount_get(&cq->cq_refs); /* from the caller's */
    int rc = arpc_future_then(f, cq_on_complete, e); /* may run cq_on_complete at once */
    if (rc != ARPC_OK) {
        cq_uncount(cq, e);
        arpc_future_unkeep(f); /* the caller still holds one: no cancel */
        cq_unref(cq);
        arpc_free(e);
    }
    return rc;
}

/* Under cq_lock, after a take found the queue empty: true when the calling thread is inside
 * the loop that alone completes every entry it could take, so a wait could only end at its
 * timeout ("Refusing" in the design notes). */
static bool cq_stuck_here_locked(arpc_cq *cq)
{
    struct arpc_loop *here = arpc_loop_current();
    return here != NULL && atomic_load(&cq->cq_completer) == here && cq_only_completing_left(cq);
}

/* trynext; when empty, ARPC_EBUSY instead of ARPC_EAGAIN if refuse_stuck and a wait here
 * would wait for itself. */
static int cq_take(arpc_cq *cq, arpc_future **f, void **tag, bool refuse_stuck)
{
    bool stuck = false;
    pthread_mutex_lock(&cq->cq_lock);
    struct cq_entry *e = cq_take_locked(cq);
    if (e == NULL || atomic_fetch_sub(&cq->cq_count, 1) == 1)
        cq_clear(cq); /* emptied it, or found it empty (a stale signal) */
    if (e != NULL) {
        atomic_fetch_sub(&cq->cq_tally, TALLY_UNTAKEN);
        cq_wake_inside(cq);
    } else if (refuse_stuck)
        stuck = cq_stuck_here_locked(cq);
    pthread_mutex_unlock(&cq->cq_lock);
    if (e == NULL) {
        *f = NULL;
        return atomic_load(&cq->cq_shut) ? ARPC_ESHUTDOWN : stuck ? ARPC_EBUSY : ARPC_EAGAIN;
    }
    *f = e->e_future;
    arpc_future_hand_over(*f); /* the queue's kept reference becomes the caller's */
    if (tag != NULL)
        *tag = e->e_tag;
    arpc_free(e);
    return ARPC_OK;
}

/* A consumer's way in: false (misuse reported) on a dead handle; else a reference it gives
 * back with cq_unref ("Lifetime" in the design notes). */
static bool cq_enter(arpc_cq *cq, const char *fn)
{
    if (cq == NULL || !arpc_handle_enter(cq, &cq->cq_entering, ARPC_MAGIC_CQ, "cq", fn))
        return false;
    if (!arpc_fork_gen_here(cq->cq_fork_gen, cq, "cq", fn)) {
        atomic_fetch_sub(&cq->cq_entering, 1);
        return false;
    }
    arpc_refcount_get(&cq->cq_refs);
    atomic_fetch_sub(&cq->cq_entering, 1);
    return true;
}

int arpc_cq_trynext(arpc_cq *cq, arpc_future **f, void **tag)
{
    if (f == NULL || !cq_enter(cq, __func__))
        return ARPC_EINVAL;
    int rc = cq_take(cq, f, tag, false);
    cq_unref(cq);
    return rc;
}

/* A driving consumer's condition (arpc_loop_wait_cond_until): an entry to take, or no call
 * left that the loop would deliver. */
static bool cq_ready(void *arg)
{
    arpc_cq *cq = arg;
    return atomic_load(&cq->cq_count) > 0 || atomic_load(&cq->cq_homed) == 0 || cq_ended(cq);
}

void (*cq_before_sleep)(arpc_cq *cq) = NULL;

static void cq_sleep(void *arg, uint64_t deadline_ns)
{
    arpc_cq *cq = arg;
    if (cq_before_sleep != NULL)
        cq_before_sleep(cq);
    /* Readable means "probably not empty": the caller looks again (EINTR: the same). */
    struct pollfd p = {.fd = cq->cq_efd, .events = POLLIN};
    (void)poll(&p, 1, arpc_ms_left_int(deadline_ns));
}

/* A consumer driving the completer (cq_sleep_or_drive): an entry to take, or none of its
 * calls left to complete. */
static bool cq_ready_completing(void *arg)
{
    arpc_cq *cq = arg;
    return atomic_load(&cq->cq_count) > 0 || cq_completing(cq) == 0 || cq_ended(cq);
}

/* The driven loop woke for the eventfd (the drive's woken hook). A producer slow to write it
 * can leave it readable after another consumer emptied the queue (the design notes): not
 * news, and the drive would spin on it, so it is cleared as an empty take clears it, under
 * cq_lock (taken, not tried: a consumer holds it for a few instructions and never waits for
 * a loop there, and a failed try would leave the fd readable and the drive spinning until
 * that consumer, perhaps preempted, let go). */
static void cq_drive_woken(void *arg)
{
    arpc_cq *cq = arg;
    pthread_mutex_lock(&cq->cq_lock);
    if (cq->cq_fifo == NULL && atomic_load(&cq->cq_count) <= 0)
        cq_clear(cq);
    pthread_mutex_unlock(&cq->cq_lock);
}

/* Sleeps until the queue may have changed, or runs its home loop meanwhile (the design
 * notes): ARPC_EAGAIN to look again, ARPC_EBUSY when that loop is the caller's own. On the
 * thread that owns the completer (a wrapped or pollable loop: nobody else runs it), outside
 * its steps, that loop is run the same way while calls of its are attached, as arpc_call and
 * arpc_future_wait run it there (the completer's name is followed only once this thread's own
 * loops matched it: arpc_loop_owned_named). */
static int cq_sleep_or_drive(arpc_cq *cq, uint64_t deadline)
{
    struct arpc_loop *home = atomic_load(&cq->cq_homed) > 0 ? atomic_load(&cq->cq_home) : NULL;
    bool (*ready)(void *) = cq_ready;
    if (home == NULL && cq_completing(cq) > 0) {
        home = arpc_loop_owned_named(atomic_load(&cq->cq_completer));
        ready = cq_ready_completing;
        if (home != NULL && arpc_loop_current() == home)
            home = NULL; /* inside its step: the refusal's case (cq_take) */
    }
    if (home == NULL) {
        cq_sleep(cq, deadline);
        return ARPC_EAGAIN;
    }
    /* The queue's eventfd wakes the drive: an entry pushed by another thread (a call of
     * another client, a cancel from elsewhere), or a destroy, which nothing on home would see. */
    return arpc_loop_wait_cond_until(home, ready, cq_sleep, cq, deadline, cq->cq_efd, cq_drive_woken) == ARPC_EBUSY
               ? ARPC_EBUSY
               : ARPC_EAGAIN;
}

/* Whether a consumer is counted in cq_inside: on a loop thread that is the completer, or
 * while none is named (one may be named while it sleeps). */
static bool cq_may_wait_inside(arpc_cq *cq)
{
    struct arpc_loop *here = arpc_loop_current();
    struct arpc_loop *completer = atomic_load(&cq->cq_completer);
    return here != NULL && (completer == NULL || completer == here);
}

/* next_for's body, inside the consumer's reference. */
static int cq_next_in(arpc_cq *cq, int64_t timeout_ms, arpc_future **f, void **tag)
{
    uint64_t deadline = arpc_deadline_from_ms(timeout_ms);
    for (;;) {
        if (atomic_load(&cq->cq_closed)) {
            *f = NULL;
            return ARPC_ESHUTDOWN; /* destroyed while this waited */
        }
        /* A zero timeout only looks: no wait to refuse. Counted before it looks, so a change
         * after the look signals ("Waking the refused"). */
        bool inside = timeout_ms != 0 && cq_may_wait_inside(cq);
        if (inside)
            atomic_fetch_add(&cq->cq_inside, 1);
        int rc = cq_take(cq, f, tag, timeout_ms != 0); /* ARPC_EBUSY: it would wait for itself */
        bool wait = rc == ARPC_EAGAIN && arpc_ms_left_int(deadline) != 0;
        if (wait)
            rc = cq_sleep_or_drive(cq, deadline);
        if (inside)
            atomic_fetch_sub(&cq->cq_inside, 1);
        if (!wait || rc == ARPC_EBUSY)
            return rc;
    }
}

int arpc_cq_next_for(arpc_cq *cq, int64_t timeout_ms, arpc_future **f, void **tag)
{
    if (f == NULL || !cq_enter(cq, __func__))
        return ARPC_EINVAL;
    int rc = cq_next_in(cq, timeout_ms, f, tag);
    cq_unref(cq);
    return rc;
}

int arpc_cq_next(arpc_cq *cq, arpc_future **f, void **tag)
{
    return arpc_cq_next_for(cq, ARPC_FOREVER, f, tag);
}

int arpc_cq_fd(const arpc_cq *cq) { return cq_live(cq, __func__) ? cq->cq_efd : -1; /* never a code: 2 is stderr */ }

size_t arpc_cq_size(const arpc_cq *cq)
{
    if (!cq_live(cq, __func__))
        return 0;
    long n = atomic_load_explicit(&cq->cq_count, memory_order_relaxed);
    return n > 0 ? (size_t)n : 0;
}
