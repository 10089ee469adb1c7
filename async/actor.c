/*
 * Design notes.
 *
 * An actor is a thread, a mailbox and an event count (ck_ec32) it sleeps on.
 *
 * The mailbox is an intrusive Concurrency Kit stack of jobs (base/stack_fifo.h) and an
 * atomic count, a_queued, of the jobs posted and not yet given back. A post is one CAS onto
 * the stack: no lock, and no poster ever waits for another (a poster preempted anywhere
 * holds up nobody). The actor takes the whole stack at once and runs it in push order: FIFO
 * per poster, one total order across posters. A job is embedded in its owner's object
 * (async/actor_internal.h); arpc_actor_post's message is a job in a node from the actor's
 * node pool (base/node_pool.h: lock-free, no allocation once warm).
 *
 * The bound. A poster on another thread takes a place in a_queued before it pushes
 * (fetch_add, inside a_entry; past the bound it gives the place back and, if it may wait,
 * leaves the entry and waits with arpc_backoff_spin, then tries again; else ARPC_EAGAIN).
 * The actor gives places back as it starts jobs, in batches: every ACTOR_GIVE_BACK jobs and
 * whenever it starts the last job of a take (so with a small bound, room comes back at least
 * once per take). Only failed takers push the count past the bound, and only until they undo,
 * so the jobs posted and not yet started never exceed the bound unless the actor posted them
 * to itself: its own posts count but never wait (it cannot wait for itself to make room).
 *
 * Runs (arpc_actor_reserve, arpc_actor_post_chain: the server loop's posts of one read). A
 * poster takes several places at once with one fetch_add, inside a_entry (past the bound the
 * excess goes back at once, as a failed single taker's does), and later pushes the run, its
 * jobs already linked oldest first through aj_run_next, as one item (its first job), giving
 * back the places it did not use. So the stack holds runs (a single post is a run of one):
 * the actor reverses the runs it takes, then walks each forward, prefetching the job after
 * next as it starts one. Reversing every job instead was a chain of dependent cache misses on
 * lines the poster had just written, a fifth of a worker's time under pipelined load; walked
 * forward, each job's line is on its way while the one before runs. The take sees a run's
 * jobs in order, behind everything pushed before; the wake-up rule is a single post's. Places
 * given back may bring the count under the low-water mark: the poster then plays the actor's
 * part of the Dekker pair, as actor_unreserve does.
 *
 * Room waiters (arpc_actor_on_room) are a second CAS stack, a_rooms, and a flag,
 * a_room_wanted. An arming pushes its waiter, sets the flag, then reads a_queued; the actor
 * subtracts from a_queued (a give-back), then reads the flag. All four are sequentially
 * consistent, so at least one side sees the other (the Dekker pattern): either the actor sees
 * the flag when the count has fallen below the low-water mark and runs the waiters, or the
 * arming sees the count already low and bumps a_ec, and the actor, woken, runs them from its
 * idle check. The actor clears the flag *before* it takes the stack, so a waiter pushed
 * after the take finds the flag set again. A poster that gives a place back itself (out of
 * memory) plays the actor's part, bumping a_ec if the flag is set. Nothing on the
 * per-message path but a load of the flag, and only when the count is below the mark.
 *
 * Waking without losing a post: a post that finds the mailbox empty (arpc_stack_push_first)
 * bumps the event count after its push (ck_ec32_inc: a store fence, then one atomic add; a
 * futex wake only when the actor has flagged itself asleep); a post onto a non-empty mailbox
 * need not, because the post at the bottom of that stack did, and the take that finds it
 * finds the later ones too. The actor snapshots the count (ck_ec32_value: a load followed by
 * an acquire fence) *before* it drains, and sleeps only while the count still equals the
 * snapshot. Its drain ends with a take that found the mailbox empty; a post after that take
 * is the bottom of a new stack, so it bumps the count after the snapshot, and the wait
 * returns at once.
 *
 * Stopping: the stopper closes a_entry (base/entry.h): posts and armings fail with
 * ARPC_ESHUTDOWN from then on, and the close waits until no post is between its check and
 * its last touch, its wake-up (waiting for room happens outside, and gives up when it sees
 * the close; such a waiter is counted in a_room_waiters from before it leaves the entry, and
 * destroy waits for that count before it frees: a destroy used to free the actor under a
 * poster's next look at a_queued). Then it sets a_closed: from there the mailbox only
 * shrinks. An actor that read a_closed == true before a drain that found nothing has run
 * every accepted job and may exit (DRAIN). For DISCARD the stopper sets a_discard first, so
 * the actor stops as early as possible; the actor checks it between jobs (the job in
 * progress always finishes). Whatever is left after the thread has been joined (the rest of
 * its take, then the mailbox) is cancelled by the stopper, which is the
 * mailbox's only consumer once pthread_join has returned (join is the happens-before edge),
 * and so are the room waiters still armed (ARPC_ESHUTDOWN).
 *
 * The stop path holds a recursive mutex: concurrent stops serialise (the second returns
 * after the first has joined and cancelled everything, so "stop returned" always means
 * "every accepted message was delivered"), and a cancellation callback that calls stop again
 * on the same actor gets ARPC_OK instead of a self-deadlock. It is not on any post's path.
 */
#define _GNU_SOURCE
#include "async/actor_internal.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <ck_ec.h>

#include "arpc/error.h"
#include "async/awake.h"
#include "async/futex.h"
#include "base/alloc.h"
#include "base/backoff.h"
#include "base/bound.h"
#include "base/entry.h"
#include "base/fork_gen.h"
#include "base/handle.h"
#include "base/log.h"
#include "base/node_pool.h"
#include "base/options.h"
#include "base/stack_fifo.h"
#include "base/thread.h"

#define ACTOR_DEFAULT_MAILBOX 4096u
#define ACTOR_GIVE_BACK 64u /* jobs started before their places go back at the latest */
#define ACTOR_NAME_MAX 16   /* Linux thread names: 15 characters and the NUL */
#define ACTOR_POLL_MAX_US 1000u /* arpc_actor_options.poll_us is capped here */

CK_STACK_CONTAINER(struct arpc_actor_job, aj_link, job_of)
CK_STACK_CONTAINER(struct arpc_actor_room, ar_link, room_of)

struct arpc_actor {
    arpc_magic a_magic; /* first: base/handle.h; dead from arpc_actor_destroy on */
    /* Shared with posters. */
    ck_stack_t a_mailbox;         /* posted jobs, newest first */
    atomic_uint a_queued;         /* jobs posted and not yet given back (the bound's count) */
    struct arpc_entry a_entry;    /* posts and armings between their check and last touch */
    atomic_uint a_room_waiters;   /* posts waiting for room outside a_entry: destroy waits */
    atomic_bool a_room_wanted;    /* a room waiter may be armed: the actor looks at a_rooms */
    struct ck_ec32 a_ec;          /* bumped by a post into an empty mailbox, and at stop */
    unsigned a_bound;             /* mailbox_size */
    unsigned a_fork_gen;          /* the process it was made in (base/fork_gen.h): actor_live */
    uint64_t a_poll_ns;           /* poll_us: 0, sleep at once */
    unsigned a_low;               /* room is back when a_queued is below this */
    ck_stack_t a_rooms;           /* armed room waiters, newest first */
    struct arpc_node_pool a_msgs; /* arpc_actor_post's message nodes */
    char a_pad[64];               /* what the actor writes below stays off the posters' lines */

    /* The actor's thread only (then the stopper's, after the join). */
    struct arpc_actor_job *a_taken;           /* the next job taken from the mailbox, not yet run */
    ck_stack_entry_t *a_runs;                 /* the runs taken after a_taken's, oldest first */
    unsigned a_started;                       /* jobs started since the last give-back */
    struct arpc_node_chain a_spent;           /* message nodes to give back to a_msgs */
    atomic_uint_fast64_t a_processed;         /* written by the actor thread only */
    void (*a_take_end)(void *);               /* arpc_actor_at_take_end's, until it runs */
    void *a_take_end_arg;

    /* The stopper's. */
    atomic_uint a_users;         /* servers' methods routed here (arpc_actor_users_add) */
    atomic_bool a_discard;       /* set before closing a_entry (DISCARD) */
    atomic_bool a_closed;        /* set once no post is in flight */
    pthread_mutex_t a_stop_lock; /* recursive; guards a_joined and the stop sequence */
    bool a_joined;
    pthread_t a_thread;
    char a_name[ACTOR_NAME_MAX];
};

/* arpc_actor_post's message: a job in a node of a_msgs. */
struct actor_msg {
    struct arpc_actor_job m_job; /* first: the job is the message */
    arpc_actor_fn m_fn;
    void *m_arg;
};

/* The actor whose thread this is: how post knows it must not wait for room. */
static _Thread_local arpc_actor *actor_current;

/* The actor whose stop delivers ARPC_ECANCELLED on this thread (actor_cancel_rest): a destroy
 * of it from one of those callbacks would free it under the loop that calls them. */
static _Thread_local const arpc_actor *actor_cancelling;

/* ---- room ---- */

/* Runs the armed room waiters, in arming order. The actor's thread (status ARPC_OK), or the
 * stopper after the join (ARPC_ESHUTDOWN). */
static void actor_rooms_fire(arpc_actor *a, int status)
{
    atomic_store(&a->a_room_wanted, false); /* before the take: see the notes */
    ck_stack_entry_t *e = arpc_stack_take_fifo(&a->a_rooms);
    while (e != NULL) {
        ck_stack_entry_t *next = e->next; /* the waiter is its owner's again once called */
        struct arpc_actor_room *room = room_of(e);
        room->ar_fn(a, room, status);
        e = next;
    }
}

/* The actor's side of the Dekker pair, after a_queued went down to left. */
static void actor_room_check(arpc_actor *a, unsigned left)
{
    if (left < a->a_low && atomic_load(&a->a_room_wanted))
        actor_rooms_fire(a, ARPC_OK);
}

/* ---- the actor's thread ---- */

/* Gives back the places of the jobs started since the last time, and the spent message
 * nodes. The actor's thread, or the stopper after the join. */
static void actor_give_back(arpc_actor *a)
{
    arpc_node_pool_put_chain(&a->a_msgs, &a->a_spent);
    if (a->a_started == 0)
        return;
    unsigned n = a->a_started;
    a->a_started = 0;
    actor_room_check(a, atomic_fetch_sub(&a->a_queued, n) - n);
}

/* The hook armed for the end of the take that just ended, if any (it may arm another). */
static void actor_take_end(arpc_actor *a)
{
    void (*fn)(void *) = a->a_take_end;
    if (fn != NULL) {
        a->a_take_end = NULL;
        fn(a->a_take_end_arg);
    }
}

/* The job after job in the take: the next of its run, else the first of the next run. */
static struct arpc_actor_job *actor_after(arpc_actor *a, const struct arpc_actor_job *job)
{
    if (job->aj_run_next != NULL)
        return job->aj_run_next;
    ck_stack_entry_t *run = a->a_runs;
    if (run == NULL)
        return NULL;
    a->a_runs = run->next;
    return job_of(run);
}

/* The next job to run, taken from the mailbox when the last take is done; NULL: none. Sets
 * a_taken to the one after it (before the call: a job may be freed by its own function) and
 * starts fetching the one after that, whose address a_taken's line holds. Actor's thread, or
 * the stopper after the join. */
static struct arpc_actor_job *actor_next(arpc_actor *a)
{
    struct arpc_actor_job *job = a->a_taken;
    if (job == NULL) {
        ck_stack_entry_t *run = arpc_stack_take_fifo(&a->a_mailbox);
        if (run == NULL)
            return NULL;
        a->a_runs = run->next;
        job = job_of(run);
    }
    struct arpc_actor_job *next = actor_after(a, job);
    a->a_taken = next;
    if (next != NULL && next->aj_run_next != NULL)
        __builtin_prefetch(next->aj_run_next);
    else if (next != NULL && a->a_runs != NULL)
        __builtin_prefetch(job_of(a->a_runs));
    return job;
}

/* Runs queued jobs until the mailbox is empty or a discard is requested. */
static unsigned actor_drain(arpc_actor *a)
{
    unsigned n = 0;
    /* Relaxed: a_discard is only a request to stop early; exactly-once rests on the join. */
    while (!atomic_load_explicit(&a->a_discard, memory_order_relaxed)) {
        struct arpc_actor_job *job = actor_next(a);
        if (job == NULL)
            break;
        if (++a->a_started == ACTOR_GIVE_BACK || a->a_taken == NULL)
            actor_give_back(a);
        job->aj_fn(a, job, ARPC_OK);
        /* Single writer: a plain load + store, no locked instruction per message. */
        uint_fast64_t done = atomic_load_explicit(&a->a_processed, memory_order_relaxed);
        atomic_store_explicit(&a->a_processed, done + 1, memory_order_relaxed);
        n++;
        if (a->a_taken == NULL)
            actor_take_end(a);
    }
    actor_take_end(a); /* a discard ended the take early */
    actor_give_back(a); /* the nodes spent since the last give-back, before going idle */
    return n;
}

bool arpc_actor_take_continues(void) { return arpc_actor_take_next() != NULL; }

struct arpc_actor_job *arpc_actor_take_next(void) { return actor_current != NULL ? actor_current->a_taken : NULL; }

bool arpc_actor_at_take_end(void (*fn)(void *arg), void *arg)
{
    arpc_actor *a = actor_current;
    if (a == NULL)
        return false;
    a->a_take_end = fn;
    a->a_take_end_arg = arg;
    return true;
}

/* With poll_us, before sleeping, an actor polls its event count for a while
 * (arpc_awake_poll, as long as a CPU is spare): when the next job comes within a round trip
 * (a server answering one call at a time), it then costs neither a futex wake for its poster
 * nor a wake-up of this thread. When every CPU is taken (pipelined load: both loops running,
 * or other processes') it sleeps at once, so as not to take a CPU another thread needs nor
 * wait a time slice for its own; and it never polls longer than poll_us, so an idle actor
 * uses no CPU. */
struct actor_poll {
    arpc_actor *p_actor;
    uint32_t p_seen;
};

static bool actor_posted(const void *arg)
{
    const struct actor_poll *p = arg;
    return ck_ec32_value(&p->p_actor->a_ec) != p->p_seen;
}

static void *actor_main(void *arg)
{
    arpc_actor *a = arg;
    actor_current = a;
    arpc_awake_add(1);
    if (a->a_name[0] != '\0')
        pthread_setname_np(pthread_self(), a->a_name);
    for (;;) {
        uint32_t seen = ck_ec32_value(&a->a_ec); /* before the drain: see the notes */
        /* Acquire pairs with the stopper's release once no post is in flight: every
         * accepted post is visible to the drain below. */
        bool closed = atomic_load_explicit(&a->a_closed, memory_order_acquire);
        unsigned n = actor_drain(a);
        actor_room_check(a, atomic_load(&a->a_queued)); /* waiters armed while room was back */
        if (n > 0)
            continue;
        if (closed || atomic_load_explicit(&a->a_discard, memory_order_relaxed))
            break;
        if (a->a_poll_ns != 0 && arpc_awake_poll(actor_posted, &(struct actor_poll){a, seen}, a->a_poll_ns))
            continue;
        arpc_awake_add(-1);
        ck_ec32_wait(&a->a_ec, &arpc_ec_mode_mp, seen, NULL);
        arpc_awake_add(1);
    }
    arpc_awake_add(-1);
    actor_current = NULL;
    return NULL;
}

bool arpc_actor_asleep(const arpc_actor *a) { return ck_ec32_has_waiters(&a->a_ec); }

/* ---- life cycle ---- */

/* Actor threads take no asynchronous signals (base/thread.h). */
static int actor_start_thread(arpc_actor *a)
{
    return arpc_thread_create(&a->a_thread, actor_main, a) == 0 ? ARPC_OK : ARPC_ESYSTEM;
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

/* A NULL actor is EINVAL; a destroyed one is misuse (base/handle.h); one made in the parent
 * of this child of a fork is refused (base/fork_gen.h: its thread is not here, and a post
 * would wait for it for ever). */
static bool actor_live(const arpc_actor *a, const char *fn)
{
    return arpc_handle_check(a, ARPC_MAGIC_ACTOR, "actor", fn) && arpc_fork_gen_here(a->a_fork_gen, a, "actor", fn);
}

int arpc_actor_create_v(arpc_actor **out, const arpc_actor_options *caller_opts, size_t opts_size)
{
    arpc_actor_options copy;
    int opts_rc = arpc_options_copy(&copy, sizeof(copy), caller_opts, opts_size);
    const arpc_actor_options *opts = caller_opts != NULL ? &copy : NULL;
    arpc_awake_init(); /* before its thread can poll (async/awake.h) */
    if (out == NULL)
        return ARPC_EINVAL;
    *out = NULL;
    if (opts_rc != ARPC_OK)
        return opts_rc;
    unsigned bound = ACTOR_DEFAULT_MAILBOX;
    if (opts != NULL && opts->mailbox_size != 0)
        bound = opts->mailbox_size;

    arpc_actor *a = arpc_calloc(1, sizeof(*a));
    if (a == NULL)
        return ARPC_ENOMEM;
    atomic_init(&a->a_magic, ARPC_MAGIC_ACTOR);
    a->a_fork_gen = arpc_fork_gen_start();
    ck_stack_init(&a->a_mailbox);
    atomic_init(&a->a_queued, 0);
    arpc_entry_init(&a->a_entry);
    atomic_init(&a->a_room_waiters, 0);
    atomic_init(&a->a_room_wanted, false);
    ck_ec32_init(&a->a_ec, 0);
    a->a_bound = bound;
    if (opts != NULL)
        a->a_poll_ns = (uint64_t)(opts->poll_us < ACTOR_POLL_MAX_US ? opts->poll_us : ACTOR_POLL_MAX_US) * 1000u;
    a->a_low = bound / 2 + bound % 2; /* half, rounded up: at least 1 */
    ck_stack_init(&a->a_rooms);
    arpc_node_pool_init(&a->a_msgs, sizeof(struct actor_msg));
    a->a_taken = NULL;
    a->a_runs = NULL;
    a->a_take_end = NULL;
    a->a_spent = (struct arpc_node_chain){0};
    a->a_started = 0;
    atomic_init(&a->a_processed, 0);
    atomic_init(&a->a_discard, false);
    atomic_init(&a->a_closed, false);
    a->a_joined = false;
    if (opts != NULL && opts->name != NULL)
        strncpy(a->a_name, opts->name, ACTOR_NAME_MAX - 1); /* truncates; calloc'd NUL */

    int rc = actor_init_lock(a);
    if (rc != ARPC_OK)
        goto fail;
    if ((rc = actor_start_thread(a)) != ARPC_OK)
        goto fail_lock;
    *out = a;
    return ARPC_OK;

fail_lock:
    pthread_mutex_destroy(&a->a_stop_lock);
fail:
    arpc_free(a);
    return rc;
}

/* ---- posting ---- */

/* A poster on another thread, outside a_entry, waits until the bound looks open or the
 * actor is stopping (see the notes). */
static int actor_wait_room(arpc_actor *a)
{
    unsigned attempt = 0;
    /* Whoever filled the mailbox woke the actor, which is making room. */
    while (atomic_load_explicit(&a->a_queued, memory_order_relaxed) >= a->a_bound) {
        if (arpc_entry_closed(&a->a_entry))
            return ARPC_ESHUTDOWN;
        arpc_backoff_spin(&attempt);
    }
    return ARPC_OK;
}

/* Gives back a place taken for a post that did not happen, inside a_entry. It may take the
 * count below the low-water mark: the actor's part of the Dekker pair, done by the poster. */
static void actor_unreserve(arpc_actor *a, unsigned n)
{
    atomic_fetch_sub(&a->a_queued, n);
    if (atomic_load(&a->a_room_wanted))
        ck_ec32_inc(&a->a_ec, &arpc_ec_mode_mp);
}

/* Pushes a job whose place is taken, wakes the actor if the mailbox was empty, and leaves:
 * the poster's last touch of the actor. */
static void actor_push_leave(arpc_actor *a, struct arpc_actor_job *job)
{
    /* Everything the poster wrote to the job happens-before the job runs (the stack's edge). */
    if (arpc_stack_push_first(&a->a_mailbox, &job->aj_link))
        ck_ec32_inc(&a->a_ec, &arpc_ec_mode_mp); /* after the publish: see the notes */
    arpc_entry_leave(&a->a_entry);
}

/* A post's way in: into a_entry, then a place in the bound (on the actor's thread, always).
 * On ARPC_OK the caller holds both and ends with actor_push_leave (or actor_unreserve and
 * arpc_entry_leave). A wait for room happens outside the entry, counted in a_room_waiters
 * from before the leave (the stopper's close waits for the leave, so the destroyer's free
 * sees the count) until the poster is back inside or gone. */
static int actor_post_begin(arpc_actor *a, bool may_wait)
{
    bool waiting = false;
    int rc = ARPC_OK;
    for (;;) {
        if (!arpc_entry_enter(&a->a_entry)) {
            rc = ARPC_ESHUTDOWN;
            break;
        }
        if (actor_current == a) {
            atomic_fetch_add(&a->a_queued, 1);
            break;
        }
        if (arpc_bound_take(&a->a_queued, a->a_bound))
            break;
        if (!may_wait) {
            arpc_entry_leave(&a->a_entry);
            rc = ARPC_EAGAIN;
            break;
        }
        if (!waiting)
            atomic_fetch_add(&a->a_room_waiters, 1);
        waiting = true;
        arpc_entry_leave(&a->a_entry);
        if ((rc = actor_wait_room(a)) != ARPC_OK)
            break;
    }
    if (waiting)
        atomic_fetch_sub(&a->a_room_waiters, 1); /* inside the entry now, or our last touch */
    return rc;
}

int arpc_actor_post_job(arpc_actor *a, struct arpc_actor_job *job, bool may_wait)
{
    if (!actor_live(a, __func__) || job == NULL || job->aj_fn == NULL)
        return ARPC_EINVAL;
    int rc = actor_post_begin(a, may_wait);
    if (rc == ARPC_OK) {
        job->aj_run_next = NULL; /* a run of one, whatever run the job's owner posted it in before */
        actor_push_leave(a, job);
    }
    return rc;
}

/* A message's job: its node is spent before the message runs (the actor's thread, or the
 * stopper after the join, so the spent list needs no lock). */
static void actor_msg_run(arpc_actor *a, struct arpc_actor_job *job, int status)
{
    struct actor_msg *m = (struct actor_msg *)job;
    arpc_actor_fn fn = m->m_fn;
    void *arg = m->m_arg;
    arpc_node_chain_add(&a->a_spent, m);
    fn(a, arg, status);
}

int arpc_actor_post(arpc_actor *a, arpc_actor_fn fn, void *arg)
{
    if (!actor_live(a, __func__) || fn == NULL)
        return ARPC_EINVAL;
    int rc = actor_post_begin(a, true);
    if (rc != ARPC_OK)
        return rc;
    struct actor_msg *m = arpc_node_pool_get(&a->a_msgs);
    if (m == NULL) {
        actor_unreserve(a, 1); /* inside the entry: a destroy cannot free a under it */
        arpc_entry_leave(&a->a_entry);
        return ARPC_ENOMEM;
    }
    arpc_actor_job_init(&m->m_job, actor_msg_run);
    m->m_fn = fn;
    m->m_arg = arg;
    actor_push_leave(a, &m->m_job);
    return ARPC_OK;
}

unsigned arpc_actor_reserve(arpc_actor *a, unsigned want)
{
    if (want == 0 || !arpc_entry_enter(&a->a_entry))
        return 0;
    unsigned got = 0;
    unsigned queued = atomic_load_explicit(&a->a_queued, memory_order_relaxed);
    if (queued < a->a_bound) {
        got = a->a_bound - queued < want ? a->a_bound - queued : want;
        /* As arpc_bound_take, for several: past the bound (other posters raced us) the
         * excess goes back at once, so the places held never exceed the bound. */
        unsigned before = atomic_fetch_add(&a->a_queued, got);
        unsigned over = before + got > a->a_bound ? before + got - a->a_bound : 0;
        if (over > got)
            over = got;
        if (over != 0)
            actor_unreserve(a, over);
        got -= over;
    }
    arpc_entry_leave(&a->a_entry);
    return got;
}

int arpc_actor_post_chain(arpc_actor *a, struct arpc_actor_job *first, unsigned unused)
{
    if (!arpc_entry_enter(&a->a_entry))
        return ARPC_ESHUTDOWN;
    if (unused != 0)
        actor_unreserve(a, unused); /* the Dekker pair's actor part, as a poster's give-back */
    if (first != NULL && arpc_stack_push_first(&a->a_mailbox, &first->aj_link))
        ck_ec32_inc(&a->a_ec, &arpc_ec_mode_mp); /* after the publish: see the notes */
    arpc_entry_leave(&a->a_entry);
    return ARPC_OK;
}

int arpc_actor_on_room(arpc_actor *a, struct arpc_actor_room *room)
{
    if (a == NULL || room == NULL || room->ar_fn == NULL)
        return ARPC_EINVAL;
    if (!arpc_entry_enter(&a->a_entry))
        return ARPC_ESHUTDOWN;
    arpc_stack_push(&a->a_rooms, &room->ar_link);
    atomic_store(&a->a_room_wanted, true);
    if (atomic_load(&a->a_queued) < a->a_low)
        ck_ec32_inc(&a->a_ec, &arpc_ec_mode_mp); /* room is back already: the actor runs it */
    arpc_entry_leave(&a->a_entry);
    return ARPC_OK;
}

/* ---- stopping ---- */

/* Stopper only, after the join: delivers ARPC_ECANCELLED for every job left (the rest of the
 * actor's take first: it is older), then ARPC_ESHUTDOWN to the room waiters. */
static void actor_cancel_rest(arpc_actor *a)
{
    const arpc_actor *outer = actor_cancelling; /* a callback may stop another actor */
    actor_cancelling = a;
    struct arpc_actor_job *job;
    while ((job = actor_next(a)) != NULL)
        job->aj_fn(a, job, ARPC_ECANCELLED);
    actor_give_back(a); /* the spent nodes, for arpc_node_pool_fini */
    actor_rooms_fire(a, ARPC_ESHUTDOWN);
    actor_cancelling = outer;
}

bool arpc_actor_destroy_refused(const arpc_actor *a, const void *h, const char *fn)
{
    const char *from = actor_current == a ? "the actor's own thread"
                       : actor_cancelling == a ? "an ARPC_ECANCELLED callback of the actor's stop"
                                               : NULL;
    if (from == NULL)
        return false;
    /* Freeing it would pull it out from under the running message or the loop delivering
     * the cancellations: a leak is the lesser harm. */
    arpc_log(ARPC_LOG_ERROR, "%s on %p: refused: called from %s (destroy it once that has returned)", fn, h, from);
    assert(!"an actor destroyed from its own thread or its stop's callbacks");
    return true;
}

int arpc_actor_stop(arpc_actor *a, enum arpc_actor_stop_mode mode)
{
    if (!actor_live(a, __func__) || (mode != ARPC_ACTOR_DRAIN && mode != ARPC_ACTOR_DISCARD))
        return ARPC_EINVAL;
    if (actor_current == a)
        return ARPC_EBUSY; /* it would join itself */
    pthread_mutex_lock(&a->a_stop_lock);
    if (!a->a_joined) {
        if (mode == ARPC_ACTOR_DISCARD)
            atomic_store(&a->a_discard, true);
        arpc_entry_close(&a->a_entry); /* a few instructions' wait: see the notes */
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

void arpc_actor_users_add(arpc_actor *a, int n) { atomic_fetch_add(&a->a_users, (unsigned)n); }

bool arpc_actor_in_use(const arpc_actor *a, const char *fn)
{
    return arpc_handle_in_use(a, atomic_load(&((arpc_actor *)a)->a_users), "arpc_method_options.actor", fn);
}

void arpc_actor_destroy(arpc_actor *a)
{
    if (!actor_live(a, __func__) || arpc_actor_in_use(a, __func__) || arpc_actor_destroy_refused(a, a, __func__))
        return;
    (void)arpc_actor_stop(a, ARPC_ACTOR_DRAIN); /* not on its thread: ARPC_OK */
    /* From here the handle is dead: a second destroy, even a racing one, is caught. */
    if (!arpc_handle_kill(a, ARPC_MAGIC_ACTOR, "actor", __func__))
        return;
    /* Posters that waited for room when it stopped see the close and leave (actor_post_begin). */
    unsigned attempt = 0;
    while (atomic_load(&a->a_room_waiters) != 0)
        arpc_backoff_spin(&attempt);
    pthread_mutex_destroy(&a->a_stop_lock);
    arpc_node_pool_fini(&a->a_msgs);
    arpc_free(a);
}

bool arpc_actor_on_thread(const arpc_actor *a) { return a != NULL && actor_current == a; }

uint64_t arpc_actor_processed(const arpc_actor *a)
{
    /* Counts jobs run with ARPC_OK; cancelled ones are not "processed". */
    if (!actor_live(a, __func__))
        return 0;
    return atomic_load_explicit(&a->a_processed, memory_order_relaxed);
}
