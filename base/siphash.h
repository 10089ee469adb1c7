/*
 * SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit hash. Unlike a plain hash, one
 * who does not know the 128-bit key cannot choose inputs that collide: the server keys its
 * at-most-once namespaces with it (core/server_auth.c), so no client can aim its client id at
 * another identity's.
 *
 * A pure function of its arguments: any thread, no allocation. Checked against the paper's
 * test vectors (tests/auth_test.c).
 */
#ifndef ARPC_BASE_SIPHASH_H
#define ARPC_BASE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define ARPC_SIPHASH_KEY_SIZE 16

uint64_t arpc_siphash24(const uint8_t key[ARPC_SIPHASH_KEY_SIZE], const void *data, size_t len);

#endif
