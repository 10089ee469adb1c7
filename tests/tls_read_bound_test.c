/*
 * What a TLS peer's bytes may cost the loop (transport/tls_stream.c, transport/tls_bio.c):
 *  - a read of the stream is bounded by the records it takes, not by the bytes they yield: a
 *    peer of 1-byte records filled a 16 KiB read with 16,384 records (32,768 recv calls and
 *    as many decryptions), and a flood of handshake messages that yield no bytes at all (TLS
 *    1.3 KeyUpdates) was read for as long as the socket stayed full: seconds of the loop for
 *    a stranger (a review). Now a read stops after its share and the rest waits for the next
 *    turn, nothing lost;
 *  - a server reads at most 16 KiB of a stranger's ClientHello (OpenSSL buffers ~128 KiB of
 *    one before it judges it: 160 KiB a connection held until its handshake timed out), nor
 *    lets a plaintext handshake message announce more (OpenSSL reserves what a header
 *    announces), and fails the handshake saying so;
 *  - a record that fails its check after the handshake (a byte changed on the way: TCP's
 *    checksum misses some) is told as what it is: the server logged "TLS handshake failed:
 *    decryption failed or bad record mac" for it, on a connection whose handshake had long
 *    succeeded (a network-impairment review): OpenSSL counts a connection that failed as back
 *    in its handshake, and the stream asked OpenSSL whether the handshake was done after the
 *    failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/ssl.h>

#include "support/tls_bare_client.h"
#include "support/tls_certs.h"
#include "transport/tls.h"

#define RECORDS 1000 /* 1-byte records the peer sends */

static int setup_all(void **state)
{
    log_capture_start(ARPC_LOG_INFO);
    return tls_group_setup(state);
}

/* A connected pair of tcp sockets on loopback: [0] the server's (non-blocking), [1] the peer's. */
static void tcp_pair(int fds[2])
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(0, bind(l, (struct sockaddr *)&a, sizeof(a)));
    assert_int_equal(0, listen(l, 1));
    assert_int_equal(0, getsockname(l, (struct sockaddr *)&a, &alen));
    fds[1] = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(0, connect(fds[1], (struct sockaddr *)&a, sizeof(a)));
    fds[0] = accept(l, NULL, NULL);
    assert_true(fds[0] >= 0);
    close(l);
    assert_int_equal(0, fcntl(fds[0], F_SETFL, O_NONBLOCK));
}

struct peer {
    int p_fd;
    sem_t p_go;      /* the server's handshake is done: send the records */
    sem_t p_sent;    /* they are written */
    sem_t p_done;    /* the server read them: close */
    bool p_ok;
};

/* The peer: an OpenSSL client (verifying nothing: the test is about the server's reads) that
 * writes RECORDS records of one byte each, byte i being i % 251. */
static void *peer_main(void *arg)
{
    struct peer *p = arg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = ctx != NULL ? SSL_new(ctx) : NULL;
    bool ok = ssl != NULL && SSL_set_fd(ssl, p->p_fd) == 1 && SSL_connect(ssl) == 1;
    sem_post(&p->p_sent); /* the handshake's end (or failure) */
    sem_wait(&p->p_go);
    for (int i = 0; ok && i < RECORDS; i++) {
        uint8_t b = (uint8_t)(i % 251);
        ok = SSL_write(ssl, &b, 1) == 1; /* one record each */
    }
    p->p_ok = ok;
    sem_post(&p->p_sent);
    sem_wait(&p->p_done);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return NULL;
}

/* Reads from the stream until want bytes came, waiting for the socket as the stream says;
 * checks them. */
static void read_all(struct arpc_stream *st, int fd, uint8_t *buf, size_t have, size_t want)
{
    int64_t end = now_ms() + TEST_WAIT_MS;
    while (have < want && now_ms() < end) {
        ssize_t n = st->s_ops->s_read(st, buf + have, 16384);
        if (n > 0) {
            have += (size_t)n;
            continue;
        }
        assert_true(n == ARPC_STREAM_WANT_READ || n == ARPC_STREAM_WANT_WRITE);
        struct pollfd pf = {.fd = fd, .events = n == ARPC_STREAM_WANT_READ ? POLLIN : POLLOUT};
        (void)poll(&pf, 1, 100);
    }
    assert_int_equal(want, have);
    for (size_t i = 0; i < want; i++)
        assert_int_equal(i % 251, buf[i]);
}

static void test_a_read_is_bounded_by_records(void **state)
{
    (void)state;
    struct arpc_tls *tls = NULL;
    char why[256];
    assert_int_equal(ARPC_OK, arpc_tls_server_new(&tls, &tls_group_pair.tp_server, why, sizeof(why)));
    int fds[2];
    tcp_pair(fds);
    struct arpc_stream *st = NULL;
    assert_int_equal(ARPC_OK, arpc_tls_stream_new(tls, fds[0], &st));
    static struct peer p;
    p.p_fd = fds[1];
    sem_init(&p.p_go, 0, 0);
    sem_init(&p.p_sent, 0, 0);
    sem_init(&p.p_done, 0, 0);
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, peer_main, &p));

    static uint8_t buf[RECORDS + 16384];
    int64_t end = now_ms() + TEST_WAIT_MS;
    while (st->s_ops->s_handshake(st) != ARPC_STREAM_HANDSHAKE_DONE && now_ms() < end) {
        ssize_t n = st->s_ops->s_read(st, buf, 16384); /* runs the server's side of the handshake */
        assert_true(n == ARPC_STREAM_WANT_READ || n == ARPC_STREAM_WANT_WRITE);
        struct pollfd pf = {.fd = fds[0], .events = n == ARPC_STREAM_WANT_READ ? POLLIN : POLLOUT};
        (void)poll(&pf, 1, 100);
    }
    assert_int_equal(ARPC_STREAM_HANDSHAKE_DONE, st->s_ops->s_handshake(st));
    assert_true(sem_wait_secs(&p.p_sent, TEST_WAIT_S));
    sem_post(&p.p_go);
    assert_true(sem_wait_secs(&p.p_sent, TEST_WAIT_S));
    assert_true(p.p_ok);
    /* Every record is in the server's socket (loopback: 22 bytes or more each). */
    int queued = 0;
    WAIT_UNTIL(ioctl(fds[0], FIONREAD, &queued) == 0 && queued >= RECORDS * 22);

    ssize_t first = st->s_ops->s_read(st, buf, 16384);
    if (first <= 0 || first > 64)
        fail_msg("one read of 16 KiB took %zd of %d one-byte records: bounded by the bytes, not the records",
                 first, RECORDS);
    read_all(st, fds[0], buf, (size_t)first, RECORDS); /* the rest, on later reads: nothing lost */

    sem_post(&p.p_done);
    pthread_join(t, NULL);
    st->s_ops->s_close(st); /* closes fds[0] */
    close(fds[1]);
    arpc_tls_free(tls);
}

/* A server whose handshake timeout is far: only a handshake bound closes a stranger. */
static arpc_server *stranger_server(char *addr)
{
    arpc_server_options so = {
        .workers = 1, .tls = &tls_group_pair.tp_server, .handshake_timeout_ms = 10 * TEST_WAIT_MS};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, ARPC_ADDR_MAX));
    log_capture_clear();
    return s;
}

static void test_an_oversized_client_hello_is_refused_at_once(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = stranger_server(addr);
    int fd = tls_bare_connect(addr);
    /* A ClientHello of 40,000 bytes (OpenSSL would take one of up to ~128 KiB), of which its
     * first record and part of the second are sent: the server buffers it, waiting for the
     * rest, unless it stops at its bound. */
    static uint8_t rec[5 + 16384 + 5 + 4096];
    size_t hello_len = 40000;
    uint8_t *r = rec;
    r[0] = 22, r[1] = 3, r[2] = 1, r[3] = 16384 >> 8, r[4] = 16384 & 0xff; /* handshake record */
    r[5] = 1; /* ClientHello, its 24-bit length: */
    r[6] = (uint8_t)(hello_len >> 16), r[7] = (uint8_t)(hello_len >> 8), r[8] = (uint8_t)hello_len;
    r[9] = 3, r[10] = 3; /* the rest of its first record: bytes OpenSSL does not look at yet */
    r = rec + 5 + 16384;
    r[0] = 22, r[1] = 3, r[2] = 1, r[3] = 4096 >> 8, r[4] = 4096 & 0xff;
    assert_int_equal((ssize_t)sizeof(rec), send(fd, rec, sizeof(rec), MSG_NOSIGNAL));
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    close(fd);
    WAIT_UNTIL(LOG_LINES_WITH("ClientHello over 16384 bytes") == 1);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* Nine bytes: a record header and a ClientHello header announcing 131,000 bytes. OpenSSL
 * reserves (and zero-fills) what a message announces on its header alone: ~155 KiB held until
 * the handshake timed out, for nine bytes (a review of the byte count above). The header is
 * refused as it arrives. */
static void test_a_large_announced_message_is_refused_at_its_header(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = stranger_server(addr);
    int fd = tls_bare_connect(addr);
    const uint32_t announced = 131000;
    const uint8_t head[9] = {22, 3, 1, 16384 >> 8, 16384 & 0xff, 1, (uint8_t)(announced >> 16),
                             (uint8_t)(announced >> 8), (uint8_t)announced};
    assert_int_equal((ssize_t)sizeof(head), send(fd, head, sizeof(head), MSG_NOSIGNAL));
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    close(fd);
    WAIT_UNTIL(LOG_LINES_WITH("handshake message announcing over 16384 bytes") == 1);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* A TLS 1.3 ClientHello offering x25519 without a key share for it: the server answers with a
 * HelloRetryRequest. Into out (its record); its length. */
static size_t hello_without_key_share(uint8_t *out)
{
    static const uint8_t ext[] = {
        0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04,       /* supported_versions: TLS 1.3 */
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d, /* supported_groups: x25519 */
        0x00, 0x33, 0x00, 0x02, 0x00, 0x00,             /* key_share: none */
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, /* signatures */
    };
    uint8_t body[256];
    size_t n = 0;
    body[n++] = 3, body[n++] = 3; /* legacy_version */
    for (int i = 0; i < 32; i++)
        body[n++] = (uint8_t)i; /* random */
    body[n++] = 32;             /* a legacy session id, as a compatible client sends */
    for (int i = 0; i < 32; i++)
        body[n++] = (uint8_t)(100 + i);
    body[n++] = 0, body[n++] = 2, body[n++] = 0x13, body[n++] = 0x01; /* TLS_AES_128_GCM_SHA256 */
    body[n++] = 1, body[n++] = 0;                                     /* no compression */
    body[n++] = 0, body[n++] = sizeof(ext);
    memcpy(body + n, ext, sizeof(ext));
    n += sizeof(ext);
    size_t m = 0;
    out[m++] = 22, out[m++] = 3, out[m++] = 1, out[m++] = (uint8_t)((n + 4) >> 8), out[m++] = (uint8_t)(n + 4);
    out[m++] = 1, out[m++] = 0, out[m++] = (uint8_t)(n >> 8), out[m++] = (uint8_t)n;
    memcpy(out + m, body, n);
    return m + n;
}

/* After a HelloRetryRequest, OpenSSL's client sends TLS 1.3's dummy ChangeCipherSpec and then
 * its second ClientHello in plaintext: a stranger's second one announcing 131,000 bytes is
 * refused at its header like a first. Before, the ChangeCipherSpec ended the guard's reading
 * and the ClientHello byte count had stopped once the server answered (a review: 100 such
 * strangers all held until their handshake timed out). */
static void test_a_second_hello_after_a_retry_request_is_guarded(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = stranger_server(addr);
    int fd = tls_bare_connect(addr);
    uint8_t first[300], answer[4096];
    size_t n = hello_without_key_share(first);
    assert_int_equal((ssize_t)n, send(fd, first, n, MSG_NOSIGNAL));
    ssize_t got = recv(fd, answer, sizeof(answer), 0);
    assert_true(got > 15);
    static const uint8_t retry_random[4] = {0xcf, 0x21, 0xad, 0x74}; /* RFC 8446: a HelloRetryRequest */
    assert_int_equal(22, answer[0]);
    assert_memory_equal(retry_random, answer + 11, sizeof(retry_random));
    const uint32_t announced = 131000;
    const uint8_t rest[15] = {20, 3, 3, 0, 1, 1, /* the dummy ChangeCipherSpec */
                              22, 3, 3, 16384 >> 8, 16384 & 0xff, 1, (uint8_t)(announced >> 16),
                              (uint8_t)(announced >> 8), (uint8_t)announced};
    assert_int_equal((ssize_t)sizeof(rest), send(fd, rest, sizeof(rest), MSG_NOSIGNAL));
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    close(fd);
    WAIT_UNTIL(LOG_LINES_WITH("handshake message announcing over 16384 bytes") == 1);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

/* TLS 1.2's handshake ends with the client's ChangeCipherSpec and an encrypted Finished in a
 * record of type 22, whose bytes would read as a header announcing anything: the guard stops
 * at the ChangeCipherSpec there, and the handshake completes (the client's SSL_connect
 * returns once the server has taken its Finished). */
static void test_a_tls12_handshake_passes_the_guard(void **state)
{
    (void)state;
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = stranger_server(addr);
    for (int i = 0; i < 8; i++) { /* a Finished's ciphertext differs every time */
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: the server is not on trial */
        assert_non_null(ctx);
        assert_int_equal(1, SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION));
        int fd;
        SSL *ssl = tls_bare_handshake(addr, ctx, &fd);
        assert_int_equal(TLS1_2_VERSION, SSL_version(ssl));
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
    }
    assert_int_equal(0, LOG_LINES_WITH("handshake message announcing"));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_an_empty_server_name_is_refused(void **state)
{
    (void)state;
    arpc_tls_options o = tls_group_pair.tp_client;
    o.server_name = "";
    arpc_client_options co = {.tls = &o};
    arpc_client *c = NULL;
    char errbuf[256] = "";
    co.errbuf = errbuf;
    co.errbuf_len = sizeof(errbuf);
    assert_int_equal(ARPC_EINVAL, arpc_client_connect(&c, "tls://127.0.0.1:1", &co));
    assert_null(c);
    if (strstr(errbuf, "server_name") == NULL)
        fail_msg("the refusal does not say why: \"%s\"", errbuf);
}

/* After a handshake at `version`, an application-data record of 48 bytes no key made (or,
 * bad_version, a header no TLS peer writes): the server fails the connection, saying TLS
 * failed, not its handshake, nor that the peer that just completed one does not speak TLS. */
static void bad_record_after_handshake(int version, bool bad_version)
{
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = stranger_server(addr);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: the server is not on trial */
    assert_non_null(ctx);
    assert_int_equal(1, SSL_CTX_set_min_proto_version(ctx, version));
    assert_int_equal(1, SSL_CTX_set_max_proto_version(ctx, version));
    int fd;
    SSL *ssl = tls_bare_handshake(addr, ctx, &fd);
    uint8_t rec[5 + 48] = {23, 3, 3, 0, 48};
    if (bad_version)
        rec[1] = rec[2] = 9;
    for (size_t i = 5; i < sizeof(rec); i++)
        rec[i] = (uint8_t)(i * 37);
    assert_int_equal((ssize_t)sizeof(rec), send(fd, rec, sizeof(rec), MSG_NOSIGNAL));
    assert_true(fd_wait_eof(fd, TEST_WAIT_MS));
    if (bad_version)
        assert_true(WAIT_UNTIL(LOG_LINES_WITH("(a record corrupted or forged on the way)") > 0));
    else
        assert_true(WAIT_UNTIL(LOG_LINES_WITH("bad record mac") + LOG_LINES_WITH("decryption failed") > 0));
    assert_int_equal(0, LOG_LINES_WITH("does not speak TLS"));
    if (LOG_LINES_WITH("handshake failed") != 0)
        log_capture_print();
    assert_int_equal(0, LOG_LINES_WITH("handshake failed"));
    assert_true(LOG_LINES_WITH("TLS failed") > 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_a_tls13_bad_record_is_not_a_handshake_failure(void **state)
{
    (void)state;
    bad_record_after_handshake(TLS1_3_VERSION, false);
    bad_record_after_handshake(TLS1_3_VERSION, true);
}

static void test_a_tls12_bad_record_is_not_a_handshake_failure(void **state)
{
    (void)state;
    bad_record_after_handshake(TLS1_2_VERSION, false);
    bad_record_after_handshake(TLS1_2_VERSION, true);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_read_is_bounded_by_records),
        cmocka_unit_test(test_an_oversized_client_hello_is_refused_at_once),
        cmocka_unit_test(test_a_large_announced_message_is_refused_at_its_header),
        cmocka_unit_test(test_a_second_hello_after_a_retry_request_is_guarded),
        cmocka_unit_test(test_a_tls12_handshake_passes_the_guard),
        cmocka_unit_test(test_an_empty_server_name_is_refused),
        cmocka_unit_test(test_a_tls13_bad_record_is_not_a_handshake_failure),
        cmocka_unit_test(test_a_tls12_bad_record_is_not_a_handshake_failure),
    };
    return cmocka_run_group_tests(tests, setup_all, tls_group_teardown);
}
#else
int main(void)
{
    printf("built without TLS: nothing to test\n");
    return 0;
}
#endif
