/* Log lines about what peers did, within a budget per loop (core/peer_log.h). */
#include "core/peer_log.h"

#include <stdarg.h>
#include <stdio.h>

#include "async/loop_internal.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/log_throttle.h"

void peer_log(arpc_loop *loop, enum arpc_log_level level, const char *fmt, ...)
{
    if (!arpc_log_enabled(level))
        return; /* not counted: a line nobody sees costs no budget */
    uint64_t unlogged;
    if (!arpc_log_throttle_due(arpc_loop_peer_log(loop), arpc_now_coarse_ns(), PEER_LOG_EVERY_NS, PEER_LOG_BURST,
                               &unlogged))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (unlogged == 0)
        arpc_log(level, "%s", line);
    else
        arpc_log(level, "%s [%llu lines about peers before this one not logged: at most %u a second]", line,
                 (unsigned long long)unlogged, PEER_LOG_BURST);
}
