/*
 * arpc/common.h: the export macro and small shared conventions.
 *
 * Conventions used by every arpc header:
 *  - Functions returning int return 0 (ARPC_OK) or a positive arpc_error code.
 *  - Timeouts are int64_t milliseconds; ARPC_FOREVER (-1) waits without limit, 0 polls.
 *  - Each opaque object has a create/destroy (or retain/release) pair; the header of each
 *    object says which calls may be made from a callback and on which thread callbacks run.
 *  - Options structs (arpc_*_options) are zero-initialised by the caller, zero meaning the
 *    default; fields are only ever appended. A function taking one is a macro passing
 *    sizeof(the struct) as the caller's headers have it to its _v symbol (docs/ABI.md): an
 *    older program's missing fields read as zero, and a newer program's struct with a field
 *    this library lacks set non-zero gets ARPC_EINVAL. Such macros cannot be taken by address.
 */
#ifndef ARPC_COMMON_H
#define ARPC_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ARPC_BUILDING_SHARED)
#define ARPC_API __attribute__((visibility("default")))
#else
#define ARPC_API
#endif

#define ARPC_FOREVER ((int64_t)-1)

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC), the clock of every arpc deadline. */
ARPC_API uint64_t arpc_now_ns(void);

/* Memory returned to the caller by arpc (e.g. arpc_future_take) is freed with arpc_free. */
ARPC_API void arpc_free(void *ptr);

#ifdef __cplusplus
}
#endif

#endif
