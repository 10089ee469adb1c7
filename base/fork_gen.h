/*
 * Which process an object was made in. After fork the child has copies of the parent's
 * objects, sockets included, but none of their threads: a client used there writes calls
 * with the parent's numbers on the parent's connection (the server then answers the parent's
 * next call as a copy of the child's: a wrong ARPC_OK), and its deadlines, kept by a loop
 * thread the child does not have, never fire; a server's or actor's destroy waits for
 * threads that are not there, and a queue's consumer clears the parent's eventfd. So an
 * object (clients, loops, servers and their requests, actors, groups, queues) notes the
 * generation it was made in, and its entry points refuse it in a later one. The count goes up in every child of a
 * fork (pthread_atfork), from the first arpc_fork_gen_start on.
 */
#ifndef ARPC_BASE_FORK_GEN_H
#define ARPC_BASE_FORK_GEN_H

#include <stdatomic.h>
#include <stdbool.h>

extern atomic_uint arpc_fork_generation;

/* The generation now, with the count's fork handler installed (once per process): for an
 * object being made. */
unsigned arpc_fork_gen_start(void);

/* The generation now: for an entry point (a relaxed load). */
static inline unsigned arpc_fork_gen(void)
{
    return atomic_load_explicit(&arpc_fork_generation, memory_order_relaxed);
}

/* An ERROR line: fn refused on h, a kind made in the parent of this child of a fork. False. */
bool arpc_fork_gen_misuse(const void *h, const char *kind, const char *fn);

/* True if an object made in generation gen may be used here; else arpc_fork_gen_misuse.
 * Inline: a client's every call. */
static inline bool arpc_fork_gen_here(unsigned gen, const void *h, const char *kind, const char *fn)
{
    return gen == arpc_fork_gen() || arpc_fork_gen_misuse(h, kind, fn);
}

#endif
