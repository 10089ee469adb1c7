/*
 * arpc/jsonrpc.h: JSON-RPC 1.0 as Go's net/rpc/jsonrpc speaks it, both ways. Built when arpc
 * is built with jansson (CMake option ARPC_WITH_JSONRPC, on when libjansson-dev is found;
 * the arpc_internal target then defines ARPC_WITH_JSONRPC); without it these functions do not
 * exist, this header is not installed, and a server speaks arpc frames only. The wire is in docs/PROTOCOL.md ("JSON-RPC").
 *
 * ---- Serving: nothing to set up ----
 * Every arpc server listener also answers JSON-RPC: a connection whose first byte is '{' (or
 * '[' or JSON whitespace; an arpc frame starts with 'a') speaks JSON-RPC for its life. Go's
 * 1.0 has no batches: a '[' (a JSON-RPC 2.0 batch) is bad input, below. A request with no id
 * (or id null) is run and answered with id null, as Go's server does: JSON-RPC 1.0's
 * notifications get no such answer, so a 1.0 peer that sends them must read past it.
 * A request {"method":"Service.Method","params":[P],"id":ID} calls the method registered under
 * exactly that name (arpc_server_register), through the same dispatch as arpc calls (its
 * actor or group, flow control, the server's stop):
 *   - the handler's arpc_request_data() is the JSON text of P, params[0] (Go always sends one
 *     parameter), compact, as jansson writes it again (numbers keep their value, strings their
 *     characters; the bytes may differ from what was sent); "null" when params is missing,
 *     null or empty; a string may hold \u0000. jansson holds integers in int64: a request
 *     with an integer outside it (e.g. a uint64 above 2^63-1), a number beyond double's
 *     range, or a key holding \u0000, is answered with an error by its id (an integer id as
 *     it was sent) and the connection goes on; if the rest of it is not JSON, it is malformed.
 *     So is a request with a key twice in one object, at any depth (parsers disagree on which
 *     counts): answered "jsonrpc: request not taken: a key twice in one object (...)" by its
 *     id (null when "id" is the key twice), and nothing runs. arpc_request_client_id() is 0 (a JSON-RPC peer has no client id, so its
 *     calls are not numbered: no at-most-once, and JSON-RPC has no retries to deduplicate);
 *   - the bytes given to arpc_reply() must be one JSON value: they become "result" as they
 *     are. Anything else (empty, not JSON) is answered with an error instead (and logged);
 *   - arpc_reply_error(req, msg) becomes {"id":ID,"result":null,"error":"msg"}; but a msg
 *     that would read as one of the server's answers below ("ARPC_E...: ", "rpc: can't find
 *     ", "jsonrpc: request not taken: ") is sent "ARPC_EHANDLER: msg", so that a client can
 *     tell a handler's error (the call ran) from a refusal (it did not);
 *   - the built-in arpc.methods (arpc/server.h) answers a JSON array of the names (a name that
 *     is not UTF-8, which no JSON-RPC request can spell, as the log escapes it: "T.\\xff"),
 *     and arpc.stats its JSON object;
 *   - the server's own answers (e.g. at stop, a refusal, no memory) are errors naming the
 *     code: "ARPC_ESHUTDOWN: server shutting down" (before 2026-12-05, that one and "server
 *     out of memory" came without the name);
 *   - a name no method has gets Go's own texts (net/rpc/server.go): "rpc: can't find service
 *     S.M", "rpc: can't find method S.M" (S has other methods), "rpc: service/method request
 *     ill-formed: M" (no dot).
 * Responses follow Go's rules: "error" is a string or null, never an object; "result" is null
 * on error; "id" is the request's id (any JSON value, written back compactly; a missing id
 * is null). They leave as soon as they are ready, in any order (Go matches them by id).
 * Limits and bad input: a stream that is not JSON objects, an object that is not valid JSON,
 * or an end of stream inside an object, ends the input (nothing after it is read, as Go's
 * ServeCodec stops at input it cannot decode): the calls read before it are answered, then it
 * is answered once with {"id":null,"result":null,"error":"jsonrpc: ..."}, last, and the
 * connection is then closed. A handler that never replies holds that close until the
 * server's stop (JSON-RPC calls carry no deadline), or until the peer is found gone (its
 * hangup, as after a half-close: docs/SECURITY.md); a valid object
 * that is a bad request (params not an array, an unknown method) gets an error with its id and
 * the connection goes on. So does a request object longer than the server's JSON-RPC request
 * limit (arpc_server_options.jsonrpc_max_request: 1 MiB unless set, at most max_frame; the
 * server parses each request on its loop thread): it is dropped as it arrives (never
 * buffered whole) and answered "ARPC_ETOOLARGE: ..." by its id; and one holding so many values
 * for its size that parsing it would take more than 8 x that limit of memory (e.g. thousands
 * of empty objects: docs/PROTOCOL.md). A server with no_jsonrpc runs no JSON-RPC: a JSON
 * peer is answered once with {"id":null,"result":null,"error":"ARPC_EREJECTED: this server
 * takes arpc frames only, not JSON-RPC"} and the connection closed. A
 * JSON-RPC connection has no HELLO and no heartbeat; the idle, frame and connection-count
 * limits apply to it as to any. On a tls:// listener its peer is known as an arpc client's
 * is (arpc_request_peer_subject, arpc_request_peer): the server's checks (arpc/auth.h) run at
 * its first byte with no token, so a server requiring a token refuses it (answered once with
 * id null, "ARPC_EAUTH: " and the reason, then closed), and a callback may admit it by its certificate (docs/SECURITY.md).
 *
 * ---- Calling: arpc_jsonrpc_client ----
 * A client for a JSON-RPC 1.0 server such as Go's jsonrpc.ServeConn: one connection, calls
 * pipelined on it (many outstanding, matched by id on the client's loop thread), each ending
 * through an arpc_future (arpc/future.h). Outcomes (the future's status):
 *   ARPC_OK         the result's JSON text is the future's data (NUL-terminated; the length
 *                   does not count the NUL), written compactly by jansson; a result holding
 *                   an integer outside int64 (a Go uint64 above 2^63-1) comes as the server
 *                   wrote it, digit for digit
 *   ARPC_EHANDLER   the server answered an error of the handler's (the call ran): its text
 *                   is the data (NUL-terminated), "ARPC_EHANDLER: " left out
 *   ARPC_ENOMETHOD  the error is Go's "rpc: can't find service|method ..." or "rpc:
 *                   service/method request ill-formed: ...": the text is the data
 *   ARPC_E...       the error names an arpc error a server answers with, as arpc's server's
 *                   own answers do ("ARPC_ESHUTDOWN: server shutting down", "ARPC_EABANDONED:
 *                   ..."): that outcome, meaning what it means for an arpc call
 *                   (docs/SEMANTICS.md), with the words after the name as the data. The name
 *                   of a local condition ("ARPC_ENOMEM: ", "ARPC_EUNREACHABLE: ", which would
 *                   say "not sent" of a call that was) is a handler's text (ARPC_EHANDLER). "jsonrpc: request not taken: ..."
 *                   and "jsonrpc: params must be an array" (arpc's server did not take the
 *                   request) are ARPC_EREJECTED, the whole text the data. (Before 2026-12-05
 *                   all of these were ARPC_EHANDLER, as if the call had run.)
 *   ARPC_EAUTH, ARPC_EREJECTED (by id null) the server refused the connection before it read
 *                   a call: it requires a token (which JSON-RPC cannot send), or it takes arpc
 *                   frames only (no_jsonrpc, or built without JSON-RPC). None ran; every
 *                   call from then on ends so too; the data is "the server refused this
 *                   connection: " and the server's words
 *   ARPC_EABANDONED the result came, and this client had no memory to hand it over (the
 *                   call ran; no data). Before 2026-12-07, ARPC_ENOMEM, which says "not sent"
 *   ARPC_ETIMEDOUT  the deadline passed first (the call may still run); the data says so
 *   ARPC_EUNREACHABLE the deadline passed while the request still waited whole in the
 *                   client's output queue (the server was not reading): it was taken back,
 *                   never sent, so it did not run; the data says so. (Only among the 64
 *                   requests queued after the one being written and the 64 newest: one in
 *                   between ends ARPC_ETIMEDOUT, and is written later.)
 *   ARPC_ECONNLOST  the connection broke (or the server broke the protocol, e.g. a response
 *                   whose id is not a whole number or with a key twice in one object: logged) before
 *                   the answer: the call may have run. There is no reconnect: later calls
 *                   end ARPC_ECONNLOST at once, unsent; connect a new client. The data
 *                   (NUL-terminated) says which ("sent, then the connection was lost: ..."
 *                   or "not sent: ...", also for a request the connection lost before it
 *                   was written whole: it did not run) and how the connection was lost
 *   ARPC_EPROTO     the answer broke Go's rules for this call (error neither a string nor
 *                   null): the error's JSON is the data. But a JSON-RPC 2.0 error object
 *                   with a string "message" is that message, ARPC_ENOMETHOD for its code
 *                   -32601 (method not found), else ARPC_EHANDLER
 *   ARPC_EINVAL     params_json is not one JSON value, or method is NULL or not UTF-8, or
 *                   the client is NULL (a closed one is misuse: arpc/common.h): the data
 *                   says which (NUL-terminated), e.g.
 *                   "params_json is not one JSON value"
 *   ARPC_ENOMEM     no memory to make or send the request (not sent)
 *   ARPC_ETOOLARGE  the request is longer than max_frame (not sent)
 *   ARPC_ESHUTDOWN  the client was closed before the request was sent (or written whole)
 *   ARPC_ECANCELLED arpc_future_cancel: the request may already be on its way, unless the
 *                   cancel reached the client's loop before it was written (still on its way
 *                   to the loop, or waiting whole where a deadline would take it back, as
 *                   above: it is then never sent); or the client was closed
 *                   after it was written (the server may run it)
 * Threads: every function may be called from any thread, except that close and the blocking
 * call return ARPC_EBUSY on the client's loop thread (they would wait for themselves).
 */
#ifndef ARPC_JSONRPC_H
#define ARPC_JSONRPC_H

#include "arpc/common.h"
#include "arpc/future.h"
#include "arpc/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct arpc_jsonrpc_client arpc_jsonrpc_client;

typedef struct arpc_jsonrpc_options {
    arpc_loop *loop;             /* NULL: the client starts and owns a loop thread */
    int64_t connect_timeout_ms;  /* 0: 5000; ARPC_FOREVER: no limit */
    int64_t default_deadline_ms; /* for calls passing deadline 0; 0 here: no deadline */
    uint32_t max_frame;          /* largest request or response object; 0: 16 MiB; at least
                                  * ARPC_MAX_FRAME_MIN (1 KiB: arpc/common.h), as for arpc's
                                  * own client: a smaller one but 0 fails connect ARPC_EINVAL,
                                  * said in errbuf, before anything connects */
    char *errbuf;                /* if not NULL, a failed connect says why here (ARPC_ERRBUF_SIZE) */
    size_t errbuf_len;
} arpc_jsonrpc_options;

/* Connects to "tcp://host:port" or "unix:///path" ("inproc://name" in this process too;
 * blocking up to connect_timeout_ms). opts may be NULL. The client has no TLS: a "tls://"
 * address (or any other scheme) fails ARPC_EADDR before anything is sent, errbuf saying
 * "JSON-RPC over TLS is not supported by the client" (never the request in clear text to a
 * port the caller meant to reach through TLS). Errors: ARPC_EADDR, ARPC_ECONNREFUSED,
 * ARPC_ETIMEDOUT, ARPC_ENOMEM, ARPC_ESYSTEM, ARPC_EINVAL; opts->errbuf says why in words, and
 * *out is NULL (out not NULL) after any failure. */
ARPC_API int arpc_jsonrpc_connect_v(arpc_jsonrpc_client **out, const char *addr, const arpc_jsonrpc_options *opts,
                                    size_t opts_size);
#define arpc_jsonrpc_connect(out, addr, ...) \
    arpc_jsonrpc_connect_v((out), (addr), (__VA_ARGS__), sizeof(arpc_jsonrpc_options))

/* Starts method(params) where params_json[0..params_len) is one JSON value, sent as the one
 * element of "params" (copied before returning; no parameter is "null", 4 bytes: NULL is
 * ARPC_EINVAL). deadline_ms: 0 = the client's default,
 * ARPC_FOREVER = none (any negative value too), otherwise ms from now: neither 0 nor a
 * negative value means "already passed", so a budget that may be spent is checked by the
 * caller before the call. Returns the call's future (the caller owns one
 * reference); every outcome, immediate failures included, arrives through it. NULL only when
 * memory for the future cannot be had. */
ARPC_API arpc_future *arpc_jsonrpc_call_async(arpc_jsonrpc_client *c, const char *method, const char *params_json,
                                              size_t params_len, int64_t deadline_ms);

/* The same with the call's deadline as a time on arpc_now_ns()'s clock (0: the client's
 * default), e.g. what is left of a budget, or a handler's caller's (arpc_request_deadline_ns):
 * one already passed ends the call at once ARPC_EUNREACHABLE (not sent, it did not run). */
ARPC_API arpc_future *arpc_jsonrpc_call_async_at(arpc_jsonrpc_client *c, const char *method, const char *params_json,
                                                 size_t params_len, uint64_t deadline_at_ns);

/* Blocking: as arpc_jsonrpc_call_async, then waits. Returns the outcome; *result (may be
 * NULL to discard) receives the future's data for ARPC_OK and every outcome that has words
 * (the server's error text, ARPC_EINVAL, ARPC_ECONNLOST, ARPC_ETIMEDOUT; NUL-terminated; free
 * it with arpc_free whenever it is not NULL; without memory for words, the code comes alone),
 * else NULL;
 * *result_len its length. */
ARPC_API int arpc_jsonrpc_call(arpc_jsonrpc_client *c, const char *method, const char *params_json,
                               size_t params_len, char **result, size_t *result_len, int64_t deadline_ms);

/* Closes the connection, ends every pending call (ARPC_ECANCELLED once sent: the server may
 * run it; ARPC_ESHUTDOWN if not), waits for the loop and for callers to let go of the client,
 * and frees it (and its loop, if it owns one). Calls other threads are already inside
 * (arpc_jsonrpc_call, arpc_jsonrpc_call_async) are waited for and ended as above (one not yet
 * handed to the loop ends ARPC_ESHUTDOWN: never sent), and those threads never touch the freed
 * client; a caller may still be waiting for its call's future when close returns (the future
 * is its own). A call started while close runs (a then-callback its completions run,
 * retrying) is refused ARPC_ESHUTDOWN, as the arpc client's; one started after close returned
 * is misuse: reported, an abort in debug builds, else ARPC_EINVAL (while the client's memory
 * is still there). On an application loop that was stopped, close runs its steps on the
 * calling thread and ends those calls the same way. Returns ARPC_OK, ARPC_EINVAL (NULL),
 * ARPC_EBUSY (on the client's loop thread: nothing done); a second close aborts in debug
 * builds. */
ARPC_API int arpc_jsonrpc_close(arpc_jsonrpc_client *c);

#ifdef __cplusplus
}
#endif

#endif
