/* Futex wrappers and the ck_ec operations table (CK leaves the OS binding to the user). */
#define _GNU_SOURCE
#include "async/futex.h"

#include "base/clock.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ck_ec hands us its deadline as a timespec already. */
static void futex_wait_ts(const uint32_t *addr, uint32_t expected, const struct timespec *deadline)
{
    /* FUTEX_WAIT_BITSET takes an absolute timeout on CLOCK_MONOTONIC (plain FUTEX_WAIT takes
     * a relative one); EINTR, EAGAIN and ETIMEDOUT all just return: callers re-check. */
    syscall(SYS_futex, addr, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, deadline, NULL,
            FUTEX_BITSET_MATCH_ANY);
}

void arpc_futex_wait(const uint32_t *addr, uint32_t expected, uint64_t deadline_ns)
{
    struct timespec ts = arpc_timespec_of(deadline_ns);
    futex_wait_ts(addr, expected, deadline_ns == ARPC_NEVER ? NULL : &ts);
}

void arpc_futex_wake_all(const uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, INT_MAX, NULL, NULL, 0);
}

static int ec_gettime(const struct ck_ec_ops *ops, struct timespec *out)
{
    (void)ops;
    return clock_gettime(CLOCK_MONOTONIC, out);
}

static void ec_wait32(const struct ck_ec_wait_state *state, const uint32_t *addr, uint32_t expected,
                      const struct timespec *deadline)
{
    (void)state;
    futex_wait_ts(addr, expected, deadline);
}

static void ec_wake32(const struct ck_ec_ops *ops, const uint32_t *addr)
{
    (void)ops;
    arpc_futex_wake_all(addr);
}

static void ec_wait64(const struct ck_ec_wait_state *state, const uint64_t *addr, uint64_t expected,
                      const struct timespec *deadline)
{
    /* Little-endian: the low half holds the futex word (see ck_ec.h). */
    (void)state;
    futex_wait_ts((const uint32_t *)addr, (uint32_t)expected, deadline);
}

static void ec_wake64(const struct ck_ec_ops *ops, const uint64_t *addr)
{
    (void)ops;
    arpc_futex_wake_all((const uint32_t *)addr);
}

static const struct ck_ec_ops arpc_ec_ops = {
    .gettime = ec_gettime,
    .wait32 = ec_wait32,
    .wait64 = ec_wait64,
    .wake32 = ec_wake32,
    .wake64 = ec_wake64,
    .busy_loop_iter = 100,
};

const struct ck_ec_mode arpc_ec_mode_mp = {.ops = &arpc_ec_ops, .single_producer = false};
