/*
 * Log lines about what a peer did: a malformed frame, a refused token, a timeout it ran into, a
 * limit it hit. A peer decides how often these happen (max_fault_rate lets a faulting peer
 * have 1,000 connections a second), so a line each would let it write the server's log at its
 * pace. At most PEER_LOG_BURST of them are logged per second per loop; the next one logged
 * says how many were not. Lines about the server itself never go through here.
 */
#ifndef ARPC_CORE_PEER_LOG_H
#define ARPC_CORE_PEER_LOG_H

#include "arpc/log.h"
#include "arpc/loop.h"

#define PEER_LOG_BURST 10u
#define PEER_LOG_EVERY_NS 1000000000ull

/* As arpc_log, within the budget above. loop: the loop the line's connection or listener
 * belongs to; its thread only. */
void peer_log(arpc_loop *loop, enum arpc_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
