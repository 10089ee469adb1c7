/* Blocks on pages of their own that go unreadable when freed (support/guard_alloc.h). */
#include "base/alloc.h"
#include "support/guard_alloc.h"

#include <stdalign.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arpc/alloc.h"

/* Before each block: its size, padded so the block keeps malloc's alignment. */
struct guard_head {
    alignas(max_align_t) size_t gh_size;
};

static void (*guard_on_free)(void *block);

static size_t guard_span(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (sizeof(struct guard_head) + size + page - 1) / page * page;
}

static void *guard_malloc(size_t size, void *ctx)
{
    (void)ctx;
    void *p = mmap(NULL, guard_span(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    struct guard_head *h = p;
    h->gh_size = size;
    return h + 1;
}

static void guard_free(void *block, void *ctx)
{
    (void)ctx;
    if (block == NULL)
        return;
    struct guard_head *h = (struct guard_head *)block - 1;
    (void)mprotect(h, guard_span(h->gh_size), PROT_NONE); /* never unmapped: never reused */
    if (guard_on_free != NULL)
        guard_on_free(block);
}

static void *guard_realloc(void *block, size_t size, void *ctx)
{
    void *p = guard_malloc(size, ctx);
    if (p == NULL || block == NULL)
        return p;
    size_t old = ((struct guard_head *)block - 1)->gh_size;
    memcpy(p, block, old < size ? old : size);
    guard_free(block, ctx);
    return p;
}

void guard_alloc_install(void (*on_free)(void *block))
{
    static const arpc_allocator guard = {guard_malloc, guard_realloc, guard_free, NULL};
    guard_on_free = on_free;
    arpc_alloc_replace(&guard);
}
