/*
 * Certificates for the TLS tests, made at run time with the OpenSSL API in a fresh temporary
 * directory (nothing private is committed): two CAs, and leaves signed by them. P-256
 * keys, so making them all takes milliseconds. Only in builds with TLS (ARPC_TEST_WITH_TLS).
 *
 * Files in the directory, each NAME.pem with its key NAME.key:
 *   ca         "CN=arpc test CA"
 *   other_ca   "CN=arpc other CA" (a CA the server's certificate does not come from)
 *   server     CN=localhost, DNS:localhost, IP:127.0.0.1, signed by ca, valid now
 *   expired    as server, but valid only from two days ago to one day ago
 *   client     "CN=alice,O=arpc tests", signed by ca (mutual TLS)
 *   other_server  as server, but signed by other_ca (certificate rotation)
 *   other_client  "CN=alice,O=arpc tests" as client, but signed by other_ca (another holder
 *                 of the same name, vouched for by another authority)
 *   twin_ca       "CN=arpc test CA" as ca, with a key of its own (another authority of the
 *                 same name)
 *   twin_client   "CN=alice,O=arpc tests" as client, but signed by twin_ca
 *   san_a, san_b  an empty subject, named by a URI alone (spiffe://arpc.test/a and /b),
 *                 signed by ca
 * and revoked_ca.pem: ca's certificate and its CRL, which revokes server and client;
 * both_ca.pem: ca's and other_ca's certificates (a bundle trusting both); twins_ca.pem: ca's
 * and twin_ca's.
 */
#ifndef ARPC_TEST_TLS_CERTS_H
#define ARPC_TEST_TLS_CERTS_H

#include <stdbool.h>
#include <stddef.h>

#include "arpc/tls.h"

#define TLS_CERTS_CLIENT_SUBJECT "CN=alice,O=arpc tests"

#define TLS_CERTS_EXTRA_MAX 4

struct tls_certs {
    char tc_dir[64];
    char tc_path[256]; /* the last tls_certs_path answer */
    char tc_extra[TLS_CERTS_EXTRA_MAX][32]; /* names tls_certs_add_client made */
    unsigned tc_nextra;
};

/* Makes the directory and every file; false (with a message on stderr) on failure. */
bool tls_certs_make(struct tls_certs *tc);
/* "DIR/NAME.pem" (kind "pem") or "DIR/NAME.key" (kind "key"), valid until the next call:
 * copy it when two are needed at once. */
const char *tls_certs_path(struct tls_certs *tc, const char *name, const char *kind);
/* The usual pair: a server with the "server" certificate and key, a client trusting "ca". The
 * options point into the struct's own copies of the paths, so it must outlive their use. */
struct tls_certs_pair {
    char tp_cert[256], tp_key[256], tp_ca[256];
    arpc_tls_options tp_server, tp_client;
};
void tls_certs_pair(struct tls_certs *tc, struct tls_certs_pair *p);
/* One more client certificate signed by ca, NAME.pem and NAME.key, whose subject is a single
 * CN of the len bytes cn as a UTF8String taken as they are: no length limit (CN's 64 is not
 * applied), no check that they are UTF-8, control bytes kept. Up to TLS_CERTS_EXTRA_MAX of
 * them; false (with a message on stderr) on failure. */
bool tls_certs_add_client(struct tls_certs *tc, const char *name, const void *cn, size_t len);
/* Removes the files and the directory. */
void tls_certs_remove(struct tls_certs *tc);

/* The certificates and the usual pair most TLS test programs need, made once: a cmocka group
 * setup and teardown (cmocka_run_group_tests(tests, tls_group_setup, tls_group_teardown), or
 * called from a group setup that needs more), and what they make. */
extern struct tls_certs tls_group_certs;
extern struct tls_certs_pair tls_group_pair;
int tls_group_setup(void **state);    /* 0, or -1 (the group fails) */
int tls_group_teardown(void **state);

#endif
