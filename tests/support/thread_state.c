/* What another thread of the test's process is doing, from /proc (test_util.h). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "support/test_util.h"

int thread_id(void) { return (int)syscall(SYS_gettid); }

/* The system call thread tid is blocked in, or -1. */
static long thread_syscall(int tid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
    FILE *fp = fopen(path, "r");
    long nr = -1;
    if (fp != NULL) {
        if (fscanf(fp, "%ld", &nr) != 1)
            nr = -1;
        fclose(fp);
    }
    return nr;
}

bool thread_in_poll(int tid) { return thread_syscall(tid) == SYS_poll; }

bool thread_in_any_poll(int tid)
{
    long nr = thread_syscall(tid);
    return nr == SYS_poll || nr == SYS_ppoll || nr == SYS_epoll_wait || nr == SYS_epoll_pwait;
}
