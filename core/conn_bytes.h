/*
 * Between core/conn.c, core/conn_bytes.c and core/conn_send.c (the connection's insides, loop
 * thread): the bound on the bytes a connection holds (arpc_conn_limit_bytes in core/conn.h)
 * and the holds on its input that output and that bound set.
 */
#ifndef ARPC_CORE_CONN_BYTES_H
#define ARPC_CORE_CONN_BYTES_H

#include <stdbool.h>

#include "core/conn.h"

/* Over the bytes bound: input is held (ARPC_CONN_HOLD_BYTES) until it fits again. */
bool conn_bytes_over(const struct arpc_conn *conn);
/* Back under three quarters of the bound (or owing and queueing nothing): the hold ends. */
bool conn_bytes_fit(const struct arpc_conn *conn);
/* The connection holds its own input for reason (the owner hears of it, e.g. to log it). */
void conn_hold_own(struct arpc_conn *conn, unsigned reason);

#endif
