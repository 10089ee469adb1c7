/*
 * Between core/conn.c and core/conn_body.c (the connection's insides, loop thread): a large
 * frame's body read into a buffer of its own. See "Large frames" in core/conn.h.
 */
#ifndef ARPC_CORE_CONN_BODY_H
#define ARPC_CORE_CONN_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conn.h"

/* conn_body.c */
/* The frame at c_rstart is incomplete and needs `need` bytes in total: if its body is large,
 * moves its header and the body bytes buffered so far out of the read buffer and returns
 * true; reads then go to the body (conn_body_room) until it is whole. False (nothing
 * changed): a small frame, or no memory for the body (the read buffer takes it). */
bool conn_body_begin(struct arpc_conn *conn, size_t need);
/* While a body is being read (c_body != NULL): where the next read goes. ARPC_OK or
 * ARPC_ENOMEM (the body could not grow). */
int conn_body_room(struct arpc_conn *conn, uint8_t **dst, size_t *room);
/* n bytes were read to where conn_body_room said: once the body is whole, its frame is
 * decoded and handed up (bad input closes the connection as in the read buffer). */
void conn_body_advance(struct arpc_conn *conn, size_t n);
/* At close: frees a body in progress and every kept buffer. */
void conn_body_fini(struct arpc_conn *conn);

/* conn.c */
/* A decoded frame goes up: PINGs are answered, PONGs only count as input, the owner sees the
 * rest. */
void conn_hand_up(struct arpc_conn *conn, const struct arpc_frame *f);
/* Bad input (ARPC_EPROTO or ARPC_ETOOLARGE) in the frame whose first len bytes are at frame:
 * logged with what was wrong, the owner told, the connection closed. */
void conn_bad_input(struct arpc_conn *conn, int rc, const uint8_t *frame, size_t len);

#endif
