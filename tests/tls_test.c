/*
 * tls:// end to end (transport/tls*.c, include/arpc/tls.h), with certificates made at run
 * time (support/tls_certs.c): calls over a good certificate, big and pipelined; every way a
 * handshake is refused (unknown CA, expired certificate, wrong host name, no client
 * certificate where one is required, a peer that does not speak TLS, one that leaves in the
 * middle of its handshake), each with its reason in words; the client's subject seen by a handler under mutual TLS; a peer that stalls
 * in the handshake closed by the server's handshake timeout; TLS 1.2 held to AEAD ciphers. Built without TLS, only that
 * tls:// is refused as "built without TLS".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/cut_proxy.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include <fcntl.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "support/tls_certs.h"

#define WAIT_MS TEST_WAIT_MS /* a bound for waits that should end at once: only a hang reaches it */

static struct tls_certs certs;

/* ---- log lines: a test waits for the one it expects ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_needle[128];
static char log_matched[ARPC_ERRBUF_SIZE]; /* the line that had it */
static sem_t log_seen;

static void test_logger(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    pthread_mutex_lock(&log_mu);
    if (log_needle[0] != '\0' && strstr(line, log_needle) != NULL) {
        log_needle[0] = '\0';
        snprintf(log_matched, sizeof(log_matched), "%s", line);
        sem_post(&log_seen);
    }
    pthread_mutex_unlock(&log_mu);
}

static void expect_log(const char *needle)
{
    pthread_mutex_lock(&log_mu);
    while (sem_trywait(&log_seen) == 0) {
    }
    snprintf(log_needle, sizeof(log_needle), "%s", needle);
    pthread_mutex_unlock(&log_mu);
}

static void wait_log(void) { assert_true(sem_wait_secs(&log_seen, WAIT_MS / 1000)); }

/* ---- a server ---- */

static void h_subject(arpc_request *req, void *ctx)
{
    (void)ctx;
    const char *subject = arpc_request_peer_subject(req);
    const arpc_peer_info *peer = arpc_request_peer(req);
    /* A verified certificate names the client (its at-most-once replies are kept apart from
     * every other identity's); without one, nobody in particular. */
    bool named = (peer->identity & ARPC_AUTH_CERT_IDENTITY) != 0;
    if (named != (subject != NULL) || (subject != NULL && strcmp(peer->cert_subject, subject) != 0)) {
        arpc_reply_error(req, "identity does not follow the certificate");
        return;
    }
    arpc_reply(req, subject != NULL ? subject : "(none)", subject != NULL ? strlen(subject) : 6);
}

struct paths {
    char ca[256], other_ca[256], server_pem[256], server_key[256], expired_pem[256], expired_key[256],
        client_pem[256], client_key[256], other_server_pem[256], other_server_key[256], revoked_ca[256];
};
static struct paths P;

/* A server on tls://127.0.0.1:0 with cert (server or expired); mtls: client certificates from
 * ca required. addr gets the bound address. */
static arpc_server *start_server(const char *cert, const char *key, bool mtls, uint32_t handshake_ms, char *addr)
{
    arpc_tls_options tls = {.cert_file = cert, .key_file = key};
    if (mtls) {
        tls.ca_file = P.ca;
        tls.require_client_cert = true;
    }
    char err[256] = "";
    arpc_server_options so = {.workers = 1, .tls = &tls, .handshake_timeout_ms = handshake_ms, .errbuf = err,
                              .errbuf_len = sizeof(err)};
    arpc_server *s;
    int rc = arpc_server_create(&s, &so);
    if (rc != ARPC_OK)
        fail_msg("server: %s: %s", arpc_errname(rc), err);
    assert_int_equal(ARPC_OK, arpc_server_register(s, "echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "subject", h_subject, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, ARPC_ADDR_MAX));
    return s;
}

static void stop_server(arpc_server *s)
{
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 1000));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Connects with o (ca, name, client certificate...); returns the code, err the words. */
static int try_connect(const char *addr, arpc_tls_options *tls, arpc_client **out, char *err, size_t errlen)
{
    arpc_client_options co = {.connect_timeout_ms = WAIT_MS, .tls = tls, .errbuf = err, .errbuf_len = errlen,
                              .no_reconnect = true};
    *out = NULL;
    return arpc_client_connect(out, addr, &co);
}

static void expect_refused(const char *addr, arpc_tls_options *tls, const char *words)
{
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    int rc = try_connect(addr, tls, &c, err, sizeof(err));
    if (rc != ARPC_ETLS || strstr(err, words) == NULL)
        fail_msg("expected ARPC_ETLS with \"%s\", got %s: %s", words, arpc_errname(rc), err);
    assert_null(c);
}

/* ---- tests ---- */

/* One call, then 1,000 pipelined with sizes from 0 to 1 MiB, each checked byte for byte. */
static void test_good_certificate(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    assert_non_null(strstr(addr, "tls://127.0.0.1:"));
    arpc_tls_options tls = {.ca_file = P.ca};
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    int rc = try_connect(addr, &tls, &c, err, sizeof(err));
    if (rc != ARPC_OK)
        fail_msg("connect: %s: %s", arpc_errname(rc), err);

    void *reply;
    size_t len;
    assert_int_equal(ARPC_OK, arpc_call(c, "echo", "hello", 5, &reply, &len, WAIT_MS));
    assert_int_equal(5, len);
    assert_memory_equal("hello", reply, 5);
    arpc_free(reply);
    /* No client certificate: a handler sees no subject. */
    assert_int_equal(ARPC_OK, arpc_call(c, "subject", NULL, 0, &reply, &len, WAIT_MS));
    assert_int_equal(6, len);
    assert_memory_equal("(none)", reply, 6);
    arpc_free(reply);

    enum { CALLS = 1000, BIG = 1 << 20 };
    static const size_t sizes[] = {0, 1, 17, 100, 1000, 4096, 16383, 16384, 16385, 65536, 100000};
    uint8_t *src = malloc(BIG);
    assert_non_null(src);
    fill_pattern(src, 0, BIG);
    arpc_future **fs = calloc(CALLS, sizeof(*fs));
    size_t *lens = calloc(CALLS, sizeof(*lens));
    for (size_t i = 0; i < CALLS; i++) {
        lens[i] = i % 100 == 7 ? BIG : sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
        fs[i] = arpc_call_async(c, "echo", src + (i % 64), lens[i] - (lens[i] == BIG ? 64 : 0), WAIT_MS * 3);
        lens[i] -= lens[i] == BIG ? 64 : 0;
    }
    for (size_t i = 0; i < CALLS; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait(fs[i]));
        size_t got;
        const void *d = arpc_future_data(fs[i], &got);
        assert_int_equal(lens[i], got);
        if (got > 0)
            assert_memory_equal(src + (i % 64), d, got);
        arpc_future_release(fs[i]);
    }
    free(lens);
    free(fs);
    free(src);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    stop_server(s);
}

static void test_wrong_ca(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    arpc_tls_options tls = {.ca_file = P.other_ca};
    expect_refused(addr, &tls, "certificate verify failed: unable to get local issuer certificate");
    stop_server(s);
}

static void test_expired_certificate(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.expired_pem, P.expired_key, false, 0, addr);
    arpc_tls_options tls = {.ca_file = P.ca};
    expect_refused(addr, &tls, "certificate verify failed: certificate has expired");
    stop_server(s);
}

/* The certificate names localhost and 127.0.0.1: another name is refused, the right name
 * (given instead of the address's host) is accepted. */
static void test_host_name(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    arpc_tls_options tls = {.ca_file = P.ca, .server_name = "db.example.com"};
    expect_refused(addr, &tls, "certificate verify failed: hostname mismatch");
    tls.server_name = "localhost";
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    int rc = try_connect(addr, &tls, &c, err, sizeof(err));
    if (rc != ARPC_OK)
        fail_msg("connect: %s: %s", arpc_errname(rc), err);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    stop_server(s);
}

static void test_mtls_requires_client_certificate(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, true, 0, addr);
    arpc_tls_options tls = {.ca_file = P.ca};
    expect_log("TLS handshake failed: peer did not return a certificate");
    expect_refused(addr, &tls, "certificate required");
    wait_log();
    stop_server(s);
}

/* A client certificate the server refuses (expired): the client is told that the server
 * refused *its* certificate, not only OpenSSL's alert name. */
static void test_mtls_refused_client_certificate_named(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, true, 0, addr);
    arpc_tls_options tls = {.ca_file = P.ca, .cert_file = P.expired_pem, .key_file = P.expired_key};
    expect_log("TLS handshake failed");
    expect_refused(addr, &tls, "the server refused this client's certificate");
    wait_log();
    stop_server(s);
}

static void test_mtls_subject_seen_by_handler(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, true, 0, addr);
    arpc_tls_options tls = {.ca_file = P.ca, .cert_file = P.client_pem, .key_file = P.client_key};
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    int rc = try_connect(addr, &tls, &c, err, sizeof(err));
    if (rc != ARPC_OK)
        fail_msg("connect: %s: %s", arpc_errname(rc), err);
    void *reply;
    size_t len;
    assert_int_equal(ARPC_OK, arpc_call(c, "subject", NULL, 0, &reply, &len, WAIT_MS));
    assert_int_equal(strlen(TLS_CERTS_CLIENT_SUBJECT), len);
    assert_memory_equal(TLS_CERTS_CLIENT_SUBJECT, reply, len);
    arpc_free(reply);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    stop_server(s);
}

/* A tcp:// client at a TLS server: refused, and the server says why. */
static void test_plain_client_to_tls_server(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX], plain[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    snprintf(plain, sizeof(plain), "tcp://%s", addr + strlen("tls://"));
    expect_log("TLS handshake failed");
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    int rc = try_connect(plain, NULL, &c, err, sizeof(err));
    if (rc == ARPC_OK)
        fail_msg("a plain client connected to a TLS server");
    assert_non_null(strstr(err, "arpc server")); /* "not an arpc server", or "is it an arpc server?" */
    assert_non_null(strstr(err, "tls://"));       /* and the hint: a tls:// server? */
    wait_log();
    stop_server(s);
}

/* A tls:// client at a plain server: refused, in words. */
static void test_tls_client_to_plain_server(void **state)
{
    (void)state;
    arpc_server_options so = {.workers = 1};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    char bound[ARPC_ADDR_MAX], addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", bound, sizeof(bound)));
    snprintf(addr, sizeof(addr), "tls://%s", bound + strlen("tcp://"));
    arpc_tls_options tls = {.ca_file = P.ca};
    expect_refused(addr, &tls, "TLS handshake failed");
    stop_server(s);
}

/* A peer that takes the connection and never answers the ClientHello (a listener nobody
 * accepts from: the kernel completes TCP): the client's connect timeout says the TLS
 * handshake did not finish, not only that no HELLO came. */
static void test_silent_peer_named_at_connect_timeout(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = fd_listen_loopback(0, 4, 0, &port);
    assert_true(lfd >= 0);
    char addr[ARPC_ADDR_MAX];
    snprintf(addr, sizeof(addr), "tls://127.0.0.1:%u", port);
    arpc_tls_options tls = {.ca_file = P.ca};
    char err[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options co = {
        .connect_timeout_ms = 200, .tls = &tls, .errbuf = err, .errbuf_len = sizeof(err), .no_reconnect = true};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_ETIMEDOUT, arpc_client_connect(&c, addr, &co));
    if (strstr(err, "did not finish the TLS handshake") == NULL)
        fail_msg("%s", err);
    close(lfd);
}

/* A peer that sends a real ClientHello, reads the server's answer and closes: the server's
 * line says the peer closed the connection, without asking whether it speaks TLS (it said
 * so: that hint is for peers whose first bytes were not a handshake). */
static void test_peer_gone_mid_handshake_spoke_tls(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    int fd;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, WAIT_MS, &fd, NULL, 0));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    assert_true(in != NULL && out != NULL);
    SSL_set_bio(ssl, in, out); /* ssl owns both */
    SSL_set_connect_state(ssl);
    assert_int_equal(-1, SSL_do_handshake(ssl));
    assert_int_equal(SSL_ERROR_WANT_READ, SSL_get_error(ssl, -1));
    char *hello;
    long len = BIO_get_mem_data(out, &hello);
    assert_true(len > 0);
    expect_log("the peer closed the connection");
    assert_int_equal(len, write(fd, hello, (size_t)len));
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(1, poll(&p, 1, WAIT_MS));
    char answer[64];
    assert_true(read(fd, answer, sizeof(answer)) > 0); /* its ServerHello: it read ours */
    close(fd);
    wait_log();
    if (strstr(log_matched, "TLS handshake failed") == NULL || strstr(log_matched, "speak TLS") != NULL)
        fail_msg("%s", log_matched);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    stop_server(s);
}

/* Connected, but the handshake never ends: the server's handshake timeout closes it. */
static void test_stalled_handshake_closed(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 200, addr);
    int fd;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, WAIT_MS, &fd, NULL, 0));
    static const unsigned char partial[] = {0x16, 0x03, 0x01, 0x00, 0x80}; /* a record header, no body */
    expect_log("its TLS handshake not finished within 200 ms"); /* a fault: begun, not finished */
    assert_int_equal(sizeof(partial), write(fd, partial, sizeof(partial)));
    wait_log();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(1, poll(&p, 1, WAIT_MS));
    char b;
    assert_true(read(fd, &b, 1) <= 0); /* closed: EOF (or a reset) */
    close(fd);
    stop_server(s);
}

/* One connection too many is closed during its handshake (its GOAWAY cannot be sent before
 * the handshake, which is no longer read): the client is refused at once, not left hanging. */
static void test_connection_limit_during_handshake(void **state)
{
    (void)state;
    arpc_tls_options stls = {.cert_file = P.server_pem, .key_file = P.server_key};
    arpc_server_options so = {.workers = 1, .tls = &stls, .max_connections = 1};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "echo", test_echo, NULL, NULL));
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));
    arpc_tls_options tls = {.ca_file = P.ca};
    arpc_client *first, *second;
    char err[ARPC_ERRBUF_SIZE] = "";
    assert_int_equal(ARPC_OK, try_connect(addr, &tls, &first, err, sizeof(err)));
    expect_log("max_connections");
    int rc = try_connect(addr, &tls, &second, err, sizeof(err));
    if (rc == ARPC_OK || rc == ARPC_ETIMEDOUT)
        fail_msg("the connection over the limit: %s: %s", arpc_errname(rc), err);
    wait_log();
    void *reply;
    size_t len;
    assert_int_equal(ARPC_OK, arpc_call(first, "echo", "x", 1, &reply, &len, WAIT_MS)); /* the first goes on */
    arpc_free(reply);
    assert_int_equal(ARPC_OK, arpc_client_close(first));
    stop_server(s);
}

/* Rotation: after a reload with a certificate from another CA, new connections see the new
 * one (a client trusting only the old CA is refused, one trusting the new CA gets in), while
 * a connection made before goes on calling. A reload that fails leaves the server as it was. */
static void test_certificate_reload(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    arpc_tls_options old_ca = {.ca_file = P.ca}, new_ca = {.ca_file = P.other_ca};
    arpc_client *before;
    char err[ARPC_ERRBUF_SIZE] = "";
    int rc = try_connect(addr, &old_ca, &before, err, sizeof(err));
    if (rc != ARPC_OK)
        fail_msg("connect: %s: %s", arpc_errname(rc), err);
    expect_refused(addr, &new_ca, "certificate verify failed");

    arpc_tls_options bad = {.cert_file = P.other_server_pem, .key_file = P.server_key}; /* not its key */
    assert_int_equal(ARPC_ETLS, arpc_server_tls_reload(s, &bad, err, sizeof(err)));
    assert_non_null(strstr(err, P.server_key));
    bad.cert_file = "/nonexistent/cert.pem";
    assert_int_equal(ARPC_ETLS, arpc_server_tls_reload(s, &bad, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/cert.pem: No such file or directory")); /* errno's words */
    assert_int_equal(ARPC_EINVAL, arpc_server_tls_reload(s, NULL, NULL, 0));
    arpc_client *c;
    rc = try_connect(addr, &old_ca, &c, err, sizeof(err)); /* still the old certificate */
    if (rc != ARPC_OK)
        fail_msg("connect after failed reloads: %s: %s", arpc_errname(rc), err);
    assert_int_equal(ARPC_OK, arpc_client_close(c));

    arpc_tls_options next = {.cert_file = P.other_server_pem, .key_file = P.other_server_key};
    rc = arpc_server_tls_reload(s, &next, err, sizeof(err));
    if (rc != ARPC_OK)
        fail_msg("reload: %s: %s", arpc_errname(rc), err);
    expect_refused(addr, &old_ca, "certificate verify failed");
    rc = try_connect(addr, &new_ca, &c, err, sizeof(err));
    if (rc != ARPC_OK)
        fail_msg("connect after the reload: %s: %s", arpc_errname(rc), err);
    void *reply;
    size_t len;
    assert_int_equal(ARPC_OK, arpc_call(c, "echo", "new", 3, &reply, &len, WAIT_MS));
    arpc_free(reply);
    assert_int_equal(ARPC_OK, arpc_call(before, "echo", "old", 3, &reply, &len, WAIT_MS)); /* kept its session */
    assert_memory_equal("old", reply, 3);
    arpc_free(reply);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_client_close(before));
    stop_server(s);
    assert_int_equal(ARPC_EINVAL, arpc_server_tls_reload(NULL, &next, NULL, 0));

    arpc_server *plain; /* a server without TLS has nothing to reload */
    arpc_server_options po = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&plain, &po));
    assert_int_equal(ARPC_EINVAL, arpc_server_tls_reload(plain, &next, err, sizeof(err)));
    assert_non_null(strstr(err, "without TLS"));
    stop_server(plain);
}

/* Three TLS clients streaming 1 MiB calls at once: the server's loop turns spend their bulk
 * budget (async/loop_bulk.c) and a connection then reads only the bytes its TLS stream holds,
 * coming back for the rest on the socket's next readiness. Every call is answered whole (a
 * stream left holding bytes that no readiness brings back would hang them). */
static void test_concurrent_bulk_calls(void **state)
{
    (void)state;
    enum { CLIENTS = 3, CALLS = 16, BIG = 1 << 20 };
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    arpc_tls_options tls = {.ca_file = P.ca};
    arpc_client *c[CLIENTS];
    char err[ARPC_ERRBUF_SIZE] = "";
    for (int k = 0; k < CLIENTS; k++) {
        int rc = try_connect(addr, &tls, &c[k], err, sizeof(err));
        if (rc != ARPC_OK)
            fail_msg("connect: %s: %s", arpc_errname(rc), err);
    }
    uint8_t *src = malloc(BIG);
    assert_non_null(src);
    fill_pattern(src, 0, BIG);
    arpc_future *fs[CLIENTS][CALLS];
    for (int i = 0; i < CALLS; i++)
        for (int k = 0; k < CLIENTS; k++)
            fs[k][i] = arpc_call_async(c[k], "echo", src + i, BIG - 64, WAIT_MS * 3);
    for (int k = 0; k < CLIENTS; k++)
        for (int i = 0; i < CALLS; i++) {
            assert_int_equal(ARPC_OK, arpc_future_wait(fs[k][i]));
            size_t got;
            const void *d = arpc_future_data(fs[k][i], &got);
            assert_int_equal(BIG - 64, got);
            assert_memory_equal(src + i, d, got);
            arpc_future_release(fs[k][i]);
        }
    free(src);
    for (int k = 0; k < CLIENTS; k++)
        assert_int_equal(ARPC_OK, arpc_client_close(c[k]));
    stop_server(s);
}

/* A reconnect refused by TLS (the server's certificate rotated to one the client does not
 * trust, its connection then cut): a call that cannot be sent ends ARPC_EUNREACHABLE with the
 * handshake's failure in its result. (Before, the code alone; the words were only in
 * arpc_client_last_error.) */
static void test_reconnect_refused_by_tls_named_in_the_result(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX], target[ARPC_ADDR_MAX + 8], via[ARPC_ADDR_MAX], tls_via[ARPC_ADDR_MAX + 8];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    snprintf(target, sizeof(target), "tcp://%s", addr + strlen("tls://"));
    struct cut_proxy *px = cut_proxy_start(target, via, sizeof(via)); /* TLS passes through it */
    assert_non_null(px);
    snprintf(tls_via, sizeof(tls_via), "tls://%s", via + strlen("tcp://"));
    arpc_tls_options ca = {.ca_file = P.ca};
    arpc_client_options co = {.connect_timeout_ms = WAIT_MS, .tls = &ca};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, tls_via, &co));
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "echo", "x", 1, &reply, &len, WAIT_MS));
    arpc_free(reply);
    arpc_tls_options next = {.cert_file = P.other_server_pem, .key_file = P.other_server_key};
    char err[ARPC_ERRBUF_SIZE] = "";
    assert_int_equal(ARPC_OK, arpc_server_tls_reload(s, &next, err, sizeof(err)));
    assert_true(cut_proxy_cut(px) >= 1);
    /* A reconnect tried: the last error's code is ECONNLOST, then ETLS. */
    assert_true(WAIT_UNTIL((arpc_client_last_error(c, err, sizeof(err)), strstr(err, "certificate verify failed") != NULL)));
    reply = NULL;
    int rc = arpc_call(c, "echo", "x", 1, &reply, &len, 100);
    if (rc != ARPC_EUNREACHABLE || reply == NULL || strstr(reply, "certificate verify failed") == NULL)
        fail_msg("expected ARPC_EUNREACHABLE naming the certificate, got %s: %s", arpc_errname(rc),
                 reply != NULL ? (const char *)reply : "(no result)");
    assert_int_equal(strlen(reply), len);
    arpc_free(reply);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    cut_proxy_stop(px);
    stop_server(s);
}

/* Revocation: a CRL in ca_file turns the check on. A client trusting ca with its CRL refuses
 * the server certificate it revokes; a server with it refuses the client certificate it
 * revokes, and logs why. (A ca_file without CRLs checks none: every other test.) */
static void test_revoked_certificates(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    arpc_tls_options revoking = {.ca_file = P.revoked_ca};
    expect_refused(addr, &revoking, "certificate verify failed: certificate revoked");
    stop_server(s);

    /* The server checks its clients against the CRL: alice's certificate is revoked. */
    arpc_tls_options st = {.cert_file = P.other_server_pem, .key_file = P.other_server_key, .ca_file = P.revoked_ca,
                           .require_client_cert = true};
    char err[ARPC_ERRBUF_SIZE] = "";
    arpc_server_options so = {.workers = 1, .tls = &st, .errbuf = err, .errbuf_len = sizeof(err)};
    int rc = arpc_server_create(&s, &so);
    if (rc != ARPC_OK)
        fail_msg("server: %s: %s", arpc_errname(rc), err);
    assert_int_equal(ARPC_OK, arpc_server_register(s, "echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, ARPC_ADDR_MAX));
    expect_log("certificate revoked");
    arpc_tls_options alice = {.ca_file = P.other_ca, .cert_file = P.client_pem, .key_file = P.client_key};
    arpc_client *c;
    rc = try_connect(addr, &alice, &c, err, sizeof(err));
    assert_int_not_equal(ARPC_OK, rc);
    assert_null(c);
    wait_log(); /* the server's side says why */
    stop_server(s);
}

static void test_options_checked(void **state)
{
    (void)state;
    char err[256] = "";
    arpc_tls_options missing = {.cert_file = "/nonexistent/cert.pem", .key_file = P.server_key};
    arpc_server_options so = {.workers = 1, .tls = &missing, .errbuf = err, .errbuf_len = sizeof(err)};
    arpc_server *s;
    assert_int_equal(ARPC_ETLS, arpc_server_create(&s, &so));
    assert_non_null(strstr(err, "/nonexistent/cert.pem: No such file or directory")); /* errno's words */
    arpc_tls_options mtls_no_ca = {.cert_file = P.server_pem, .key_file = P.server_key, .require_client_cert = true};
    so.tls = &mtls_no_ca;
    assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
    /* tls:// on a server with no certificate: refused before the port is bound, so a port in
     * use does not change the answer, and the port is never taken (another binds it after). */
    arpc_server_options plain = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &plain));
    assert_int_equal(ARPC_EINVAL, arpc_server_listen(s, "tls://127.0.0.1:0", NULL, 0));
    char taken[ARPC_ADDR_MAX], again[ARPC_ADDR_MAX + 8];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", taken, sizeof(taken)));
    snprintf(again, sizeof(again), "tls://%s", taken + strlen("tcp://"));
    assert_int_equal(ARPC_EINVAL, arpc_server_listen(s, again, NULL, 0));
    stop_server(s);
}

static int setup_all(void **state)
{
    (void)state;
    sem_init(&log_seen, 0, 0);
    arpc_set_logger(test_logger, NULL, ARPC_LOG_DEBUG);
    if (!tls_certs_make(&certs))
        return -1;
    snprintf(P.ca, sizeof(P.ca), "%s", tls_certs_path(&certs, "ca", "pem"));
    snprintf(P.other_ca, sizeof(P.other_ca), "%s", tls_certs_path(&certs, "other_ca", "pem"));
    snprintf(P.server_pem, sizeof(P.server_pem), "%s", tls_certs_path(&certs, "server", "pem"));
    snprintf(P.server_key, sizeof(P.server_key), "%s", tls_certs_path(&certs, "server", "key"));
    snprintf(P.expired_pem, sizeof(P.expired_pem), "%s", tls_certs_path(&certs, "expired", "pem"));
    snprintf(P.expired_key, sizeof(P.expired_key), "%s", tls_certs_path(&certs, "expired", "key"));
    snprintf(P.client_pem, sizeof(P.client_pem), "%s", tls_certs_path(&certs, "client", "pem"));
    snprintf(P.client_key, sizeof(P.client_key), "%s", tls_certs_path(&certs, "client", "key"));
    snprintf(P.other_server_pem, sizeof(P.other_server_pem), "%s", tls_certs_path(&certs, "other_server", "pem"));
    snprintf(P.other_server_key, sizeof(P.other_server_key), "%s", tls_certs_path(&certs, "other_server", "key"));
    snprintf(P.revoked_ca, sizeof(P.revoked_ca), "%s", tls_certs_path(&certs, "revoked_ca", "pem"));
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    tls_certs_remove(&certs);
    return 0;
}

/* A bare OpenSSL client (blocking, no verification: only the cipher is in question) offering
 * only `ciphers` (TLS 1.2) or `suites` (TLS 1.3). True when the handshake completed; then
 * `agreed` gets the cipher chosen. */
static bool raw_handshake(const char *addr, int version, const char *ciphers, const char *suites, char *agreed,
                          size_t len)
{
    int fd;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, WAIT_MS, &fd, NULL, 0));
    assert_int_equal(0, fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK));
    struct timeval hang = {.tv_sec = WAIT_MS / 1000}; /* a silent server fails the handshake, not the run */
    assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &hang, sizeof(hang)));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    assert_int_equal(1, SSL_CTX_set_min_proto_version(ctx, version));
    assert_int_equal(1, SSL_CTX_set_max_proto_version(ctx, version));
    if (ciphers != NULL)
        assert_int_equal(1, SSL_CTX_set_cipher_list(ctx, ciphers));
    if (suites != NULL)
        assert_int_equal(1, SSL_CTX_set_ciphersuites(ctx, suites));
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    assert_int_equal(1, SSL_set_fd(ssl, fd));
    bool ok = SSL_connect(ssl) == 1;
    if (ok)
        snprintf(agreed, len, "%s", SSL_get_cipher_name(ssl));
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return ok;
}

/* TLS 1.2 is held to ECDHE with AEAD ciphers (transport/tls_ctx.c): a client offering only a
 * CBC suite with a SHA-1 or SHA-256 MAC is refused (the server logs why); one offering an
 * AES-GCM or ChaCha20-Poly1305 suite gets it; TLS 1.3 keeps OpenSSL's suites. The certificate
 * is ECDSA, so each refused suite could otherwise have been used. */
static void test_tls12_aead_ciphers_only(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX], agreed[64];
    arpc_server *s = start_server(P.server_pem, P.server_key, false, 0, addr);
    static const char *refused[] = {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        expect_log("TLS handshake failed: no shared cipher");
        if (raw_handshake(addr, TLS1_2_VERSION, refused[i], NULL, agreed, sizeof(agreed)))
            fail_msg("a TLS 1.2 client offering only %s was let in", refused[i]);
        wait_log();
    }
    static const char *accepted[] = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                     "ECDHE-ECDSA-CHACHA20-POLY1305"};
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        if (!raw_handshake(addr, TLS1_2_VERSION, accepted[i], NULL, agreed, sizeof(agreed)))
            fail_msg("a TLS 1.2 client offering %s was refused", accepted[i]);
        assert_string_equal(accepted[i], agreed);
    }
    assert_true(raw_handshake(addr, TLS1_3_VERSION, NULL, "TLS_CHACHA20_POLY1305_SHA256", agreed, sizeof(agreed)));
    assert_string_equal("TLS_CHACHA20_POLY1305_SHA256", agreed);
    stop_server(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_certificate),
        cmocka_unit_test(test_wrong_ca),
        cmocka_unit_test(test_expired_certificate),
        cmocka_unit_test(test_mtls_refused_client_certificate_named),
        cmocka_unit_test(test_silent_peer_named_at_connect_timeout),
        cmocka_unit_test(test_host_name),
        cmocka_unit_test(test_mtls_requires_client_certificate),
        cmocka_unit_test(test_mtls_subject_seen_by_handler),
        cmocka_unit_test(test_plain_client_to_tls_server),
        cmocka_unit_test(test_tls_client_to_plain_server),
        cmocka_unit_test(test_peer_gone_mid_handshake_spoke_tls),
        cmocka_unit_test(test_stalled_handshake_closed),
        cmocka_unit_test(test_connection_limit_during_handshake),
        cmocka_unit_test(test_options_checked),
        cmocka_unit_test(test_certificate_reload),
        cmocka_unit_test(test_reconnect_refused_by_tls_named_in_the_result),
        cmocka_unit_test(test_concurrent_bulk_calls),
        cmocka_unit_test(test_revoked_certificates),
        cmocka_unit_test(test_tls12_aead_ciphers_only),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}

#else /* built without TLS */

static void test_tls_refused_without_tls(void **state)
{
    (void)state;
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options co = {.errbuf = err, .errbuf_len = sizeof(err)};
    assert_int_equal(ARPC_EADDR, arpc_client_connect(&c, "tls://127.0.0.1:1", &co));
    assert_non_null(strstr(err, "built without TLS"));
    arpc_server *s;
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_EADDR, arpc_server_listen(s, "tls://127.0.0.1:0", NULL, 0));
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 1000));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    printf("tls_test: built without TLS (ARPC_WITH_TLS off): only checking that tls:// is refused\n");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tls_refused_without_tls)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
