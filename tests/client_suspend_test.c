/*
 * A client whose host is suspended (a laptop's lid closed) while an at-most-once call is out.
 * Linux's CLOCK_MONOTONIC does not count a suspend; the server's clock, on another host, runs
 * on, and forgets the idle client after its expiry. The client must judge the call's age with
 * a clock that counts the suspend (CLOCK_BOOTTIME): sent again, the call would run a second
 * time on a server that no longer knows it. It ends ARPC_ECONNLOST instead ("may have run").
 * Before, the age came from the monotonic clock: the call was sent again, ran twice, and its
 * caller got ARPC_OK (a review's probe).
 *
 * The suspend is played in this process: its monotonic clocks (every clock_gettime of them,
 * interposed) stop for the "suspend" and go on from where they stopped after it, as the
 * kernel's do; CLOCK_BOOTTIME is left alone. The server runs in a child process
 * (support/server_proc.h), its clocks untouched.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arpc/arpc.h"
#include "base/clock.h"
#include "support/cut_proxy.h"
#include "support/interpose.h"
#include "support/server_proc.h"
#include "support/test_util.h"

/* ---- a suspend of this host's monotonic clocks ---- */

/* The coarse clock is read first: frozen, it stands at or behind the precise one whatever
 * the scheduler does between the two readings (a stamp behind is the safe side). */
enum { SUSPENDED_CLOCKS = 3, PRECISE = 1 };
static const clockid_t suspended_ids[SUSPENDED_CLOCKS] = {CLOCK_MONOTONIC_COARSE, CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW};
static _Atomic int64_t frozen_at[SUSPENDED_CLOCKS] = {-1, -1, -1}; /* -1: running */
static _Atomic int64_t last_told[SUSPENDED_CLOCKS];                /* none goes back */
/* How long they stood: one figure for the three, as in a real suspend, so the coarse clock
 * runs behind the precise one after it as before. One figure per clock, each from its own
 * pair of readings, carried a preemption between two readings into the clocks' order: the
 * coarse clock ran ahead of the precise one (a stamp ahead of the boot clock, a failure of
 * the stamp test under TSan on a loaded machine). */
static _Atomic int64_t behind;

static int real_clock_gettime(clockid_t id, struct timespec *ts)
{
    static _Atomic(void *) next;
    int (*real)(clockid_t, struct timespec *) = (int (*)(clockid_t, struct timespec *))interpose_next("clock_gettime", &next);
    return real(id, ts);
}

static int64_t real_ns(clockid_t id)
{
    struct timespec ts;
    real_clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A clock past its frozen value by less than the stand's figure (the coarse clock frozen
 * further behind the precise one than it runs) would step back at the resume: it waits at
 * the last value told instead, as a kernel's clock would. */
static int64_t never_back(int i, int64_t v)
{
    int64_t told = atomic_load(&last_told[i]);
    while (v > told && !atomic_compare_exchange_weak(&last_told[i], &told, v))
        ;
    return v > told ? v : told;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int rc = real_clock_gettime(id, ts);
    for (int i = 0; rc == 0 && i < SUSPENDED_CLOCKS; i++) {
        if (id != suspended_ids[i])
            continue;
        int64_t frozen = atomic_load(&frozen_at[i]);
        int64_t v = frozen >= 0 ? frozen : (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec - atomic_load(&behind);
        v = never_back(i, v);
        ts->tv_sec = v / 1000000000;
        ts->tv_nsec = v % 1000000000;
    }
    return rc;
}

static void suspend_clocks(void)
{
    for (int i = 0; i < SUSPENDED_CLOCKS; i++)
        atomic_store(&frozen_at[i], never_back(i, real_ns(suspended_ids[i]) - atomic_load(&behind)));
}

/* The stand is measured on the precise clock and set before any clock runs again (a frozen
 * clock does not read it). */
static void resume_clocks(void)
{
    atomic_store(&behind, real_ns(suspended_ids[PRECISE]) - atomic_load(&frozen_at[PRECISE]));
    for (int i = 0; i < SUSPENDED_CLOCKS; i++)
        atomic_store(&frozen_at[i], -1);
}

/* ---- the server's side, read by calls that leave nothing in its reply cache ---- */

/* The server's reply_cache_clients, from arpc.stats by an unnumbered call; -1 on failure. */
static long cache_clients(const char *addr)
{
    arpc_client_options co = {.semantics = ARPC_AT_LEAST_ONCE};
    arpc_client *c;
    if (arpc_client_connect(&c, addr, &co) != ARPC_OK)
        return -1;
    void *reply = NULL;
    size_t len = 0;
    long n = -1;
    if (arpc_call(c, "arpc.stats", "", 0, &reply, &len, 0) == ARPC_OK && reply != NULL) {
        const char *at = strstr(reply, "\"reply_cache_clients\": ");
        if (at != NULL)
            n = strtol(at + strlen("\"reply_cache_clients\": "), NULL, 10);
    }
    arpc_free(reply);
    arpc_client_close(c);
    return n;
}

/* Waits (polling; the clocks of this process may stand still, so the bound is a count) until
 * the server remembers no client. */
static bool server_forgets_every_client(const char *addr)
{
    for (int i = 0; i < 400; i++) { /* 20 s */
        if (cache_clients(addr) == 0)
            return true;
        (void)poll(NULL, 0, 50);
    }
    return false;
}

/* ---- the test ---- */

static void test_suspended_client_does_not_send_a_forgotten_call_again(void **state)
{
    (void)state;
    struct server_proc sp;
    assert_true(server_proc_start(&sp, "tcp://127.0.0.1:0", "-", SERVER_PROC_POOL | SERVER_PROC_EXPIRY_1S));
    char paddr[256];
    struct cut_proxy *p = cut_proxy_start(sp.sp_addr, paddr, sizeof(paddr));
    assert_non_null(p);
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, NULL));
    cut_proxy_swallow_replies(p, true); /* the call runs; its reply is lost */
    uint64_t token = 0x5005e4d;
    arpc_future *f = arpc_call_async(c, "t.apply", &token, sizeof(token), 0);
    assert_non_null(f);
    uint64_t applied = 0, dups = 0;
    for (int i = 0; i < 400 && applied == 0; i++) {
        assert_true(server_proc_stats(sp.sp_addr, &applied, &dups));
        if (applied == 0)
            (void)poll(NULL, 0, 10);
    }
    assert_int_equal(1, applied);

    suspend_clocks(); /* the lid closes */
    cut_proxy_hold_new(p, true);
    assert_int_equal(1, cut_proxy_cut(p)); /* the network goes with it */
    assert_true(server_forgets_every_client(sp.sp_addr)); /* meanwhile the server forgets the client */
    cut_proxy_swallow_replies(p, false);
    resume_clocks(); /* the lid opens: the monotonic clocks go on from where they stood */
    cut_proxy_hold_new(p, false);

    int rc = arpc_future_wait(f);
    print_message("the call ended %s: %s\n", arpc_strerror(rc), (const char *)arpc_future_data(f, NULL));
    assert_int_equal(ARPC_ECONNLOST, rc); /* not sent again */
    arpc_future_release(f);
    assert_true(server_proc_stats(sp.sp_addr, &applied, &dups));
    assert_int_equal(1, applied);
    assert_int_equal(0, dups); /* it ran once */
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(p);
    server_proc_kill(&sp);
}

/* The stamps' clock is never ahead of the boot clock read just after it: a stamp ahead of a
 * later reading made a call sent and lost within a kernel tick look ~2.3 years old (its age
 * a negative difference, wrapped), so it was not sent again (request_wire_test failed under
 * load with the first version, which counted the coarse clock on a precise boot reading). */
static void test_stamp_clock_never_ahead(void **state)
{
    (void)state;
    uint64_t ahead = 0;
    for (int i = 0; i < 2000000; i++) {
        uint64_t stamp = arpc_now_boot_coarse_ns(1ull << 24);
        uint64_t now = arpc_now_boot_ns();
        if (stamp > now)
            ahead++;
    }
    assert_int_equal(0, ahead);
}

/* The stamps' clock (base/clock.h: arpc_now_boot_coarse_ns): a suspend since the thread's
 * last read of the boot clock leaves its stamps old (the safe side), until its next read. */
static void test_stamp_clock_errs_old_across_a_suspend(void **state)
{
    (void)state;
    enum { SUSPEND_MS = 200, KERNEL_TICK_MS = 10 };
    const uint64_t never = UINT64_MAX / 2, ms = 1000000;
    uint64_t before = arpc_now_boot_coarse_ns(0); /* read now */
    assert_true(before <= arpc_now_boot_ns() + KERNEL_TICK_MS * ms);
    suspend_clocks();
    uint64_t until = arpc_now_boot_ns() + SUSPEND_MS * ms;
    while (arpc_now_boot_ns() < until)
        (void)poll(NULL, 0, 10);
    resume_clocks();
    uint64_t stale = arpc_now_boot_coarse_ns(never); /* no read since: the suspend is missing */
    uint64_t boot = arpc_now_boot_ns();
    assert_true(stale + (SUSPEND_MS - KERNEL_TICK_MS) * ms <= boot);
    uint64_t fresh = arpc_now_boot_coarse_ns(0);
    assert_true(fresh + KERNEL_TICK_MS * ms >= boot);
    assert_true(fresh <= arpc_now_boot_ns() + KERNEL_TICK_MS * ms);
}

int main(int argc, char **argv)
{
    server_proc_main(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stamp_clock_never_ahead),
        cmocka_unit_test(test_stamp_clock_errs_old_across_a_suspend),
        cmocka_unit_test_teardown(test_suspended_client_does_not_send_a_forgotten_call_again, server_proc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
