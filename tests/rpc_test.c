/*
 * End-to-end RPC conformance: every case runs over tcp, unix and inproc transports.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "transport/transport.h"
#include "support/server_proc.h"
#include "support/test_util.h"

#ifdef ARPC_TSAN
#define CALLS_PER_THREAD 1500
#else
#define CALLS_PER_THREAD 10000
#endif
#define CALL_THREADS 8

/* ---- a test server ---- */

struct held {
    arpc_request *reqs[4096];
    size_t n;
    pthread_mutex_t mu;
};

struct shuffler {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    arpc_request **reqs;
    size_t n, cap;
    bool stop;
    unsigned seed;
};

struct fixture {
    const char *scheme;
    char addr[ARPC_ADDR_MAX];
    arpc_server *server;
    struct held held;
    struct shuffler shuf;
    atomic_int oneway_count;
    atomic_int oneway_inside;
};

static void h_fail(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_reply_error(req, "it went wrong");
}

/* Keeps the request without replying: the server "never answers". */
static void h_hold(arpc_request *req, void *ctx)
{
    struct fixture *fx = ctx;
    pthread_mutex_lock(&fx->held.mu);
    fx->held.reqs[fx->held.n++] = req;
    pthread_mutex_unlock(&fx->held.mu);
}

static void h_oneway_count(arpc_request *req, void *ctx)
{
    struct fixture *fx = ctx;
    assert_true(arpc_request_is_oneway(req));
    atomic_fetch_add(&fx->oneway_count, 1);
    arpc_reply(req, NULL, 0); /* finishes the request; nothing is sent for one-way */
}

static void h_get_count(arpc_request *req, void *ctx)
{
    struct fixture *fx = ctx;
    int n = atomic_load(&fx->oneway_count);
    arpc_reply(req, &n, sizeof(n));
}

/* Replies 50 ms later from a thread of its own. */
static void *late_reply_thread(void *arg)
{
    arpc_request *req = arg;
    sleep_ms(50); /* a handler that takes time: the subject, not a wait */
    arpc_reply(req, "late", 4);
    return NULL;
}

static void h_late(arpc_request *req, void *ctx)
{
    (void)ctx;
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, late_reply_thread, req));
    pthread_detach(t);
}

/* Hands the request to the shuffler, which replies to batches in random order. */
static void h_shuffled(arpc_request *req, void *ctx)
{
    struct shuffler *sh = &((struct fixture *)ctx)->shuf;
    pthread_mutex_lock(&sh->mu);
    if (sh->n == sh->cap) {
        sh->cap = sh->cap ? sh->cap * 2 : 1024;
        sh->reqs = realloc(sh->reqs, sh->cap * sizeof(*sh->reqs));
    }
    sh->reqs[sh->n++] = req;
    pthread_cond_signal(&sh->cv);
    pthread_mutex_unlock(&sh->mu);
}

static void *shuffler_main(void *arg)
{
    struct shuffler *sh = arg;
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        while (sh->n == 0 && !sh->stop)
            pthread_cond_wait(&sh->cv, &sh->mu);
        if (sh->n == 0 && sh->stop)
            break;
        /* Let a batch build up, then answer it in random order. */
        pthread_mutex_unlock(&sh->mu);
        struct timespec ts = {0, 200 * 1000L};
        nanosleep(&ts, NULL); /* lets a batch build up: not a wait (any batch is right) */
        pthread_mutex_lock(&sh->mu);
        size_t n = sh->n;
        arpc_request **batch = malloc(n * sizeof(*batch));
        memcpy(batch, sh->reqs, n * sizeof(*batch));
        sh->n = 0;
        pthread_mutex_unlock(&sh->mu);
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)rand_r(&sh->seed) % i;
            arpc_request *t = batch[i - 1];
            batch[i - 1] = batch[j];
            batch[j] = t;
        }
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const void *d = arpc_request_data(batch[i], &len);
            arpc_reply(batch[i], d, len);
        }
        free(batch);
        pthread_mutex_lock(&sh->mu);
    }
    pthread_mutex_unlock(&sh->mu);
    return NULL;
}

static arpc_actor *oneway_actor;

static void start_server(struct fixture *fx, uint32_t max_frame)
{
    static atomic_int counter;
    int n = atomic_fetch_add(&counter, 1);
    char listen_addr[ARPC_ADDR_MAX];
    if (strcmp(fx->scheme, "tcp") == 0)
        snprintf(listen_addr, sizeof(listen_addr), "tcp://127.0.0.1:0");
    else if (strcmp(fx->scheme, "unix") == 0)
        snprintf(listen_addr, sizeof(listen_addr), "unix:///tmp/arpc-rpc-test-%d-%d.sock", getpid(), n);
    else
        snprintf(listen_addr, sizeof(listen_addr), "inproc://rpc-test-%d", n);
    arpc_server_options so = {.workers = 2, .max_frame = max_frame};
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->server, &so));
    assert_int_equal(ARPC_OK, arpc_actor_create(&oneway_actor, NULL));
    arpc_method_options one = {.actor = oneway_actor};
    arpc_method_options inl = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "test.echo", test_echo, fx, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "test.echo_inline", test_echo, fx, &inl));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "test.fail", h_fail, fx, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "test.hold", h_hold, fx, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "test.late", h_late, fx, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "test.shuffled", h_shuffled, fx, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "test.count", h_oneway_count, fx, &one));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->server, "test.get_count", h_get_count, fx, &one));
    assert_int_equal(ARPC_EBUSY, arpc_server_register(fx->server, "test.echo", test_echo, fx, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->server, listen_addr, fx->addr, sizeof(fx->addr)));
    assert_int_equal(ARPC_EBUSY, arpc_server_register(fx->server, "test.late2", test_echo, fx, NULL));
}

static void stop_server(struct fixture *fx)
{
    if (fx->server == NULL)
        return;
    arpc_server_stop(fx->server, 200);
    pthread_mutex_lock(&fx->held.mu);
    for (size_t i = 0; i < fx->held.n; i++)
        arpc_reply(fx->held.reqs[i], NULL, 0); /* dropped: the connection is gone */
    fx->held.n = 0;
    pthread_mutex_unlock(&fx->held.mu);
    arpc_server_destroy(fx->server);
    fx->server = NULL;
    arpc_actor_destroy(oneway_actor);
    oneway_actor = NULL;
}

static int setup(void **state, const char *scheme)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    fx->scheme = scheme;
    pthread_mutex_init(&fx->held.mu, NULL);
    pthread_mutex_init(&fx->shuf.mu, NULL);
    pthread_cond_init(&fx->shuf.cv, NULL);
    fx->shuf.seed = 42;
    pthread_create(&fx->shuf.thread, NULL, shuffler_main, &fx->shuf);
    start_server(fx, 0);
    *state = fx;
    return 0;
}
static int setup_tcp(void **state) { return setup(state, "tcp"); }
static int setup_unix(void **state) { return setup(state, "unix"); }
static int setup_inproc(void **state) { return setup(state, "inproc"); }

static int teardown(void **state)
{
    struct fixture *fx = *state;
    stop_server(fx);
    pthread_mutex_lock(&fx->shuf.mu);
    fx->shuf.stop = true;
    pthread_cond_signal(&fx->shuf.cv);
    pthread_mutex_unlock(&fx->shuf.mu);
    pthread_join(fx->shuf.thread, NULL);
    free(fx->shuf.reqs);
    free(fx);
    return 0;
}

static arpc_client *connect_client(struct fixture *fx, const arpc_client_options *o)
{
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, fx->addr, o));
    return c;
}

/* ---- cases ---- */

static void test_echo_call(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    const char *methods[] = {"test.echo", "test.echo_inline"};
    for (int m = 0; m < 2; m++) {
        void *reply = NULL;
        size_t len = 0;
        assert_int_equal(ARPC_OK, arpc_call(c, methods[m], "hello", 5, &reply, &len, TEST_WAIT_MS));
        assert_int_equal(5, len);
        assert_memory_equal("hello", reply, 5);
        arpc_free(reply);
    }
    /* An empty request and an empty reply are fine. */
    void *reply = NULL;
    size_t len = 99;
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", NULL, 0, &reply, &len, TEST_WAIT_MS));
    assert_int_equal(0, len);
    arpc_free(reply);
    assert_int_equal(0, arpc_client_pending(c));
    arpc_client_close(c);
}

static void test_handler_error(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_EHANDLER, arpc_call(c, "test.fail", "x", 1, &reply, &len, 2000));
    assert_int_equal(strlen("it went wrong"), len);
    assert_memory_equal("it went wrong", reply, len);
    assert_int_equal('\0', ((char *)reply)[len]); /* a string: printable with %s (client.h) */
    arpc_free(reply);
    arpc_client_close(c);
}

static void test_unknown_method(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_ENOMETHOD, arpc_call(c, "nope.Nothing", "x", 1, &reply, &len, 2000));
    char msg[128] = {0};
    memcpy(msg, reply, len < sizeof(msg) - 1 ? len : sizeof(msg) - 1);
    assert_non_null(strstr(msg, "nope.Nothing"));
    arpc_free(reply);
    /* The connection is still fine afterwards. */
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", "y", 1, NULL, NULL, TEST_WAIT_MS));
    arpc_client_close(c);
}

struct caller_arg {
    struct fixture *fx;
    arpc_client *client;
    int id;
    int mismatches;
    int failures;
};

/* Keeps a window of calls in flight and checks each reply against its own request. */
static void *caller_main(void *p)
{
    struct caller_arg *a = p;
    enum { WINDOW = 64 };
    arpc_future *win[WINDOW] = {0};
    uint64_t sent[WINDOW];
    for (int i = 0; i < CALLS_PER_THREAD + WINDOW; i++) {
        int slot = i % WINDOW;
        if (win[slot] != NULL) {
            int st = arpc_future_wait(win[slot]);
            size_t len = 0;
            const void *d = arpc_future_data(win[slot], &len);
            if (st != ARPC_OK)
                a->failures++;
            else if (len != sizeof(uint64_t) || memcmp(d, &sent[slot], sizeof(uint64_t)) != 0)
                a->mismatches++;
            arpc_future_release(win[slot]);
            win[slot] = NULL;
        }
        if (i < CALLS_PER_THREAD) {
            sent[slot] = ((uint64_t)a->id << 32) | (uint64_t)i;
            win[slot] = arpc_call_async(a->client, "test.shuffled", &sent[slot], sizeof(uint64_t), 20000);
            assert_non_null(win[slot]);
        }
    }
    return NULL;
}

static void test_concurrent_shuffled(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    pthread_t t[CALL_THREADS];
    struct caller_arg args[CALL_THREADS];
    for (int i = 0; i < CALL_THREADS; i++) {
        args[i] = (struct caller_arg){fx, c, i, 0, 0};
        pthread_create(&t[i], NULL, caller_main, &args[i]);
    }
    int mismatches = 0, failures = 0;
    for (int i = 0; i < CALL_THREADS; i++) {
        pthread_join(t[i], NULL);
        mismatches += args[i].mismatches;
        failures += args[i].failures;
    }
    assert_int_equal(0, failures);
    assert_int_equal(0, mismatches);
    assert_int_equal(0, arpc_client_pending(c));
    arpc_client_close(c);
}

static void test_oneway(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    atomic_store(&fx->oneway_count, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ARPC_OK, arpc_notify(c, "test.count", &i, sizeof(i)));
    /* One-way messages leave no pending call behind. */
    assert_int_equal(0, arpc_client_pending(c));
    /* Same connection, same actor: the count is read after every message was handled. */
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "test.get_count", NULL, 0, &reply, &len, TEST_WAIT_MS));
    assert_int_equal(sizeof(int), len);
    assert_int_equal(1000, *(int *)reply);
    arpc_free(reply);
    /* A one-way message to an unknown method is dropped without an answer. */
    assert_int_equal(ARPC_OK, arpc_notify(c, "nope.Nothing", "x", 1));
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", "z", 1, NULL, NULL, TEST_WAIT_MS));
    assert_int_equal(0, arpc_client_pending(c));
    /* Counted, whatever the log's rate let through (read after a call behind it: in order). */
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(fx->server, &st));
    assert_int_equal(1, st.oneways_dropped);
    arpc_client_close(c);
}

static void test_late_reply(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    int64_t t0 = now_ms();
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "test.late", "q", 1, &reply, &len, TEST_WAIT_MS));
    assert_true(now_ms() - t0 >= 50);
    assert_int_equal(4, len);
    assert_memory_equal("late", reply, 4);
    arpc_free(reply);
    arpc_client_close(c);
}

#define NEVER_ANSWERED_ATTEMPTS 20 /* a bound on calls load ended otherwise: only a hang reaches it */

/* Whether st says a call's deadline ended it: the client's timer or the server's answer at
 * the deadline (ETIMEDOUT); the server's EEXPIRED for a call no worker took up in time, which
 * may arrive first (the server counts the same budget from the call's arrival) and says more:
 * it did not run; or EUNREACHABLE, the deadline passed before the client's loop took it up (a
 * loaded machine): it was never sent. */
static bool ended_by_deadline(int st)
{
    return st == ARPC_ETIMEDOUT || st == ARPC_EEXPIRED || st == ARPC_EUNREACHABLE;
}

/* Once this call is answered, the server has read every call c sent before it (one
 * connection is read in order). */
static void sync_client(arpc_client *c)
{
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", "s", 1, NULL, NULL, TEST_WAIT_MS));
}

static void test_deadline_never_answered(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    /* Sent and never answered: ETIMEDOUT. A call that load ended another way by its deadline
     * (ended_by_deadline: not sent in time, or not taken up by a worker) is made again; one
     * said never sent must not have reached the server. */
    int st = ARPC_EUNREACHABLE;
    int64_t took = 0;
    for (int attempt = 0; attempt < NEVER_ANSWERED_ATTEMPTS && (st == ARPC_EUNREACHABLE || st == ARPC_EEXPIRED);
         attempt++) {
        uint64_t dispatched = METHOD_STAT(fx->server, "test.hold", calls.started);
        int64_t t0 = now_ms();
        st = arpc_call(c, "test.hold", "q", 1, NULL, NULL, 100);
        took = now_ms() - t0;
        if (st == ARPC_EUNREACHABLE) {
            sync_client(c);
            assert_int_equal(dispatched, METHOD_STAT(fx->server, "test.hold", calls.started));
        }
    }
    assert_int_equal(ARPC_ETIMEDOUT, st);
    assert_true(took >= 100);
    assert_true(took < 10000); /* ended by its deadline (nothing else would end it): a loaded machine's ceiling */
    /* The client default deadline applies when a call passes 0: each ends by it (and only a
     * hang reaches the wait's bound), none before it: EUNREACHABLE at once would also be what
     * a deadline of 0 gives; load only makes them end later. */
    arpc_client_options o = {.default_deadline_ms = 80};
    arpc_client *c2 = connect_client(fx, &o);
    arpc_future *fs[50];
    uint64_t dispatched = METHOD_STAT(fx->server, "test.hold", calls.started);
    int64_t t0 = now_ms();
    for (int i = 0; i < 50; i++)
        fs[i] = arpc_call_async(c2, "test.hold", "q", 1, 0);
    assert_int_equal(ARPC_OK, arpc_future_wait_all(fs, 50, TEST_WAIT_MS));
    assert_true(now_ms() - t0 >= 80);
    uint64_t unsent = 0;
    for (int i = 0; i < 50; i++) {
        st = arpc_future_poll(fs[i]);
        if (!ended_by_deadline(st))
            fail_msg("call %d ended %s, not by its deadline", i, arpc_errname(st));
        unsent += st == ARPC_EUNREACHABLE;
        arpc_future_release(fs[i]);
    }
    sync_client(c2); /* the calls said never sent did not reach the server */
    assert_true(METHOD_STAT(fx->server, "test.hold", calls.started) - dispatched <= 50 - unsent);
    assert_int_equal(0, arpc_client_pending(c2));
    arpc_client_close(c2);
    arpc_client_close(c);
}

static void test_close_fails_pending(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    arpc_future *f = arpc_call_async(c, "test.hold", "q", 1, ARPC_FOREVER);
    /* Make sure the call reached the server first. */
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", "y", 1, NULL, NULL, TEST_WAIT_MS));
    arpc_client_close(c);
    assert_int_equal(ARPC_ECANCELLED, arpc_future_wait_for(f, TEST_WAIT_MS)); /* sent: it may run */
    arpc_future_release(f);
}

static void test_cancel(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    arpc_future *f = arpc_call_async(c, "test.hold", "q", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_EPENDING, arpc_future_wait_for(f, 20));
    assert_true(arpc_future_cancel(f));
    assert_false(arpc_future_cancel(f));
    assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(f));
    arpc_future_release(f);
    /* The loop drops the cancelled call from its pending table. */
    assert_true(WAIT_UNTIL(arpc_client_pending(c) == 0));
    arpc_client_close(c);
}

static void test_go_completion_queue(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = connect_client(fx, NULL);
    arpc_cq *cq;
    assert_int_equal(ARPC_OK, arpc_cq_create(&cq));
    enum { N = 200 };
    bool seen[N] = {0};
    for (uintptr_t i = 0; i < N; i++)
        assert_int_equal(ARPC_OK, arpc_go(c, "test.echo", &i, sizeof(i), 5000, cq, (void *)i));
    struct pollfd pfd = {.fd = arpc_cq_fd(cq), .events = POLLIN};
    int got = 0;
    while (got < N) {
        assert_true(poll(&pfd, 1, 5000) > 0);
        arpc_future *f;
        void *tag;
        while (arpc_cq_trynext(cq, &f, &tag) == ARPC_OK) {
            uintptr_t i = (uintptr_t)tag;
            assert_true(i < N);
            assert_false(seen[i]);
            seen[i] = true;
            size_t len;
            const void *d = arpc_future_data(f, &len);
            assert_int_equal(ARPC_OK, arpc_future_poll(f));
            assert_int_equal(sizeof(i), len);
            assert_memory_equal(&i, d, sizeof(i));
            arpc_future_release(f);
            got++;
        }
    }
    arpc_cq_destroy(cq);
    arpc_client_close(c);
}

/* Writes raw bytes on a fresh connection and reports whether the server closed it. */
static bool raw_send_then_closed(struct fixture *fx, const void *bytes, size_t len)
{
    int fd;
    assert_int_equal(ARPC_OK, arpc_transport_connect(fx->addr, 2000, &fd, NULL, 0));
    const uint8_t *p = bytes;
    size_t off = 0;
    while (off < len) {
        struct pollfd w = {.fd = fd, .events = POLLOUT};
        poll(&w, 1, 2000);
        ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            break; /* the server already closed: fine */
        off += (size_t)n;
    }
    bool closed = false;
    int64_t until = now_ms() + 3000;
    while (!closed && now_ms() < until) {
        struct pollfd r = {.fd = fd, .events = POLLIN};
        if (poll(&r, 1, 100) <= 0)
            continue;
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            closed = true;
    }
    close(fd);
    return closed;
}

static void test_garbage_then_good_client(void **state)
{
    struct fixture *fx = *state;
    uint8_t garbage[512];
    unsigned seed = 7;
    for (size_t i = 0; i < sizeof(garbage); i++)
        garbage[i] = (uint8_t)rand_r(&seed);
    garbage[0] = 'x'; /* never a valid magic */
    assert_true(raw_send_then_closed(fx, garbage, sizeof(garbage)));
    arpc_client *c = connect_client(fx, NULL);
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", "ok", 2, NULL, NULL, TEST_WAIT_MS));
    arpc_client_close(c);
}

/* A call of len bytes is refused ARPC_ETOOLARGE before it leaves, with a message ending in
 * tail (the request's size, and its frame body's, named before it). */
static void expect_too_large(arpc_client *c, const void *req, size_t len, const char *tail)
{
    arpc_future *f = arpc_call_async(c, "test.echo", req, len, TEST_WAIT_MS);
    assert_int_equal(ARPC_ETOOLARGE, arpc_future_wait(f));
    size_t n;
    const char *why = arpc_future_data(f, &n);
    assert_non_null(why);
    char want[160];
    snprintf(want, sizeof(want), "a request of %zu bytes (%zu with its method name and call fields) %s", len,
             len + strlen("test.echo") + ARPC_REQUEST_FIXED_SIZE, tail);
    assert_string_equal(want, why);
    arpc_future_release(f);
}

static void test_oversized_frame(void **state)
{
    struct fixture *fx = *state;
    /* Restart the server with a 1 KiB limit. */
    stop_server(fx);
    start_server(fx, 1024);
    /* A raw HELLO then a request header announcing 2 GiB, past the length any call is skipped
     * at (ARPC_CONN_SKIP_MAX): closed from the header alone. (A request over the limit but
     * under that is answered ARPC_ETOOLARGE alone: conn_limits_test.) */
    uint8_t bytes[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT + ARPC_FRAME_HEADER_SIZE];
    size_t n = arpc_frame_encode_hello(bytes, 1, 0, 1 << 20, 0);
    n += arpc_frame_encode_header(bytes + n, ARPC_FRAME_REQUEST, 1, 2u << 30);
    assert_true(raw_send_then_closed(fx, bytes, n));
    /* A well-behaved client learns the limit and fails too-large calls locally. */
    arpc_client *c = connect_client(fx, NULL);
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", "ok", 2, NULL, NULL, TEST_WAIT_MS));
    static char big[4096];
    assert_int_equal(ARPC_ETOOLARGE, arpc_call(c, "test.echo", big, sizeof(big), NULL, NULL, 2000));
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", big, 512, NULL, NULL, TEST_WAIT_MS));
    /* The refusal says the size and whose limit: the server's, learnt from its HELLO. */
    expect_too_large(c, big, sizeof(big), "is over the server's frame limit (1024 bytes)");
    arpc_client_close(c);
    /* A client with a small limit gets ETOOLARGE for a reply it would not accept. */
    arpc_client_options o = {.max_frame = ARPC_MAX_FRAME_MIN};
    c = connect_client(fx, &o);
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", big, 900, NULL, NULL, TEST_WAIT_MS));
    arpc_client_close(c);
    /* Its own limit under the server's: the refusal names the client's. */
    stop_server(fx);
    start_server(fx, 0);
    c = connect_client(fx, &o);
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", "ok", 2, NULL, NULL, TEST_WAIT_MS));
    expect_too_large(c, big, 2000, "is over this client's max_frame (1024 bytes)");
    arpc_client_close(c);
}

/* The server goes away mid-call, for good. Its stop answers the pending calls first:
 * EABANDONED for those its handlers held (they may have run), ESHUTDOWN for those still
 * queued (they did not). Then a client that does not reconnect fails new calls with
 * EUNREACHABLE at once (they never left); one that does (the default) gives them up after
 * reconnect_give_up_ms with EUNREACHABLE. */
static void server_killed_mid_call(struct fixture *fx, bool reconnect)
{
    arpc_client_options o = {.no_reconnect = !reconnect, .reconnect_give_up_ms = 300};
    arpc_client *c = connect_client(fx, &o);
    arpc_future *fs[10];
    for (int i = 0; i < 10; i++)
        fs[i] = arpc_call_async(c, "test.hold", "q", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo", "y", 1, NULL, NULL, TEST_WAIT_MS));
    int64_t t0 = now_ms();
    arpc_server_stop(fx->server, 0); /* no grace: connections close with calls in flight */
    for (int i = 0; i < 10; i++) {
        /* Held by a handler: the stop answers for it before the connection closes (may
         * have run). Still queued on the pool: the server says it did not run. */
        int st = arpc_future_wait_for(fs[i], 10000);
        assert_true(st == ARPC_EABANDONED || st == ARPC_ESHUTDOWN);
        arpc_future_release(fs[i]);
    }
    assert_true(now_ms() - t0 < 10000);
    if (!reconnect) {
        /* New calls fail at once: they did not run (the client's error says why). */
        assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "test.echo", "y", 1, NULL, NULL, 2000));
        assert_int_equal(ARPC_ECONNLOST, arpc_client_last_error(c, NULL, 0));
    } else {
        /* A new call waits for a connection that never comes, and did not run. */
        assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "test.echo", "y", 1, NULL, NULL, 5000));
        char why[ARPC_ERRBUF_SIZE];
        assert_int_not_equal(ARPC_OK, arpc_client_last_error(c, why, sizeof(why)));
        assert_non_null(strstr(why, fx->addr + strlen(fx->scheme) + 3)); /* names the server */
    }
    arpc_client_close(c);
}

static void test_server_killed_mid_call(void **state) { server_killed_mid_call(*state, false); }
static void test_server_killed_mid_call_reconnecting(void **state) { server_killed_mid_call(*state, true); }

/* The fixture's end, and the server process's if the test failed before killing it. */
static int teardown_server_process(void **state)
{
    server_proc_teardown(state);
    return teardown(state);
}

/* A real crash: a server process killed with SIGKILL (tcp and unix only). */
static void test_server_process_killed(void **state)
{
    struct fixture *fx = *state;
    if (strcmp(fx->scheme, "inproc") == 0)
        skip();
    char addr[ARPC_ADDR_MAX];
    if (strcmp(fx->scheme, "tcp") == 0)
        snprintf(addr, sizeof(addr), "tcp://127.0.0.1:0");
    else
        snprintf(addr, sizeof(addr), "unix:///tmp/arpc-rpc-kill-%d.sock", getpid());
    /* A fresh process (fork + exec), not a fork of this threaded one: such a child hung once
     * under ASan in arpc_server_create, a lock held across the fork, and TSan forbids it. */
    struct server_proc sp;
    assert_true(server_proc_start(&sp, addr, "-", SERVER_PROC_POOL));
    const char *bound = sp.sp_addr;
    arpc_client *c = NULL;
    arpc_client_options o = {.reconnect_give_up_ms = 300};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, bound, &o));
    struct {
        uint64_t token;
        uint32_t ms;
    } __attribute__((packed)) held = {1, 600000}; /* t.slow: a call the kill finds running */
    arpc_future *f = arpc_call_async(c, "t.slow", &held, sizeof(held), ARPC_FOREVER);
    uint64_t token = 2;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.apply", &token, sizeof(token), NULL, NULL, TEST_WAIT_MS));
    int64_t t0 = now_ms();
    server_proc_kill(&sp);
    /* Sent, and the server never came back: the outcome is unknown. */
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(f, 10000));
    assert_true(now_ms() - t0 < 10000);
    const char *why = arpc_future_data(f, NULL);
    assert_non_null(why);
    assert_non_null(strstr(why, "reconnect_give_up_ms"));
    assert_non_null(strstr(why, "(connection to ")); /* how it was lost */
    arpc_future_release(f);
    arpc_client_close(c);
    if (strncmp(addr, "unix://", 7) == 0)
        unlink(addr + 7); /* the killed server could not remove its socket */
}

/* A client on a loop nobody runs: its callers drive the loop themselves, taking turns. */
struct driven_arg {
    arpc_client *client;
    int ok;
};

static void *driven_caller(void *p)
{
    struct driven_arg *a = p;
    for (int i = 0; i < 300; i++) {
        void *reply = NULL;
        size_t len = 0;
        if (arpc_call(a->client, "test.echo", &i, sizeof(i), &reply, &len, 5000) == ARPC_OK &&
            len == sizeof(i) && memcmp(reply, &i, sizeof(i)) == 0)
            a->ok++;
        arpc_free(reply);
    }
    return NULL;
}

static void test_caller_driven_loop(void **state)
{
    struct fixture *fx = *state;
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    arpc_client_options o = {.loop = loop};
    arpc_client *c = connect_client(fx, &o);
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "test.echo_inline", "abc", 3, &reply, &len, TEST_WAIT_MS));
    assert_int_equal(3, len);
    arpc_free(reply);
    /* An async call progresses only while someone runs the loop. */
    arpc_future *f = arpc_call_async(c, "test.echo", "x", 1, 2000);
    assert_int_equal(ARPC_OK, arpc_loop_run_until(loop, f, 2000));
    arpc_future_release(f);
    f = arpc_call_async(c, "test.hold", "x", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_EPENDING, arpc_loop_run_until(loop, f, 30));
    /* Two threads calling at once take turns driving the loop. */
    pthread_t t[2];
    struct driven_arg args[2] = {{c, 0}, {c, 0}};
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, driven_caller, &args[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(300, args[0].ok);
    assert_int_equal(300, args[1].ok);
    arpc_client_close(c);
    assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(f));
    arpc_future_release(f);
    arpc_loop_destroy(loop);
}

#define CASES(setup_fn)                                                                  \
    cmocka_unit_test_setup_teardown(test_echo_call, setup_fn, teardown),                 \
    cmocka_unit_test_setup_teardown(test_handler_error, setup_fn, teardown),             \
    cmocka_unit_test_setup_teardown(test_unknown_method, setup_fn, teardown),            \
    cmocka_unit_test_setup_teardown(test_concurrent_shuffled, setup_fn, teardown),       \
    cmocka_unit_test_setup_teardown(test_oneway, setup_fn, teardown),                    \
    cmocka_unit_test_setup_teardown(test_late_reply, setup_fn, teardown),                \
    cmocka_unit_test_setup_teardown(test_deadline_never_answered, setup_fn, teardown),   \
    cmocka_unit_test_setup_teardown(test_close_fails_pending, setup_fn, teardown),       \
    cmocka_unit_test_setup_teardown(test_cancel, setup_fn, teardown),                    \
    cmocka_unit_test_setup_teardown(test_go_completion_queue, setup_fn, teardown),       \
    cmocka_unit_test_setup_teardown(test_garbage_then_good_client, setup_fn, teardown),  \
    cmocka_unit_test_setup_teardown(test_oversized_frame, setup_fn, teardown),           \
    cmocka_unit_test_setup_teardown(test_server_killed_mid_call, setup_fn, teardown),    \
    cmocka_unit_test_setup_teardown(test_server_killed_mid_call_reconnecting, setup_fn, teardown), \
    cmocka_unit_test_setup_teardown(test_caller_driven_loop, setup_fn, teardown),        \
    cmocka_unit_test_setup_teardown(test_server_process_killed, setup_fn, teardown_server_process)

int main(int argc, char **argv)
{
    server_proc_main(argc, argv);
    const struct CMUnitTest tcp[] = {CASES(setup_tcp)};
    const struct CMUnitTest unx[] = {CASES(setup_unix)};
    const struct CMUnitTest inproc[] = {CASES(setup_inproc)};
    int failed = 0;
    failed += cmocka_run_group_tests_name("rpc over tcp", tcp, NULL, NULL);
    failed += cmocka_run_group_tests_name("rpc over unix", unx, NULL, NULL);
    failed += cmocka_run_group_tests_name("rpc over inproc", inproc, NULL, NULL);
    return failed;
}
