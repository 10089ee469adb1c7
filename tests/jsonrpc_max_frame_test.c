/*
 * The JSON-RPC client's max_frame follows arpc's own client's rule: 0 (16 MiB) or at least
 * ARPC_MAX_FRAME_MIN (1 KiB, arpc/common.h); a smaller one fails arpc_jsonrpc_connect with
 * ARPC_EINVAL, said in errbuf, before anything connects. It took any value: at 48 a call of
 * "T.Nope" left (its request is 42 bytes) but the server's answer, "rpc: can't find service
 * T.Nope" with the call's id, was over the limit, and the caller got ARPC_ECONNLOST (the
 * connection closed as broken) instead of ARPC_ENOMETHOD. At the floor those answers pass, and a request over it ends
 * ARPC_ETOOLARGE, unsent, the connection going on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "support/test_util.h"

static void echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *data = arpc_request_data(req, &len);
    arpc_reply(req, data, len);
}

static arpc_server *start_server(char *addr, size_t len)
{
    arpc_server *s;
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "T.Echo", echo, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "tcp://127.0.0.1:0", addr, len), ARPC_OK);
    return s;
}

static void test_under_the_floor_refused(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(addr, sizeof(addr));
    static const uint32_t bad[] = {1, 64, ARPC_MAX_FRAME_MIN - 1};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char why[ARPC_ERRBUF_SIZE] = "";
        arpc_jsonrpc_options o = {.max_frame = bad[i], .errbuf = why, .errbuf_len = sizeof(why)};
        arpc_jsonrpc_client *c = NULL;
        assert_int_equal(arpc_jsonrpc_connect(&c, addr, &o), ARPC_EINVAL);
        assert_null(c);
        assert_non_null(strstr(why, "at least 1024 (ARPC_MAX_FRAME_MIN), or 0 for the default"));
    }
    assert_int_equal(SERVER_STAT(s, connections_accepted), 0); /* nothing connected */
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

/* At the floor: an unknown method with a long name is answered ARPC_ENOMETHOD; a request
 * over max_frame ends ARPC_ETOOLARGE unsent, and the connection goes on. */
static void test_at_the_floor(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = start_server(addr, sizeof(addr));
    arpc_jsonrpc_options o = {.max_frame = ARPC_MAX_FRAME_MIN};
    arpc_jsonrpc_client *c = NULL;
    assert_int_equal(arpc_jsonrpc_connect(&c, addr, &o), ARPC_OK);
    char name[201];
    memset(name, 'm', sizeof(name) - 1);
    memcpy(name, "T.", 2);
    name[sizeof(name) - 1] = '\0';
    char *res = NULL;
    size_t len = 0;
    assert_int_equal(arpc_jsonrpc_call(c, name, "1", 1, &res, &len, TEST_WAIT_MS), ARPC_ENOMETHOD);
    arpc_free(res);
    static char big[ARPC_MAX_FRAME_MIN + 2];
    memset(big, 'x', sizeof(big));
    big[0] = big[sizeof(big) - 1] = '"';
    res = NULL;
    assert_int_equal(arpc_jsonrpc_call(c, "T.Echo", big, sizeof(big), &res, &len, TEST_WAIT_MS), ARPC_ETOOLARGE);
    arpc_free(res);
    res = NULL;
    assert_int_equal(arpc_jsonrpc_call(c, "T.Echo", "\"y\"", 3, &res, &len, TEST_WAIT_MS), ARPC_OK);
    arpc_free(res);
    assert_int_equal(arpc_jsonrpc_close(c), ARPC_OK);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_under_the_floor_refused),
        cmocka_unit_test(test_at_the_floor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
