/*
 * A hash of a name for tables of names the program itself chooses: the server's methods
 * (core/registry.c), a client's method names (core/method_names.c). Not for keys a peer
 * chooses (base/siphash.h). Eight bytes a step (a name's last, partial word is read as the
 * word ending at its last byte, overlapping the one before), then mixed so that every bit
 * reaches the low ones a table masks: a name of 10 bytes costs two multiplications, where
 * a byte at a time cost ten (docs/PERFORMANCE.md, "Client memory per call: 136 → 120 B").
 * A pure function: any thread.
 */
#ifndef ARPC_BASE_NAME_HASH_H
#define ARPC_BASE_NAME_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* One word into the hash: the multiplication carries each bit upwards, the shift brings the
 * high half down for the next word. */
static inline uint64_t arpc_name_mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * UINT64_C(0xff51afd7ed558ccd);
    return h ^ (h >> 29);
}

/* The last step (MurmurHash3's finaliser, halved): every input bit reaches the low bits. */
static inline uint64_t arpc_name_final(uint64_t h)
{
    h ^= h >> 32;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    return h ^ (h >> 29);
}

static inline uint64_t arpc_name_hash(const char *s, size_t len)
{
    uint64_t h = len * UINT64_C(0x9e3779b97f4a7c15), w = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, s + i, 8);
        h = arpc_name_mix(h, w);
    }
    if (i == len)
        return arpc_name_final(h);
    if (len >= 8) {
        memcpy(&w, s + len - 8, 8);
    } else if (len >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, s, 4);
        memcpy(&hi, s + len - 4, 4);
        w = lo | (uint64_t)hi << 32;
    } else {
        w = (uint64_t)(uint8_t)s[0] | (uint64_t)(uint8_t)s[len / 2] << 8 | (uint64_t)(uint8_t)s[len - 1] << 16;
    }
    return arpc_name_final(arpc_name_mix(h, w));
}

/* a[0..len) == b[0..len), by the same words as arpc_name_hash (for names of a few words: no
 * call to memcmp). */
static inline bool arpc_name_equal(const char *a, const char *b, size_t len)
{
    uint64_t x, y;
    if (len >= 8) {
        for (size_t i = 0; i + 8 < len; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return false;
        }
        memcpy(&x, a + len - 8, 8);
        memcpy(&y, b + len - 8, 8);
        return x == y;
    }
    if (len >= 4) {
        uint32_t p, q, r, t;
        memcpy(&p, a, 4);
        memcpy(&q, b, 4);
        memcpy(&r, a + len - 4, 4);
        memcpy(&t, b + len - 4, 4);
        return p == q && r == t;
    }
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

#endif
