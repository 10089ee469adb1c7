/*
 * TLS (OpenSSL 3) for tls:// addresses: the contexts a server and a client make once from
 * their arpc_tls_options, and the stream (transport/stream.h) each connection gets from one.
 * The public side is include/arpc/tls.h. Built without TLS (ARPC_WITH_TLS off), the same
 * functions exist (transport/tls_absent.c) and refuse with ARPC_EADDR "built without TLS",
 * so the core has no #ifdef.
 *
 * Internal to the library. A context is immutable once made and may be shared by the
 * connections of one server or client (OpenSSL's SSL_CTX is thread-safe); a stream belongs to
 * its connection's loop thread (s_thread_safe is false).
 */
#ifndef ARPC_TRANSPORT_TLS_H
#define ARPC_TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arpc/tls.h"
#include "transport/stream.h"
#include "transport/transport.h"

struct arpc_tls;

/* A server's context: o->cert_file and o->key_file loaded (and checked against each other),
 * client certificates asked for when o->ca_file / o->ca_dir are given, required with
 * o->require_client_cert. Errors (why says which file and OpenSSL's reason): ARPC_EINVAL (o
 * NULL, no certificate or key, require_client_cert without CAs), ARPC_ETLS (a file that does
 * not load), ARPC_ENOMEM; ARPC_EADDR without TLS. */
int arpc_tls_server_new(struct arpc_tls **out, const arpc_tls_options *o, char *why, size_t whylen);

/* A client's context for target (a tls:// address): the server's certificate is verified
 * with o's CAs (or the system's) and must name o->server_name, or the address's HOST. o may
 * be NULL. Errors as arpc_tls_server_new. */
int arpc_tls_client_new(struct arpc_tls **out, const struct arpc_target *target, const arpc_tls_options *o,
                        char *why, size_t whylen);

/* NULL is ignored. Only once no stream made from it is left. */
void arpc_tls_free(struct arpc_tls *tls);

/* Exchanges what two server contexts present and check (certificate rotation): streams made
 * from now on from a get b's, and b gets a's, to be freed with b. A stream already made keeps
 * the one it was made from (OpenSSL counts its references). Not concurrently with a stream
 * being made from either. */
void arpc_tls_swap(struct arpc_tls *a, struct arpc_tls *b);

/* A TLS stream over fd (connected, non-blocking), its handshake still to come: the stream's
 * first reads and writes make it, asking for readiness as they need. Owns fd from here on
 * (closed on failure too). ARPC_OK or ARPC_ENOMEM. */
int arpc_tls_stream_new(struct arpc_tls *tls, int fd, struct arpc_stream **out);

/* Whether this build has TLS: false where tls:// is only refused (tls_absent.c). */
bool arpc_tls_built(void);

#define ARPC_TLS_HOLDER_DIGEST 16

/* The verified peer certificate's subject as one RFC 2253 line (control and non-ASCII bytes
 * escaped as \XX), allocated into *out (arpc_free), and into holder the first
 * ARPC_TLS_HOLDER_DIGEST bytes of a SHA-256 of what names its holder beyond that line: its
 * issuer's public key (from the verified chain: two authorities of the same name are two),
 * its subject (DER) and its subject alternative names (DER; a certificate may name its holder
 * by those alone, its subject empty). The same holder has the same digest on every server and
 * across renewals of its certificate by the same CA key that keep its names. ARPC_OK with *out NULL: a stream
 * that is not TLS, or a peer without a verified certificate. A verified certificate whose
 * subject or digest cannot be had is an error, never "no subject" (the peer would pass for
 * anonymous): ARPC_ENOMEM, *out NULL. Loop thread. */
int arpc_tls_peer_subject(const struct arpc_stream *s, char **out, uint8_t holder[ARPC_TLS_HOLDER_DIGEST]);

#endif
