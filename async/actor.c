/*
 * Design notes.
 *
 * An actor is a thread, a mailbox (arpc_mpsc_ring) and an event count (ck_ec32) it sleeps on.
 *
 * Waking without losing a post: a poster publishes its task and then increments the event
 * count (ck_ec32_inc: a store fence, then one atomic add; a futex wake only when the actor
 * has flagged itself asleep). The actor snapshots the count (ck_ec32_value: a load followed
 * by an acquire fence) *before* it drains the mailbox, and sleeps only while the count still
 * equals the snapshot. If the snapshot saw a poster's increment, the drain sees its task;
 * if it did not, the count differs by the time the actor waits, and the wait returns at once.
 *
 * Stopping: arpc_mpsc_ring_close() guarantees that once it returns no post is in flight, so
 * "closed" is a point after which the mailbox only shrinks. The stopper sets a_closed after
 * close() returns; an actor that read a_closed == true before a drain that found nothing
 * has run every accepted message and may exit (DRAIN). For DISCARD the stopper sets
 * a_discard *before* closing, so the actor stops as early as possible; the actor checks it
 * between messages (the message in progress always finishes). Whatever is left after the
 * thread has been joined is cancelled by the stopper, which becomes the mailbox's only
 * consumer once pthread_join has returned (join is the happens-before edge).
 *
 * One foreign poster at a time: ck_ring's multi-producer enqueue reserves a slot, writes it,
 * then spins until every earlier reservation is published. A poster preempted between its
 * reservation and its publish therefore stalls every other poster, spinning, for as long as
 * the scheduler keeps it off the CPU; with more posting threads than cores (4 producers on
 * 2 cores, or any loaded machine) that convoy took 1M posts from under a second to minutes.
 * A try-lock around the enqueue keeps at most one foreign poster inside ck_ring, and its
 * waiters back off by yielding, which lets a preempted holder run. Uncontended it costs one
 * exchange and one store per post. (The actor's own posts skip it: they must never wait.)
 *
 * The stop path holds a recursive mutex: concurrent stops serialise (the second returns
 * after the first has joined and cancelled everything, so "stop returned" always means
 * "every accepted message was delivered"), and a cancellation callback that calls stop again
 * on the same actor gets ARPC_OK instead of a self-deadlock.
 */
#define _GNU_SOURCE
#include "arpc/actor.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include <ck_ec.h>

#include "arpc/error.h"
#include "async/futex.h"
#include "async/mpsc_ring.h"
#include "base/alloc.h"
#include "base/backoff.h"

#define ACTOR_DEFAULT_MAILBOX 4096u
#define ACTOR_NAME_MAX 16 /* Linux thread names: 15 characters and the NUL */

struct arpc_actor {
    struct arpc_mpsc_ring a_mailbox; /* producers: any thread; consumer: the actor thread */
    struct ck_ec32 a_ec;             /* bumped after every post and at stop */
    atomic_bool a_posting;           /* foreign posters' try-lock (see the notes) */
    /* Keep the actor-written counter off the lines every poster writes. */
    char a_pad[64];
    atomic_uint_fast64_t a_processed; /* written by the actor thread only */
    atomic_bool a_discard;            /* set by the stopper before closing (DISCARD) */
    atomic_bool a_closed;             /* set by the stopper after the mailbox is closed */
    pthread_mutex_t a_stop_lock;      /* recursive; guards a_joined and the stop sequence */
    bool a_joined;
    pthread_t a_thread;
    char a_name[ACTOR_NAME_MAX];
};

/* The actor whose thread this is: how post knows it must not wait for room. */
static _Thread_local arpc_actor *actor_current;

/* Runs queued messages until the mailbox is empty or a discard is requested. */
static unsigned actor_drain(arpc_actor *a)
{
    struct arpc_mpsc_task t;
    unsigned n = 0;
    /* Relaxed: a_discard is only a request to stop early; exactly-once rests on the join. */
    while (!atomic_load_explicit(&a->a_discard, memory_order_relaxed) &&
           arpc_mpsc_ring_pop(&a->a_mailbox, &t)) {
        ((arpc_actor_fn)t.fn)(a, t.arg, ARPC_OK);
        /* Single writer: a plain load + store, no locked instruction per message. */
        uint_fast64_t done = atomic_load_explicit(&a->a_processed, memory_order_relaxed);
        atomic_store_explicit(&a->a_processed, done + 1, memory_order_relaxed);
        n++;
    }
    return n;
}

static void *actor_main(void *arg)
{
    arpc_actor *a = arg;
    actor_current = a;
    if (a->a_name[0] != '\0')
        pthread_setname_np(pthread_self(), a->a_name);
    for (;;) {
        uint32_t seen = ck_ec32_value(&a->a_ec); /* before the drain: see the notes */
        /* Acquire pairs with the stopper's release after close(): every accepted post is
         * visible to the drain below. */
        bool closed = atomic_load_explicit(&a->a_closed, memory_order_acquire);
        if (actor_drain(a) > 0)
            continue;
        if (closed || atomic_load_explicit(&a->a_discard, memory_order_relaxed))
            break;
        ck_ec32_wait(&a->a_ec, &arpc_ec_mode_mp, seen, NULL);
    }
    actor_current = NULL;
    return NULL;
}

/* Actor threads take no asynchronous signals (they belong to the application's threads);
 * faults stay unblocked so a crash in a handler is reported where it happened. */
static int actor_start_thread(arpc_actor *a)
{
    sigset_t all, old;
    sigfillset(&all);
    static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++)
        sigdelset(&all, faults[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&a->a_thread, NULL, actor_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err == 0 ? ARPC_OK : ARPC_ESYSTEM;
}

static int actor_init_lock(arpc_actor *a)
{
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0)
        return ARPC_ESYSTEM;
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    int err = pthread_mutex_init(&a->a_stop_lock, &attr);
    pthread_mutexattr_destroy(&attr);
    return err == 0 ? ARPC_OK : ARPC_ESYSTEM;
}

int arpc_actor_create(arpc_actor **out, const arpc_actor_options *opts)
{
    if (out == NULL)
        return ARPC_EINVAL;
    *out = NULL;
    unsigned size = ACTOR_DEFAULT_MAILBOX;
    if (opts != NULL && opts->mailbox_size != 0)
        size = opts->mailbox_size;

    arpc_actor *a = arpc_calloc(1, sizeof(*a));
    if (a == NULL)
        return ARPC_ENOMEM;
    int rc = arpc_mpsc_ring_init(&a->a_mailbox, size);
    if (rc != ARPC_OK) {
        arpc_free(a);
        return rc;
    }
    ck_ec32_init(&a->a_ec, 0);
    atomic_init(&a->a_processed, 0);
    atomic_init(&a->a_discard, false);
    atomic_init(&a->a_closed, false);
    atomic_init(&a->a_posting, false);
    a->a_joined = false;
    if (opts != NULL && opts->name != NULL)
        strncpy(a->a_name, opts->name, ACTOR_NAME_MAX - 1); /* truncates; calloc'd NUL */

    if ((rc = actor_init_lock(a)) != ARPC_OK)
        goto fail_ring;
    if ((rc = actor_start_thread(a)) != ARPC_OK)
        goto fail_lock;
    *out = a;
    return ARPC_OK;

fail_lock:
    pthread_mutex_destroy(&a->a_stop_lock);
fail_ring:
    arpc_mpsc_ring_fini(&a->a_mailbox);
    arpc_free(a);
    return rc;
}

/* One foreign poster at a time enters the ring (see the notes). A try-lock: a poster that
 * finds it taken backs off like one that finds the mailbox full, so a preempted holder is
 * waited for by yielding, never by spinning through a whole time slice. */
static bool actor_post_trylock(arpc_actor *a)
{
    return !atomic_load_explicit(&a->a_posting, memory_order_relaxed) &&
           !atomic_exchange_explicit(&a->a_posting, true, memory_order_acquire);
}

static void actor_post_unlock(arpc_actor *a)
{
    atomic_store_explicit(&a->a_posting, false, memory_order_release);
}

/* A post from any thread but the actor's: waits (spin, then yield) for room. */
static int actor_post_foreign(arpc_actor *a, arpc_mpsc_fn fn, void *arg)
{
    unsigned attempt = 0;
    for (;;) {
        if (actor_post_trylock(a)) {
            int rc = arpc_mpsc_ring_try_push(&a->a_mailbox, fn, arg);
            actor_post_unlock(a);
            if (rc != ARPC_EAGAIN)
                return rc;
            /* Full. The actor is normally awake (every push bumps a_ec), but the poster
             * whose push filled the ring may not have bumped yet: make sure it runs. */
            ck_ec32_inc(&a->a_ec, &arpc_ec_mode_mp);
        }
        arpc_backoff_spin(&attempt);
    }
}

int arpc_actor_post(arpc_actor *a, arpc_actor_fn fn, void *arg)
{
    if (a == NULL || fn == NULL)
        return ARPC_EINVAL;
    int rc;
    if (actor_current == a) /* it cannot wait for itself to make room: overflow instead */
        rc = arpc_mpsc_ring_push_local(&a->a_mailbox, (arpc_mpsc_fn)fn, arg);
    else
        rc = actor_post_foreign(a, (arpc_mpsc_fn)fn, arg);
    if (rc == ARPC_OK)
        ck_ec32_inc(&a->a_ec, &arpc_ec_mode_mp); /* after the publish: see the notes */
    return rc;
}

/* Stopper only, after the join: delivers ARPC_ECANCELLED for everything left. */
static void actor_cancel_rest(arpc_actor *a)
{
    struct arpc_mpsc_task t;
    while (arpc_mpsc_ring_pop(&a->a_mailbox, &t))
        ((arpc_actor_fn)t.fn)(a, t.arg, ARPC_ECANCELLED);
}

int arpc_actor_stop(arpc_actor *a, enum arpc_actor_stop_mode mode)
{
    if (a == NULL || (mode != ARPC_ACTOR_DRAIN && mode != ARPC_ACTOR_DISCARD))
        return ARPC_EINVAL;
    if (actor_current == a)
        return ARPC_EBUSY; /* it would join itself */
    pthread_mutex_lock(&a->a_stop_lock);
    if (!a->a_joined) {
        if (mode == ARPC_ACTOR_DISCARD)
            atomic_store(&a->a_discard, true);
        arpc_mpsc_ring_close(&a->a_mailbox);
        atomic_store_explicit(&a->a_closed, true, memory_order_release);
        ck_ec32_inc(&a->a_ec, &arpc_ec_mode_mp);
        pthread_join(a->a_thread, NULL);
        /* Set before the cancellations: a callback that stops again returns at once. */
        a->a_joined = true;
        actor_cancel_rest(a);
    }
    pthread_mutex_unlock(&a->a_stop_lock);
    return ARPC_OK;
}

void arpc_actor_destroy(arpc_actor *a)
{
    if (a == NULL)
        return;
    if (arpc_actor_stop(a, ARPC_ACTOR_DRAIN) != ARPC_OK) {
        /* Destroyed from its own thread: a caller bug. Freeing would pull the actor out
         * from under the running message; leaking is the lesser harm. */
        assert(!"arpc_actor_destroy called from the actor's own thread");
        return;
    }
    pthread_mutex_destroy(&a->a_stop_lock);
    arpc_mpsc_ring_fini(&a->a_mailbox);
    arpc_free(a);
}

bool arpc_actor_on_thread(const arpc_actor *a) { return a != NULL && actor_current == a; }

uint64_t arpc_actor_processed(const arpc_actor *a)
{
    /* Counts messages run with ARPC_OK; cancelled ones are not "processed". */
    return atomic_load_explicit(&a->a_processed, memory_order_relaxed);
}
