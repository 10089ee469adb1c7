/* Request objects kept for reuse (core/request_pool.h). */
#include "core/request_pool.h"

#include "base/alloc.h"
#include "base/stack_fifo.h"

void *request_pool_get(struct request_pool *p, size_t size, bool *pooled)
{
    *pooled = false;
    if (size > REQUEST_POOL_BLOCK)
        return arpc_malloc(size);
    if (p->rp_free == NULL)
        p->rp_free = arpc_stack_take_fifo(&p->rp_returned); /* every block given back so far */
    ck_stack_entry_t *e = p->rp_free;
    if (e != NULL) {
        p->rp_free = e->next;
        *pooled = true;
        return e;
    }
    if (p->rp_made >= REQUEST_POOL_MAX)
        return arpc_malloc(size); /* a burst: freed when it is done */
    e = arpc_malloc(REQUEST_POOL_BLOCK);
    if (e != NULL) {
        p->rp_made++;
        *pooled = true;
    }
    return e;
}

void request_pool_put(struct request_pool *p, void *block, bool pooled)
{
    if (!pooled) {
        arpc_free(block);
        return;
    }
    arpc_stack_push(&p->rp_returned, block);
}

static void free_list(ck_stack_entry_t *e)
{
    while (e != NULL) {
        ck_stack_entry_t *next = e->next;
        arpc_free(e);
        e = next;
    }
}

void request_pool_fini(struct request_pool *p)
{
    free_list(p->rp_free);
    free_list(arpc_stack_take_fifo(&p->rp_returned));
    p->rp_free = NULL;
    p->rp_made = 0;
}

unsigned request_pool_held(struct request_pool *p)
{
    ck_stack_entry_t *taken = arpc_stack_take_fifo(&p->rp_returned);
    unsigned n = 0;
    ck_stack_entry_t **tail = &p->rp_free;
    while (*tail != NULL) {
        tail = &(*tail)->next;
        n++;
    }
    *tail = taken; /* the loop's list goes on with what was given back */
    for (; taken != NULL; taken = taken->next)
        n++;
    return n;
}
