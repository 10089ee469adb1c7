/*
 * arpc/error.h: the one error enum of arpc.
 *
 * 0 is success; every failure a caller can act on has its own code. The names and messages
 * come from one table (ARPC_ERROR_TABLE), so arpc_errname() and arpc_strerror() cannot drift
 * from the enum. Both are thread-safe, never allocate, and return a static string for any
 * int (unknown codes map to "ARPC_EUNKNOWN" / "unknown error").
 *
 * The numbers travel on the wire (ERROR and GOAWAY frames): only ever append to the table.
 */
#ifndef ARPC_ERROR_H
#define ARPC_ERROR_H

#include "arpc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ARPC_ERROR_TABLE(X)                                                                  \
    X(OK, "success")                                                                         \
    X(ENOMEM, "out of memory")                                                               \
    X(EINVAL, "invalid argument")                                                            \
    X(EAGAIN, "nothing ready yet, or no room yet; try again")                                \
    X(EPENDING, "the operation has not completed yet")                                       \
    X(ETIMEDOUT, "the call's deadline expired before a reply arrived")                      \
    X(ECANCELLED, "cancelled")                                                               \
    X(ESHUTDOWN, "the object was stopped or closed")                                         \
    X(ECONNLOST, "connection lost; the call may or may not have run")                       \
    X(ECONNREFUSED, "could not connect to the server")                                       \
    X(EADDR, "malformed or unsupported address")                                             \
    X(EADDRINUSE, "address already in use")                                                  \
    X(EREJECTED, "the server rejected the call; it did not run")                             \
    X(ENOMETHOD, "no such method on the server")                                             \
    X(EHANDLER, "the method handler reported an error")                                      \
    X(ETOOLARGE, "message larger than the configured maximum")                               \
    X(EPROTO, "protocol error: malformed or unexpected frame")                               \
    X(EBUSY, "busy: already in use")                                                         \
    X(ESYSTEM, "a system call failed")                                                       \
    X(EUNREACHABLE, "could not reach the server (before the deadline, or reconnect_give_up_ms, or with no_reconnect); the call did not run") \
    X(EEXPIRED, "the call's budget ran out before its handler started; it did not run")      \
    X(EOVERLOADED, "the server is out of room for the call (e.g. its reply cache is full); it did not run") \
    X(EABANDONED, "the server gave up on the call: it stopped before the handler replied, or it could not make the reply (or its reply log failed); the call may have run") \
    X(EAUTH, "the server refused the client's credentials")                                  \
    X(ETLS, "TLS failed: the handshake, a certificate or a record was refused")             \
    X(EDECODE, "the reply is not a valid message of the method's output type")

enum arpc_error {
#define ARPC_ERROR_ENUM_(name, msg) ARPC_##name,
    ARPC_ERROR_TABLE(ARPC_ERROR_ENUM_)
#undef ARPC_ERROR_ENUM_
    ARPC_ERROR_COUNT_
};

/* "ARPC_ETIMEDOUT" for ARPC_ETIMEDOUT. */
ARPC_API const char *arpc_errname(int err);
/* A one-line human-readable description. */
ARPC_API const char *arpc_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
