/*
 * A token bucket: at most `burst` events at once, then `per_s` a second on average, kept as
 * one time (the generic cell rate algorithm: the time at which the bucket will be full again,
 * so that taking a token adds one interval to it and waiting is a subtraction).
 *
 * Pure: the caller passes the time (nanoseconds on any monotonic clock, arpc_now_ns in arpc),
 * so tests drive it with a clock of their own. No allocation, no thread safety: one owner.
 */
#ifndef ARPC_BASE_TOKEN_BUCKET_H
#define ARPC_BASE_TOKEN_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

struct arpc_token_bucket {
    uint64_t tb_full_at;   /* when the bucket holds `burst` tokens again (<= now: it does) */
    uint64_t tb_interval;  /* ns per token: 1e9 / per_s, at least 1 */
    uint64_t tb_depth;     /* (burst - 1) intervals: how far tb_full_at may run ahead of now */
};

/* per_s >= 1 tokens a second, burst >= 1 at most at once; the bucket starts full. */
void arpc_token_bucket_init(struct arpc_token_bucket *b, uint32_t per_s, uint32_t burst);

/* Nanoseconds from now_ns until n tokens are there (0: they are now). n is capped at burst. */
uint64_t arpc_token_bucket_wait_ns(const struct arpc_token_bucket *b, uint64_t now_ns, uint32_t n);

/* Takes a token if there is one at now_ns; false (nothing changed) otherwise. */
bool arpc_token_bucket_take(struct arpc_token_bucket *b, uint64_t now_ns);

/* Takes n tokens whether they are there or not, for an event that has already happened (n > 1:
 * one that cost as much as n): an empty bucket goes into debt, so the wait for the next token
 * covers it too. The debt is capped at one burst (what is charged beyond is not counted), so a
 * long flood owes at most burst / per_s. */
void arpc_token_bucket_charge(struct arpc_token_bucket *b, uint64_t now_ns, uint32_t n);

#endif
