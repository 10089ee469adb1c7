/*
 * max_fault_rate charges a fault by its cost (core/fault_rate.c): one token, and one more for
 * every 40 us of CPU the server's loop spent on the connection's TLS handshake. A peer that
 * sends garbage to a tls:// port costs the server about what a plain fault does and is charged
 * little; a peer that first makes the server parse a client chain of ~50 certificates
 * (11-13 ms of the loop here, before the chain is refused) is charged for that time, and
 * pauses a listener whose burst is 8 at once. Before, every fault was charged one, so a TLS stranger got
 * hundreds of plain faults' worth of the server's CPU for the price of one.
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
#include "core/frame.h"
#include "support/log_capture.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "support/tls_bare_client.h"
#include "support/tls_certs.h"

static EVP_PKEY *junk_key;
static X509 *junk; /* self-signed: a chain of it fails verification */

/* The server closes fd within the hang guard; then it is closed. */
static void wait_close(int fd)
{
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    close(fd);
}

/* Bytes no TLS client would send: refused at the first record. */
static void garbage_fault(const char *addr)
{
    int fd = tls_bare_connect(addr);
    static const char junk_bytes[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal((ssize_t)sizeof(junk_bytes), send(fd, junk_bytes, sizeof(junk_bytes), MSG_NOSIGNAL));
    wait_close(fd);
}

static bool stat_reaches(arpc_server *s, size_t offset, uint64_t n)
{
    return server_stat_reaches(s, offset, n, TEST_WAIT_MS);
}
#define REACHES(s, field, n) stat_reaches((s), offsetof(arpc_server_stats, field), (n))

/* A connection that the listener must take up (accept, or pause first): it is let go. */
static void knock(arpc_server *s, const char *addr, uint64_t accepted)
{
    int fd = tls_bare_connect(addr);
    assert_true(REACHES(s, connections_accepted, accepted));
    close(fd);
}

/* rate 0, burst 0: the defaults (1,000 a second, a burst of 1,000). */
static arpc_server *tls_server(int32_t rate, uint32_t burst, char *addr, size_t len)
{
    arpc_tls_options tls = tls_group_pair.tp_server;
    tls.ca_file = tls_group_pair.tp_ca;
    tls.require_client_cert = true;
    arpc_server_options so = {.workers = 1, .tls = &tls, .max_fault_rate = rate, .fault_burst = burst};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, len));
    return s;
}

/* ~14 KiB of certificates to parse before the refusal (~50 of them, 11-13 ms here, ~50 ms
 * under ASan): far more than a burst of 8 plain faults (320 us). Before: charged one, no
 * pause. */
static void test_a_chain_parsed_is_charged(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = tls_server(100, 8, addr, sizeof(addr));
    tls_bare_present_chain(addr, TLS1_3_VERSION, junk, junk_key, 14 * 1024 / i2d_X509(junk, NULL));
    assert_true(REACHES(s, connections_faulted, 1));
    knock(s, addr, 2);
    assert_true(SERVER_STAT(s, fault_rate_pauses) >= 1);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Garbage is refused at its first record, for about what a plain fault costs (15-50 us here;
 * 0.5-1 ms under ASan, whose allocator OpenSSL's allocations go through): two of them leave
 * most of the default burst (1,000). (That a plain fault is charged one: fault_rate_test.) */
static void test_garbage_is_charged_little(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = tls_server(0, 0, addr, sizeof(addr));
    garbage_fault(addr);
    garbage_fault(addr);
    assert_true(REACHES(s, connections_faulted, 2));
    knock(s, addr, 3);
    assert_int_equal(0, SERVER_STAT(s, fault_rate_pauses));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A client that begins its handshake (its ClientHello, made into memory so that nothing of the
 * server's answer is ever read) and then says nothing more. */
static int stalled_handshake(const char *addr, SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    assert_true(in != NULL && out != NULL);
    SSL_set_bio(ssl, in, out); /* the SSL owns them now */
    int ret = SSL_connect(ssl);
    assert_int_equal(SSL_ERROR_WANT_READ, SSL_get_error(ssl, ret));
    char *hello = NULL;
    long len = BIO_get_mem_data(out, &hello);
    assert_true(len > 0);
    int fd = tls_bare_connect(addr);
    assert_int_equal(len, send(fd, hello, (size_t)len, MSG_NOSIGNAL));
    SSL_free(ssl);
    return fd;
}

/* handshake_timeout_ms: a TLS handshake begun and not finished is a fault (it cost the server
 * its key exchange and signature, and is charged them), and so is one finished with nothing
 * after it (test_a_handshake_done_then_silent_is_charged); a peer that sent nothing at all is
 * not (a client that connects early to call later). Within the second, a stall of this
 * thread cannot turn the first into a silent connection. */
static void test_a_handshake_stalled_is_a_fault(void **state)
{
    (void)state;
    arpc_server_options so = {
        .workers = 1, .tls = &tls_group_pair.tp_server, .max_fault_rate = -1, .handshake_timeout_ms = 1000};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: a bare peer */
    assert_non_null(ctx);
    SSL *shaken_ssl = NULL;
    int stalled = stalled_handshake(addr, ctx);
    int shaken = tls_bare_connect(addr);
    assert_non_null(shaken_ssl = SSL_new(ctx));
    assert_int_equal(1, SSL_set_fd(shaken_ssl, shaken));
    assert_int_equal(1, SSL_connect(shaken_ssl));
    int silent = tls_bare_connect(addr);
    wait_close(stalled);
    wait_close(shaken);
    wait_close(silent);
    assert_true(REACHES(s, connections_closed, 3));
    assert_int_equal(2, SERVER_STAT(s, connections_faulted));
    SSL_free(shaken_ssl);
    SSL_CTX_free(ctx);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A peer that finishes its TLS handshake (the server's key exchange and signature done) and
 * says no HELLO: it stays silent (gone false) or goes at once (gone true). Either is a fault
 * charged its handshake: with a burst of one, the next connection waits for the bucket. */
static void handshake_done_then(bool gone)
{
    arpc_server_options so = {.workers = 1,
                              .tls = &tls_group_pair.tp_server,
                              .max_fault_rate = 1,
                              .fault_burst = 1,
                              .handshake_timeout_ms = 1000}; /* a TLS handshake on a loaded machine fits */
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    log_capture_clear();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: a bare peer */
    assert_non_null(ctx);
    int fd;
    SSL *ssl = tls_bare_handshake(addr, ctx, &fd);
    if (gone)
        close(fd);
    else
        wait_close(fd);
    assert_true(REACHES(s, connections_faulted, 1));
    if (!gone)
        assert_int_equal(1, LOG_LINES_WITH("no HELLO after its TLS handshake within 1000 ms"));
    knock(s, addr, 2);
    assert_true(SERVER_STAT(s, fault_rate_pauses) >= 1);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Silent: closed at handshake_timeout_ms and charged. Before: closed, but no fault, free,
 * however many a peer opened one after another. */
static void test_a_handshake_done_then_silent_is_charged(void **state)
{
    (void)state;
    handshake_done_then(false);
}

/* Gone at once (an arpc client says HELLO in its first record): charged at the close. Before:
 * not a fault, so a loop of handshakes each closed at once took a quarter of a core of the
 * server's loop and never paused a listener (an attacker's trial: 22,493 of them). */
static void test_a_handshake_done_then_gone_is_charged(void **state)
{
    (void)state;
    handshake_done_then(true);
}

/* A peer that finishes its handshake and then sends its HELLO (a wrong token of 4 KiB) one
 * byte a record: ~4,100 records, each two recv calls and a decryption on the loop, ~20 ms
 * here, before the token is refused. The set-up's clock runs until the server lets the peer
 * in, not only through the TLS handshake: charged for them, the peer pauses a listener whose
 * burst (100: 4 ms) its handshake alone (~1 ms) stays within. Before: charged its handshake
 * only, no pause. */
static void test_a_hello_a_byte_a_record_is_charged(void **state)
{
    (void)state;
    static const arpc_auth_token tokens[] = {{.token = "right", .len = 5}, {.token = NULL}};
    arpc_server_options so = {.workers = 1,
                              .tls = &tls_group_pair.tp_server,
                              .max_fault_rate = 100,
                              .fault_burst = 100,
                              .authenticate = arpc_auth_fixed_tokens,
                              .authenticate_ctx = (void *)tokens};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: a bare peer */
    assert_non_null(ctx);
    int fd;
    SSL *ssl = tls_bare_handshake(addr, ctx, &fd);
    static char wrong[ARPC_AUTH_TOKEN_MAX_BYTES + 1];
    memset(wrong, 'w', ARPC_AUTH_TOKEN_MAX_BYTES);
    static uint8_t hello[ARPC_FRAME_HEADER_SIZE + 64 + ARPC_AUTH_TOKEN_MAX_BYTES];
    assert_true(arpc_frame_hello_token_size(ARPC_AUTH_TOKEN_MAX_BYTES) <= sizeof(hello));
    size_t n = arpc_frame_encode_hello_token(hello, 7, 0, 0, wrong, ARPC_AUTH_TOKEN_MAX_BYTES);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(1, SSL_write(ssl, hello + i, 1)); /* one record each */
    wait_close(fd);
    assert_true(REACHES(s, connections_faulted, 1));
    knock(s, addr, 2);
    assert_true(SERVER_STAT(s, fault_rate_pauses) >= 1);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static int setup_all(void **state)
{
    signal(SIGPIPE, SIG_IGN);
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
        cmocka_unit_test(test_a_chain_parsed_is_charged),
        cmocka_unit_test(test_garbage_is_charged_little),
        cmocka_unit_test(test_a_handshake_stalled_is_a_fault),
        cmocka_unit_test(test_a_handshake_done_then_silent_is_charged),
        cmocka_unit_test(test_a_handshake_done_then_gone_is_charged),
        cmocka_unit_test(test_a_hello_a_byte_a_record_is_charged),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}

#else

int main(void)
{
    printf("tls_fault_charge_test: built without TLS (ARPC_WITH_TLS off): nothing to test\n");
    return 0;
}
#endif
