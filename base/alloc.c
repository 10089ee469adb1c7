/*
 * The allocator hook. A process-wide setting, like sqlite3_config(): set once at start-up,
 * read without synchronisation afterwards (documented in arpc/alloc.h).
 */
#include "base/alloc.h"

#include <stdlib.h>
#include <string.h>

static void *default_malloc(size_t size, void *ctx) { (void)ctx; return malloc(size); }
static void *default_realloc(void *p, size_t size, void *ctx) { (void)ctx; return realloc(p, size); }
static void default_free(void *p, void *ctx) { (void)ctx; free(p); }

static arpc_allocator current = {default_malloc, default_realloc, default_free, NULL};

void arpc_set_allocator(const arpc_allocator *allocator)
{
    if (allocator == NULL) {
        current = (arpc_allocator){default_malloc, default_realloc, default_free, NULL};
        return;
    }
    current = *allocator;
}

void *arpc_malloc(size_t size) { return current.malloc_fn(size == 0 ? 1 : size, current.ctx); }

void *arpc_calloc(size_t n, size_t size)
{
    if (size != 0 && n > (size_t)-1 / size)
        return NULL;
    void *p = arpc_malloc(n * size);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

void *arpc_realloc(void *ptr, size_t size) { return current.realloc_fn(ptr, size == 0 ? 1 : size, current.ctx); }

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
