/* Internal allocation entry points: every arpc allocation goes through the hook (arpc/alloc.h). */
#ifndef ARPC_CORE_ALLOC_H
#define ARPC_CORE_ALLOC_H

#include <stddef.h>

#include "arpc/alloc.h"

void *arpc_malloc(size_t size);
void *arpc_calloc(size_t n, size_t size);
void *arpc_realloc(void *ptr, size_t size);
/* arpc_free() is public: declared in arpc/common.h. */

#endif
