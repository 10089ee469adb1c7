/*
 * The count of arpc's running threads (async/awake.h).
 *
 * The CPUs are the process's affinity mask when first asked (sched_getaffinity), 1 if that
 * fails: a process pinned to one CPU never spins.
 */
#define _GNU_SOURCE
#include "async/awake.h"

#include <sched.h>
#include <stdatomic.h>

#include "base/cacheline.h"

static struct {
    ARPC_CACHELINE_GAP(gap0);
    atomic_int running;
    ARPC_CACHELINE_GAP(gap1);
} awake;

static atomic_int awake_cpus; /* 0 until first asked */

static int awake_cpu_count(void)
{
    int n = atomic_load_explicit(&awake_cpus, memory_order_relaxed);
    if (n > 0)
        return n;
    cpu_set_t set;
    n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    if (n < 1)
        n = 1;
    atomic_store_explicit(&awake_cpus, n, memory_order_relaxed);
    return n;
}

void arpc_awake_add(int delta)
{
    atomic_fetch_add_explicit(&awake.running, delta, memory_order_relaxed);
}

bool arpc_awake_cpu_spare(void)
{
    return atomic_load_explicit(&awake.running, memory_order_relaxed) <= awake_cpu_count();
}

int arpc_awake_running(void) { return atomic_load_explicit(&awake.running, memory_order_relaxed); }
