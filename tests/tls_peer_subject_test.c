/*
 * The verified client certificate's subject on a tls:// server (transport/tls_stream.c,
 * core/server_conn.c: sconn_learn_peer). A client whose certificate the server verified is
 * never let in as nobody in particular: when its subject cannot be had (the server is out of
 * memory for it) the connection is refused, logged, and the
 * client told why; else its identity, at-most-once namespace included, would fall back to
 * its bare client id. And a subject's control bytes reach handlers escaped, never raw.
 *
 * The certificates are made at run time (support/tls_certs.c), with subjects no CA tool would
 * let through: a CN of LONG_CN bytes, so that the subject's allocation has a size nothing
 * else allocates while a client connects (the sized test allocator picks it by that size),
 * and one with a newline and an escape sequence in it. (A CN that is not UTF-8 cannot be
 * made: OpenSSL 3 refuses to encode, and to parse, a name it cannot canonicalise.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include "support/tls_certs.h"

/* "CN=" and the CN: an RFC 2253 line of 3 + LONG_CN bytes, allocated with its NUL. */
#define LONG_CN 229
#define SUBJECT_ALLOC (3 + LONG_CN + 1)

static char long_pem[256], long_key[256], ctrl_pem[256], ctrl_key[256];
static char long_subject[3 + LONG_CN + 1];

/* Replies "<identity in hex> <subject, or (none)>". */
static void h_who(arpc_request *req, void *ctx)
{
    (void)ctx;
    const arpc_peer_info *peer = arpc_request_peer(req);
    const char *subject = arpc_request_peer_subject(req);
    char out[1024];
    int n = snprintf(out, sizeof(out), "%" PRIx64 " %s", peer->identity, subject != NULL ? subject : "(none)");
    arpc_reply(req, out, (size_t)n);
}

/* Client certificates from the CAs in ca_file are asked for and verified, not required (a
 * client without one is anonymous: what a verified one must not become). */
static arpc_server *start_server_trusting(char *addr, const char *ca_file)
{
    arpc_tls_options tls = tls_group_pair.tp_server;
    tls.ca_file = ca_file;
    arpc_server_options so = {.workers = 1, .tls = &tls};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "who", h_who, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, ARPC_ADDR_MAX));
    return s;
}

static arpc_server *start_server(char *addr) { return start_server_trusting(addr, tls_group_pair.tp_ca); }

static int connect_as(const char *addr, const char *pem, const char *key, arpc_client **c, char *err, size_t len)
{
    arpc_tls_options tls = {.ca_file = tls_group_pair.tp_ca, .cert_file = pem, .key_file = key};
    arpc_client_options co = {.tls = &tls, .connect_timeout_ms = TEST_WAIT_MS, .no_reconnect = true,
                              .errbuf = err, .errbuf_len = len};
    *c = NULL;
    return arpc_client_connect(c, addr, &co);
}

/* What "who" says of the client connected with pem (an arpc_free'd string). */
static char *who(const char *addr, const char *pem, const char *key)
{
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    int rc = connect_as(addr, pem, key, &c, err, sizeof(err));
    if (rc != ARPC_OK)
        fail_msg("connect: %s: %s", arpc_errname(rc), err);
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "who", NULL, 0, &reply, &len, TEST_WAIT_MS));
    char *text = calloc(1, len + 1);
    assert_non_null(text);
    memcpy(text, reply, len);
    arpc_free(reply);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    return text;
}

/* The server cannot allocate the subject of a client it verified: the client is refused
 * (ARPC_EOVERLOADED, the server's words), the server logs why, and nothing of the client
 * ran. Its next connection, with memory, is named by its certificate. */
static void test_subject_without_memory_refuses_verified_client(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(addr);
    log_capture_clear();
    test_alloc_fail_next(SUBJECT_ALLOC, SUBJECT_ALLOC + 1);
    arpc_client *c;
    char err[ARPC_ERRBUF_SIZE] = "";
    int rc = connect_as(addr, long_pem, long_key, &c, err, sizeof(err));
    test_alloc_fail_next(0, 0);
    assert_int_equal(1, test_alloc_sized_failed());
    if (rc == ARPC_OK) {
        void *reply = NULL;
        size_t len = 0;
        (void)arpc_call(c, "who", NULL, 0, &reply, &len, TEST_WAIT_MS);
        fail_msg("a verified client whose subject could not be allocated was let in as: %.*s", (int)len,
                 reply != NULL ? (const char *)reply : "(no reply)");
    }
    assert_null(c);
    assert_int_equal(ARPC_EOVERLOADED, rc);
    if (strstr(err, "out of memory for the client certificate's subject") == NULL)
        fail_msg("%s", err);
    if (LOG_LINES_WITH("closing the connection from", "out of memory for the client certificate's subject") != 1) {
        log_capture_print();
        fail_msg("the refusal was not logged once");
    }

    char *named = who(addr, long_pem, long_key);
    char want[sizeof(long_subject) + 32];
    uint64_t id = strtoull(named, NULL, 16);
    snprintf(want, sizeof(want), "%" PRIx64 " %s", id, long_subject);
    assert_string_equal(want, named);
    assert_true((id & ARPC_AUTH_CERT_IDENTITY) != 0);
    free(named);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A CN with a newline and a terminal escape: the handler sees them as \0A and \1B (RFC 2253
 * escaping), so a handler that logs its peer's subject logs one line of printable text. */
static void test_control_bytes_in_subject_escaped(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = start_server(addr);
    char *named = who(addr, ctrl_pem, ctrl_key);
    const char *subject = strchr(named, ' ');
    assert_non_null(subject);
    assert_string_equal(" CN=mallory\\0A[WARN] forged\\1B[31m", subject);
    free(named);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A server trusting two authorities, each of which vouches for a "CN=alice,O=arpc tests":
 * two holders, so two identities (and two at-most-once namespaces), though handlers see the
 * same subject. One identity for both would let either be answered from, or fill, the
 * other's reply cache by sending its client id. */
static void test_same_subject_from_two_issuers_two_identities(void **state)
{
    (void)state;
    char both[256], other_pem[256], other_key[256], addr[ARPC_ADDR_MAX];
    snprintf(both, sizeof(both), "%s", tls_certs_path(&tls_group_certs, "both_ca", "pem"));
    snprintf(other_pem, sizeof(other_pem), "%s", tls_certs_path(&tls_group_certs, "other_client", "pem"));
    snprintf(other_key, sizeof(other_key), "%s", tls_certs_path(&tls_group_certs, "other_client", "key"));
    char client_pem[256], client_key[256];
    snprintf(client_pem, sizeof(client_pem), "%s", tls_certs_path(&tls_group_certs, "client", "pem"));
    snprintf(client_key, sizeof(client_key), "%s", tls_certs_path(&tls_group_certs, "client", "key"));
    arpc_server *s = start_server_trusting(addr, both);

    char *first = who(addr, client_pem, client_key), *second = who(addr, other_pem, other_key);
    char *again = who(addr, client_pem, client_key);
    uint64_t id1 = strtoull(first, NULL, 16), id2 = strtoull(second, NULL, 16);
    assert_string_equal(" " TLS_CERTS_CLIENT_SUBJECT, strchr(first, ' '));
    assert_string_equal(" " TLS_CERTS_CLIENT_SUBJECT, strchr(second, ' '));
    assert_true((id1 & ARPC_AUTH_CERT_IDENTITY) != 0 && (id2 & ARPC_AUTH_CERT_IDENTITY) != 0);
    if (id1 == id2)
        fail_msg("two issuers' \"%s\" share the identity %" PRIx64, TLS_CERTS_CLIENT_SUBJECT, id1);
    assert_string_equal(first, again); /* the same holder is the same identity every time */
    free(first);
    free(second);
    free(again);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* What "who" says of each of two holders on a server trusting ca_file: their identities (hex). */
static void two_identities(const char *ca_file, const char *a, const char *b, uint64_t *ida, uint64_t *idb,
                           char **subject_a, char **subject_b)
{
    char addr[ARPC_ADDR_MAX], pem[256], key[256];
    arpc_server *s = start_server_trusting(addr, ca_file);
    snprintf(pem, sizeof(pem), "%s", tls_certs_path(&tls_group_certs, a, "pem"));
    snprintf(key, sizeof(key), "%s", tls_certs_path(&tls_group_certs, a, "key"));
    char *first = who(addr, pem, key);
    snprintf(pem, sizeof(pem), "%s", tls_certs_path(&tls_group_certs, b, "pem"));
    snprintf(key, sizeof(key), "%s", tls_certs_path(&tls_group_certs, b, "key"));
    char *second = who(addr, pem, key);
    *ida = strtoull(first, NULL, 16);
    *idb = strtoull(second, NULL, 16);
    *subject_a = strdup(strchr(first, ' ') + 1);
    *subject_b = strdup(strchr(second, ' ') + 1);
    free(first);
    free(second);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Two authorities of the same name ("CN=arpc test CA", two keys), each vouching for a
 * "CN=alice,O=arpc tests": two holders. Before, the issuer was known by its name's digest:
 * one identity, so either was answered from the other's reply cache by sending its client id
 * (a review). */
static void test_same_name_authorities_two_identities(void **state)
{
    (void)state;
    char twins[256];
    snprintf(twins, sizeof(twins), "%s", tls_certs_path(&tls_group_certs, "twins_ca", "pem"));
    uint64_t id1, id2;
    char *s1, *s2;
    two_identities(twins, "client", "twin_client", &id1, &id2, &s1, &s2);
    assert_string_equal(TLS_CERTS_CLIENT_SUBJECT, s1);
    assert_string_equal(TLS_CERTS_CLIENT_SUBJECT, s2);
    if (id1 == id2)
        fail_msg("two authorities named alike give their \"%s\" one identity %" PRIx64, s1, id1);
    free(s1);
    free(s2);
}

/* Two certificates that name their holders by a URI alone (SPIFFE's way), their subjects
 * empty: two holders. Before, the identity hashed the subject only: one for both (a review). */
static void test_holders_named_by_alternative_names_two_identities(void **state)
{
    (void)state;
    uint64_t id1, id2;
    char *s1, *s2;
    two_identities(tls_group_pair.tp_ca, "san_a", "san_b", &id1, &id2, &s1, &s2);
    assert_string_equal("", s1); /* what handlers see: the subject, empty */
    assert_string_equal("", s2);
    assert_true((id1 & ARPC_AUTH_CERT_IDENTITY) != 0 && (id2 & ARPC_AUTH_CERT_IDENTITY) != 0);
    if (id1 == id2)
        fail_msg("two holders named by their alternative names share the identity %" PRIx64, id1);
    free(s1);
    free(s2);
}

static int setup_all(void **state)
{
    test_alloc_sized_install();
    log_capture_start(ARPC_LOG_WARN);
    if (tls_group_setup(state) != 0)
        return -1;
    char cn[LONG_CN];
    memset(cn, 'l', sizeof(cn));
    snprintf(long_subject, sizeof(long_subject), "CN=%.*s", LONG_CN, cn);
    static const char ctrl[] = "mallory\n[WARN] forged\x1b[31m";
    if (!tls_certs_add_client(&tls_group_certs, "long_client", cn, sizeof(cn)) ||
        !tls_certs_add_client(&tls_group_certs, "ctrl_client", ctrl, sizeof(ctrl) - 1))
        return -1;
    snprintf(long_pem, sizeof(long_pem), "%s", tls_certs_path(&tls_group_certs, "long_client", "pem"));
    snprintf(long_key, sizeof(long_key), "%s", tls_certs_path(&tls_group_certs, "long_client", "key"));
    snprintf(ctrl_pem, sizeof(ctrl_pem), "%s", tls_certs_path(&tls_group_certs, "ctrl_client", "pem"));
    snprintf(ctrl_key, sizeof(ctrl_key), "%s", tls_certs_path(&tls_group_certs, "ctrl_client", "key"));
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subject_without_memory_refuses_verified_client),
        cmocka_unit_test(test_control_bytes_in_subject_escaped),
        cmocka_unit_test(test_same_subject_from_two_issuers_two_identities),
        cmocka_unit_test(test_same_name_authorities_two_identities),
        cmocka_unit_test(test_holders_named_by_alternative_names_two_identities),
    };
    return cmocka_run_group_tests(tests, setup_all, tls_group_teardown);
}

#else

int main(void)
{
    printf("tls_peer_subject_test: built without TLS (ARPC_WITH_TLS off): nothing to test\n");
    return 0;
}
#endif
