/*
 * The one back-off: how a thread waits for a condition another thread will soon make true
 * (spin, then yield), and how a retry spaces its attempts (exponential, with jitter).
 */
#ifndef ARPC_BASE_BACKOFF_H
#define ARPC_BASE_BACKOFF_H

#include <stdint.h>

/* One step of a short wait for another thread: the first steps spin with a growing number of
 * pause instructions, later ones yield the CPU (so a preempted thread we wait for can run).
 * *attempt starts at 0 and counts the steps. */
void arpc_backoff_spin(unsigned *attempt);

/* Delays between retries: the n-th delay is drawn uniformly from [d/2, d] with
 * d = min(max_ms, base_ms * 2^n) ("equal jitter": never zero, never in lock-step with other
 * clients retrying against the same server). */
struct arpc_backoff {
    uint32_t b_base_ms;
    uint32_t b_max_ms;
    unsigned b_attempt;
    uint64_t b_rng; /* xorshift state; never 0 */
};

/* seed: any value (0 is replaced); base_ms >= 1 and max_ms >= base_ms are enforced. */
void arpc_backoff_init(struct arpc_backoff *b, uint32_t base_ms, uint32_t max_ms, uint64_t seed);
/* The delay before the next attempt; counts the attempt. */
uint32_t arpc_backoff_next_ms(struct arpc_backoff *b);
/* After a success: the next failure starts again from base_ms. */
static inline void arpc_backoff_reset(struct arpc_backoff *b) { b->b_attempt = 0; }

#endif
