/*
 * The server's write timeout (write_timeout_ms) over tls://, as conn_limits_test checks it
 * over tcp://: output counts as taken by the peer when the kernel hands it on, i.e. the bytes
 * the stream sent less the socket's send queue (core/conn.c, arpc_conn_write_age). A TLS
 * stream counts the records its BIO wrote (s_sent), not the plaintext the queue handed it,
 * which a write to retry holds back until it completes (up to 256 KiB at once).
 *
 * The readers are plain OpenSSL on a blocking socket with a small receive buffer, so the
 * server's send buffer fills and the reader's pace is what the server sees:
 *   - a slow reader (a 4 MiB reply at 8 KiB every 10 ms) gets its reply whole, not closed;
 *   - a trickle reader (1 KiB every 100 ms, against the 64 KiB output must move by in a
 *     timeout) is closed, with the line naming write_timeout_ms, and reset: its reads end.
 * A well-behaved tls:// client calls before and after, untouched.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/log_capture.h"
#include "support/test_util.h"
#include "transport/transport.h"

#ifdef ARPC_TEST_WITH_TLS
#include <openssl/ssl.h>

#include "support/tls_bare_client.h"
#include "support/tls_certs.h"

#define WRITE_TIMEOUT_MS 1000
#define SLOW_READER_BYTES (4u << 20)
#define SLOW_READER_CHUNK 8192
#define SLOW_READER_PAUSE_MS 10
#define TRICKLE_BYTES (8u << 20)
#define TRICKLE_CHUNK 1024
#define TRICKLE_PAUSE_MS 100

struct fixture {
    arpc_server *s;
    arpc_client *good;
    char addr[ARPC_ADDR_MAX];
};

static void start(struct fixture *fx)
{
    log_capture_clear();
    arpc_server_options so = {.write_timeout_ms = WRITE_TIMEOUT_MS, .tls = &tls_group_pair.tp_server};
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->s, "tls://127.0.0.1:0", fx->addr, sizeof(fx->addr)));
    arpc_client_options co = {.tls = &tls_group_pair.tp_client};
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx->good, fx->addr, &co));
    echo_ping(fx->good, TEST_WAIT_MS);
}

static void stop(struct fixture *fx)
{
    echo_ping(fx->good, TEST_WAIT_MS);
    arpc_client_close(fx->good);
    assert_int_equal(ARPC_OK, arpc_server_destroy(fx->s));
}

/* A reader: its socket (receive buffer rcvbuf) and its TLS session, HELLO said. */
struct reader {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    char peer[64]; /* "127.0.0.1:PORT", as the server's log lines name it */
};

static void reader_connect(struct reader *r, const char *addr, int rcvbuf)
{
    r->fd = tcp_socket_rcvbuf(rcvbuf);
    struct timeval hang = {.tv_sec = TEST_WAIT_S}; /* a silent server fails the test */
    assert_int_equal(0, setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &hang, sizeof(hang)));
    assert_int_equal(0, fd_connect_loopback(r->fd, addr));
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    assert_int_equal(0, getsockname(r->fd, (struct sockaddr *)&sa, &len));
    snprintf(r->peer, sizeof(r->peer), "127.0.0.1:%u", ntohs(sa.sin_port));
    r->ctx = SSL_CTX_new(TLS_client_method()); /* verifies nothing: the server is the test's */
    assert_non_null(r->ctx);
    r->ssl = SSL_new(r->ctx);
    assert_non_null(r->ssl);
    assert_int_equal(1, SSL_set_fd(r->ssl, r->fd));
    assert_int_equal(1, SSL_connect(r->ssl));
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 0x7e5, 0, 0, 0);
    assert_int_equal((int)n, SSL_write(r->ssl, hello, (int)n));
    uint8_t head[ARPC_FRAME_HEADER_SIZE], body[256];
    uint8_t kind;
    uint64_t xid;
    uint32_t blen;
    assert_true(tls_bare_read_all(r->ssl, head, sizeof(head)));
    assert_int_equal(ARPC_OK, arpc_frame_peek_header(head, sizeof(head), &kind, &xid, &blen));
    assert_int_equal(ARPC_FRAME_HELLO, kind);
    assert_true(blen <= sizeof(body));
    assert_true(tls_bare_read_all(r->ssl, body, blen));
}

/* Sends a t.echo request (xid 1) of len zero bytes: its reply is as long. */
static void reader_ask_echo(struct reader *r, uint32_t len)
{
    uint8_t *payload = calloc(1, len), *frame = malloc(arpc_frame_request_size(6, len));
    assert_true(payload != NULL && frame != NULL);
    size_t n = arpc_frame_encode_request(frame, ARPC_FRAME_REQUEST, 1, 0, 0, 0, "t.echo", 6, payload, len);
    size_t sent = 0;
    while (sent < n) {
        int k = SSL_write(r->ssl, frame + sent, (int)(n - sent));
        assert_true(k > 0);
        sent += (size_t)k;
    }
    free(frame);
    free(payload);
}

static void reader_close(struct reader *r)
{
    SSL_free(r->ssl);
    SSL_CTX_free(r->ctx);
    close(r->fd);
}

static size_t timeout_lines(const struct reader *r) { return LOG_LINES_WITH("write_timeout_ms", r->peer); }

static void test_slow_tls_reader_is_not_closed(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx);
    struct reader r;
    reader_connect(&r, fx.addr, 64 * 1024);
    reader_ask_echo(&r, SLOW_READER_BYTES);
    uint8_t head[ARPC_FRAME_HEADER_SIZE];
    assert_true(tls_bare_read_all(r.ssl, head, sizeof(head)));
    size_t left = arpc_frame_total_size(head) - sizeof(head);
    assert_true(left >= SLOW_READER_BYTES);
    static uint8_t chunk[SLOW_READER_CHUNK];
    while (left > 0) {
        size_t want = left < sizeof(chunk) ? left : sizeof(chunk);
        assert_true(tls_bare_read_all(r.ssl, chunk, want));
        left -= want;
        sleep_ms(SLOW_READER_PAUSE_MS); /* the slowness under test, not a wait for an event */
    }
    echo_ping(fx.good, TEST_WAIT_MS);
    if (timeout_lines(&r) != 0)
        log_capture_print();
    assert_int_equal(0, timeout_lines(&r));
    reader_close(&r);
    stop(&fx);
}

static void test_trickle_tls_reader_is_closed(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx);
    struct reader r;
    reader_connect(&r, fx.addr, 4096);
    reader_ask_echo(&r, TRICKLE_BYTES);
    int64_t until = now_ms() + TEST_WAIT_MS;
    uint8_t chunk[TRICKLE_CHUNK];
    int n;
    while ((n = SSL_read(r.ssl, chunk, sizeof(chunk))) > 0 && now_ms() < until)
        sleep_ms(TRICKLE_PAUSE_MS); /* the trickle under test, not a wait for an event */
    assert_true(n <= 0); /* closed and reset, not the wait run out */
    assert_true(WAIT_UNTIL(timeout_lines(&r) == 1));
    reader_close(&r);
    stop(&fx);
}

static int setup_all(void **state)
{
    log_capture_start(ARPC_LOG_INFO);
    return tls_group_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_tls_reader_is_not_closed),
        cmocka_unit_test(test_trickle_tls_reader_is_closed),
    };
    return cmocka_run_group_tests(tests, setup_all, tls_group_teardown);
}

#else

int main(void)
{
    printf("tls_write_timeout_test: built without TLS (ARPC_WITH_TLS off): nothing to test\n");
    return 0;
}
#endif
