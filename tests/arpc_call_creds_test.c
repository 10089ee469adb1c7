/*
 * arpc-call's credentials (tools/call_creds.c), run as a program against servers in this
 * process: a tls:// server with certificates made at run time (support/tls_certs.c) called
 * with --ca and without it, with --server-name; a mutual-TLS server with --cert/--key and
 * without them; a token server with --token-file (right, wrong, its line feed) and --token;
 * and the usage errors of the new options. Every failure is one line on stderr. Built without
 * TLS, the TLS options are refused in one line, and the token cases still run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/call_run.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifndef ARPC_CALL_BIN
#error "tests/CMakeLists.txt defines ARPC_CALL_BIN, the arpc-call program's path"
#endif

#define RUN(r, ...) call_run((r), ARPC_CALL_BIN, NULL, 0, (const char *const[]){__VA_ARGS__, NULL})

/* A failure: exit status 10 + code, nothing on stdout, one line on stderr that starts
 * "arpc-call: WHAT: ARPC_EXXX: " and holds words. */
static void expect_failure(const struct call_run *r, int code, const char *what, const char *words)
{
    char head[ARPC_ADDR_MAX + 64];
    snprintf(head, sizeof(head), "arpc-call: %s: %s: ", what, arpc_errname(code));
    if (r->status != 10 + code || strncmp(r->err, head, strlen(head)) != 0 || call_run_lines(r->err) != 1 ||
        r->err[r->err_len - 1] != '\n' || strstr(r->err, words) == NULL)
        fail_msg("expected exit %d and one line \"%s...%s...\", got exit %d and: %s", 10 + code, head, words,
                 r->status, r->err);
    assert_int_equal(0, r->out_len);
}

static void expect_reply(const struct call_run *r, const char *reply)
{
    if (r->status != 0)
        fail_msg("exit %d: %s", r->status, r->err);
    assert_string_equal(reply, r->out);
    assert_int_equal(0, r->err_len);
}

/* A file in /tmp holding text; path gets its name. */
static void write_temp(char *path, size_t cap, const char *text)
{
    snprintf(path, cap, "/tmp/arpc-call-creds-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal((ssize_t)strlen(text), write(fd, text, strlen(text)));
    close(fd);
}

static arpc_server *start(arpc_server_options *so, const char *listen, char *addr)
{
    char err[ARPC_ERRBUF_SIZE] = "";
    so->workers = 1;
    so->errbuf = err;
    so->errbuf_len = sizeof(err);
    arpc_server *s;
    int rc = arpc_server_create(&s, so);
    if (rc != ARPC_OK)
        fail_msg("server: %s: %s", arpc_errname(rc), err);
    assert_int_equal(ARPC_OK, arpc_server_register(s, "echo", test_echo, NULL, NULL));
    /* Bound and listening when this returns: the address is ready for arpc-call. */
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen, addr, ARPC_ADDR_MAX));
    return s;
}

static void stop(arpc_server *s)
{
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 1000));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* ---- tokens (any build) ---- */

static const char token_right[] = "s3cret-token";
static const arpc_auth_token tokens[] = {{token_right, sizeof(token_right) - 1, 0}, {NULL, 0, 0}};

static void test_token(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX], right[64], right_crlf[64], wrong[64], empty[64];
    arpc_server_options so = {.authenticate = arpc_auth_fixed_tokens, .authenticate_ctx = (void *)tokens};
    arpc_server *s = start(&so, "tcp://127.0.0.1:0", addr);
    write_temp(right, sizeof(right), "s3cret-token\n");
    write_temp(right_crlf, sizeof(right_crlf), "s3cret-token\r\n");
    write_temp(wrong, sizeof(wrong), "s3cret-tokeN\n");
    write_temp(empty, sizeof(empty), "\n");
    struct call_run r;
    RUN(&r, "--token-file", right, addr, "echo", "in");
    expect_reply(&r, "in");
    RUN(&r, "--token-file", right_crlf, addr, "echo", "in");
    expect_reply(&r, "in");
    RUN(&r, "--token=s3cret-token", addr, "echo", "in");
    expect_reply(&r, "in");
    /* refused by the server: its reason, in one line */
    RUN(&r, "--token-file", wrong, addr, "echo", "in");
    expect_failure(&r, ARPC_EAUTH, addr, "refused");
    RUN(&r, addr, "echo", "in");
    expect_failure(&r, ARPC_EAUTH, addr, "refused");
    /* refused here: empty, unreadable, or both options */
    RUN(&r, "--token-file", empty, addr, "echo");
    assert_int_equal(2, r.status);
    assert_string_equal("arpc-call: --token-file: the token is empty (1 to 4096 bytes)\n", r.err);
    RUN(&r, "--token-file", "/nonexistent/arpc-token", addr, "echo");
    assert_int_equal(1, r.status);
    assert_int_equal(1, call_run_lines(r.err));
    assert_non_null(strstr(r.err, "arpc-call: /nonexistent/arpc-token: cannot read"));
    RUN(&r, "--token", "x", "--token-file", right, addr, "echo");
    assert_int_equal(2, r.status);
    RUN(&r, "--json", "--token-file", right, addr, "KV.Get");
    assert_int_equal(2, r.status);
    unlink(right);
    unlink(right_crlf);
    unlink(wrong);
    unlink(empty);
    stop(s);
}

static void test_usage(void **state)
{
    (void)state;
    struct call_run r;
    RUN(&r, "--help");
    assert_int_equal(0, r.status);
    static const char *const listed[] = {"--ca ", "--cert ", "--key ", "--server-name ", "--token ", "--token-file "};
    for (size_t i = 0; i < sizeof(listed) / sizeof(listed[0]); i++)
        if (strstr(r.out, listed[i]) == NULL)
            fail_msg("--help does not list %s", listed[i]);
    RUN(&r, "--cert", "c.pem", "tls://127.0.0.1:1", "echo");
    assert_int_equal(2, r.status);
    RUN(&r, "--key", "c.key", "tls://127.0.0.1:1", "echo");
    assert_int_equal(2, r.status);
    RUN(&r, "--ca", "", "tls://127.0.0.1:1", "echo");
    assert_int_equal(2, r.status);
    /* TLS options need a tls:// address */
    RUN(&r, "--ca", "ca.pem", "tcp://127.0.0.1:1", "echo");
    assert_int_equal(2, r.status);
    assert_non_null(strstr(r.err, "need a tls:// ADDR"));
}

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include "support/tls_certs.h"

static struct tls_certs certs;

struct paths {
    char ca[256], server_pem[256], server_key[256], client_pem[256], client_key[256];
};
static struct paths P;

static int setup_all(void **state)
{
    (void)state;
    if (!tls_certs_make(&certs))
        return -1;
    snprintf(P.ca, sizeof(P.ca), "%s", tls_certs_path(&certs, "ca", "pem"));
    snprintf(P.server_pem, sizeof(P.server_pem), "%s", tls_certs_path(&certs, "server", "pem"));
    snprintf(P.server_key, sizeof(P.server_key), "%s", tls_certs_path(&certs, "server", "key"));
    snprintf(P.client_pem, sizeof(P.client_pem), "%s", tls_certs_path(&certs, "client", "pem"));
    snprintf(P.client_key, sizeof(P.client_key), "%s", tls_certs_path(&certs, "client", "key"));
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    tls_certs_remove(&certs);
    return 0;
}

static arpc_server *start_tls(bool mtls, char *addr)
{
    arpc_tls_options tls = {.cert_file = P.server_pem, .key_file = P.server_key};
    if (mtls) {
        tls.ca_file = P.ca;
        tls.require_client_cert = true;
    }
    arpc_server_options so = {.tls = &tls};
    return start(&so, "tls://127.0.0.1:0", addr);
}

static void test_tls_trust(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_tls(false, addr);
    struct call_run r;
    RUN(&r, "--ca", P.ca, addr, "echo", "over tls");
    expect_reply(&r, "over tls");
    /* the system's CAs do not know the test CA: one line, naming the certificate problem */
    RUN(&r, addr, "echo", "over tls");
    expect_failure(&r, ARPC_ETLS, addr, "certificate verify failed");
    /* the name to check: one the certificate carries, and one it does not */
    RUN(&r, "--ca", P.ca, "--server-name", "localhost", addr, "echo", "by name");
    expect_reply(&r, "by name");
    RUN(&r, "--ca", P.ca, "--server-name=db.example", addr, "echo", "by name");
    expect_failure(&r, ARPC_ETLS, addr, "certificate verify failed");
    /* a CA file that cannot be read: a local failure (1), as an unreadable --file is, not the
     * TLS refusal (34) a server's certificate gets (an operator's trial) */
    RUN(&r, "--ca", "/nonexistent/ca.pem", addr, "echo");
    assert_int_equal(1, r.status);
    assert_int_equal(1, call_run_lines(r.err));
    assert_non_null(strstr(r.err, "arpc-call: /nonexistent/ca.pem: cannot read"));
    RUN(&r, "--ca", P.ca, "--cert", "/nonexistent/me.pem", "--key", "/nonexistent/me.key", addr, "echo");
    assert_int_equal(1, r.status);
    stop(s);
}

/* --ca-dir: a directory of CAs found by their subject hash (as c_rehash names them): the test
 * CA there is trusted; an empty directory trusts nobody. */
static void test_tls_trust_ca_dir(void **state)
{
    (void)state;
    char dir[300], hashed[340], empty[300];
    snprintf(dir, sizeof(dir), "%s/cadir", certs.tc_dir);
    snprintf(empty, sizeof(empty), "%s/emptydir", certs.tc_dir);
    assert_int_equal(0, mkdir(dir, 0700));
    assert_int_equal(0, mkdir(empty, 0700));
    FILE *f = fopen(P.ca, "r");
    assert_non_null(f);
    X509 *ca = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(ca);
    snprintf(hashed, sizeof(hashed), "%s/%08lx.0", dir, X509_NAME_hash_ex(X509_get_subject_name(ca), NULL, NULL, NULL));
    f = fopen(hashed, "w");
    assert_non_null(f);
    assert_int_equal(1, PEM_write_X509(f, ca));
    fclose(f);
    X509_free(ca);
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_tls(false, addr);
    struct call_run r;
    RUN(&r, "--ca-dir", dir, addr, "echo", "via a directory");
    expect_reply(&r, "via a directory");
    RUN(&r, "--ca-dir", empty, addr, "echo", "via a directory");
    expect_failure(&r, ARPC_ETLS, addr, "certificate verify failed");
    stop(s);
    assert_int_equal(0, unlink(hashed));
    assert_int_equal(0, rmdir(dir));
    assert_int_equal(0, rmdir(empty));
}

static void test_tls_mutual(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_tls(true, addr);
    struct call_run r;
    RUN(&r, "--ca", P.ca, "--cert", P.client_pem, "--key", P.client_key, addr, "echo", "mutual");
    expect_reply(&r, "mutual");
    RUN(&r, "--ca", P.ca, addr, "echo", "mutual");
    expect_failure(&r, ARPC_ETLS, addr, "certificate required");
    /* a key that is not the certificate's */
    RUN(&r, "--ca", P.ca, "--cert", P.client_pem, "--key", P.server_key, addr, "echo");
    expect_failure(&r, ARPC_ETLS, addr, P.server_key);
    stop(s);
}

/* The two compose: the token rides inside the TLS stream. */
static void test_tls_and_token(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX], right[64];
    arpc_tls_options tls = {.cert_file = P.server_pem, .key_file = P.server_key};
    arpc_server_options so = {.tls = &tls, .authenticate = arpc_auth_fixed_tokens, .authenticate_ctx = (void *)tokens};
    arpc_server *s = start(&so, "tls://127.0.0.1:0", addr);
    write_temp(right, sizeof(right), "s3cret-token\n");
    struct call_run r;
    RUN(&r, "--ca", P.ca, "--token-file", right, addr, "echo", "both");
    expect_reply(&r, "both");
    RUN(&r, "--ca", P.ca, addr, "echo", "both");
    expect_failure(&r, ARPC_EAUTH, addr, "refused");
    unlink(right);
    stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_tls_trust),
        cmocka_unit_test(test_tls_trust_ca_dir),
        cmocka_unit_test(test_tls_mutual),
        cmocka_unit_test(test_tls_and_token),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}

#else /* built without TLS */

static void test_tls_options_refused(void **state)
{
    (void)state;
    struct call_run r;
    RUN(&r, "--ca", "ca.pem", "tls://127.0.0.1:1", "echo");
    assert_int_equal(2, r.status);
    assert_string_equal("arpc-call: --ca: built without TLS (OpenSSL 3): rebuild arpc with libssl-dev installed\n",
                        r.err);
}

int main(void)
{
    printf("arpc_call_creds_test: built without TLS (ARPC_WITH_TLS off): the TLS cases are skipped\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_tls_options_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
