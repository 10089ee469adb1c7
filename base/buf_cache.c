/*
 * Design notes.
 *
 * A held block is its own record: its first word holds its capacity while it waits in a
 * slot (a block is at least ARPC_BUF_CACHE_MIN bytes and nobody else looks at it), so a slot
 * is one atomic pointer. Whoever exchanges a slot's pointer for NULL owns the block: there
 * is no ABA to fear, as nothing is read through a pointer before owning it.
 *
 * The byte bound is reserved (fetch_add) before a slot is sought and given back when none
 * is found, so the bound holds at every instant, not just eventually.
 *
 * Close against a racing put (a Dekker pair, all seq_cst): close stores bc_closed, then
 * empties every slot; put stores its block in a slot, then loads bc_closed and, if set,
 * empties that slot itself. In the total order either close's exchange of the slot comes
 * after put's store (close frees the block) or put's load comes after close's store (put
 * takes back whatever the slot holds and frees it). Exchange hands each block to one side.
 */
#include "base/buf_cache.h"

#include <stdint.h>

#include "base/alloc.h"
#include "base/memcheck.h"

void arpc_buf_cache_init(struct arpc_buf_cache *c, size_t max_bytes)
{
    for (unsigned i = 0; i < ARPC_BUF_CACHE_SLOTS; i++)
        atomic_init(&c->bc_slots[i], NULL);
    atomic_init(&c->bc_bytes, 0);
    atomic_init(&c->bc_closed, false);
    c->bc_max_bytes = max_bytes;
}

static size_t block_cap(const void *block) { return *(const size_t *)block; }

/* Frees a block taken out of a slot (its capacity was counted in bc_bytes). */
static void drop_held(struct arpc_buf_cache *c, void *block)
{
    atomic_fetch_sub(&c->bc_bytes, block_cap(block));
    arpc_free(block);
}

void arpc_buf_put(struct arpc_buf_cache *c, void *block, size_t cap)
{
    if (block == NULL)
        return;
    if (cap < ARPC_BUF_CACHE_MIN || atomic_load(&c->bc_closed)) {
        arpc_free(block);
        return;
    }
    if (atomic_fetch_add(&c->bc_bytes, cap) + cap > c->bc_max_bytes) {
        atomic_fetch_sub(&c->bc_bytes, cap);
        arpc_free(block);
        return;
    }
    *(size_t *)block = cap;
    for (unsigned i = 0; i < ARPC_BUF_CACHE_SLOTS; i++) {
        void *expected = NULL;
        if (atomic_load_explicit(&c->bc_slots[i], memory_order_relaxed) != NULL)
            continue; /* a cheap look first: a full slot's CAS is a locked operation for nothing */
        if (atomic_compare_exchange_strong(&c->bc_slots[i], &expected, block)) {
            if (atomic_load(&c->bc_closed)) {
                void *back = atomic_exchange(&c->bc_slots[i], NULL);
                if (back != NULL)
                    drop_held(c, back);
            }
            return;
        }
    }
    atomic_fetch_sub(&c->bc_bytes, cap); /* every slot taken */
    arpc_free(block);
}

void *arpc_buf_get(struct arpc_buf_cache *c, size_t size, size_t *cap)
{
    if (size >= ARPC_BUF_CACHE_MIN) {
        for (unsigned i = 0; i < ARPC_BUF_CACHE_SLOTS; i++) {
            if (atomic_load_explicit(&c->bc_slots[i], memory_order_relaxed) == NULL)
                continue; /* a cheap look first: most slots are empty when the cache is cold */
            void *block = atomic_exchange(&c->bc_slots[i], NULL);
            if (block == NULL)
                continue;
            size_t have = block_cap(block);
            if (have >= size && have / 2 <= size) {
                atomic_fetch_sub(&c->bc_bytes, have);
                *cap = have;
                ARPC_MEMCHECK_UNDEFINED(block, have); /* its last user's bytes are not the taker's */
                return block;
            }
            /* Not this one: back into a slot (it leaves the count meanwhile, then rejoins). */
            atomic_fetch_sub(&c->bc_bytes, have);
            arpc_buf_put(c, block, have);
        }
    }
    if (size >= ARPC_BUF_CACHE_MIN && size <= SIZE_MAX - ARPC_BUF_CACHE_GRANULE)
        size = (size + ARPC_BUF_CACHE_GRANULE - 1) & ~(size_t)(ARPC_BUF_CACHE_GRANULE - 1);
    void *block = arpc_malloc(size);
    if (block != NULL)
        *cap = size;
    return block;
}

/* Every slot is exchanged, none skipped on a plain look: close relies on these exchanges
 * being ordered after its store of bc_closed (the Dekker pair above). */
void arpc_buf_cache_trim(struct arpc_buf_cache *c)
{
    for (unsigned i = 0; i < ARPC_BUF_CACHE_SLOTS; i++) {
        void *block = atomic_exchange(&c->bc_slots[i], NULL);
        if (block != NULL)
            drop_held(c, block);
    }
}

void arpc_buf_cache_close(struct arpc_buf_cache *c)
{
    atomic_store(&c->bc_closed, true);
    arpc_buf_cache_trim(c);
}

unsigned arpc_buf_cache_held(struct arpc_buf_cache *c)
{
    unsigned n = 0;
    for (unsigned i = 0; i < ARPC_BUF_CACHE_SLOTS; i++)
        n += atomic_load(&c->bc_slots[i]) != NULL;
    return n;
}
