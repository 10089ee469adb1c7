/*
 * The bank's bytes, shared by bank_server and bank_client.
 *
 *   "transfer"  request: from u32, to u32, amount u64 (little-endian, BANK_TRANSFER_LEN bytes).
 *               Reply: empty on ARPC_OK; a refusal (overdraft, bad account) is ARPC_EHANDLER
 *               with a message saying why, and changed nothing.
 *   "balances"  request: empty. Reply: count u32, then count balances u64 (little-endian).
 *
 * The server logs a transfer's request bytes as its effect and the balances encoding as its
 * checkpoint, so the same two codecs serve the wire and the disk.
 */
#ifndef BANK_PROTO_H
#define BANK_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BANK_TRANSFER "transfer"
#define BANK_BALANCES "balances"

#define BANK_TRANSFER_LEN 16
#define BANK_BALANCES_HEAD 4

struct bank_transfer {
    uint32_t from, to;
    uint64_t amount;
};

static inline void bank_put_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t bank_get_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void bank_transfer_encode(const struct bank_transfer *t, uint8_t out[BANK_TRANSFER_LEN])
{
    bank_put_le(out, t->from, 4);
    bank_put_le(out + 4, t->to, 4);
    bank_put_le(out + 8, t->amount, 8);
}

/* False (and *t untouched) unless len is exactly BANK_TRANSFER_LEN. */
static inline bool bank_transfer_decode(const void *data, size_t len, struct bank_transfer *t)
{
    const uint8_t *p = data;
    if (len != BANK_TRANSFER_LEN)
        return false;
    *t = (struct bank_transfer){.from = (uint32_t)bank_get_le(p, 4),
                                .to = (uint32_t)bank_get_le(p + 4, 4),
                                .amount = bank_get_le(p + 8, 8)};
    return true;
}

static inline size_t bank_balances_len(uint32_t count) { return BANK_BALANCES_HEAD + (size_t)count * 8; }

/* out holds bank_balances_len(count) bytes. */
static inline void bank_balances_encode(const uint64_t *balances, uint32_t count, uint8_t *out)
{
    bank_put_le(out, count, 4);
    for (uint32_t i = 0; i < count; i++)
        bank_put_le(out + BANK_BALANCES_HEAD + (size_t)i * 8, balances[i], 8);
}

/* The count in an encoding of len bytes, or -1 if len does not match it. */
static inline int64_t bank_balances_count(const void *data, size_t len)
{
    if (data == NULL || len < BANK_BALANCES_HEAD)
        return -1;
    uint32_t count = (uint32_t)bank_get_le(data, 4);
    return bank_balances_len(count) == len ? (int64_t)count : -1;
}

/* The i-th balance of a well-formed encoding (checked with bank_balances_count). */
static inline uint64_t bank_balance_at(const void *data, uint32_t i)
{
    return bank_get_le((const uint8_t *)data + BANK_BALANCES_HEAD + (size_t)i * 8, 8);
}

#endif
