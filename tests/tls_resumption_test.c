/*
 * A tls:// server resumes no session (transport/tls_ctx.c; docs/SECURITY.md, "TLS": "every
 * connection makes a full handshake"): no TLS 1.2 session kept by id, no ticket issued in TLS
 * 1.2 or 1.3. A server that kept them would hold, for any stranger that completed a
 * handshake, a session (with a client's certificate, its chain) that none of the server's
 * limits counts, and would let a client back in on its old handshake's verification. The
 * peer is a bare OpenSSL client that asks to resume (an arpc client never does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"
#include "core/frame.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/ssl.h>

#include "support/tls_bare_client.h"
#include "support/tls_certs.h"

/* A blocking handshake at version offering `resume` (NULL: none), asking for no ticket with
 * no_ticket (a TLS 1.2 server then keeps the session by its id, if it keeps sessions); returns
 * the session (SSL_SESSION_free it), and in *reused whether it resumed `resume`. */
static SSL_SESSION *handshake(const char *addr, int version, SSL_SESSION *resume, bool no_ticket, bool *reused)
{
    int fd = tls_bare_connect(addr);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    assert_int_equal(1, SSL_CTX_set_min_proto_version(ctx, version));
    assert_int_equal(1, SSL_CTX_set_max_proto_version(ctx, version));
    assert_int_equal(1, SSL_CTX_load_verify_locations(ctx, tls_group_pair.tp_ca, NULL));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (no_ticket)
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    assert_int_equal(1, SSL_set_fd(ssl, fd));
    if (resume != NULL)
        assert_int_equal(1, SSL_set_session(ssl, resume));
    assert_int_equal(1, SSL_connect(ssl));
    /* Says HELLO and reads the server's: a TLS 1.3 ticket, sent once the server's side of the
     * handshake ended, would have come before it. */
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(frame, 77, 0, 0, 0);
    assert_int_equal((int)n, SSL_write(ssl, frame, (int)n));
    size_t have = 0, want = ARPC_FRAME_HEADER_SIZE;
    while (have < want) {
        int got = SSL_read(ssl, frame + have, (int)(want - have));
        assert_true(got > 0);
        have += (size_t)got;
        if (have == ARPC_FRAME_HEADER_SIZE) {
            want = arpc_frame_total_size(frame);
            assert_true(want <= sizeof(frame));
        }
    }
    *reused = SSL_session_reused(ssl) == 1;
    SSL_SESSION *got = SSL_get1_session(ssl);
    (void)SSL_shutdown(ssl); /* a session closed without it is no longer resumable */
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return got;
}

static void test_tls12_session_not_resumed(void **state)
{
    (void)state;
    arpc_server_options so = {.workers = 1, .tls = &tls_group_pair.tp_server};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    bool reused;
    SSL_SESSION *first = handshake(addr, TLS1_2_VERSION, NULL, false, &reused);
    assert_non_null(first);
    assert_false(reused);
    assert_false(SSL_SESSION_has_ticket(first)); /* no TLS 1.2 ticket */
    SSL_SESSION *second = handshake(addr, TLS1_2_VERSION, first, false, &reused);
    assert_false(reused); /* by a ticket it was given anyway */
    SSL_SESSION_free(second);
    SSL_SESSION_free(first);
    first = handshake(addr, TLS1_2_VERSION, NULL, true, &reused);
    second = handshake(addr, TLS1_2_VERSION, first, true, &reused);
    assert_false(reused); /* nor by a session kept under its id */
    SSL_SESSION_free(second);
    SSL_SESSION_free(first);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_tls13_no_ticket(void **state)
{
    (void)state;
    arpc_server_options so = {.workers = 1, .tls = &tls_group_pair.tp_server};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    bool reused;
    SSL_SESSION *first = handshake(addr, TLS1_3_VERSION, NULL, false, &reused);
    assert_false(reused);
    assert_true(first == NULL || !SSL_SESSION_is_resumable(first));
    SSL_SESSION_free(first);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls12_session_not_resumed),
        cmocka_unit_test(test_tls13_no_ticket),
    };
    return cmocka_run_group_tests(tests, tls_group_setup, tls_group_teardown);
}

#else

int main(void)
{
    printf("tls_resumption_test: built without TLS (ARPC_WITH_TLS off): nothing to test\n");
    return 0;
}
#endif
