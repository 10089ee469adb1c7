/* Small helpers shared by the bench's files (declared in bench.h). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"

uint64_t bench_ctx_switches(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw;
}

uint64_t bench_cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    uint64_t us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
                  (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
    return us * 1000u;
}

static enum bench_role role_of(const char *name)
{
    if (strncmp(name, BENCH_CLIENT_LOOP_NAME, strlen(BENCH_CLIENT_LOOP_NAME)) == 0)
        return BENCH_ROLE_CLIENT_LOOPS;
    if (strcmp(name, "arpc-loop") == 0)
        return BENCH_ROLE_SERVER_LOOP;
    if (strncmp(name, "arpc-worker", 11) == 0)
        return BENCH_ROLE_WORKERS;
    return BENCH_ROLE_OTHER;
}

/* The first line of /proc/self/task/<tid>/<what> into buf (false if unreadable). */
static bool task_read(const char *tid, const char *what, char *buf, size_t len)
{
    char path[64];
    int plen = snprintf(path, sizeof(path), "/proc/self/task/%s/%s", tid, what);
    if (plen < 0 || (size_t)plen >= sizeof(path)) /* never (a tid is digits); checked, or -O3 warns */
        return false;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

static uint64_t status_field(const char *status, const char *field)
{
    const char *p = strstr(status, field);
    return p != NULL ? strtoull(p + strlen(field), NULL, 10) : 0;
}

void bench_threads_read(struct bench_threads *t)
{
    memset(t, 0, sizeof(*t));
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char name[32], sched[128], status[2048];
        if (!task_read(e->d_name, "comm", name, sizeof(name)) || !task_read(e->d_name, "schedstat", sched, sizeof(sched)) ||
            !task_read(e->d_name, "status", status, sizeof(status)))
            continue; /* a thread that ended meanwhile */
        name[strcspn(name, "\n")] = '\0';
        enum bench_role r = role_of(name);
        t->cpu_ns[r] += strtoull(sched, NULL, 10);
        t->ctx[r] += status_field(status, "\nvoluntary_ctxt_switches:") +
                     status_field(status, "\nnonvoluntary_ctxt_switches:");
        t->valid = true;
    }
    closedir(d);
}

arpc_hist *bench_hist_new(void)
{
    arpc_hist *h = malloc(sizeof(*h));
    if (h != NULL)
        arpc_hist_init(h);
    return h;
}

/* Bytes that differ from their neighbours and from a shifted copy, so a reply that is
 * truncated, offset or another call's shows up in a memcmp. */
void bench_fill_pattern(void *buf, size_t len)
{
    unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 131u + (i >> 8) + 7u);
}

const char *bench_fsync_name(enum arpc_fsync f)
{
    return f == ARPC_FSYNC_BATCH ? "batch" : f == ARPC_FSYNC_OFF ? "off" : "always";
}
