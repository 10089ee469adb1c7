/*
 * Misuse that arpc must refuse rather than crash on (run it under ASan): a second reply for
 * one request while its handler still runs (reply twice, reply then reply_error, reply_error
 * then reply, from the handler, inline on the loop, for a one-way request, and deferred from
 * another thread), NULL handles and requests (every arpc_request_* accessor), and calls that would wait for themselves: closing a client
 * from a then-callback on its loop, destroying a server from its own handler.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "arpc/log.h"
#include "support/test_util.h"

/* ---- what the handlers saw ---- */

static atomic_int rc_first, rc_second; /* the two replies' results */
static atomic_int refusals_logged;     /* ERROR lines about a second reply */
static atomic_int close_refusals;      /* WARN lines about a close on the client's own loop */

static void count_refusals(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    if (level == ARPC_LOG_ERROR && strstr(line, "second reply") != NULL)
        atomic_fetch_add(&refusals_logged, 1);
    if (level == ARPC_LOG_WARN && strstr(line, "arpc_client_close refused: called on the client's own loop") != NULL)
        atomic_fetch_add(&close_refusals, 1);
}

static void record(int first, int second)
{
    atomic_store(&rc_first, first);
    atomic_store(&rc_second, second);
    latch_add();
}

static void h_reply_twice(arpc_request *req, void *ctx)
{
    (void)ctx;
    int a = arpc_reply(req, "first", 5);
    int b = arpc_reply(req, "second", 6);
    record(a, b);
}

static void h_reply_then_error(arpc_request *req, void *ctx)
{
    (void)ctx;
    int a = arpc_reply(req, "first", 5);
    int b = arpc_reply_error(req, "too late");
    record(a, b);
}

static void h_error_then_reply(arpc_request *req, void *ctx)
{
    (void)ctx;
    int a = arpc_reply_error(req, "first");
    int b = arpc_reply(req, "second", 6);
    record(a, b);
}

/* The handler hands req to a helper thread, which replies twice, and returns only when the
 * test lets it: the request is alive throughout. */
struct deferred {
    arpc_request *req;
    sem_t have_req, handler_gate;
    pthread_t helper;
};
static struct deferred g_def;

static void h_defer(arpc_request *req, void *ctx)
{
    (void)ctx;
    g_def.req = req;
    sem_post(&g_def.have_req);
    sem_wait(&g_def.handler_gate);
}

static void *deferred_replier(void *arg)
{
    (void)arg;
    sem_wait(&g_def.have_req);
    int a = arpc_reply(g_def.req, "first", 5);
    int b = arpc_reply(g_def.req, "second", 6);
    record(a, b);
    return NULL;
}

static arpc_server *g_server;
static void h_destroy_own_server(arpc_request *req, void *ctx)
{
    (void)ctx;
    int rc = arpc_server_destroy(g_server);
    arpc_reply(req, &rc, sizeof(rc));
}

static void start_server(char *addr, size_t addrlen)
{
    arpc_server_options so = {.workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&g_server, &so));
    arpc_method_options inl = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(g_server, "m.twice", h_reply_twice, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(g_server, "m.twice_inline", h_reply_twice, NULL, &inl));
    assert_int_equal(ARPC_OK, arpc_server_register(g_server, "m.reply_then_error", h_reply_then_error, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(g_server, "m.error_then_reply", h_error_then_reply, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(g_server, "m.defer", h_defer, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(g_server, "m.destroy", h_destroy_own_server, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(g_server, "m.destroy_inline", h_destroy_own_server, NULL, &inl));
    assert_int_equal(ARPC_OK, arpc_server_register(g_server, "m.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(g_server, "tcp://127.0.0.1:0", addr, addrlen));
}

/* A server and a client connected to it; the handlers' shared state reset. */
static arpc_client *open_pair(void)
{
    char addr[256];
    start_server(addr, sizeof(addr));
    arpc_client *c;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, NULL));
    atomic_store(&refusals_logged, 0);
    memset(&g_def, 0, sizeof(g_def));
    sem_init(&g_def.have_req, 0, 0);
    sem_init(&g_def.handler_gate, 0, 0);
    return c;
}

/* Both still work after the misuse; then both go. */
static void close_pair(arpc_client *c)
{
    assert_int_equal(ARPC_OK, arpc_call(c, "m.echo", "x", 1, NULL, NULL, 10000));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_int_equal(ARPC_OK, arpc_server_destroy(g_server));
    sem_destroy(&g_def.have_req);
    sem_destroy(&g_def.handler_gate);
}

/* Calls method; the client must get exactly the first reply. */
static void call_expect_first(arpc_client *c, const char *method, int status, const char *first)
{
    latch_reset();
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(status, arpc_call(c, method, "x", 1, &reply, &len, 10000));
    assert_int_equal(strlen(first), len);
    assert_memory_equal(first, reply, len);
    arpc_free(reply);
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* the handler has both results */
}

/* ---- a second reply ---- */

static void test_second_reply_refused(void **state)
{
    (void)state;
    arpc_client *c = open_pair();
    static const char *const twice[] = {"m.twice", "m.twice_inline"};
    for (size_t i = 0; i < 2; i++) {
        call_expect_first(c, twice[i], ARPC_OK, "first");
        assert_int_equal(ARPC_OK, atomic_load(&rc_first));
        assert_int_equal(ARPC_EINVAL, atomic_load(&rc_second));
    }
    call_expect_first(c, "m.reply_then_error", ARPC_OK, "first");
    assert_int_equal(ARPC_OK, atomic_load(&rc_first));
    assert_int_equal(ARPC_EINVAL, atomic_load(&rc_second));
    call_expect_first(c, "m.error_then_reply", ARPC_EHANDLER, "first");
    assert_int_equal(ARPC_OK, atomic_load(&rc_first));
    assert_int_equal(ARPC_EINVAL, atomic_load(&rc_second));

    /* A one-way request: no reply is sent, but a second "reply" is refused all the same. */
    latch_reset();
    assert_int_equal(ARPC_OK, arpc_notify(c, "m.twice", "x", 1));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    assert_int_equal(ARPC_OK, atomic_load(&rc_first));
    assert_int_equal(ARPC_EINVAL, atomic_load(&rc_second));

    assert_int_equal(5, atomic_load(&refusals_logged));
    close_pair(c);
}

/* The handler hands its request to another thread and waits; that thread replies, then
 * replies again while the handler still runs: refused; the client has the first reply. */
static void test_deferred_second_reply_refused(void **state)
{
    (void)state;
    arpc_client *c = open_pair();
    latch_reset();
    assert_int_equal(0, pthread_create(&g_def.helper, NULL, deferred_replier, NULL));
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_OK, arpc_call(c, "m.defer", "x", 1, &reply, &len, 10000));
    assert_int_equal(5, len);
    assert_memory_equal("first", reply, 5);
    arpc_free(reply);
    pthread_join(g_def.helper, NULL); /* both replies made, the handler still waiting */
    assert_int_equal(ARPC_OK, atomic_load(&rc_first));
    assert_int_equal(ARPC_EINVAL, atomic_load(&rc_second));
    assert_int_equal(1, atomic_load(&refusals_logged));
    sem_post(&g_def.handler_gate); /* now the handler returns and the request is freed */
    close_pair(c);
}

/* ---- NULL handles ---- */

static void test_null_handles(void **state)
{
    (void)state;
    assert_int_equal(ARPC_EINVAL, arpc_client_close(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_server_destroy(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_server_stop(NULL, 0));
    assert_int_equal(ARPC_EINVAL, arpc_reply(NULL, "x", 1));
    assert_int_equal(ARPC_EINVAL, arpc_reply_error(NULL, "x"));
}

/* Every refusal of connect and create says why in errbuf: a line an earlier failure left
 * there must not pass for this one's (a new user's trial: it said "connection refused" next
 * to an ARPC_EINVAL for a NULL address). A client-wide semantics outside the enum is refused
 * at connect, where it was accepted and every call then failed. */
static void test_refusals_overwrite_errbuf(void **state)
{
    (void)state;
    static const char stale[] = "stale line";
    char why[ARPC_ERRBUF_SIZE];
    arpc_client_options co = {.errbuf = why, .errbuf_len = sizeof(why)};
    arpc_client *c = NULL;
    snprintf(why, sizeof(why), "%s", stale);
    assert_int_equal(ARPC_EINVAL, arpc_client_connect(&c, NULL, &co));
    assert_string_equal("addr is NULL", why);
    snprintf(why, sizeof(why), "%s", stale);
    assert_int_equal(ARPC_EINVAL, arpc_client_connect(NULL, "inproc://misuse-nobody", &co));
    assert_string_equal("out is NULL", why);
    co.semantics = (enum arpc_call_semantics)9;
    snprintf(why, sizeof(why), "%s", stale);
    assert_int_equal(ARPC_EINVAL, arpc_client_connect(&c, "inproc://misuse-nobody", &co));
    assert_null(c);
    assert_non_null(strstr(why, "semantics 9 is not one of enum arpc_call_semantics"));
    arpc_server_options so = {.errbuf = why, .errbuf_len = sizeof(why)};
    snprintf(why, sizeof(why), "%s", stale);
    assert_int_equal(ARPC_EINVAL, arpc_server_create(NULL, &so));
    assert_string_equal("out is NULL", why);
}

static void on_cancel_never(arpc_request *req, void *arg)
{
    (void)req;
    (void)arg;
    fail_msg("a cancel callback registered on a NULL request ran");
}

/* Every public function taking an arpc_request * answers NULL as its header says. */
static void test_null_request(void **state)
{
    (void)state;
    size_t len = 77;
    assert_null(arpc_request_data(NULL, &len));
    assert_int_equal(0, len);
    assert_null(arpc_request_data(NULL, NULL));
    assert_null(arpc_request_method(NULL));
    assert_false(arpc_request_is_oneway(NULL));
    assert_int_equal(0, arpc_request_client_id(NULL));
    assert_null(arpc_request_peer(NULL));
    assert_null(arpc_request_peer_subject(NULL));
    assert_int_equal(0, arpc_request_seq(NULL));
    assert_int_equal(0, arpc_request_budget_ms(NULL));
    assert_false(arpc_request_cancelled(NULL));
    assert_int_equal(ARPC_EINVAL, arpc_request_on_cancel(NULL, on_cancel_never, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_reply(NULL, NULL, 0));
    assert_int_equal(ARPC_EINVAL, arpc_reply_error(NULL, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_reply_durable(NULL, "e", 1, "x", 1));
}

/* ---- waiting for oneself ---- */

struct close_in_then {
    arpc_client *c;
    atomic_int rc;
};

static void close_from_then(arpc_future *f, void *arg)
{
    (void)f;
    struct close_in_then *ct = arg;
    atomic_store(&ct->rc, arpc_client_close(ct->c));
    latch_add();
}

/* Closing a client waits for its loop: from a then-callback on that loop it is refused
 * (ARPC_EBUSY, and a line says so: else the client leaks without a word) and does nothing;
 * the client still works and closes normally afterwards. */
static void test_client_close_inside_then(void **state)
{
    (void)state;
    struct close_in_then ct = {.c = open_pair(), .rc = -1};
    /* The handler holds the call until the callback is registered, so that it runs on the
     * loop when the reply arrives, not here at registration. */
    arpc_future *f = arpc_call_async(ct.c, "m.defer", "x", 1, 10000);
    assert_true(sem_wait_secs(&g_def.have_req, 10));
    latch_reset();
    assert_int_equal(ARPC_OK, arpc_future_then(f, close_from_then, &ct));
    assert_int_equal(ARPC_OK, arpc_reply(g_def.req, "ok", 2));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    sem_post(&g_def.handler_gate);
    assert_int_equal(ARPC_EBUSY, atomic_load(&ct.rc));
    assert_int_equal(1, atomic_load(&close_refusals));
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, 10000));
    arpc_future_release(f);
    close_pair(ct.c);
}

/* Bad arguments to a call: each is refused ARPC_EINVAL, not sent, and the result names it
 * (a user cannot tell an empty method name from a NULL request by the code alone). */
static void expect_refused(arpc_future *f, const char *why)
{
    assert_int_equal(ARPC_EINVAL, arpc_future_wait_for(f, 10000));
    size_t len = 0;
    const char *text = arpc_future_data(f, &len);
    assert_non_null(text);
    assert_int_equal(strlen(why), len);
    assert_string_equal(why, text); /* NUL-terminated as well */
    arpc_future_release(f);
}

static void test_bad_call_arguments_named(void **state)
{
    (void)state;
    arpc_client *c = open_pair();
    char long_name[257]; /* 256 bytes: one over */
    memset(long_name, 'm', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    expect_refused(arpc_call_async(c, NULL, "x", 1, 1000), "the method name is NULL");
    expect_refused(arpc_call_async(c, "", "x", 1, 1000), "the method name is empty");
    expect_refused(arpc_call_async(c, long_name, "x", 1, 1000),
                   "the method name is longer than 255 bytes");
    expect_refused(arpc_call_async(c, "m.echo", NULL, 5, 1000), "the request is NULL with a length other than 0");
    arpc_call_options bad = {.semantics = (enum arpc_call_semantics)99};
    expect_refused(arpc_call_async_opts(c, "m.echo", "x", 1, &bad),
                   "the call's semantics is not one of enum arpc_call_semantics");
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_EINVAL, arpc_call(c, "", "x", 1, &reply, &len, 1000)); /* the sync call says the same */
    assert_non_null(reply);
    assert_string_equal("the method name is empty", reply);
    arpc_free(reply);
    close_pair(c);
}

/* Destroying a server waits for its loop and workers: from one of its handlers (on a worker,
 * or inline on the loop) it is refused (ARPC_EBUSY) and does nothing. */
static void test_server_destroy_inside_handler(void **state)
{
    (void)state;
    arpc_client *c = open_pair();
    static const char *const methods[] = {"m.destroy", "m.destroy_inline"};
    for (size_t i = 0; i < 2; i++) {
        void *reply = NULL;
        size_t len = 0;
        assert_int_equal(ARPC_OK, arpc_call(c, methods[i], "x", 1, &reply, &len, 10000));
        assert_int_equal(sizeof(int), len);
        int rc;
        memcpy(&rc, reply, sizeof(rc));
        assert_int_equal(ARPC_EBUSY, rc);
        arpc_free(reply);
    }
    close_pair(c);
}

int main(void)
{
    test_alloc_install();
    arpc_set_logger(count_refusals, NULL, ARPC_LOG_WARN); /* before other arpc calls */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_second_reply_refused),
        cmocka_unit_test_no_leak(test_deferred_second_reply_refused),
        cmocka_unit_test_no_leak(test_null_handles),
        cmocka_unit_test_no_leak(test_refusals_overwrite_errbuf),
        cmocka_unit_test_no_leak(test_null_request),
        cmocka_unit_test_no_leak(test_client_close_inside_then),
        cmocka_unit_test_no_leak(test_server_destroy_inside_handler),
        cmocka_unit_test_no_leak(test_bad_call_arguments_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
