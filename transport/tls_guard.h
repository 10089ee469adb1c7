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
 * (handshake), the messages (4-byte headers: type, 24-bit length), which may span records,
 * until TLS 1.2's ChangeCipherSpec (its handshake records are encrypted after it). In TLS 1.3
 * a ChangeCipherSpec is a dummy (middlebox compatibility: OpenSSL's client sends one before
 * its second ClientHello, after a HelloRetryRequest, which is plaintext), and its encrypted
 * handshake records are of type 23: every type-22 record is read. Everything else is
 * skipped by its length.
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
    bool g_encrypted;      /* TLS 1.2's ChangeCipherSpec came: no more plaintext handshake */
    bool g_refused;
    uint8_t g_type;        /* the record being read */
    uint32_t g_rec_left;   /* its bytes still to come (0: a record header next) */
    uint32_t g_msg_left;   /* the message's bytes still to come (0: a header next) */
};

/* Reads bytes[0..n), the next the peer sent (g zeroed before the first); tls12: the version
 * negotiated is TLS 1.2 (a ChangeCipherSpec then ends the plaintext; before the version is
 * known, or with TLS 1.3, it does not). False when a plaintext handshake message announces
 * more than max bytes (and from then on). */
bool tls_guard_feed(struct tls_guard *g, const uint8_t *bytes, size_t n, uint32_t max, bool tls12);

#endif
