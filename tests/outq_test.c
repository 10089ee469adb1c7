/*
 * The output queue (core/outq.c) over a non-blocking AF_UNIX socketpair: the byte stream the
 * peer reads is exactly the buffers pushed, in order, whatever the sizes (zero included) and
 * however the socket cuts the writes; a full socket says ARPC_EAGAIN and resumes inside the
 * buffer where it stopped; more buffers than one sendmsg takes; a closed peer; the ring's
 * growth, its return after a burst, and ENOMEM on growth; fini frees what is queued.
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

/* More buffers than one sendmsg takes (1024): one flush writes them in several batches. */
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

/* Random pushes (sizes 0 to 64 KiB, bursts past the ring's size), flushes and partial peer
 * reads against the stream model: the ring wraps, grows while wrapped, and shrinks. */
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
        case 0: { /* a burst of small buffers */
            unsigned n = (unsigned)(rng_next(&seed) % 300);
            for (unsigned i = 0; i < n; i++)
                assert_int_equal(ARPC_OK, push_bytes(&q, &s, rng_next(&seed) % 64));
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
