/* What another thread of the test's process is doing, from /proc (test_util.h). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "support/test_util.h"

int thread_id(void) { return (int)syscall(SYS_gettid); }

bool thread_in_poll(int tid)
{
    char path[64], buf[64] = {0};
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    char want[16];
    snprintf(want, sizeof(want), "%d ", SYS_poll);
    return n > 0 && strncmp(buf, want, strlen(want)) == 0;
}
