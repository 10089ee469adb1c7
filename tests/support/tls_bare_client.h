/*
 * A bare OpenSSL client for the TLS tests' strangers: a self-signed certificate nobody trusts
 * (CN=x, P-256, valid from an hour ago to an hour from now), and a handshake that presents it
 * with copies of itself as its chain. Only in builds with TLS (ARPC_TEST_WITH_TLS).
 */
#ifndef ARPC_TEST_TLS_BARE_CLIENT_H
#define ARPC_TEST_TLS_BARE_CLIENT_H

#include <stdbool.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "core/frame.h"

/* A fresh self-signed certificate and its key (the caller frees both); false on failure. */
bool tls_bare_self_signed(X509 **cert, EVP_PKEY **key);

/* A blocking socket connected to addr (tls://...) whose reads time out after TEST_WAIT_S: a
 * silent server fails the test, not the run. Asserts with cmocka on failure. */
int tls_bare_connect(const char *addr);

/* tls_bare_connect, then a handshake with ctx (the caller's; e.g. one that verifies nothing):
 * the SSL (SSL_free it, then close *fd). Asserts with cmocka on failure. */
SSL *tls_bare_handshake(const char *addr, SSL_CTX *ctx, int *fd);

/* Connects to addr (tls://...), handshakes at TLS version `version` (TLS1_2_VERSION,
 * TLS1_3_VERSION) presenting cert with `extra` copies of it as its chain, then waits for the
 * server's close (TLS 1.3 judges the chain after the client's side is done). Asserts with
 * cmocka on a local failure; a silent server fails the test after TEST_WAIT_S. */
void tls_bare_present_chain(const char *addr, int version, X509 *cert, EVP_PKEY *key, int extra);

/* Reads exactly len bytes of plaintext from ssl (blocking): false if its stream ended or broke
 * first, or its socket's read timed out. Any thread. */
bool tls_bare_read_all(SSL *ssl, void *dst, size_t len);

/* Reads ssl's next arpc frame, its body into body (cap bytes; f's payload points there): false
 * if the stream ended or broke first, or the frame is larger than cap or malformed. Any
 * thread. */
bool tls_bare_read_frame(SSL *ssl, uint8_t *body, size_t cap, struct arpc_frame *f);

#endif
