/*
 * tools/call_repeat.h: arpc-call --repeat: one call made n times, pipelined.
 */
#ifndef ARPC_TOOLS_CALL_REPEAT_H
#define ARPC_TOOLS_CALL_REPEAT_H

#include <stddef.h>
#include <stdint.h>

#include "arpc/client.h"

struct repeat_summary {
    uint64_t calls, ok;
    int first_error;         /* the first failure's code; ARPC_OK: none */
    void *first_error_msg;   /* its message (arpc_free), if the server sent one */
    size_t first_error_len;
    uint64_t p50_ns, p99_ns, max_ns;
    double elapsed_s;
};

/* Makes n calls of method with body, at most `window` outstanding (completion queue), each
 * timed from its start to its completion. ARPC_OK, or ARPC_ENOMEM (nothing could be measured:
 * no histogram or queue). */
int call_repeat(arpc_client *c, const char *method, const void *body, size_t len, int64_t deadline_ms, uint64_t n,
                unsigned window, struct repeat_summary *out);

#endif
