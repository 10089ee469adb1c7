/*
 * A call's request on the wire, now that the call keeps only its method (or its index in the
 * client's names) and payload and each send makes the frame's header, fixed fields and
 * method name again (core/client_call.c, core/outq.h's
 * heads): the bytes a server reads are the same whether the caller wrote the request itself
 * (core/client_direct.c) or the loop queued it, whole or cut anywhere (inside the head, at its
 * end, inside the body), and a re-send after a reconnect carries the same seq, xid (its seq's)
 * and bytes but for the ack.
 *
 * The server is played by hand on a plain socket, so the test reads every byte. Writes are cut
 * where the test says by a sendmsg of the test's own in front of libc's (the library is linked
 * into this executable, so its calls come here): the next caller's write (MSG_DONTWAIT) takes at
 * most N bytes, or none (EAGAIN: the call goes to the loop); the loop's writes take at most M
 * bytes each. Waits are on conditions (the loop asleep, a client counter, a readable socket).
 * And a cut call whose rest finds no memory is sent again whole (it never left whole).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "async/loop_internal.h"
#include "core/client_internal.h"
#include "core/client_resend.h"
#include "core/frame.h"
#include "support/interpose.h"
#include "support/test_util.h"

#define WAIT_MS TEST_WAIT_MS
#define EPOCH 0x1111u

/* ---- cut writes ---- */

static _Atomic long cut_caller = -1; /* the next caller's write: at most this many bytes (0: EAGAIN; -1: as it comes) */
static _Atomic long cut_loop = 0;    /* every write of the loop: at most this many bytes (0: as it comes) */

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    static _Atomic(void *) next;
    ssize_t (*real)(int, const struct msghdr *, int) =
        (ssize_t(*)(int, const struct msghdr *, int))interpose_next("sendmsg", &next);
    long cap = (flags & MSG_DONTWAIT) ? atomic_exchange(&cut_caller, -1) : atomic_load(&cut_loop);
    if ((flags & MSG_DONTWAIT) && cap == 0) {
        errno = EAGAIN;
        return -1;
    }
    if (cap <= 0)
        return real(fd, msg, flags);
    struct iovec cut[8];
    struct msghdr m = *msg;
    size_t left = (size_t)cap, n = 0;
    for (size_t i = 0; i < msg->msg_iovlen && n < 8 && left > 0; i++, n++) {
        cut[n] = msg->msg_iov[i];
        if (cut[n].iov_len > left)
            cut[n].iov_len = left;
        left -= cut[n].iov_len;
    }
    m.msg_iov = cut;
    m.msg_iovlen = n;
    return real(fd, &m, flags);
}

/* ---- the server, by hand ---- */

static bool wait_fd(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    return poll(&p, 1, WAIT_MS) == 1;
}

static bool read_exact(int fd, uint8_t *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        if (!wait_fd(fd, POLLIN))
            return false;
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return true;
}

/* The next REQUEST frame whole into buf (cap bytes); other frames (a PING) skipped. Its size. */
static size_t read_request(int fd, uint8_t *buf, size_t cap)
{
    for (;;) {
        assert_true(read_exact(fd, buf, ARPC_FRAME_HEADER_SIZE));
        size_t total = arpc_frame_total_size(buf);
        assert_true(total <= cap);
        assert_true(read_exact(fd, buf + ARPC_FRAME_HEADER_SIZE, total - ARPC_FRAME_HEADER_SIZE));
        if (buf[3] == ARPC_FRAME_REQUEST)
            return total;
        assert_int_equal(buf[3], ARPC_FRAME_PING);
    }
}

/* Accepts the client's next connection and answers its HELLO as a deduplicating server. */
static int fake_accept(int lfd)
{
    assert_true(wait_fd(lfd, POLLIN));
    int fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    uint8_t hello[1024];
    assert_true(read_exact(fd, hello, ARPC_FRAME_HEADER_SIZE));
    assert_int_equal(hello[3], ARPC_FRAME_HELLO);
    size_t body = arpc_frame_total_size(hello) - ARPC_FRAME_HEADER_SIZE;
    assert_true(body <= sizeof(hello) && read_exact(fd, hello, body));
    size_t n = arpc_frame_encode_hello(hello, EPOCH, ARPC_HELLO_CANCEL | ARPC_HELLO_DEDUP, 1u << 20, 600);
    assert_int_equal(write(fd, hello, n), (ssize_t)n);
    return fd;
}

static void reply_ok(int fd, uint64_t xid)
{
    uint8_t reply[ARPC_FRAME_HEADER_SIZE + 2];
    arpc_frame_encode_header(reply, ARPC_FRAME_REPLY, xid, 2);
    memcpy(reply + ARPC_FRAME_HEADER_SIZE, "ok", 2);
    assert_int_equal(write(fd, reply, sizeof(reply)), (ssize_t)sizeof(reply));
}

static void expect_ok(arpc_future *f)
{
    assert_int_equal(arpc_future_wait_for(f, WAIT_MS), ARPC_OK);
    size_t len = 0;
    void *out = arpc_future_take(f, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "ok", 2);
    arpc_free(out);
    arpc_future_release(f);
}

/* ---- the client ---- */

struct fixture {
    int lfd, fd;
    char addr[64];
    arpc_client *c;
};

static int setup(void **state)
{
    static struct fixture fx;
    uint16_t port;
    fx.lfd = fd_listen_loopback(0, 4, 0, &port); /* 0: the default buffers */
    if (fx.lfd < 0)
        return -1;
    snprintf(fx.addr, sizeof(fx.addr), "tcp://127.0.0.1:%u", port);
    arpc_client_options co = {.connect_in_background = true, .reconnect_min_ms = 1, .reconnect_max_ms = 20};
    if (arpc_client_connect(&fx.c, fx.addr, &co) != ARPC_OK)
        return -1;
    fx.fd = fake_accept(fx.lfd);
    if (!client_stat_reaches(fx.c, offsetof(arpc_client_stats, connections_opened), 1, WAIT_MS))
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    atomic_store(&cut_caller, -1);
    atomic_store(&cut_loop, 0);
    arpc_client_close(fx->c);
    close(fx->fd);
    close(fx->lfd);
    return 0;
}

/* Until the client's loop sleeps with nothing to do: a caller may then write. */
static void wait_idle(arpc_client *c) { assert_true(loop_idle_within(c->cl_loop, WAIT_MS)); }

static const char METHOD[] = "t.wire";
static const char PAYLOAD[] = "0123456789abcdef";

/* The frame a call of METHOD(PAYLOAD) with no deadline must be, with this xid, seq and ack. */
static size_t expected_frame(uint8_t *dst, uint64_t xid, uint64_t seq, uint64_t ack)
{
    return arpc_frame_encode_request(dst, ARPC_FRAME_REQUEST, xid, seq, ack, 0, METHOD, sizeof(METHOD) - 1, PAYLOAD,
                                     sizeof(PAYLOAD) - 1);
}

/* A little-endian u64 of a request frame at off (16: its seq, 24: its ack). */
static uint64_t field64(const uint8_t *frame, size_t off)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | frame[off + (size_t)i];
    return v;
}
#define SEQ_AT (ARPC_FRAME_HEADER_SIZE + 0)
#define ACK_AT (ARPC_FRAME_HEADER_SIZE + 8)

/* How a call leaves the client. */
struct way {
    long caller; /* cut_caller for its write: -1 whole, 0 none (the loop queues it), else that many bytes */
    long loop;   /* cut_loop: the loop's writes' size (0: as they come) */
};

/* The head a send makes is the header and fixed fields (40 bytes) and the method's name (6:
 * the client keeps METHOD once, core/method_names.h), so 46 bytes: cuts around both ends. */
static const struct way ways[] = {
    {-1, 0}, {1, 0}, {16, 0}, {17, 5}, {39, 0}, {40, 0}, {41, 0}, {45, 0}, {46, 0}, {47, 0}, {50, 3}, /* the caller writes */
    {0, 0},  {0, 1}, {0, 7},  {0, 39}, {0, 41}, {0, 45}, {0, 47},                                     /* the loop writes */
};

/* Starts an idle-loop call its caller writes (or tries to) the given way. */
static arpc_future *start_call(struct fixture *fx, struct way w, enum arpc_call_semantics sem)
{
    wait_idle(fx->c);
    atomic_store(&cut_loop, w.loop);
    atomic_store(&cut_caller, w.caller);
    arpc_call_options o = {.semantics = sem, .deadline_ms = ARPC_FOREVER};
    arpc_future *f = arpc_call_async_opts(fx->c, METHOD, PAYLOAD, sizeof(PAYLOAD) - 1, &o);
    assert_non_null(f);
    return f;
}

/* The same call sent every way: the server reads the same bytes (but the xid: a caller's has
 * CD_XID_BIT, the loop's not, which says which wrote it), and the reply to that xid completes
 * it. A cut inside the head is finished by the loop with the head its caller made. */
static void test_caller_and_loop_write_the_same_bytes(void **state)
{
    struct fixture *fx = *state;
    for (size_t i = 0; i < sizeof(ways) / sizeof(ways[0]); i++) {
        uint64_t parts = arpc_stat_get(&fx->c->cl_direct.cd_partial);
        arpc_future *f = start_call(fx, ways[i], ARPC_AT_LEAST_ONCE);
        uint8_t got[256], want[256];
        size_t n = read_request(fx->fd, got, sizeof(got));
        uint64_t xid = arpc_frame_xid(got);
        assert_int_equal(n, expected_frame(want, xid, 0, 0)); /* nothing numbered: ack 0 */
        assert_memory_equal(got, want, n);
        assert_int_equal((xid & CD_XID_BIT) != 0, ways[i].caller != 0);
        reply_ok(fx->fd, xid);
        expect_ok(f);
        if (ways[i].caller > 0) /* its caller wrote part of it, the loop the rest */
            assert_int_equal(arpc_stat_get(&fx->c->cl_direct.cd_partial), parts + 1);
    }
    atomic_store(&cut_loop, 0);
}

/* An at-most-once call whose connection breaks before its reply is sent again on the next one:
 * the same seq, the same xid (its seq with ARPC_XID_SEQ_BIT, whoever wrote it), the same bytes
 * but for the ack, and the reply to that xid completes it. Whichever way its first send went. */
static void test_resend_after_reconnect_same_seq_and_bytes(void **state)
{
    struct fixture *fx = *state;
    uint64_t last_seq = 0;
    for (size_t i = 0; i < sizeof(ways) / sizeof(ways[0]); i++) {
        arpc_future *f = start_call(fx, ways[i], ARPC_AT_MOST_ONCE);
        uint8_t first[256], again[256], want[256];
        size_t n = read_request(fx->fd, first, sizeof(first));
        uint64_t seq = field64(first, SEQ_AT), ack = field64(first, ACK_AT);
        assert_true(seq > last_seq); /* numbered, each call anew */
        last_seq = seq;
        assert_int_equal(ARPC_XID_SEQ_BIT | seq, arpc_frame_xid(first));
        assert_int_equal(n, expected_frame(want, arpc_frame_xid(first), seq, ack));
        assert_memory_equal(first, want, n);
        /* The connection breaks with the call unanswered; the client comes back. */
        uint64_t opened = (uint64_t)i + 2;
        close(fx->fd);
        fx->fd = fake_accept(fx->lfd);
        assert_true(client_stat_reaches(fx->c, offsetof(arpc_client_stats, connections_opened), opened, WAIT_MS));
        assert_int_equal(read_request(fx->fd, again, sizeof(again)), n);
        uint64_t xid = arpc_frame_xid(again);
        assert_int_equal(xid, arpc_frame_xid(first)); /* a numbered call keeps its xid */
        assert_int_equal(field64(again, SEQ_AT), seq);
        /* The ack is the client's latest (a caller's write may carry an older one). */
        uint64_t ack_again = field64(again, ACK_AT);
        assert_true(ack_again >= ack && ack_again < seq);
        assert_int_equal(n, expected_frame(want, xid, seq, ack_again));
        assert_memory_equal(again, want, n);
        reply_ok(fx->fd, xid);
        expect_ok(f);
    }
    atomic_store(&cut_loop, 0);
}

/* A call its caller wrote only part of, whose rest then finds no memory on the loop (the
 * output queue's first head room): the connection is closed, for the server would wait for
 * the frame's end for ever. The call never left whole, so it did not run: an ARPC_NO_RETRY
 * call, which is not sent again once sent, is sent again on the next connection and succeeds
 * (ended "may have run", its caller would be told something false it must act on). */
static void test_rest_without_memory_is_sent_again(void **state)
{
    struct fixture *fx = *state;
    wait_idle(fx->c);
    /* The rest's push is the queue's first head: its room (32 heads of 64 bytes) fails. */
    test_alloc_fail_next(2048, 2049);
    arpc_future *f = start_call(fx, (struct way){10, 0}, ARPC_NO_RETRY);
    /* The old connection got the call's first 10 bytes and no more, then its end. */
    uint8_t first[64];
    size_t n = 0;
    for (;;) {
        assert_true(wait_fd(fx->fd, POLLIN));
        ssize_t r = read(fx->fd, first + n, sizeof(first) - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    assert_int_equal(n, 10);
    assert_int_equal(test_alloc_sized_failed(), 1);
    /* Sent again, whole, on the next connection. */
    close(fx->fd);
    fx->fd = fake_accept(fx->lfd);
    if (!wait_fd(fx->fd, POLLIN))
        fail_msg("not sent again: the call ended %d", arpc_future_wait_for(f, 0));
    uint8_t got[256], want[256];
    size_t len = read_request(fx->fd, got, sizeof(got));
    uint64_t xid = arpc_frame_xid(got);
    assert_int_equal(len, expected_frame(want, xid, 0, 0));
    assert_memory_equal(got, want, len);
    assert_memory_equal(first, want, 8); /* the same frame's start (its xid may be a new one) */
    reply_ok(fx->fd, xid);
    expect_ok(f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_alloc_sized_install(); /* before any arpc call (arpc/alloc.h); plain malloc until armed */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_caller_and_loop_write_the_same_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resend_after_reconnect_same_seq_and_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rest_without_memory_is_sent_again, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
