/*
 * A JSON-RPC peer on a tls:// listener is known as an arpc client there is
 * (core/jsonrpc_server.c: jsonrpc_sconn_adopt): the subject of its verified client
 * certificate reaches its handlers (arpc_request_peer_subject, arpc_request_peer's
 * cert_subject and certificate identity) and the server's authenticate callback, which can
 * then admit it by its certificate; a server that requires a token refuses it (it cannot send
 * one: docs/SECURITY.md). The JSON-RPC client has no TLS, so the peer here is a bare OpenSSL
 * client with certificates made at run time (support/tls_certs.c). A verified peer whose
 * subject the server has no memory for is refused, not let in anonymous. Built without TLS, only
 * that a plain JSON-RPC peer has no subject.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"
#include "transport/transport.h"

#define WAIT_MS TEST_WAIT_MS /* bounds a hang, never a timing check */

static atomic_int whoami_runs;

/* Replies the peer's subject as a JSON string ("(none)" without one), once it checked that
 * every view of the peer agrees on it. */
static void h_whoami(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&whoami_runs, 1);
    const char *subject = arpc_request_peer_subject(req);
    const arpc_peer_info *peer = arpc_request_peer(req);
    bool named = (peer->identity & ARPC_AUTH_CERT_IDENTITY) != 0;
    if (named != (subject != NULL) || (peer->cert_subject == NULL) != (subject == NULL) ||
        (subject != NULL && strcmp(peer->cert_subject, subject) != 0)) {
        arpc_reply_error(req, "the peer's views disagree");
        return;
    }
    char out[512];
    int n = snprintf(out, sizeof(out), "\"%s\"", subject != NULL ? subject : "(none)");
    arpc_reply(req, out, (size_t)n);
}

static const char call[] = "{\"method\":\"Who.Am\",\"params\":[1],\"id\":1}\n";

#ifdef ARPC_TEST_WITH_TLS
#include <fcntl.h>
#include <openssl/ssl.h>

#include "support/tls_certs.h"

static struct tls_certs certs;
static char ca[256], server_pem[256], server_key[256], client_pem[256], client_key[256], long_pem[256],
    long_key[256];

/* A client certificate whose subject, "CN=" and LONG_CN bytes, is allocated with a size nothing
 * else allocates while a peer connects: the sized test allocator can fail that one. */
#define LONG_CN 229
#define SUBJECT_ALLOC (3 + LONG_CN + 1)

/* The subject the authenticate callback was shown, for the test to check. */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static char seen_subject[256];

/* Lets in a verified certificate without a token (and nobody else). */
static int admit_certificates(const arpc_peer_info *peer, const void *token, size_t len, uint64_t *identity,
                              void *ctx)
{
    (void)token, (void)len, (void)identity, (void)ctx;
    pthread_mutex_lock(&seen_mu);
    snprintf(seen_subject, sizeof(seen_subject), "%s", peer->cert_subject != NULL ? peer->cert_subject : "(none)");
    pthread_mutex_unlock(&seen_mu);
    return peer->cert_subject != NULL ? ARPC_OK : ARPC_EAUTH;
}

/* A server on tls://127.0.0.1:0 requiring client certificates from ca; addr gets its address. */
static arpc_server *start_server(arpc_authenticate_fn authenticate, void *auth_ctx, char *addr)
{
    arpc_tls_options tls = {.cert_file = server_pem, .key_file = server_key, .ca_file = ca,
                            .require_client_cert = true};
    arpc_server_options so = {.workers = 1, .tls = &tls, .authenticate = authenticate, .authenticate_ctx = auth_ctx};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "Who.Am", h_whoami, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, ARPC_ADDR_MAX));
    return s;
}

/* A bare TLS peer connected to addr with the client certificate pem (and its key), verifying
 * the server; blocking reads that give up after WAIT_MS. Its socket is SSL_get_fd's. */
static SSL *tls_peer_connect(const char *addr, const char *pem, const char *key, SSL_CTX **ctx_out)
{
    int fd;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, WAIT_MS, &fd, NULL, 0));
    assert_int_equal(0, fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK));
    struct timeval hang = {.tv_sec = WAIT_MS / 1000};
    assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &hang, sizeof(hang)));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    assert_int_equal(1, SSL_CTX_load_verify_locations(ctx, ca, NULL));
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    assert_int_equal(1, SSL_CTX_use_certificate_file(ctx, pem, SSL_FILETYPE_PEM));
    assert_int_equal(1, SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM));
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    assert_int_equal(1, SSL_set_fd(ssl, fd));
    assert_int_equal(1, SSL_connect(ssl));
    *ctx_out = ctx;
    return ssl;
}

/* Sends one JSON-RPC request over TLS with the client certificate pem (and its key) and
 * returns everything the server wrote until it closed (or WAIT_MS passed: the test then fails
 * on what it lacks). */
static const char *tls_json_call_as(const char *addr, const char *request, const char *pem, const char *key)
{
    SSL_CTX *ctx;
    SSL *ssl = tls_peer_connect(addr, pem, key, &ctx);
    int fd = SSL_get_fd(ssl);
    assert_int_equal((int)strlen(request), SSL_write(ssl, request, (int)strlen(request)));
    static char got[4096];
    size_t have = 0;
    int n;
    /* One answer is all a request gets: read it, and the close that follows a refusal. */
    while (have < sizeof(got) - 1 && (n = SSL_read(ssl, got + have, (int)(sizeof(got) - 1 - have))) > 0) {
        have += (size_t)n;
        if (got[have - 1] == '\n' && strstr(got, "\"id\":1,") != NULL)
            break;
    }
    got[have] = '\0';
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return got;
}

static const char *tls_json_call(const char *addr, const char *request)
{
    return tls_json_call_as(addr, request, client_pem, client_key);
}

static void stop_server(arpc_server *s)
{
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 1000));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

#define ALICE_ANSWER "{\"id\":1,\"result\":\"" TLS_CERTS_CLIENT_SUBJECT "\",\"error\":null}\n"

/* A TLS half-close (close_notify, no FIN: Go's tls.Conn.CloseWrite) in the same segment as the
 * request before it: the server answers, then closes. The records are made into memory and
 * sent with one send, so the server's read meets the request and the end together. Before, the
 * end read with the request's bytes waited for a readiness that never came: no answer was
 * missing, but the server never closed, and the peer waited for ever (JSON-RPC has no
 * heartbeat). */
static void test_json_peer_half_close_in_one_segment(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(NULL, NULL, addr);
    SSL_CTX *ctx;
    SSL *ssl = tls_peer_connect(addr, client_pem, client_key, &ctx);
    int fd = SSL_get_fd(ssl);
    BIO *out = BIO_new(BIO_s_mem()); /* the request's record and the close_notify, kept */
    assert_non_null(out);
    SSL_set0_wbio(ssl, out);
    assert_int_equal((int)strlen(call), SSL_write(ssl, call, (int)strlen(call)));
    assert_true(SSL_shutdown(ssl) >= 0);
    char *bytes;
    long len = BIO_get_mem_data(out, &bytes);
    assert_true(len > 0);
    assert_int_equal(len, send(fd, bytes, (size_t)len, MSG_NOSIGNAL));
    static char got[4096];
    size_t have = 0;
    int n;
    while (have < sizeof(got) - 1 && (n = SSL_read(ssl, got + have, (int)(sizeof(got) - 1 - have))) > 0)
        have += (size_t)n;
    got[have] = '\0';
    int end = SSL_get_error(ssl, n);
    assert_string_equal("\n" ALICE_ANSWER, got); /* (the half-close's probe first: docs/PROTOCOL.md) */
    /* The server's close_notify, or its plain close: not the receive timeout (EAGAIN). */
    if (end != SSL_ERROR_ZERO_RETURN && !(end == SSL_ERROR_SYSCALL && errno != EAGAIN && errno != EWOULDBLOCK))
        fail_msg("the server did not close after its answer (SSL error %d)", end);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    stop_server(s);
}


/* No checks configured: the handler sees the certificate's subject, as an arpc client's. */
static void test_json_peer_subject(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(NULL, NULL, addr);
    assert_string_equal(ALICE_ANSWER, tls_json_call(addr, call));
    stop_server(s);
}

/* A callback admitting verified certificates is shown the subject and lets the peer in. */
static void test_json_peer_admitted_by_certificate(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(admit_certificates, NULL, addr);
    assert_string_equal(ALICE_ANSWER, tls_json_call(addr, call));
    pthread_mutex_lock(&seen_mu);
    assert_string_equal(TLS_CERTS_CLIENT_SUBJECT, seen_subject);
    pthread_mutex_unlock(&seen_mu);
    stop_server(s);
}

/* A server that requires a token refuses a JSON-RPC peer, certificate or not: it cannot send
 * one. Said with id null, then closed; nothing runs. */
static void test_json_peer_token_required(void **state)
{
    (void)state;
    static const char token[] = "s3cret";
    static const arpc_auth_token tokens[] = {{.token = token, .len = sizeof(token) - 1}, {.token = NULL}};
    char addr[ARPC_ADDR_MAX];
    int runs = atomic_load(&whoami_runs);
    arpc_server *s = start_server(arpc_auth_fixed_tokens, (void *)tokens, addr);
    const char *got = tls_json_call(addr, call);
    assert_non_null(strstr(got, "{\"id\":null,\"result\":null,\"error\":\"ARPC_EAUTH: the server requires a token"));
    assert_int_equal(runs, atomic_load(&whoami_runs));
    stop_server(s);
}

/* The server has no memory for the verified peer's subject: the peer is closed without an
 * answer (and logged), its call never runs; it is not let in anonymous. */
static void test_json_peer_subject_without_memory_refused(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    int runs = atomic_load(&whoami_runs);
    arpc_server *s = start_server(NULL, NULL, addr);
    test_alloc_fail_next(SUBJECT_ALLOC, SUBJECT_ALLOC + 1);
    const char *got = tls_json_call_as(addr, call, long_pem, long_key);
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed());
    assert_string_equal("", got);
    assert_int_equal(runs, atomic_load(&whoami_runs));
    got = tls_json_call_as(addr, call, long_pem, long_key); /* with memory: named */
    assert_non_null(strstr(got, "\"result\":\"CN=llll"));
    stop_server(s);
}

static int setup_all(void **state)
{
    (void)state;
    test_alloc_sized_install();
    char cn[LONG_CN];
    memset(cn, 'l', sizeof(cn));
    if (!tls_certs_make(&certs) || !tls_certs_add_client(&certs, "long_client", cn, sizeof(cn)))
        return -1;
    snprintf(long_pem, sizeof(long_pem), "%s", tls_certs_path(&certs, "long_client", "pem"));
    snprintf(long_key, sizeof(long_key), "%s", tls_certs_path(&certs, "long_client", "key"));
    snprintf(ca, sizeof(ca), "%s", tls_certs_path(&certs, "ca", "pem"));
    snprintf(server_pem, sizeof(server_pem), "%s", tls_certs_path(&certs, "server", "pem"));
    snprintf(server_key, sizeof(server_key), "%s", tls_certs_path(&certs, "server", "key"));
    snprintf(client_pem, sizeof(client_pem), "%s", tls_certs_path(&certs, "client", "pem"));
    snprintf(client_key, sizeof(client_key), "%s", tls_certs_path(&certs, "client", "key"));
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    tls_certs_remove(&certs);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_peer_subject),
        cmocka_unit_test(test_json_peer_admitted_by_certificate),
        cmocka_unit_test(test_json_peer_token_required),
        cmocka_unit_test(test_json_peer_subject_without_memory_refused),
        cmocka_unit_test(test_json_peer_half_close_in_one_segment),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}

#else /* built without TLS */

/* A plain JSON-RPC peer has no subject. */
static void test_plain_json_peer_has_no_subject(void **state)
{
    (void)state;
    arpc_server_options so = {.workers = 1};
    arpc_server *s;
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "Who.Am", h_whoami, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(0, fd_connect_loopback(fd, addr));
    assert_int_equal((ssize_t)strlen(call), write(fd, call, strlen(call)));
    char got[256] = "";
    size_t have = 0;
    ssize_t n;
    while (have < sizeof(got) - 1 && strchr(got, '\n') == NULL && (n = read(fd, got + have, sizeof(got) - 1 - have)) > 0)
        have += (size_t)n;
    close(fd);
    assert_string_equal("{\"id\":1,\"result\":\"(none)\",\"error\":null}\n", got);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 1000));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

int main(void)
{
    printf("jsonrpc_tls_peer_test: built without TLS (ARPC_WITH_TLS off): only a plain peer's empty subject\n");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_plain_json_peer_has_no_subject)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
