/* Test certificates made with the OpenSSL API (tls_certs.h). */
#ifdef ARPC_TEST_WITH_TLS
#include "support/tls_certs.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DAY_S (24L * 3600)

static const char *const cert_names[] = {"ca",           "other_ca", "server", "expired", "client", "other_server",
                                         "other_client", "twin_ca",  "twin_client", "san_a", "san_b"};
#define NCERTS (sizeof(cert_names) / sizeof(cert_names[0]))

const char *tls_certs_path(struct tls_certs *tc, const char *name, const char *kind)
{
    snprintf(tc->tc_path, sizeof(tc->tc_path), "%s/%s.%s", tc->tc_dir, name, kind);
    return tc->tc_path;
}

void tls_certs_pair(struct tls_certs *tc, struct tls_certs_pair *p)
{
    snprintf(p->tp_cert, sizeof(p->tp_cert), "%s", tls_certs_path(tc, "server", "pem"));
    snprintf(p->tp_key, sizeof(p->tp_key), "%s", tls_certs_path(tc, "server", "key"));
    snprintf(p->tp_ca, sizeof(p->tp_ca), "%s", tls_certs_path(tc, "ca", "pem"));
    p->tp_server = (arpc_tls_options){.cert_file = p->tp_cert, .key_file = p->tp_key};
    p->tp_client = (arpc_tls_options){.ca_file = p->tp_ca};
}

static bool add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    bool ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/* A certificate for key with subject O=org (if any), CN=cn (if any: none and no org, an empty
 * subject), valid from..until seconds from now, signed by issuer_key (itself when NULL: a CA). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *org, long from, long until, X509 *issuer,
                       EVP_PKEY *issuer_key, bool ca, const char *san)
{
    static long serial = 1;
    X509 *cert = X509_new();
    if (cert == NULL)
        return NULL;
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
    X509_gmtime_adj(X509_getm_notBefore(cert), from);
    X509_gmtime_adj(X509_getm_notAfter(cert), until);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    /* Most general first, as usual: RFC 2253 prints them the other way round ("CN=..,O=.."). */
    if (org != NULL)
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)org, -1, -1, 0);
    if (cn != NULL)
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509 *signer = issuer != NULL ? issuer : cert;
    X509_set_issuer_name(cert, X509_get_subject_name(signer));
    bool ok = add_ext(cert, signer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE") &&
              add_ext(cert, signer, NID_subject_key_identifier, "hash") &&
              add_ext(cert, signer, NID_authority_key_identifier, "keyid:always") &&
              (!ca || add_ext(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign")) &&
              (san == NULL || add_ext(cert, signer, NID_subject_alt_name, san)) &&
              X509_sign(cert, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

static bool write_pair(struct tls_certs *tc, const char *name, X509 *cert, EVP_PKEY *key)
{
    FILE *f = fopen(tls_certs_path(tc, name, "pem"), "w");
    bool ok = f != NULL && PEM_write_X509(f, cert) == 1;
    if (f != NULL)
        fclose(f);
    f = ok ? fopen(tls_certs_path(tc, name, "key"), "w") : NULL;
    ok = f != NULL && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    if (f != NULL)
        fclose(f);
    return ok;
}

/* NAME.pem: the two certificates a and b, one file (a CA bundle). */
static bool write_bundle(struct tls_certs *tc, const char *name, X509 *a, X509 *b)
{
    FILE *f = fopen(tls_certs_path(tc, name, "pem"), "w");
    bool ok = f != NULL && PEM_write_X509(f, a) == 1 && PEM_write_X509(f, b) == 1;
    if (f != NULL)
        fclose(f);
    return ok;
}

/* "revoked_ca.pem": ca's certificate followed by its CRL revoking server's and client's. */
static bool write_revocations(struct tls_certs *tc, X509 *ca, EVP_PKEY *ca_key, X509 *const revoke[], size_t n)
{
    X509_CRL *crl = X509_CRL_new();
    bool ok = crl != NULL && X509_CRL_set_version(crl, 1) == 1 &&
              X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) == 1;
    ASN1_TIME *now = ok ? X509_gmtime_adj(NULL, 0) : NULL, *next = ok ? X509_gmtime_adj(NULL, DAY_S) : NULL;
    ok = ok && now != NULL && next != NULL && X509_CRL_set1_lastUpdate(crl, now) == 1 &&
         X509_CRL_set1_nextUpdate(crl, next) == 1;
    for (size_t i = 0; i < n && ok; i++) {
        X509_REVOKED *r = X509_REVOKED_new();
        ok = r != NULL && X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(revoke[i])) == 1 &&
             X509_REVOKED_set_revocationDate(r, now) == 1 && X509_CRL_add0_revoked(crl, r) == 1;
        if (!ok)
            X509_REVOKED_free(r);
    }
    ok = ok && X509_CRL_sort(crl) == 1 && X509_CRL_sign(crl, ca_key, EVP_sha256()) > 0;
    FILE *f = ok ? fopen(tls_certs_path(tc, "revoked_ca", "pem"), "w") : NULL;
    ok = f != NULL && PEM_write_X509(f, ca) == 1 && PEM_write_X509_CRL(f, crl) == 1;
    if (f != NULL)
        fclose(f);
    ASN1_TIME_free(now);
    ASN1_TIME_free(next);
    X509_CRL_free(crl);
    return ok;
}

bool tls_certs_make(struct tls_certs *tc)
{
    tc->tc_nextra = 0;
    snprintf(tc->tc_dir, sizeof(tc->tc_dir), "/tmp/arpc-tls-XXXXXX");
    if (mkdtemp(tc->tc_dir) == NULL) {
        perror("mkdtemp");
        return false;
    }
    EVP_PKEY *keys[NCERTS] = {NULL};
    X509 *certs[NCERTS] = {NULL};
    bool ok = true;
    for (size_t i = 0; i < NCERTS && ok; i++)
        ok = (keys[i] = EVP_EC_gen("P-256")) != NULL;
    const char *server_san = "DNS:localhost,IP:127.0.0.1";
    ok = ok && (certs[0] = make_cert(keys[0], "arpc test CA", NULL, -DAY_S, DAY_S, NULL, NULL, true, NULL)) != NULL;
    ok = ok && (certs[1] = make_cert(keys[1], "arpc other CA", NULL, -DAY_S, DAY_S, NULL, NULL, true, NULL)) != NULL;
    ok = ok && (certs[2] = make_cert(keys[2], "localhost", NULL, -DAY_S, DAY_S, certs[0], keys[0], false,
                                     server_san)) != NULL;
    ok = ok && (certs[3] = make_cert(keys[3], "localhost", NULL, -2 * DAY_S, -DAY_S, certs[0], keys[0], false,
                                     server_san)) != NULL;
    ok = ok && (certs[4] = make_cert(keys[4], "alice", "arpc tests", -DAY_S, DAY_S, certs[0], keys[0], false,
                                     NULL)) != NULL;
    ok = ok && (certs[5] = make_cert(keys[5], "localhost", NULL, -DAY_S, DAY_S, certs[1], keys[1], false,
                                     server_san)) != NULL;
    ok = ok && (certs[6] = make_cert(keys[6], "alice", "arpc tests", -DAY_S, DAY_S, certs[1], keys[1], false,
                                     NULL)) != NULL;
    ok = ok && (certs[7] = make_cert(keys[7], "arpc test CA", NULL, -DAY_S, DAY_S, NULL, NULL, true, NULL)) != NULL;
    ok = ok && (certs[8] = make_cert(keys[8], "alice", "arpc tests", -DAY_S, DAY_S, certs[7], keys[7], false,
                                     NULL)) != NULL;
    ok = ok && (certs[9] = make_cert(keys[9], NULL, NULL, -DAY_S, DAY_S, certs[0], keys[0], false,
                                     "critical,URI:spiffe://arpc.test/a")) != NULL;
    ok = ok && (certs[10] = make_cert(keys[10], NULL, NULL, -DAY_S, DAY_S, certs[0], keys[0], false,
                                      "critical,URI:spiffe://arpc.test/b")) != NULL;
    for (size_t i = 0; i < NCERTS && ok; i++)
        ok = write_pair(tc, cert_names[i], certs[i], keys[i]);
    ok = ok && write_bundle(tc, "both_ca", certs[0], certs[1]);
    ok = ok && write_bundle(tc, "twins_ca", certs[0], certs[7]);
    ok = ok && write_revocations(tc, certs[0], keys[0], (X509 *const[]){certs[2], certs[4]}, 2);
    for (size_t i = 0; i < NCERTS; i++) {
        X509_free(certs[i]);
        EVP_PKEY_free(keys[i]);
    }
    if (!ok)
        fprintf(stderr, "tls_certs_make: could not make the test certificates in %s\n", tc->tc_dir);
    return ok;
}

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *cert = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f != NULL)
        fclose(f);
    return cert;
}

static EVP_PKEY *read_key(const char *path)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f != NULL)
        fclose(f);
    return key;
}

bool tls_certs_add_client(struct tls_certs *tc, const char *name, const void *cn, size_t len)
{
    if (tc->tc_nextra >= TLS_CERTS_EXTRA_MAX || strlen(name) >= sizeof(tc->tc_extra[0]))
        return false;
    X509 *ca = read_cert(tls_certs_path(tc, "ca", "pem"));
    EVP_PKEY *ca_key = read_key(tls_certs_path(tc, "ca", "key"));
    EVP_PKEY *key = EVP_EC_gen("P-256");
    /* make_cert's CN, made first and replaced: X509_NAME_add_entry_by_txt would hold it to
     * 64 printable characters, which is what this certificate is for going past. */
    X509 *cert = ca != NULL && ca_key != NULL && key != NULL
                     ? make_cert(key, "placeholder", NULL, -DAY_S, DAY_S, ca, ca_key, false, NULL)
                     : NULL;
    X509_NAME *subject = X509_NAME_new();
    bool ok = cert != NULL && subject != NULL &&
              X509_NAME_add_entry_by_NID(subject, NID_commonName, V_ASN1_UTF8STRING, (const unsigned char *)cn,
                                         (int)len, -1, 0) == 1 &&
              X509_set_subject_name(cert, subject) == 1 && X509_sign(cert, ca_key, EVP_sha256()) > 0 &&
              write_pair(tc, name, cert, key);
    if (ok)
        snprintf(tc->tc_extra[tc->tc_nextra++], sizeof(tc->tc_extra[0]), "%s", name);
    else
        fprintf(stderr, "tls_certs_add_client: could not make %s in %s\n", name, tc->tc_dir);
    X509_NAME_free(subject);
    X509_free(cert);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    X509_free(ca);
    return ok;
}

void tls_certs_remove(struct tls_certs *tc)
{
    for (unsigned i = 0; i < tc->tc_nextra; i++) {
        unlink(tls_certs_path(tc, tc->tc_extra[i], "pem"));
        unlink(tls_certs_path(tc, tc->tc_extra[i], "key"));
    }
    tc->tc_nextra = 0;
    for (size_t i = 0; i < sizeof(cert_names) / sizeof(cert_names[0]); i++) {
        unlink(tls_certs_path(tc, cert_names[i], "pem"));
        unlink(tls_certs_path(tc, cert_names[i], "key"));
    }
    unlink(tls_certs_path(tc, "revoked_ca", "pem"));
    unlink(tls_certs_path(tc, "both_ca", "pem"));
    unlink(tls_certs_path(tc, "twins_ca", "pem"));
    rmdir(tc->tc_dir);
}
#endif

struct tls_certs tls_group_certs;
struct tls_certs_pair tls_group_pair;

int tls_group_setup(void **state)
{
    (void)state;
    if (!tls_certs_make(&tls_group_certs))
        return -1;
    tls_certs_pair(&tls_group_certs, &tls_group_pair);
    return 0;
}

int tls_group_teardown(void **state)
{
    (void)state;
    tls_certs_remove(&tls_group_certs);
    return 0;
}
