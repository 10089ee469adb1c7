/* One log line per interval for a frequent event (base/log_throttle.h). */
#include "base/log_throttle.h"

#include <stdio.h>

bool arpc_log_throttle_due(struct arpc_log_throttle *t, uint64_t now_ns, uint64_t every_ns, uint32_t burst,
                           uint64_t *unlogged)
{
    t->lt_events++;
    bool new_interval = t->lt_logged == 0 || now_ns - t->lt_at_ns >= every_ns;
    if (!new_interval && t->lt_in_window >= burst)
        return false;
    if (new_interval) {
        t->lt_at_ns = now_ns;
        t->lt_in_window = 0;
    }
    *unlogged = t->lt_logged != 0 ? t->lt_events - t->lt_logged - 1 : 0;
    t->lt_logged = t->lt_events;
    t->lt_in_window++;
    return true;
}

const char *arpc_log_throttle_more(char *buf, size_t size, uint64_t unlogged, const char *what)
{
    if (unlogged == 0)
        buf[0] = '\0';
    else
        snprintf(buf, size, " (%llu more %s since the last such line)", (unsigned long long)unlogged, what);
    return buf;
}
