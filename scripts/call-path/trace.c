/*
 * Records the function entries of one pool-handled call (client with its own loop thread,
 * server with the default worker pool, both in this process), for scripts/call-path/run.sh.
 * Built with -finstrument-functions: every arpc function entry calls __cyg_profile_func_enter,
 * which appends (function, call site) while tracing is on. Not part of the library.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"

#define TRACE_MAX 100000

static atomic_int tracing;
static atomic_size_t trace_len;
static struct { void *fn, *site; } trace_buf[TRACE_MAX];

__attribute__((no_instrument_function)) void __cyg_profile_func_enter(void *fn, void *site)
{
    if (!atomic_load_explicit(&tracing, memory_order_relaxed))
        return;
    size_t i = atomic_fetch_add(&trace_len, 1);
    if (i < TRACE_MAX) {
        trace_buf[i].fn = fn;
        trace_buf[i].site = site;
    }
}

__attribute__((no_instrument_function)) void __cyg_profile_func_exit(void *fn, void *site)
{
    (void)fn;
    (void)site;
}

static void echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t n;
    const void *p = arpc_request_data(req, &n);
    arpc_reply(req, p, n);
}

int main(void)
{
    arpc_server *s;
    arpc_client *c;
    char addr[256];
    if (arpc_server_create(&s, NULL) || arpc_server_register(s, "echo", echo, NULL, NULL) ||
        arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof addr) || arpc_client_connect(&c, addr, NULL))
        return 1;
    for (int warm = 0; warm < 3; warm++) /* buffers, tables and threads all warmed up */
        arpc_call(c, "echo", "x", 1, NULL, NULL, 2000);
    atomic_store(&tracing, 1);
    int rc = arpc_call(c, "echo", "x", 1, NULL, NULL, 2000);
    atomic_store(&tracing, 0);
    arpc_client_close(c);
    arpc_server_destroy(s);
    size_t n = atomic_load(&trace_len);
    for (size_t i = 0; i < n && i < TRACE_MAX; i++)
        printf("%p %p\n", trace_buf[i].fn, trace_buf[i].site);
    return rc;
}
