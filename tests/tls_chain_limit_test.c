/*
 * A tls:// server that asks for client certificates takes a chain of at most 16 KiB
 * (TLS_PEER_CHAIN_MAX, transport/tls_ctx.c). OpenSSL parses every certificate of a chain on the
 * loop thread before it verifies any, about 0.15 ms each: at OpenSSL's default of 100 KiB a
 * stranger's chain of small certificates held the loop ~58 ms per handshake. A larger chain is
 * now refused by its length ("excessive message size"; TLS 1.2's, plaintext, at its header by
 * transport/tls_guard.c), before a certificate of it is parsed;
 * a smaller one is parsed and judged as before. The stranger is a bare OpenSSL client whose
 * self-signed certificate is repeated as its chain. A client takes at most 64 KiB from a
 * server (OpenSSL's 100 KiB before): a bare OpenSSL server presents such a chain to an arpc
 * client's connect.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "support/tls_bare_client.h"
#include "support/tls_certs.h"

static EVP_PKEY *junk_key;
static X509 *junk; /* self-signed, ~265 bytes */

static void expect_server_says(const char *addr, int version, int extra, const char *why)
{
    log_capture_clear();
    tls_bare_present_chain(addr, version, junk, junk_key, extra);
    if (LOG_LINES_WITH("closing the connection with", "TLS handshake failed", why) != 1) {
        log_capture_print();
        fail_msg("a chain of %d certificates (TLS %s): the server did not say \"%s\"", extra + 1,
                 version == TLS1_3_VERSION ? "1.3" : "1.2", why);
    }
}

static void test_client_chain_over_16k_refused_unparsed(void **state)
{
    (void)state;
    arpc_tls_options tls = tls_group_pair.tp_server;
    tls.ca_file = tls_group_pair.tp_ca;
    tls.require_client_cert = true;
    arpc_server_options so = {.workers = 1, .tls = &tls, .max_fault_rate = -1};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    int one = i2d_X509(junk, NULL);
    int over = 16 * 1024 / one + 8, under = 8 * 1024 / one; /* certificates beside the leaf */
    expect_server_says(addr, TLS1_3_VERSION, over, "excessive message size");
    /* TLS 1.2's client Certificate is plaintext: refused at its header, as it arrives
     * (transport/tls_guard.c), before OpenSSL reserves or parses any of it. */
    expect_server_says(addr, TLS1_2_VERSION, over, "handshake message announcing over 16384 bytes");
    /* Under the bound: parsed, verified, refused for what it is. */
    expect_server_says(addr, TLS1_3_VERSION, under, "certificate verify failed: self-signed certificate");
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A bare server: accepts one connection on listen_fd and handshakes (TLS 1.3), presenting
 * junk with `extra` copies of it as its chain; the handshake's outcome is the client's. */
struct bare_server {
    int listen_fd;
    int extra;
};

static void *bare_server_run(void *arg)
{
    struct bare_server *b = arg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    CHECK(ctx != NULL && SSL_CTX_use_certificate(ctx, junk) == 1 && SSL_CTX_use_PrivateKey(ctx, junk_key) == 1);
    for (int i = 0; i < b->extra; i++) {
        X509_up_ref(junk);
        CHECK(SSL_CTX_add_extra_chain_cert(ctx, junk) == 1); /* (takes the reference) */
    }
    int fd = accept(b->listen_fd, NULL, NULL);
    CHECK(fd >= 0);
    struct timeval tv = {.tv_sec = TEST_WAIT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    (void)SSL_accept(ssl); /* the client ends it, refusing the chain */
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return NULL;
}

/* The connect's words when the server presents junk with `extra` copies (its errbuf). */
static void client_connect_to_chain(int extra, char *why, size_t whylen)
{
    uint16_t port;
    struct bare_server b = {.listen_fd = fd_listen_loopback(0, 4, 0, &port), .extra = extra};
    assert_true(b.listen_fd >= 0);
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, bare_server_run, &b));
    char addr[64];
    snprintf(addr, sizeof(addr), "tls://127.0.0.1:%u", port);
    arpc_tls_options tls = {.ca_file = tls_group_pair.tp_ca};
    arpc_client_options co = {.tls = &tls, .no_reconnect = true, .errbuf = why, .errbuf_len = whylen};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_ETLS, arpc_client_connect(&c, addr, &co));
    assert_int_equal(0, pthread_join(t, NULL));
    close(b.listen_fd);
}

/* A client's bound is 64 KiB (a CertificateRequest's CA list is held to it too). */
static void test_server_chain_over_64k_refused_unparsed(void **state)
{
    (void)state;
    char why[512];
    int one = i2d_X509(junk, NULL);
    client_connect_to_chain(64 * 1024 / one + 8, why, sizeof(why));
    if (strstr(why, "excessive message size") == NULL)
        fail_msg("a server chain over 64 KiB: the connect said \"%s\"", why);
    client_connect_to_chain(32 * 1024 / one, why, sizeof(why)); /* under: judged for what it is */
    if (strstr(why, "certificate verify failed") == NULL)
        fail_msg("a server chain under 64 KiB: the connect said \"%s\"", why);
}

static int setup_all(void **state)
{
    signal(SIGPIPE, SIG_IGN); /* the bare client writes with write(2) to a server that closed */
    log_capture_start(ARPC_LOG_WARN);
    if (tls_group_setup(state) != 0)
        return -1;
    return tls_bare_self_signed(&junk, &junk_key) ? 0 : -1;
}

static int teardown_all(void **state)
{
    X509_free(junk);
    EVP_PKEY_free(junk_key);
    return tls_group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_chain_over_16k_refused_unparsed),
        cmocka_unit_test(test_server_chain_over_64k_refused_unparsed),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}

#else

int main(void)
{
    printf("tls_chain_limit_test: built without TLS (ARPC_WITH_TLS off): nothing to test\n");
    return 0;
}
#endif
