/* Request objects kept for reuse (core/request_pool.h). */
#include "core/request_pool.h"

#include "base/alloc.h"
#include "base/stack_fifo.h"

/* The smallest class whose blocks hold size bytes, or REQUEST_POOL_NONE. */
static int class_of(size_t size)
{
    for (int k = 0; k < REQUEST_POOL_CLASSES; k++)
        if (size <= request_pool_block(k))
            return k;
    return REQUEST_POOL_NONE;
}

static unsigned class_max(int k) { return k == 0 ? REQUEST_POOL_SMALL_MAX : REQUEST_POOL_LARGE_MAX; }

void *request_pool_get(struct request_pool *p, size_t size, int *cls)
{
    int k = class_of(size);
    *cls = REQUEST_POOL_NONE;
    if (k == REQUEST_POOL_NONE)
        return arpc_malloc(size);
    struct request_pool_class *c = &p->rp_class[k];
    if (c->pc_free == NULL)
        c->pc_free = arpc_stack_take_fifo(&c->pc_returned); /* every block given back so far */
    ck_stack_entry_t *e = c->pc_free;
    if (e != NULL) {
        c->pc_free = e->next;
        *cls = k;
        return e;
    }
    if (c->pc_made >= class_max(k))
        return arpc_malloc(size); /* a burst: freed when it is done */
    e = arpc_malloc(request_pool_block(k));
    if (e != NULL) {
        c->pc_made++;
        *cls = k;
    }
    return e;
}

void request_pool_put(struct request_pool *p, void *block, int cls)
{
    if (cls == REQUEST_POOL_NONE)
        arpc_free(block);
    else
        arpc_stack_push(&p->rp_class[cls].pc_returned, block);
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
    for (int k = 0; k < REQUEST_POOL_CLASSES; k++) {
        struct request_pool_class *c = &p->rp_class[k];
        free_list(c->pc_free);
        free_list(arpc_stack_take_fifo(&c->pc_returned));
        c->pc_free = NULL;
        c->pc_made = 0;
    }
}

unsigned request_pool_held(struct request_pool *p, int k)
{
    struct request_pool_class *c = &p->rp_class[k];
    ck_stack_entry_t *taken = arpc_stack_take_fifo(&c->pc_returned);
    unsigned n = 0;
    ck_stack_entry_t **tail = &c->pc_free;
    while (*tail != NULL) {
        tail = &(*tail)->next;
        n++;
    }
    *tail = taken; /* the loop's list goes on with what was given back */
    for (; taken != NULL; taken = taken->next)
        n++;
    return n;
}
