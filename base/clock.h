/*
 * The one clock of arpc, and the one way to turn a timeout into a deadline and back.
 *
 * Every deadline inside arpc is an absolute time in nanoseconds on CLOCK_MONOTONIC
 * (arpc_now_ns). ARPC_NEVER is the deadline that never comes. Every conversion saturates:
 * a timeout so large that now + timeout would overflow is ARPC_NEVER, not a time in the past,
 * so `arpc_loop_run_until(..., INT64_MAX)` waits for ever instead of returning at once.
 *
 * Pure functions of their arguments and the clock: thread-safe, no allocation.
 */
#ifndef ARPC_BASE_CLOCK_H
#define ARPC_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

#include "arpc/common.h"

#define ARPC_NEVER UINT64_MAX
#define ARPC_NS_PER_MS 1000000ull

/* The same clock read cheaply: the kernel's time at its last tick (no TSC read; about a
 * quarter of arpc_now_ns's cost), so it lags arpc_now_ns by up to one tick (1-4 ms) and is
 * never ahead of it. For times kept at millisecond precision or coarser (the reply cache's
 * idle expiry, minutes); never for a deadline or a latency. */
uint64_t arpc_now_coarse_ns(void);

/* CLOCK_BOOTTIME: as arpc_now_ns, but it also counts the time the system was suspended, which
 * CLOCK_MONOTONIC does not. For an age compared with another host's clock (a re-send judged
 * against the server's idle expiry: the server's clock runs on while this host sleeps);
 * arpc_now_ns where the system has no such clock. */
uint64_t arpc_now_boot_ns(void);

/* The boot clock at the coarse clock's cost, for stamps whose age is later judged with
 * arpc_now_boot_ns: the coarse clock plus how far the boot clock was ahead of the monotonic
 * one, which each thread reads once per refresh_ns of the coarse clock. Never ahead of the
 * boot clock (a stamp is never later than its moment, so an age judged from it is never
 * short; a stamp ahead of a later check's reading, as a first version's could be by a kernel
 * tick, made a fresh call look ~2.3 years old). Behind it by the coarse clock's lag (a kernel
 * tick), and by any suspend since the thread's last refresh: an age comes out long, the safe
 * side. */
uint64_t arpc_now_boot_coarse_ns(uint64_t refresh_ns);

/* timeout_ms from now: < 0 (ARPC_FOREVER) gives ARPC_NEVER; 0 gives now. Saturates. */
uint64_t arpc_deadline_from_ms(int64_t timeout_ms);

/* As arpc_deadline_from_ms, counted from a time the caller already read. */
uint64_t arpc_deadline_after(uint64_t now_ns, int64_t timeout_ms);

/* Milliseconds left before deadline_ns, rounded up (so a wait of that long does not wake
 * just short of it): ARPC_FOREVER for ARPC_NEVER, 0 once it has passed. */
int64_t arpc_ms_left(uint64_t deadline_ns);

/* As arpc_ms_left, counted from a time the caller already read. */
int64_t arpc_ms_left_after(uint64_t now_ns, uint64_t deadline_ns);

/* arpc_ms_left clamped to what poll(2) and epoll take: -1 for ARPC_NEVER, at most INT_MAX. */
int arpc_ms_left_int(uint64_t deadline_ns);

/* The absolute CLOCK_MONOTONIC time of deadline_ns, for futex and ck_ec waits. Only for a
 * deadline other than ARPC_NEVER (which has no timespec: wait without one). */
struct timespec arpc_timespec_of(uint64_t deadline_ns);

#endif
