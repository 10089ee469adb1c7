/*
 * The output queue (core/outq.c) over a non-blocking AF_UNIX socketpair: the byte stream the
 * peer reads is exactly the buffers pushed, in order, whatever the sizes (zero included) and
 * however the socket cuts the writes; a full socket says ARPC_EAGAIN and resumes inside the
 * buffer where it stopped; more buffers than one sendmsg takes; a closed peer; the ring's
 * growth, its return after a burst, and ENOMEM on growth; fini frees what is queued. Heads
 * (arpc_outq_push_headed: bytes the queue copies and writes before a buffer): at the back and
 * at the front, cut at every byte by a stream that takes a few bytes a write, moved with the
 * ring as it grows while one is half written, all or nothing on ENOMEM, never shown to
 * arpc_outq_each. Small buffers leave copied into the flush's stage, a run of them one iovec.
 * Withdrawals (arpc_outq_withdraw): never the first frame nor bytes the stream owes, looking so
 * far from the front and from the back only, checked against a model under random pushes, cut
 * flushes and reads; the peer reads exactly the frames not taken out.
 *
 * Every buffer comes from arpc_malloc with the counting allocator installed, so the
 * no-leak teardown checks the queue freed each one exactly once (ASan: not twice).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "arpc/error.h"
#include "base/alloc.h"
#include "core/outq.h"
#include "support/test_util.h"

/* ---- the stream: byte i of everything pushed is pattern_byte(i) ---- */

struct stream {
    int fd[2];      /* fd[0]: the queue's side; fd[1]: the peer */
    size_t pushed;  /* bytes pushed so far (the next buffer starts here) */
    size_t checked; /* bytes the peer has read and checked */
};

static void stream_open(struct stream *s)
{
    memset(s, 0, sizeof(*s));
    assert_true(socketpair_nb(s->fd));
}

static void stream_close(struct stream *s)
{
    if (s->fd[0] >= 0)
        close(s->fd[0]);
    if (s->fd[1] >= 0)
        close(s->fd[1]);
}

/* Pushes len stream bytes in a fresh allocation, at an offset inside it (the queue must free
 * the base, not the data pointer). Returns what arpc_outq_push returned; on ENOMEM the
 * buffer is freed here, as its owner. */
static int push_bytes(struct arpc_outq *q, struct stream *s, size_t len)
{
    size_t pad = len % 3; /* data at base, base + 1 or base + 2 */
    uint8_t *base = arpc_malloc(pad + len);
    assert_non_null(base);
    fill_pattern(base + pad, s->pushed, len);
    int rc = arpc_outq_push(q, base, base + pad, len);
    if (rc == ARPC_OK)
        s->pushed += len;
    else
        arpc_free(base);
    return rc;
}

/* Flushes q into fd through a plain stream, as a connection does. */
static int flush_fd(struct arpc_outq *q, int fd)
{
    struct arpc_stream st;
    arpc_stream_plain_init(&st, fd);
    return arpc_outq_flush(q, &st);
}

/* Reads up to max bytes the peer has (all of them for SIZE_MAX) and checks each. */
static size_t peer_read(struct stream *s, size_t max) { return read_pattern(s->fd[1], &s->checked, max); }

/* Flushes and reads until everything pushed has arrived. */
static void flush_all(struct arpc_outq *q, struct stream *s)
{
    for (;;) {
        int rc = flush_fd(q, s->fd[0]);
        assert_true(rc == ARPC_OK || rc == ARPC_EAGAIN);
        peer_read(s, SIZE_MAX);
        if (rc == ARPC_OK)
            break;
    }
    assert_true(arpc_outq_empty(q));
    assert_int_equal(0, q->q_bytes);
    assert_int_equal(s->pushed, s->checked);
}

/* ---- tests ---- */

/* Small and large buffers alternate; the stream arrives whole and in order. */
static void test_order_small_and_large(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    static const size_t sizes[] = {1, 7, 300000, 2, 65536, 1, 1000003, 16, 4095, 4096, 4097};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
            assert_int_equal(ARPC_OK, push_bytes(&q, &s, sizes[i]));
        assert_int_equal(s.pushed - s.checked, q.q_bytes);
        flush_all(&q, &s);
    }
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* A peer that does not read: the flush stops with EAGAIN partway through one buffer, stays
 * there while the peer still does not read, and resumes at the next byte once it does. */
static void test_full_socket_resumes_inside_a_buffer(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    enum { BIG = 4 * 1024 * 1024 }; /* far more than a socketpair holds */
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 10));
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, BIG));
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 10));
    assert_int_equal(ARPC_EAGAIN, flush_fd(&q, s.fd[0]));
    /* The first buffer is gone, the big one is at the front, cut inside. */
    assert_int_equal(2, q.q_count);
    struct arpc_outq_buf *head = &q.q_bufs[q.q_head];
    assert_true(head->b_len > 0 && head->b_len < BIG);
    assert_ptr_equal((uint8_t *)head->b_base + BIG % 3 + (BIG - head->b_len), head->b_data);
    size_t left = q.q_bytes;
    assert_int_equal(head->b_len + 10, left);
    /* Nothing read: nothing moves. */
    assert_int_equal(ARPC_EAGAIN, flush_fd(&q, s.fd[0]));
    assert_int_equal(left, q.q_bytes);
    /* The peer reads a little at a time: each flush goes on from the byte it stopped at
     * (peer_read checks every byte against its position in the stream). */
    int rounds = 0;
    for (int rc = ARPC_EAGAIN; rc == ARPC_EAGAIN; rounds++) {
        assert_true(peer_read(&s, 100000) > 0);
        rc = flush_fd(&q, s.fd[0]);
        assert_true(rc == ARPC_OK || rc == ARPC_EAGAIN);
        assert_int_equal(s.pushed - s.checked, q.q_bytes + fd_unread(s.fd[1]));
    }
    assert_true(rounds > 1);
    peer_read(&s, SIZE_MAX);
    assert_int_equal(s.pushed, s.checked);
    assert_true(arpc_outq_empty(&q));
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* More buffers than one sendmsg takes: small ones past the stage (12 KiB), then large ones
 * past the iovecs a write gathers (256). One flush writes them in several writes, in order. */
static void test_more_buffers_than_iov_max(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    enum { N = 3 * 1024 + 5 };
    for (size_t i = 0; i < N; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, 1 + i % 13)); /* ~21 KiB: fits the socket */
    assert_int_equal(N, q.q_count);
    assert_int_equal(ARPC_OK, flush_fd(&q, s.fd[0]));
    assert_true(arpc_outq_empty(&q));
    peer_read(&s, SIZE_MAX);
    assert_int_equal(s.pushed, s.checked);
    for (size_t i = 0; i < 600; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, ARPC_OUTQ_COPY_MAX + 1 + i % 7));
    flush_all(&q, &s);
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* Zero-length buffers at the front, between others, at the end, and alone: written (as
 * nothing) and freed, without stalling what follows. */
static void test_zero_length_buffers(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    /* Alone. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, 0));
    assert_int_equal(3, q.q_count);
    assert_int_equal(0, q.q_bytes);
    assert_int_equal(ARPC_OK, flush_fd(&q, s.fd[0]));
    assert_true(arpc_outq_empty(&q));
    /* Front, middle, end. */
    static const size_t sizes[] = {0, 0, 5, 0, 1, 0, 0, 300000, 0, 9, 0};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, sizes[i]));
    flush_all(&q, &s);
    /* An empty queue flushes to OK without touching the socket. */
    assert_int_equal(ARPC_OK, flush_fd(&q, s.fd[0]));
    assert_int_equal(0, fd_unread(s.fd[1]));
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* A peer that closed: ARPC_ECONNLOST, not a SIGPIPE (the default action, restored here,
 * would kill the test). The queue keeps its buffers for fini. */
static void test_closed_peer(void **state)
{
    (void)state;
    struct sigaction dfl = {.sa_handler = SIG_DFL}, old;
    sigaction(SIGPIPE, &dfl, &old);
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    close(s.fd[1]);
    s.fd[1] = -1;
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 100));
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 0));
    assert_int_equal(ARPC_ECONNLOST, flush_fd(&q, s.fd[0]));
    assert_int_equal(2, q.q_count);
    arpc_outq_fini(&q);
    stream_close(&s);
    sigaction(SIGPIPE, &old, NULL);
}

/* The ring grows for a burst and gives its memory back once the burst has drained; a small
 * queue keeps its ring (no allocation per batch). */
static void test_ring_grows_and_shrinks(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    assert_int_equal(0, q.q_cap);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, 8));
    size_t small_cap = q.q_cap;
    assert_true(small_cap >= 10 && small_cap <= 1024);
    flush_all(&q, &s);
    assert_int_equal(small_cap, q.q_cap); /* kept */
    assert_non_null(q.q_bufs);

    for (int i = 0; i < 2000; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, 8));
    assert_true(q.q_cap > 1024);
    long live_full = atomic_load(&test_alloc_live);
    flush_all(&q, &s);
    assert_int_equal(0, q.q_cap); /* given back */
    assert_null(q.q_bufs);
    assert_int_equal(live_full - 2000 - 1, atomic_load(&test_alloc_live));
    /* And usable again. */
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 8));
    flush_all(&q, &s);
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* The ring is full while wrapped (its oldest buffer is not at slot 0): growing keeps the
 * order, oldest first. */
static void test_ring_grows_while_wrapped(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, 3));
    flush_all(&q, &s); /* the head moves on to slot 10 */
    size_t cap = q.q_cap;
    while (q.q_count < cap)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, 1 + q.q_count % 5));
    assert_true(q.q_head != 0); /* full and wrapped around the end */
    for (int i = 0; i < 10; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, 7));
    assert_true(q.q_cap > cap);
    flush_all(&q, &s);
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* ENOMEM when the ring must grow: the push fails, the caller still owns its buffer (freed by
 * push_bytes; a double free would show under ASan, a leak in the teardown), the queue is as
 * it was, and later pushes and the flush carry on in order. */
static void test_enomem_on_growth(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    /* First push: the ring itself cannot be had. */
    atomic_store(&test_alloc_budget, 1); /* the buffer succeeds, the ring fails */
    assert_int_equal(ARPC_ENOMEM, push_bytes(&q, &s, 5));
    atomic_store(&test_alloc_budget, -1);
    assert_true(arpc_outq_empty(&q));
    assert_int_equal(0, q.q_bytes);
    /* Fill the ring to its capacity, then fail the doubling. */
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 5));
    while (q.q_count < q.q_cap)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, 1 + q.q_count % 7));
    size_t cap = q.q_cap, count = q.q_count, bytes = q.q_bytes;
    atomic_store(&test_alloc_budget, 1);
    assert_int_equal(ARPC_ENOMEM, push_bytes(&q, &s, 3));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(cap, q.q_cap);
    assert_int_equal(count, q.q_count);
    assert_int_equal(bytes, q.q_bytes);
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 3));
    assert_int_equal(2 * cap, q.q_cap);
    flush_all(&q, &s);
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* fini frees every queued buffer, whole or partly written. */
static void test_fini_frees_queued(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    for (int i = 0; i < 100; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, (size_t)i * 997));
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 2 * 1024 * 1024));
    assert_int_equal(ARPC_EAGAIN, flush_fd(&q, s.fd[0])); /* leaves one cut */
    arpc_outq_fini(&q);
    assert_int_equal(0, q.q_count);
    assert_null(q.q_bufs);
    arpc_outq_fini(&q); /* twice is harmless */
    stream_close(&s);
}

static int push_headed(struct arpc_outq *q, struct stream *s, size_t head_len, size_t len, bool front);

/* Random pushes (sizes 0 to 64 KiB, bursts past the ring's size, heads among them), flushes
 * and partial peer reads against the stream model: the ring wraps, grows while wrapped, and
 * shrinks, and no head's room is another's. */
static void test_random_against_stream(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    uint64_t seed = 0x5eed0u;
    for (int op = 0; op < 1500; op++) {
        uint64_t r = rng_next(&seed);
        switch (r % 4) {
        case 0: { /* a burst of small buffers, some with heads (of every length: a head and its
                   * buffer land at either parity of the ring's slots) */
            unsigned n = (unsigned)(rng_next(&seed) % 300);
            for (unsigned i = 0; i < n; i++) {
                uint64_t k = rng_next(&seed);
                if (k & 1)
                    assert_int_equal(ARPC_OK, push_bytes(&q, &s, (k >> 1) % 64));
                else
                    assert_int_equal(ARPC_OK, push_headed(&q, &s, 1 + (k >> 1) % ARPC_OUTQ_HEAD_MAX, (k >> 8) % 64, false));
            }
            break;
        }
        case 1:
            assert_int_equal(ARPC_OK, push_bytes(&q, &s, rng_next(&seed) % (64 * 1024)));
            break;
        case 2: {
            int rc = flush_fd(&q, s.fd[0]);
            assert_true(rc == ARPC_OK || rc == ARPC_EAGAIN);
            assert_int_equal(rc == ARPC_OK, arpc_outq_empty(&q));
            break;
        }
        default:
            peer_read(&s, rng_next(&seed) % (128 * 1024));
            break;
        }
        assert_int_equal(s.pushed - s.checked, q.q_bytes + fd_unread(s.fd[1]));
    }
    flush_all(&q, &s);
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* ---- heads ---- */

/* Pushes a head of head_len stream bytes (from the stack: the queue must copy them) and a
 * body of len stream bytes behind it, at the back or the front; as push_bytes otherwise. At
 * the front, the caller accounts for the order (these tests push at the front only into an
 * empty queue or the rest of the frame at its front). */
static int push_headed(struct arpc_outq *q, struct stream *s, size_t head_len, size_t len, bool front)
{
    uint8_t head[ARPC_OUTQ_HEAD_MAX];
    fill_pattern(head, s->pushed, head_len);
    uint8_t *base = arpc_malloc(len + 1);
    assert_non_null(base);
    fill_pattern(base + 1, s->pushed + head_len, len);
    int rc = arpc_outq_push_headed(q, head, head_len, base, base + 1, len, NULL, front);
    memset(head, 0xee, sizeof(head)); /* what the queue wrote must be its copy */
    if (rc == ARPC_OK)
        s->pushed += head_len + len;
    else
        arpc_free(base);
    return rc;
}

/* A stream that takes at most t_max bytes a write, and t_budget in all (then it is "full"). */
struct trickle {
    struct arpc_stream t_s;
    size_t t_max, t_budget;
};

static ssize_t trickle_writev(struct arpc_stream *st, const struct iovec *iov, int iovcnt)
{
    struct trickle *t = (struct trickle *)st;
    struct iovec cut[4];
    size_t left = t->t_max < t->t_budget ? t->t_max : t->t_budget;
    if (left == 0)
        return ARPC_STREAM_WANT_WRITE;
    int n = 0;
    for (int i = 0; i < iovcnt && n < 4 && left > 0; i++, n++) {
        cut[n] = iov[i];
        if (cut[n].iov_len > left)
            cut[n].iov_len = left;
        left -= cut[n].iov_len;
    }
    ssize_t w = writev(st->s_fd, cut, n);
    if (w < 0)
        return ARPC_STREAM_WANT_WRITE;
    t->t_budget -= (size_t)w;
    return w;
}

static const struct arpc_stream_ops trickle_ops = {.s_writev = trickle_writev};

/* A flush whose writes take at most max bytes each, budget in all. */
static int flush_trickle(struct arpc_outq *q, int fd, size_t max, size_t budget)
{
    struct trickle t = {.t_s = {.s_ops = &trickle_ops, .s_fd = fd}, .t_max = max, .t_budget = budget};
    return arpc_outq_flush(q, &t.t_s);
}

/* Flushes max bytes a write and reads until everything pushed has arrived (tiny writes fill
 * a socketpair's buffer long before their bytes do). */
static void flush_all_trickle(struct arpc_outq *q, struct stream *s, size_t max)
{
    for (;;) {
        int rc = flush_trickle(q, s->fd[0], max, SIZE_MAX);
        assert_true(rc == ARPC_OK || rc == ARPC_EAGAIN);
        peer_read(s, SIZE_MAX);
        if (rc == ARPC_OK)
            break;
    }
    assert_true(arpc_outq_empty(q));
    assert_int_equal(s->pushed, s->checked);
}

/* A stream that writes what it is given and records each write's iovec count. */
struct counting {
    struct arpc_stream c_s;
    int c_iovcnt[64];
    size_t c_writes;
};

static ssize_t counting_writev(struct arpc_stream *st, const struct iovec *iov, int iovcnt)
{
    struct counting *c = (struct counting *)st;
    if (c->c_writes < sizeof(c->c_iovcnt) / sizeof(c->c_iovcnt[0]))
        c->c_iovcnt[c->c_writes] = iovcnt;
    c->c_writes++;
    ssize_t w = writev(st->s_fd, iov, iovcnt);
    return w < 0 ? ARPC_STREAM_WANT_WRITE : w;
}

static const struct arpc_stream_ops counting_ops = {.s_writev = counting_writev};

/* A pipelined batch of small frames (a request is a head and a body: two buffers) leaves in
 * one iovec, copied into the flush's stage; a large buffer between small ones is an iovec of
 * its own, the small ones on either side a run each; the bytes arrive whole and in order. */
static void test_small_buffers_one_iovec(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(ARPC_OK, push_headed(&q, &s, ARPC_OUTQ_HEAD_MAX, 26 + i % 5, false));
    assert_int_equal(128, q.q_count);
    struct counting c = {.c_s = {.s_ops = &counting_ops, .s_fd = s.fd[0]}};
    assert_int_equal(ARPC_OK, arpc_outq_flush(&q, &c.c_s));
    assert_int_equal(1, c.c_writes);
    assert_int_equal(1, c.c_iovcnt[0]);
    peer_read(&s, SIZE_MAX);
    assert_int_equal(s.pushed, s.checked);

    static const size_t sizes[] = {16, 1, ARPC_OUTQ_COPY_MAX, ARPC_OUTQ_COPY_MAX + 1, 7, 0, 32};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, sizes[i]));
    c.c_writes = 0;
    assert_int_equal(ARPC_OK, arpc_outq_flush(&q, &c.c_s));
    assert_int_equal(1, c.c_writes);
    assert_int_equal(3, c.c_iovcnt[0]); /* 16+1+256 | 257 | 7+0+32 */
    peer_read(&s, SIZE_MAX);
    assert_int_equal(s.pushed, s.checked);
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* More small bytes than the stage holds: each write carries a stageful as one iovec, and
 * the next write goes on from the first buffer the stage had no room for. */
static void test_small_buffers_past_the_stage(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    enum { LEN = 100, N = 3 * ARPC_OUTQ_STAGE / LEN + 7 };
    for (size_t i = 0; i < N; i++)
        assert_int_equal(ARPC_OK, push_bytes(&q, &s, LEN));
    struct counting c = {.c_s = {.s_ops = &counting_ops, .s_fd = s.fd[0]}};
    assert_int_equal(ARPC_OK, arpc_outq_flush(&q, &c.c_s));
    assert_int_equal(4, c.c_writes);
    for (size_t i = 0; i < c.c_writes; i++)
        assert_int_equal(1, c.c_iovcnt[i]);
    peer_read(&s, SIZE_MAX);
    assert_int_equal(s.pushed, s.checked);
    arpc_outq_fini(&q);
    stream_close(&s);
}

struct each_seen {
    size_t n;          /* bodies seen */
    size_t next_ahead; /* at most where the next frame begins: the last body seen's frame's
                        * start and its bytes (its head's not counted) */
    size_t lefts;      /* their bytes not written */
};

/* Each body once, in order: its frame begins at 0 (the first) or after the last body, and its
 * head (if any) fits between. */
static void count_each(void *base, arpc_outq_release_fn release, size_t left, size_t ahead, void *arg)
{
    (void)release;
    struct each_seen *e = arg;
    assert_non_null(base); /* a body's base, never a head's */
    if (e->n == 0)
        assert_int_equal(0, ahead);
    else
        assert_true(ahead >= e->next_ahead && ahead - e->next_ahead <= ARPC_OUTQ_HEAD_MAX);
    assert_true(left > 0);
    e->n++;
    e->lefts += left;
    e->next_ahead = ahead + left;
}

/* Headed frames at the back, written a few bytes a write (every cut, inside heads and bodies
 * and across them): the stream arrives whole; each() sees the bodies only. */
static void test_heads_cut_at_every_byte(void **state)
{
    (void)state;
    for (size_t max = 1; max <= 45; max += (max < 12 ? 1 : 11)) {
        struct stream s;
        stream_open(&s);
        struct arpc_outq q;
        arpc_outq_init(&q);
        for (size_t i = 0; i < 20; i++) {
            assert_int_equal(ARPC_OK, push_headed(&q, &s, ARPC_OUTQ_HEAD_MAX - i % 3, 1 + i * 7 % 50, false));
            if (i % 4 == 0)
                assert_int_equal(ARPC_OK, push_bytes(&q, &s, 1 + i)); /* a frame without a head between */
        }
        struct each_seen bodies = {0};
        arpc_outq_each(&q, count_each, &bodies);
        assert_int_equal(25, bodies.n);
        assert_true(bodies.lefts < q.q_bytes); /* the heads' bytes are not theirs */
        assert_true(q.q_bytes - bodies.next_ahead <= ARPC_OUTQ_HEAD_MAX); /* but its head, the last frame ends it */
        assert_int_equal(25, arpc_outq_frames(&q)); /* a head and its buffer: one frame */
        assert_int_equal(s.pushed - s.checked, q.q_bytes);
        flush_all_trickle(&q, &s, max);
        arpc_outq_fini(&q);
        assert_null(q.q_heads);
        stream_close(&s);
    }
}

/* The rest of a frame pushed at the front (as a caller's cut write leaves it): the rest of its
 * head and its body go before what was queued already. */
static void test_head_rest_at_front(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    /* The stream: [rest of head 23][body 30][a queued headed frame]. Push the queued one first,
     * then the rest at the front: swap the stream's order by pushing in two steps. */
    struct stream later = s;
    later.pushed = 23 + 30; /* the queued frame's bytes come after the rest */
    assert_int_equal(ARPC_OK, push_headed(&q, &later, ARPC_OUTQ_HEAD_MAX, 100, false));
    assert_int_equal(ARPC_OK, push_headed(&q, &s, 23, 30, true));
    s.pushed = later.pushed;
    flush_all_trickle(&q, &s, 9);
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* The ring grows while a head at its front is half written (and while wrapped): the rest of
 * that head moves with it. */
static void test_ring_grows_under_a_cut_head(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    for (int round = 0; round < 4; round++) {
        while (q.q_count + 2 <= q.q_cap || q.q_cap == 0) {
            assert_int_equal(ARPC_OK, push_headed(&q, &s, ARPC_OUTQ_HEAD_MAX, 5, false));
            if (q.q_count == 2) /* the first frame's head written in part: a cut head at the front */
                assert_int_equal(ARPC_EAGAIN, flush_trickle(&q, s.fd[0], 17, 17));
        }
        size_t cap = q.q_cap;
        assert_int_equal(ARPC_OK, push_headed(&q, &s, ARPC_OUTQ_HEAD_MAX, 5, false)); /* grows */
        assert_int_equal(2 * cap, q.q_cap);
        flush_all_trickle(&q, &s, 4096);
    }
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* ENOMEM for the heads' ring, or for the doubling of both: nothing queued, the body is still
 * the caller's (freed by push_headed), and the queue carries on. */
static void test_heads_enomem(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    assert_int_equal(ARPC_OK, push_bytes(&q, &s, 5)); /* the ring, without heads */
    atomic_store(&test_alloc_budget, 1); /* the body succeeds, the heads' ring fails */
    assert_int_equal(ARPC_ENOMEM, push_headed(&q, &s, 10, 10, false));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(1, q.q_count);
    assert_null(q.q_heads);
    while (q.q_count + 2 <= q.q_cap)
        assert_int_equal(ARPC_OK, push_headed(&q, &s, 10, 1, false));
    size_t count = q.q_count, bytes = q.q_bytes;
    atomic_store(&test_alloc_budget, 2); /* the body and the new ring; its heads fail */
    assert_int_equal(ARPC_ENOMEM, push_headed(&q, &s, 10, 10, true));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(count, q.q_count);
    assert_int_equal(bytes, q.q_bytes);
    flush_all(&q, &s);
    arpc_outq_fini(&q);
    stream_close(&s);
}

/* ---- taking a frame back out (arpc_outq_withdraw) ---- */

/* The model of a queue for withdrawals: every frame pushed, with its bytes (head, then body),
 * in order; the peer must read exactly the frames not taken out, in that order. */
#define WD_FRAMES 4096
struct wd_model {
    uint8_t *bytes[WD_FRAMES]; /* the frame's bytes, as pushed (the queue has its own copy) */
    size_t len[WD_FRAMES];
    void *base[WD_FRAMES];     /* the buffer's base: the key for a withdrawal */
    bool out[WD_FRAMES];       /* taken out */
    size_t n;                  /* frames pushed */
    size_t sent_frame, sent_at; /* the peer has read up to byte sent_at of frame sent_frame */
    size_t written;            /* bytes the queue has written (the flushes' sum) */
};

/* A withdrawal test's buffer is released by counting it in its first byte (before the body),
 * not freed: every base stays unique, so a withdrawal of a frame written long ago cannot hit a
 * later frame given the same memory; wd_free checks each was released once and frees them. */
static void wd_release(void *base) { ((uint8_t *)base)[0]++; }

/* Pushes a frame of head_len head bytes (0: none) and body_len body bytes, all random. */
static void wd_push(struct arpc_outq *q, struct wd_model *m, size_t head_len, size_t body_len, uint64_t *seed)
{
    assert_true(m->n < WD_FRAMES);
    size_t len = head_len + body_len;
    uint8_t *bytes = malloc(len + 1);
    assert_non_null(bytes);
    for (size_t i = 0; i < len; i++)
        bytes[i] = (uint8_t)rng_next(seed);
    uint8_t *base = arpc_malloc(body_len + 1);
    assert_non_null(base);
    base[0] = 0;
    memcpy(base + 1, bytes + head_len, body_len);
    assert_int_equal(ARPC_OK, head_len != 0
                                  ? arpc_outq_push_headed(q, bytes, head_len, base, base + 1, body_len, wd_release, false)
                                  : arpc_outq_push_shared(q, base, base + 1, body_len, wd_release));
    m->bytes[m->n] = bytes;
    m->len[m->n] = len;
    m->base[m->n] = base;
    m->out[m->n] = false;
    m->n++;
}

/* Reads what the peer has and checks it against the frames not taken out, in order. */
static void wd_peer_read(int fd, struct wd_model *m)
{
    uint8_t buf[4096];
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < r; i++) {
            while (m->sent_frame < m->n && (m->out[m->sent_frame] || m->sent_at == m->len[m->sent_frame])) {
                m->sent_frame++;
                m->sent_at = 0;
            }
            assert_true(m->sent_frame < m->n); /* no byte beyond the frames pushed */
            assert_int_equal(m->bytes[m->sent_frame][m->sent_at], buf[i]);
            m->sent_at++;
        }
    }
}

/* arpc_outq_withdraw's bytes taken out, 0 when it took nothing (the frames these tests take
 * are never empty; test_withdraw_behind_the_first takes an empty one itself). */
static size_t withdrawn(struct arpc_outq *q, const void *base, size_t owed, size_t look)
{
    size_t bytes = SIZE_MAX;
    if (!arpc_outq_withdraw(q, base, owed, look, &bytes))
        return 0;
    assert_true(bytes != 0 && bytes != SIZE_MAX);
    return bytes;
}

/* What arpc_outq_withdraw must answer for frame k, from the model: the bytes taken out, or 0.
 * Frames still queued are those not taken out from the one the queue's written bytes reach.
 * Taken out: k is untouched (not the first frame queued, beginning at or past owed) and among
 * the look first untouched frames or the look last frames queued. */
static size_t wd_expect(const struct wd_model *m, size_t k, size_t owed, size_t look)
{
    size_t at = 0, skip = m->written, frames = 0, untouched_before = 0, left_k = 0, after_k = 0;
    bool seen = false, untouched_k = false;
    for (size_t j = 0; j < m->n; j++) {
        if (m->out[j])
            continue;
        if (skip >= m->len[j]) { /* wholly written */
            skip -= m->len[j];
            continue;
        }
        size_t left = m->len[j] - skip;
        skip = 0;
        bool untouched = ++frames > 1 && at >= owed;
        if (j == k) {
            seen = true;
            untouched_k = untouched;
            left_k = left;
        } else if (seen) {
            after_k++;
        } else {
            untouched_before += untouched;
        }
        at += left;
    }
    if (!seen || !untouched_k)
        return 0;
    return untouched_before < look || after_k < look ? left_k : 0;
}

/* The first frame not wholly written (m->n: none). */
static size_t wd_first_queued(const struct wd_model *m)
{
    size_t skip = m->written, j = 0;
    for (; j < m->n; j++) {
        if (m->out[j])
            continue;
        if (skip < m->len[j])
            break;
        skip -= m->len[j];
    }
    return j;
}

/* After the queue's fini: each buffer was released once. */
static void wd_free(struct wd_model *m)
{
    for (size_t j = 0; j < m->n; j++) {
        assert_int_equal(1, ((uint8_t *)m->base[j])[0]);
        arpc_free(m->base[j]);
        free(m->bytes[j]);
    }
}

/* Flushes through a stream taking at most max bytes a write, budget in all. */
static int wd_flush(struct arpc_outq *q, struct wd_model *m, int fd, size_t max, size_t budget)
{
    size_t before = q->q_bytes;
    int rc = flush_trickle(q, fd, max, budget);
    m->written += before - q->q_bytes;
    return rc;
}

/* The first frame stays (it may be half written); a frame behind it is taken out with its head,
 * and its buffer released once (wd_free counts); the peer then reads every other
 * frame whole and in order. A base not queued, or one written already, is left alone. */
static void test_withdraw_behind_the_first(void **state)
{
    (void)state;
    struct stream s;
    stream_open(&s);
    struct arpc_outq q;
    arpc_outq_init(&q);
    static struct wd_model m;
    memset(&m, 0, sizeof(m));
    uint64_t seed = 0xd1e;
    for (int i = 0; i < 6; i++)
        wd_push(&q, &m, i % 2 == 0 ? 40 : 0, 30 + (size_t)i, &seed);
    assert_int_equal(0, withdrawn(&q, m.base[0], 0, 64)); /* the first: never */
    size_t bytes = q.q_bytes;
    assert_int_equal(m.len[2], withdrawn(&q, m.base[2], 0, 64)); /* headed */
    m.out[2] = true;
    assert_int_equal(m.len[3], withdrawn(&q, m.base[3], 0, 64)); /* headless */
    m.out[3] = true;
    assert_int_equal(bytes - m.len[2] - m.len[3], q.q_bytes);
    assert_int_equal(4, arpc_outq_frames(&q));
    assert_int_equal(0, withdrawn(&q, m.base[2], 0, 64)); /* gone already */
    int here;
    assert_int_equal(0, withdrawn(&q, &here, 0, 64)); /* never queued */
    /* Half of the first frame written: the second may not be taken while the stream owes its
     * first bytes again, and may once past them. */
    assert_int_equal(ARPC_EAGAIN, wd_flush(&q, &m, s.fd[0], 20, 20));
    assert_int_equal(0, withdrawn(&q, m.base[1], q.q_bytes, 64));
    assert_int_equal(0, withdrawn(&q, m.base[4], m.len[0] - 20 + m.len[1] + 1, 64));
    assert_int_equal(m.len[4], withdrawn(&q, m.base[4], m.len[0] - 20 + m.len[1], 64));
    m.out[4] = true;
    /* An empty frame (no arpc frame is, but the queue takes any buffer) is taken out too. */
    uint8_t *empty = arpc_malloc(1);
    assert_non_null(empty);
    empty[0] = 0;
    assert_int_equal(ARPC_OK, arpc_outq_push_shared(&q, empty, empty + 1, 0, wd_release));
    size_t none = SIZE_MAX;
    assert_true(arpc_outq_withdraw(&q, empty, 0, 64, &none));
    assert_int_equal(0, none);
    assert_int_equal(1, empty[0]);
    arpc_free(empty);
    /* Looking only so far: with look 1, frame 1 is the one looked at from the front and the
     * newest the one from the back; frame 6, with one untouched in front and one behind,
     * stays until the one behind is gone. */
    wd_push(&q, &m, 0, 33, &seed);
    wd_push(&q, &m, 40, 34, &seed);
    assert_int_equal(0, withdrawn(&q, m.base[6], 0, 1));
    assert_int_equal(m.len[7], withdrawn(&q, m.base[7], 0, 1));
    m.out[7] = true;
    assert_int_equal(m.len[6], withdrawn(&q, m.base[6], 0, 1)); /* the newest now */
    m.out[6] = true;
    assert_int_equal(ARPC_OK, wd_flush(&q, &m, s.fd[0], 4096, SIZE_MAX));
    wd_peer_read(s.fd[1], &m);
    assert_int_equal(5, m.sent_frame);
    assert_int_equal(m.len[5], m.sent_at);
    assert_int_equal(0, withdrawn(&q, m.base[5], 0, 64)); /* written */
    arpc_outq_fini(&q);
    wd_free(&m);
    stream_close(&s);
}

/* Random pushes (headed or not, small and large, heads of every length so they land at either
 * parity of the ring's slots), flushes cut anywhere (inside a head too), reads, and
 * withdrawals of any frame with any owed count and look: each answers what the model says, the
 * ring grows and wraps meanwhile, and the peer reads exactly the frames not taken out. */
static void test_withdraw_random_against_model(void **state)
{
    (void)state;
    static struct wd_model m;
    for (uint64_t round = 0; round < 8; round++) {
        struct stream s;
        stream_open(&s);
        struct arpc_outq q;
        arpc_outq_init(&q);
        memset(&m, 0, sizeof(m));
        uint64_t seed = 0xa11ce + round;
        for (int op = 0; op < 1500 && m.n + 40 < WD_FRAMES; op++) {
            uint64_t r = rng_next(&seed);
            switch (r % 5) {
            case 0:
            case 1: {
                unsigned n = 1 + (unsigned)(rng_next(&seed) % 8);
                for (unsigned i = 0; i < n; i++) {
                    uint64_t k = rng_next(&seed);
                    size_t body = k % 8 == 0 ? 257 + (k >> 3) % 2000 : 1 + (k >> 3) % 200; /* (a frame is never empty) */
                    wd_push(&q, &m, k & (1u << 20) ? 0 : 1 + (k >> 21) % ARPC_OUTQ_HEAD_MAX, body, &seed);
                }
                break;
            }
            case 2: {
                int rc = wd_flush(&q, &m, s.fd[0], 1 + rng_next(&seed) % 300, rng_next(&seed) % 700);
                assert_true(rc == ARPC_OK || rc == ARPC_EAGAIN);
                break;
            }
            case 3: {
                if (m.n == 0)
                    break;
                /* Among the first frames queued, or the newest, now and then any. */
                uint64_t pick = rng_next(&seed);
                size_t near = (size_t)(pick >> 2) % 48;
                size_t k = pick % 4 == 0   ? (size_t)(pick >> 2) % m.n
                           : pick % 4 == 1 ? (near < m.n ? m.n - 1 - near : 0)
                                           : wd_first_queued(&m) + near;
                if (k >= m.n)
                    k = m.n - 1;
                size_t owed = rng_next(&seed) % 3 == 0 ? (size_t)(rng_next(&seed) % (q.q_bytes + 1)) : 0;
                size_t look = 1 + (size_t)(rng_next(&seed) % 80);
                size_t want = m.out[k] ? 0 : wd_expect(&m, k, owed, look);
                size_t bytes = q.q_bytes;
                assert_int_equal(want, withdrawn(&q, m.base[k], owed, look));
                assert_int_equal(bytes - want, q.q_bytes);
                if (want != 0)
                    m.out[k] = true;
                break;
            }
            default:
                wd_peer_read(s.fd[1], &m);
                break;
            }
        }
        for (;;) {
            int rc = wd_flush(&q, &m, s.fd[0], 4096, SIZE_MAX);
            assert_true(rc == ARPC_OK || rc == ARPC_EAGAIN);
            wd_peer_read(s.fd[1], &m);
            if (rc == ARPC_OK)
                break;
        }
        wd_peer_read(s.fd[1], &m);
        size_t last = m.n;
        while (last > 0 && m.out[last - 1])
            last--;
        assert_true(last == 0 || (m.sent_frame == last - 1 && m.sent_at == m.len[last - 1]));
        arpc_outq_fini(&q);
        wd_free(&m);
        stream_close(&s);
    }
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_order_small_and_large),
        cmocka_unit_test_no_leak(test_full_socket_resumes_inside_a_buffer),
        cmocka_unit_test_no_leak(test_more_buffers_than_iov_max),
        cmocka_unit_test_no_leak(test_zero_length_buffers),
        cmocka_unit_test_no_leak(test_closed_peer),
        cmocka_unit_test_no_leak(test_ring_grows_and_shrinks),
        cmocka_unit_test_no_leak(test_ring_grows_while_wrapped),
        cmocka_unit_test_no_leak(test_enomem_on_growth),
        cmocka_unit_test_no_leak(test_fini_frees_queued),
        cmocka_unit_test_no_leak(test_random_against_stream),
        cmocka_unit_test_no_leak(test_heads_cut_at_every_byte),
        cmocka_unit_test_no_leak(test_head_rest_at_front),
        cmocka_unit_test_no_leak(test_ring_grows_under_a_cut_head),
        cmocka_unit_test_no_leak(test_heads_enomem),
        cmocka_unit_test_no_leak(test_small_buffers_one_iovec),
        cmocka_unit_test_no_leak(test_small_buffers_past_the_stage),
        cmocka_unit_test_no_leak(test_withdraw_behind_the_first),
        cmocka_unit_test_no_leak(test_withdraw_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
