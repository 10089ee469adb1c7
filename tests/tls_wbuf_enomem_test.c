/*
 * A tls:// stream without memory for its 16 KiB gathering buffer (the small frames of one
 * write go out as one record through it) writes the first frame as a record of its own and
 * goes on. Before, the connection failed: a server replying to a no-retry call lost the call
 * (ARPC_ECONNLOST), and one answering a HELLO closed it before the client heard a word ("is it
 * an arpc server?"; an allocation sweep's finding, alloc_sweep_test). The allocation made to
 * fail is picked by its size (support/test_alloc.c), armed in the handler: the next one of
 * that size is the server's reply's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

#ifdef ARPC_TEST_WITH_TLS
#include "support/tls_certs.h"

#define TLS_RECORD_MAX 16384 /* transport/tls_stream.c: the gathering buffer's size */

static struct tls_certs certs;
static struct tls_certs_pair pair;

static void h_echo_without_gathering(arpc_request *req, void *ctx)
{
    (void)ctx;
    test_alloc_fail_next(TLS_RECORD_MAX, TLS_RECORD_MAX + 1);
    size_t len;
    const void *p = arpc_request_data(req, &len);
    arpc_reply(req, p, len);
}

static void test_reply_written_without_the_gathering_buffer(void **state)
{
    (void)state;
    test_alloc_sized_install();
    arpc_server_options so = {.tls = &pair.tp_server};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", h_echo_without_gathering, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client_options co = {.tls = &pair.tp_client};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    /* No retry: a connection lost under the call would end it ARPC_ECONNLOST. */
    arpc_call_options o = {.deadline_ms = TEST_WAIT_MS, .semantics = ARPC_NO_RETRY};
    for (int i = 0; i < 3; i++) {
        arpc_future *f = arpc_call_async_opts(c, "t.echo", "ping", 4, &o);
        int st = arpc_future_wait_for(f, TEST_WAIT_MS + 5000);
        size_t len = 0;
        const char *back = arpc_future_data(f, &len);
        if (st != ARPC_OK)
            fail_msg("call %d: %s: %s", i, arpc_errname(st), back != NULL ? back : "");
        assert_int_equal(4, len);
        assert_memory_equal("ping", back, 4);
        arpc_future_release(f);
        assert_int_equal(i + 1, test_alloc_sized_failed()); /* the reply's buffer was refused */
    }
    test_alloc_fail_next(0, 0);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    if (!tls_certs_make(&certs))
        return 1;
    tls_certs_pair(&certs, &pair);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_written_without_the_gathering_buffer),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    tls_certs_remove(&certs);
    return failed;
}

#else

int main(void)
{
    printf("tls_wbuf_enomem_test: built without TLS (ARPC_WITH_TLS off): nothing to test\n");
    return 0;
}
#endif
