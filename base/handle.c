/*
 * Handle checks (base/handle.h): the slow paths. Under ASan the magic of a freed block is
 * not read (that would be the very use-after-free being caught): ASan is asked whether the
 * word is poisoned.
 */
#include "base/handle.h"

#include <stdlib.h>

#include "base/log.h"

bool arpc_handle_misuse(const void *h, const char *kind, const char *fn)
{
    arpc_log(ARPC_LOG_ERROR, "%s on %p: not a live %s (already closed/released, or never one)", fn, h, kind);
#ifndef NDEBUG
    abort();
#endif
    return false;
}

bool arpc_handle_kill(void *h, uint32_t want, const char *kind, const char *fn)
{
    if (h == NULL)
        return false;
    uint32_t live = want; /* a CAS, not an exchange: never write into what is not ours */
    if (ARPC_HANDLE_FREED(h) ||
        !atomic_compare_exchange_strong_explicit((arpc_magic *)h, &live, ARPC_MAGIC_DEAD, memory_order_relaxed,
                                                 memory_order_relaxed))
        return arpc_handle_misuse(h, kind, fn);
    return true;
}
