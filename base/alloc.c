/*
 * The allocator hook. A process-wide setting, like sqlite3_config(): set once at start-up,
 * read without synchronisation afterwards (documented in arpc/alloc.h). Set later, blocks
 * made by one allocator would reach the other's free: a heap corrupted in silence (a new
 * user's trial), so the first allocation is noted and a later set refused as misuse.
 */
#include "base/alloc.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

static void *default_malloc(size_t size, void *ctx) { (void)ctx; return malloc(size); }
static void *default_realloc(void *p, size_t size, void *ctx) { (void)ctx; return realloc(p, size); }
static void default_free(void *p, void *ctx) { (void)ctx; free(p); }

static arpc_allocator current = {default_malloc, default_realloc, default_free, NULL};

/* arpc has made a block (relaxed: a misuse check, not a synchronisation); never cleared, since
 * nothing counts the blocks still live. */
static atomic_bool allocated;

static inline void note_allocation(void)
{
    if (!atomic_load_explicit(&allocated, memory_order_relaxed)) /* a load per block, stored once */
        atomic_store_explicit(&allocated, true, memory_order_relaxed);
}

static bool allocator_is_current(const arpc_allocator *a)
{
    if (a == NULL)
        return current.malloc_fn == default_malloc && current.realloc_fn == default_realloc &&
               current.free_fn == default_free;
    return a->malloc_fn == current.malloc_fn && a->realloc_fn == current.realloc_fn && a->free_fn == current.free_fn &&
           a->ctx == current.ctx;
}

void arpc_set_allocator(const arpc_allocator *allocator)
{
    /* The one in use again changes nothing: allowed at any time (a review: a restore of the
     * default after use aborted, where nothing would have changed). */
    if (atomic_load_explicit(&allocated, memory_order_relaxed) && !allocator_is_current(allocator)) {
        arpc_log(ARPC_LOG_ERROR, "arpc_set_allocator after arpc allocated memory: blocks made by the allocator in "
                 "use would reach the other's free; call it before any other arpc function (arpc/alloc.h)");
#ifndef NDEBUG
        abort();
#endif
        return; /* the allocator in use stays */
    }
    arpc_alloc_replace(allocator);
}

void arpc_alloc_replace(const arpc_allocator *allocator)
{
    if (allocator == NULL) {
        current = (arpc_allocator){default_malloc, default_realloc, default_free, NULL};
        return;
    }
    current = *allocator;
}

void *arpc_malloc(size_t size)
{
    note_allocation();
    return current.malloc_fn(size == 0 ? 1 : size, current.ctx);
}

void *arpc_calloc(size_t n, size_t size)
{
    if (size != 0 && n > (size_t)-1 / size)
        return NULL;
    void *p = arpc_malloc(n * size);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

void *arpc_realloc(void *ptr, size_t size)
{
    note_allocation();
    return current.realloc_fn(ptr, size == 0 ? 1 : size, current.ctx);
}

void arpc_free(void *ptr)
{
    if (ptr != NULL)
        current.free_fn(ptr, current.ctx);
}

char *arpc_text_copy(const char *text, size_t len)
{
    char *copy = arpc_malloc(len + 1);
    if (copy != NULL) {
        if (len > 0)
            memcpy(copy, text, len);
        copy[len] = '\0';
    }
    return copy;
}

char *arpc_text_dup(const char *text, size_t *len)
{
    size_t n = text != NULL ? strlen(text) : 0;
    char *copy = text != NULL ? arpc_text_copy(text, n) : NULL;
    *len = copy != NULL ? n : 0;
    return copy;
}
