/*
 * A client whose max_frame is smaller than the server's HELLO (24 bytes of body) still
 * connects: the handshake is bounded by the largest HELLO, as on the server, and max_frame
 * bounds the frames after it. Before, connect failed ARPC_EPROTO "peer ... is not an arpc
 * server (... a tls:// server?)", which sent the user looking at the wrong thing. Calls then
 * fare by max_frame: a request whose frame body (24 + method + bytes) is over it ends
 * ARPC_ETOOLARGE without being sent, and the connection goes on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

static arpc_server *start_server(char *addr, size_t len)
{
    arpc_server *s;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "e", test_echo, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len), ARPC_OK);
    return s;
}

static void test_connects_below_hello_size(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(addr, sizeof(addr));
    for (uint32_t max = 1; max <= 32; max += 15) { /* 1, 16, 31: each under or near the HELLO */
        char why[ARPC_ERRBUF_SIZE] = "";
        arpc_client_options co = {.max_frame = max, .errbuf = why, .errbuf_len = sizeof(why)};
        arpc_client *c;
        int rc = arpc_client_connect(&c, addr, &co);
        if (rc != ARPC_OK)
            fail_msg("max_frame %u: connect %s: %s", (unsigned)max, arpc_errname(rc), why);
        void *reply = NULL;
        size_t len;
        /* 24 + 1 + 8 bytes of body: over each of these max_frame */
        assert_int_equal(arpc_call(c, "e", "12345678", 8, &reply, &len, TEST_WAIT_MS), ARPC_ETOOLARGE);
        arpc_free(reply);
        assert_int_equal(arpc_client_connections(c), 1);
        assert_int_equal(arpc_client_close(c), ARPC_OK);
    }
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* After the HELLO the bound is max_frame again: a 26-byte body (24 + "e" + 1 byte) passes a
 * max_frame of 26, and its 1-byte reply comes back. */
static void test_bound_after_hello_is_max_frame(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(addr, sizeof(addr));
    arpc_client_options co = {.max_frame = 26};
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, &co), ARPC_OK);
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(arpc_call(c, "e", "x", 1, &reply, &len, TEST_WAIT_MS), ARPC_OK);
    assert_int_equal(len, 1);
    assert_memory_equal(reply, "x", 1);
    arpc_free(reply);
    reply = NULL;
    assert_int_equal(arpc_call(c, "e", "xy", 2, &reply, &len, TEST_WAIT_MS), ARPC_ETOOLARGE);
    arpc_free(reply);
    assert_int_equal(arpc_client_connections(c), 1);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connects_below_hello_size),
        cmocka_unit_test(test_bound_after_hello_is_max_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
