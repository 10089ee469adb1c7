/*
 * Pipelined repetition: keep `window` calls outstanding, take completions in the order they
 * come (a completion queue), start the next call for each. Each call's start time rides in
 * its slot, the slot index in the tag, so nothing is allocated per call.
 */
#include "call_repeat.h"

#include <stdlib.h>
#include <string.h>

#include "arpc/cq.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "base/histogram.h"

static int start_call(arpc_client *c, const char *method, const void *body, size_t len, int64_t deadline_ms,
                      arpc_cq *cq, uint64_t *starts, size_t slot)
{
    starts[slot] = arpc_now_ns();
    return arpc_go(c, method, body, len, deadline_ms, cq, (void *)(uintptr_t)slot);
}

int call_repeat(arpc_client *c, const char *method, const void *body, size_t len, int64_t deadline_ms, uint64_t n,
                unsigned window, struct repeat_summary *out)
{
    memset(out, 0, sizeof(*out));
    if (window > n)
        window = (unsigned)n;
    arpc_hist *h = malloc(sizeof(*h));
    uint64_t *starts = calloc(window, sizeof(*starts));
    arpc_cq *cq = NULL;
    if (h == NULL || starts == NULL || arpc_cq_create(&cq) != ARPC_OK) {
        free(h);
        free(starts);
        return ARPC_ENOMEM;
    }
    arpc_hist_init(h);
    uint64_t t0 = arpc_now_ns(), started = 0, done = 0;
    for (; started < window; started++)
        if (start_call(c, method, body, len, deadline_ms, cq, starts, (size_t)started) != ARPC_OK)
            break; /* no memory to start more: measure what runs */
    while (done < started) {
        arpc_future *f = NULL;
        void *tag = NULL;
        if (arpc_cq_next(cq, &f, &tag) != ARPC_OK)
            break;
        size_t slot = (size_t)(uintptr_t)tag;
        arpc_hist_record(h, arpc_now_ns() - starts[slot]);
        int rc = arpc_future_poll(f);
        done++;
        if (rc == ARPC_OK) {
            out->ok++;
        } else if (out->first_error == ARPC_OK) {
            out->first_error = rc;
            out->first_error_msg = arpc_future_take(f, &out->first_error_len);
        }
        arpc_future_release(f);
        if (started < n && start_call(c, method, body, len, deadline_ms, cq, starts, slot) == ARPC_OK)
            started++;
    }
    out->elapsed_s = (double)(arpc_now_ns() - t0) / 1e9;
    out->calls = done;
    out->p50_ns = arpc_hist_percentile(h, 50);
    out->p99_ns = arpc_hist_percentile(h, 99);
    out->max_ns = arpc_hist_percentile(h, 100);
    arpc_cq_destroy(cq);
    free(starts);
    free(h);
    return ARPC_OK;
}
