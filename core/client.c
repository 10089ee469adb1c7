/*
 * The client's life: connect (socket, HELLO, the server's HELLO answer), close.
 *
 * Connecting waits for the server's HELLO: it carries the server's frame limit, so a request
 * the server would refuse is failed locally with ARPC_ETOOLARGE instead of costing the
 * connection, and a peer that is not an arpc server is reported at connect, not at the first
 * call. One deadline covers the socket connect and the HELLO exchange.
 */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "base/backoff.h"
#include "base/clock.h"
#include "core/client_internal.h"
#include "core/frame.h"

#define CLIENT_CONNECT_TIMEOUT_MS 5000
#define CLIENT_PENDING_INITIAL 1024

void client_retain(arpc_client *c) { arpc_refcount_get(&c->cl_refs); }

void client_release(arpc_client *c)
{
    if (!arpc_refcount_put(&c->cl_refs))
        return;
    arpc_future_release(c->cl_hello);
    arpc_free(c);
}

int client_unavailable_reason(arpc_client *c)
{
    if (atomic_load(&c->cl_state) == CL_CLOSED)
        return ARPC_ESHUTDOWN;
    return atomic_load(&c->cl_lost_reason);
}

static uint64_t random_client_id(void)
{
    uint64_t id = 0;
    while (id == 0) {
        if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
            id = arpc_now_ns() ^ ((uint64_t)getpid() << 32);
    }
    return id;
}

/* Why a connection failed before the server's HELLO: what its GOAWAY said, else refused. */
static int connect_failure(arpc_client *c, int hello_status)
{
    if (hello_status == ARPC_EPENDING)
        return ARPC_ETIMEDOUT;
    int why = atomic_load(&c->cl_lost_reason);
    if (atomic_load(&c->cl_state) == CL_DRAINING || why == ARPC_EPROTO || why == ARPC_ETOOLARGE)
        return why;
    return hello_status == ARPC_ECONNLOST ? ARPC_ECONNREFUSED : hello_status;
}

static arpc_client *client_new(const char *addr, const arpc_client_options *o)
{
    arpc_client *c = arpc_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    arpc_refcount_init(&c->cl_refs, 1);
    atomic_init(&c->cl_state, CL_OPEN);
    atomic_init(&c->cl_lost_reason, ARPC_ECONNLOST);
    atomic_init(&c->cl_next_xid, 1);
    atomic_init(&c->cl_npending, 0);
    atomic_init(&c->cl_live, 0);
    c->cl_max_frame = o->max_frame ? o->max_frame : ARPC_DEFAULT_MAX_FRAME;
    atomic_init(&c->cl_server_max, c->cl_max_frame);
    c->cl_id = o->client_id ? o->client_id : random_client_id();
    c->cl_default_deadline_ms = o->default_deadline_ms;
    snprintf(c->cl_addr, sizeof(c->cl_addr), "%s", addr);
    if (arpc_future_create(&c->cl_hello) != ARPC_OK) {
        arpc_free(c);
        return NULL;
    }
    if (arpc_u64_map_init(&c->cl_pending, CLIENT_PENDING_INITIAL) != ARPC_OK) {
        arpc_future_release(c->cl_hello);
        arpc_free(c);
        return NULL;
    }
    return c;
}

/* The client's loop: the user's, or a new one on its own thread. */
static int client_take_loop(arpc_client *c, arpc_loop *user_loop)
{
    if (user_loop != NULL) {
        c->cl_loop = user_loop;
        return ARPC_OK;
    }
    int rc = arpc_loop_create(&c->cl_loop, NULL);
    if (rc != ARPC_OK)
        return rc;
    rc = arpc_loop_start(c->cl_loop);
    if (rc != ARPC_OK) {
        arpc_loop_destroy(c->cl_loop);
        return rc;
    }
    c->cl_owns_loop = true;
    return ARPC_OK;
}

int arpc_client_connect(arpc_client **out, const char *addr, const arpc_client_options *opts)
{
    arpc_client_options o = {0};
    if (opts != NULL)
        o = *opts;
    if (out == NULL || addr == NULL)
        return ARPC_EINVAL;
    *out = NULL;
    const char *rest;
    const struct arpc_transport_ops *tr = arpc_transport_find(addr, &rest);
    if (tr == NULL || strlen(addr) >= ARPC_ADDR_MAX)
        return ARPC_EADDR;
    if (o.loop != NULL && arpc_loop_on_thread(o.loop))
        return ARPC_EBUSY; /* connecting waits for the loop: not from inside it */
    int64_t timeout = o.connect_timeout_ms ? o.connect_timeout_ms : CLIENT_CONNECT_TIMEOUT_MS;
    uint64_t until = arpc_deadline_from_ms(timeout); /* saturates: huge means no limit */
    arpc_client *c = client_new(addr, &o);
    if (c == NULL)
        return ARPC_ENOMEM;
    int fd = -1;
    int rc = tr->t_connect(rest, timeout, &fd);
    if (rc == ARPC_OK) {
        rc = client_take_loop(c, o.loop);
        if (rc != ARPC_OK)
            close(fd);
    }
    if (rc != ARPC_OK) {
        arpc_u64_map_fini(&c->cl_pending);
        client_release(c);
        return rc;
    }
    c->cl_conn.c_fd = fd; /* adopted by client_conn_attach */
    int hello = arpc_loop_run_sync(c->cl_loop, client_conn_attach, c);
    if (hello == ARPC_OK)
        hello = arpc_loop_wait_until(c->cl_loop, c->cl_hello, until);
    if (hello != ARPC_OK) {
        rc = connect_failure(c, hello);
        arpc_client_close(c);
        return rc;
    }
    *out = c;
    return ARPC_OK;
}

static void step_close(arpc_loop *loop, void *arg)
{
    arpc_client *c = arg;
    atomic_store(&c->cl_state, CL_CLOSED);
    client_cleanup(c);
    if (c->cl_hook && arpc_loop_off_stop(loop, client_on_loop_stop, c)) {
        c->cl_hook = false;
        client_release(c); /* the hook's reference (the user's is still held by close) */
    }
}

int arpc_client_close(arpc_client *c)
{
    if (c == NULL)
        return ARPC_EINVAL;
    if (arpc_loop_on_thread(c->cl_loop))
        return ARPC_EBUSY; /* closing waits for the loop: on the loop itself it never returns */
    /* On the loop, after every call posted before it (the lane is FIFO); or here, once no
     * thread runs a loop that was stopped. */
    arpc_loop_run_sync(c->cl_loop, step_close, c);
    /* Wait out cancel hooks still running on other threads (they are short). */
    unsigned attempt = 0;
    while (atomic_load(&c->cl_live) != 0)
        arpc_backoff_spin(&attempt);
    if (c->cl_owns_loop)
        arpc_loop_destroy(c->cl_loop); /* runs any cancel job still queued */
    client_release(c);
    return ARPC_OK;
}

size_t arpc_client_pending(const arpc_client *c) { return atomic_load(&((arpc_client *)c)->cl_npending); }

uint64_t arpc_client_id(const arpc_client *c) { return c->cl_id; }
