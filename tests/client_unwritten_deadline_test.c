/*
 * A call whose deadline comes while its request still waits, unwritten, in the client's output
 * queue (the server stopped reading, the socket is full) is taken back out and ends
 * ARPC_EUNREACHABLE, "did not run", and the server never sees it, however late it catches up.
 * Before, such a call ended ARPC_ETIMEDOUT ("may have run") and its request was still written
 * once the server read again, with the budget it was given when queued: a server that had
 * fallen behind then ran calls whose callers had long given up.
 *
 * A scripted server (support/raw_server.h) says HELLO and reads nothing until the test has
 * every outcome; then it reads to the end, noting each request's number (its payload's first
 * four bytes). Large requests (a block of their own) fill the socket, small ones (in the call's
 * record) queue behind them: both kinds of request are taken out. Checked: each call ends
 * ARPC_ETIMEDOUT or ARPC_EUNREACHABLE, some of each kind end EUNREACHABLE, and no request of
 * a call that ended EUNREACHABLE reaches the server.
 *
 * A call cancelled while its request waits so is taken back the same way: the server reads
 * neither the request nor a CANCEL for it.
 *
 * Then against an arpc server that stops reading (its one worker held, two calls in flight a
 * connection at most), over tcp:// and over tls://, where the stream owes its retry the record
 * it began (s_write_owed): once the worker goes on and the client has closed, the server has
 * read exactly the requests of the calls that did not end EUNREACHABLE. (Over TLS this also
 * needs the close's half-close: close_linger_test.) And cancelled there, over both, requests
 * still queued whole never reach the server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <semaphore.h>
#include <stdatomic.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "arpc/loop.h"
#include "arpc/server.h"
#include "arpc/stats.h"
#include "transport/transport.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"
#ifdef ARPC_TEST_WITH_TLS
#include "support/tls_certs.h"
#endif

#define LARGE_CALLS 320u  /* 20 MiB: more than loopback's socket buffers take */
#define LARGE_SIZE (64u * 1024u)
#define SMALL_CALLS 200u
#define SMALL_SIZE 16u
#define CALLS (LARGE_CALLS + SMALL_CALLS)
#define DEADLINE_MS 1500

struct silent_server {
    sem_t ss_go;            /* the test has every outcome: read now */
    bool ss_seen[CALLS];    /* a request with this number reached the server */
    uint64_t ss_xid[CALLS]; /* and its xid */
    unsigned ss_requests;
    uint64_t ss_cancelled[CALLS]; /* the xids CANCELs named, in order */
    unsigned ss_cancels;
};

/* Says HELLO, reads nothing until told, then reads every frame to the client's close. */
static bool read_late(struct raw_server *s, void *arg)
{
    struct silent_server *ss = arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    bool ok = raw_server_accept_dedup(s, r) && sem_wait_secs(&ss->ss_go, TEST_WAIT_S);
    struct raw_frame f;
    while (ok && raw_read(r, &f, false)) {
        if (f.f.f_kind == ARPC_FRAME_CANCEL && ss->ss_cancels < CALLS)
            ss->ss_cancelled[ss->ss_cancels++] = f.f.f_xid;
        if (f.f.f_kind != ARPC_FRAME_REQUEST)
            continue;
        uint32_t n;
        if (f.f.f_payload_len < sizeof(n))
            return false;
        memcpy(&n, f.f.f_payload, sizeof(n));
        if (n >= CALLS)
            return false;
        ss->ss_seen[n] = true;
        ss->ss_xid[n] = f.f.f_xid;
        ss->ss_requests++;
    }
    raw_close(r);
    free(r);
    return ok;
}

static void silent_server_start(struct silent_server *ss, struct raw_server *s)
{
    memset(ss, 0, sizeof(*ss));
    assert_int_equal(0, sem_init(&ss->ss_go, 0, 0));
    raw_server_start(s, read_late, ss);
}

/* The large calls, then the small ones, to t.m, each numbered by its payload's first four
 * bytes. */
static void start_numbered_calls(arpc_client *c, arpc_future **f, int64_t deadline_ms)
{
    static uint8_t payload[LARGE_SIZE];
    for (uint32_t i = 0; i < CALLS; i++) {
        memcpy(payload, &i, sizeof(i));
        f[i] = arpc_call_async(c, "t.m", payload, i < LARGE_CALLS ? LARGE_SIZE : SMALL_SIZE, deadline_ms);
        assert_non_null(f[i]);
    }
}

static void test_unwritten_request_is_taken_back(void **state)
{
    (void)state;
    static struct silent_server ss;
    struct raw_server s;
    silent_server_start(&ss, &s);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, NULL));
    static arpc_future *f[CALLS];
    start_numbered_calls(c, f, DEADLINE_MS);
    unsigned unreachable[2] = {0, 0}, timed_out = 0;
    static int code[CALLS];
    for (uint32_t i = 0; i < CALLS; i++) {
        code[i] = arpc_future_wait_for(f[i], TEST_WAIT_MS);
        if (code[i] == ARPC_EUNREACHABLE) {
            unreachable[i >= LARGE_CALLS]++;
            size_t len = 0;
            const char *why = arpc_future_data(f[i], &len);
            if (why == NULL || strstr(why, "not sent") == NULL)
                fail_msg("call %u: EUNREACHABLE without saying its request was not sent", i);
        } else if (code[i] == ARPC_ETIMEDOUT) {
            timed_out++;
        } else {
            fail_msg("call %u ended %s", i, arpc_errname(code[i]));
        }
        arpc_future_release(f[i]);
    }
    print_message("%u large and %u small calls taken back, %u timed out\n", unreachable[0], unreachable[1], timed_out);
    assert_true(unreachable[0] > 0);
    assert_true(unreachable[1] > 0);
    assert_true(timed_out > 0); /* the request the socket took in part, at least */
    assert_int_equal(0, sem_post(&ss.ss_go));
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
    for (uint32_t i = 0; i < CALLS; i++)
        if (code[i] == ARPC_EUNREACHABLE && ss.ss_seen[i])
            fail_msg("call %u ended EUNREACHABLE, but the server read its request", i);
    assert_true(ss.ss_requests > 0);
    sem_destroy(&ss.ss_go);
}

/* Posts the semaphore: run on the client's loop, after every job posted before it. */
static void loop_reached(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)sem_post(arg);
}

/* A call cancelled while its request still waits, whole, in the output queue: the request is
 * taken back, so the server reads neither it nor a CANCEL for it. Every call is cancelled once
 * the client's loop has taken all of them up (a task submitted after them has run: its lane
 * is FIFO); the server then reads the lot. Each request it read (the ones the socket had
 * taken, and one the queue had begun to write) is followed by a CANCEL naming its xid, and no
 * CANCEL names anything else. Before, every request was written, each with its CANCEL after
 * it. */
static void test_cancelled_unwritten_request_is_taken_back(void **state)
{
    (void)state;
    static struct silent_server ss;
    struct raw_server s;
    silent_server_start(&ss, &s);
    arpc_loop *loop = NULL;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    /* The close waits for the server to read the rest, however long a loaded machine takes. */
    arpc_client_options co = {.loop = loop, .close_linger_ms = TEST_WAIT_MS};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, &co));
    static arpc_future *f[CALLS];
    start_numbered_calls(c, f, 0);
    sem_t reached;
    assert_int_equal(0, sem_init(&reached, 0, 0));
    assert_int_equal(ARPC_OK, arpc_loop_submit(loop, loop_reached, &reached));
    assert_true(sem_wait_secs(&reached, TEST_WAIT_S));
    sem_destroy(&reached);
    for (uint32_t i = 0; i < CALLS; i++)
        assert_true(arpc_future_cancel(f[i]));
    for (uint32_t i = 0; i < CALLS; i++) {
        assert_int_equal(ARPC_ECANCELLED, arpc_future_wait_for(f[i], TEST_WAIT_MS));
        arpc_future_release(f[i]);
    }
    assert_int_equal(0, sem_post(&ss.ss_go));
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
    arpc_loop_stop(loop);
    arpc_loop_destroy(loop);
    print_message("the server read %u of %u requests and %u CANCELs\n", ss.ss_requests, CALLS, ss.ss_cancels);
    assert_true(ss.ss_requests > 0);     /* what the socket took */
    assert_true(ss.ss_requests < CALLS); /* the rest never left */
    assert_int_equal(ss.ss_requests, ss.ss_cancels);
    for (unsigned k = 0; k < ss.ss_cancels; k++) {
        uint32_t i = 0;
        while (i < CALLS && !(ss.ss_seen[i] && ss.ss_xid[i] == ss.ss_cancelled[k]))
            i++;
        if (i == CALLS)
            fail_msg("a CANCEL named xid %llu, whose request the server never read",
                     (unsigned long long)ss.ss_cancelled[k]);
    }
    sem_destroy(&ss.ss_go);
}

/* The newest requests, far behind the first: a call with a short deadline queued after calls
 * without one, and a call cancelled just before it, are taken back (the queue is looked
 * through from its newest end too), and the server reads every request but theirs. Before,
 * only the 64 frames behind the one being written were looked at: both were written once the
 * server read again, the short call ending ARPC_ETIMEDOUT ("may have run"). */
static void test_newest_requests_are_taken_back(void **state)
{
    (void)state;
    static struct silent_server ss;
    struct raw_server s;
    silent_server_start(&ss, &s);
    arpc_client_options co = {.close_linger_ms = TEST_WAIT_MS};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, &co));
    static arpc_future *f[CALLS];
    static uint8_t payload[LARGE_SIZE];
    const uint32_t cancelled = CALLS - 2, short_lived = CALLS - 1;
    for (uint32_t i = 0; i < CALLS; i++) {
        memcpy(payload, &i, sizeof(i));
        f[i] = arpc_call_async(c, "t.m", payload, i < LARGE_CALLS ? LARGE_SIZE : SMALL_SIZE,
                               i == short_lived ? 300 : ARPC_FOREVER);
        assert_non_null(f[i]);
    }
    int code = arpc_future_wait_for(f[short_lived], TEST_WAIT_MS);
    if (code != ARPC_EUNREACHABLE)
        fail_msg("the short call ended %s, not EUNREACHABLE (taken back)", arpc_errname(code));
    /* Its request was queued whole when its deadline came, so the one before it was too, and
     * is still: the cancel takes it back (before its loop hears of it, the future says
     * ECANCELLED either way; the server's reads below tell). */
    assert_true(arpc_future_cancel(f[cancelled]));
    assert_int_equal(0, sem_post(&ss.ss_go));
    arpc_client_close(c); /* takes back what it can reach of the rest, writes what is left */
    assert_true(raw_server_join(&s));
    uint32_t left = 0;
    for (uint32_t i = 0; i < CALLS; i++) {
        int end = arpc_future_poll(f[i]);
        if (i != short_lived && i != cancelled && end == ARPC_ECANCELLED)
            left++; /* sent: the server read it */
        else if (i != short_lived && i != cancelled && end != ARPC_ESHUTDOWN)
            fail_msg("call %u ended %s", i, arpc_errname(end));
        else if (i != short_lived && i != cancelled)
            assert_false(ss.ss_seen[i]); /* taken back at the close: never sent */
        arpc_future_release(f[i]);
    }
    print_message("the server read %u of %u requests\n", ss.ss_requests, CALLS);
    assert_false(ss.ss_seen[short_lived]);
    assert_false(ss.ss_seen[cancelled]);
    assert_int_equal(left, ss.ss_requests);
    assert_int_equal(0, ss.ss_cancels); /* nothing to cancel: the server never heard of it */
    sem_destroy(&ss.ss_go);
}

/* ---- an arpc server that stops reading: its one worker is held, its flow limit reached ---- */

static sem_t gate;          /* the held handler goes on */
static atomic_bool held;    /* the first call holds the worker */

static void h_hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    if (!atomic_exchange(&held, true))
        (void)sem_wait_secs(&gate, TEST_WAIT_S);
    arpc_reply(req, "", 0);
}

/* A server on listen whose first t.hold call holds its one worker (until gate is posted), and
 * two calls in flight a connection at most; its address in addr (ARPC_ADDR_MAX). */
static arpc_server *held_server_start(const char *listen, const arpc_tls_options *server_tls, char *addr)
{
    atomic_store(&held, false);
    assert_int_equal(0, sem_init(&gate, 0, 0));
    arpc_server_options so = {.workers = 1, .max_calls_per_conn = 2, .tls = server_tls};
    arpc_server *s = NULL;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.hold", h_hold, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen, addr, ARPC_ADDR_MAX));
    return s;
}

/* The same over a real server (tcp://, then tls://, where the stream owes its retry the record
 * it began): one worker held by the first call, two calls in flight a connection at most, so
 * the server stops reading and the socket fills. Every call ends ETIMEDOUT, EEXPIRED (refused
 * unrun by the server before the client's timer) or EUNREACHABLE, some EUNREACHABLE; once the
 * worker goes on and the client has closed, the server has read exactly the requests of the
 * calls that did not end EUNREACHABLE. */
static void unwritten_against_a_server(const char *listen, const arpc_tls_options *server_tls,
                                       const arpc_tls_options *client_tls)
{
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = held_server_start(listen, server_tls, addr);
    /* The close waits for the server to read the rest, however long a loaded machine takes. */
    arpc_client_options co = {.tls = client_tls, .close_linger_ms = TEST_WAIT_MS};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    static arpc_future *f[CALLS];
    static uint8_t payload[LARGE_SIZE];
    for (uint32_t i = 0; i < CALLS; i++) {
        f[i] = arpc_call_async(c, "t.hold", payload, i < LARGE_CALLS ? LARGE_SIZE : SMALL_SIZE, DEADLINE_MS);
        assert_non_null(f[i]);
    }
    unsigned unreachable = 0, other = 0;
    for (uint32_t i = 0; i < CALLS; i++) {
        int code = arpc_future_wait_for(f[i], TEST_WAIT_MS);
        if (code == ARPC_EUNREACHABLE)
            unreachable++;
        else if (code == ARPC_ETIMEDOUT || code == ARPC_EEXPIRED)
            other++;
        else
            fail_msg("call %u ended %s", i, arpc_errname(code));
        arpc_future_release(f[i]);
    }
    print_message("%s: %u taken back, %u timed out or expired\n", listen, unreachable, other);
    assert_true(unreachable > 0);
    assert_int_equal(0, sem_post(&gate));
    arpc_client_close(c);
    /* The close wrote what was left and said goodbye: once the server has closed the
     * connection it has read every request that was ever sent. */
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    assert_int_equal(CALLS - unreachable, server_requests_read(s));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&gate);
}

/* The cancel's variant (tcp://, then tls://): once the client's loop has taken every call up,
 * all but the first (which holds the worker) are cancelled. The server then reads the requests
 * the socket took, and no more: fewer than the calls. Before, every request was written. */
static void cancelled_against_a_server(const char *listen, const arpc_tls_options *server_tls,
                                       const arpc_tls_options *client_tls)
{
    char addr[ARPC_ADDR_MAX];
    arpc_server *s = held_server_start(listen, server_tls, addr);
    arpc_loop *loop = NULL;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_client_options co = {.loop = loop, .tls = client_tls, .close_linger_ms = TEST_WAIT_MS};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    static arpc_future *f[CALLS];
    static uint8_t payload[LARGE_SIZE];
    for (uint32_t i = 0; i < CALLS; i++) {
        f[i] = arpc_call_async(c, "t.hold", payload, i < LARGE_CALLS ? LARGE_SIZE : SMALL_SIZE, ARPC_FOREVER);
        assert_non_null(f[i]);
    }
    sem_t reached;
    assert_int_equal(0, sem_init(&reached, 0, 0));
    assert_int_equal(ARPC_OK, arpc_loop_submit(loop, loop_reached, &reached));
    assert_true(sem_wait_secs(&reached, TEST_WAIT_S));
    sem_destroy(&reached);
    assert_true(WAIT_UNTIL(atomic_load(&held)));
    for (uint32_t i = 1; i < CALLS; i++)
        assert_true(arpc_future_cancel(f[i]));
    assert_int_equal(0, sem_post(&gate));
    for (uint32_t i = 0; i < CALLS; i++) {
        assert_int_equal(i == 0 ? ARPC_OK : ARPC_ECANCELLED, arpc_future_wait_for(f[i], TEST_WAIT_MS));
        arpc_future_release(f[i]);
    }
    arpc_client_close(c);
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    uint64_t read = server_requests_read(s);
    print_message("%s: the server read %llu of %u requests\n", listen, (unsigned long long)read, CALLS);
    assert_true(read > 0);
    assert_true(read < CALLS);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_loop_stop(loop);
    arpc_loop_destroy(loop);
    sem_destroy(&gate);
}

static void test_unwritten_request_to_a_server_tcp(void **state)
{
    (void)state;
    unwritten_against_a_server("tcp://127.0.0.1:0", NULL, NULL);
}

#ifdef ARPC_TEST_WITH_TLS
/* run over tls://, with certificates made for it. */
static void over_tls(void (*run)(const char *listen, const arpc_tls_options *server_tls,
                                 const arpc_tls_options *client_tls))
{
    static struct tls_certs certs;
    assert_true(tls_certs_make(&certs));
    static struct tls_certs_pair pair;
    tls_certs_pair(&certs, &pair);
    run("tls://127.0.0.1:0", &pair.tp_server, &pair.tp_client);
    tls_certs_remove(&certs);
}

static void test_unwritten_request_to_a_server_tls(void **state)
{
    (void)state;
    over_tls(unwritten_against_a_server);
}
#endif

static void test_cancelled_request_to_a_server_tcp(void **state)
{
    (void)state;
    cancelled_against_a_server("tcp://127.0.0.1:0", NULL, NULL);
}

#ifdef ARPC_TEST_WITH_TLS
static void test_cancelled_request_to_a_server_tls(void **state)
{
    (void)state;
    over_tls(cancelled_against_a_server);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unwritten_request_is_taken_back),
        cmocka_unit_test(test_cancelled_unwritten_request_is_taken_back),
        cmocka_unit_test(test_newest_requests_are_taken_back),
        cmocka_unit_test(test_unwritten_request_to_a_server_tcp),
#ifdef ARPC_TEST_WITH_TLS
        cmocka_unit_test(test_unwritten_request_to_a_server_tls),
#endif
        cmocka_unit_test(test_cancelled_request_to_a_server_tcp),
#ifdef ARPC_TEST_WITH_TLS
        cmocka_unit_test(test_cancelled_request_to_a_server_tls),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
