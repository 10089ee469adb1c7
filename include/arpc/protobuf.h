/*
 * arpc/protobuf.h: typed stubs from protobuf-c.
 *
 * A .proto service compiled by protoc-c (cmake: arpc_protobuf_generate, cmake/ArpcProtobuf.cmake)
 * is served and called over arpc with its generated functions. Each method travels as an
 * ordinary arpc call named "package.Service.Method" (the service descriptor's full name, a dot,
 * the method's name: "kv.KV.Put"), its request and reply the packed messages; so any arpc
 * client can call it with bytes (arpc_call), and arpc-call can too.
 *
 * Only in a library built with ARPC_WITH_PROTOBUF (libprotobuf-c-dev, protobuf-c-compiler);
 * find_package(arpc) sets arpc_WITH_PROTOBUF then. Messages arpc unpacks are allocated through
 * arpc's allocator hook (arpc/alloc.h); free one handed to you with arpc_protobuf_free.
 */
#ifndef ARPC_PROTOBUF_H
#define ARPC_PROTOBUF_H

#include <protobuf-c/protobuf-c.h>

#include "arpc/client.h"
#include "arpc/future.h"
#include "arpc/server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The deepest nesting of messages arpc unpacks, the outer message counting one (protobuf's
 * C++ default). protobuf-c unpacks a message field by recursion, without a limit of its own:
 * a recursive type nested a few million deep overflows the unpacking thread's stack, so
 * deeper bytes are refused before protobuf-c sees them (a request: the error below; a reply:
 * ARPC_EDECODE). */
#define ARPC_PROTOBUF_MAX_DEPTH 100

/* ---- server ---- */

/* Registers every method of service (a generated service, e.g. KV__KV__INIT(prefix_)) under
 * "package.Service.Method", run as mopts says (may be NULL; its ctx_free must be NULL: arpc
 * frees its own per-method contexts when the server is freed). service is borrowed: it must
 * outlive the server (arpc never calls its destroy). A method a generated service leaves NULL
 * (not written yet: the generated INIT macro names every method, so `#define prefix_method
 * NULL` before it) is not registered: its calls are answered ARPC_ENOMETHOD, as for any
 * method the server does not serve (protobuf-c's invoke would have jumped to NULL).
 *
 * Each call: the request is unpacked as the method's input message (a request that does not
 * unpack is answered with an error, ARPC_EHANDLER at the caller, "kv.KV.Put: the request is
 * not a valid kv.PutRequest", or "kv.KV.Put: the request nests messages more than 100 deep"
 * past ARPC_PROTOBUF_MAX_DEPTH, or "...: the request would take more than 16 x its size of
 * memory to unpack" (e.g. a repeated field of empty messages: protobuf-c allocates a block per
 * element, 28 bytes per byte), and the method is not run; a reply so is ARPC_EDECODE; a
 * server without the memory to unpack it refuses it ARPC_EREJECTED, "did not run"); then service->invoke runs the
 * method with that input and a closure. The method calls the closure exactly once, before
 * returning or later from any thread, with its output message (borrowed: packed before the
 * closure returns) or NULL for a failure (ARPC_EHANDLER "kv.KV.Put: the method failed"; or
 * arpc_protobuf_fail with the method's own reason, below); an output the server has no memory
 * to pack answers the call ARPC_EABANDONED, "may have run" (the method ran). The
 * input stays valid until the closure is called and is freed by it. closure_data is the
 * call's handle (arpc/common.h, "API misuse"), dead once the closure or arpc_protobuf_fail
 * ran: the closure called again, or arpc_protobuf_fail or arpc_protobuf_request after it, is
 * reported ("arpc_protobuf_fail on 0x...: not a live protobuf call ...", or "a protobuf
 * method's closure on 0x...") and aborts in builds without NDEBUG; with NDEBUG it does
 * nothing (arpc_protobuf_request returns NULL). Caught while the call's freed record is not
 * reused (always under ASan); not once the allocator gave its block to a later call's record,
 * which the next call on the same thread may well get; nor two closures racing on two
 * threads. A method that never calls
 * its closure keeps its request, as a handler that never replies (arpc/server.h). Every
 * method is one request and one reply: protobuf-c's descriptors do not mark `stream` methods,
 * so such a method is served as a plain call (one reply), not as a stream; mopts applies to
 * every method of the service (register a method alone with arpc_server_register for others):
 * mopts->read_only only for a service whose every method is a read.
 *
 * Before the first arpc_server_listen, as arpc_server_register. Errors: ARPC_EINVAL (NULL
 * arguments, a name over 255 bytes, mopts->ctx_free set, bad options), ARPC_EBUSY (a name
 * taken: checked for every method first, so nothing is registered; or already listening),
 * ARPC_ENOMEM (the methods registered before it stay registered and are served). */
ARPC_API int arpc_server_register_protobuf_v(arpc_server *s, ProtobufCService *service,
                                             const arpc_method_options *mopts, size_t mopts_size);
#define arpc_server_register_protobuf(s, service, ...) \
    arpc_server_register_protobuf_v((s), (service), (__VA_ARGS__), sizeof(arpc_method_options))

/* From a method of a registered service, with the closure_data it was given: the call's
 * arpc_request, for what arpc/server.h offers about it (arpc_request_peer and its identity
 * for per-method authorisation, arpc_request_budget_ms, arpc_request_on_cancel, ...). Valid
 * until the closure (or arpc_protobuf_fail) is called; any thread. NULL for NULL; after the
 * closure, misuse (above: an abort in debug builds, NULL with NDEBUG). */
ARPC_API arpc_request *arpc_protobuf_request(void *closure_data);

/* Instead of the closure, once: the method failed, and msg (NULL: "the method failed") says
 * why. The caller gets ARPC_EHANDLER with "package.Service.Method: msg" (its text cut at 1 KiB,
 * as the error frame's limit may cut it further), where closure(NULL) gives "...: the method
 * failed". Any thread; the input is freed, as by the closure. After the closure (or a first
 * arpc_protobuf_fail), misuse (above: an abort in debug builds, nothing with NDEBUG). */
ARPC_API void arpc_protobuf_fail(void *closure_data, const char *msg);

/* ---- client: a generated service's functions over arpc ---- */

/* A ProtobufCService for d whose generated calls (kv__kv__put(svc, &req, closure, data)) go
 * to c's server, each with deadline_ms (0: the client's default; ARPC_FOREVER: none). The
 * closure is called exactly once per call, on c's loop thread (it must not block, nor call
 * arpc_call; the async calls are fine), with the reply message (valid during the closure
 * only) or NULL on any error; a call that ends before it is sent (out of memory, or refused
 * at once: an input of the wrong type, a method index out of range) closes on the
 * calling thread before the stub returns. The error code: arpc_protobuf_client_last_error.
 * c must outlive the service. Returns NULL for NULL arguments or out of memory. */
ARPC_API ProtobufCService *arpc_protobuf_client_service(arpc_client *c, const ProtobufCServiceDescriptor *d,
                                                        int64_t deadline_ms);
/* (A stub called with a NULL closure sends nothing: its outcome would have nowhere to go; an
 * ERROR line names the method and arpc_protobuf_client_last_error says ARPC_EINVAL.) */

/* The outcome of the call whose closure ran last on svc: ARPC_OK, an arpc error
 * (ARPC_EHANDLER: the method failed or refused the request; ARPC_ENOMETHOD: the server does
 * not serve it; ARPC_EDECODE: the reply did not unpack as the output message; ...), ARPC_EINVAL
 * for a svc not made by arpc_protobuf_client_service. Read it inside a closure called with
 * NULL: there it is that call's when every call on svc is made from one thread (the loop's
 * closures run one at a time, and a closure on the calling thread runs before its stub
 * returns); with callers on several threads a call refused at once closes on its caller's
 * thread, and another call's closure may overwrite the code meanwhile. For the server's
 * error text or concurrent callers, use arpc_protobuf_call_async. Any thread. */
ARPC_API int arpc_protobuf_client_last_error(const ProtobufCService *svc);

/* Releases svc (also protobuf_c_service_destroy(svc)): calls still in flight finish and run
 * their closures (they hold the service until then). NULL is a no-op. */
ARPC_API void arpc_protobuf_client_service_destroy(ProtobufCService *svc);

/* ---- client: futures ---- */

/* Calls method method_index of d (d->methods[i], the method's place in its .proto: by name,
 * protobuf_c_service_descriptor_get_method_by_name(d, "Get") - d->methods) with input, a
 * message of that method's input type; returns the call's future as arpc_call_async does (every outcome through it; NULL
 * only when memory for the future itself cannot be had). A bad argument (NULL, an index out
 * of range, input of another type) completes the future with ARPC_EINVAL, its data saying
 * which (NUL-terminated). Any thread. deadline_ms as arpc_call's (0: the client's default;
 * negative: none; neither means "already passed": check a budget that may be spent before
 * the call). */
/* (For a completion queue, attach the future: arpc_cq_attach, arpc/cq.h.) */
ARPC_API arpc_future *arpc_protobuf_call_async(arpc_client *c, const ProtobufCServiceDescriptor *d,
                                               unsigned method_index, const ProtobufCMessage *input,
                                               int64_t deadline_ms);

/* The same with per-call options (arpc/client.h's arpc_call_options; o may be NULL: the
 * client's defaults; copied): a deadline as a point in time (deadline_at_ns, e.g. a handler's
 * arpc_request_deadline_ns passed on: once passed, the call ends ARPC_EUNREACHABLE unsent),
 * the call's semantics. An option the call refuses completes the future with ARPC_EINVAL, as
 * arpc_call_async_opts does. */
ARPC_API arpc_future *arpc_protobuf_call_async_opts_v(arpc_client *c, const ProtobufCServiceDescriptor *d,
                                                      unsigned method_index, const ProtobufCMessage *input,
                                                      const arpc_call_options *o, size_t o_size);
#define arpc_protobuf_call_async_opts(c, d, method_index, input, o) \
    arpc_protobuf_call_async_opts_v((c), (d), (method_index), (input), (o), sizeof(arpc_call_options))

/* Waits for f and unpacks its reply as output (d->methods[i].output) into *out, which the
 * caller frees with arpc_protobuf_free; f stays the caller's to release. Returns ARPC_OK, the
 * call's error (*out NULL; the server's text, for ARPC_EHANDLER, is arpc_future_data),
 * ARPC_EDECODE (the reply is not such a message; the call itself succeeded, so
 * arpc_future_poll(f) is ARPC_OK and arpc_future_data is the reply's bytes, not text: do not
 * print it; it is the server's words only when arpc_future_poll(f) is an error), ARPC_ENOMEM
 * (unpacking it ran out of memory), ARPC_EINVAL, ARPC_EBUSY (f still pending, on the loop
 * thread that must complete it: arpc_future_wait). Blocks while f is pending (inside its own
 * then-callback it is done).
 * The reply carries no type on the wire: output must be the type the call's method returns
 * (bytes of another message type may unpack as this one without an error). */
ARPC_API int arpc_protobuf_unpack_reply(arpc_future *f, const ProtobufCMessageDescriptor *output,
                                        ProtobufCMessage **out);

/* Frees a message unpacked by arpc (arpc_protobuf_unpack_reply). NULL is a no-op. */
ARPC_API void arpc_protobuf_free(ProtobufCMessage *msg);

#ifdef __cplusplus
}
#endif

#endif
