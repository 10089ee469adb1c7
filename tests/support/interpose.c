/* The real function behind a test's interposed one (support/interpose.h). */
#define _GNU_SOURCE
#include "support/interpose.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

void *interpose_next(const char *name, _Atomic(void *) *cache)
{
    void *fn = atomic_load_explicit(cache, memory_order_acquire);
    if (fn == NULL) {
        fn = dlsym(RTLD_NEXT, name);
        if (fn == NULL) {
            fprintf(stderr, "interpose: no %s after this program's own\n", name);
            abort();
        }
        atomic_store_explicit(cache, fn, memory_order_release);
    }
    return fn;
}
