/* Spin-then-yield waits and jittered retry delays (base/backoff.h). */
#include "base/backoff.h"

#include <ck_pr.h>
#include <sched.h>

void arpc_backoff_spin(unsigned *attempt)
{
    if (*attempt < 64) {
        for (unsigned i = 0; i < (1u << (*attempt / 8)); i++)
            ck_pr_stall();
    } else {
        sched_yield();
    }
    (*attempt)++;
}

void arpc_backoff_init(struct arpc_backoff *b, uint32_t base_ms, uint32_t max_ms, uint64_t seed)
{
    b->b_base_ms = base_ms ? base_ms : 1;
    b->b_max_ms = max_ms >= b->b_base_ms ? max_ms : b->b_base_ms;
    b->b_attempt = 0;
    b->b_rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint32_t arpc_backoff_next_ms(struct arpc_backoff *b)
{
    uint64_t d = b->b_base_ms;
    for (unsigned i = 0; i < b->b_attempt && d < b->b_max_ms; i++)
        d *= 2;
    if (d > b->b_max_ms)
        d = b->b_max_ms;
    if (b->b_attempt < 64)
        b->b_attempt++;
    /* xorshift64* */
    b->b_rng ^= b->b_rng >> 12;
    b->b_rng ^= b->b_rng << 25;
    b->b_rng ^= b->b_rng >> 27;
    uint64_t r = b->b_rng * 0x2545f4914f6cdd1dull;
    uint64_t half = d / 2;
    return (uint32_t)(d - half + (half ? r % (half + 1) : 0));
}
