/* Blocks kept for reuse by the server's per-call objects (core/block_pool.h). */
#include "core/block_pool.h"

#include "base/alloc.h"

int block_pool_class_of(size_t size)
{
    for (int k = 0; k < BLOCK_POOL_CLASSES; k++)
        if (size <= block_pool_block(k))
            return k;
    return BLOCK_POOL_NONE;
}

unsigned block_pool_class_max(int k)
{
    if (k == 0)
        return BLOCK_POOL_SMALL_MAX;
    unsigned by_bytes = (unsigned)(BLOCK_POOL_CLASS_BYTES / block_pool_block(k));
    return by_bytes > BLOCK_POOL_LARGE_MAX ? by_bytes : BLOCK_POOL_LARGE_MAX;
}

static void *class_pop(struct block_pool_class *c) { return arpc_node_pool_take(&c->pc_free); }

static void class_push(struct block_pool_class *c, void *block) { arpc_node_pool_put(&c->pc_free, block); }

void *block_pool_get(struct block_pool *p, size_t size, int *cls)
{
    int k = block_pool_class_of(size);
    *cls = BLOCK_POOL_NONE;
    if (k == BLOCK_POOL_NONE)
        return arpc_malloc(size);
    struct block_pool_class *c = &p->bp_class[k];
    void *b = class_pop(c);
    if (b != NULL) {
        *cls = k;
        return b;
    }
    /* A place among the class's blocks is taken before the block is made. */
    if (atomic_fetch_add_explicit(&c->pc_made, 1, memory_order_relaxed) >= block_pool_class_max(k)) {
        atomic_fetch_sub_explicit(&c->pc_made, 1, memory_order_relaxed);
        return arpc_malloc(size); /* a burst: freed when it is given back */
    }
    b = arpc_malloc(block_pool_block(k));
    if (b == NULL) {
        atomic_fetch_sub_explicit(&c->pc_made, 1, memory_order_relaxed);
        return NULL;
    }
    *cls = k;
    return b;
}

void block_pool_put(struct block_pool *p, void *block, int cls)
{
    if (cls == BLOCK_POOL_NONE)
        arpc_free(block);
    else
        class_push(&p->bp_class[cls], block);
}

void block_pool_init(struct block_pool *p)
{
    for (int k = 0; k < BLOCK_POOL_CLASSES; k++) {
        arpc_node_pool_init(&p->bp_class[k].pc_free, block_pool_block(k));
        atomic_init(&p->bp_class[k].pc_made, 0);
    }
}

void block_pool_fini(struct block_pool *p)
{
    for (int k = 0; k < BLOCK_POOL_CLASSES; k++) {
        arpc_node_pool_fini(&p->bp_class[k].pc_free);
        atomic_store(&p->bp_class[k].pc_made, 0);
    }
}

unsigned block_pool_held(struct block_pool *p, int k)
{
    struct block_pool_class *c = &p->bp_class[k];
    struct arpc_node_chain taken = {0};
    void *b;
    while ((b = class_pop(c)) != NULL)
        arpc_node_chain_add(&taken, b);
    unsigned n = taken.nc_n;
    arpc_node_pool_put_chain(&c->pc_free, &taken);
    return n;
}

unsigned block_pool_made(struct block_pool *p, int k) { return atomic_load(&p->bp_class[k].pc_made); }
