/*
 * The listener when accept4 fails (core/listener.c, transport/sock.c), with accept4
 * interposed so that the next calls fail as the test says:
 *  - a failure of the machine (ENOBUFS, ENOMEM) pauses accepting for 100 ms and logs one line
 *    naming the address and the errno, however many accepts fail in a row (the line is
 *    throttled); then the pending client is accepted and served;
 *  - a failure of the pending connection alone (ECONNABORTED: the client left first) is
 *    skipped in silence, and the next connection taken in the same turn.
 * Out of descriptors (EMFILE, ENFILE) has its own tests (conn_limits_test, fd_limits).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#include "arpc/arpc.h"
#include "support/interpose.h"
#include "support/log_capture.h"
#include "support/test_util.h"
#include "transport/transport.h"

static atomic_int fail_left;  /* accepts still to fail */
static atomic_int fail_errno; /* with this errno */

int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    static _Atomic(void *) next;
    int (*fn)(int, struct sockaddr *, socklen_t *, int) =
        (int (*)(int, struct sockaddr *, socklen_t *, int))interpose_next("accept4", &next);
    int left = atomic_load(&fail_left);
    while (left > 0) {
        if (atomic_compare_exchange_weak(&fail_left, &left, left - 1)) {
            errno = atomic_load(&fail_errno);
            return -1;
        }
    }
    return fn(fd, sa, len, flags);
}

struct fixture {
    arpc_server *s;
    char addr[ARPC_ADDR_MAX];
};

static void start(struct fixture *fx)
{
    atomic_store(&fail_left, 0);
    assert_int_equal(ARPC_OK, arpc_server_create(&fx->s, &(arpc_server_options){.workers = 1}));
    assert_int_equal(ARPC_OK, arpc_server_register(fx->s, "t.echo", test_echo, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_listen(fx->s, "tcp://127.0.0.1:0", fx->addr, sizeof(fx->addr)));
    log_capture_clear();
}

static void machine_failure_pauses_and_says_so(int err, const char *name)
{
    struct fixture fx;
    start(&fx);
    atomic_store(&fail_errno, err);
    atomic_store(&fail_left, 5); /* five pauses in a row: one line */
    echo_call_once(fx.addr); /* its connection waits for the accept */
    assert_int_equal(0, atomic_load(&fail_left));
    if (LOG_LINES_WITH("accept on", fx.addr, name, "pausing 100 ms") != 1) {
        log_capture_print();
        fail();
    }
    arpc_server_destroy(fx.s);
}

static void test_enobufs_pauses_and_says_so(void **state)
{
    (void)state;
    machine_failure_pauses_and_says_so(ENOBUFS, "ENOBUFS");
}

static void test_enomem_pauses_and_says_so(void **state)
{
    (void)state;
    machine_failure_pauses_and_says_so(ENOMEM, "ENOMEM");
}

static void test_aborted_connection_is_skipped_in_silence(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx);
    atomic_store(&fail_errno, ECONNABORTED);
    atomic_store(&fail_left, 3);
    echo_call_once(fx.addr); /* its connection waits for the accept */
    assert_int_equal(0, atomic_load(&fail_left));
    if (LOG_LINES_WITH("accept") != 0) {
        log_capture_print();
        fail();
    }
    arpc_server_destroy(fx.s);
}

int main(void)
{
    log_capture_start(ARPC_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enobufs_pauses_and_says_so),
        cmocka_unit_test(test_enomem_pauses_and_says_so),
        cmocka_unit_test(test_aborted_connection_is_skipped_in_silence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
