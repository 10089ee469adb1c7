/*
 * The token bucket as one time (base/token_bucket.h). With T the interval and D = (burst - 1)
 * x T, a token may be taken at `now` when full_at - now <= D (the bucket is not empty); taking
 * it moves full_at to max(full_at, now) + T. So from a full bucket `burst` tokens go at once,
 * and then one per T: over any window of length W at most burst + W / T are taken.
 */
#include "base/token_bucket.h"

#define NS_PER_S 1000000000ull

void arpc_token_bucket_init(struct arpc_token_bucket *b, uint32_t per_s, uint32_t burst)
{
    uint64_t interval = NS_PER_S / (per_s > 0 ? per_s : 1);
    b->tb_interval = interval > 0 ? interval : 1;
    b->tb_depth = (uint64_t)(burst > 0 ? burst - 1 : 0) * b->tb_interval;
    b->tb_full_at = 0; /* full from the start */
}

static uint64_t bucket_burst(const struct arpc_token_bucket *b) { return b->tb_depth / b->tb_interval + 1; }

uint64_t arpc_token_bucket_wait_ns(const struct arpc_token_bucket *b, uint64_t now_ns, uint32_t n)
{
    uint64_t burst = bucket_burst(b);
    if (n > burst)
        n = (uint32_t)burst;
    if (n == 0)
        return 0;
    /* n tokens are there once full_at - now <= D - (n - 1) x T. */
    uint64_t allowed = b->tb_depth - (uint64_t)(n - 1) * b->tb_interval;
    if (b->tb_full_at <= now_ns || b->tb_full_at - now_ns <= allowed)
        return 0;
    return b->tb_full_at - now_ns - allowed;
}

bool arpc_token_bucket_take(struct arpc_token_bucket *b, uint64_t now_ns)
{
    if (arpc_token_bucket_wait_ns(b, now_ns, 1) != 0)
        return false;
    b->tb_full_at = (b->tb_full_at > now_ns ? b->tb_full_at : now_ns) + b->tb_interval;
    return true;
}

void arpc_token_bucket_charge(struct arpc_token_bucket *b, uint64_t now_ns, uint32_t n)
{
    /* Empty at full_at - now = D + T; a burst in debt beyond that is D + T more. */
    uint64_t most = now_ns + 2 * (b->tb_depth + b->tb_interval);
    uint64_t tokens = n < 2 * bucket_burst(b) ? n : 2 * bucket_burst(b); /* more is capped anyway: no overflow */
    uint64_t full_at = (b->tb_full_at > now_ns ? b->tb_full_at : now_ns) + tokens * b->tb_interval;
    b->tb_full_at = full_at < most ? full_at : most;
}
