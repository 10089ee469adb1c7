/* The clock and its saturating conversions (base/clock.h). */
#include "base/clock.h"

#include <limits.h>

uint64_t arpc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t arpc_now_coarse_ns(void)
{
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#else
    return arpc_now_ns();
#endif
}

uint64_t arpc_now_boot_ns(void)
{
#ifdef CLOCK_BOOTTIME
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) == 0)
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
    return arpc_now_ns();
}

uint64_t arpc_now_boot_coarse_ns(uint64_t refresh_ns)
{
    static _Thread_local uint64_t coarse_at; /* this thread's last refresh */
    static _Thread_local int64_t ahead;      /* then: the boot clock less the monotonic one */
    static _Thread_local bool read_once;
    uint64_t coarse = arpc_now_coarse_ns();
    if (!read_once || coarse - coarse_at >= refresh_ns) {
        /* The boot clock first: the monotonic read after it can only make the difference
         * smaller, so the result is never ahead of the boot clock (the coarse clock lags the
         * monotonic one too). Signed: with no suspend yet the two are nearly equal. */
        int64_t boot = (int64_t)arpc_now_boot_ns();
        ahead = boot - (int64_t)arpc_now_ns();
        coarse_at = coarse;
        read_once = true;
    }
    return (uint64_t)((int64_t)coarse + ahead);
}

uint64_t arpc_deadline_after(uint64_t now_ns, int64_t timeout_ms)
{
    if (timeout_ms < 0)
        return ARPC_NEVER;
    /* Both steps saturate: ms -> ns, then the sum. */
    if ((uint64_t)timeout_ms > (ARPC_NEVER - 1) / ARPC_NS_PER_MS)
        return ARPC_NEVER;
    uint64_t span = (uint64_t)timeout_ms * ARPC_NS_PER_MS;
    if (span >= ARPC_NEVER - now_ns)
        return ARPC_NEVER;
    return now_ns + span;
}

uint64_t arpc_deadline_from_ms(int64_t timeout_ms)
{
    if (timeout_ms < 0)
        return ARPC_NEVER; /* no clock read for the common "no deadline" */
    return arpc_deadline_after(arpc_now_ns(), timeout_ms);
}

int64_t arpc_ms_left(uint64_t deadline_ns)
{
    return deadline_ns == ARPC_NEVER ? ARPC_FOREVER : arpc_ms_left_after(arpc_now_ns(), deadline_ns);
}

int64_t arpc_ms_left_after(uint64_t now, uint64_t deadline_ns)
{
    if (deadline_ns == ARPC_NEVER)
        return ARPC_FOREVER;
    if (now >= deadline_ns)
        return 0;
    uint64_t ms = (deadline_ns - now + ARPC_NS_PER_MS - 1) / ARPC_NS_PER_MS;
    return ms > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)ms;
}

int arpc_ms_left_int(uint64_t deadline_ns)
{
    int64_t ms = arpc_ms_left(deadline_ns);
    if (ms < 0)
        return -1;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

struct timespec arpc_timespec_of(uint64_t deadline_ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
    ts.tv_nsec = (long)(deadline_ns % 1000000000u);
    return ts;
}
