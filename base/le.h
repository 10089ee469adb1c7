/*
 * Little-endian loads and stores: correct on any host byte order, no alignment needed. Every
 * on-the-wire and on-disk integer in arpc goes through these (core/frame.c, the reply log).
 * On a little-endian host each is one unaligned move (memcpy of a constant size); on others a
 * move and a byte swap. (Byte-at-a-time shifts were not merged by GCC 12 where fields of a
 * header meet at odd offsets: encoding a frame header took ~60 instructions.)
 */
#ifndef ARPC_BASE_LE_H
#define ARPC_BASE_LE_H

#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__)
#error "base/le.h needs the compiler's __BYTE_ORDER__ (GCC, Clang)"
#elif __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ARPC_LE16(v) __builtin_bswap16(v)
#define ARPC_LE32(v) __builtin_bswap32(v)
#define ARPC_LE64(v) __builtin_bswap64(v)
#else
#define ARPC_LE16(v) (v)
#define ARPC_LE32(v) (v)
#define ARPC_LE64(v) (v)
#endif

static inline uint16_t le_ld16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return (uint16_t)ARPC_LE16(v);
}

static inline uint32_t le_ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return ARPC_LE32(v);
}

static inline uint64_t le_ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return ARPC_LE64(v);
}

static inline void le_st16(uint8_t *p, uint16_t v)
{
    v = (uint16_t)ARPC_LE16(v);
    memcpy(p, &v, sizeof(v));
}

static inline void le_st32(uint8_t *p, uint32_t v)
{
    v = ARPC_LE32(v);
    memcpy(p, &v, sizeof(v));
}

static inline void le_st64(uint8_t *p, uint64_t v)
{
    v = ARPC_LE64(v);
    memcpy(p, &v, sizeof(v));
}

#endif
