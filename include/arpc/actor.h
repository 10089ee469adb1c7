/*
 * arpc/actor.h: worker actors and actor groups.
 *
 * An actor is a thread with a mailbox. Messages posted to it run one at a time, in the order
 * they were posted (per posting thread; posts from several threads interleave in the order
 * they reached the mailbox), so state touched only by one actor's messages needs no lock.
 * The mailbox is a lock-free Concurrency Kit stack that the actor takes whole: a poster never
 * waits for another one's post (see docs/ARCHITECTURE.md). An idle actor sleeps on a
 * Concurrency Kit event count (futex), it never spins waiting for work.
 *
 * Back-pressure: when mailbox_size messages are posted and not yet started, a poster on
 * another thread waits (spinning briefly, then yielding) until the actor makes room. A
 * message an actor posts to itself never waits: it is accepted past the bound. The actor
 * makes room in batches, not per message: when it starts the last message of what it took
 * from the mailbox at once, and every 64 messages. Until then the messages it started still
 * count, so a poster may wait while up to 64 fewer are not yet started; and a message that
 * waits for another thread's post to its own actor may wait for ever (that post waits for
 * room the message holds).
 *
 * Completion contract: every message that arpc_actor_post accepted (ARPC_OK) is delivered
 * exactly once: fn(actor, arg, ARPC_OK) on the actor's thread, or, when the actor is stopped
 * with ARPC_ACTOR_DISCARD before reaching it, fn(actor, arg, ARPC_ECANCELLED) on the thread
 * that stops it (so the owner can free arg). After stop, post fails with ARPC_ESHUTDOWN.
 *
 * An actor group is a pool of actors: post spreads messages round-robin; post_key sends all
 * messages with the same key to the same actor, so per-key order is kept.
 */
#ifndef ARPC_ACTOR_H
#define ARPC_ACTOR_H

#include "arpc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_actor arpc_actor;
typedef struct arpc_actor_group arpc_actor_group;

/* status is ARPC_OK (run it) or ARPC_ECANCELLED (discarded at stop: only release arg). */
typedef void (*arpc_actor_fn)(arpc_actor *actor, void *arg, int status);

typedef struct arpc_actor_options {
    unsigned mailbox_size; /* messages posted and not yet started before other threads' posts
                            * wait (never exceeded; the actor's own posts may go past it; room
                            * comes back in batches, see Back-pressure); 0 = 4096 */
    const char *name;      /* thread name for debuggers (at most 15 chars are kept); may be NULL */
    unsigned poll_us;      /* 0 (default): an idle actor sleeps at once. Else, before sleeping,
                            * it polls its mailbox for up to this long (capped at 1,000),
                            * yielding between looks, but only while the machine has a CPU
                            * spare: no more of arpc's threads running, and no more threads
                            * runnable on the machine (/proc/loadavg), than the CPUs the
                            * process may use, and never with one CPU. A message posted
                            * meanwhile costs its poster no futex wake and the actor no
                            * wake-up: for a server answering one call at a time, a shorter
                            * round trip. Costs CPU while it polls, and measured to cost
                            * pipelined throughput on 2 vCPUs (docs/PERFORMANCE.md); an idle
                            * actor still uses no CPU. */
} arpc_actor_options;

enum arpc_actor_stop_mode {
    ARPC_ACTOR_DRAIN = 0,   /* run every message already accepted, then stop */
    ARPC_ACTOR_DISCARD = 1, /* run the message in progress only; cancel the rest */
};

/* Creates and starts an actor. opts may be NULL. Any thread. Errors: ARPC_EINVAL (out NULL, or
 * an options field this library lacks set: arpc/common.h), ARPC_ENOMEM, ARPC_ESYSTEM. */
ARPC_API int arpc_actor_create_v(arpc_actor **out, const arpc_actor_options *opts, size_t opts_size);
#define arpc_actor_create(out, ...) arpc_actor_create_v((out), (__VA_ARGS__), sizeof(arpc_actor_options))

/* Posts fn(actor, arg, status). Thread-safe. A message takes a small node from the actor's
 * pool (allocated only while the pool grows to the most messages ever queued at once).
 * Errors: ARPC_ESHUTDOWN (also when the actor stops while the poster waits for room),
 * ARPC_EINVAL, ARPC_ENOMEM (no node could be allocated). */
ARPC_API int arpc_actor_post(arpc_actor *actor, arpc_actor_fn fn, void *arg);

/* Stops the actor (see the stop modes) and waits for its thread. Idempotent; any thread but
 * the actor's own (ARPC_EBUSY there). Errors: ARPC_EBUSY, ARPC_EINVAL (NULL, or a mode not in
 * the enum). */
ARPC_API int arpc_actor_stop(arpc_actor *actor, enum arpc_actor_stop_mode mode);

/* Stops with ARPC_ACTOR_DRAIN if still running, then frees. Not from the actor's thread, nor
 * from a message's ARPC_ECANCELLED callback during its stop (which runs on the stopper's
 * thread): a caller bug, refused with an ERROR line saying which, an abort in debug builds;
 * with NDEBUG the actor is left as it is (leaked rather than freed under the running code).
 * A post already waiting for room on another thread returns ARPC_ESHUTDOWN, and the free waits
 * for it to be out.
 * NULL does nothing; a second destroy, or any call after it, aborts in debug builds
 * (arpc/common.h, "API misuse"). Not for a member of a group (the group destroys it). */
ARPC_API void arpc_actor_destroy(arpc_actor *actor);

/* True when called from inside one of this actor's messages. Any thread. */
ARPC_API bool arpc_actor_on_thread(const arpc_actor *actor);

/* Messages processed so far (a snapshot; for tests and statistics). Any thread. */
ARPC_API uint64_t arpc_actor_processed(const arpc_actor *actor);

/* The most actors a group may have (arpc_actor_group_create's n; the server's pool is a group
 * too: ARPC_SERVER_WORKERS_MAX is this). Actors run messages that should not block, so threads
 * past the cores only take turns on them, while each costs a stack (8 MiB of address space by
 * default) and a start-up (3,000 took 0.9 s): 1,024 is more cores than a machine has, well
 * below the kernel's thread limits. Work that blocks belongs on a group of its own. */
#define ARPC_ACTOR_GROUP_MAX 1024u

/* Creates a group of n actors (n == 0: one per online CPU, at most ARPC_ACTOR_GROUP_MAX) and
 * starts them. opts (may be NULL) applies to each actor; its name, if any, is given to each
 * with "-INDEX" appended. Errors: ARPC_EINVAL (out NULL, bad options, or n over
 * ARPC_ACTOR_GROUP_MAX: refused before any thread starts, logged, one WARN line "cannot create
 * an actor group of N actors: at most 1024 (ARPC_ACTOR_GROUP_MAX)"), ARPC_ENOMEM, ARPC_ESYSTEM
 * (the actors made so far are stopped and freed; *out is NULL). */
ARPC_API int arpc_actor_group_create_v(arpc_actor_group **out, unsigned n, const arpc_actor_options *opts,
                                       size_t opts_size);
#define arpc_actor_group_create(out, n, ...) \
    arpc_actor_group_create_v((out), (n), (__VA_ARGS__), sizeof(arpc_actor_options))

/* Round-robin post. Thread-safe. Errors as arpc_actor_post (ARPC_EINVAL for a NULL group). */
ARPC_API int arpc_actor_group_post(arpc_actor_group *g, arpc_actor_fn fn, void *arg);

/* Posts to the actor chosen by key: equal keys always reach the same actor. Thread-safe.
 * Errors as arpc_actor_group_post. */
ARPC_API int arpc_actor_group_post_key(arpc_actor_group *g, uint64_t key, arpc_actor_fn fn,
                                       void *arg);

/* The number of actors (0 for NULL). Any thread. */
ARPC_API unsigned arpc_actor_group_size(const arpc_actor_group *g);
/* Actor i of the group (NULL for NULL or i out of range), lent: the group owns it and frees
 * it at arpc_actor_group_destroy. Post to it, stop it or ask arpc_actor_on_thread, but never
 * arpc_actor_destroy it. Any thread. */
ARPC_API arpc_actor *arpc_actor_group_member(arpc_actor_group *g, unsigned i);

/* Stops every actor of the group (same contract as arpc_actor_stop) and waits for them.
 * Returns ARPC_OK; ARPC_EINVAL (NULL, or a mode not in the enum); ARPC_EBUSY, stopping none,
 * from one of its actors' own threads. */
ARPC_API int arpc_actor_group_stop(arpc_actor_group *g, enum arpc_actor_stop_mode mode);
/* Stops the group with ARPC_ACTOR_DRAIN if still running, waits for its actors, and frees
 * them and the group. NULL does nothing. Not from one of its actors' threads, nor from an
 * ARPC_ECANCELLED callback of a member's stop (a caller bug, as for arpc_actor_destroy: an
 * ERROR line, an abort in debug builds; with NDEBUG it leaks the group rather than free a
 * running actor).
 * A group given to a server (arpc_method_options.group, or one of its members as .actor) must
 * outlive the server's stop: destroyed sooner, the destroy is refused (an ERROR line "...
 * destroy the server first", abort in debug builds; with NDEBUG nothing is destroyed, and the
 * server goes on posting to it). arpc_actor_destroy likewise for .actor. A second destroy, or
 * any call on the group after it, aborts in debug builds (arpc/common.h, "API misuse"). */
ARPC_API void arpc_actor_group_destroy(arpc_actor_group *g);

#ifdef __cplusplus
}
#endif

#endif
