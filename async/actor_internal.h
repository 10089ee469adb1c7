/*
 * Internal actor API for the core: posting a job embedded in the caller's own object (no
 * allocation), without waiting for room, and learning when room is back.
 *
 * arpc_actor_post (arpc/actor.h) is built on this: its message is a job in a small node.
 * A caller that cannot wait (the server's loop) posts with may_wait false; when the mailbox
 * is at its bound it gets ARPC_EAGAIN and decides what to do (stop reading the connection),
 * and arms a room waiter (arpc_actor_on_room) to hear when to go on. Neither path takes a
 * lock: the mailbox is a Concurrency Kit stack plus an atomic count (async/actor.c).
 */
#ifndef ARPC_ASYNC_ACTOR_INTERNAL_H
#define ARPC_ASYNC_ACTOR_INTERNAL_H

#include <ck_stack.h>

#include "arpc/actor.h"

/* ---- jobs ---- */

struct arpc_actor_job;
/* status: ARPC_OK on the actor's thread (run it), or ARPC_ECANCELLED on the thread that
 * stopped the actor with ARPC_ACTOR_DISCARD before the job's turn (only release it). */
typedef void (*arpc_actor_job_fn)(arpc_actor *actor, struct arpc_actor_job *job, int status);
struct arpc_actor_job {
    ck_stack_entry_t aj_link;          /* the mailbox's link, from a run's first job to older runs */
    struct arpc_actor_job *aj_run_next; /* the next job of its run (arpc_actor_post_chain); NULL: last */
    arpc_actor_job_fn aj_fn;
};

static inline void arpc_actor_job_init(struct arpc_actor_job *job, arpc_actor_job_fn fn)
{
    job->aj_link.next = NULL;
    job->aj_run_next = NULL;
    job->aj_fn = fn;
}

/* Any thread. Posts job: on ARPC_OK, job->aj_fn runs exactly once, as a message posted with
 * arpc_actor_post would (same order, same stop contract), and the job belongs to the actor
 * until then. On the actor's own thread the post is always accepted (the mailbox may go past
 * its bound). From another thread, when the mailbox holds mailbox_size jobs not yet started:
 * with may_wait, waits (spinning briefly, then yielding) for room; without, returns
 * ARPC_EAGAIN at once. Never waits for another poster.
 * Errors (the job is still the caller's): ARPC_EAGAIN, ARPC_ESHUTDOWN (the actor is stopping
 * or stopped), ARPC_EINVAL. */
int arpc_actor_post_job(arpc_actor *actor, struct arpc_actor_job *job, bool may_wait);

/* ---- runs of posts from one thread ---- */

/* A poster that posts many jobs in a row (the server's loop, the requests of one read) takes
 * their places in the bound ahead, several at once, then pushes the jobs as one chain: a few
 * atomic operations per run instead of per job, and one wake-up. Places reserved count as
 * jobs posted: the bound holds. Not on the actor's own thread.
 *
 * arpc_actor_reserve: any thread; takes up to want places, fewer near the bound; returns how
 * many (0: at the bound, or the actor is stopping: post one job with arpc_actor_post_job to
 * learn which). The places are the caller's until it gives them to arpc_actor_post_chain.
 *
 * arpc_actor_post_chain: pushes the run that starts at first, its jobs linked oldest first
 * through aj_run_next (the last one's NULL), each on a place reserved, and gives back the
 * places reserved and not used (first may be NULL: only give back). They run in that order,
 * after every job posted before, as arpc_actor_post_job's would. Only first goes onto the
 * mailbox's stack: the actor walks the run forward, fetching the jobs ahead of their turn,
 * instead of reversing a chain of them, a dependent cache miss per job (docs/PERFORMANCE.md).
 * ARPC_ESHUTDOWN: the actor is stopping; nothing was pushed (the jobs are still the caller's)
 * and the places are forgotten with the actor. */
unsigned arpc_actor_reserve(arpc_actor *actor, unsigned want);
int arpc_actor_post_chain(arpc_actor *actor, struct arpc_actor_job *first, unsigned unused);

/* ---- room ---- */

/* A one-shot waiter for room in a mailbox, embedded in its owner's object. */
struct arpc_actor_room;
/* status: ARPC_OK once fewer than half the bound (rounded up) are queued: post again.
 * ARPC_ESHUTDOWN when the actor stopped first (posts are refused now). */
typedef void (*arpc_actor_room_fn)(arpc_actor *actor, struct arpc_actor_room *room, int status);
struct arpc_actor_room {
    ck_stack_entry_t ar_link;
    arpc_actor_room_fn ar_fn;
};

static inline void arpc_actor_room_init(struct arpc_actor_room *room, arpc_actor_room_fn fn)
{
    room->ar_link.next = NULL;
    room->ar_fn = fn;
}

/* Any thread, typically after an ARPC_EAGAIN. ARPC_OK: room->ar_fn runs exactly once: on
 * the actor's thread with ARPC_OK once the count of queued jobs is below the low-water mark
 * (at once, i.e. as soon as the actor gets to it, if room came back before the arming), or
 * with ARPC_ESHUTDOWN on the thread that stops the actor. Until then the room belongs to
 * the actor; several may wait at once (they run in arming order). ARPC_ESHUTDOWN: the actor
 * is stopping or stopped, the room is not armed. ARPC_EINVAL. */
int arpc_actor_on_room(arpc_actor *actor, struct arpc_actor_room *room);

/* On an actor's thread, inside a job: whether jobs this actor took with this one wait to run
 * after it (the rest of its take). False on any other thread. */
bool arpc_actor_take_continues(void);
/* The same: the job that runs after this one in its take (NULL: none), for a job that fetches
 * the next one's data ahead. Only to read: it is not run yet, and not the caller's. */
struct arpc_actor_job *arpc_actor_take_next(void);

/* On an actor's thread, inside a job: fn(arg) runs on this thread once the job that runs
 * last of the current take returns (or once a discard ends the take early), before the actor
 * takes again or sleeps. One at a time: a second arming before it ran replaces the first.
 * False (nothing armed) on any other thread. */
bool arpc_actor_at_take_end(void (*fn)(void *arg), void *arg);

/* Whether the actor's thread is asleep on its event count (not running, not polling before
 * it sleeps). Any thread; a snapshot (tests). */
bool arpc_actor_asleep(const arpc_actor *actor);

/* A server's method routed to the actor (or a group) counts as a user from its registration
 * to the end of the server's stop (n = 1, -1): destroying it meanwhile is reported
 * (arpc_actor_in_use, through base/handle.h's arpc_handle_in_use: an ERROR line naming fn,
 * abort in debug builds; true, and the caller destroys nothing). */
void arpc_actor_users_add(arpc_actor *actor, int n);
bool arpc_actor_in_use(const arpc_actor *actor, const char *fn);

/* A destroy (fn, of handle h: the actor or its group) called from the actor's own thread or
 * from an ARPC_ECANCELLED callback of its stop, which runs on the stopper's thread: true after
 * an ERROR line naming fn, h and which (abort in debug builds); the caller destroys nothing. */
bool arpc_actor_destroy_refused(const arpc_actor *actor, const void *h, const char *fn);

/* ---- groups ---- */

void arpc_actor_group_users_add(arpc_actor_group *g, int n); /* as arpc_actor_users_add */

/* The member arpc_actor_group_post would post to next (round-robin), and the one
 * arpc_actor_group_post_key would post to for key: for posting jobs to a group. */
arpc_actor *arpc_actor_group_pick(arpc_actor_group *g);
/* The group's only member when it has one, else NULL: every post to it goes to that actor. */
arpc_actor *arpc_actor_group_only(const arpc_actor_group *g);
arpc_actor *arpc_actor_group_pick_key(arpc_actor_group *g, uint64_t key);

#endif
