/*
 * The count of arpc's running threads (async/awake.h).
 *
 * The CPUs are the process's affinity mask when first asked (sched_getaffinity), 1 if that
 * fails: a process pinned to one CPU never spins.
 *
 * Other processes count too: a thread that polls with sched_yield on a machine whose CPUs
 * other processes want hands them its CPU at each yield and may wait a whole time slice to
 * be picked again, while its next job waits. So a CPU is spare only if the kernel's count of
 * runnable threads (/proc/loadavg's fourth field, read through a descriptor kept open, at
 * most once a millisecond for the whole process) is no more than the CPUs as well.
 */
#define _GNU_SOURCE
#include "async/awake.h"

#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "arpc/common.h"

#include "base/cacheline.h"

static struct {
    ARPC_CACHELINE_GAP(gap0);
    atomic_int running;
    ARPC_CACHELINE_GAP(gap1);
} awake;

static atomic_int awake_cpus; /* 0 until first asked */

#define RUNNABLE_EVERY_NS 1000000u
static atomic_int runnable_fd = -2;          /* -2: not opened yet; -1: cannot be read */
static atomic_uint_fast64_t runnable_read_ns; /* when runnable_seen was read */
static atomic_int runnable_seen;             /* threads runnable on the machine then */

/* "0.20 0.18 0.12 3/80 11206": the number before the slash. -1 if unreadable. */
static int runnable_read(void)
{
    int fd = atomic_load_explicit(&runnable_fd, memory_order_relaxed);
    if (fd == -2) {
        int opened = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        if (opened < 0)
            opened = -1;
        int expected = -2;
        if (!atomic_compare_exchange_strong(&runnable_fd, &expected, opened) && opened >= 0)
            close(opened); /* another thread opened it first */
        fd = atomic_load(&runnable_fd);
    }
    char buf[64];
    ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *p = buf;
    for (int spaces = 0; spaces < 3 && *p != '\0'; p++)
        if (*p == ' ')
            spaces++;
    return *p >= '0' && *p <= '9' ? atoi(p) : -1;
}

static int runnable_now(void)
{
    uint64_t now = arpc_now_ns();
    uint64_t last = atomic_load_explicit(&runnable_read_ns, memory_order_relaxed);
    if (now - last >= RUNNABLE_EVERY_NS &&
        atomic_compare_exchange_strong_explicit(&runnable_read_ns, &last, now, memory_order_relaxed,
                                                memory_order_relaxed))
        atomic_store_explicit(&runnable_seen, runnable_read(), memory_order_relaxed);
    return atomic_load_explicit(&runnable_seen, memory_order_relaxed);
}

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
    int cpus = awake_cpu_count();
    return atomic_load_explicit(&awake.running, memory_order_relaxed) <= cpus && runnable_now() <= cpus;
}

bool arpc_awake_poll(bool (*done)(const void *arg), const void *arg, uint64_t budget_ns)
{
    uint64_t until = arpc_now_ns() + budget_ns;
    for (;;) {
        if (done(arg))
            return true;
        if (!arpc_awake_cpu_spare() || arpc_now_ns() >= until)
            return false;
        sched_yield();
    }
}

int arpc_awake_running(void) { return atomic_load_explicit(&awake.running, memory_order_relaxed); }
