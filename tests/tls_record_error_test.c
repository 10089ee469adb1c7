/*
 * A record that fails its check after the handshake (a byte changed on the way: TCP's checksum
 * misses some) is told as what it is. The server logged "TLS handshake failed: decryption
 * failed or bad record mac" for it, on a connection whose handshake had long succeeded (a
 * network-impairment review): OpenSSL counts a connection that failed as back in its
 * handshake, and the stream asked OpenSSL whether the handshake was done after the failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/ssl.h>

#include "support/tls_bare_client.h"
#include "support/tls_certs.h"

static struct tls_certs certs;
static struct tls_certs_pair pair;

static int setup_all(void **state)
{
    (void)state;
    log_capture_start(ARPC_LOG_INFO);
    if (!tls_certs_make(&certs))
        return -1;
    tls_certs_pair(&certs, &pair);
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    tls_certs_remove(&certs);
    return 0;
}

/* After a handshake at `version`, an application-data record of 48 bytes no key made: the
 * server fails the connection, saying TLS failed, not its handshake. */
static void bad_record_after_handshake(int version)
{
    arpc_server_options so = {.workers = 1, .tls = &pair.tp_server};
    arpc_server *s = NULL;
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    log_capture_clear();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: the server is not on trial */
    assert_non_null(ctx);
    assert_int_equal(1, SSL_CTX_set_min_proto_version(ctx, version));
    assert_int_equal(1, SSL_CTX_set_max_proto_version(ctx, version));
    int fd;
    SSL *ssl = tls_bare_handshake(addr, ctx, &fd);
    uint8_t rec[5 + 48] = {23, 3, 3, 0, 48};
    for (size_t i = 5; i < sizeof(rec); i++)
        rec[i] = (uint8_t)(i * 37);
    assert_int_equal((ssize_t)sizeof(rec), send(fd, rec, sizeof(rec), MSG_NOSIGNAL));
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(LOG_LINES_WITH("bad record mac") + LOG_LINES_WITH("decryption failed") > 0));
    if (LOG_LINES_WITH("handshake failed") != 0)
        log_capture_print();
    assert_int_equal(0, LOG_LINES_WITH("handshake failed"));
    assert_true(LOG_LINES_WITH("TLS failed") > 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_tls13_bad_record_is_not_a_handshake_failure(void **state)
{
    (void)state;
    bad_record_after_handshake(TLS1_3_VERSION);
}

static void test_tls12_bad_record_is_not_a_handshake_failure(void **state)
{
    (void)state;
    bad_record_after_handshake(TLS1_2_VERSION);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls13_bad_record_is_not_a_handshake_failure),
        cmocka_unit_test(test_tls12_bad_record_is_not_a_handshake_failure),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}

#else

int main(void)
{
    printf("tls_record_error_test: built without TLS (ARPC_WITH_TLS off); nothing to test\n");
    return 0;
}

#endif
