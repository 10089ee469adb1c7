/*
 * arpc/version.h: the version of the headers, and of the library at run time.
 *
 * The numbers here are checked against project(arpc VERSION ...) when CMake configures, so the
 * two cannot drift. ARPC_VERSION_NUMBER is what the headers were; arpc_version() is what the
 * library linked at run time is: a program can compare them (docs/ABI.md says what must match).
 */
#ifndef ARPC_VERSION_H
#define ARPC_VERSION_H

#include "arpc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ARPC_VERSION_MAJOR 0
#define ARPC_VERSION_MINOR 2
#define ARPC_VERSION_PATCH 0
#define ARPC_VERSION_STRING "0.2.0"

/* major * 10000 + minor * 100 + patch: ordered, so versions compare with < and >. */
#define ARPC_VERSION_NUMBER (ARPC_VERSION_MAJOR * 10000 + ARPC_VERSION_MINOR * 100 + ARPC_VERSION_PATCH)

/* The library's ARPC_VERSION_NUMBER, as it was built. Thread-safe, any time, even before
 * any other arpc call. While the major is 0, a program built against headers of another
 * minor must not run against this library (the soname already prevents it). */
ARPC_API unsigned arpc_version(void);

/* The library's ARPC_VERSION_STRING, as it was built (a static string). */
ARPC_API const char *arpc_version_string(void);

#ifdef __cplusplus
}
#endif

#endif
