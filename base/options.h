/*
 * The one copy of a caller's options struct (docs/ABI.md). Public functions taking an options
 * struct are macros that pass sizeof(the struct) as the caller's headers had it; the library
 * copies what the caller has into a struct of its own size:
 *  - an older caller (smaller struct): the fields it lacks stay zero, which means the default;
 *  - a newer caller (larger struct): accepted only if every byte past ours is zero, i.e. it
 *    asked for nothing this library does not know; otherwise ARPC_EINVAL.
 */
#ifndef ARPC_BASE_OPTIONS_H
#define ARPC_BASE_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "arpc/error.h"
#include "arpc/version.h"

/* What a refused newer caller is told (an ERROR line says it, with the sizes; create and
 * connect write it into errbuf too). */
#define ARPC_OPTIONS_NEWER_WHY                                                                          \
    "options set a field this library (arpc " ARPC_VERSION_STRING ") does not have: the program was " \
    "built against newer headers; rebuild it against this library's, or run it with the newer library "   \
    "(docs/ABI.md)"

int arpc_options_copy_sized(void *copy, size_t lib_size, const void *opts, size_t caller_size);

/* Zeroes copy (lib_size bytes), then copies min(caller_size, lib_size) bytes of opts into it.
 * opts may be NULL (copy stays zero). Returns ARPC_OK, or ARPC_EINVAL if a byte of opts
 * past lib_size is non-zero (copy is still zeroed and filled). Inline for the common case,
 * a caller built with this library's headers: a plain copy of a size the compiler knows,
 * where a call per arpc_call_async cost ~45 instructions. */
static inline int arpc_options_copy(void *copy, size_t lib_size, const void *opts, size_t caller_size)
{
    if (opts != NULL && caller_size == lib_size) {
        memcpy(copy, opts, lib_size);
        return ARPC_OK;
    }
    return arpc_options_copy_sized(copy, lib_size, opts, caller_size);
}

/* The one rule for every max_frame option (arpc_server_options, arpc_client_options,
 * arpc_jsonrpc_options): 0 (the default) or at least ARPC_MAX_FRAME_MIN (arpc/common.h).
 * ARPC_OK, or ARPC_EINVAL with why written into why[0..whylen) ("max_frame 32: at least 1024
 * (ARPC_MAX_FRAME_MIN), or 0 for the default"). */
int arpc_options_max_frame_check(uint32_t max_frame, char *why, size_t whylen);

#endif
