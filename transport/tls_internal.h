/*
 * What tls_ctx.c and tls_stream.c share: the context's contents and OpenSSL's errors in words.
 */
#ifndef ARPC_TRANSPORT_TLS_INTERNAL_H
#define ARPC_TRANSPORT_TLS_INTERNAL_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "transport/tls.h"
#include "transport/tls_guard.h"

struct arpc_tls {
    SSL_CTX *t_ctx;
    bool t_client;
    bool t_host_is_ip;           /* client: t_host is checked as an IP address */
    char t_host[ARPC_ADDR_MAX];  /* client: the name the server's certificate must carry */
};

/* The socket under a TLS stream as its BIO sees it (tls_bio.c), and what one read or write of
 * the stream may still ask of it. Its costs are per record, not per byte it yields: a peer
 * sending 1-byte records, or handshake messages that yield no bytes at all (a TLS 1.3
 * KeyUpdate flood), would otherwise hold the loop for as long as its socket stays full. */
struct tls_wire {
    struct arpc_stream *w_stream;
    unsigned w_recvs_left;   /* recv(2) calls this read or write may still make: then "retry",
                              * and level-triggered readiness brings the connection back */
    SSL *w_ssl;              /* its SSL object: is the handshake finished? */
    size_t w_shake_bytes;    /* a server's: bytes read during the handshake */
    size_t w_hello_bytes;    /* a server's: bytes read before it sent any (the ClientHello) */
    const char *w_over;      /* what the peer sent too much of ("ClientHello", "handshake"):
                              * the stream fails (ARPC_ETLS) */
    size_t w_over_limit;     /* ... and the limit it went over */
    struct tls_guard w_guard; /* a server's: the stranger's handshake message headers */
    /* After the handshake a write to the BIO never waits: what the socket did not take waits
     * in w_out (tls_bio_flush sends it). OpenSSL 3.0 cannot answer a peer's KeyUpdate request
     * while a record of its own waits to be retried (SSL_read fails "bad length", and the
     * connection with it): with nothing ever waiting inside OpenSSL, it always can. */
    bool w_shaken;           /* the handshake completed (OpenSSL's info callback: it counts a
                              * connection that failed as back in its handshake, so
                              * SSL_is_init_finished cannot say after): writes go through w_out */
    bool w_out_over;         /* w_out would have grown past TLS_OUT_MAX: the stream fails */
    uint8_t *w_out;          /* ciphertext the socket has not taken (NULL when none) */
    size_t w_out_off, w_out_len, w_out_cap; /* w_out[w_out_off, w_out_len) waits */
};

/* What may wait in w_out: one record of the stream's own (it offers one at a time after the
 * handshake, and none while any waits) and the messages a peer's reads make OpenSSL write
 * (KeyUpdate answers, alerts), which a peer that asks for them and reads nothing could
 * otherwise grow without end. */
#define TLS_OUT_MAX (64 * 1024)

/* Sends what waits in w's w_out: ARPC_OK once none does, ARPC_EAGAIN while some still does
 * (the socket is full), ARPC_ECONNLOST when the socket broke. */
int tls_bio_flush(struct tls_wire *w);

/* Lets w_out's memory go (the stream is closing). */
void tls_bio_out_free(struct tls_wire *w);

/* A server reads at most this much of a ClientHello (OpenSSL takes up to ~128 KiB, buffered
 * whole before it is judged: 160 KiB a stranger's connection held until its handshake timed
 * out), nor lets a plaintext handshake message announce more (tls_guard.h). Real ones are a
 * few KiB, post-quantum key shares included. */
#define TLS_CLIENT_HELLO_MAX (16 * 1024)
/* ... and of a whole handshake: the ClientHello, a client's chain (TLS_PEER_CHAIN_MAX) and
 * the messages around them. */
#define TLS_HANDSHAKE_READ_MAX (64 * 1024)

/* A BIO over w->w_stream's socket (its s_fd, read at each call) that never raises SIGPIPE,
 * counts what it sends in s_sent, and reads within w's limits (tls_bio.c); the fd stays the
 * stream's. NULL without memory. */
BIO *tls_bio_socket(struct tls_wire *w);

/* A client context's SSL_CTX_set_client_cert_cb: the server asked for a certificate and the
 * client has none configured; noted in the stream, to explain a refusal that may follow. */
int tls_no_client_cert(SSL *ssl, X509 **cert, EVP_PKEY **key);

/* Writes "<what>: <OpenSSL's reason>" into out (for a failed verification, with the verify
 * result's words; for bytes that are not TLS, a hint: before the handshake completed (shaken
 * false), a peer that does not speak TLS; after, a corrupt or forged record) and clears this
 * thread's error queue. ssl may be NULL. */
void tls_error_text(char *out, size_t len, const char *what, const SSL *ssl, bool shaken);

#endif
