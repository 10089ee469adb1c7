/*
 * The read buffer's bytes lent to the frames' owners (see core/conn_rbuf.h and "Lending" in
 * core/conn.h): a server's request keeps its payload where it was read instead of copying it.
 */
#include "core/conn_rbuf.h"

#include <stdatomic.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"

/* Far above any number of pins one block can see between two resets (a pin is at least
 * ARPC_CONN_PIN_MIN bytes of a block), so the count never reaches zero while the loop owns it. */
#define RBUF_BIAS (1u << 30)

/* Before the buffer's first byte, in RBUF_HEAD bytes: a cache line of its own, so the
 * borrowers' unpins do not share one with the bytes the loop reads next. */
struct conn_rbuf_head {
    atomic_uint rh_refs;         /* RBUF_BIAS while the loop reads into it, minus the unpins */
    size_t rh_cap;               /* the block's size (header included), for the cache */
    struct arpc_buf_cache *rh_cache; /* where its last unpin gives a retired block back */
    atomic_uint *rh_retired;     /* its connection's count of retired blocks */
};

#define RBUF_HEAD 64u
_Static_assert(sizeof(struct conn_rbuf_head) <= RBUF_HEAD, "the read buffer's header outgrew its room");

static struct conn_rbuf_head *rbuf_head(const struct arpc_conn *conn)
{
    return (struct conn_rbuf_head *)(void *)(conn->c_rbuf - RBUF_HEAD);
}

int conn_rbuf_alloc(struct arpc_conn *conn, size_t cap)
{
    size_t have = 0;
    struct conn_rbuf_head *h = arpc_buf_get(&conn->c_bufs, RBUF_HEAD + cap, &have);
    if (h == NULL)
        return ARPC_ENOMEM;
    atomic_init(&h->rh_refs, RBUF_BIAS);
    h->rh_cap = have;
    h->rh_cache = &conn->c_bufs;
    h->rh_retired = &conn->c_rbuf_retired;
    conn->c_rbuf = (uint8_t *)h + RBUF_HEAD;
    conn->c_rcap = cap;
    conn->c_rbuf_pins = 0;
    return ARPC_OK;
}

int conn_rbuf_resize(struct arpc_conn *conn, size_t cap)
{
    struct conn_rbuf_head *h = arpc_realloc(rbuf_head(conn), RBUF_HEAD + cap);
    if (h == NULL)
        return ARPC_ENOMEM;
    h->rh_cap = RBUF_HEAD + cap;
    conn->c_rbuf = (uint8_t *)h + RBUF_HEAD;
    conn->c_rcap = cap;
    return ARPC_OK;
}

bool conn_rbuf_lent(struct arpc_conn *conn)
{
    if (conn->c_rbuf_pins == 0)
        return false;
    /* acquire: the borrowers' reads of the bytes come before the loop writes over them */
    unsigned refs = atomic_load_explicit(&rbuf_head(conn)->rh_refs, memory_order_acquire);
    if (refs != RBUF_BIAS - conn->c_rbuf_pins)
        return true;
    atomic_store_explicit(&rbuf_head(conn)->rh_refs, RBUF_BIAS, memory_order_relaxed); /* nobody else holds it */
    conn->c_rbuf_pins = 0;
    return false;
}

/* The loop lets go of the block: whoever drops the count to zero (here, or the last unpin)
 * gives it back. */
static void rbuf_retire(struct arpc_conn *conn, struct conn_rbuf_head *h, unsigned pins)
{
    /* Counted first, so the last unpin (maybe at once, on another thread) finds it counted. */
    atomic_fetch_add_explicit(&conn->c_rbuf_retired, 1, memory_order_relaxed);
    if (atomic_fetch_sub_explicit(&h->rh_refs, RBUF_BIAS - pins, memory_order_acq_rel) != RBUF_BIAS - pins)
        return; /* lent: the last unpin gives it back */
    atomic_fetch_sub_explicit(h->rh_retired, 1, memory_order_relaxed);
    arpc_buf_put(h->rh_cache, h, h->rh_cap);
}

int conn_rbuf_unshare(struct arpc_conn *conn)
{
    if (!conn_rbuf_lent(conn))
        return ARPC_OK;
    struct conn_rbuf_head *old = rbuf_head(conn);
    const uint8_t *unparsed = conn->c_rbuf + conn->c_rstart;
    size_t n = conn->c_rend - conn->c_rstart;
    unsigned pins = conn->c_rbuf_pins;
    if (conn_rbuf_alloc(conn, conn->c_rcap) != ARPC_OK)
        return ARPC_ENOMEM; /* (conn_rbuf_alloc changes nothing when it fails) */
    memcpy(conn->c_rbuf, unparsed, n);
    conn->c_rstart = 0;
    conn->c_rend = n;
    rbuf_retire(conn, old, pins);
    return ARPC_OK;
}

void conn_rbuf_drop(struct arpc_conn *conn)
{
    /* To the allocator, not the connection's cache: the point is to hold nothing. */
    arpc_free(rbuf_head(conn));
    conn->c_rbuf = NULL;
    conn->c_rcap = 0;
    conn->c_rstart = conn->c_rend = 0;
}

void conn_rbuf_fini(struct arpc_conn *conn)
{
    if (conn->c_rbuf == NULL)
        return;
    rbuf_retire(conn, rbuf_head(conn), conn->c_rbuf_pins);
    conn->c_rbuf = NULL;
    conn->c_rcap = 0;
}

struct conn_rbuf_head *arpc_conn_pin(struct arpc_conn *conn, const void *p, size_t len)
{
    const uint8_t *b = p;
    if (len < ARPC_CONN_PIN_MIN || conn->c_rbuf == NULL || b < conn->c_rbuf || b + len > conn->c_rbuf + conn->c_rend ||
        atomic_load_explicit(&conn->c_rbuf_retired, memory_order_relaxed) >= ARPC_CONN_RBUF_RETIRED_MAX)
        return NULL;
    conn->c_rbuf_pins++;
    return rbuf_head(conn);
}

void arpc_conn_unpin(struct conn_rbuf_head *pin)
{
    if (pin == NULL)
        return;
    /* release: this thread's reads of the bytes come before whoever reuses them */
    if (atomic_fetch_sub_explicit(&pin->rh_refs, 1, memory_order_acq_rel) != 1)
        return;
    atomic_fetch_sub_explicit(pin->rh_retired, 1, memory_order_relaxed);
    arpc_buf_put(pin->rh_cache, pin, pin->rh_cap);
}
