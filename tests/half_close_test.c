/*
 * A client that half-closes (shutdown(SHUT_WR), or a pipe into nc ending) after its last
 * request has sent all it will, but still reads: the server answers the calls it read and
 * closes only then (core/server_conn.c: sconn_on_eof; core/server_inflight.c closes once
 * the last call stops counting). An end of stream with part of a frame in is a lost
 * connection, closed at once, as before.
 *
 * Each call here is held by its handler until the test lets it go, once the server has read
 * the end of stream (its stats count it: connections_half_closed), so a server that closed
 * at the end of stream fails every run. The end of stream cannot tell a half-close from a
 * close for good: the server writes a PING at once (skipped here), and a peer that closed
 * answers it with a reset, which closes the connection without waiting for its calls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/test_util.h"

/* Well under the heartbeat the full-close tests set: the probe's reset found it, not that
 * (the suite's bound for a wait, so a loaded machine's stall is not read as a failure). */
#define FOUND_AT_ONCE_MS TEST_WAIT_MS
#define LONG_HEARTBEAT_MS 60000

static sem_t unblock;

/* On a worker: answers with its payload once the test posts unblock. */
static void h_held_echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    (void)sem_wait_secs(&unblock, RAW_WAIT_MS / 1000);
    size_t len;
    const void *p = arpc_request_data(req, &len);
    arpc_reply(req, p, len);
}

/* listen: where (NULL: TCP on a free port). */
static arpc_server *make_server_with(const arpc_server_options *o, const char *listen, char *addr, size_t addrlen)
{
    latch_reset();
    assert_int_equal(0, sem_init(&unblock, 0, 0));
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, o));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.held_echo", h_held_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen != NULL ? listen : "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

/* heartbeat_ms 0: the default heartbeat. */
static arpc_server *make_server_at(const char *listen, char *addr, size_t addrlen, uint32_t heartbeat_ms)
{
    arpc_server_options o = {.workers = 2, .heartbeat_ms = heartbeat_ms, .heartbeat_misses = heartbeat_ms ? 2 : 0};
    return make_server_with(&o, listen, addr, addrlen);
}

static arpc_server *make_server(char *addr, size_t addrlen, uint32_t heartbeat_ms)
{
    return make_server_at(NULL, addr, addrlen, heartbeat_ms);
}

static void destroy_server(arpc_server *s)
{
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&unblock);
}

/* The server has read n ends of stream in all. */
static void wait_half_closed(arpc_server *s, uint64_t n)
{
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_half_closed), n, RAW_WAIT_MS));
}

/* The next frame but PINGs (the probe at the end of stream, the heartbeat's), which a
 * half-closed client cannot answer. */
static void read_skipping_pings(struct raw_client *r, struct raw_frame *f)
{
    do
        assert_true(raw_read(r, f, true));
    while (f->f.f_kind == ARPC_FRAME_PING);
}

/* Two calls held by their handlers, then the half-close: both are answered, then the
 * server closes. */
static void test_calls_answered_after_half_close(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), 0);
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.held_echo", "one", 3));
    assert_true(raw_request(&r, 2, 0, 0, 0, "t.held_echo", "two", 3));
    assert_true(latch_wait(2, RAW_WAIT_MS)); /* both in their handlers */
    assert_int_equal(0, shutdown(r.rc_fd, SHUT_WR));
    wait_half_closed(s, 1);
    sem_post(&unblock);
    sem_post(&unblock);
    bool seen[3] = {false, false, false};
    for (int i = 0; i < 2; i++) {
        struct raw_frame f;
        read_skipping_pings(&r, &f);
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        assert_true(f.f.f_xid == 1 || f.f.f_xid == 2);
        assert_false(seen[f.f.f_xid]);
        seen[f.f.f_xid] = true;
        assert_int_equal(3, f.body_len);
        assert_memory_equal(f.f.f_xid == 1 ? "one" : "two", f.body, 3);
    }
    int pings;
    assert_true(raw_wait_eof(&r, &pings)); /* and then the close */
    raw_close(&r);
    destroy_server(s);
}

/* A half-close with no call in flight: the server closes at once. */
static void test_idle_half_close_closes(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), 0);
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_int_equal(0, shutdown(r.rc_fd, SHUT_WR));
    int pings;
    assert_true(raw_wait_eof(&r, &pings));
    assert_int_equal(0, pings); /* nothing to answer: no probe either */
    raw_close(&r);
    destroy_server(s);
}

/* Part of a frame, then the end of the stream: that frame can never end, so the connection
 * is lost and closed at once, the call in flight with it (its reply has nowhere to go). */
static void test_half_frame_then_end_closes(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), 0);
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.held_echo", "one", 3));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    uint8_t frame[128];
    size_t n = arpc_frame_encode_request(frame, ARPC_FRAME_REQUEST, 2, 0, 0, 0, "t.held_echo", 11, "two", 3);
    assert_true(raw_send(&r, frame, n - 2));
    assert_int_equal(0, shutdown(r.rc_fd, SHUT_WR));
    int pings;
    assert_true(raw_wait_eof(&r, &pings)); /* closed while the first call is still held */
    sem_post(&unblock);
    raw_close(&r);
    destroy_server(s);
}


/* A half-closed client cannot answer PINGs: its silence is by design, not a dead peer. A call
 * that takes longer than the heartbeat's patience (misses + 1 PINGs unanswered, besides the
 * probe) must still be answered. Found in review: the heartbeat closes the connection ("no
 * answer to N heartbeat PINGs") and the answer is lost. */
static void test_slow_call_outlives_heartbeat_after_half_close(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), 100); /* 2 misses */
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.held_echo", "one", 3));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    assert_int_equal(0, shutdown(r.rc_fd, SHUT_WR));
    struct raw_frame f;
    for (int pings = 0; pings < 1 + 2 + 1; pings++) { /* the probe, then more than 2 misses' worth */
        assert_true(raw_read(&r, &f, true));
        assert_int_equal(ARPC_FRAME_PING, f.f.f_kind);
    }
    sem_post(&unblock);
    read_skipping_pings(&r, &f);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(1, (int)f.f.f_xid);
    int pings;
    assert_true(raw_wait_eof(&r, &pings));
    raw_close(&r);
    destroy_server(s);
}


/* A client that closes for good (close(), not a half-close: the server cannot tell them apart
 * at the end of stream) with a call in flight: the probe written at the end of stream finds
 * it gone (a TCP peer answers it with a reset; a unix peer's close hangs the socket up), and
 * the connection closes at once, long before the heartbeat would, while the call is still
 * held; its late reply is dropped. */
static void full_close_found_at_once(const char *listen)
{
    char addr[256];
    arpc_server *s = make_server_at(listen, addr, sizeof(addr), LONG_HEARTBEAT_MS);
    struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.held_echo", "one", 3));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    raw_close(&r);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_open), 0, FOUND_AT_ONCE_MS));
    sem_post(&unblock); /* its reply goes nowhere */
    arpc_method_stats ms;
    assert_true(server_stats_caught_up(s, "t.held_echo", ARPC_OK, 1, &ms));
    destroy_server(s);
}

static void test_full_close_found_at_once_tcp(void **state)
{
    (void)state;
    full_close_found_at_once(NULL);
}

static void test_full_close_found_at_once_unix(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "unix:///tmp/arpc-half-close-%d.sock", (int)getpid());
    full_close_found_at_once(path);
}

/* A half-closed connection whose input is then held (its client's calls, with one on another
 * connection, reach max_calls_per_client) still watches for its hangup: closed for good, it is
 * found at once, long before the heartbeat. Found in review: the hold removed the watch. */
static void test_held_full_close_found_at_once(void **state)
{
    (void)state;
    char addr[256];
    arpc_server_options o = {.workers = 2, .heartbeat_ms = LONG_HEARTBEAT_MS, .heartbeat_misses = 2,
                             .max_calls_per_client = 2};
    arpc_server *s = make_server_with(&o, NULL, addr, sizeof(addr));
    struct raw_client gone, other;
    assert_true(raw_connect(&gone, addr, 93));
    assert_true(raw_request(&gone, 1, 0, 0, 0, "t.held_echo", "one", 3));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    assert_int_equal(0, shutdown(gone.rc_fd, SHUT_WR));
    wait_half_closed(s, 1);
    /* The probe arrived and stays unread, so the close below is a reset the server can see. */
    struct pollfd pfd = {.fd = gone.rc_fd, .events = POLLIN};
    assert_int_equal(1, poll(&pfd, 1, RAW_WAIT_MS));
    assert_true(raw_connect(&other, addr, 93)); /* the same client */
    assert_true(raw_request(&other, 2, 0, 0, 0, "t.held_echo", "two", 3));
    assert_true(latch_wait(2, RAW_WAIT_MS)); /* the client is at its limit: both are held */
    raw_close(&gone);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_open), 1, FOUND_AT_ONCE_MS));
    sem_post(&unblock);
    sem_post(&unblock);
    struct raw_frame f;
    assert_true(raw_read(&other, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(2, (int)f.f.f_xid);
    raw_close(&other);
    arpc_method_stats ms;
    assert_true(server_stats_caught_up(s, "t.held_echo", ARPC_OK, 2, &ms));
    destroy_server(s);
}

/* At-most-once: a retry (same client id and seq, on a new connection) of a call still running
 * attaches to it and waits for its result. Sent, then half-closed, it is a call in flight on
 * its connection like any other: answered, then the connection closes. Found in review: the
 * attached retry did not count, so the half-close closed its connection at once. */
static void test_attached_retry_answered_after_half_close(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), LONG_HEARTBEAT_MS);
    struct raw_client first, retry;
    assert_true(raw_connect(&first, addr, 91));
    assert_true(raw_request(&first, 1, 1, 0, 0, "t.held_echo", "one", 3));
    assert_true(latch_wait(1, RAW_WAIT_MS));
    raw_close(&first); /* the connection drops (found at once: see above) */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_open), 0, RAW_WAIT_MS));
    assert_true(raw_connect(&retry, addr, 91));
    assert_true(raw_request(&retry, 9, 1, 0, 0, "t.held_echo", "one", 3)); /* the same call */
    assert_int_equal(0, shutdown(retry.rc_fd, SHUT_WR));
    wait_half_closed(s, 2); /* the retry's end of stream is read, after its request */
    sem_post(&unblock);
    struct raw_frame f;
    read_skipping_pings(&retry, &f);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(9, (int)f.f.f_xid);
    assert_int_equal(3, f.body_len);
    assert_memory_equal("one", f.body, 3);
    int pings;
    assert_true(raw_wait_eof(&retry, &pings));
    raw_close(&retry);
    arpc_method_stats ms;
    assert_true(server_stats_caught_up(s, "t.held_echo", ARPC_OK, 1, &ms));
    assert_int_equal(1, ms.calls.started); /* it ran once */
    destroy_server(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_answered_after_half_close),
        cmocka_unit_test(test_idle_half_close_closes),
        cmocka_unit_test(test_half_frame_then_end_closes),
        cmocka_unit_test(test_slow_call_outlives_heartbeat_after_half_close),
        cmocka_unit_test(test_full_close_found_at_once_tcp),
        cmocka_unit_test(test_full_close_found_at_once_unix),
        cmocka_unit_test(test_held_full_close_found_at_once),
        cmocka_unit_test(test_attached_retry_answered_after_half_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
