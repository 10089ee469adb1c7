/*
 * An allocation sweep (tests/alloc_sweep_test.c, jsonrpc_alloc_sweep_test.c): a scenario is run
 * again and again, the k-th allocation failing in run k (once, or every one from it on), for
 * k = 0, 1, ... until a run ends without reaching its failure. The count is the counting
 * allocator's (test_alloc_install), shared by every thread: the same k lands on different
 * allocations from run to run, so a sweep is made several times.
 */
#ifndef ARPC_TEST_ALLOC_SWEEP_H
#define ARPC_TEST_ALLOC_SWEEP_H

#include <stdbool.h>

enum alloc_fault {
    ALLOC_FAULT_ONCE,         /* the k-th allocation fails, the others succeed */
    ALLOC_FAULT_FROM_THEN_ON, /* every allocation from the k-th on fails, until disarmed */
};

/* Arms the failure of the k-th allocation from now (zeroing the count of failures). */
void alloc_fault_arm(enum alloc_fault f, long k);
/* Memory for everyone again. */
void alloc_fault_disarm(void);
/* Allocations failed since the last arm. */
bool alloc_fault_reached(void);

/* Runs counted by a call's one-byte request: byte base + i counts in runs[i], i < n. */
struct sweep_runs {
    _Atomic int *runs;
    int n;
    unsigned char base; /* 0, or '0' for JSON-RPC's params "0", "1", ... */
};
struct arpc_request;
/* A handler (ctx: a struct sweep_runs) that counts its call's run and answers the request's
 * bytes; any thread (a one-way message's answer is dropped). */
void sweep_count_echo(struct arpc_request *req, void *ctx);

/* The outcomes arpc/client.h says a call that did not run ends with. */
bool outcome_did_not_run(int st);

/* What runs ended with, for the sweep's summary line. */
struct alloc_sweep_tally {
    long setup_failed; /* runs whose set-up (create, listen, connect) failed */
    long calls_failed; /* calls of the runs that got that far, not ARPC_OK */
};

/* Runs run(f, k, arg, tally) for k = 0, 1, ... until a run did not reach its failure, rounds
 * times, and prints one line per round (what, then the counts). run arms the failure itself
 * (alloc_fault_arm, after whatever it sets up that is not arpc's) and disarms it before it
 * returns. Fails the test if a round goes on past any plausible number of allocations. */
void alloc_sweep(const char *what, enum alloc_fault f, int rounds,
                 void (*run)(enum alloc_fault f, long k, void *arg, struct alloc_sweep_tally *tally), void *arg);

#endif
