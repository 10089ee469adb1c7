/*
 * tools/call_creds.h: arpc-call's credentials: --ca, --ca-dir, --cert, --key and --server-name as
 * arpc_tls_options, --token or --token-file as the HELLO's token (arpc/auth.h).
 */
#ifndef ARPC_TOOLS_CALL_CREDS_H
#define ARPC_TOOLS_CALL_CREDS_H

#include <stddef.h>

#include "arpc/client.h"
#include "call_args.h"

struct call_creds {
    arpc_tls_options tls;
    /* One byte more than a token may have and room for a "\r\n": a longer file is seen. */
    char token[ARPC_AUTH_TOKEN_MAX_BYTES + 3];
    size_t token_len;
};

/* Fills cr from a's options and points o->tls and o->auth_token into it, so cr must outlive
 * the connect (the client copies them there). Returns -1 when that is done, otherwise the exit
 * status after printing the one failure line: a TLS option in a build without TLS, or a token
 * that is empty or over ARPC_AUTH_TOKEN_MAX_BYTES (ARPC_CALL_EXIT_USAGE); a token file that
 * cannot be read (ARPC_CALL_EXIT_LOCAL). */
int call_creds_apply(const struct call_args *a, struct call_creds *cr, arpc_client_options *o);

/* Wipes the token from memory, once connected. */
void call_creds_clear(struct call_creds *cr);

#endif
