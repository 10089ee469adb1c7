/*
 * A TLS 1.3 peer's KeyUpdate requests while the server's writes wait for a full socket: the
 * server answers them and every reply still arrives. OpenSSL 3.0 cannot answer a KeyUpdate
 * request while a record of its own waits to be retried: the server's SSL_read failed ("bad
 * length") and took the connection, and every call on it, with it (found by a review that
 * attacked the TLS stream; transport/tls_bio.c keeps what the socket did not take instead).
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

#include <signal.h>
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

static void read_exactly(SSL *ssl, void *dst, size_t len)
{
    for (size_t got = 0; got < len;) {
        int n = SSL_read(ssl, (uint8_t *)dst + got, (int)(len - got));
        assert_true(n > 0); /* (the socket's reads time out: a silent server fails the test) */
        got += (size_t)n;
    }
}

/* The next frame's kind and xid; its body is read and dropped (REPLY_BYTES at most). */
static uint8_t read_frame(SSL *ssl, uint64_t *xid, uint32_t *len)
{
    static uint8_t body[REPLY_BYTES];
    uint8_t head[ARPC_FRAME_HEADER_SIZE];
    read_exactly(ssl, head, sizeof(head));
    *len = (uint32_t)head[4] | (uint32_t)head[5] << 8 | (uint32_t)head[6] << 16 | (uint32_t)head[7] << 24;
    assert_true(*len <= sizeof(body));
    read_exactly(ssl, body, *len);
    struct arpc_frame f;
    assert_int_equal(ARPC_OK, arpc_frame_decode_split(head, body, sizeof(body), &f));
    *xid = f.f_xid;
    return f.f_kind;
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

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_updates_while_the_servers_writes_wait),
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
