/*
 * Sleeping without a mutex: Linux futexes, and the Concurrency Kit event count (ck_ec)
 * wired to them.
 *
 * Futures sleep on their own state word (arpc_futex_*); actors sleep on a ck_ec32 that
 * posters bump (arpc_ec_*). ck_ec makes the common case cheap: signalling an event count
 * nobody waits on is one atomic add, no system call.
 */
#ifndef ARPC_ASYNC_FUTEX_H
#define ARPC_ASYNC_FUTEX_H

#include <ck_ec.h>
#include <stdint.h>
#include <time.h>

/* Sleeps while *addr == expected, until woken or deadline_ns (base/clock.h; ARPC_NEVER:
 * none). May return early for any reason: callers re-check their condition. */
void arpc_futex_wait(const uint32_t *addr, uint32_t expected, uint64_t deadline_ns);
void arpc_futex_wake_all(const uint32_t *addr);

/* The multi-producer ck_ec mode backed by futexes. */
extern const struct ck_ec_mode arpc_ec_mode_mp;

#endif
