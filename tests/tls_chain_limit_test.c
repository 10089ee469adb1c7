/*
 * A tls:// server that asks for client certificates takes a chain of at most 16 KiB
 * (TLS_PEER_CHAIN_MAX, transport/tls_ctx.c). OpenSSL parses every certificate of a chain on the
 * loop thread before it verifies any, about 0.15 ms each: at OpenSSL's default of 100 KiB a
 * stranger's chain of small certificates held the loop ~58 ms per handshake. A larger chain is
 * now refused by its length ("excessive message size"; TLS 1.2's, plaintext, at its header by
 * transport/tls_guard.c), before a certificate of it is parsed;
 * a smaller one is parsed and judged as before. The stranger is a bare OpenSSL client whose
 * self-signed certificate is repeated as its chain.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <fcntl.h>
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
