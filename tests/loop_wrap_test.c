/*
 * arpc on a libev loop the application owns (arpc_loop_wrap): a server and a client on the
 * application's ev, served and called from its one thread; worker replies waking that ev;
 * blocking calls refused inside ev_run and driven outside it; another thread's call served
 * by the owner's ev_run; the application's ev_run not kept alive by arpc's standing watchers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/test_util.h"

struct app {
    struct ev_loop *ev;
    arpc_loop *loop;
    arpc_server *server;
    arpc_client *client;
    char addr[256];
};

/* Everything on the application's ev, set up from its thread outside ev_run. */
static void app_open(struct app *a, bool inline_echo)
{
    a->ev = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(a->ev);
    assert_int_equal(ARPC_OK, arpc_loop_wrap(&a->loop, a->ev, NULL));
    arpc_server_options so = {.loop = a->loop, .workers = 2};
    assert_int_equal(ARPC_OK, arpc_server_create(&a->server, &so));
    arpc_method_options mo = {.inline_on_loop = inline_echo};
    assert_int_equal(ARPC_OK, arpc_server_register(a->server, "t.echo", test_echo, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_listen(a->server, "tcp://127.0.0.1:0", a->addr, sizeof(a->addr)));
    arpc_client_options co = {.loop = a->loop};
    assert_int_equal(ARPC_OK, arpc_client_connect(&a->client, a->addr, &co));
}

static void app_close(struct app *a)
{
    assert_int_equal(ARPC_OK, arpc_client_close(a->client));
    arpc_server_destroy(a->server);
    /* Nothing of arpc's is active any more: the application's ev_run returns at once. */
    ev_run(a->ev, 0);
    arpc_loop_destroy(a->loop);
    ev_loop_destroy(a->ev);
}

struct pipeline {
    struct app *app;
    unsigned started, done, failed, target;
    int nested_rc;
};

static void start_next(struct pipeline *p);

static void on_reply(arpc_future *f, void *arg)
{
    struct pipeline *p = arg;
    size_t len;
    const void *d = NULL;
    char want[32];
    unsigned n = (unsigned)snprintf(want, sizeof(want), "call %u", p->done);
    if (arpc_future_poll(f) != ARPC_OK || (d = arpc_future_data(f, &len)) == NULL || len != n ||
        memcmp(d, want, n) != 0)
        p->failed++;
    arpc_future_release(f);
    if (p->done++ == 0) /* inside the application's ev_run: a blocking call is refused */
        p->nested_rc = arpc_call(p->app->client, "t.echo", "x", 1, NULL, NULL, 1000);
    if (p->done == p->target)
        ev_break(p->app->ev, EVBREAK_ALL);
    else
        start_next(p);
}

static void start_next(struct pipeline *p)
{
    char msg[32];
    int n = snprintf(msg, sizeof(msg), "call %u", p->started++);
    arpc_future *f = arpc_call_async(p->app->client, "t.echo", msg, (size_t)n, 10000);
    assert_non_null(f);
    assert_int_equal(ARPC_OK, arpc_future_then(f, on_reply, p));
}

/* The application's ev_run carries calls one after another, each started from the previous
 * one's callback, to an inline handler and to a worker pool handler. */
static void test_calls_run_inside_application_loop(void **state)
{
    (void)state;
    for (int inline_echo = 0; inline_echo < 2; inline_echo++) {
        struct app a;
        app_open(&a, inline_echo);
        struct pipeline p = {.app = &a, .target = 200, .nested_rc = -1};
        start_next(&p);
        ev_run(a.ev, 0);
        assert_int_equal(p.target, p.done);
        assert_int_equal(0, p.failed);
        assert_int_equal(ARPC_EBUSY, p.nested_rc);
        /* Outside ev_run the owner may block: the call runs ev itself. */
        void *reply = NULL;
        size_t len = 0;
        assert_int_equal(ARPC_OK, arpc_call(a.client, "t.echo", "blocking", 8, &reply, &len, 10000));
        assert_int_equal(8, len);
        assert_memory_equal("blocking", reply, 8);
        arpc_free(reply);
        app_close(&a);
    }
}

struct other_thread {
    struct app *app;
    ev_async done_w;
    atomic_int rc;
};

static void *call_from_other_thread(void *arg)
{
    struct other_thread *o = arg;
    atomic_store(&o->rc, arpc_call(o->app->client, "t.echo", "from afar", 9, NULL, NULL, 20000));
    ev_async_send(o->app->ev, &o->done_w);
    return NULL;
}

static void on_other_done(struct ev_loop *ev, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(ev, EVBREAK_ALL);
}

/* A thread other than the owner calls: its call waits for the owner's ev_run to carry it. */
static void test_other_thread_waits_for_owner(void **state)
{
    (void)state;
    struct app a;
    app_open(&a, false);
    struct other_thread o = {.app = &a, .rc = -1};
    ev_async_init(&o.done_w, on_other_done);
    ev_async_start(a.ev, &o.done_w);
    pthread_t t;
    assert_int_equal(0, pthread_create(&t, NULL, call_from_other_thread, &o));
    ev_run(a.ev, 0); /* until the thread says it is done */
    pthread_join(t, NULL);
    assert_int_equal(ARPC_OK, atomic_load(&o.rc));
    ev_async_stop(a.ev, &o.done_w);
    app_close(&a);
}

/* A wrapped loop is the application's to run. */
static void test_wrapped_loop_misuse(void **state)
{
    (void)state;
    struct ev_loop *ev = ev_loop_new(EVFLAG_AUTO);
    arpc_loop *loop;
    assert_int_equal(ARPC_EINVAL, arpc_loop_wrap(&loop, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_wrap(&loop, ev, NULL));
    assert_int_equal(ARPC_EINVAL, arpc_loop_start(loop));
    assert_int_equal(ARPC_EINVAL, arpc_loop_run(loop));
    assert_false(arpc_loop_on_thread(loop)); /* outside ev_run */
    ev_run(ev, 0);                           /* returns: nothing of arpc's keeps it running */
    arpc_loop_destroy(loop);
    ev_loop_destroy(ev);
}

int main(void)
{
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_calls_run_inside_application_loop),
        cmocka_unit_test_no_leak(test_other_thread_waits_for_owner),
        cmocka_unit_test_no_leak(test_wrapped_loop_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
