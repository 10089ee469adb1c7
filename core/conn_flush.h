/*
 * Between core/conn.c and core/conn_flush.c (the connection's insides, loop thread): the loop's
 * writing of a connection's output queue, and what each side calls of the other's.
 */
#ifndef ARPC_CORE_CONN_FLUSH_H
#define ARPC_CORE_CONN_FLUSH_H

#include <stdbool.h>

#include "core/conn.h"

/* conn_flush.c: the watchers conn.c starts (c_flush, c_wio). */
void conn_on_prepare(struct ev_loop *ev, ev_prepare *w, int revents);
void conn_on_writable(struct ev_loop *ev, ev_io *w, int revents);

/* conn.c */
void conn_on_readable(struct ev_loop *ev, ev_io *w, int revents);
/* Stops reading (the hangup watch goes with it). */
void conn_unwatch_reads(struct arpc_conn *conn);
/* Closes now, whatever is queued (arpc_conn_close defers a close asked for in a dispatch). */
void conn_do_close(struct arpc_conn *conn, int reason);
/* The stream broke: closes with its reason and words. */
void conn_stream_failed(struct arpc_conn *conn);
/* After output drained: lets go of the holds that no longer apply. True when the connection
 * was closed. */
bool conn_check_resume(struct arpc_conn *conn);

#endif
