/*
 * arpc_server_options.workers: bounded by ARPC_SERVER_WORKERS_MAX (a larger pool is refused
 * ARPC_EINVAL, said in errbuf, before any thread starts); so is any actor group by the same
 * bound, ARPC_ACTOR_GROUP_MAX (refused ARPC_EINVAL before any thread starts, said in a WARN
 * line: arpc_actor_group_create has no errbuf); and a worker or loop thread that
 * cannot start fails arpc_server_create with ARPC_ESYSTEM, said in errbuf, with nothing left
 * behind: the threads already started are stopped and joined, no block is leaked. A client
 * whose loop thread cannot start says so in errbuf (it said "a system call failed", as if a
 * connect had been tried).
 *
 * pthread_create is wrapped (-Wl,--wrap=pthread_create, tests/CMakeLists.txt) so the n-th
 * thread the library starts fails with EAGAIN, as it would at RLIMIT_NPROC (which does not
 * bind root).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/log_capture.h"
#include "support/test_util.h"

int __real_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);

/* < 0: every pthread_create succeeds; n >= 0: n more succeed, then one fails (EAGAIN). */
static atomic_int creates_left = -1;
static atomic_int creates_failed;

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    int left = atomic_load(&creates_left);
    while (left >= 0 && !atomic_compare_exchange_weak(&creates_left, &left, left - 1))
        ;
    if (left == 0) {
        atomic_fetch_add(&creates_failed, 1);
        return EAGAIN;
    }
    return __real_pthread_create(t, attr, fn, arg);
}

static void test_workers_past_the_maximum_refused(void **state)
{
    (void)state;
    atomic_store(&creates_failed, 0);
    char why[256] = "";
    arpc_server *s = NULL;
    arpc_server_options so = {.workers = ARPC_SERVER_WORKERS_MAX + 1, .errbuf = why, .errbuf_len = sizeof(why)};
    atomic_store(&creates_left, 0); /* not a thread may start: the refusal comes first */
    assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
    atomic_store(&creates_left, -1);
    assert_null(s);
    assert_int_equal(0, atomic_exchange(&creates_failed, 0));
    assert_non_null(strstr(why, "workers 1025: at most 1024"));

    so.workers = 100000;
    assert_int_equal(ARPC_EINVAL, arpc_server_create(&s, &so));
    assert_non_null(strstr(why, "workers 100000"));
}

/* One bound for a server's pool and any group: the pool is a group. */
static void test_group_past_the_maximum_refused(void **state)
{
    (void)state;
    assert_int_equal(ARPC_ACTOR_GROUP_MAX, ARPC_SERVER_WORKERS_MAX);
    atomic_store(&creates_failed, 0);
    log_capture_clear();
    arpc_actor_group *g = NULL;
    atomic_store(&creates_left, 0); /* not a thread may start: the refusal comes first */
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_create(&g, ARPC_ACTOR_GROUP_MAX + 1, NULL));
    assert_null(g);
    assert_int_equal(ARPC_EINVAL, arpc_actor_group_create(&g, UINT_MAX, NULL));
    assert_null(g);
    atomic_store(&creates_left, -1);
    assert_int_equal(0, atomic_exchange(&creates_failed, 0));
    if (log_capture_count() != 2)
        log_capture_print();
    assert_int_equal(2, log_capture_count());
    assert_int_equal(1, LOG_LINES_WITH("cannot create an actor group of 1025 actors: at most 1024"));
    assert_int_equal(1, LOG_LINES_WITH("actor group of 4294967295 actors", "ARPC_ACTOR_GROUP_MAX"));

    /* A group at the bound is still made (1,024 threads: about 0.3 s). */
    assert_int_equal(ARPC_OK, arpc_actor_group_create(&g, ARPC_ACTOR_GROUP_MAX, NULL));
    assert_int_equal(ARPC_ACTOR_GROUP_MAX, arpc_actor_group_size(g));
    arpc_actor_group_destroy(g);
    log_capture_clear();
}

/* Each of the 3 workers' threads and the loop's in turn fails to start. */
static void test_thread_start_failure_midway(void **state)
{
    (void)state;
    atomic_store(&creates_failed, 0);
    for (int fail_at = 0; fail_at <= 3; fail_at++) {
        char why[256] = "";
        arpc_server *s = NULL;
        arpc_server_options so = {.workers = 3, .errbuf = why, .errbuf_len = sizeof(why)};
        atomic_store(&creates_left, fail_at);
        int rc = arpc_server_create(&s, &so);
        atomic_store(&creates_left, -1);
        assert_int_equal(1, atomic_exchange(&creates_failed, 0));
        assert_int_equal(ARPC_ESYSTEM, rc);
        assert_null(s);
        assert_non_null(strstr(why, fail_at < 3 ? "cannot start the pool's 3 worker threads"
                                                : "cannot start the server's loop thread"));
    }
    /* And a server then starts as usual. */
    arpc_server *s = NULL;
    arpc_server_options so = {.workers = 3};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_client_loop_thread_failure_said(void **state)
{
    (void)state;
    char why[256] = "";
    arpc_client *c = NULL;
    arpc_client_options co = {.errbuf = why, .errbuf_len = sizeof(why)};
    atomic_store(&creates_failed, 0);
    atomic_store(&creates_left, 0);
    int rc = arpc_client_connect(&c, "tcp://127.0.0.1:9", &co);
    atomic_store(&creates_left, -1);
    assert_int_equal(1, atomic_exchange(&creates_failed, 0));
    assert_int_equal(ARPC_ESYSTEM, rc);
    assert_null(c);
    assert_non_null(strstr(why, "cannot start the client's loop thread"));
}

int main(void)
{
    log_capture_start(ARPC_LOG_WARN);
    test_alloc_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_workers_past_the_maximum_refused),
        cmocka_unit_test_no_leak(test_group_past_the_maximum_refused),
        cmocka_unit_test_no_leak(test_thread_start_failure_midway),
        cmocka_unit_test_no_leak(test_client_loop_thread_failure_said),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
