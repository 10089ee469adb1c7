/*
 * A first connect that fails because the peer is not an arpc server is told once, in the
 * caller's errbuf and return code: the library does not also log a WARN in other words
 * ("closing the connection with ...: protocol error: malformed or unexpected frame"), which a
 * new user read as a second, different failure. Where nobody waits to be told (a connect in
 * the background), the WARN is the only report and stays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/log_capture.h"
#include "support/raw_server.h"
#include "support/test_util.h"

/* A peer that speaks something else: it answers one connection with an HTTP error. */
struct http_peer {
    int lfd;
    char addr[64];
    pthread_t thread;
};

static void *http_serve(void *arg)
{
    struct http_peer *p = arg;
    int fd = accept(p->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    static const char answer[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    if (write(fd, answer, sizeof(answer) - 1) < 0) {
    }
    char buf[512];
    while (read(fd, buf, sizeof(buf)) > 0) { /* until the client closes */
    }
    close(fd);
    return NULL;
}

static void http_peer_start(struct http_peer *p)
{
    uint16_t port;
    p->lfd = fd_listen_loopback(0, 4, 0, &port);
    assert_true(p->lfd >= 0);
    snprintf(p->addr, sizeof(p->addr), "tcp://127.0.0.1:%u", port);
    assert_int_equal(0, pthread_create(&p->thread, NULL, http_serve, p));
}

static void http_peer_stop(struct http_peer *p)
{
    shutdown(p->lfd, SHUT_RDWR); /* wakes an accept still waiting */
    assert_int_equal(0, pthread_join(p->thread, NULL));
    close(p->lfd);
}

static void test_first_connect_told_once(void **state)
{
    (void)state;
    struct http_peer p;
    http_peer_start(&p);
    log_capture_clear();
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options o = {.errbuf = why, .errbuf_len = sizeof(why)};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_EPROTO, arpc_client_connect(&c, p.addr, &o));
    assert_non_null(strstr(why, "is not an arpc server"));
    assert_non_null(strstr(why, "not an arpc frame (an HTTP response)")); /* what it is */
    http_peer_stop(&p);
    if (log_capture_count() != 0)
        log_capture_print();
    assert_int_equal(0, log_capture_count()); /* was 1: "closing the connection with ...: protocol error" */
}

static void test_background_connect_still_warns(void **state)
{
    (void)state;
    struct http_peer p;
    http_peer_start(&p);
    log_capture_clear();
    arpc_client_options o = {.connect_in_background = true, .no_reconnect = true};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, p.addr, &o));
    /* Ends once the attempt failed, which logs before it ends the calls waiting for it. */
    assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "t.any", "", 0, NULL, NULL, TEST_WAIT_MS));
    assert_int_equal(1, LOG_LINES_WITH("closing the connection with", p.addr + 6, "protocol error", "an HTTP response"));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    http_peer_stop(&p);
}

/* An arpc server of another protocol version: the client's words say it speaks arpc (they
 * said "not an arpc server ... a tls:// server?": a second implementation of the protocol). */
static bool answer_version_2(struct raw_server *s, void *arg)
{
    (void)arg;
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 0x5eed, ARPC_HELLO_DEDUP, ARPC_DEFAULT_MAX_FRAME, 600);
    hello[2] = ARPC_PROTO_VERSION + 1;
    struct raw_client r;
    bool ok = raw_server_accept(s, &r, hello, n);
    raw_server_read_to_end(&r);
    raw_close(&r);
    return ok;
}

static void test_arpc_peer_of_another_version(void **state)
{
    (void)state;
    struct raw_server s;
    raw_server_start(&s, answer_version_2, NULL);
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options o = {.errbuf = why, .errbuf_len = sizeof(why)};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_EPROTO, arpc_client_connect(&c, s.rs_addr, &o));
    assert_non_null(strstr(why, "speaks arpc, but its HELLO cannot be taken: protocol version"));
    assert_null(strstr(why, "tls://"));
    assert_true(raw_server_join(&s));
}

int main(void)
{
    log_capture_start(ARPC_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_connect_told_once),
        cmocka_unit_test(test_background_connect_still_warns),
        cmocka_unit_test(test_arpc_peer_of_another_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
