/*
 * The count of arpc's running threads (async/awake.h).
 *
 * The CPUs are the process's affinity mask at the first actor's or loop's creation
 * (sched_getaffinity), 1 if that fails: a process pinned to one CPU never spins.
 *
 * Other processes count too: a thread that polls with sched_yield on a machine whose CPUs
 * other processes want hands them its CPU at each yield and may wait a whole time slice to
 * be picked again, while its next job waits. So a CPU is spare only if the kernel's count of
 * runnable threads (/proc/loadavg's fourth field, read at most once a millisecond for the
 * whole process) is no more than the CPUs as well; where it cannot be read (no /proc), arpc's
 * own count decides alone. Its descriptor is opened with the first
 * actor or loop, not when first read, and stays open: a program (or test) that counts its
 * descriptors around its own work sees it appear at a known point.
 *
 * fork(): the child has one thread, the one that forked, but a copy of the count, which
 * holds every thread of the parent then running (a busy loop, an actor inside a job): a count
 * the child's threads could never bring down, so its actors would never poll. Each thread
 * keeps its own share of the count (every change is made by the thread it counts: an actor's,
 * a loop's between its check and prepare watchers, a caller's while it drives a loop), and the
 * child's count starts from the forking thread's share (pthread_atfork). The descriptor stays:
 * the child shares its open file, which pread reads at its own offset.
 */
#define _GNU_SOURCE
#include "async/awake.h"

#include <fcntl.h>
#include <pthread.h>
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

#define RUNNABLE_EVERY_NS 1000000u
static pthread_once_t awake_once = PTHREAD_ONCE_INIT;
static int awake_cpus;                        /* set once: the affinity mask's CPUs, 1 at least */
static int loadavg_fd;                        /* set once: /proc/loadavg, -1 if it cannot be opened */
static atomic_uint_fast64_t runnable_read_ns; /* when runnable_seen was read */
static atomic_int runnable_seen;             /* threads runnable on the machine then */
static atomic_bool awake_ready;               /* awake_init has run: nothing spins before */
static _Thread_local int awake_mine;          /* this thread's share of awake.running */

/* The child of a fork: only the forking thread runs, and counts what it counted. */
static void awake_after_fork(void)
{
    atomic_store_explicit(&awake.running, awake_mine > 0 ? awake_mine : 0, memory_order_relaxed);
}

static void awake_init(void)
{
    cpu_set_t set;
    awake_cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    if (awake_cpus < 1)
        awake_cpus = 1;
    loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    /* Once per process. (ENOMEM: a child of a fork starts from its parent's count.) */
    (void)pthread_atfork(NULL, NULL, awake_after_fork);
    atomic_store_explicit(&awake_ready, true, memory_order_release);
}

void arpc_awake_init(void) { pthread_once(&awake_once, awake_init); }

/* "0.20 0.18 0.12 3/80 11206": the number before the slash. -1 if unreadable. */
static int runnable_read(void)
{
    char buf[64];
    ssize_t n = loadavg_fd >= 0 ? pread(loadavg_fd, buf, sizeof(buf) - 1, 0) : -1;
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

void arpc_awake_add(int delta)
{
    awake_mine += delta;
    atomic_fetch_add_explicit(&awake.running, delta, memory_order_relaxed);
}

bool arpc_awake_cpu_spare(void)
{
    if (!atomic_load_explicit(&awake_ready, memory_order_acquire))
        return false;
    int cpus = awake_cpus;
    /* One CPU: the poller alone is all of it, and its spin would compete with the thread it
     * waits for. */
    return cpus > 1 && atomic_load_explicit(&awake.running, memory_order_relaxed) <= cpus && runnable_now() <= cpus;
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
