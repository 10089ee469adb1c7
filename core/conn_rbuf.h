/*
 * Between core/conn.c and core/conn_rbuf.c (the connection's insides, loop thread): the read
 * buffer as a block that frames' bytes can be lent from (arpc_conn_pin, core/conn.h).
 *
 * The block starts with a header (struct conn_rbuf_head) and c_rbuf points just past it. Pins
 * are counted on the loop without atomics (c_rbuf_pins); the header's count starts at a bias
 * and each unpin, on any thread, takes one off it. So the loop knows every pin of the block
 * was given back when the count is the bias minus its pins, and only then may it write over
 * bytes it lent (reading to the front again, compacting, moving the block by a realloc).
 * Otherwise the block is retired: the loop reads on in a fresh one (the unparsed bytes, less
 * than a frame, copied over) and the last unpin gives the old one to the connection's cache.
 */
#ifndef ARPC_CORE_CONN_RBUF_H
#define ARPC_CORE_CONN_RBUF_H

#include <stddef.h>

#include "core/conn.h"

/* A read buffer of cap bytes for conn (init, or a replacement): ARPC_OK or ARPC_ENOMEM. */
int conn_rbuf_alloc(struct arpc_conn *conn, size_t cap);
/* Resizes the read buffer (arpc_realloc of its block); only when not lent (conn_rbuf_unshare
 * first). ARPC_OK or ARPC_ENOMEM (the buffer is unchanged). */
int conn_rbuf_resize(struct arpc_conn *conn, size_t cap);
/* Whether bytes of the read buffer are lent out now. */
bool conn_rbuf_lent(struct arpc_conn *conn);
/* Makes the read buffer the loop's alone before it writes over bytes it lent: when every pin
 * came back, it is reused as it is; else the unparsed bytes move to the front of a fresh
 * buffer of the same size (c_rstart becomes 0). ARPC_OK or ARPC_ENOMEM (nothing changed). */
int conn_rbuf_unshare(struct arpc_conn *conn);
/* Frees the read buffer, which holds nothing unparsed and nothing lent (conn_rbuf_lent):
 * c_rbuf becomes NULL until the next read allocates one (conn_rbuf_alloc). */
void conn_rbuf_drop(struct arpc_conn *conn);
/* At close: the loop lets go of its read buffer (freed now, or by its last unpin). */
void conn_rbuf_fini(struct arpc_conn *conn);

#endif
