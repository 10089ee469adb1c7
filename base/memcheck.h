/*
 * Memcheck annotations for memory arpc keeps for reuse (node and block pools, buffer caches).
 *
 * A block taken again from a pool still holds what its last user wrote: to valgrind's memcheck
 * those bytes are defined, so a frame or record that sent some of them (another call's data)
 * would pass unseen. Marking a block undefined as it is handed out again makes memcheck judge
 * a reused block as it judges a fresh malloc'ed one.
 *
 * Built in with -DARPC_MEMCHECK=ON (needs valgrind/memcheck.h); elsewhere it compiles to nothing.
 */
#ifndef ARPC_BASE_MEMCHECK_H
#define ARPC_BASE_MEMCHECK_H

#if defined(ARPC_MEMCHECK)
#include <valgrind/memcheck.h>
#define ARPC_MEMCHECK_UNDEFINED(addr, len) ((void)VALGRIND_MAKE_MEM_UNDEFINED((addr), (len)))
#else
#define ARPC_MEMCHECK_UNDEFINED(addr, len) ((void)0)
#endif

#endif
