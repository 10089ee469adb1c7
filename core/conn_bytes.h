/*
 * Between core/conn.c, core/conn_bytes.c and core/conn_send.c (the connection's insides, loop
 * thread): the bound on the bytes a connection holds (arpc_conn_limit_bytes in core/conn.h)
 * and the holds on its input that output and that bound set.
 */
#ifndef ARPC_CORE_CONN_BYTES_H
#define ARPC_CORE_CONN_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conn.h"

/* Inline: every frame queued asks (core/conn_send.c). */

/* Saturating: a bound near SIZE_MAX (in effect none) must not wrap round to a small total. */
static inline size_t conn_add_sat(size_t a, size_t b) { return b > SIZE_MAX - a ? SIZE_MAX : a + b; }

/* What arpc_conn_bytes says. A large body read apart (core/conn_body.c) is held memory too,
 * as the read buffer is. */
static inline size_t conn_bytes_held(const struct arpc_conn *conn)
{
    size_t held = conn_add_sat(conn->c_rcap, conn->c_body != NULL ? conn->c_body_cap : 0);
    return conn_add_sat(conn_add_sat(held, conn->c_out.q_bytes), conn->c_owed);
}

/* Over the bytes bound: input is held (ARPC_CONN_HOLD_BYTES) until it fits again. Not while
 * nothing is owed or queued: then only a frame being read counts, which max_body bounds, and
 * holding it halfway would wait for ever. */
static inline bool conn_bytes_over(const struct arpc_conn *conn)
{
    return conn->c_max_bytes != 0 && (conn->c_owed > 0 || conn->c_out.q_bytes > 0) &&
           conn_bytes_held(conn) > conn->c_max_bytes;
}

/* Back under three quarters of the bound (or owing and queueing nothing): the hold ends. */
static inline bool conn_bytes_fit(const struct arpc_conn *conn)
{
    return (conn->c_owed == 0 && conn->c_out.q_bytes == 0) ||
           conn_bytes_held(conn) <= conn->c_max_bytes - conn->c_max_bytes / 4;
}
/* Queued output over the hard cap (ARPC_CONN_OUTPUT_HARD_FACTOR x the bound). */
static inline bool conn_output_over_cap(const struct arpc_conn *conn)
{
    return conn->c_max_bytes != 0 && conn->c_out.q_bytes / ARPC_CONN_OUTPUT_HARD_FACTOR > conn->c_max_bytes;
}

/* The connection holds its own input for reason (the owner hears of it, e.g. to log it). */
void conn_hold_own(struct arpc_conn *conn, unsigned reason);

#endif
