/*
 * A call whose request frame never left whole when its connection broke (part of it still in
 * the client's output queue, or never queued) cannot have run: the server never had the frame,
 * and a server drops a partial frame with its connection. So the call counts as not sent
 * (docs/SEMANTICS.md, "The request is lost"): a no-retry call waits for the next connection and
 * is sent there, and an at-most-once call is sent even to a server that lost its memory (a new
 * epoch), instead of both ending ARPC_ECONNLOST ("may have run"), as they did.
 *
 * The server is played by hand on a plain socket with a tiny receive buffer, which reads
 * nothing of the first connection: a large request stays mostly in the client's queue (the
 * test waits for the client's queued_bytes gauge, a condition, not a time), then that
 * connection is closed under it (unread bytes: a reset). The client reconnects to the same
 * listener, whose next HELLO lets the call through; its frame is read whole and answered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/test_util.h"

#define WAIT_MS TEST_WAIT_MS
#define BIG (12u << 20)          /* under the client's frame limit, far more than the sockets' buffers hold */
#define SERVER_MAX (64u << 20)   /* the frame limit the fake server announces */

/* A listening socket on 127.0.0.1 whose connections take little at a time. */
static int fake_listen(char *addr, size_t len)
{
    uint16_t port;
    int fd = fd_listen_loopback(0, 4, 4096, &port);
    if (fd >= 0)
        snprintf(addr, len, "tcp://127.0.0.1:%u", port);
    return fd;
}

static bool wait_fd(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    return poll(&p, 1, WAIT_MS) == 1;
}

/* Reads exactly len bytes (into buf, or dropped when buf is NULL). */
static bool read_exact(int fd, uint8_t *buf, size_t len)
{
    uint8_t sink[65536];
    for (size_t got = 0; got < len;) {
        if (!wait_fd(fd, POLLIN))
            return false;
        size_t want = len - got;
        if (buf == NULL && want > sizeof(sink))
            want = sizeof(sink);
        ssize_t n = read(fd, buf != NULL ? buf + got : sink, want);
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return true;
}

/* The next frame's header (its body read and dropped, or the first body_keep bytes kept). */
static bool read_frame(int fd, uint8_t head[ARPC_FRAME_HEADER_SIZE], uint8_t *body, size_t body_keep)
{
    if (!read_exact(fd, head, ARPC_FRAME_HEADER_SIZE))
        return false;
    size_t body_len = arpc_frame_total_size(head) - ARPC_FRAME_HEADER_SIZE;
    size_t keep = body_keep < body_len ? body_keep : body_len;
    return read_exact(fd, body, keep) && read_exact(fd, NULL, body_len - keep);
}

/* Accepts the client's next connection and answers its HELLO as a deduplicating server of
 * instance epoch. */
static int fake_accept(int lfd, uint64_t epoch)
{
    if (!wait_fd(lfd, POLLIN))
        return -1;
    int fd = accept(lfd, NULL, NULL);
    uint8_t head[ARPC_FRAME_HEADER_SIZE], hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    if (fd < 0 || !read_frame(fd, head, NULL, 0) || head[3] != ARPC_FRAME_HELLO)
        return -1;
    size_t n = arpc_frame_encode_hello(hello, epoch, ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP, SERVER_MAX, 600);
    return write(fd, hello, n) == (ssize_t)n ? fd : -1;
}

/* A request frame comes whole on fd; answered with a REPLY "ok". */
static void serve_one(int fd)
{
    uint8_t head[ARPC_FRAME_HEADER_SIZE], reply[ARPC_FRAME_HEADER_SIZE + 2];
    assert_true(read_frame(fd, head, NULL, 0));
    while (head[3] == ARPC_FRAME_CANCEL || head[3] == ARPC_FRAME_PING) /* none expected; harmless */
        assert_true(read_frame(fd, head, NULL, 0));
    assert_int_equal(head[3], ARPC_FRAME_REQUEST);
    assert_true(arpc_frame_total_size(head) > BIG); /* all of it */
    arpc_frame_encode_header(reply, ARPC_FRAME_REPLY, arpc_frame_xid(head), 2);
    memcpy(reply + ARPC_FRAME_HEADER_SIZE, "ok", 2);
    assert_int_equal(write(fd, reply, sizeof(reply)), (ssize_t)sizeof(reply));
}

/* One round: a call of the given semantics whose frame is cut at the loss; the next HELLO
 * comes from epoch2 (another instance: one that restarted without a reply log). */
static void cut_mid_frame(enum arpc_call_semantics sem, uint64_t epoch2)
{
    char addr[64];
    int lfd = fake_listen(addr, sizeof(addr));
    assert_true(lfd >= 0);
    arpc_client_options co = {.connect_in_background = true, .reconnect_min_ms = 1, .reconnect_max_ms = 20};
    arpc_client *c = NULL;
    assert_int_equal(arpc_client_connect(&c, addr, &co), ARPC_OK);
    int fd = fake_accept(lfd, 0x1111);
    assert_true(fd >= 0);
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, connections_opened), 1, WAIT_MS));

    uint8_t *big = calloc(1, BIG);
    assert_non_null(big);
    arpc_call_options o = {.semantics = sem, .deadline_ms = ARPC_FOREVER};
    arpc_future *f = arpc_call_async_opts(c, "m", big, BIG, &o);
    assert_non_null(f);
    /* Most of the frame waits in the client's queue: the server reads nothing. */
    arpc_client_stats cs = {0};
    assert_true(WAIT_UNTIL(arpc_client_stats(c, &cs) == ARPC_OK && cs.queued_bytes > 0));
    close(fd); /* unread bytes: a reset */

    int fd2 = fake_accept(lfd, epoch2); /* the client is back: its call goes out again, whole */
    assert_true(fd2 >= 0);
    assert_int_equal(arpc_future_poll(f), ARPC_EPENDING); /* not ended "may have run" at the loss */
    serve_one(fd2);
    void *out = NULL;
    size_t outlen = 0;
    assert_int_equal(arpc_future_wait_for(f, WAIT_MS), ARPC_OK);
    out = arpc_future_take(f, &outlen);
    assert_non_null(out);
    assert_int_equal(outlen, 2);
    arpc_free(out);
    arpc_future_release(f);
    assert_int_equal(arpc_client_stats(c, &cs), ARPC_OK);
    assert_int_equal(cs.connections_closed, 1);
    arpc_client_close(c);
    close(fd2);
    close(lfd);
    free(big);
}

/* ARPC_NO_RETRY: never sent twice, but a frame that never left was never sent. */
static void test_no_retry_call_cut_mid_frame_is_sent(void **state)
{
    (void)state;
    cut_mid_frame(ARPC_NO_RETRY, 0x1111);
}

/* At-most-once, to a server that came back without its memory (a new epoch): a call it can
 * have run must end ARPC_ECONNLOST; one it never had is simply sent. */
static void test_at_most_once_call_cut_mid_frame_goes_to_a_new_instance(void **state)
{
    (void)state;
    cut_mid_frame(ARPC_AT_MOST_ONCE, 0x2222);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_retry_call_cut_mid_frame_is_sent),
        cmocka_unit_test(test_at_most_once_call_cut_mid_frame_goes_to_a_new_instance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
