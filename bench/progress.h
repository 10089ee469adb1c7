/*
 * bench/progress.h: the progress line on stderr.
 *
 * Shown only once a run has lasted a second, redrawn in place with '\r' at most four times a
 * second, and erased when the run ends so the table that follows starts on a clean line.
 * Used by one thread at a time.
 */
#ifndef ARPC_BENCH_PROGRESS_H
#define ARPC_BENCH_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct bench_progress {
    const char *p_label;
    uint64_t p_total;
    uint64_t p_start_ns;
    uint64_t p_next_ns; /* no redraw before this */
    bool p_enabled;
    bool p_shown;
};

void bench_progress_start(struct bench_progress *p, const char *label, uint64_t total, bool enabled);

/* done calls so far; now_ns from bench_now_ns() (callers usually have one at hand). Cheap
 * when it is not time to redraw: one comparison. */
void bench_progress_update(struct bench_progress *p, uint64_t done, uint64_t now_ns);

void bench_progress_end(struct bench_progress *p);

#endif
