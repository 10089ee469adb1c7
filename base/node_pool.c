/* A lock-free pool of equal-sized nodes (base/node_pool.h). */
#include "base/node_pool.h"

#include "base/alloc.h"
#include "base/memcheck.h"
#include "base/tsan.h"

void arpc_node_pool_init(struct arpc_node_pool *p, size_t size)
{
    ck_stack_init(&p->np_free);
    /* ck_stack_pop_mpmc counts pops by adding 1 to `generation`, a char pointer: from NULL
     * that is undefined (clang's UBSan stops there: "applying non-zero offset to null
     * pointer"). Only its changes matter, so it starts elsewhere. */
    p->np_free.generation = (char *)p;
    p->np_size = size < sizeof(ck_stack_entry_t) ? sizeof(ck_stack_entry_t) : size;
}

void arpc_node_pool_fini(struct arpc_node_pool *p)
{
    ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&p->np_free);
    ARPC_TSAN_ACQUIRE(p);
    while (e != NULL) {
        ck_stack_entry_t *next = e->next;
        arpc_free(e);
        e = next;
    }
}

#ifdef CK_F_STACK_POP_MPMC

void *arpc_node_pool_take(struct arpc_node_pool *p)
{
    /* The pop reads the head node's link, which the node's new owner may be writing if
     * another taker got it first; that read only feeds a CAS that then fails. */
    ARPC_TSAN_IGNORE_READS_BEGIN();
    ck_stack_entry_t *e = ck_stack_pop_mpmc(&p->np_free);
    ARPC_TSAN_IGNORE_READS_END();
    if (e != NULL) {
        ARPC_TSAN_ACQUIRE(p);
        ARPC_MEMCHECK_UNDEFINED(e, p->np_size); /* its last user's bytes are not the taker's */
        /* The next take reads the next node's link first thing, a line the thread that gave it
         * back wrote (often on another CPU): on its way now, while the caller uses this one. */
        __builtin_prefetch(ck_pr_load_ptr(&p->np_free.head), 1);
    }
    return e;
}

void *arpc_node_pool_get(struct arpc_node_pool *p)
{
    void *node = arpc_node_pool_take(p);
    return node != NULL ? node : arpc_malloc(p->np_size);
}

void arpc_node_pool_put(struct arpc_node_pool *p, void *node)
{
    ARPC_TSAN_RELEASE(p);
    ARPC_TSAN_IGNORE_WRITES_BEGIN();
    ck_stack_push_mpmc(&p->np_free, node);
    ARPC_TSAN_IGNORE_WRITES_END();
}

void arpc_node_pool_put_chain(struct arpc_node_pool *p, struct arpc_node_chain *c)
{
    if (c->nc_n == 0)
        return;
    ARPC_TSAN_RELEASE(p);
    ARPC_TSAN_IGNORE_WRITES_BEGIN();
    ck_stack_entry_t *head = ck_pr_load_ptr(&p->np_free.head);
    do {
        c->nc_last->next = head;
        ck_pr_fence_store(); /* the chain's links before the CAS that publishes it */
    } while (!ck_pr_cas_ptr_value(&p->np_free.head, head, c->nc_first, &head));
    ARPC_TSAN_IGNORE_WRITES_END();
    *c = (struct arpc_node_chain){0};
}

#else /* no double-width CAS on this machine: no pool, the allocator every time */

void *arpc_node_pool_take(struct arpc_node_pool *p)
{
    (void)p;
    return NULL;
}

void *arpc_node_pool_get(struct arpc_node_pool *p) { return arpc_malloc(p->np_size); }

void arpc_node_pool_put(struct arpc_node_pool *p, void *node)
{
    (void)p;
    arpc_free(node);
}

void arpc_node_pool_put_chain(struct arpc_node_pool *p, struct arpc_node_chain *c)
{
    (void)p;
    for (unsigned i = 0; i < c->nc_n; i++) {
        ck_stack_entry_t *next = c->nc_first->next;
        arpc_free(c->nc_first);
        c->nc_first = next;
    }
    *c = (struct arpc_node_chain){0};
}

#endif
