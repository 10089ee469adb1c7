/*
 * A pollable loop driven from the application's own epoll loop (arpc_loop_fd,
 * arpc_loop_run_nowait), with no arpc thread: calls and replies carried by the application's
 * epoll_wait; a deadline met while the application sleeps for the timeout arpc gave it; a call
 * from another thread waking the application's epoll; misuse refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

static arpc_request *_Atomic kept;
static void h_keep(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&kept, req);
}

struct app {
    arpc_loop *loop;
    arpc_server *server;
    arpc_client *client;
    int epfd;
    int own_fd; /* an eventfd of the application's: other threads say "done" with it */
    bool own_fired;
    char addr[256];
};

static void app_open(struct app *a, bool inline_echo)
{
    arpc_loop_options lo = {.pollable = true};
    assert_int_equal(ARPC_OK, arpc_loop_create(&a->loop, &lo));
    arpc_server_options so = {.loop = a->loop, .workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&a->server, &so));
    arpc_method_options mo = {.inline_on_loop = inline_echo};
    assert_int_equal(ARPC_OK, arpc_server_register(a->server, "t.echo", test_echo, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_register(a->server, "t.keep", h_keep, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(a->server, "tcp://127.0.0.1:0", a->addr, sizeof(a->addr)));
    arpc_client_options co = {.loop = a->loop};
    assert_int_equal(ARPC_OK, arpc_client_connect(&a->client, a->addr, &co)); /* drives the loop itself */
    a->epfd = epoll_create1(EPOLL_CLOEXEC);
    a->own_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    a->own_fired = false;
    assert_true(a->epfd >= 0 && a->own_fd >= 0);
    int afd = arpc_loop_fd(a->loop);
    assert_true(afd >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = afd};
    assert_int_equal(0, epoll_ctl(a->epfd, EPOLL_CTL_ADD, afd, &ev));
    ev.data.fd = a->own_fd;
    assert_int_equal(0, epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->own_fd, &ev));
}

static void app_close(struct app *a)
{
    assert_int_equal(ARPC_OK, arpc_client_close(a->client));
    arpc_server_destroy(a->server);
    arpc_loop_destroy(a->loop);
    close(a->epfd);
    close(a->own_fd);
}

/* The application's loop: one arpc step, then sleep in epoll_wait for what arpc allowed, until
 * *done. Returns the number of sleeps that hit arpc's timeout; fails if arpc ever asked for an
 * unbounded sleep while `bounded` says a timer must be pending. */
static unsigned app_run(struct app *a, const bool *done, bool bounded)
{
    unsigned timeouts = 0;
    while (!*done && !a->own_fired) {
        int timeout = 0;
        assert_int_equal(ARPC_OK, arpc_loop_run_nowait(a->loop, &timeout));
        if (*done)
            break;
        if (bounded)
            assert_true(timeout >= 0);
        struct epoll_event evs[4];
        int n = epoll_wait(a->epfd, evs, 4, timeout);
        assert_true(n >= 0);
        if (n == 0)
            timeouts++;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == a->own_fd) {
                eventfd_t v;
                (void)eventfd_read(a->own_fd, &v);
                a->own_fired = true;
            }
        }
    }
    return timeouts;
}

struct pipeline {
    struct app *app;
    unsigned started, done, failed, target;
    int nested_rc;
    bool finished;
};

static void start_next(struct pipeline *p);

static void on_reply(arpc_future *f, void *arg)
{
    struct pipeline *p = arg;
    size_t len = 0;
    const void *d = arpc_future_data(f, &len);
    if (arpc_future_poll(f) != ARPC_OK || d == NULL || len != sizeof(unsigned))
        p->failed++;
    arpc_future_release(f);
    if (p->done++ == 0) /* inside a step: a blocking call is refused, as on any loop thread */
        p->nested_rc = arpc_call(p->app->client, "t.echo", "x", 1, NULL, NULL, 1000);
    if (p->done == p->target)
        p->finished = true;
    else if (p->started < p->target)
        start_next(p);
}

static void start_next(struct pipeline *p)
{
    unsigned n = p->started++;
    arpc_future *f = arpc_call_async(p->app->client, "t.echo", &n, sizeof(n), 10000);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, on_reply, p));
}

/* 16 calls outstanding at a time, 2,000 in all, carried by the application's epoll loop alone;
 * handlers inline on the loop and on worker actors. */
static void test_calls_carried_by_application_epoll(void **state)
{
    (void)state;
    for (int inline_echo = 0; inline_echo < 2; inline_echo++) {
        struct app a;
        app_open(&a, inline_echo);
        struct pipeline p = {.app = &a, .target = 2000, .nested_rc = -1};
        for (int i = 0; i < 16; i++)
            start_next(&p);
        app_run(&a, &p.finished, false);
        assert_int_equal(p.target, p.done);
        assert_int_equal(0, p.failed);
        assert_int_equal(ARPC_EBUSY, p.nested_rc);
        /* Between steps the application's thread may block: the call runs the loop itself. */
        assert_int_equal(ARPC_OK, arpc_call(a.client, "t.echo", "b", 1, NULL, NULL, 10000));
        app_close(&a);
    }
}

static void on_timed_out(arpc_future *f, void *arg)
{
    bool *done = arg;
    /* ARPC_EEXPIRED: a worker later than the deadline to take the call (a loaded machine);
     * the server's refusal then may come before the client's timer. */
    int rc = arpc_future_poll(f);
    assert_true(rc == ARPC_ETIMEDOUT || rc == ARPC_EEXPIRED);
    *done = true;
}

/* Nothing happens but a call's deadline: the application sleeps for the timeout arpc gave it
 * (never an unbounded one while the deadline is pending) and the call ends ARPC_ETIMEDOUT. */
/* One turn of the application's loop, without waiting: true (for WAIT_UNTIL's condition). */
static bool drive_once(struct app *a)
{
    int timeout;
    assert_int_equal(ARPC_OK, arpc_loop_run_nowait(a->loop, &timeout));
    return true;
}

static bool keep_ran_or_expired(struct app *a)
{
    return atomic_load(&kept) != NULL || METHOD_STAT(a->server, "t.keep", calls.by_outcome[ARPC_EEXPIRED]) != 0;
}

static void test_deadline_fires_while_application_sleeps(void **state)
{
    (void)state;
    struct app a;
    app_open(&a, false);
    atomic_store(&kept, NULL);
    bool done = false;
    arpc_future *f = arpc_call_async(a.client, "t.keep", "x", 1, 150);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, on_timed_out, &done));
    unsigned timeouts = app_run(&a, &done, true);
    assert_true(done);
    assert_true(timeouts >= 1); /* the deadline was met by a sleep arpc bounded, not by I/O */
    arpc_future_release(f);
    /* The handler still holds the request: answer it (unless the server already answered it
     * ARPC_ETIMEDOUT at the deadline the call carried), so nothing is left behind. A worker
     * that took the call up only after its budget refused it ARPC_EEXPIRED instead, never
     * running the handler (a loaded machine): nothing to answer then. */
    assert_true(WAIT_UNTIL(drive_once(&a) && keep_ran_or_expired(&a)));
    if (atomic_load(&kept) != NULL) {
        int rc = arpc_reply(atomic_load(&kept), "late", 4);
        assert_true(rc == ARPC_OK || rc == ARPC_ETIMEDOUT);
    }
    app_close(&a);
}

struct other_thread {
    struct app *app;
    atomic_int rc;
};

static void *call_from_other_thread(void *arg)
{
    struct other_thread *o = arg;
    atomic_store(&o->rc, arpc_call(o->app->client, "t.echo", "afar", 4, NULL, NULL, 20000));
    (void)eventfd_write(o->app->own_fd, 1);
    return NULL;
}

/* Another thread's call wakes the application's epoll through arpc's fd, and is carried by
 * the application's steps; the application hears of the end through its own fd. */
static void test_other_thread_call_wakes_application(void **state)
{
    (void)state;
    struct app a;
    app_open(&a, false);
    struct other_thread o = {.app = &a, .rc = -1};
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, call_from_other_thread, &o));
    bool never = false;
    app_run(&a, &never, false);
    pthread_join(t, NULL);
    assert_int_equal(ARPC_OK, atomic_load(&o.rc));
    app_close(&a);
}

struct queued_app {
    struct app *app;
    arpc_cq *requests;
    unsigned replies_ok, served;
    bool finished;
};

static void on_queued_reply(arpc_future *f, void *arg)
{
    struct queued_app *q = arg;
    size_t len = 0;
    const char *d = arpc_future_data(f, &len);
    if (arpc_future_poll(f) == ARPC_OK && len == 6 && memcmp(d, "served", 6) == 0)
        q->replies_ok++;
    arpc_future_release(f);
    q->finished = q->replies_ok == 100;
}

/* One thread serves and calls: requests of a method registered with a queue come out of the
 * application's own epoll (arpc_cq_fd), outside any arpc callback, and are answered from
 * there; the replies come back to the same thread through arpc's fd. */
static void test_requests_through_a_queue_on_one_thread(void **state)
{
    (void)state;
    struct queued_app q = {0};
    arpc_loop_options lo = {.pollable = true};
    struct app a = {0};
    q.app = &a;
    assert_int_equal(ARPC_OK, arpc_cq_create(&q.requests));
    assert_int_equal(ARPC_OK, arpc_loop_create(&a.loop, &lo));
    arpc_server_options so = {.loop = a.loop, .workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&a.server, &so));
    arpc_method_options bad = {.queue = q.requests, .inline_on_loop = true};
    assert_int_equal(ARPC_EINVAL, arpc_server_register(a.server, "t.q", NULL, NULL, &bad));
    arpc_method_options mo = {.queue = q.requests};
    assert_int_equal(ARPC_EINVAL, arpc_server_register(a.server, "t.q", test_echo, NULL, &mo)); /* no handler */
    assert_int_equal(ARPC_OK, arpc_server_register(a.server, "t.q", NULL, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_listen(a.server, "tcp://127.0.0.1:0", a.addr, sizeof(a.addr)));
    arpc_client_options co = {.loop = a.loop};
    assert_int_equal(ARPC_OK, arpc_client_connect(&a.client, a.addr, &co));
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = arpc_loop_fd(a.loop)};
    assert_int_equal(0, epoll_ctl(epfd, EPOLL_CTL_ADD, ev.data.fd, &ev));
    ev.data.fd = arpc_cq_fd(q.requests);
    assert_int_equal(0, epoll_ctl(epfd, EPOLL_CTL_ADD, ev.data.fd, &ev));
    for (int i = 0; i < 100; i++) {
        arpc_future *f = arpc_call_async(a.client, "t.q", "x", 1, 10000);
        assert_non_null(f);
        assert_int_equal(ARPC_OK, arpc_future_then(f, on_queued_reply, &q));
    }
    while (!q.finished) {
        int timeout;
        assert_int_equal(ARPC_OK, arpc_loop_run_nowait(a.loop, &timeout));
        struct epoll_event evs[4];
        int n = epoll_wait(epfd, evs, 4, q.finished ? 0 : timeout);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd != arpc_cq_fd(q.requests))
                continue;
            arpc_future *f;
            void *tag;
            while (arpc_cq_trynext(q.requests, &f, &tag) == ARPC_OK) {
                arpc_future_release(f);
                assert_int_equal(ARPC_OK, arpc_reply(tag, "served", 6)); /* our thread, no callback */
                q.served++;
            }
        }
    }
    assert_int_equal(100, q.served);
    assert_int_equal(100, q.replies_ok);
    /* The application takes no more requests (arpc_cq_shutdown): the method's next call is
     * refused, saying why, and did not run. */
    assert_int_equal(ARPC_OK, arpc_cq_shutdown(q.requests));
    arpc_future *f = arpc_call_async(a.client, "t.q", "x", 1, 10000);
    assert_non_null(f);
    assert_int_equal(ARPC_EREJECTED, arpc_future_wait(f)); /* runs the loop: this thread owns it */
    size_t why_len = 0;
    const char *why = arpc_future_data(f, &why_len);
    assert_true(why != NULL && strstr(why, "queue was shut down") != NULL);
    arpc_future_release(f);
    close(epfd);
    assert_int_equal(ARPC_OK, arpc_client_close(a.client));
    arpc_server_destroy(a.server);
    arpc_loop_destroy(a.loop);
    arpc_cq_destroy(q.requests);
}

static void test_pollable_misuse(void **state)
{
    (void)state;
    arpc_loop *plain;
    assert_int_equal(ARPC_OK, arpc_loop_create(&plain, NULL));
    assert_int_equal(-1, arpc_loop_fd(plain));
    int timeout = 7;
    assert_int_equal(ARPC_EINVAL, arpc_loop_run_nowait(plain, &timeout));
    assert_int_equal(ARPC_EINVAL, arpc_loop_run_nowait(NULL, NULL));
    arpc_loop_destroy(plain);

    arpc_loop *loop;
    arpc_loop_options lo = {.pollable = true};
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, &lo));
    assert_int_equal(ARPC_OK, arpc_loop_run_nowait(loop, &timeout));
    assert_int_equal(-1, timeout); /* nothing armed: sleep until the fd says otherwise */
    assert_int_equal(ARPC_EINVAL, arpc_loop_start(loop)); /* the application runs it */
    assert_int_equal(ARPC_EINVAL, arpc_loop_run(loop));
    arpc_loop_destroy(loop);
}

/* Each allocation of a pollable loop's creation failing in turn: ARPC_ENOMEM, nothing left
 * behind, never ARPC_ESYSTEM (its poller's block failing said that: review 239). */
static void test_pollable_create_without_memory(void **state)
{
    (void)state;
    arpc_loop_options lo = {.pollable = true};
    for (long k = 0;; k++) {
        arpc_loop *loop = NULL;
        atomic_store(&test_alloc_fail_in, k);
        int rc = arpc_loop_create(&loop, &lo);
        bool reached = atomic_exchange(&test_alloc_fail_in, -1) < 0; /* the k-th failed */
        if (!reached) {
            assert_int_equal(ARPC_OK, rc);
            arpc_loop_destroy(loop);
            break;
        }
        if (rc == ARPC_OK) { /* a failure it got over */
            arpc_loop_destroy(loop);
            continue;
        }
        assert_int_equal(ARPC_ENOMEM, rc);
        assert_null(loop);
    }
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_calls_carried_by_application_epoll),
        cmocka_unit_test_no_leak(test_deadline_fires_while_application_sleeps),
        cmocka_unit_test_no_leak(test_other_thread_call_wakes_application),
        cmocka_unit_test_no_leak(test_requests_through_a_queue_on_one_thread),
        cmocka_unit_test_no_leak(test_pollable_misuse),
        cmocka_unit_test_no_leak(test_pollable_create_without_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
