/*
 * The server's flow limits (docs/SECURITY.md): calls in flight per connection and per client
 * id, and bytes per connection including the replies owed to calls already accepted. At a
 * limit the server stops reading from the connection (never refuses a call, never stalls
 * its loop): a raw client pipelines more calls than the limit to a handler that keeps them
 * unanswered, the server holds exactly at the limit while a well-behaved client is served,
 * and once the handler answers every call completes exactly once.
 *
 * Waits are for events (a semaphore per handler start, the hold's log line), each bounded;
 * nothing is timed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/reply_cache.h"
#include "support/long_poll.h"
#include "support/raw_client.h"
#include "support/test_util.h"
#include "transport/transport.h"

/* ---- the hold's log line, awaited ---- */

static char log_lines[256][512];
static unsigned log_count;
static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;

static void on_log(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    pthread_mutex_lock(&log_mtx);
    if (log_count < 256)
        snprintf(log_lines[log_count++], sizeof(log_lines[0]), "%s", line);
    pthread_mutex_unlock(&log_mtx);
    latch_add();
}

static bool log_has(const char *what)
{
    bool found = false;
    pthread_mutex_lock(&log_mtx);
    for (unsigned i = 0; i < log_count && !found; i++)
        found = strstr(log_lines[i], what) != NULL;
    pthread_mutex_unlock(&log_mtx);
    return found;
}

/* Waits (bounded) for a line containing what. */
static void expect_log(const char *what)
{
    int64_t until = now_ms() + 10000;
    for (unsigned seen = 0; !log_has(what) && now_ms() < until; seen++)
        latch_wait(seen + 1, 100); /* the next line, whatever it says */
    assert_true(log_has(what));
}

/* ---- handlers ---- */

/* t.gate: counts its start, then keeps the request unanswered until the test opens the gate
 * (the test answers those it kept); once open it echoes at once. */
static pthread_mutex_t gate_mtx = PTHREAD_MUTEX_INITIALIZER;
static bool gate_open;
static arpc_request *gate_kept[512];
static unsigned gate_nkept;
static atomic_uint gate_started;
static sem_t gate_sem; /* one post per start */

static void echo(arpc_request *req)
{
    size_t len;
    const void *p = arpc_request_data(req, &len);
    CHECK(arpc_reply(req, p, len) == ARPC_OK);
}

static void h_gate(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&gate_started, 1);
    pthread_mutex_lock(&gate_mtx);
    bool open = gate_open;
    if (!open) {
        CHECK(gate_nkept < sizeof(gate_kept) / sizeof(gate_kept[0]));
        gate_kept[gate_nkept++] = req;
    }
    pthread_mutex_unlock(&gate_mtx);
    sem_post(&gate_sem);
    if (open)
        echo(req);
}

static void gate_reset(void)
{
    gate_open = false;
    gate_nkept = 0;
    atomic_store(&gate_started, 0);
    sem_init(&gate_sem, 0, 0);
}

/* Opens the gate and answers every kept request (from this thread: any thread may reply). */
static void gate_release(void)
{
    arpc_request *kept[512];
    pthread_mutex_lock(&gate_mtx);
    gate_open = true;
    unsigned n = gate_nkept;
    memcpy(kept, gate_kept, n * sizeof(kept[0]));
    gate_nkept = 0;
    pthread_mutex_unlock(&gate_mtx);
    for (unsigned i = 0; i < n; i++)
        echo(kept[i]);
}

static void h_echo(arpc_request *req, void *ctx)
{
    (void)ctx;
    echo(req);
}

/* t.big: a 1 MiB reply, counting its calls. */
#define BIG (1u << 20)
static atomic_uint big_calls;

static void h_big(arpc_request *req, void *ctx)
{
    (void)ctx;
    static const uint8_t big[BIG];
    atomic_fetch_add(&big_calls, 1);
    CHECK(arpc_reply(req, big, sizeof(big)) == ARPC_OK);
}

/* t.slow_big: payload "s": kept as t.gate keeps its calls (a handler that replies late);
 * anything else: a 1 MiB reply, as t.big. */
static void h_slow_big(arpc_request *req, void *ctx)
{
    size_t len;
    const char *p = arpc_request_data(req, &len);
    if (len == 1 && p[0] == 's')
        h_gate(req, ctx);
    else
        h_big(req, ctx);
}

/* Answers every request the gate kept late (the server answered them at their deadlines:
 * their replies are dropped). */
static void gate_answer_late(void)
{
    pthread_mutex_lock(&gate_mtx);
    while (gate_nkept > 0)
        CHECK(arpc_reply(gate_kept[--gate_nkept], NULL, 0) == ARPC_ETIMEDOUT);
    pthread_mutex_unlock(&gate_mtx);
}

/* t.sized: a reply of the size its 4-byte payload asks for (up to BIG). */
static void h_sized(arpc_request *req, void *ctx)
{
    (void)ctx;
    static const uint8_t big[BIG];
    size_t len;
    const void *p = arpc_request_data(req, &len);
    uint32_t want = 0;
    if (len == sizeof(want))
        memcpy(&want, p, sizeof(want));
    CHECK(arpc_reply(req, big, want < BIG ? want : BIG) == ARPC_OK);
}

/* ---- a server and a well-behaved client ---- */

struct fixture {
    arpc_server *s;
    arpc_client *good;
    char addr[ARPC_ADDR_MAX];
};

static void start(struct fixture *fx, arpc_server_options so, const char *listen)
{
    pthread_mutex_lock(&log_mtx);
    log_count = 0;
    pthread_mutex_unlock(&log_mtx);
    latch_reset();
    gate_reset();
    atomic_store(&big_calls, 0);
    atomic_store(&bad_line, 0);
    arpc_set_logger(on_log, NULL, ARPC_LOG_DEBUG);
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.gate", h_gate, NULL, NULL));
    arpc_method_options inl = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.gate_inline", h_gate, NULL, &inl));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.echo", h_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.big", h_big, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.sized", h_sized, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.slow_big", h_slow_big, NULL, NULL));
    long_poll_reset();
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.poll", long_poll, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->s, listen, fx->addr, sizeof(fx->addr)));
    assert_int_equal(ARPC_OK, arpc_client_connect(&fx->good, fx->addr, NULL));
}

static void stop(struct fixture *fx)
{
    arpc_client_close(fx->good);
    arpc_server_destroy(fx->s);
    long_poll_fini();
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    sem_destroy(&gate_sem);
    assert_int_equal(0, atomic_load(&bad_line));
}

static void good_call(arpc_client *c) { echo_ping(c, 10000); }

/* Waits for n handler starts of t.gate. */
static void wait_started(unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        assert_true(sem_wait_secs(&gate_sem, TEST_WAIT_S));
}

/* Sends calls first..first+n-1 to t.gate, each carrying its xid. */
static void send_gate_calls(struct raw_client *r, uint64_t first, unsigned n)
{
    for (uint64_t xid = first; xid < first + n; xid++)
        assert_true(raw_request(r, xid, 0, 0, 0, "t.gate", &xid, sizeof(xid)));
}

/* Reads n replies: each a REPLY echoing its own xid, xids first..first+n-1 exactly once. */
static void read_gate_replies(struct raw_client *r, uint64_t first, unsigned n)
{
    bool seen[512] = {false};
    assert_true(n <= 512);
    for (unsigned i = 0; i < n; i++) {
        struct raw_frame f;
        assert_true(raw_read(r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        assert_true(f.f.f_xid >= first && f.f.f_xid < first + n);
        assert_false(seen[f.f.f_xid - first]);
        seen[f.f.f_xid - first] = true;
        uint64_t echoed;
        assert_int_equal(sizeof(echoed), f.body_len);
        memcpy(&echoed, f.body, sizeof(echoed));
        assert_int_equal(f.f.f_xid, echoed);
    }
}

/* ---- the limits ---- */

/* One connection pipelines 5x its limit: exactly the limit is read and started while the
 * handler keeps them; another client is served meanwhile (twice, so the loop went round with
 * the held connection's calls waiting in its socket); once answered, all complete once. */
static void test_calls_per_conn_hold_at_the_limit(void **state)
{
    (void)state;
    enum { LIMIT = 8, CALLS = 5 * LIMIT };
    struct fixture fx;
    start(&fx, (arpc_server_options){.max_calls_per_conn = LIMIT, .workers = 2}, "tcp://127.0.0.1:0");
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 31));
    send_gate_calls(&r, 1, CALLS);
    wait_started(LIMIT);
    expect_log("(max_calls_per_conn)");
    good_call(fx.good);
    good_call(fx.good);
    assert_int_equal(LIMIT, atomic_load(&gate_started)); /* held exactly at the limit */
    gate_release();
    read_gate_replies(&r, 1, CALLS);
    assert_int_equal(CALLS, atomic_load(&gate_started));
    raw_close(&r);
    stop(&fx);
}

/* A call read together with others and held unparsed at the limit keeps the time it arrived:
 * its budget counts from then, not from when the hold lets it through, so one held past its
 * deadline is refused ARPC_EEXPIRED instead of running for a caller that gave up. The two
 * calls go in one send, so the server reads them in one read; its arrival stamp is taken
 * before the first call's handler starts, which the test waits for, then lets the second
 * call's budget run out (a wait for the clock, not for another thread). */
static void held_call_keeps_its_arrival_time(const char *method)
{
    enum { BUDGET_MS = 50 };
    struct fixture fx;
    start(&fx, (arpc_server_options){.max_calls_per_conn = 1, .workers = 2}, "tcp://127.0.0.1:0");
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 35));
    uint8_t both[2 * 64];
    uint64_t xid1 = 1, xid2 = 2;
    uint16_t mlen = (uint16_t)strlen(method);
    size_t n = arpc_frame_encode_request(both, ARPC_FRAME_REQUEST, xid1, 0, 0, 0, method, mlen, &xid1, sizeof(xid1));
    assert_true(n + arpc_frame_request_size(mlen, sizeof(xid2)) <= sizeof(both));
    n += arpc_frame_encode_request(both + n, ARPC_FRAME_REQUEST, xid2, 0, 0, BUDGET_MS, method, mlen, &xid2,
                                   sizeof(xid2));
    assert_true(raw_send(&r, both, n));
    wait_started(1);
    int64_t due = now_ms() + BUDGET_MS + 2;
    while (now_ms() < due)
        sleep_ms(1); /* the budget running out is the subject, not a wait */
    gate_release();
    struct raw_frame f;
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(xid1, f.f.f_xid);
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(xid2, f.f.f_xid);
    assert_int_equal(ARPC_EEXPIRED, f.f.f_code);
    assert_int_equal(1, atomic_load(&gate_started)); /* the second never ran */
    raw_close(&r);
    stop(&fx);
}

static void test_held_call_keeps_its_arrival_time(void **state)
{
    (void)state;
    held_call_keeps_its_arrival_time("t.gate");
}

/* The same for a handler inline on the loop, which otherwise runs as its call is parsed. */
static void test_held_inline_call_keeps_its_arrival_time(void **state)
{
    (void)state;
    held_call_keeps_its_arrival_time("t.gate_inline");
}

/* The same client id on two connections: their calls count together; at the limit both
 * are held (neither passes it), and both complete once answered. */
static void test_calls_per_client_over_two_connections(void **state)
{
    (void)state;
    enum { LIMIT = 8, EACH = 12 };
    struct fixture fx;
    start(&fx, (arpc_server_options){.max_calls_per_client = LIMIT, .workers = 2}, "tcp://127.0.0.1:0");
    struct raw_client a, b;
    assert_true(raw_connect(&a, fx.addr, 41));
    assert_true(raw_connect(&b, fx.addr, 41));
    send_gate_calls(&a, 1, EACH);
    send_gate_calls(&b, 1, EACH);
    wait_started(LIMIT);
    expect_log("(max_calls_per_client)");
    good_call(fx.good); /* another client id is not held */
    good_call(fx.good);
    assert_int_equal(LIMIT, atomic_load(&gate_started));
    gate_release();
    read_gate_replies(&a, 1, EACH);
    read_gate_replies(&b, 1, EACH);
    assert_int_equal(2 * EACH, atomic_load(&gate_started));
    raw_close(&a);
    raw_close(&b);
    stop(&fx);
}

/* Duplicates of running at-most-once calls wait for the originals' results (the reply cache
 * attaches them): they are not calls in flight. Limit 4: seq 1 and 2 run, their duplicates
 * attach, then seq 3 and 4 run and hold the connection; seq 5 waits. Counted, the duplicates
 * would have held it at 2 calls. */
static void test_attached_duplicates_do_not_count(void **state)
{
    (void)state;
    enum { LIMIT = 4 };
    struct fixture fx;
    start(&fx, (arpc_server_options){.max_calls_per_conn = LIMIT, .workers = 2}, "tcp://127.0.0.1:0");
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 61));
    for (uint64_t seq = 1; seq <= 2; seq++) /* xid = seq; the payload says which call */
        assert_true(raw_request(&r, seq, seq, 0, 0, "t.gate", &seq, sizeof(seq)));
    for (uint64_t seq = 1; seq <= 2; seq++) /* the same calls again, under xid 10 + seq */
        assert_true(raw_request(&r, 10 + seq, seq, 0, 0, "t.gate", &seq, sizeof(seq)));
    for (uint64_t seq = 3; seq <= 5; seq++)
        assert_true(raw_request(&r, seq, seq, 0, 0, "t.gate", &seq, sizeof(seq)));
    wait_started(LIMIT);
    expect_log("(max_calls_per_conn)");
    good_call(fx.good);
    assert_int_equal(LIMIT, atomic_load(&gate_started));
    gate_release();
    /* Every xid answered once, a duplicate with its original's result. */
    bool seen[16] = {false};
    for (int i = 0; i < 7; i++) {
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        uint64_t xid = f.f.f_xid, call;
        assert_true((xid >= 1 && xid <= 5) || xid == 11 || xid == 12);
        assert_false(seen[xid]);
        seen[xid] = true;
        assert_int_equal(sizeof(call), f.body_len);
        memcpy(&call, f.body, sizeof(call));
        assert_int_equal(xid > 10 ? xid - 10 : xid, call);
    }
    assert_int_equal(5, atomic_load(&gate_started)); /* each call ran once */
    raw_close(&r);
    stop(&fx);
}

/* Duplicates of one running call: the first ARPC_RC_MAX_WAITERS wait for its result, any
 * more are refused at once (ARPC_EOVERLOADED, not run): one cheap request each must not grow
 * the server's list of waiters, and the copies of the reply, without end. */
static void test_crowded_duplicates_are_refused(void **state)
{
    (void)state;
    enum { DUPS = ARPC_RC_MAX_WAITERS + 2 };
    struct fixture fx;
    start(&fx, (arpc_server_options){0}, "tcp://127.0.0.1:0");
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 63));
    uint64_t seq = 1;
    assert_true(raw_request(&r, 1, seq, 0, 0, "t.gate", &seq, sizeof(seq)));
    wait_started(1);
    for (uint64_t i = 0; i < DUPS; i++) /* the same call under xids 101.. */
        assert_true(raw_request(&r, 101 + i, seq, 0, 0, "t.gate", &seq, sizeof(seq)));
    /* The two over the bound are answered while the call still runs, in arrival order. */
    for (uint64_t i = ARPC_RC_MAX_WAITERS; i < DUPS; i++) {
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
        assert_int_equal(101 + i, f.f.f_xid);
        assert_int_equal(ARPC_EABANDONED, f.f.f_code); /* it runs: "may have run" */
    }
    gate_release();
    bool seen[101 + ARPC_RC_MAX_WAITERS] = {false};
    for (int i = 0; i < 1 + ARPC_RC_MAX_WAITERS; i++) {
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        uint64_t xid = f.f.f_xid, call;
        assert_true(xid == 1 || (xid >= 101 && xid < 101 + ARPC_RC_MAX_WAITERS));
        assert_false(seen[xid]);
        seen[xid] = true;
        assert_int_equal(sizeof(call), f.body_len);
        memcpy(&call, f.body, sizeof(call));
        assert_int_equal(seq, call);
    }
    assert_int_equal(1, atomic_load(&gate_started)); /* it ran once */
    raw_close(&r);
    stop(&fx);
}

/* A client that reconnects again and again while its call runs leaves a duplicate on every
 * connection it lost; those (nobody left to answer) make room for a live retry instead of
 * crowding it out. Here more than ARPC_RC_MAX_WAITERS connections each send the duplicate
 * (taken up: a later call on the same connection is answered), then reset; a live retry
 * after them is attached and gets the one run's reply. (Before, it was refused: "did not
 * run", for a call that was running.) */
static void test_duplicates_of_lost_connections_make_room(void **state)
{
    (void)state;
    enum { LOST = ARPC_RC_MAX_WAITERS + 1 };
    struct fixture fx;
    start(&fx, (arpc_server_options){0}, "tcp://127.0.0.1:0");
    struct raw_client r, dup, live;
    assert_true(raw_connect(&r, fx.addr, 64));
    uint64_t seq = 1;
    assert_true(raw_request(&r, 1, seq, 0, 0, "t.gate", &seq, sizeof(seq)));
    wait_started(1);
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(fx.s, &st));
    uint64_t closed = st.connections_closed;
    for (uint64_t i = 0; i < LOST; i++) {
        assert_true(raw_connect(&dup, fx.addr, 64));
        assert_true(raw_request(&dup, 101 + i, seq, 0, 0, "t.gate", &seq, sizeof(seq)));
        assert_true(raw_request(&dup, 1000, 0, 0, 0, "t.echo", "s", 1)); /* in order: after the duplicate */
        struct raw_frame f;
        assert_true(raw_read(&dup, &f, false));
        assert_int_equal(1000, f.f.f_xid);
        struct linger rst = {.l_onoff = 1, .l_linger = 0};
        assert_int_equal(0, setsockopt(dup.rc_fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst)));
        raw_close(&dup); /* a reset: the server closes it at once */
        assert_true(server_stat_reaches(fx.s, offsetof(arpc_server_stats, connections_closed), closed + i + 1, TEST_WAIT_MS));
    }
    assert_true(raw_connect(&live, fx.addr, 64));
    assert_true(raw_request(&live, 300, seq, 0, 0, "t.gate", &seq, sizeof(seq)));
    assert_true(raw_request(&live, 1001, 0, 0, 0, "t.echo", "s", 1));
    struct raw_frame f;
    assert_true(raw_read(&live, &f, false));
    assert_int_equal(1001, f.f.f_xid); /* the retry was not refused: it waits */
    gate_release();
    assert_true(raw_read(&live, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(300, f.f.f_xid);
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(1, f.f.f_xid);
    assert_int_equal(1, atomic_load(&gate_started)); /* it ran once */
    raw_close(&live);
    raw_close(&r);
    stop(&fx);
}

/* A long poll of a client's, begun on a connection since lost, still counts against
 * max_calls_per_client (1 here), so the client's next connection is held from its first call:
 * the copy of the long poll it sends there waits unread behind the hold, and so did the CANCEL
 * arpc_future_cancel sends for it (naming the copy's xid: the seq with ARPC_XID_SEQ_BIT), for
 * ever, since only that call's end lets the hold go (a helper's review). The CANCEL passes the
 * hold now and cancels the call by its seq; the hold ends, and the copy, read then, gets the
 * call's result. */
enum { HELD_COPY_CLIENT = 77, HELD_COPY_INCARNATION = 7 };
static const uint64_t held_copy_xid = ARPC_XID_SEQ_BIT | 1; /* arpc's client's xid for seq 1 */

/* The held client's connection: one client object's (an incarnation, as arpc's client says). */
static void held_client_connect(struct fixture *fx, struct raw_client *r)
{
    assert_true(raw_connect_with(r, fx->addr, HELD_COPY_CLIENT, NULL, HELD_COPY_INCARNATION));
}

/* A server with max_calls_per_client 1; a long poll (seq 1) begun on a connection since lost;
 * the client's next connection in next, held (with the long poll's copy unread behind it if
 * send_copy). */
static void hold_the_client(struct fixture *fx, struct raw_client *next, bool send_copy)
{
    start(fx, (arpc_server_options){.max_calls_per_client = 1}, "tcp://127.0.0.1:0");
    struct raw_client lost;
    held_client_connect(fx, &lost);
    assert_true(raw_request(&lost, held_copy_xid, 1, 0, 0, "t.poll", "p", 1));
    assert_true(long_poll_wait_started(TEST_WAIT_MS / 1000));
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(fx->s, &st));
    raw_close(&lost); /* numbered: it runs on */
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, connections_closed), st.connections_closed + 1,
                                    TEST_WAIT_MS));
    held_client_connect(fx, next);
    if (send_copy)
        assert_true(raw_request(next, held_copy_xid, 1, 0, 0, "t.poll", "p", 1));
    else
        assert_true(raw_request(next, 9, 0, 0, 0, "t.echo", "e", 1)); /* another call */
    expect_log("(max_calls_per_client)"); /* held: what it sent is unread */
    assert_int_equal(0, long_poll_cancelled());
}

static void test_cancel_of_a_held_copy_reaches_its_call(void **state)
{
    (void)state;
    struct fixture fx;
    struct raw_client next;
    const uint64_t xid = held_copy_xid;
    hold_the_client(&fx, &next, true);
    assert_true(raw_cancel(&next, xid));
    assert_true(long_poll_wait_cancelled(TEST_WAIT_MS / 1000));
    struct raw_frame f; /* the copy, read once the hold ended: the call's result */
    assert_true(raw_read(&next, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_ERROR, f.f.f_kind);
    assert_int_equal(ARPC_EHANDLER, f.f.f_code); /* the long poll's answer to its cancel */
    assert_true(raw_request(&next, 5, 0, 1, 0, "t.echo", "e", 1)); /* the connection serves again */
    assert_true(raw_read(&next, &f, false));
    assert_int_equal(5, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_int_equal(1, long_poll_runs()); /* the copy did not run it again */
    raw_close(&next);
    stop(&fx);
}

/* As above, but the client closes instead (arpc_client_close: a goodbye, read by the held
 * connection's look through its buffer): the long poll its copy waits for behind the hold is
 * cancelled. Before, a goodbye cancelled only this connection's calls and the originals of
 * copies read here: the long poll ran on till the server's stop. */
static void test_goodbye_behind_a_hold_cancels_the_held_copys_call(void **state)
{
    (void)state;
    struct fixture fx;
    struct raw_client next;
    hold_the_client(&fx, &next, true);
    assert_true(raw_goodbye(&next));
    assert_true(long_poll_wait_cancelled(TEST_WAIT_MS / 1000));
    assert_int_equal(1, long_poll_runs());
    raw_close(&next);
    stop(&fx);
}

/* The copy far back in the held buffer (behind 80 other calls the client sent meanwhile): its
 * CANCEL still finds it. The first version looked 64 frames back only (a review: the 65th
 * stayed held, and so did the long poll). */
static void test_held_copy_far_back_is_cancelled(void **state)
{
    (void)state;
    enum { AHEAD = 80 };
    struct fixture fx;
    struct raw_client next;
    hold_the_client(&fx, &next, false); /* one call (xid 9) held already */
    for (uint64_t xid = 10; xid < 10 + AHEAD; xid++)
        assert_true(raw_request(&next, xid, 0, 0, 0, "t.echo", "e", 1));
    assert_true(raw_request(&next, held_copy_xid, 1, 0, 0, "t.poll", "p", 1)); /* the copy */
    assert_true(raw_cancel(&next, held_copy_xid));
    assert_true(long_poll_wait_cancelled(TEST_WAIT_MS / 1000));
    struct raw_frame f; /* the hold ends: every call is answered, the copy with the call's result */
    for (int i = 0; i < AHEAD + 2; i++) {
        assert_true(raw_read(&next, &f, false));
        if (f.f.f_xid == held_copy_xid)
            assert_int_equal(ARPC_EHANDLER, f.f.f_code);
        else
            assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    }
    assert_int_equal(1, long_poll_runs());
    raw_close(&next);
    stop(&fx);
}

/* A CANCEL on the held connection whose xid names no call (an answered one's, late) cancels
 * nothing, whatever its bits: here the long poll's seq with ARPC_XID_SEQ_BIT, but nothing under
 * that xid is buffered (a review: the first version took bit 62 for arpc's client's numbering,
 * which is no rule of the protocol, and cancelled the long poll). The PING sent behind it is
 * answered by the same look-through, after the CANCEL was judged. */
static void test_held_cancel_naming_nothing_cancels_nothing(void **state)
{
    (void)state;
    struct fixture fx;
    struct raw_client next;
    hold_the_client(&fx, &next, false);
    assert_true(raw_cancel(&next, held_copy_xid));
    uint8_t ping[ARPC_FRAME_HEADER_SIZE];
    arpc_frame_encode_header(ping, ARPC_FRAME_PING, 42, 0);
    assert_true(raw_send(&next, ping, sizeof(ping)));
    struct raw_frame f;
    assert_true(raw_read(&next, &f, true));
    assert_int_equal(ARPC_FRAME_PONG, f.f.f_kind);
    assert_int_equal(42, f.f.f_xid);
    assert_int_equal(0, long_poll_cancelled());
    raw_close(&next);
    stop(&fx); /* the stop cancels the long poll */
}

/* A client that never reads asks for 1 MiB replies, 64 pipelined. A unix socket, whose
 * kernel buffer takes a few hundred KiB, so what the server holds is what it queued. The
 * wait is for the server's hold line whatever its reason: at the default bound the replies
 * queued can pass the output backlog mark (8 MiB) before the bytes hold is said, and the
 * hold lines are throttled to one a second, so the bytes line may never come. Either hold
 * stops reading; the count of calls accepted is what the test checks. */
static unsigned never_reading_calls(struct fixture *fx, uint64_t client_id, const char *method)
{
    struct raw_client r;
    assert_true(raw_connect(&r, fx->addr, client_id));
    for (uint64_t xid = 1; xid <= 64; xid++)
        assert_true(raw_request(&r, xid, 0, 0, 0, method, "k", 1));
    expect_log("holding input from");
    good_call(fx->good); /* a well-behaved client is still served */
    good_call(fx->good);
    unsigned n = atomic_load(&big_calls);
    raw_close(&r);
    return n;
}

static void unix_addr(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "unix:///tmp/arpc-%s-%d.sock", name, getpid());
    unlink(buf + 7);
}

/* Reply amplification at the default bound (16 MiB): before the method's first reply each
 * call is counted at 16 MiB / 16 = 1 MiB, so 16 calls are accepted, not 64 (without the
 * bound: all 64, 64 MiB queued). */
static void test_never_reading_client_bounded_by_default(void **state)
{
    (void)state;
    char addr[128];
    unix_addr(addr, sizeof(addr), "flow-default");
    struct fixture fx;
    start(&fx, (arpc_server_options){.workers = 2}, addr);
    unsigned n = never_reading_calls(&fx, 51, "t.big");
    print_message("calls accepted from the never-reading client: %u (16 MiB bound, 1 MiB replies)\n", n);
    assert_in_range(n, 1, 16 + 1);
    stop(&fx);
    unlink(addr + 7);
}

/* Once the method's replies are known to be 1 MiB, a 4 MiB bound accepts about 4 of them. */
static void test_never_reading_client_bounded_by_learnt_size(void **state)
{
    (void)state;
    char addr[128];
    unix_addr(addr, sizeof(addr), "flow-learnt");
    struct fixture fx;
    start(&fx, (arpc_server_options){.workers = 2, .max_frame = 4u << 20, .max_conn_bytes = 4u << 20}, addr);
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(fx.good, "t.big", "k", 1, &reply, &len, 10000));
    assert_int_equal(BIG, len);
    arpc_free(reply);
    atomic_store(&big_calls, 0);
    unsigned n = never_reading_calls(&fx, 52, "t.big");
    print_message("calls accepted from the never-reading client: %u (4 MiB bound, 1 MiB replies)\n", n);
    assert_in_range(n, 1, 4 + 1);
    stop(&fx);
    unlink(addr + 7);
}

/* A method whose handler answers after its callers' deadlines: the server answers them
 * ARPC_ETIMEDOUT and drops the late replies, which taught the bytes bound nothing, so the
 * first-reply guess (max_conn_bytes/16) held its connections at 16 calls for good (an
 * integrator's trial: 15 in flight of a window of 1,000). A late reply teaches its real size
 * now (not the server's short answer: a client with short deadlines could then drive a
 * method's expected size down, and have large replies admitted far past the bound). */
static void test_late_replies_teach_the_bytes_bound(void **state)
{
    (void)state;
    enum { N = 40 }; /* over the 16 the first-reply guess lets in */
    struct fixture fx;
    start(&fx, (arpc_server_options){.workers = 2}, "tcp://127.0.0.1:0");
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 61));
    uint64_t xid = 1, payload = 1;
    /* Numbered (seq 1), answered ARPC_ETIMEDOUT (sent again if a loaded worker took it up too
     * late to start it: ARPC_EEXPIRED). */
    assert_int_equal(ARPC_ETIMEDOUT, raw_call_taken_in_time(&r, &xid, 1, 0, 100, "t.gate", &payload, sizeof(payload)));
    wait_started(1);
    pthread_mutex_lock(&gate_mtx);
    arpc_request *late = gate_kept[--gate_nkept];
    pthread_mutex_unlock(&gate_mtx);
    assert_int_equal(ARPC_ETIMEDOUT, arpc_reply(late, &payload, sizeof(payload))); /* late: dropped */
    /* Its retry is answered with the late result, on the loop that learnt from it. */
    xid++;
    assert_true(raw_request(&r, xid, 1, 0, 0, "t.gate", &payload, sizeof(payload)));
    struct raw_frame f;
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(xid, f.f.f_xid);
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    xid++;
    send_gate_calls(&r, xid, N);
    wait_started(N); /* all read at once, not 16 */
    gate_release();
    read_gate_replies(&r, xid, N);
    raw_close(&r);
    stop(&fx);
}

/* The server's own answer at a deadline teaches nothing: after many short-deadline calls
 * to a method that has never replied, a never-reading client asking for its 1 MiB replies
 * still gets no more than the guess lets in. */
static void test_deadline_answers_teach_nothing(void **state)
{
    (void)state;
    char addr[128];
    snprintf(addr, sizeof(addr), "unix:///tmp/arpc-flow-short-%d.sock", getpid());
    unlink(addr + 7);
    struct fixture fx;
    start(&fx, (arpc_server_options){.workers = 2}, addr);
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 62));
    uint64_t xid = 1;
    for (int i = 0; i < 8; i++, xid++) {
        assert_int_equal(ARPC_ETIMEDOUT, raw_call_taken_in_time(&r, &xid, 0, 0, 20, "t.slow_big", "s", 1));
        wait_started(1);
    }
    raw_close(&r);
    unsigned n = never_reading_calls(&fx, 63, "t.slow_big");
    print_message("calls accepted after 8 answers at the deadline: %u (16 MiB bound, 1 MiB replies)\n", n);
    assert_in_range(n, 1, 16 + 1);
    gate_answer_late();
    stop(&fx);
    unlink(addr + 7);
}

/* One-way messages count as calls in flight until their handler is done with them: a flood
 * of them to a slow method holds the connection at the limit (they wait in the socket) and
 * every one runs, once, as the earlier ones finish. */
static void test_oneway_messages_count(void **state)
{
    (void)state;
    enum { LIMIT = 4, N = 10 };
    struct fixture fx;
    start(&fx, (arpc_server_options){.max_calls_per_conn = LIMIT, .workers = 2}, "tcp://127.0.0.1:0");
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 64));
    uint8_t buf[64];
    for (uint64_t xid = 1; xid <= N; xid++) {
        size_t n = arpc_frame_encode_request(buf, ARPC_FRAME_ONEWAY, xid, 0, 0, 0, "t.gate", 6, &xid, sizeof(xid));
        assert_true(raw_send(&r, buf, n));
    }
    wait_started(LIMIT);
    expect_log("(max_calls_per_conn)");
    good_call(fx.good); /* another connection is served meanwhile */
    assert_int_equal(LIMIT, atomic_load(&gate_started));
    gate_release(); /* from now on every start replies at once */
    wait_started(N - LIMIT);
    assert_int_equal(N, atomic_load(&gate_started));
    good_call(fx.good);
    raw_close(&r);
    stop(&fx);
}

/* The reply-size estimate is the method's, and small replies lower it: after 20 of them a
 * never-reading client's 64 requests for 1 MiB replies are all accepted (each counted at a
 * few KiB). The bound cannot hold them, so the hard cap does: over 4 x max_conn_bytes of
 * queued output the connection is closed (logged), and what it queued goes with it. */
static void test_estimate_pushed_down_hits_the_hard_cap(void **state)
{
    (void)state;
    char addr[128];
    unix_addr(addr, sizeof(addr), "flow-hard");
    struct fixture fx;
    start(&fx, (arpc_server_options){.workers = 2, .max_frame = 1u << 20, .max_conn_bytes = 1u << 20}, addr);
    uint32_t small = 16, mib = BIG;
    for (int i = 0; i < 20; i++) {
        void *reply = NULL;
        size_t len = 0;
        assert_int_equal(ARPC_OK, arpc_call(fx.good, "t.sized", &small, sizeof(small), &reply, &len, 10000));
        assert_int_equal(small, len);
        arpc_free(reply);
    }
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 53));
    /* All 64 in one write, so they are read (and accepted) before the first reply comes. */
    static uint8_t reqs[64 * 64];
    size_t len = 0;
    for (uint64_t xid = 1; xid <= 64; xid++)
        len += arpc_frame_encode_request(reqs + len, ARPC_FRAME_REQUEST, xid, 0, 0, 0, "t.sized", 7, &mib, sizeof(mib));
    assert_true(raw_send(&r, reqs, len));
    expect_log("(4 x max_conn_bytes)");
    assert_true(fd_wait_eof(r.rc_fd, 10000)); /* what was written before the cap, then the end */
    good_call(fx.good);
    raw_close(&r);
    stop(&fx);
    unlink(addr + 7);
}

/* The cap is 4 x max_conn_bytes, not more: 6 replies of 1 MiB (6 MiB queued, less the few
 * hundred KiB a unix socket takes) to a never-reading client close the connection. A host
 * whose sockets take more (net.core.wmem_default) gets as many more replies. */
static void test_hard_cap_is_four_times_max_conn_bytes(void **state)
{
    (void)state;
    enum { N_MAX = 32 };
    long wmem = 212992; /* Debian's default */
    FILE *f = fopen("/proc/sys/net/core/wmem_default", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld", &wmem) != 1)
            wmem = 212992;
        fclose(f);
    }
    uint64_t N = 5 + ((uint64_t)wmem * 2 + (1u << 20) - 1) / (1u << 20); /* 6 by default */
    assert_true(N <= N_MAX);
    char addr[128];
    unix_addr(addr, sizeof(addr), "flow-hard6");
    struct fixture fx;
    start(&fx, (arpc_server_options){.workers = 2, .max_frame = 1u << 20, .max_conn_bytes = 1u << 20}, addr);
    uint32_t small = 16, mib = BIG;
    for (int i = 0; i < 20; i++) { /* the estimate down: all N are accepted */
        void *reply = NULL;
        size_t len = 0;
        assert_int_equal(ARPC_OK, arpc_call(fx.good, "t.sized", &small, sizeof(small), &reply, &len, 10000));
        arpc_free(reply);
    }
    struct raw_client r;
    assert_true(raw_connect(&r, fx.addr, 54));
    static uint8_t reqs[N_MAX * 64];
    size_t len = 0;
    for (uint64_t xid = 1; xid <= N; xid++)
        len += arpc_frame_encode_request(reqs + len, ARPC_FRAME_REQUEST, xid, 0, 0, 0, "t.sized", 7, &mib, sizeof(mib));
    assert_true(raw_send(&r, reqs, len));
    expect_log("(4 x max_conn_bytes)");
    assert_true(fd_wait_eof(r.rc_fd, 10000));
    good_call(fx.good);
    raw_close(&r);
    stop(&fx);
    unlink(addr + 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_per_conn_hold_at_the_limit),
        cmocka_unit_test(test_held_call_keeps_its_arrival_time),
        cmocka_unit_test(test_held_inline_call_keeps_its_arrival_time),
        cmocka_unit_test(test_calls_per_client_over_two_connections),
        cmocka_unit_test(test_attached_duplicates_do_not_count),
        cmocka_unit_test(test_crowded_duplicates_are_refused),
        cmocka_unit_test(test_duplicates_of_lost_connections_make_room),
        cmocka_unit_test(test_cancel_of_a_held_copy_reaches_its_call),
        cmocka_unit_test(test_goodbye_behind_a_hold_cancels_the_held_copys_call),
        cmocka_unit_test(test_held_cancel_naming_nothing_cancels_nothing),
        cmocka_unit_test(test_held_copy_far_back_is_cancelled),
        cmocka_unit_test(test_oneway_messages_count),
        cmocka_unit_test(test_late_replies_teach_the_bytes_bound),
        cmocka_unit_test(test_deadline_answers_teach_nothing),
        cmocka_unit_test(test_never_reading_client_bounded_by_default),
        cmocka_unit_test(test_never_reading_client_bounded_by_learnt_size),
        cmocka_unit_test(test_estimate_pushed_down_hits_the_hard_cap),
        cmocka_unit_test(test_hard_cap_is_four_times_max_conn_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
