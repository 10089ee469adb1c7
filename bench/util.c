/* Small helpers shared by the bench's files (declared in bench.h). */
#include <stdlib.h>
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
