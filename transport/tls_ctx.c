/*
 * TLS contexts (transport/tls.h): one SSL_CTX per server or client, made from its options.
 *
 * Design notes.
 *
 * Modern defaults, stated here once: TLS 1.2 at least (1.3 preferred, OpenSSL's default);
 * no compression (CRIME); no renegotiation (a client cannot make the server redo a handshake
 * at will, and a stream never has to write in the middle of a read for it); the server's
 * cipher order; OpenSSL's default security level (no RSA keys under 2048 bits, no SHA-1
 * signatures). TLS 1.2 is held to Mozilla's "intermediate" ciphers without DHE (TLS12_CIPHERS:
 * ECDHE key exchange for forward secrecy, AEAD only: no CBC with its padding-oracle history, no
 * SHA-1 MACs, no static RSA); TLS 1.3's suites are OpenSSL's defaults, all of them AEAD. The
 * server resumes no session: no tickets (TLS 1.2 or 1.3), no session cache. An arpc client
 * keeps its connection and does not resume sessions, so tickets would be bytes for nothing;
 * and a cache would hold a session (a client's certificate chain with it) for every stranger
 * that completed a handshake, up to OpenSSL's 20,480, outside every limit the server counts,
 * and let a client back in on an old handshake's verification.
 *
 * Client certificates: with CAs, a server asks for one and verifies what it gets; with
 * require_client_cert it refuses a client without one. The client checks the server's
 * certificate against the host it dialled (SNI and SSL_set1_host), or its IP address.
 */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "transport/tls_internal.h"

/* An alert the peer sent about the certificate this side presented (OpenSSL's reason for a
 * received alert is SSL_AD_REASON_OFFSET + its number). */
static bool tls_alert_about_our_certificate(int reason)
{
    switch (reason - SSL_AD_REASON_OFFSET) {
    case SSL_AD_BAD_CERTIFICATE:
    case SSL_AD_UNSUPPORTED_CERTIFICATE:
    case SSL_AD_CERTIFICATE_REVOKED:
    case SSL_AD_CERTIFICATE_EXPIRED:
    case SSL_AD_CERTIFICATE_UNKNOWN:
    case SSL_AD_UNKNOWN_CA:
        return true;
    default:
        return false;
    }
}

void tls_error_text(char *out, size_t len, const char *what, const SSL *ssl, bool shaken)
{
    /* The last error says what failed; a system error under it (a file that cannot be
     * opened) says why in errno's words, where OpenSSL's own would be "system lib". */
    unsigned long e = 0, sys = 0;
    for (unsigned long next; (next = ERR_get_error()) != 0; e = next)
        if (ERR_SYSTEM_ERROR(next))
            sys = next;
    const char *reason = sys != 0 ? strerror(ERR_GET_REASON(sys)) : e != 0 ? ERR_reason_error_string(e) : NULL;
    const char *detail = "", *sep = "";
    if (sys == 0 && e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) {
        int r = ERR_GET_REASON(e);
        if (r == SSL_R_CERTIFICATE_VERIFY_FAILED && ssl != NULL) {
            sep = ": ";
            detail = X509_verify_cert_error_string(SSL_get_verify_result(ssl));
        } else if (r == SSL_R_WRONG_VERSION_NUMBER || r == SSL_R_PACKET_LENGTH_TOO_LONG ||
                   r == SSL_R_HTTP_REQUEST || r == SSL_R_RECORD_LENGTH_MISMATCH) {
            detail = shaken ? " (a record corrupted or forged on the way)" : " (the peer does not speak TLS: a tcp:// peer?)";
        } else if (ssl != NULL && tls_alert_about_our_certificate(r)) {
            detail = SSL_is_server(ssl) ? " (the client refused this server's certificate)"
                                        : " (the server refused this client's certificate)";
        }
    }
    snprintf(out, len, "%s: %s%s%s", what, reason != NULL ? reason : "unknown TLS error", sep, detail);
    ERR_clear_error();
}

/* TLS 1.2 only (SSL_CTX_set_cipher_list leaves TLS 1.3's suites alone), in preference order. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* The largest certificate chain a server takes from a client (OpenSSL's default: 100 KiB).
 * Every certificate of it is parsed on the loop thread before any is verified, about 0.15 ms
 * each with OpenSSL 3 (its key decoded through the provider's decoders): a stranger's 100 KiB
 * of 263-byte certificates held a server's loop for ~58 ms per handshake, so 17 handshakes a
 * second, under any fault rate, kept it busy. 16 KiB (one record's plaintext) holds a leaf and
 * several intermediates of RSA-4096 with room to spare, and at most ~60 certificates (~10 ms). */
#define TLS_PEER_CHAIN_MAX (16 * 1024)
/* ... and a client from a server: a hostile server, or anyone in the path before the chain is
 * verified, cost each reconnect of a client's loop ~58 ms at OpenSSL's 100 KiB (review 238).
 * Larger than a server's bound: OpenSSL holds a server's CertificateRequest, whose list of
 * acceptable CAs a proxy or a Java server may fill with a whole trust store, to the same
 * bound (review 240). */
#define TLS_SERVER_CHAIN_MAX (64 * 1024)

static SSL_CTX *tls_ctx_base(bool client)
{
    SSL_CTX *ctx = SSL_CTX_new(client ? TLS_client_method() : TLS_server_method());
    if (ctx == NULL)
        return NULL;
    /* Fails when out of memory (OpenSSL 3 has every cipher listed): reported as such. */
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* A write that must wait is retried with the same bytes, perhaps from another buffer
     * (transport/tls_stream.c gathers frames into its own). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* OpenSSL's read and write buffers (~17 KiB each) go when empty, made again for the next
     * record (as nginx runs it): an idle connection held both for as long as it stayed, ~70
     * KiB in all with the stream's (tls_idle_memory_test). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_max_cert_list(ctx, client ? TLS_SERVER_CHAIN_MAX : TLS_PEER_CHAIN_MAX);
    if (!client) {
        SSL_CTX_set_num_tickets(ctx, 0);            /* TLS 1.3 */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET); /* TLS 1.2 */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    return ctx;
}

/* Loads o's certificate and key, if any; both or neither. */
static int tls_load_identity(SSL_CTX *ctx, const arpc_tls_options *o, char *why, size_t whylen)
{
    if (o == NULL || (o->cert_file == NULL && o->key_file == NULL))
        return ARPC_OK;
    char what[ARPC_WHY_MAX];
    if (o->cert_file == NULL || o->key_file == NULL) {
        snprintf(why, whylen, "TLS: cert_file and key_file go together (one of them is missing)");
        return ARPC_EINVAL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
        snprintf(what, sizeof(what), "TLS: cannot load the certificate %s", o->cert_file);
        tls_error_text(why, whylen, what, NULL, false);
        return ARPC_ETLS;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof(what), "TLS: cannot load the private key %s for %s", o->key_file, o->cert_file);
        tls_error_text(why, whylen, what, NULL, false);
        return ARPC_ETLS;
    }
    return ARPC_OK;
}

/* Revocation: CRLs given with the CAs (PEM blocks in ca_file, which OpenSSL loads with its
 * certificates) turn on the check of every peer's certificate against its issuer's CRL. Only
 * then: with the check on, a certificate whose issuer has no CRL fails ("unable to get
 * certificate CRL"), so a ca_file without CRLs must not turn it on. */
static void tls_check_crls_if_given(SSL_CTX *ctx)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_OBJECT) *objects = X509_STORE_get0_objects(store);
    for (int i = 0; i < sk_X509_OBJECT_num(objects); i++)
        if (X509_OBJECT_get_type(sk_X509_OBJECT_value(objects, i)) == X509_LU_CRL) {
            X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
            return;
        }
}

/* Loads o's CAs; the system's store for a client that names none. *loaded: CAs were named. */
static int tls_load_cas(SSL_CTX *ctx, const arpc_tls_options *o, bool client, bool *loaded, char *why,
                        size_t whylen)
{
    *loaded = o != NULL && (o->ca_file != NULL || o->ca_dir != NULL);
    int ok = *loaded ? SSL_CTX_load_verify_locations(ctx, o->ca_file, o->ca_dir)
                     : client ? SSL_CTX_set_default_verify_paths(ctx) : 1;
    if (ok != 1) {
        char what[ARPC_WHY_MAX];
        snprintf(what, sizeof(what), "TLS: cannot load the CAs %s%s%s", *loaded && o->ca_file ? o->ca_file : "",
                 *loaded && o->ca_file && o->ca_dir ? " and " : "", *loaded && o->ca_dir ? o->ca_dir : "");
        tls_error_text(why, whylen, what, NULL, false);
        return ARPC_ETLS;
    }
    if (*loaded)
        tls_check_crls_if_given(ctx);
    return ARPC_OK;
}

static int tls_new(struct arpc_tls **out, bool client, const arpc_tls_options *o, char *why, size_t whylen)
{
    struct arpc_tls *t = arpc_calloc(1, sizeof(*t));
    SSL_CTX *ctx = t != NULL ? tls_ctx_base(client) : NULL;
    if (ctx == NULL) {
        arpc_free(t);
        snprintf(why, whylen, "TLS: out of memory for a context");
        return ARPC_ENOMEM;
    }
    t->t_ctx = ctx;
    t->t_client = client;
    bool have_cas;
    int rc = tls_load_identity(ctx, o, why, whylen);
    if (rc == ARPC_OK)
        rc = tls_load_cas(ctx, o, client, &have_cas, why, whylen);
    if (rc == ARPC_OK && !client && o->require_client_cert && !have_cas) {
        snprintf(why, whylen, "TLS: require_client_cert needs ca_file or ca_dir to verify clients with");
        rc = ARPC_EINVAL;
    }
    if (rc != ARPC_OK) {
        arpc_tls_free(t);
        return rc;
    }
    if (client) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_client_cert_cb(ctx, tls_no_client_cert);
    } else if (have_cas) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (o->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
        static const unsigned char sid_ctx[] = "arpc";
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    }
    *out = t;
    return ARPC_OK;
}

bool arpc_tls_built(void) { return true; }

int arpc_tls_server_new(struct arpc_tls **out, const arpc_tls_options *o, char *why, size_t whylen)
{
    if (o == NULL || o->cert_file == NULL || o->key_file == NULL) {
        snprintf(why, whylen, "TLS: a tls:// server needs tls options with cert_file and key_file");
        return ARPC_EINVAL;
    }
    return tls_new(out, false, o, why, whylen);
}

/* The HOST of "tls://HOST:PORT" or "tls://[V6]:PORT" (already parsed once by resolve). */
static void tls_target_host(const struct arpc_target *target, char *host, size_t len)
{
    const char *rest = strstr(target->t_addr, "://");
    rest = rest != NULL ? rest + 3 : target->t_addr;
    const char *end = rest[0] == '[' ? strchr(rest, ']') : strrchr(rest, ':');
    if (rest[0] == '[')
        rest++;
    size_t n = end != NULL && end >= rest ? (size_t)(end - rest) : strlen(rest);
    snprintf(host, len, "%.*s", (int)n, rest);
}

int arpc_tls_client_new(struct arpc_tls **out, const struct arpc_target *target, const arpc_tls_options *o,
                        char *why, size_t whylen)
{
    if (o != NULL && o->server_name != NULL && o->server_name[0] == '\0') {
        snprintf(why, whylen, "tls.server_name is empty: give the name the server's certificate must carry, or "
                              "NULL for the address's host");
        return ARPC_EINVAL;
    }
    struct arpc_tls *t;
    int rc = tls_new(&t, true, o, why, whylen);
    if (rc != ARPC_OK)
        return rc;
    if (o != NULL && o->server_name != NULL)
        snprintf(t->t_host, sizeof(t->t_host), "%s", o->server_name);
    else
        tls_target_host(target, t->t_host, sizeof(t->t_host));
    unsigned char ip[sizeof(struct in6_addr)];
    t->t_host_is_ip = inet_pton(AF_INET, t->t_host, ip) == 1 || inet_pton(AF_INET6, t->t_host, ip) == 1;
    *out = t;
    return ARPC_OK;
}

void arpc_tls_free(struct arpc_tls *tls)
{
    if (tls == NULL)
        return;
    SSL_CTX_free(tls->t_ctx);
    arpc_free(tls);
}

void arpc_tls_swap(struct arpc_tls *a, struct arpc_tls *b)
{
    SSL_CTX *ctx = a->t_ctx;
    a->t_ctx = b->t_ctx;
    b->t_ctx = ctx;
}
