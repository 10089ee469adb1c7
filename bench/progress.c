#include "progress.h"

#include <stdio.h>

#include "bench.h"

#define SHOW_AFTER_NS 1000000000u /* short runs get no progress line */
#define REDRAW_NS 250000000u      /* at most 4 redraws a second */

void bench_progress_start(struct bench_progress *p, const char *label, uint64_t total, bool enabled)
{
    p->p_label = label;
    p->p_total = total;
    p->p_start_ns = bench_now_ns();
    p->p_next_ns = p->p_start_ns + SHOW_AFTER_NS;
    p->p_enabled = enabled;
    p->p_shown = false;
}

void bench_progress_update(struct bench_progress *p, uint64_t done, uint64_t now)
{
    if (!p->p_enabled || now < p->p_next_ns)
        return;
    p->p_next_ns = now + REDRAW_NS;
    p->p_shown = true;
    double pct = p->p_total ? 100.0 * (double)done / (double)p->p_total : 100.0;
    double secs = (double)(now - p->p_start_ns) / 1e9;
    fprintf(stderr, "\r  %-34s %12llu / %llu calls (%5.1f%%) %6.1f s ", p->p_label,
            (unsigned long long)done, (unsigned long long)p->p_total, pct, secs);
    fflush(stderr);
}

void bench_progress_end(struct bench_progress *p)
{
    if (p->p_shown) /* blank the line, then return to its start */
        fprintf(stderr, "\r%100s\r", "");
    p->p_shown = false;
}
