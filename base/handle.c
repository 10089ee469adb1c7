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

bool arpc_handle_in_use(const void *h, unsigned users, const char *route, const char *fn)
{
    if (users == 0)
        return false;
    arpc_log(ARPC_LOG_ERROR, "%s on %p: it still runs the methods of %u server(s) (%s): destroy the server first; not destroyed",
             fn, h, users, route);
#ifndef NDEBUG
    abort();
#endif
    return true;
}

bool arpc_handle_kill(void *h, uint32_t want, const char *kind, const char *fn)
{
    return arpc_handle_kill_to(h, want, ARPC_MAGIC_DEAD, kind, fn);
}

bool arpc_handle_kill_to(void *h, uint32_t want, uint32_t to, const char *kind, const char *fn)
{
    if (h == NULL)
        return false;
    /* A CAS, not an exchange: never write into what is not ours. seq_cst: a close kills the
     * handle, then loads its count of callers on their way in, and each caller counts itself,
     * then loads the magic (arpc_handle_enter, base/handle.h): Dekker's pattern, which needs
     * both stores ordered before both loads. */
    uint32_t live = want;
    if (ARPC_HANDLE_FREED(h) ||
        !atomic_compare_exchange_strong_explicit((arpc_magic *)h, &live, to, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return arpc_handle_misuse(h, kind, fn);
    return true;
}
