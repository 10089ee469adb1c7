/* Internal allocation entry points: every arpc allocation goes through the hook (arpc/alloc.h). */
#ifndef ARPC_CORE_ALLOC_H
#define ARPC_CORE_ALLOC_H

#include <stddef.h>

#include "arpc/alloc.h"

void *arpc_calloc(size_t n, size_t size);
void *arpc_realloc(void *ptr, size_t size);
/* A copy of text[0..len) with a NUL after it (not counted in len), for a message a caller may
 * print with %s: a future's data after an error. NULL without memory. */
char *arpc_text_copy(const char *text, size_t len);
/* A copy of the NUL-terminated text (NULL: none), its length in *len: 0 for none, or
 * without memory (NULL then). For a future's optional words: without memory, the code alone. */
char *arpc_text_dup(const char *text, size_t *len);
/* arpc_malloc() and arpc_free() are public: declared in arpc/alloc.h and arpc/common.h. */

/* arpc_set_allocator without its check: for tests and benchmarks that swap allocators whose
 * blocks are interchangeable (each wraps malloc), after arpc has allocated. */
void arpc_alloc_replace(const arpc_allocator *allocator);

#endif
