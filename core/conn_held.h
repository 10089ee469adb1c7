/*
 * Between core/conn.c and core/conn_held.c (the connection's insides, loop thread): control
 * frames passing a held connection. See arpc_conn_hold_input in core/conn.h.
 */
#ifndef ARPC_CORE_CONN_HELD_H
#define ARPC_CORE_CONN_HELD_H

#include <stdbool.h>

#include "core/conn.h"

/* Whether control frames pass the hold now (see arpc_conn_hold_input): held, passing
 * control, open and not closing, no large body or skip in progress (the bytes that come next
 * are theirs), output under ARPC_CONN_BACKLOG_HIGH and the bytes bound (arpc_conn_limit_bytes). */
bool conn_held_passes(const struct arpc_conn *conn);
/* Hands up the control frames among the complete frames buffered after c_held_scan, closing
 * the gaps they leave. True when the hold ended meanwhile (a cancel's reply let it go): the
 * caller parses on. */
bool conn_held_pass(struct arpc_conn *conn);

#endif
