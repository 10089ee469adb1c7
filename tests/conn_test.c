/*
 * The connection (core/conn.c) on one end of a socketpair, with the test as the peer on the
 * other end. The loop is caller-driven: never started, the test runs it on its own thread
 * (arpc_loop_run_until; a 0 timeout is one iteration that does not wait), so every step is
 * deterministic: what the test wrote is in the socket before the iteration that reads it.
 * Work on the conn goes through arpc_loop_run_sync, as the conn is loop-thread-only.
 *
 * Reading: frames written whole, byte by byte, many in one write; how much one turn reads of
 * frames and of a large body; a large frame read into a
 * buffer of its own (kept and reused; grows as bytes arrive beyond 2 MiB); a malformed header and
 * an oversized body (with and without on_bad_input); EOF; a close from inside on_frame.
 * Writing: one batch per loop iteration, the backlog limit against a peer that does not read,
 * close after flush, flush now, the control-frame encoders, ENOMEM on both paths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "arpc/log.h"
#include "async/loop_internal.h"
#include "base/alloc.h"
#include "core/conn.h"
#include "core/frame.h"
#include "transport/stream.h"
#include "support/test_util.h"

#define RBUF_INITIAL (64 * 1024) /* core/conn.c's CONN_RBUF_INITIAL */

/* ---- the fixture: a loop, a conn on fd[0], the peer's fd[1] ---- */

struct fx {
    arpc_loop *loop;
    arpc_future *never; /* never completes: run_until(never, 0) is one loop iteration */
    int fd[2];
    struct arpc_conn conn;
    /* What the callbacks saw (they run on this thread, inside the pump). */
    unsigned frames;          /* frames delivered; their xids must be 1, 2, 3, ... */
    uint32_t last_len;        /* payload length of the last frame */
    size_t max_rcap;          /* largest read buffer seen during on_frame */
    const uint8_t *last_big_payload; /* where the last frame read apart (core/conn_body.c) lay */
    int closes, close_reason, bad_inputs, bad_reason;
    char bad_why[160];        /* on_bad_input's words */
    bool in_frame;
    uint64_t close_at_xid;    /* on_frame of this xid closes with ARPC_ECANCELLED */
    bool goaway_on_bad_input; /* on_bad_input queues a GOAWAY */
    size_t reply_size;        /* on_frame queues this many stream bytes */
    uint64_t hold_at_xid[2];  /* on_frame of these xids holds input (ARPC_CONN_HOLD_PARKED) */
    size_t owe_each;          /* on_frame owes this many bytes (arpc_conn_owe) */
    uint64_t probe_at_xid;    /* on_frame of this xid notes what the peer can read so far */
    size_t peer_unread_at_probe;
    /* The stream of bytes the conn sends (pattern_byte) and what the peer checked of it. */
    size_t sent, checked;
};

/* Queues n bytes of the fixture's stream on the conn. Loop thread. */
static int send_stream(struct fx *fx, size_t n)
{
    uint8_t *buf = arpc_malloc(n);
    if (buf == NULL)
        return ARPC_ENOMEM;
    fill_pattern(buf, fx->sent, n);
    int rc = arpc_conn_send(&fx->conn, buf, buf, n);
    if (rc == ARPC_OK)
        fx->sent += n;
    return rc;
}

static void on_frame(struct arpc_conn *conn, const struct arpc_frame *f)
{
    struct fx *fx = conn->c_owner;
    CHECK(!fx->in_frame);
    CHECK(f->f_xid == fx->frames + 1);
    for (uint32_t j = 0; j < f->f_payload_len; j++)
        CHECK(f->f_payload[j] == pattern_byte(f->f_xid + j));
    fx->in_frame = true;
    fx->frames++;
    fx->last_len = f->f_payload_len;
    if (conn->c_rcap > fx->max_rcap)
        fx->max_rcap = conn->c_rcap;
    if (arpc_conn_body_offered(conn))
        fx->last_big_payload = f->f_payload;
    if (f->f_xid == fx->close_at_xid) {
        arpc_conn_close(conn, ARPC_ECANCELLED);
        arpc_conn_close(conn, ARPC_EPROTO); /* idempotent: the first reason stands */
        CHECK(fx->closes == 0);           /* not yet: after the dispatch */
    }
    if (fx->reply_size > 0)
        CHECK(send_stream(fx, fx->reply_size) == ARPC_OK);
    if (fx->owe_each > 0)
        arpc_conn_owe(conn, fx->owe_each);
    if (f->f_xid == fx->hold_at_xid[0] || f->f_xid == fx->hold_at_xid[1])
        arpc_conn_hold_input(conn, ARPC_CONN_HOLD_PARKED);
    if (f->f_xid == fx->probe_at_xid)
        fx->peer_unread_at_probe = fd_unread(fx->fd[1]);
    fx->in_frame = false;
}

static void on_close(struct arpc_conn *conn, int reason)
{
    struct fx *fx = conn->c_owner;
    CHECK(!fx->in_frame);
    CHECK(conn->c_fd == -1 && !conn->c_open);
    fx->closes++;
    fx->close_reason = reason;
}

static void on_bad_input(struct arpc_conn *conn, int reason, const char *why)
{
    struct fx *fx = conn->c_owner;
    fx->bad_inputs++;
    fx->bad_reason = reason;
    snprintf(fx->bad_why, sizeof(fx->bad_why), "%s", why);
    if (fx->goaway_on_bad_input)
        CHECK(arpc_conn_send_error(conn, ARPC_FRAME_GOAWAY, 0, reason, 0, "bye", 3) == ARPC_OK);
}

static const struct arpc_conn_ops ops_plain = {.on_frame = on_frame, .on_close = on_close};
static const struct arpc_conn_ops ops_bad_input = {
    .on_frame = on_frame, .on_close = on_close, .on_bad_input = on_bad_input};

struct init_arg {
    struct fx *fx;
    uint32_t max_body;
    const struct arpc_conn_ops *ops;
    int rc;
};

static void do_init(arpc_loop *loop, void *p)
{
    struct init_arg *a = p;
    a->rc = arpc_conn_init(&a->fx->conn, loop, a->fx->fd[0], a->max_body, a->ops, a->fx, "peer");
}

static int log_lines;
static void count_log(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    (void)line;
    log_lines++;
}

static void fx_init(struct fx *fx, uint32_t max_body, const struct arpc_conn_ops *ops)
{
    memset(fx, 0, sizeof(*fx));
    atomic_store(&bad_line, 0);
    log_lines = 0;
    assert_int_equal(ARPC_OK, arpc_loop_create(&fx->loop, NULL));
    assert_int_equal(ARPC_OK, arpc_future_create(&fx->never));
    assert_true(socketpair_nb(fx->fd));
    struct init_arg a = {fx, max_body, ops, -1};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx->loop, do_init, &a));
    assert_int_equal(ARPC_OK, a.rc);
}

static void do_close(arpc_loop *loop, void *p)
{
    (void)loop;
    struct fx *fx = p;
    arpc_conn_close(&fx->conn, ARPC_ESHUTDOWN);
}

static void fx_fini(struct fx *fx)
{
    arpc_loop_run_sync(fx->loop, do_close, fx); /* a no-op if it closed already */
    assert_int_equal(1, fx->closes);            /* exactly once, whatever closed it */
    arpc_loop_destroy(fx->loop);
    arpc_future_release(fx->never);
    if (fx->fd[1] >= 0)
        close(fx->fd[1]);
    assert_int_equal(0, atomic_load(&bad_line));
}

/* One loop iteration that does not wait. */
static void pump(struct fx *fx) { assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(fx->loop, fx->never, 0)); }

/* Runs the loop until pred holds. Everything the test waits for is caused by bytes already
 * in a socket or frames already queued, so iterations that do not wait always get there; a
 * bound turns a conn that never gets there into a failure instead of a hang. (Blocking
 * iterations would not do: a close decided in the flush, which runs in a prepare watcher
 * just before the poll, would leave the iteration asleep in the poll.) */
static bool pump_until(struct fx *fx, bool (*pred)(const struct fx *fx, size_t arg), size_t arg)
{
    for (int i = 0; i < 1000000; i++) {
        if (pred(fx, arg))
            return true;
        pump(fx);
    }
    return pred(fx, arg);
}

static bool frames_at_least(const struct fx *fx, size_t n) { return fx->frames >= n; }
static bool closed(const struct fx *fx, size_t n)
{
    (void)n;
    return fx->closes > 0;
}

/* Writes len bytes as the peer; while the socket is full, runs the loop (which reads). False
 * if the conn closed its end meanwhile. */
static bool peer_write(struct fx *fx, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fx->fd[1], p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pump(fx);
        } else if (!(n < 0 && errno == EINTR)) {
            return false;
        }
    }
    return true;
}

/* Reads up to max bytes the conn sent (what is there now) and checks them against the stream.
 * Returns the count; 0 also at EOF (see peer_eof). */
static size_t peer_read(struct fx *fx, size_t max) { return read_pattern(fx->fd[1], &fx->checked, max); }

static bool peer_eof(struct fx *fx)
{
    char c;
    return read(fx->fd[1], &c, 1) == 0;
}

/* ---- frames the peer sends: xid i carries payload bytes pattern_byte(i + j) ---- */

static size_t frame_size(uint8_t kind, uint32_t len)
{
    return kind == ARPC_FRAME_REQUEST ? arpc_frame_request_size(3, len) : ARPC_FRAME_HEADER_SIZE + len;
}

/* Encodes a REPLY or REQUEST frame at dst; returns its size. */
static size_t put_frame(uint8_t *dst, uint8_t kind, uint64_t xid, uint32_t len)
{
    uint8_t *payload = arpc_malloc(len);
    assert_non_null(payload);
    fill_pattern(payload, xid, len);
    size_t n;
    if (kind == ARPC_FRAME_REQUEST) {
        n = arpc_frame_encode_request(dst, kind, xid, xid, 0, 0, "m.x", 3, payload, len);
    } else {
        n = arpc_frame_encode_header(dst, kind, xid, len);
        memcpy(dst + n, payload, len);
        n += len;
    }
    arpc_free(payload);
    return n;
}

/* A heap buffer with frames xid first..first+count-1, payload lengths len_of(xid). */
static uint8_t *make_frames(uint64_t first, unsigned count, uint32_t (*len_of)(uint64_t xid), size_t *size)
{
    size_t total = 0;
    for (unsigned i = 0; i < count; i++)
        total += frame_size(i % 2 ? ARPC_FRAME_REQUEST : ARPC_FRAME_REPLY, len_of(first + i));
    uint8_t *buf = malloc(total ? total : 1);
    assert_non_null(buf);
    size_t off = 0;
    for (unsigned i = 0; i < count; i++)
        off += put_frame(buf + off, i % 2 ? ARPC_FRAME_REQUEST : ARPC_FRAME_REPLY, first + i, len_of(first + i));
    *size = total;
    return buf;
}

static uint32_t small_len(uint64_t xid) { return (uint32_t)((xid * 37) % 200); }

/* ---- reading ---- */

/* Frames each in their own write, then many in one write: all delivered, in order. */
static void test_whole_frames(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    for (uint64_t xid = 1; xid <= 20; xid++) {
        size_t size;
        uint8_t *buf = make_frames(xid, 1, small_len, &size);
        assert_true(peer_write(&fx, buf, size));
        free(buf);
        pump(&fx); /* the frame is in the socket: one iteration delivers it */
        assert_int_equal(xid, fx.frames);
        assert_int_equal(small_len(xid), fx.last_len);
    }
    size_t size;
    uint8_t *buf = make_frames(21, 3000, small_len, &size); /* ~330 KiB: more than one read */
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 3020));
    assert_int_equal(3020, fx.frames);
    assert_int_equal(0, fx.closes);
    fx_fini(&fx);
}

/* Byte by byte: a frame is delivered exactly at its last byte, not before. */
static uint32_t byte_len(uint64_t xid) { return xid == 1 ? 0 : xid == 2 ? 1 : (uint32_t)(xid * 11); }

static void test_byte_by_byte(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    enum { N = 6 };
    size_t size;
    uint8_t *buf = make_frames(1, N, byte_len, &size);
    size_t end[N], off = 0;
    for (unsigned i = 0; i < N; i++) {
        off += frame_size(i % 2 ? ARPC_FRAME_REQUEST : ARPC_FRAME_REPLY, byte_len(i + 1));
        end[i] = off;
    }
    unsigned want = 0;
    for (size_t k = 0; k < size; k++) {
        assert_true(peer_write(&fx, buf + k, 1));
        pump(&fx);
        if (want < N && k + 1 == end[want])
            want++;
        assert_int_equal(want, fx.frames);
    }
    assert_int_equal(N, fx.frames);
    free(buf);
    assert_int_equal(0, fx.closes);
    fx_fini(&fx);
}

/* One readiness reads up to four read buffers of frames (a pipelined window of 4 KiB calls is
 * handed up in one turn), but 64 KiB in all once it meets a large body (so 20 peers streaming
 * 16 MiB bodies cannot make one turn of the loop long): core/conn.c's two read budgets. */
static uint32_t len_4k(uint64_t xid)
{
    (void)xid;
    return 4096;
}

static void test_read_budget_per_turn(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    int sndbuf = 1 << 20;
    assert_int_equal(0, setsockopt(fx.fd[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)));
    size_t size;
    uint8_t *buf = make_frames(1, 40, len_4k, &size); /* ~160 KiB: more than one buffer, within the budget */
    assert_int_equal((ssize_t)size, send(fx.fd[1], buf, size, MSG_NOSIGNAL));
    free(buf);
    assert_true(fd_unread(fx.fd[0]) > RBUF_INITIAL);
    pump(&fx); /* one turn */
    assert_int_equal(40, fx.frames);
    assert_int_equal(0, fd_unread(fx.fd[0]));
    enum { BODY = 1024 * 1024 };
    buf = calloc(1, ARPC_FRAME_HEADER_SIZE + BODY);
    assert_non_null(buf);
    size_t hdr = arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 41, BODY);
    fill_pattern(buf + hdr, 41, BODY);
    size_t first = 256 * 1024;
    assert_int_equal((ssize_t)first, send(fx.fd[1], buf, first, MSG_NOSIGNAL));
    pump(&fx); /* one turn: 64 KiB in all once a large body is met, header included */
    assert_non_null(fx.conn.c_body);
    assert_true(fx.conn.c_body_have <= 64 * 1024);
    assert_true(fd_unread(fx.fd[0]) > 0);
    assert_true(peer_write(&fx, buf + first, ARPC_FRAME_HEADER_SIZE + BODY - first));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 41));
    assert_int_equal(BODY, fx.last_len);
    assert_int_equal(0, fx.closes);
    fx_fini(&fx);
}

/* A 3 MiB frame is read into a buffer of its own (the read buffer stays at 64 KiB), its
 * content intact; a small frame after it is read normally. The body's buffer is kept by the
 * connection and the next large frame lands in the same one. */
static uint32_t big_len(uint64_t xid) { return xid % 2 == 1 ? 3u * 1024 * 1024 : 10; }

static void test_large_frame_read_apart(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    assert_int_equal(0, fx.conn.c_rcap); /* the read buffer comes with the first read */
    size_t size;
    uint8_t *buf = make_frames(1, 2, big_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 2));
    assert_int_equal(10, fx.last_len);
    assert_int_equal(RBUF_INITIAL, fx.max_rcap);
    const uint8_t *first_body = fx.last_big_payload;
    assert_non_null(first_body);
    assert_int_equal(1, arpc_buf_cache_held(&fx.conn.c_bufs));
    buf = make_frames(3, 2, big_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 4));
    assert_ptr_equal(first_body, fx.last_big_payload); /* reused, not allocated again */
    assert_int_equal(RBUF_INITIAL, fx.max_rcap);
    fx_fini(&fx);
}

/* A header announcing a 15 MiB body does not make the conn hold 15 MiB: the body's buffer
 * starts at ARPC_CONN_BODY_EAGER_MAX and grows only as the bytes arrive (at most about four
 * times what has arrived); the read buffer does not grow at all. */
static void test_buffer_grows_with_bytes_not_header(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    enum { BODY = 15 * 1024 * 1024 };
    uint8_t *buf = calloc(1, ARPC_FRAME_HEADER_SIZE + BODY);
    assert_non_null(buf);
    size_t hdr = arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 1, BODY);
    fill_pattern(buf + hdr, 1, BODY);
    assert_true(peer_write(&fx, buf, hdr));
    pump(&fx);
    assert_int_equal(RBUF_INITIAL, fx.conn.c_rcap);
    size_t sent = hdr;
    static const size_t steps[] = {1000, 100000, 400000, 1500000, 4000000};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        assert_true(peer_write(&fx, buf + sent, steps[i] - sent));
        sent = steps[i];
        for (int k = 0; k < 100000 && fd_unread(fx.fd[0]) > 0; k++)
            pump(&fx);
        assert_int_equal(0, fd_unread(fx.fd[0]));
        assert_int_equal(RBUF_INITIAL, fx.conn.c_rcap);
        assert_true(fx.conn.c_body_cap <= (sent * 4 > ARPC_CONN_BODY_EAGER_MAX ? sent * 4 : ARPC_CONN_BODY_EAGER_MAX));
    }
    assert_int_equal(0, fx.frames);
    assert_true(peer_write(&fx, buf + sent, ARPC_FRAME_HEADER_SIZE + BODY - sent));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 1));
    assert_int_equal(BODY, fx.last_len);
    assert_int_equal(RBUF_INITIAL, fx.conn.c_rcap);
    assert_int_equal(0, arpc_buf_cache_held(&fx.conn.c_bufs)); /* 15 MiB: beyond the cache's bound */
    fx_fini(&fx);
}

/* A large body still arriving counts as a frame partly read (the owner's frame timeout sees
 * a peer dribbling it), from its header on; once delivered, nothing is partly read. */
static void test_large_body_in_progress_has_an_age(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    enum { BODY = 1024 * 1024 };
    uint8_t *buf = calloc(1, ARPC_FRAME_HEADER_SIZE + BODY);
    assert_non_null(buf);
    size_t hdr = arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 1, BODY);
    fill_pattern(buf + hdr, 1, BODY);
    size_t sent = hdr + 1000;
    assert_true(peer_write(&fx, buf, sent));
    for (int k = 0; k < 100000 && fd_unread(fx.fd[0]) > 0; k++)
        pump(&fx);
    assert_non_null(fx.conn.c_body); /* read apart */
    assert_true(fx.conn.c_frame_since > 0);
    assert_true(arpc_conn_frame_age(&fx.conn, fx.conn.c_frame_since + 5.0) >= 5.0);
    assert_true(peer_write(&fx, buf + sent, ARPC_FRAME_HEADER_SIZE + BODY - sent));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 1));
    assert_int_equal(BODY, fx.last_len);
    assert_null(fx.conn.c_body);
    assert_true(arpc_conn_frame_age(&fx.conn, fx.conn.c_last_rx + 5.0) == 0);
    fx_fini(&fx);
}

/* A good frame, then a bad magic in the same write: the good one is delivered, then
 * on_bad_input(EPROTO) once, the GOAWAY it queued is written, and the conn closes with
 * EPROTO. Frames after the bad bytes are not delivered. */
static void test_malformed_header_with_bad_input_hook(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_bad_input);
    fx.goaway_on_bad_input = true;
    uint8_t buf[256];
    size_t n = put_frame(buf, ARPC_FRAME_REPLY, 1, 5);
    size_t bad = n;
    n += put_frame(buf + n, ARPC_FRAME_REPLY, 2, 5);
    buf[bad] = 'X'; /* magic */
    n += put_frame(buf + n, ARPC_FRAME_REPLY, 3, 5);
    assert_true(peer_write(&fx, buf, n));
    assert_true(pump_until(&fx, closed, 0));
    assert_int_equal(1, fx.frames);
    assert_int_equal(1, fx.bad_inputs);
    assert_int_equal(ARPC_EPROTO, fx.bad_reason);
    assert_string_equal("not an arpc frame (not arpc's magic)", fx.bad_why);
    assert_int_equal(ARPC_EPROTO, fx.close_reason);
    /* The peer gets the GOAWAY, then EOF. */
    uint8_t in[256];
    ssize_t got = read(fx.fd[1], in, sizeof(in));
    struct arpc_frame f;
    size_t used;
    assert_true(got > 0);
    assert_int_equal(ARPC_OK, arpc_frame_decode(in, (size_t)got, 1024, &f, &used, NULL));
    assert_int_equal(ARPC_FRAME_GOAWAY, f.f_kind);
    assert_int_equal(ARPC_EPROTO, f.f_code);
    assert_int_equal(3, f.f_msg_len);
    assert_int_equal(used, (size_t)got);
    assert_true(peer_eof(&fx));
    assert_true(log_lines >= 1); /* the close was logged */
    fx_fini(&fx);
}

/* Without on_bad_input: on_close(EPROTO) at the first wrong byte (a bad version, here with
 * only three bytes of the header sent). */
static void test_malformed_header_without_hook(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    uint8_t buf[64];
    put_frame(buf, ARPC_FRAME_REPLY, 1, 5);
    buf[2] = ARPC_PROTO_VERSION + 1;
    assert_true(peer_write(&fx, buf, 3));
    assert_true(pump_until(&fx, closed, 0));
    assert_int_equal(ARPC_EPROTO, fx.close_reason);
    assert_int_equal(0, fx.frames);
    assert_true(peer_eof(&fx));
    fx_fini(&fx);
}

/* A body over max_body is refused from the header alone (the body never comes), with and
 * without the hook; one byte under the limit is fine. */
static void test_oversized_body(void **state)
{
    (void)state;
    for (int hook = 0; hook < 2; hook++) {
        struct fx fx;
        fx_init(&fx, 1024, hook ? &ops_bad_input : &ops_plain);
        uint8_t buf[2048];
        size_t n = put_frame(buf, ARPC_FRAME_REPLY, 1, 1024); /* at the limit: fine */
        n += arpc_frame_encode_header(buf + n, ARPC_FRAME_REPLY, 2, 1025);
        assert_true(peer_write(&fx, buf, n));
        assert_true(pump_until(&fx, closed, 0));
        assert_int_equal(1, fx.frames);
        assert_int_equal(ARPC_ETOOLARGE, fx.close_reason);
        assert_int_equal(hook, fx.bad_inputs);
        if (hook) {
            assert_int_equal(ARPC_ETOOLARGE, fx.bad_reason);
            assert_string_equal("frame larger than this side accepts (1024 bytes)", fx.bad_why);
        }
        fx_fini(&fx);
    }
}

/* The peer closes (after a whole frame and half of another): ECONNLOST, once; the half frame
 * is not delivered. */
static void test_eof(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    uint8_t buf[256];
    size_t n = put_frame(buf, ARPC_FRAME_REPLY, 1, 7);
    size_t m = put_frame(buf + n, ARPC_FRAME_REPLY, 2, 50);
    assert_true(peer_write(&fx, buf, n + m / 2));
    close(fx.fd[1]);
    fx.fd[1] = -1;
    assert_true(pump_until(&fx, closed, 0));
    assert_int_equal(1, fx.frames);
    assert_int_equal(ARPC_ECONNLOST, fx.close_reason);
    for (int i = 0; i < 5; i++)
        pump(&fx);
    assert_int_equal(1, fx.closes);
    fx_fini(&fx);
}

static void do_send_small(arpc_loop *loop, void *p)
{
    (void)loop;
    struct fx *fx = p;
    CHECK(send_stream(fx, 64) == ARPC_OK);
    arpc_conn_flush_now(&fx->conn); /* as a client's HELLO leaves: before the loop's next poll */
}

/* The peer says its last words and closes before anything was read, and the first write
 * fails (EPIPE: this is a unix socket): those words are read before the close, so the owner
 * learns why (a server refusing a connection says so in a GOAWAY in place of its HELLO; the
 * client took the bare close for a peer that is no arpc server). */
static void test_last_words_read_when_the_first_write_finds_the_peer_gone(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    uint8_t buf[64];
    assert_true(peer_write(&fx, buf, put_frame(buf, ARPC_FRAME_REPLY, 1, 7)));
    close(fx.fd[1]);
    fx.fd[1] = -1;
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_send_small, &fx));
    assert_true(pump_until(&fx, closed, 0));
    assert_int_equal(1, fx.frames);
    assert_int_equal(ARPC_ECONNLOST, fx.close_reason);
    fx_fini(&fx);
}

/* on_frame closes: the close waits until the dispatch ends (on_close is not called inside
 * on_frame), frames behind it in the buffer are not delivered, on_close runs once with the
 * first reason given. */
static void test_close_inside_on_frame(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    fx.close_at_xid = 3;
    size_t size;
    uint8_t *buf = make_frames(1, 10, small_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_true(pump_until(&fx, closed, 0));
    assert_int_equal(3, fx.frames);
    assert_int_equal(ARPC_ECANCELLED, fx.close_reason);
    pump(&fx);
    assert_int_equal(1, fx.closes);
    fx_fini(&fx);
}

/* ---- writing ---- */

struct send_arg {
    struct fx *fx;
    unsigned count;
    size_t each;
    bool flush_now, close_after;
    int rc;
};

static void do_send(arpc_loop *loop, void *p)
{
    (void)loop;
    struct send_arg *a = p;
    a->rc = ARPC_OK;
    for (unsigned i = 0; i < a->count && a->rc == ARPC_OK; i++)
        a->rc = send_stream(a->fx, a->each);
    if (a->flush_now)
        arpc_conn_flush_now(&a->fx->conn);
    if (a->close_after)
        arpc_conn_close_after_flush(&a->fx->conn, ARPC_ESHUTDOWN);
}

/* Frames queued in one loop iteration leave together, just before the loop next sleeps:
 * nothing is written while the job queues them, everything after one more iteration. */
static void test_one_batch_per_iteration(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    struct send_arg a = {.fx = &fx, .count = 100, .each = 37};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_send, &a));
    assert_int_equal(ARPC_OK, a.rc);
    assert_int_equal(100, fx.conn.c_out.q_count);
    assert_int_equal(0, fd_unread(fx.fd[1]));
    pump(&fx);
    assert_int_equal(100 * 37, fd_unread(fx.fd[1])); /* all of it, at once */
    assert_true(arpc_outq_empty(&fx.conn.c_out));
    assert_int_equal(100 * 37, peer_read(&fx, SIZE_MAX));
    fx_fini(&fx);
}

/* flush_now writes at once, inside the job. */
static void test_flush_now(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    struct send_arg a = {.fx = &fx, .count = 3, .each = 100, .flush_now = true};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_send, &a));
    assert_int_equal(300, fd_unread(fx.fd[1]));
    assert_true(arpc_outq_empty(&fx.conn.c_out));
    assert_int_equal(300, peer_read(&fx, SIZE_MAX));
    fx_fini(&fx);
}

/* A pipelined batch read in one turn, each frame answered at once (an inline handler): once
 * ARPC_CONN_BATCH_FRAMES answers are queued they leave inside the parse, so the peer works on
 * them while the rest is parsed; a batch below that leaves whole at the end of the turn. */
static uint32_t tiny_len(uint64_t xid) { return (uint32_t)(xid % 8); }

static void test_large_batch_leaves_early(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    fx.reply_size = 16;
    enum { BELOW = ARPC_CONN_BATCH_FRAMES - 1, ABOVE = 2 * ARPC_CONN_BATCH_FRAMES + 10 };
    size_t size;
    uint8_t *buf = make_frames(1, BELOW, tiny_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    fx.probe_at_xid = BELOW;
    pump(&fx);
    assert_int_equal(BELOW, fx.frames);
    assert_int_equal(0, fx.peer_unread_at_probe); /* nothing left during the parse */
    assert_int_equal(0, fd_unread(fx.fd[1]));
    pump(&fx); /* the next iteration's prepare watcher: all of it, in one write */
    assert_int_equal(BELOW * 16, fd_unread(fx.fd[1]));
    assert_int_equal(BELOW * 16, peer_read(&fx, SIZE_MAX));
    buf = make_frames(BELOW + 1, ABOVE, tiny_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    fx.probe_at_xid = BELOW + ABOVE;
    pump(&fx);
    assert_int_equal(BELOW + ABOVE, fx.frames);
    /* Two full batches left before the last frame was handed up; the rest at the prepare. */
    assert_int_equal(2 * ARPC_CONN_BATCH_FRAMES * 16, fx.peer_unread_at_probe);
    assert_int_equal(2 * ARPC_CONN_BATCH_FRAMES * 16, fd_unread(fx.fd[1]));
    pump(&fx);
    assert_int_equal(ABOVE * 16, fd_unread(fx.fd[1]));
    assert_int_equal(ABOVE * 16, peer_read(&fx, SIZE_MAX));
    assert_int_equal(0, fx.closes);
    fx_fini(&fx);
}

/* A pipelined window of 256 small calls, read in one turn and answered inline, leaves in four
 * parts of 64 answers, the first before the 65th request is handed up: the peer starts on the
 * window's first quarter while this loop answers the rest (with parts of 128 the window was two
 * halves, and each loop slept while the other worked on its half). */
static void test_window_of_256_leaves_in_four_parts(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    fx.reply_size = 16;
    size_t size;
    uint8_t *buf = make_frames(1, 256, tiny_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    fx.probe_at_xid = 65;
    pump(&fx);
    assert_int_equal(256, fx.frames);
    assert_int_equal(64 * 16, fx.peer_unread_at_probe);
    assert_int_equal(256 * 16, fd_unread(fx.fd[1])); /* the last part left inside the parse too */
    assert_true(arpc_outq_empty(&fx.conn.c_out));
    assert_int_equal(256 * 16, peer_read(&fx, SIZE_MAX));
    assert_int_equal(0, fx.closes);
    fx_fini(&fx);
}

/* The early write fails (the peer stopped reading for good): the connection closes once, after
 * the parse (on_close never runs inside on_frame), and the frames read after that write still
 * go up first, as they did when the write waited for the prepare watcher (a client's goodbye
 * behind its calls must be heard: early_write_goodbye_test). */
static void test_early_write_failure_closes_after_the_parse(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    fx.reply_size = 16;
    size_t size;
    uint8_t *buf = make_frames(1, 2 * ARPC_CONN_BATCH_FRAMES, tiny_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_int_equal(0, shutdown(fx.fd[1], SHUT_RD)); /* the conn's writes fail with EPIPE */
    assert_true(pump_until(&fx, closed, 0));
    assert_int_equal(2 * ARPC_CONN_BATCH_FRAMES, fx.frames);
    assert_int_equal(1, fx.closes);
    assert_int_equal(ARPC_ECONNLOST, fx.close_reason);
    fx_fini(&fx);
}

/* Outside a parse (the server's loop between worker replies it drains), a close the early
 * write decides is carried out by the prepare watcher, not under its caller. */
static void do_send_and_flush_batch(arpc_loop *loop, void *p)
{
    (void)loop;
    struct send_arg *a = p;
    a->rc = ARPC_OK;
    for (unsigned i = 0; i < a->count && a->rc == ARPC_OK; i++)
        a->rc = send_stream(a->fx, a->each);
    arpc_conn_flush_batch(&a->fx->conn);
    CHECK(a->fx->closes == 0); /* the caller may still use the connection */
}

static void test_early_write_failure_outside_a_parse(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    assert_int_equal(0, shutdown(fx.fd[1], SHUT_RD));
    struct send_arg a = {.fx = &fx, .count = ARPC_CONN_BATCH_FRAMES, .each = 16};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_send_and_flush_batch, &a));
    assert_int_equal(ARPC_OK, a.rc);
    assert_int_equal(0, fx.closes); /* the prepare watcher closes it */
    assert_true(pump_until(&fx, closed, 0));
    assert_int_equal(1, fx.closes);
    assert_int_equal(ARPC_ECONNLOST, fx.close_reason);
    fx_fini(&fx);
}

static void do_limit_backlog(arpc_loop *loop, void *p)
{
    (void)loop;
    arpc_conn_limit_backlog(&((struct fx *)p)->conn);
}

/* A peer that sends requests and does not read the replies: input is held once more than
 * ARPC_CONN_BACKLOG_HIGH bytes wait (not even the rest of the batch already read goes up),
 * frames sent meanwhile stay in the socket, and input is let go only once the backlog is
 * under ARPC_CONN_BACKLOG_LOW: the buffered frames go up first, then the socket is read. */
static void test_backlog_limit(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_limit_backlog, &fx));
    fx.reply_size = 1024 * 1024;
    const unsigned over = ARPC_CONN_BACKLOG_HIGH / (1024 * 1024) + 1; /* the frame that passes the mark */
    const unsigned first = over + 3;
    size_t size;
    uint8_t *buf = make_frames(1, first, small_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, over));
    pump(&fx); /* the batch is flushed: the socket takes a little */
    assert_true(fx.conn.c_hold & ARPC_CONN_HOLD_BACKLOG);
    assert_true(fx.conn.c_out.q_bytes > ARPC_CONN_BACKLOG_LOW);
    /* Read in one batch (small frames written at once), but held at the one over the mark. */
    assert_int_equal(over, fx.frames);

    /* More requests: not read while held (a few iterations, waiting a little, show it). */
    buf = make_frames(first + 1, 5, small_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(fx.loop, fx.never, 30));
    assert_int_equal(over, fx.frames);
    assert_int_equal(size, fd_unread(fx.fd[0]));

    /* The peer reads a chunk at a time; input is let go below the low mark, not before. */
    bool resumed = false;
    for (int i = 0; i < 100000 && (fx.frames < first + 5 || fx.checked < fx.sent); i++) {
        bool was_held = fx.conn.c_hold & ARPC_CONN_HOLD_BACKLOG;
        unsigned frames_before = fx.frames;
        peer_read(&fx, 128 * 1024);
        size_t unread_before = fd_unread(fx.fd[0]);
        pump(&fx);
        if (fx.conn.c_hold & ARPC_CONN_HOLD_BACKLOG)
            assert_true(fx.conn.c_out.q_bytes >= ARPC_CONN_BACKLOG_LOW);
        if (!resumed)
            assert_int_equal(size, unread_before); /* the socket is not read before the first let-go */
        if (was_held && fx.frames > frames_before)
            resumed = true;
    }
    assert_true(resumed);
    assert_int_equal(first + 5, fx.frames);
    assert_int_equal(fx.sent, fx.checked);
    assert_int_equal((first + 5) * fx.reply_size, fx.sent);
    assert_int_equal(0, fx.closes);
    fx_fini(&fx);
}

static void do_resume(arpc_loop *loop, void *p)
{
    (void)loop;
    arpc_conn_release_input(&((struct fx *)p)->conn, ARPC_CONN_HOLD_PARKED);
}

/* An owner holding input: no frame after the holding one is handed up, even from the same
 * read, and the socket is not read; resume hands up the buffered frames at once, in order (one
 * of them may hold again), then reads again. */
static void test_pause_input(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    fx.hold_at_xid[0] = 3;
    fx.hold_at_xid[1] = 7;
    size_t size;
    uint8_t *buf = make_frames(1, 10, small_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 3));
    buf = make_frames(11, 5, small_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(fx.loop, fx.never, 30));
    assert_int_equal(3, fx.frames);               /* frames 4..10 wait in the buffer */
    assert_int_equal(size, fd_unread(fx.fd[0])); /* 11..15 in the socket */
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_resume, &fx));
    assert_int_equal(7, fx.frames); /* handed up by the resume itself, up to the next hold */
    assert_int_equal(size, fd_unread(fx.fd[0]));
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_resume, &fx));
    assert_int_equal(10, fx.frames);
    assert_true(pump_until(&fx, frames_at_least, 15));
    assert_int_equal(15, fx.frames);
    assert_int_equal(0, fx.closes);
    fx_fini(&fx);
}

/* A job changing the conn's holds or bytes on its loop. */
struct hold_arg {
    struct fx *fx;
    unsigned hold, release; /* reasons */
    size_t max_bytes, paid;
};

static void do_hold(arpc_loop *loop, void *p)
{
    (void)loop;
    struct hold_arg *a = p;
    if (a->max_bytes)
        arpc_conn_limit_bytes(&a->fx->conn, a->max_bytes);
    if (a->hold)
        arpc_conn_hold_input(&a->fx->conn, a->hold);
    if (a->release)
        arpc_conn_release_input(&a->fx->conn, a->release);
    if (a->paid)
        arpc_conn_paid(&a->fx->conn, a->paid);
}

/* Reasons are independent: input held for two resumes only once both let go, and letting go
 * of a reason not held (or twice) changes nothing. */
static void test_hold_reasons_independent(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    fx.hold_at_xid[0] = 3;
    size_t size;
    uint8_t *buf = make_frames(1, 10, small_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 3));
    struct hold_arg calls = {.fx = &fx, .hold = ARPC_CONN_HOLD_CALLS};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_hold, &calls));
    struct hold_arg parked = {.fx = &fx, .release = ARPC_CONN_HOLD_PARKED};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_hold, &parked));
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_hold, &parked)); /* not held for it: nothing */
    struct hold_arg other = {.fx = &fx, .release = ARPC_CONN_HOLD_BYTES};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_hold, &other));
    assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(fx.loop, fx.never, 30));
    assert_int_equal(3, fx.frames); /* still held, for CALLS */
    assert_int_equal(ARPC_CONN_HOLD_CALLS, fx.conn.c_hold);
    struct hold_arg go = {.fx = &fx, .release = ARPC_CONN_HOLD_CALLS};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_hold, &go));
    assert_int_equal(10, fx.frames); /* handed up by the release itself */
    assert_int_equal(0, fx.conn.c_hold);
    assert_int_equal(0, fx.closes);
    fx_fini(&fx);
}

/* The bytes bound: owing past it holds input at that frame; paying back to 3/4 of it lets
 * go (the buffered frames go up first). Nothing owed or queued: never held for the read
 * buffer alone. */
static void test_bytes_bound(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    const size_t max = 1 << 20;
    struct hold_arg limit = {.fx = &fx, .max_bytes = max};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_hold, &limit));
    fx.owe_each = max / 8;
    size_t size;
    uint8_t *buf = make_frames(1, 20, small_len, &size);
    assert_true(peer_write(&fx, buf, size));
    free(buf);
    assert_true(pump_until(&fx, frames_at_least, 1));
    assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(fx.loop, fx.never, 30));
    /* The read buffer (64 KiB) plus 8 x max/8 passes max at the 8th frame. */
    assert_int_equal(8, fx.frames);
    assert_true(fx.conn.c_hold & ARPC_CONN_HOLD_BYTES);
    assert_true(arpc_conn_bytes(&fx.conn) > max);
    fx.owe_each = 0;
    struct hold_arg some = {.fx = &fx, .paid = max / 8};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_hold, &some));
    assert_int_equal(8, fx.frames); /* 7/8 of max (and the buffer) is over 3/4 */
    struct hold_arg more = {.fx = &fx, .paid = max / 4};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_hold, &more));
    assert_int_equal(20, fx.frames);
    assert_int_equal(0, fx.conn.c_hold);
    fx_fini(&fx);
}

/* Queues 64 frames of 16 KiB in one loop turn, the peer reading none: the hard cap on queued
 * output (ARPC_CONN_OUTPUT_HARD_FACTOR x the bound) is checked at each frame. */
struct capped_burst {
    struct fx *fx;
    unsigned ok, refused, other;
    size_t max_queued;
};

static void do_capped_burst(arpc_loop *loop, void *p)
{
    (void)loop;
    struct capped_burst *b = p;
    arpc_conn_limit_bytes(&b->fx->conn, 64 * 1024);
    for (int i = 0; i < 64; i++) {
        int rc = send_stream(b->fx, 16 * 1024);
        if (rc == ARPC_OK)
            b->ok++;
        else if (rc == ARPC_EOVERLOADED)
            b->refused++;
        else
            b->other++;
        if (b->fx->conn.c_out.q_bytes > b->max_queued)
            b->max_queued = b->fx->conn.c_out.q_bytes;
    }
}

/* The hard cap holds within one turn: once the queue is over 4 x 64 KiB, every frame more is
 * refused (ARPC_EOVERLOADED) and the connection closes at the turn's end with that reason, the
 * peer having what the kernel took of the frames queued, whole and in order. Checked only at
 * the turn's end, all 64 frames (1 MiB) were queued first. */
static void test_output_hard_cap_holds_within_a_turn(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    struct capped_burst b = {.fx = &fx};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_capped_burst, &b));
    /* 16 frames make exactly 4 x 64 KiB, not over; the 17th passes it; the rest are refused. */
    assert_int_equal(17, b.ok);
    assert_int_equal(64 - 17, b.refused);
    assert_int_equal(0, b.other);
    assert_int_equal(17 * 16 * 1024, b.max_queued);
    assert_true(pump_until(&fx, closed, 0));
    assert_int_equal(ARPC_EOVERLOADED, fx.close_reason);
    assert_int_equal(1, log_lines); /* the close, named */
    while (peer_read(&fx, 1 << 20) > 0)
        ;
    assert_true(fx.checked <= fx.sent);
    fx_fini(&fx);
}

/* close_after_flush: no close while frames wait, nothing more is read, every queued byte
 * reaches the peer, then the conn closes (the peer sees EOF) with the reason given. With an
 * empty queue it closes at once. */
static void test_close_after_flush(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    struct send_arg a = {.fx = &fx, .count = 4, .each = 300000, .close_after = true};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_send, &a));
    assert_int_equal(ARPC_OK, a.rc);
    assert_int_equal(0, fx.closes);
    uint8_t frame[64];
    assert_true(peer_write(&fx, frame, put_frame(frame, ARPC_FRAME_PING, 1, 5)));
    for (int i = 0; i < 100000 && fx.closes == 0; i++) {
        pump(&fx);
        peer_read(&fx, SIZE_MAX);
    }
    assert_int_equal(1, fx.closes);
    assert_int_equal(ARPC_ESHUTDOWN, fx.close_reason);
    peer_read(&fx, SIZE_MAX);
    assert_int_equal(fx.sent, fx.checked);
    assert_true(peer_eof(&fx));
    assert_int_equal(0, fx.frames);
    fx_fini(&fx);

    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    struct send_arg empty = {.fx = &fx, .close_after = true};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_send, &empty));
    assert_int_equal(1, fx.closes);
    assert_int_equal(ARPC_ESHUTDOWN, fx.close_reason);
    fx_fini(&fx);
}

/* The control frames decode as what was asked for. */
static void do_control(arpc_loop *loop, void *p)
{
    (void)loop;
    struct fx *fx = p;
    CHECK(arpc_conn_send_hello(&fx->conn, 0x1122334455667788ull, 0, 4096, 0) == ARPC_OK);
    uint8_t ping[64];
    size_t n = put_frame(ping, ARPC_FRAME_PING, 9, 6);
    struct arpc_frame f;
    size_t used;
    CHECK(arpc_frame_decode(ping, n, 1024, &f, &used, NULL) == ARPC_OK);
    CHECK(arpc_conn_answer_ping(&fx->conn, &f) == ARPC_OK);
    CHECK(arpc_conn_send_error(&fx->conn, ARPC_FRAME_ERROR, 77, ARPC_EHANDLER, 0, "oops", 4) == ARPC_OK);
}

static void test_control_frames(void **state)
{
    (void)state;
    struct fx fx;
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_control, &fx));
    pump(&fx);
    uint8_t in[512];
    ssize_t got = read(fx.fd[1], in, sizeof(in));
    assert_true(got > 0);
    size_t off = 0, used;
    struct arpc_frame f;
    assert_int_equal(ARPC_OK, arpc_frame_decode(in, (size_t)got, 1024, &f, &used, NULL));
    assert_int_equal(ARPC_FRAME_HELLO, f.f_kind);
    assert_int_equal(0x1122334455667788ull, f.f_client_id);
    assert_int_equal(4096, f.f_max_frame);
    off += used;
    assert_int_equal(ARPC_OK, arpc_frame_decode(in + off, (size_t)got - off, 1024, &f, &used, NULL));
    assert_int_equal(ARPC_FRAME_PONG, f.f_kind);
    assert_int_equal(9, f.f_xid);
    assert_int_equal(6, f.f_payload_len);
    for (uint32_t j = 0; j < 6; j++)
        assert_int_equal(pattern_byte(9 + j), f.f_payload[j]);
    off += used;
    assert_int_equal(ARPC_OK, arpc_frame_decode(in + off, (size_t)got - off, 1024, &f, &used, NULL));
    assert_int_equal(ARPC_FRAME_ERROR, f.f_kind);
    assert_int_equal(77, f.f_xid);
    assert_int_equal(ARPC_EHANDLER, f.f_code);
    assert_memory_equal("oops", f.f_msg, 4);
    off += used;
    assert_int_equal((size_t)got, off);
    fx_fini(&fx);
}

/* ---- out of memory, and sends after close ---- */

struct enomem_arg {
    struct fx *fx;
    int queue_rc, closed_rc;
};

static void do_send_enomem(arpc_loop *loop, void *p)
{
    (void)loop;
    struct enomem_arg *a = p;
    uint8_t *buf = arpc_malloc(10);
    atomic_store(&test_alloc_budget, 0); /* the queue's first ring */
    a->queue_rc = arpc_conn_send(&a->fx->conn, buf, buf, 10); /* frees buf */
    atomic_store(&test_alloc_budget, -1);
    arpc_conn_close(&a->fx->conn, ARPC_ESHUTDOWN);
    buf = arpc_malloc(10);
    a->closed_rc = arpc_conn_send(&a->fx->conn, buf, buf, 10); /* frees buf */
}

static void do_init_without_memory(arpc_loop *loop, void *p)
{
    atomic_store(&test_alloc_budget, 0);
    do_init(loop, p);
    atomic_store(&test_alloc_budget, -1);
}

static void test_enomem_and_closed_sends(void **state)
{
    (void)state;
    /* Init allocates nothing: the read buffer comes with the first read, and without memory
     * for it there the conn closes with ENOMEM. */
    struct fx fx;
    memset(&fx, 0, sizeof(fx));
    assert_int_equal(ARPC_OK, arpc_loop_create(&fx.loop, NULL));
    assert_int_equal(ARPC_OK, arpc_future_create(&fx.never));
    assert_true(socketpair_nb(fx.fd));
    struct init_arg ia = {&fx, 1024, &ops_plain, -1};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_init_without_memory, &ia));
    assert_int_equal(ARPC_OK, ia.rc);
    atomic_store(&test_alloc_budget, 0);
    assert_true(peer_write(&fx, "x", 1));
    for (int i = 0; i < 1000 && fx.closes == 0; i++)
        pump(&fx);
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(1, fx.closes);
    assert_int_equal(ARPC_ENOMEM, fx.close_reason);
    assert_true(fd_wait_eof(fx.fd[1], 10000)); /* (a reset: the byte was never read) */
    fx_fini(&fx);

    /* A send the queue cannot take frees the buffer; so does a send after close. */
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    struct enomem_arg a = {&fx, -1, -1};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_send_enomem, &a));
    assert_int_equal(ARPC_ENOMEM, a.queue_rc);
    assert_int_equal(ARPC_ECONNLOST, a.closed_rc);
    fx_fini(&fx);

    /* The read buffer cannot grow for a large frame: the conn closes with ENOMEM. */
    fx_init(&fx, ARPC_DEFAULT_MAX_FRAME, &ops_plain);
    size_t size;
    uint8_t *buf = make_frames(1, 1, big_len, &size);
    atomic_store(&test_alloc_budget, 0);
    peer_write(&fx, buf, size); /* fails with EPIPE once the conn has closed */
    for (int i = 0; i < 1000 && fx.closes == 0; i++)
        pump(&fx);
    atomic_store(&test_alloc_budget, -1);
    free(buf);
    assert_int_equal(1, fx.closes);
    assert_int_equal(ARPC_ENOMEM, fx.close_reason);
    assert_int_equal(0, fx.frames);
    fx_fini(&fx);
}

/* ---- a stream whose read asks for writability once (a TLS read that must write first) ---- */
struct fake_stream {
    struct arpc_stream fs_base;
    struct arpc_stream fs_plain;
    bool fs_want_write_next;
};
static struct arpc_conn *rv_hold_conn;
static ssize_t fake_read(struct arpc_stream *s, void *buf, size_t len)
{
    struct fake_stream *fs = (struct fake_stream *)s;
    if (fs->fs_want_write_next) {
        fs->fs_want_write_next = false;
        if (rv_hold_conn != NULL) /* a hold that starts in the same iteration (a reply queued, a request parked) */
            arpc_conn_hold_input(rv_hold_conn, ARPC_CONN_HOLD_PARKED);
        return ARPC_STREAM_WANT_WRITE;
    }
    return fs->fs_plain.s_ops->s_read(&fs->fs_plain, buf, len);
}
static ssize_t fake_writev(struct arpc_stream *s, const struct iovec *iov, int n)
{
    struct fake_stream *fs = (struct fake_stream *)s;
    return fs->fs_plain.s_ops->s_writev(&fs->fs_plain, iov, n);
}
static void fake_close(struct arpc_stream *s)
{
    struct fake_stream *fs = (struct fake_stream *)s;
    fs->fs_plain.s_ops->s_close(&fs->fs_plain);
}
static const struct arpc_stream_ops fake_ops = {.s_read = fake_read, .s_writev = fake_writev, .s_close = fake_close};
static struct fake_stream the_fake;
static unsigned frames_while_held;
static void on_frame_hold_check(struct arpc_conn *conn, const struct arpc_frame *f)
{
    if (conn->c_hold != 0)
        frames_while_held++;
    on_frame(conn, f);
}
static const struct arpc_conn_ops ops_hold_check = {.on_frame = on_frame_hold_check, .on_close = on_close};
static void do_init_fake(arpc_loop *loop, void *p)
{
    struct init_arg *a = p;
    arpc_stream_plain_init(&the_fake.fs_plain, a->fx->fd[0]);
    the_fake.fs_base = (struct arpc_stream){.s_ops = &fake_ops, .s_fd = a->fx->fd[0], .s_why = ""};
    a->rc = arpc_conn_init_stream(&a->fx->conn, loop, &the_fake.fs_base, a->max_body, a->ops, a->fx, "peer");
}
static void rv_do_release(arpc_loop *loop, void *p)
{
    (void)loop;
    arpc_conn_release_input(&((struct fx *)p)->conn, ARPC_CONN_HOLD_PARKED);
}
/* A read that must wait for writability resumes from the write watcher; if input was held
 * meanwhile (a request parked, a limit reached), nothing is read or handed up until the hold
 * ends, a large body in progress included (it used to be handed up under the hold). */
static void test_read_wants_write_while_held(void **state)
{
    (void)state;
    struct fx fx;
    memset(&fx, 0, sizeof(fx));
    memset(&the_fake, 0, sizeof(the_fake));
    frames_while_held = 0;
    assert_int_equal(ARPC_OK, arpc_loop_create(&fx.loop, NULL));
    assert_int_equal(ARPC_OK, arpc_future_create(&fx.never));
    assert_true(socketpair_nb(fx.fd));
    struct init_arg a = {&fx, ARPC_DEFAULT_MAX_FRAME, &ops_hold_check, -1};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, do_init_fake, &a));
    assert_int_equal(ARPC_OK, a.rc);
    enum { BODY = 100000 };
    uint8_t *buf = calloc(1, ARPC_FRAME_HEADER_SIZE + BODY);
    size_t hdr = arpc_frame_encode_header(buf, ARPC_FRAME_REPLY, 1, BODY);
    fill_pattern(buf + hdr, 1, BODY);
    assert_true(peer_write(&fx, buf, hdr + 1000));
    for (int i = 0; i < 10; i++)
        pump(&fx);
    assert_non_null(fx.conn.c_body); /* a large body in progress */
    the_fake.fs_want_write_next = true;
    rv_hold_conn = &fx.conn;
    assert_true(peer_write(&fx, buf + hdr + 1000, 10));
    pump(&fx); /* the read asks for writability: the write watcher is started */
    rv_hold_conn = NULL;
    assert_true(peer_write(&fx, buf + hdr + 1010, BODY - 1010));
    for (int i = 0; i < 50; i++)
        pump(&fx);
    unsigned held_frames = frames_while_held;
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(fx.loop, rv_do_release, &fx));
    for (int i = 0; i < 50; i++)
        pump(&fx);
    free(buf);
    fx_fini(&fx);
    assert_int_equal(1, fx.frames);
    assert_int_equal(0, held_frames);
}

int main(void)
{
    test_alloc_install();
    arpc_set_logger(count_log, NULL, ARPC_LOG_DEBUG); /* bad input is logged: counted, not printed */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_whole_frames),
        cmocka_unit_test_no_leak(test_pause_input),
        cmocka_unit_test_no_leak(test_hold_reasons_independent),
        cmocka_unit_test_no_leak(test_bytes_bound),
        cmocka_unit_test_no_leak(test_output_hard_cap_holds_within_a_turn),
        cmocka_unit_test_no_leak(test_byte_by_byte),
        cmocka_unit_test_no_leak(test_large_frame_read_apart),
        cmocka_unit_test_no_leak(test_read_budget_per_turn),
        cmocka_unit_test_no_leak(test_buffer_grows_with_bytes_not_header),
        cmocka_unit_test_no_leak(test_large_body_in_progress_has_an_age),
        cmocka_unit_test_no_leak(test_malformed_header_with_bad_input_hook),
        cmocka_unit_test_no_leak(test_malformed_header_without_hook),
        cmocka_unit_test_no_leak(test_oversized_body),
        cmocka_unit_test_no_leak(test_eof),
        cmocka_unit_test_no_leak(test_last_words_read_when_the_first_write_finds_the_peer_gone),
        cmocka_unit_test_no_leak(test_close_inside_on_frame),
        cmocka_unit_test_no_leak(test_one_batch_per_iteration),
        cmocka_unit_test_no_leak(test_flush_now),
        cmocka_unit_test_no_leak(test_large_batch_leaves_early),
        cmocka_unit_test_no_leak(test_window_of_256_leaves_in_four_parts),
        cmocka_unit_test_no_leak(test_early_write_failure_closes_after_the_parse),
        cmocka_unit_test_no_leak(test_early_write_failure_outside_a_parse),
        cmocka_unit_test_no_leak(test_backlog_limit),
        cmocka_unit_test_no_leak(test_close_after_flush),
        cmocka_unit_test_no_leak(test_control_frames),
        cmocka_unit_test_no_leak(test_enomem_and_closed_sends),
        cmocka_unit_test_no_leak(test_read_wants_write_while_held),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
