/*
 * TLS writes that wait for a full socket (transport/tls_stream.c, tls_bio.c).
 *
 * A TLS 1.3 peer's KeyUpdate requests meanwhile: answered, and every reply (or one-way message)
 * still arrives, at a server and at a client. OpenSSL 3.0 cannot answer a KeyUpdate request
 * while a record of its own waits to be retried: SSL_read failed ("bad length") and took the
 * connection, and every call on it, with it (found by a review that attacked the TLS stream;
 * the stream's BIO now keeps what the socket did not take instead).
 *
 * A lingering close that runs out while a record waits: every one-way message is either read
 * by the server or counted in the close's WARN line (a record's frames count as written only
 * once it has left; a review found 15 of 8,000 messages in neither while they counted as soon
 * as OpenSSL had them).
 *
 * The peer is a bare OpenSSL client whose socket takes little (CLIENT_RCVBUF): it asks for
 * REPLIES replies of REPLY_BYTES, more than the two sockets hold (the server's send buffer is
 * at most net.ipv4.tcp_wmem's 4 MiB) but less than the output backlog at which the server
 * stops reading (8 MiB: it must read the KeyUpdates while its writes wait), reads nothing
 * until the server has answered every call and still has output queued, then sends two
 * KeyUpdate requests, and reads every reply.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/test_util.h"

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/ssl.h>

#include "support/tls_bare_client.h"
#include "support/tls_certs.h"

#define REPLIES 24
#define REPLY_BYTES (256u * 1024u) /* 6 MiB in all */
#define CLIENT_RCVBUF (64 * 1024)

static void big(arpc_request *req, void *ctx)
{
    (void)ctx;
    static const uint8_t zeros[REPLY_BYTES];
    arpc_reply(req, zeros, sizeof(zeros));
}

/* The next frame's kind and xid, its body read and dropped (REPLY_BYTES at most; *len its
 * payload's length); 0 when the stream ended (or broke) first. Any thread. */
static uint8_t read_frame_or_end(SSL *ssl, uint64_t *xid, uint32_t *len)
{
    static _Thread_local uint8_t body[REPLY_BYTES];
    struct arpc_frame f;
    if (!tls_bare_read_frame(ssl, body, sizeof(body), &f))
        return 0;
    *xid = f.f_xid;
    *len = f.f_payload_len;
    return f.f_kind;
}

/* As read_frame_or_end, on the test's thread: the stream must not end. */
static uint8_t read_frame(SSL *ssl, uint64_t *xid, uint32_t *len)
{
    uint8_t kind = read_frame_or_end(ssl, xid, len);
    assert_true(kind != 0);
    return kind;
}

static void test_key_updates_while_the_servers_writes_wait(void **state)
{
    (void)state;
    arpc_server_options so = {.workers = 1, .tls = &tls_group_pair.tp_server};
    arpc_server *s;
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.big", big, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tls://127.0.0.1:0", addr, sizeof(addr)));

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: the server is not on trial */
    assert_non_null(ctx);
    assert_int_equal(1, SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION));
    int fd = tcp_socket_rcvbuf(CLIENT_RCVBUF);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = TEST_WAIT_S};
    assert_int_equal(0, setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
    assert_int_equal(0, fd_connect_loopback(fd, addr));
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    assert_int_equal(1, SSL_set_fd(ssl, fd));
    assert_int_equal(1, SSL_connect(ssl));
    uint8_t frame[ARPC_FRAME_HEADER_SIZE + 256];
    size_t n = arpc_frame_encode_hello(frame, 42, 0, 0, 0);
    assert_int_equal((int)n, SSL_write(ssl, frame, (int)n));
    uint64_t xid;
    uint32_t len;
    assert_int_equal(ARPC_FRAME_HELLO, read_frame(ssl, &xid, &len));
    for (uint64_t i = 1; i <= REPLIES; i++) {
        n = arpc_frame_encode_request(frame, ARPC_FRAME_REQUEST, i, 0, 0, 0, "t.big", 5, NULL, 0);
        assert_int_equal((int)n, SSL_write(ssl, frame, (int)n));
    }
    /* Every call answered, and replies still queued: the server's writes wait for the socket. */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, calls.finished), REPLIES, TEST_WAIT_MS));
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &st));
    assert_true(st.queued_bytes > 0);
    for (int k = 0; k < 2; k++) { /* (the second is the one the old stream failed at) */
        assert_int_equal(1, SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED));
        assert_int_equal(1, SSL_do_handshake(ssl)); /* sends it */
    }
    int replies = 0;
    while (replies < REPLIES) {
        uint8_t kind = read_frame(ssl, &xid, &len);
        if (kind == ARPC_FRAME_PING)
            continue;
        assert_int_equal(ARPC_FRAME_REPLY, kind);
        assert_int_equal(REPLY_BYTES, len);
        replies++;
    }
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &st));
    assert_int_equal(0, st.connections_closed); /* the connection lived through it */

    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    arpc_server_destroy(s);
}

/* A bare OpenSSL server for an arpc client: it answers HELLO, waits for b_go (reading
 * nothing: the client's socket fills), sends b_key_updates KeyUpdate requests, then reads
 * and counts one-way messages until the client's stream ends. */
struct bare_server {
    int b_lfd;
    int b_key_updates;
    sem_t b_go;
    long b_oneways;
};

/* Its TLS side (it stops at the first failure, noted in bad_line); then it counts. */
static SSL *bare_server_hello(struct bare_server *b, SSL_CTX *ctx, int fd)
{
    struct timeval tv = {.tv_sec = TEST_WAIT_S}; /* a silent client fails the test, not the run */
    SSL *ssl = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 ? SSL_new(ctx) : NULL;
    uint64_t xid;
    uint32_t len;
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 7, 0, ARPC_DEFAULT_MAX_FRAME, 0);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1 ||
        read_frame_or_end(ssl, &xid, &len) != ARPC_FRAME_HELLO || SSL_write(ssl, hello, (int)n) != (int)n ||
        !sem_wait_secs(&b->b_go, TEST_WAIT_S)) {
        CHECK(false);
        return ssl;
    }
    for (int k = 0; k < b->b_key_updates; k++)
        CHECK(SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) == 1 && SSL_do_handshake(ssl) == 1);
    uint8_t kind;
    while ((kind = read_frame_or_end(ssl, &xid, &len)) != 0)
        if (kind == ARPC_FRAME_ONEWAY)
            b->b_oneways++;
    return ssl;
}

static void *bare_server_run(void *arg)
{
    struct bare_server *b = arg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    bool ok = ctx != NULL &&
              SSL_CTX_use_certificate_chain_file(ctx, tls_certs_path(&tls_group_certs, "server", "pem")) == 1 &&
              SSL_CTX_use_PrivateKey_file(ctx, tls_certs_path(&tls_group_certs, "server", "key"), SSL_FILETYPE_PEM) == 1;
    int fd = ok ? accept(b->b_lfd, NULL, NULL) : -1;
    SSL *ssl = ok ? bare_server_hello(b, ctx, fd) : NULL;
    CHECK(ok);
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ctx);
    return NULL;
}

#define ONEWAYS 8000
#define ONEWAY_BYTES 1000 /* 8 MB in all: more than the two sockets hold */

static atomic_long unsent_reported = -1; /* the close's WARN line's count of one-way messages */

static void logger(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    long n;
    if (sscanf(line, "closing the client of %*s %ld one-way message", &n) == 1)
        atomic_store(&unsent_reported, n);
}

/* An arpc client sends ONEWAYS one-way messages to a bare server that reads nothing until
 * it is let go (after key_updates KeyUpdate requests) and closes with close_linger_ms linger.
 * Returns the messages the server read; *unsent is what the close's WARN line counted (-1:
 * no line). */
static long oneways_to_a_stalled_server(int key_updates, int64_t linger, long *unsent)
{
    struct bare_server b = {.b_key_updates = key_updates};
    uint16_t port;
    b.b_lfd = fd_listen_loopback(0, 4, 64 * 1024, &port);
    assert_true(b.b_lfd >= 0);
    assert_int_equal(0, sem_init(&b.b_go, 0, 0));
    atomic_store(&unsent_reported, -1);
    arpc_set_logger(logger, NULL, ARPC_LOG_WARN);
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, bare_server_run, &b));
    char addr[64];
    snprintf(addr, sizeof(addr), "tls://127.0.0.1:%u", port);
    arpc_client_options o = {.tls = &tls_group_pair.tp_client, .close_linger_ms = linger};
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &o));
    static const uint8_t payload[ONEWAY_BYTES];
    for (int i = 0; i < ONEWAYS; i++)
        assert_int_equal(ARPC_OK, arpc_notify(c, "sink", payload, sizeof(payload)));
    /* Every message reached the client's loop, and its writes wait for the socket. */
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, oneways), ONEWAYS, TEST_WAIT_MS));
    assert_true(WAIT_UNTIL(client_stat_now(c, offsetof(arpc_client_stats, queued_bytes)) > 0));
    if (key_updates > 0)
        sem_post(&b.b_go); /* the server asks, then reads: the close waits for it */
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    if (key_updates == 0)
        sem_post(&b.b_go); /* the linger ran out first: the server reads what reached it */
    assert_int_equal(0, pthread_join(t, NULL));
    assert_int_equal(0, atomic_load(&bad_line));
    close(b.b_lfd);
    sem_destroy(&b.b_go);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    *unsent = atomic_load(&unsent_reported);
    return b.b_oneways;
}

/* The client's writes wait for a server that reads nothing, which then asks for two key
 * updates and reads: every message arrives, none is dropped. */
static void test_key_updates_while_the_clients_writes_wait(void **state)
{
    (void)state;
    long unsent;
    assert_int_equal(ONEWAYS, oneways_to_a_stalled_server(2, TEST_WAIT_MS, &unsent));
    assert_int_equal(-1, unsent);
}

/* The linger runs out while the server reads nothing: what it could not send is counted, and
 * the rest the server reads; no message is in neither. */
static void test_a_linger_counts_every_one_way_it_could_not_send(void **state)
{
    (void)state;
    long unsent;
    long read = oneways_to_a_stalled_server(0, 300, &unsent);
    assert_true(unsent > 0);
    assert_int_equal(ONEWAYS, read + unsent);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_updates_while_the_servers_writes_wait),
        cmocka_unit_test(test_key_updates_while_the_clients_writes_wait),
        cmocka_unit_test(test_a_linger_counts_every_one_way_it_could_not_send),
    };
    return cmocka_run_group_tests(tests, tls_group_setup, tls_group_teardown);
}
#else
int main(void)
{
    printf("built without TLS: nothing to test\n");
    return 0;
}
#endif
