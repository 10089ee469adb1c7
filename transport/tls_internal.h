/*
 * What tls_ctx.c and tls_stream.c share: the context's contents and OpenSSL's errors in words.
 */
#ifndef ARPC_TRANSPORT_TLS_INTERNAL_H
#define ARPC_TRANSPORT_TLS_INTERNAL_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "transport/tls.h"

struct arpc_tls {
    SSL_CTX *t_ctx;
    bool t_client;
    bool t_host_is_ip;           /* client: t_host is checked as an IP address */
    char t_host[ARPC_ADDR_MAX];  /* client: the name the server's certificate must carry */
};

/* A BIO over the stream's socket (s->s_fd, read at each call) that never raises SIGPIPE and
 * counts what it sends in s->s_sent (tls_bio.c); the fd stays the stream's. NULL without
 * memory. */
BIO *tls_bio_socket(struct arpc_stream *s);

/* A client context's SSL_CTX_set_client_cert_cb: the server asked for a certificate and the
 * client has none configured; noted in the stream, to explain a refusal that may follow. */
int tls_no_client_cert(SSL *ssl, X509 **cert, EVP_PKEY **key);

/* Writes "<what>: <OpenSSL's reason>" into out (for a failed verification, with the verify
 * result's words; for bytes that are not TLS, a hint) and clears this thread's error queue.
 * ssl may be NULL. */
void tls_error_text(char *out, size_t len, const char *what, const SSL *ssl);

#endif
