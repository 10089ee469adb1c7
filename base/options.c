/* Copying a caller's options struct whatever size its headers gave it (base/options.h). */
#include "base/options.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "arpc/common.h"
#include "arpc/error.h"
#include "base/log.h"

int arpc_options_copy_sized(void *copy, size_t lib_size, const void *opts, size_t caller_size)
{
    memset(copy, 0, lib_size);
    if (opts == NULL)
        return ARPC_OK;
    memcpy(copy, opts, caller_size < lib_size ? caller_size : lib_size);
    /* A field appended after this library was built: only its zero (the default) is honoured.
     * Said, since the caller cannot tell otherwise (its headers have the field); once a
     * process, since call options come with every call (a review: a line per call). */
    static atomic_bool said;
    for (size_t i = lib_size; i < caller_size; i++)
        if (((const unsigned char *)opts)[i] != 0) {
            if (!atomic_exchange(&said, true))
                arpc_log(ARPC_LOG_ERROR, "%s (an options struct of %zu bytes sets byte %zu; this library's has %zu; "
                         "said once)", ARPC_OPTIONS_NEWER_WHY, caller_size, i, lib_size);
            return ARPC_EINVAL;
        }
    return ARPC_OK;
}

int arpc_options_max_frame_check(uint32_t max_frame, char *why, size_t whylen)
{
    if (max_frame == 0 || max_frame >= ARPC_MAX_FRAME_MIN)
        return ARPC_OK;
    snprintf(why, whylen, "max_frame %u: at least %u (ARPC_MAX_FRAME_MIN), or 0 for the default", max_frame,
             ARPC_MAX_FRAME_MIN);
    return ARPC_EINVAL;
}
