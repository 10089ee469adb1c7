/*
 * A connection that finds no memory on either side before its HELLOs are exchanged ends at
 * once, with an error that names whose trouble it was (a review's trials, each with one
 * allocation failed):
 *   - the server without memory for its HELLO answer: it closes the connection with a GOAWAY
 *     ARPC_EOVERLOADED. Before, it left the connection open and silent, answering PINGs, and
 *     the client's connect waited for its timeout, for ever with ARPC_FOREVER;
 *   - the server without memory for a new connection: a GOAWAY ARPC_EOVERLOADED from the
 *     stack, as when out of descriptors. Before, a bare close, which the client took for a
 *     peer that is no arpc server (ARPC_ECONNREFUSED);
 *     On a unix socket the client's HELLO, written after that close, failed (EPIPE) before
 *     the GOAWAY was read: it reads what came first (an allocation sweep's finding);
 *   - the server without memory to read the client's HELLO: a GOAWAY ARPC_EOVERLOADED too.
 *     Before, a bare close (an allocation sweep's finding, alloc_sweep_test);
 *   - the client without memory for its own HELLO: ARPC_ENOMEM, not ARPC_ECONNREFUSED.
 * The allocation made to fail is picked by its size (support/test_alloc.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "core/server_internal.h"
#include "support/raw_client.h"
#include "support/test_util.h"
#include "transport/transport.h"

#define HELLO_BYTES (ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT) /* either side's HELLO */

#define RBUF_BYTES (64u * 1024u) /* a connection's first read buffer (core/conn.c), and its head */

static arpc_server *start_server_at(const char *where, char *addr, size_t len)
{
    test_alloc_sized_install();
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, where, addr, len));
    return s;
}

static arpc_server *start_server(char *addr, size_t len) { return start_server_at("tcp://127.0.0.1:0", addr, len); }

/* A hand-written client's HELLO, sent once the server accepted it (what the accept allocates
 * is not what is meant to fail) and armed a failure of fail_lo..fail_hi-1 bytes: the server
 * answers a GOAWAY ARPC_EOVERLOADED, then closes. */
static void hello_refused_overloaded(size_t fail_lo, size_t fail_hi)
{
    char addr[256];
    arpc_server *s = start_server(addr, sizeof(addr));
    struct raw_client r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, RAW_WAIT_MS, &r.rc_fd, NULL, 0));
    assert_true(WAIT_UNTIL(SERVER_STAT(s, connections_accepted) == 1));
    test_alloc_fail_next(fail_lo, fail_hi);
    uint8_t hello[HELLO_BYTES];
    assert_int_equal(HELLO_BYTES, arpc_frame_encode_hello(hello, 7, 0, 0, 0));
    assert_true(raw_send(&r, hello, sizeof(hello)));
    struct raw_frame f;
    memset(&f, 0, sizeof(f));
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(1, test_alloc_sized_failed());
    assert_int_equal(ARPC_FRAME_GOAWAY, f.f.f_kind);
    assert_int_equal(ARPC_EOVERLOADED, f.f.f_code);
    int pings;
    assert_true(raw_wait_eof(&r, &pings));
    raw_close(&r);
    /* The next connection is let in as usual. */
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* The server's HELLO answer finds no memory: the peer reads a GOAWAY ARPC_EOVERLOADED, then
 * the end of the stream. A hand-written client, so that the failed allocation is the server's
 * (the arpc client's HELLO has the same size). */
static void test_server_without_memory_for_its_hello_refuses(void **state)
{
    (void)state;
    hello_refused_overloaded(HELLO_BYTES, HELLO_BYTES + 1);
}

/* No memory to read the client's HELLO (the connection's first read buffer): refused so too. */
static void test_server_without_memory_to_read_a_hello_refuses(void **state)
{
    (void)state;
    hello_refused_overloaded(RBUF_BYTES, 2 * RBUF_BYTES);
}

/* The server has no memory for a new connection (its first allocation for it): arpc's client,
 * with no connect timeout, reads the GOAWAY and its connect ends ARPC_EOVERLOADED with the
 * server's words, a trouble that passes (it may retry), not a peer that speaks no arpc. */
static void connection_refused_for_memory(const char *where)
{
    char addr[256];
    arpc_server *s = start_server_at(where, addr, sizeof(addr));
    test_alloc_fail_next(sizeof(struct server_conn), sizeof(struct server_conn) + 1);
    arpc_client_options co = {.connect_timeout_ms = ARPC_FOREVER};
    arpc_client *c;
    char why[256] = "";
    co.errbuf = why;
    co.errbuf_len = sizeof(why);
    int rc = arpc_client_connect(&c, addr, &co);
    if (rc != ARPC_EOVERLOADED)
        print_message("connect: %s (%s)\n", arpc_errname(rc), why);
    assert_int_equal(1, test_alloc_sized_failed());
    assert_int_equal(ARPC_EOVERLOADED, rc);
    assert_non_null(strstr(why, "out of memory"));
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_server_without_memory_for_a_connection_says_so(void **state)
{
    (void)state;
    connection_refused_for_memory("tcp://127.0.0.1:0");
}

/* The same on a unix socket, where the client's HELLO may be written after the server's
 * close (EPIPE): the GOAWAY before it is still read. Several times, the order being the
 * threads' (it is rarely that one here: conn_test's
 * test_last_words_read_when_the_first_write_finds_the_peer_gone makes it so). */
static void test_unix_server_without_memory_for_a_connection_says_so(void **state)
{
    (void)state;
    char where[96];
    snprintf(where, sizeof(where), "unix:///tmp/arpc-hello-enomem-%d.sock", (int)getpid());
    for (int i = 0; i < 20; i++)
        connection_refused_for_memory(where);
}

/* The client's own HELLO finds no memory: ARPC_ENOMEM, its own trouble, not the server's. */
static void test_client_without_memory_for_its_hello(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(addr, sizeof(addr));
    arpc_client_options co = {.connect_timeout_ms = ARPC_FOREVER};
    char why[256] = "";
    co.errbuf = why;
    co.errbuf_len = sizeof(why);
    test_alloc_fail_next(HELLO_BYTES, HELLO_BYTES + 1);
    arpc_client *c;
    int rc = arpc_client_connect(&c, addr, &co);
    if (rc != ARPC_ENOMEM)
        print_message("connect: %s (%s)\n", arpc_errname(rc), why);
    assert_int_equal(1, test_alloc_sized_failed());
    assert_int_equal(ARPC_ENOMEM, rc);
    assert_non_null(strstr(why, "out of memory"));
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_without_memory_for_its_hello_refuses),
        cmocka_unit_test(test_server_without_memory_to_read_a_hello_refuses),
        cmocka_unit_test(test_server_without_memory_for_a_connection_says_so),
        cmocka_unit_test(test_unix_server_without_memory_for_a_connection_says_so),
        cmocka_unit_test(test_client_without_memory_for_its_hello),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
