/*
 * What a connection holds against its bound (arpc_conn_limit_bytes): its read buffer, a large
 * body read apart, its queued output, and the replies it owes to requests already read
 * (arpc_conn_owe), so that a peer asking for large replies and never reading them cannot make
 * the server hold more than the bound (docs/SECURITY.md). Over it, input is held until the
 * total is back under three quarters.
 */
#include "core/conn_bytes.h"

#include <stdint.h>

/* Not while nothing is owed or queued: then only a frame being read counts, which max_body
 * bounds, and holding it halfway would wait for ever. */
bool conn_bytes_over(const struct arpc_conn *conn)
{
    return conn->c_max_bytes != 0 && (conn->c_owed > 0 || conn->c_out.q_bytes > 0) &&
           arpc_conn_bytes(conn) > conn->c_max_bytes;
}

bool conn_bytes_fit(const struct arpc_conn *conn)
{
    return (conn->c_owed == 0 && conn->c_out.q_bytes == 0) ||
           arpc_conn_bytes(conn) <= conn->c_max_bytes - conn->c_max_bytes / 4;
}

/* Saturating: a bound near SIZE_MAX (in effect none) must not wrap round to a small total. */
static size_t conn_add_sat(size_t a, size_t b) { return b > SIZE_MAX - a ? SIZE_MAX : a + b; }

size_t arpc_conn_bytes(const struct arpc_conn *conn)
{
    /* A large body read apart (core/conn_body.c) is held memory too, as the read buffer is. */
    size_t held = conn_add_sat(conn->c_rcap, conn->c_body != NULL ? conn->c_body_cap : 0);
    return conn_add_sat(conn_add_sat(held, conn->c_out.q_bytes), conn->c_owed);
}

void arpc_conn_limit_bytes(struct arpc_conn *conn, size_t max) { conn->c_max_bytes = max; }

void arpc_conn_owe(struct arpc_conn *conn, size_t n)
{
    conn->c_owed = conn_add_sat(conn->c_owed, n);
    if (conn->c_open && conn_bytes_over(conn))
        conn_hold_own(conn, ARPC_CONN_HOLD_BYTES);
}

void arpc_conn_paid(struct arpc_conn *conn, size_t n)
{
    conn->c_owed = n < conn->c_owed ? conn->c_owed - n : 0;
    if ((conn->c_hold & ARPC_CONN_HOLD_BYTES) && conn_bytes_fit(conn))
        arpc_conn_release_input(conn, ARPC_CONN_HOLD_BYTES);
}
