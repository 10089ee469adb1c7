/*
 * A process that may use one CPU only never polls before sleeping (async/awake.c): a thread
 * that spins there, yielding, competes with the very thread whose work it waits for. The
 * kernel's runnable count must not be what keeps it from polling: the test takes it away
 * (the /proc/loadavg descriptor made to read nothing, as for a process without /proc), so only
 * arpc's own gate is left.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "async/awake.h"

static bool never(const void *arg)
{
    (void)arg;
    return false;
}

/* The descriptor awake.c opened on /proc/loadavg, -1 if none. */
static int loadavg_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int found = -1;
    for (struct dirent *e; found < 0 && (e = readdir(d)) != NULL;) {
        char path[300], target[PATH_MAX];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = '\0';
            if (strcmp(target, "/proc/loadavg") == 0)
                found = atoi(e->d_name);
        }
    }
    closedir(d);
    return found;
}

static void test_one_cpu_never_polls(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(0, sched_getaffinity(0, sizeof(set), &set));
    int cpu = 0;
    while (!CPU_ISSET(cpu, &set))
        cpu++;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    assert_int_equal(0, sched_setaffinity(0, sizeof(set), &set)); /* before the CPUs are counted */
    arpc_awake_init();
    int fd = loadavg_fd();
    if (fd >= 0) { /* unreadable from now on: the runnable count says nothing */
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        assert_true(null >= 0);
        assert_int_equal(fd, dup2(null, fd));
        close(null);
    }
    arpc_awake_add(1); /* this thread, as an actor about to sleep, alone running */
    assert_false(arpc_awake_cpu_spare());
    assert_false(arpc_awake_poll(never, NULL, UINT64_C(1000000000)));
    arpc_awake_add(-1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_cpu_never_polls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
