/* The TLS tests' bare OpenSSL client (tls_bare_client.h). */
#ifdef ARPC_TEST_WITH_TLS
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "arpc/error.h"
#include "support/test_util.h"
#include "support/tls_bare_client.h"
#include "transport/transport.h"

bool tls_bare_self_signed(X509 **cert, EVP_PKEY **key)
{
    *key = EVP_EC_gen("P-256");
    *cert = X509_new();
    if (*key == NULL || *cert == NULL)
        return false;
    X509_set_version(*cert, 2);
    X509_gmtime_adj(X509_getm_notBefore(*cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(*cert), 3600);
    X509_set_pubkey(*cert, *key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(*cert), "CN", MBSTRING_ASC, (const unsigned char *)"x", -1, -1,
                               0);
    X509_set_issuer_name(*cert, X509_get_subject_name(*cert));
    return X509_sign(*cert, *key, EVP_sha256()) > 0;
}

int tls_bare_connect(const char *addr)
{
    int fd = -1;
    assert_int_equal(ARPC_OK, arpc_transport_connect(addr, TEST_WAIT_MS, &fd, NULL, 0));
    assert_int_equal(0, fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK));
    struct timeval hang = {.tv_sec = TEST_WAIT_S};
    assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &hang, sizeof(hang)));
    return fd;
}

SSL *tls_bare_handshake(const char *addr, SSL_CTX *ctx, int *fd)
{
    *fd = tls_bare_connect(addr);
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    assert_int_equal(1, SSL_set_fd(ssl, *fd));
    assert_int_equal(1, SSL_connect(ssl));
    return ssl;
}

void tls_bare_present_chain(const char *addr, int version, X509 *cert, EVP_PKEY *key, int extra)
{
    int fd = tls_bare_connect(addr);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    assert_int_equal(1, SSL_CTX_set_min_proto_version(ctx, version));
    assert_int_equal(1, SSL_CTX_set_max_proto_version(ctx, version));
    assert_int_equal(1, SSL_CTX_use_certificate(ctx, cert));
    assert_int_equal(1, SSL_CTX_use_PrivateKey(ctx, key));
    for (int i = 0; i < extra; i++) {
        X509_up_ref(cert);
        assert_int_equal(1, SSL_CTX_add_extra_chain_cert(ctx, cert));
    }
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    assert_int_equal(1, SSL_set_fd(ssl, fd));
    if (SSL_connect(ssl) == 1) { /* TLS 1.3: the server judges the chain after our side is done */
        char b;
        assert_true(SSL_read(ssl, &b, 1) <= 0);
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    close(fd);
}
bool tls_bare_read_all(SSL *ssl, void *dst, size_t len)
{
    for (size_t got = 0; got < len;) {
        int n = SSL_read(ssl, (uint8_t *)dst + got, (int)(len - got));
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return true;
}

bool tls_bare_read_frame(SSL *ssl, uint8_t *body, size_t cap, struct arpc_frame *f)
{
    uint8_t head[ARPC_FRAME_HEADER_SIZE], kind;
    uint64_t xid;
    uint32_t len;
    return tls_bare_read_all(ssl, head, sizeof(head)) &&
           arpc_frame_peek_header(head, sizeof(head), &kind, &xid, &len) == ARPC_OK && len <= cap &&
           tls_bare_read_all(ssl, body, len) && arpc_frame_decode_split(head, body, (uint32_t)cap, f) == ARPC_OK;
}

#endif
