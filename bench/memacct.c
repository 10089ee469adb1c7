/*
 * The tagging allocator. Each block carries a 16-byte header (keeps malloc's 16-byte
 * alignment) holding the requested size and whether a client-side thread allocated it, so a
 * free on any thread subtracts exactly what that block added. The counter is one atomic,
 * touched only for client-side blocks: in the steady state of a benchmark that is one
 * client loop thread, so it is not contended.
 */
#include "memacct.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "arpc/alloc.h"

struct tag {
    size_t t_size;
    size_t t_client;
};
_Static_assert(sizeof(struct tag) == 16, "the tag must keep malloc's alignment");

/* Process-wide by nature: the allocator hook itself is process-wide. */
static _Atomic int64_t client_bytes;
static _Thread_local bool thread_is_client;

/* The chunk glibc malloc (64-bit) hands out for a request: header word + data, rounded to
 * 16, at least 32 bytes. */
static int64_t chunk_size(size_t n)
{
    size_t c = (n + 8 + 15) & ~(size_t)15;
    return (int64_t)(c < 32 ? 32 : c);
}

static void account(struct tag *t, int sign)
{
    if (t->t_client)
        atomic_fetch_add_explicit(&client_bytes, sign * chunk_size(t->t_size), memory_order_relaxed);
}

static void *tag_malloc(size_t size, void *ctx)
{
    (void)ctx;
    struct tag *t = malloc(sizeof(*t) + size);
    if (t == NULL)
        return NULL;
    t->t_size = size;
    t->t_client = thread_is_client;
    account(t, 1);
    return t + 1;
}

static void tag_free(void *p, void *ctx)
{
    (void)ctx;
    if (p == NULL)
        return;
    struct tag *t = (struct tag *)p - 1;
    account(t, -1);
    free(t);
}

/* The block keeps the side of whoever allocated it first. */
static void *tag_realloc(void *p, size_t size, void *ctx)
{
    if (p == NULL)
        return tag_malloc(size, ctx);
    struct tag *t = (struct tag *)p - 1;
    size_t old = t->t_size;
    struct tag *n = realloc(t, sizeof(*t) + size);
    if (n == NULL)
        return NULL;
    if (n->t_client)
        atomic_fetch_add_explicit(&client_bytes, chunk_size(size) - chunk_size(old),
                                  memory_order_relaxed);
    n->t_size = size;
    return n + 1;
}

void bench_memacct_install(void)
{
    static const arpc_allocator hook = {tag_malloc, tag_realloc, tag_free, NULL};
    arpc_set_allocator(&hook);
}

void bench_memacct_tag_client(void) { thread_is_client = true; }

int64_t bench_memacct_client_bytes(void)
{
    return atomic_load_explicit(&client_bytes, memory_order_relaxed);
}

int64_t bench_memacct_process_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (int64_t)(mi.uordblks + mi.hblkhd);
}
