/*
 * tools/call_json.h: arpc-call --json, one JSON-RPC 1.0 call (arpc/jsonrpc.h), to an arpc
 * server or any server that speaks Go's net/rpc/jsonrpc.
 */
#ifndef ARPC_TOOLS_CALL_JSON_H
#define ARPC_TOOLS_CALL_JSON_H

#include <stddef.h>

#include "call_args.h"

/* Calls a->method on a->addr with params[0] = params[0..len) (NULL: null) and a->deadline_ms;
 * prints the result's JSON and a line feed on stdout, or the failure line (tools/call_fail.h:
 * a server's "error" string is the outcome it names, as arpc/jsonrpc.h says: a handler's words
 * ARPC_EHANDLER, Go's "can't find" texts ARPC_ENOMETHOD, arpc's server's own answers their code).
 * Returns the exit status. Built without JSON-RPC (no jansson), it says so and returns
 * ARPC_CALL_EXIT_USAGE. */
int call_json(const struct call_args *a, const char *params, size_t len);

#endif
