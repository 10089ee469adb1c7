/* The allocation sweep's driver (support/alloc_sweep.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "arpc/error.h"
#include "arpc/server.h"
#include "support/alloc_sweep.h"
#include "support/test_util.h"

#define ALLOC_SWEEP_MAX_K 20000 /* far above a scenario's allocations: a sweep this long is stuck */

void alloc_fault_arm(enum alloc_fault f, long k)
{
    atomic_store(&test_alloc_refused, 0);
    if (f == ALLOC_FAULT_ONCE)
        atomic_store(&test_alloc_fail_in, k);
    else
        atomic_store(&test_alloc_budget, k);
}

void alloc_fault_disarm(void)
{
    atomic_store(&test_alloc_fail_in, -1);
    atomic_store(&test_alloc_budget, -1);
}

bool alloc_fault_reached(void) { return atomic_load(&test_alloc_refused) > 0; }

void sweep_count_echo(struct arpc_request *req, void *ctx)
{
    const struct sweep_runs *r = ctx;
    size_t len;
    const unsigned char *p = arpc_request_data(req, &len);
    if (len == 1 && p[0] >= r->base && p[0] - r->base < r->n)
        atomic_fetch_add(&r->runs[p[0] - r->base], 1);
    arpc_reply(req, p, len);
}

bool outcome_did_not_run(int st)
{
    switch (st) {
    case ARPC_ENOMEM:
    case ARPC_EREJECTED:
    case ARPC_EOVERLOADED:
    case ARPC_EUNREACHABLE:
    case ARPC_EEXPIRED:
    case ARPC_ENOMETHOD:
    case ARPC_ESHUTDOWN:
    case ARPC_EAUTH:
        return true;
    default:
        return false;
    }
}

void alloc_sweep(const char *what, enum alloc_fault f, int rounds,
                 void (*run)(enum alloc_fault f, long k, void *arg, struct alloc_sweep_tally *tally), void *arg)
{
    for (int round = 0; round < rounds; round++) {
        struct alloc_sweep_tally tally = {0, 0};
        long k = 0;
        for (;; k++) {
            assert_true(k < ALLOC_SWEEP_MAX_K);
            run(f, k, arg, &tally);
            if (!alloc_fault_reached())
                break;
        }
        assert_true(k > 10); /* the sweep went past the set-up's first allocations at least */
        printf("%s, %s: %ld runs, %ld stopped in set-up, %ld calls failed\n", what,
               f == ALLOC_FAULT_ONCE ? "one allocation failed" : "memory gone", k, tally.setup_failed,
               tally.calls_failed);
    }
}
