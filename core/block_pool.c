/* Blocks kept for reuse by the server's per-call objects (core/block_pool.h). */
#include "core/block_pool.h"

#include "base/alloc.h"
#include "base/tsan.h"

/* The smallest class whose blocks hold size bytes, or BLOCK_POOL_NONE. */
static int class_of(size_t size)
{
    for (int k = 0; k < BLOCK_POOL_CLASSES; k++)
        if (size <= block_pool_block(k))
            return k;
    return BLOCK_POOL_NONE;
}

static unsigned class_max(int k) { return k == 0 ? BLOCK_POOL_SMALL_MAX : BLOCK_POOL_LARGE_MAX; }

#ifdef CK_F_STACK_POP_MPMC

static ck_stack_entry_t *class_pop(struct block_pool_class *c)
{
    /* The pop reads the head block's link, which the block's new owner may be writing if
     * another taker got it first; that read only feeds a CAS that then fails. */
    ARPC_TSAN_IGNORE_READS_BEGIN();
    ck_stack_entry_t *e = ck_stack_pop_mpmc(&c->pc_free);
    ARPC_TSAN_IGNORE_READS_END();
    if (e != NULL)
        ARPC_TSAN_ACQUIRE(c);
    return e;
}

static void class_push(struct block_pool_class *c, void *block)
{
    ARPC_TSAN_RELEASE(c);
    ARPC_TSAN_IGNORE_WRITES_BEGIN();
    ck_stack_push_mpmc(&c->pc_free, block);
    ARPC_TSAN_IGNORE_WRITES_END();
}

#else /* no double-width CAS on this machine: nothing is kept */

static ck_stack_entry_t *class_pop(struct block_pool_class *c)
{
    (void)c;
    return NULL;
}

static void class_push(struct block_pool_class *c, void *block)
{
    (void)c;
    arpc_free(block);
}

#endif

void *block_pool_get(struct block_pool *p, size_t size, int *cls)
{
    int k = class_of(size);
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
    if (atomic_fetch_add_explicit(&c->pc_made, 1, memory_order_relaxed) >= class_max(k)) {
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

void block_pool_fini(struct block_pool *p)
{
    for (int k = 0; k < BLOCK_POOL_CLASSES; k++) {
        struct block_pool_class *c = &p->bp_class[k];
        ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&c->pc_free);
        ARPC_TSAN_ACQUIRE(c);
        while (e != NULL) {
            ck_stack_entry_t *next = e->next;
            arpc_free(e);
            e = next;
        }
        atomic_store(&c->pc_made, 0);
    }
}

unsigned block_pool_held(struct block_pool *p, int k)
{
    struct block_pool_class *c = &p->bp_class[k];
    ck_stack_entry_t *e = ck_stack_batch_pop_upmc(&c->pc_free);
    ARPC_TSAN_ACQUIRE(c);
    unsigned n = 0;
    while (e != NULL) {
        ck_stack_entry_t *next = e->next;
        class_push(c, e);
        n++;
        e = next;
    }
    return n;
}

unsigned block_pool_made(struct block_pool *p, int k) { return atomic_load(&p->bp_class[k].pc_made); }
