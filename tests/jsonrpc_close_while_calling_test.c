/*
 * arpc_jsonrpc_close from one thread while other threads are inside arpc_jsonrpc_call and
 * arpc_jsonrpc_call_async (arpc/jsonrpc.h: close ends every pending call; only starting one
 * after close began is misuse). A caller that found the client live and hands its call to the
 * loop after the close's step there ran must find the client still there: close waits for it.
 * Before the fix, close freed the client (and its own loop) right after its step, under such a
 * caller: it then read the freed client and posted to a freed loop.
 *
 * The window is made to happen in every round, without guessing at timings: each caller says
 * it is inside from its second allocation (the future is the first; the call record, made
 * after the handle check, the second), and then waits there until the fake server sees the
 * connection's end, i.e. until the close's step on the loop has run. It then watches for the
 * client's block being freed for LINGER_MS (the allocator sees it go): a client freed while a
 * caller is inside fails the test in every build (and under ASan the caller's next read is a
 * use after free). With the fix the free cannot come before the caller leaves, so that watch
 * always runs out; it only widens the window and decides nothing by time.
 *
 * Each caller's call then ends ARPC_ESHUTDOWN (not sent: the connection is gone); a call the
 * server holds unanswered at the close ends ARPC_ECANCELLED.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/alloc.h"
#include "arpc/arpc.h"
#include "arpc/jsonrpc.h"
#include "async/loop_internal.h"
#include "support/test_util.h"

#define CALLERS 2
#define ROUNDS 10
#define LINGER_MS 20
#define WAIT_S 10 /* bounds a hang, never a timing check */

/* ---- an allocator that holds a caller inside its call and sees the client freed ---- */

static sem_t inside;                /* a caller is past the handle check */
static sem_t step_ran;              /* the close's step closed the connection (one per caller) */
static _Thread_local int tell_at;   /* tell at this thread's n-th allocation from now; 0: never */
static _Atomic(void *) watched;     /* the client of this round */
static pthread_mutex_t freed_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t freed_cond;
static bool client_freed;           /* under freed_mtx */
static atomic_uint freed_under_caller;

static bool wait_freed(int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&freed_mtx);
    while (!client_freed && pthread_cond_timedwait(&freed_cond, &freed_mtx, &until) == 0) {
    }
    bool freed = client_freed;
    pthread_mutex_unlock(&freed_mtx);
    return freed;
}

static void caller_inside(void)
{
    sem_post(&inside);
    CHECK(sem_wait_secs(&step_ran, WAIT_S));
    if (wait_freed(LINGER_MS)) /* the watch, not a wait: with the fix it always runs out */
        atomic_fetch_add(&freed_under_caller, 1);
}

static void *tell_malloc(size_t size, void *ctx)
{
    (void)ctx;
    if (tell_at > 0 && --tell_at == 0)
        caller_inside();
    return malloc(size);
}
static void *tell_realloc(void *p, size_t size, void *ctx)
{
    (void)ctx;
    return realloc(p, size);
}
static void tell_free(void *p, void *ctx)
{
    (void)ctx;
    if (p != NULL && p == atomic_load(&watched)) {
        pthread_mutex_lock(&freed_mtx);
        client_freed = true;
        pthread_cond_broadcast(&freed_cond);
        pthread_mutex_unlock(&freed_mtx);
    }
    free(p);
}
static const arpc_allocator tell_allocator = {tell_malloc, tell_realloc, tell_free, NULL};

static int group_setup(void **state)
{
    (void)state;
    arpc_set_allocator(&tell_allocator); /* before any other arpc function */
    sem_init(&inside, 0, 0);
    sem_init(&step_ran, 0, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&freed_cond, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

/* ---- a server that reads and never answers, and tells when the connection ends ---- */

static int listen_fd = -1;
static char addr[64];

static void listen_start(void)
{
    uint16_t port;
    listen_fd = fd_listen_loopback(0, 4, 0, &port);
    assert_true(listen_fd >= 0);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", port);
}

/* Reads until a whole request line has arrived (the call is sent). */
static bool read_line(int fd)
{
    char buf[256];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, WAIT_S * 1000) <= 0)
            return false;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return false;
        if (memchr(buf, '\n', (size_t)n) != NULL)
            return true;
    }
}

static void *watch_end(void *arg)
{
    int fd = *(int *)arg;
    CHECK(fd_wait_eof(fd, WAIT_S * 1000));
    for (int i = 0; i < CALLERS; i++)
        sem_post(&step_ran);
    return NULL;
}

/* ---- callers ---- */

struct caller {
    arpc_jsonrpc_client *c;
    bool blocking;
    int rc;
};

static void *caller_main(void *arg)
{
    struct caller *k = arg;
    tell_at = 2;
    if (k->blocking) {
        char *result = NULL;
        k->rc = arpc_jsonrpc_call(k->c, "T.Echo", "1", 1, &result, NULL, 0);
        arpc_free(result);
    } else {
        arpc_future *f = arpc_jsonrpc_call_async(k->c, "T.Echo", "1", 1, 0);
        k->rc = f != NULL ? arpc_future_wait(f) : ARPC_ENOMEM; /* f is the caller's, not the client's */
        arpc_future_release(f);
    }
    tell_at = 0;
    return NULL;
}

enum loop_kind {
    OWN_LOOP,      /* the client's own thread */
    USER_THREAD,   /* the application's loop on a thread of its own */
    CALLER_DRIVEN, /* nobody runs the application's loop: waits drive it */
    STOPPED,       /* the application's loop was stopped before the close */
};

static const char *const kind_name[] = {"own loop", "user loop", "caller-driven loop", "stopped loop"};

static arpc_loop *loop_for(enum loop_kind kind)
{
    if (kind == OWN_LOOP)
        return NULL;
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    if (kind != CALLER_DRIVEN)
        assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    return loop;
}

static void one_round(enum loop_kind kind)
{
    arpc_loop *loop = loop_for(kind);
    arpc_jsonrpc_options o = {.loop = loop};
    arpc_jsonrpc_client *c;
    assert_int_equal(ARPC_OK, arpc_jsonrpc_connect(&c, addr, &o));
    int fd = accept(listen_fd, NULL, NULL);
    assert_true(fd >= 0);
    atomic_store(&watched, c);
    pthread_mutex_lock(&freed_mtx);
    client_freed = false;
    pthread_mutex_unlock(&freed_mtx);
    /* A call on the wire, unanswered: the close ends it. */
    arpc_future *held = NULL;
    if (kind == OWN_LOOP || kind == USER_THREAD) {
        held = arpc_jsonrpc_call_async(c, "T.Hold", "[1]", 3, 0);
        assert_non_null(held);
        assert_true(read_line(fd));
    }
    if (kind == STOPPED) { /* its stop hook ends the connection now, before the close */
        arpc_loop_stop(loop);
        assert_true(arpc_loop_wait_not_running(loop));
    }
    pthread_t watcher;
    assert_int_equal(0, pthread_create(&watcher, NULL, watch_end, &fd));
    struct caller k[CALLERS];
    pthread_t th[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        k[i] = (struct caller){.c = c, .blocking = i % 2 == 0, .rc = -1};
        assert_int_equal(0, pthread_create(&th[i], NULL, caller_main, &k[i]));
    }
    for (int i = 0; i < CALLERS; i++)
        assert_true(sem_wait_secs(&inside, WAIT_S)); /* each found c live: none starts after the close */
    assert_int_equal(ARPC_OK, arpc_jsonrpc_close(c));
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(ARPC_ESHUTDOWN, k[i].rc); /* handed over after the connection's end */
    }
    pthread_join(watcher, NULL);
    atomic_store(&watched, NULL);
    assert_int_equal(0, atomic_load(&freed_under_caller));
    assert_int_equal(0, atomic_load(&bad_line));
    if (held != NULL) {
        assert_int_equal(ARPC_ECANCELLED, arpc_future_wait(held)); /* sent: the server may run it */
        arpc_future_release(held);
    }
    close(fd);
    if (loop != NULL)
        arpc_loop_destroy(loop);
}

static void close_while_calling(enum loop_kind kind)
{
    listen_start();
    for (int round = 0; round < ROUNDS; round++)
        one_round(kind);
    close(listen_fd);
    print_message("%s: %d rounds, %d callers each inside at the close\n", kind_name[kind], ROUNDS, CALLERS);
}

static void test_own_loop(void **state)
{
    (void)state;
    close_while_calling(OWN_LOOP);
}

static void test_user_loop(void **state)
{
    (void)state;
    close_while_calling(USER_THREAD);
}

static void test_caller_driven_loop(void **state)
{
    (void)state;
    close_while_calling(CALLER_DRIVEN);
}

/* The close runs its step itself and must still wait for the callers, whose hand-over the
 * stopped loop refuses (their calls end at once). */
static void test_stopped_user_loop(void **state)
{
    (void)state;
    close_while_calling(STOPPED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_loop),
        cmocka_unit_test(test_user_loop),
        cmocka_unit_test(test_caller_driven_loop),
        cmocka_unit_test(test_stopped_user_loop),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
