/*
 * arpc/common.h: the export macro and small shared conventions.
 *
 * Conventions used by every arpc header:
 *  - Functions returning int return 0 (ARPC_OK) or a positive arpc_error code.
 *  - Timeouts are int64_t milliseconds; ARPC_FOREVER (-1), or any negative value, waits
 *    without limit; 0 polls. Except a call's deadline_ms (arpc/client.h), where 0 means the
 *    client's default_deadline_ms (itself none unless set); a call's deadline as a time, one
 *    that may have passed already, is arpc_call_options.deadline_at_ns.
 *  - Each opaque object has a create/destroy (or retain/release) pair; the header of each
 *    object says which calls may be made from a callback and on which thread callbacks run.
 *
 * API misuse (clients, servers, futures, completion queues, actors, requests, protobuf calls):
 *  - A NULL handle is ARPC_EINVAL (0, NULL, false or nothing where a function returns no
 *    error code), and so is a NULL out pointer of a create, wrap or connect function. A
 *    future-returning call gets a future completed with ARPC_EINVAL.
 *  - A handle used after its close/destroy/last release (a second close included, even one
 *    racing the first), or a pointer to another kind of object, is a programming error: arpc
 *    logs "<function> on <address>: not a live <kind> ..." at ARPC_LOG_ERROR and calls
 *    abort() in builds without NDEBUG; with NDEBUG it returns ARPC_EINVAL (or does nothing).
 *  - How: each object carries a magic word, checked on entry and poisoned when its close,
 *    destroy or last release begins. That catches a dead handle while its memory is still
 *    arpc's or freed and not yet reused (under AddressSanitizer: always, as ASan is asked
 *    instead of the memory being read). Memory already reused for a new object of the same
 *    kind cannot be told apart: that remains undefined behaviour (a request's handle, which
 *    the server reuses for its next request, most of all: arpc/server.h, arpc_reply). A
 *    future's references are counted apart from those arpc holds for itself (a call, a
 *    queue), so a future released
 *    once too often is caught too while arpc still holds it (arpc/future.h).
 *    Loops and actor groups are checked the same way; a loop's magic stays live through its
 *    destroy's final drain (tasks still running then may submit, and get ARPC_ESHUTDOWN), and
 *    a second destroy during it is caught by a flag of its own.
 *  - arpc_request handles are checked the same way, but only until the server reuses the
 *    handle for its next request, which it does soon (arpc/server.h, arpc_reply). A protobuf
 *    method's closure_data likewise, from its closure on (arpc/protobuf.h).
 *  - After fork, the child's use of a client, JSON-RPC client, server, loop, actor, actor
 *    group or completion queue made in the parent, or its reply to a request of the parent's
 *    server, is refused with an ERROR line (ARPC_EINVAL, or nothing done): their threads are
 *    not in the child, and their sockets and eventfds are the parent's. A child makes its own
 *    (docs/SEMANTICS.md, "API misuse"). Futures are not checked: the child's wait on one of
 *    the parent's ends by its timeout alone.
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

/* The smallest max_frame a server or client takes (arpc_server_options.max_frame,
 * arpc_client_options.max_frame, arpc_jsonrpc_options.max_frame; a smaller one but 0 fails
 * create/connect with ARPC_EINVAL, said in errbuf). Both ends send frames of their own that the other must take whatever its
 * max_frame: a client's goodbye, an error reply naming an unknown method of up to 255 bytes
 * (~280 bytes of body), the server's refusals; under 1 KiB they could be refused (a server at 1
 * refused every goodbye; a client at 32 read "no such method" as ARPC_ETOOLARGE). */
#define ARPC_MAX_FRAME_MIN 1024u

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC), the clock of every arpc deadline. */
ARPC_API uint64_t arpc_now_ns(void);

/* Memory returned to the caller by arpc (e.g. arpc_future_take) is freed with arpc_free.
 * NULL does nothing. Any thread. */
ARPC_API void arpc_free(void *ptr);

#ifdef __cplusplus
}
#endif

#endif
