/*
 * A pool of equal-sized nodes, for hand-offs that need a small record per item (a task
 * submitted to a loop, a message posted to an actor): once the pool is warm, a post takes a
 * node from it instead of allocating, and the consumer gives the node back.
 *
 * Taking and giving back are lock-free and never wait for another thread. The free nodes
 * form a Concurrency Kit stack. Giving one back is a push (one CAS). Taking one is
 * ck_stack_pop_mpmc: a double-width CAS of the head together with a generation count that
 * every pop bumps, so it is free of ABA (a taker that read head A and its next B cannot
 * install B after A was taken, B taken and A given back: the generation moved). A taker may
 * read the link of a node another thread has just taken (its CAS then fails); that is safe
 * because nodes go back to the allocator only in arpc_node_pool_fini, when nobody takes any.
 *
 * An empty pool allocates (arpc_malloc), so the pool grows to the most nodes ever out at
 * once (for a bounded hand-off: about its bound) and keeps them until fini.
 *
 * The TSan edge (base/tsan.h): whatever a thread wrote to a node before giving it back
 * happens-before the next taker's use of it.
 */
#ifndef ARPC_BASE_NODE_POOL_H
#define ARPC_BASE_NODE_POOL_H

#include <ck_cc.h>
#include <ck_stack.h>
#include <stddef.h>

struct arpc_node_pool {
    ck_stack_t np_free CK_CC_ALIGN(16); /* the double-width CAS needs 16-byte alignment */
    size_t np_size;
};

/* size: the node size, at least a pointer (a free node's first word is its link). Needed
 * before any use (a zeroed pool's pop would count its generation from a null pointer). */
void arpc_node_pool_init(struct arpc_node_pool *p, size_t size);

/* Frees every node given back. Nodes still out are not the pool's any more. */
void arpc_node_pool_fini(struct arpc_node_pool *p);

/* Any thread: a node of the pool's size (contents undefined), or NULL when the pool is empty
 * and the allocator fails. */
void *arpc_node_pool_get(struct arpc_node_pool *p);

/* Any thread: a node given back, or NULL when none is (nothing is allocated), for an owner
 * that makes its nodes itself (core/block_pool.c bounds how many). Take, put and fini also
 * work on a pool initialised with any size: the size is only for get. */
void *arpc_node_pool_take(struct arpc_node_pool *p);

/* Any thread: gives a node taken from p back to it. */
void arpc_node_pool_put(struct arpc_node_pool *p, void *node);

/* Nodes a consumer is done with, gathered to be given back together: one CAS for the lot.
 * One owner at a time; no lock. Zero-initialised it is empty. */
struct arpc_node_chain {
    ck_stack_entry_t *nc_first, *nc_last;
    unsigned nc_n;
};

static inline void arpc_node_chain_add(struct arpc_node_chain *c, void *node)
{
    ck_stack_entry_t *e = node;
    e->next = c->nc_first;
    if (c->nc_first == NULL)
        c->nc_last = e;
    c->nc_first = e;
    c->nc_n++;
}

/* Any thread: gives every node of c back to p; c is empty afterwards. */
void arpc_node_pool_put_chain(struct arpc_node_pool *p, struct arpc_node_chain *c);

#endif
