/*
 * Holders of one token with different client certificates are different clients to the reply
 * cache (core/server_auth.c: key_identity). The token callback names the client (a fixed
 * list's entry names all its holders alike), and before, that name alone keyed at-most-once
 * state: "bob", sending "alice"'s client id, incarnation and seq, was answered from her cached
 * reply, whose words only she should read (a review). Now the key joins the callback's name
 * with the certificate's, so bob's call runs as his own, while handlers still see the
 * callback's identity.
 *
 * The clients are bare: OpenSSL over a blocking socket writing arpc frames, so that the
 * attacker can choose the ids arpc's client would not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/ssl.h>

#include "support/tls_bare_client.h"
#include "support/tls_certs.h"

#define TOKEN "shared"
#define CLIENT_ID 5
#define INCARNATION 9

static atomic_int runs;

/* Replies "for <the caller's certificate subject>": words for that holder alone. */
static void h_secret(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&runs, 1);
    char out[512];
    int n = snprintf(out, sizeof(out), "for %s", arpc_request_peer_subject(req));
    arpc_reply(req, out, (size_t)n);
}

struct bare {
    SSL_CTX *b_ctx;
    SSL *b_ssl;
    int b_fd;
    uint8_t b_body[4096];
};

/* Connects to addr with the certificate NAME.pem, says HELLO as CLIENT_ID / INCARNATION with
 * TOKEN, and reads the server's HELLO. */
static void bare_connect(struct bare *b, const char *addr, const char *name)
{
    char pem[256], key[256];
    snprintf(pem, sizeof(pem), "%s", tls_certs_path(&tls_group_certs, name, "pem"));
    snprintf(key, sizeof(key), "%s", tls_certs_path(&tls_group_certs, name, "key"));
    b->b_ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: the server is not on trial */
    assert_non_null(b->b_ctx);
    assert_int_equal(1, SSL_CTX_use_certificate_file(b->b_ctx, pem, SSL_FILETYPE_PEM));
    assert_int_equal(1, SSL_CTX_use_PrivateKey_file(b->b_ctx, key, SSL_FILETYPE_PEM));
    b->b_ssl = tls_bare_handshake(addr, b->b_ctx, &b->b_fd);
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + 64];
    assert_true(arpc_frame_hello_token_size(sizeof(TOKEN) - 1) <= sizeof(hello));
    size_t n = arpc_frame_encode_hello_token(hello, CLIENT_ID, 0, 0, TOKEN, sizeof(TOKEN) - 1);
    arpc_frame_stamp_hello_incarnation(hello, INCARNATION);
    assert_int_equal((int)n, SSL_write(b->b_ssl, hello, (int)n));
}

/* The next frame (its body in b_body). */
static struct arpc_frame bare_read(struct bare *b)
{
    struct arpc_frame f;
    assert_true(tls_bare_read_frame(b->b_ssl, b->b_body, sizeof(b->b_body), &f));
    return f;
}

/* Sends numbered call seq 1 (acknowledging nothing) and returns its reply's words. */
static void bare_call(struct bare *b, uint64_t xid, char *out, size_t len)
{
    struct arpc_frame f = bare_read(b);
    assert_int_equal(ARPC_FRAME_HELLO, f.f_kind); /* the server's: let in */
    uint8_t req[128];
    size_t n = arpc_frame_encode_request(req, ARPC_FRAME_REQUEST, xid, 1, 0, 0, "t.secret", 8, NULL, 0);
    assert_int_equal((int)n, SSL_write(b->b_ssl, req, (int)n));
    f = bare_read(b);
    assert_int_equal(xid, f.f_xid);
    assert_int_equal(ARPC_FRAME_REPLY, f.f_kind);
    snprintf(out, len, "%.*s", (int)f.f_payload_len, (const char *)f.f_payload);
}

static void bare_close(struct bare *b)
{
    SSL_free(b->b_ssl);
    SSL_CTX_free(b->b_ctx);
    close(b->b_fd);
}

static void test_one_token_two_certificates_two_clients(void **state)
{
    (void)state;
    static const arpc_auth_token tokens[] = {{.token = TOKEN, .len = sizeof(TOKEN) - 1}, {.token = NULL}};
    arpc_tls_options tls = tls_group_pair.tp_server;
    tls.ca_file = tls_group_pair.tp_ca;
    tls.require_client_cert = true;
    arpc_server_options so = {.workers = 1,
                              .tls = &tls,
                              .authenticate = arpc_auth_fixed_tokens,
                              .authenticate_ctx = (void *)tokens};
    arpc_server *s = NULL;
    char addr[ARPC_ADDR_MAX];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.secret", h_secret, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));

    static struct bare alice, bob;
    char words[512];
    bare_connect(&alice, addr, "client");
    bare_call(&alice, 1, words, sizeof(words));
    assert_string_equal("for " TLS_CERTS_CLIENT_SUBJECT, words); /* kept for her retries */
    bare_connect(&bob, addr, "san_a"); /* another holder of the token: the same ids */
    bare_call(&bob, 1, words, sizeof(words));
    if (strcmp(words, "for ") != 0) /* (san_a's subject is empty) */
        fail_msg("another holder of the token was answered from alice's reply: \"%s\"", words);
    /* alice's own re-send is still answered from her cache. */
    bare_close(&alice);
    bare_connect(&alice, addr, "client");
    bare_call(&alice, 2, words, sizeof(words));
    assert_string_equal("for " TLS_CERTS_CLIENT_SUBJECT, words);
    assert_int_equal(2, atomic_load(&runs)); /* alice's and bob's; her re-send ran nothing */
    bare_close(&alice);
    bare_close(&bob);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static int setup_all(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    return tls_group_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_token_two_certificates_two_clients),
    };
    return cmocka_run_group_tests(tests, setup_all, tls_group_teardown);
}

#else

int main(void)
{
    printf("tls_shared_token_test: built without TLS (ARPC_WITH_TLS off): nothing to test\n");
    return 0;
}
#endif
