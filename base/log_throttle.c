/* One log line per interval for a frequent event (base/log_throttle.h). */
#include "base/log_throttle.h"

bool arpc_log_throttle_due(struct arpc_log_throttle *t, uint64_t now_ns, uint64_t every_ns, uint64_t *unlogged)
{
    t->lt_events++;
    if (t->lt_logged != 0 && now_ns - t->lt_at_ns < every_ns)
        return false;
    *unlogged = t->lt_logged != 0 ? t->lt_events - t->lt_logged - 1 : 0;
    t->lt_logged = t->lt_events;
    t->lt_at_ns = now_ns;
    return true;
}
