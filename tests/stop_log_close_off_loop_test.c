/*
 * A server's stop closes its reply log off the loop. The close waits for the disk (its last
 * records' fdatasyncs, a compaction under way); on an application's loop that other servers
 * and clients share, the stop used to do it on the loop, which served nobody meanwhile
 * (review 238: a 2 s fdatasync held another server's calls for 4 s). Two servers on one
 * loop: A with a reply log, B without. While A's stop is inside an fdatasync held by the test,
 * a call to B is answered.
 *
 * fdatasync is interposed (this program's definition comes first): once held, a call made
 * after A's stop stored SV_STOPPED (so the close's, not an earlier record's: review 240) waits
 * until the test lets it go.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arpc/arpc.h"
#include "core/server_internal.h"
#include "support/interpose.h"
#include "support/server_proc.h"
#include "support/test_util.h"

static atomic_bool sync_held, syncs_go;
static _Atomic(arpc_server *) hold_for; /* its stop's syncs, once it is stopped, are held */

int fdatasync(int fd);
int fdatasync(int fd)
{
    static _Atomic(void *) next;
    int (*real)(int) = (int (*)(int))interpose_next("fdatasync", &next);
    arpc_server *s = atomic_load(&hold_for);
    if (s != NULL && atomic_load(&s->sv_state) == SV_STOPPED) {
        atomic_store(&sync_held, true);
        while (!atomic_load(&syncs_go)) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    return real(fd);
}

static atomic_int stop_rc = -1;

static void *stop_a(void *arg)
{
    atomic_store(&stop_rc, arpc_server_stop(arg, 1000)); /* asserted after the join */
    return NULL;
}

static void test_a_stop_waits_for_its_log_off_the_loop(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_server_options oa = {.loop = loop, .log_dir = dir, .fsync = ARPC_FSYNC_ALWAYS};
    arpc_server_options ob = {.loop = loop};
    arpc_server *a, *b;
    char aa[256], ba[256];
    assert_int_equal(ARPC_OK, arpc_server_create(&a, &oa));
    assert_int_equal(ARPC_OK, arpc_server_create(&b, &ob));
    assert_int_equal(ARPC_OK, arpc_server_register(a, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(b, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(a, "tcp://127.0.0.1:0", aa, sizeof(aa)));
    assert_int_equal(ARPC_OK, arpc_server_listen(b, "tcp://127.0.0.1:0", ba, sizeof(ba)));
    arpc_client *ca, *cb;
    assert_int_equal(ARPC_OK, arpc_client_connect(&ca, aa, NULL));
    assert_int_equal(ARPC_OK, arpc_client_connect(&cb, ba, NULL));
    echo_ping(ca, TEST_WAIT_MS); /* a logged reply: the close has records to sync */
    echo_ping(cb, TEST_WAIT_MS);
    assert_int_equal(ARPC_OK, arpc_client_close(ca));

    atomic_store(&hold_for, a);
    pthread_t stopper;
    assert_int_equal(0, pthread_create(&stopper, NULL, stop_a, a));
    assert_true(WAIT_UNTIL(atomic_load(&sync_held))); /* A's stop is at its log's close */
    arpc_future *f = arpc_call_async(cb, "t.echo", "b", 1, TEST_WAIT_MS);
    assert_non_null(f);
    int rc = arpc_future_wait_for(f, 10000); /* the loop serves B meanwhile */
    atomic_store(&syncs_go, true);
    assert_int_equal(ARPC_OK, rc);
    arpc_future_release(f);
    assert_int_equal(0, pthread_join(stopper, NULL));
    assert_int_equal(ARPC_OK, atomic_load(&stop_rc));
    atomic_store(&hold_for, NULL);

    assert_int_equal(ARPC_OK, arpc_client_close(cb));
    assert_int_equal(ARPC_OK, arpc_server_destroy(a));
    assert_int_equal(ARPC_OK, arpc_server_destroy(b));
    arpc_loop_destroy(loop);
    server_proc_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_stop_waits_for_its_log_off_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
