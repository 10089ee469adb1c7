/*
 * A TLS server's guard on a stranger's handshake (transport/tls_bio.c feeds it every byte its
 * socket gives, in order, until the handshake ends): the plaintext handshake messages' headers
 * are read as they arrive, and one that announces more than the guard's bound is refused
 * before OpenSSL sees it. OpenSSL 3 reserves (and zero-fills) a message's announced length on
 * its 4-byte header alone, up to ~128 KiB for a ClientHello: a count of the bytes that arrived
 * cannot bound that, since 9 bytes announcing 131,000 held ~155 KiB until the handshake timed
 * out (a review).
 *
 * What it reads: records (5-byte headers: type, version, length); inside those of type 22
 * (handshake) before the peer's ChangeCipherSpec (after it, TLS 1.2's are encrypted; TLS
 * 1.3's encrypted ones are of type 23), the messages (4-byte headers: type, 24-bit length),
 * which may span records. Everything else is skipped by its length.
 */
#ifndef ARPC_TRANSPORT_TLS_GUARD_H
#define ARPC_TRANSPORT_TLS_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tls_guard {
    uint8_t g_rec_head[5]; /* a record's header being read */
    uint8_t g_rec_got;
    uint8_t g_msg_head[4]; /* a handshake message's header being read (it may span records) */
    uint8_t g_msg_got;
    bool g_encrypted;      /* the peer's ChangeCipherSpec came: no more plaintext handshake */
    bool g_refused;
    uint8_t g_type;        /* the record being read */
    uint32_t g_rec_left;   /* its bytes still to come (0: a record header next) */
    uint32_t g_msg_left;   /* the message's bytes still to come (0: a header next) */
};

/* Reads bytes[0..n), the next the peer sent (g zeroed before the first). False when a
 * plaintext handshake message announces more than max bytes (and from then on). */
bool tls_guard_feed(struct tls_guard *g, const uint8_t *bytes, size_t n, uint32_t max);

#endif
