/*
 * What an idle connection costs a server: one that said HELLO and then nothing (the abuse
 * suite's 10,000, docs/SECURITY.md) must not hold a read buffer (64 KiB and its header), only
 * its own records. Measured as the bytes the server holds through the allocator hook per
 * such connection; then each of them calls, with a payload the read buffer lends (1 KiB or
 * more), and is answered byte for byte: the buffer comes back when input does; once they
 * are quiet again for a second, they go cold and give it back, and the large blocks a large
 * call left in their buffer caches too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define IDLE_N 32
/* Its records (server_conn, output queue, cold set entry: a few KiB) fit; a read buffer does not. */
#define IDLE_CONN_MAX_BYTES (16 * 1024)
#define CALL_BYTES 2048
#define LARGE_CALL_BYTES (64 * 1024) /* over ARPC_CONN_BODY_MIN: read apart, replied apart */

/* ---- bytes held through the allocator hook ---- */

static atomic_long live_bytes;

static void *bytes_malloc(size_t size, void *ctx)
{
    (void)ctx;
    void *p = malloc(size);
    if (p != NULL)
        atomic_fetch_add(&live_bytes, (long)malloc_usable_size(p));
    return p;
}

static void *bytes_realloc(void *ptr, size_t size, void *ctx)
{
    (void)ctx;
    long before = ptr != NULL ? (long)malloc_usable_size(ptr) : 0;
    void *p = realloc(ptr, size);
    if (p != NULL)
        atomic_fetch_add(&live_bytes, (long)malloc_usable_size(p) - before);
    return p;
}

static void bytes_free(void *ptr, void *ctx)
{
    (void)ctx;
    if (ptr != NULL)
        atomic_fetch_sub(&live_bytes, (long)malloc_usable_size(ptr));
    free(ptr);
}

static const arpc_allocator bytes_allocator = {bytes_malloc, bytes_realloc, bytes_free, NULL};

/* ---- the server and its calls ---- */

/* One call on r, answered with its own payload byte for byte. Its answer also proves the
 * server's loop is done with every read it made before this one. */
static void call_echo(struct raw_client *r, uint64_t xid, size_t len)
{
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    fill_pattern(buf, xid, len);
    assert_true(raw_request(r, xid, 0, 0, 0, "t.echo", buf, len));
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(len, f.body_len);
    assert_memory_equal(buf, f.body, len);
    free(buf);
}

static void test_idle_connections_hold_no_read_buffer(void **state)
{
    (void)state;
    arpc_server *s;
    char addr[128];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    arpc_method_options inline_mo = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, &inline_mo));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    /* A connection that calls, first: what the server makes once (its cold set, pools) is
     * made before the count starts, and its calls see the loop through every read before. */
    struct raw_client *probe = calloc(1, sizeof(*probe));
    struct raw_client *idle = calloc(IDLE_N, sizeof(*idle));
    assert_true(probe != NULL && idle != NULL);
    assert_true(raw_connect(probe, addr, 1));
    call_echo(probe, 1, CALL_BYTES);
    long before = atomic_load(&live_bytes);
    for (unsigned i = 0; i < IDLE_N; i++)
        assert_true(raw_connect(&idle[i], addr, 100 + i)); /* HELLO said and answered */
    call_echo(probe, 2, CALL_BYTES);
    long per_conn = (atomic_load(&live_bytes) - before) / IDLE_N;
    print_message("idle connection: %ld bytes held by the server each\n", per_conn);
    assert_true(per_conn < IDLE_CONN_MAX_BYTES);
    /* Idle ones still call: a read buffer again, its payload lent, the reply intact; then a
     * large call, whose request body and reply are blocks of their own, left in the
     * connection's buffer cache for its next large frame. */
    for (unsigned i = 0; i < IDLE_N; i++) {
        call_echo(&idle[i], 10 + i, CALL_BYTES);
        call_echo(&idle[i], 1000 + i, LARGE_CALL_BYTES);
    }
    /* Having called, they hold a read buffer and those blocks each; quiet for a second, they go
     * back to the cold set (the limits' sweep) and give them all back (the sweep's timer: a
     * few seconds). */
    assert_true((atomic_load(&live_bytes) - before) / IDLE_N >= IDLE_CONN_MAX_BYTES);
    assert_true(WAIT_UNTIL((atomic_load(&live_bytes) - before) / IDLE_N < IDLE_CONN_MAX_BYTES));
    call_echo(probe, 3, CALL_BYTES); /* the server still answers: a warm connection calls */
    for (unsigned i = 0; i < IDLE_N; i++)
        raw_close(&idle[i]);
    raw_close(probe);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    free(idle);
    free(probe);
}

int main(void)
{
    arpc_set_allocator(&bytes_allocator);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_connections_hold_no_read_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
