/*
 * What a connection holds against its bound (arpc_conn_limit_bytes): its read buffer, a large
 * body read apart, its queued output, and the replies it owes to requests already read
 * (arpc_conn_owe), so that a peer asking for large replies and never reading them cannot make
 * the server hold more than the bound (docs/SECURITY.md). Over it, input is held until the
 * total is back under three quarters.
 */
#include "core/conn_bytes.h"

size_t arpc_conn_bytes(const struct arpc_conn *conn) { return conn_bytes_held(conn); }

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
