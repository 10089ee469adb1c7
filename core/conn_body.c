/*
 * A large frame's body read into a buffer of its own, which the owner may keep as the
 * request's or the reply's payload (arpc_conn_take_body): the body's bytes are copied by the
 * kernel straight to where they stay, instead of into the read buffer, out of it (compaction
 * of a partial frame) and into the payload's allocation. Buffers come from and go back to the
 * connection's cache (base/buf_cache.h), so steady bulk traffic does not allocate.
 */
#include "core/conn_body.h"

#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

bool conn_body_begin(struct arpc_conn *conn, size_t need)
{
    size_t buffered = conn->c_rend - conn->c_rstart;
    if (need < ARPC_FRAME_HEADER_SIZE + (size_t)ARPC_CONN_BODY_MIN || buffered < ARPC_FRAME_HEADER_SIZE ||
        conn->c_skip > 0 || conn->c_body != NULL)
        return false;
    size_t body_len = need - ARPC_FRAME_HEADER_SIZE; /* <= max_body: the decoder judged the header */
    size_t got = buffered - ARPC_FRAME_HEADER_SIZE;  /* < body_len: the frame is incomplete */
    /* Up to the eager bound the whole body at once; beyond it, twice what has arrived. */
    size_t first = body_len <= ARPC_CONN_BODY_EAGER_MAX
                       ? body_len
                       : min_size(body_len, got * 2 > ARPC_CONN_BODY_EAGER_MAX ? got * 2 : ARPC_CONN_BODY_EAGER_MAX);
    size_t cap = 0;
    uint8_t *body = arpc_buf_get(&conn->c_bufs, first, &cap);
    if (body == NULL)
        return false;
    const uint8_t *src = conn->c_rbuf + conn->c_rstart;
    memcpy(conn->c_body_head, src, ARPC_FRAME_HEADER_SIZE);
    memcpy(body, src + ARPC_FRAME_HEADER_SIZE, got);
    conn->c_body = body;
    conn->c_body_cap = cap;
    conn->c_body_len = (uint32_t)body_len;
    conn->c_body_have = (uint32_t)got;
    conn->c_rstart = conn->c_rend;
    return true;
}

int conn_body_room(struct arpc_conn *conn, uint8_t **dst, size_t *room)
{
    if (conn->c_body_have == conn->c_body_cap) {
        /* A body beyond the eager bound grows as it arrives, at most doubling. */
        size_t cap = min_size(conn->c_body_cap * 2, conn->c_body_len);
        uint8_t *nb = arpc_realloc(conn->c_body, cap);
        if (nb == NULL)
            return ARPC_ENOMEM;
        conn->c_body = nb;
        conn->c_body_cap = cap;
    }
    *dst = conn->c_body + conn->c_body_have;
    *room = min_size(conn->c_body_cap, conn->c_body_len) - conn->c_body_have;
    return ARPC_OK;
}

/* The body leaves the connection: kept for reuse unless the owner took it. */
static void conn_body_done(struct arpc_conn *conn)
{
    uint8_t *body = conn->c_body;
    conn->c_body = NULL;
    conn->c_body_offered = false;
    arpc_buf_put(&conn->c_bufs, body, conn->c_body_cap);
}

void conn_body_advance(struct arpc_conn *conn, size_t n)
{
    conn->c_body_have += (uint32_t)n;
    if (conn->c_body_have < conn->c_body_len)
        return;
    struct arpc_frame f;
    int rc = arpc_frame_decode_split(conn->c_body_head, conn->c_body, conn->c_max_body, &f);
    if (rc != ARPC_OK) {
        conn_body_done(conn);
        conn_bad_input(conn, rc, conn->c_body_head, sizeof(conn->c_body_head));
        return;
    }
    conn->c_body_offered = true;
    conn_hand_up(conn, &f);
    conn_body_done(conn);
}

void conn_body_fini(struct arpc_conn *conn)
{
    arpc_free(conn->c_body);
    conn->c_body = NULL;
    conn->c_body_offered = false;
    arpc_buf_cache_close(&conn->c_bufs);
}

uint8_t *arpc_conn_take_body(struct arpc_conn *conn, size_t *cap)
{
    if (!conn->c_body_offered)
        return NULL;
    uint8_t *body = conn->c_body;
    *cap = conn->c_body_cap;
    conn->c_body = NULL;
    conn->c_body_offered = false;
    return body;
}

bool arpc_conn_body_offered(const struct arpc_conn *conn) { return conn->c_body_offered; }

void *arpc_conn_buf_get(struct arpc_conn *conn, size_t size, size_t *cap)
{
    return arpc_buf_get(&conn->c_bufs, size, cap);
}

void arpc_conn_buf_put(struct arpc_conn *conn, void *block, size_t cap) { arpc_buf_put(&conn->c_bufs, block, cap); }
