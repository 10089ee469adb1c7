/*
 * arpc/alloc.h: the allocator hook.
 *
 * All memory arpc allocates goes through these hooks (protobuf-c's unpacking too), so a test
 * can make any allocation fail and check that the failure reaches the caller as ARPC_ENOMEM
 * with nothing leaked. The libraries arpc uses allocate with their own (malloc): libev's loop
 * and watchers' tables, jansson's parsed JSON, OpenSSL's contexts and connections.
 * arpc_set_allocator() must be called before any other arpc function (it is not synchronised
 * with allocations already under way); passing NULL means malloc/realloc/free. Changing the
 * allocator after arpc allocated anything is misuse (blocks made by one allocator would reach
 * the other's free; arpc counts no live blocks, so it cannot tell that none is left): an
 * ERROR line, then abort() in builds without NDEBUG; with NDEBUG the allocator in use stays.
 * Setting the allocator already in use (the same functions and ctx; NULL while none was set)
 * changes nothing and is allowed at any time. Blocks must be aligned as malloc's are (alignof(max_align_t)): some
 * hold 16-byte atomic words. One block may outlive every arpc object: a client's name lookup
 * still in the resolver when the client closed (arpc_client_options.re_resolve_ms) frees its
 * record, through free_fn, when the resolver returns; so the hooks must stay callable, and a
 * count of live blocks reaches 0 only once such lookups are over.
 * The hooks run on any of arpc's threads, several at once, and must not call back into arpc
 * (arpc_malloc from malloc_fn recurses until the stack overflows): use the C library's
 * allocator, or one of your own, inside them.
 */
#ifndef ARPC_ALLOC_H
#define ARPC_ALLOC_H

#include "arpc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_allocator {
    void *(*malloc_fn)(size_t size, void *ctx);
    void *(*realloc_fn)(void *ptr, size_t size, void *ctx);
    void (*free_fn)(void *ptr, void *ctx);
    void *ctx;
} arpc_allocator;

ARPC_API void arpc_set_allocator(const arpc_allocator *allocator);

/* A block of size bytes from arpc's allocator (the hook's malloc_fn, or malloc without one),
 * for memory handed to arpc to own: the data of arpc_future_complete. Free a block arpc
 * handed you, or one of these not handed over, with arpc_free (arpc/common.h). NULL without
 * memory (size 0 is taken as 1). Any thread. */
ARPC_API void *arpc_malloc(size_t size);

#ifdef __cplusplus
}
#endif

#endif
