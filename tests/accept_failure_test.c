/*
 * The listener when accept4 fails (core/listener.c, transport/sock.c), with accept4
 * interposed so that the next calls fail as the test says:
 *  - a failure of the machine (ENOBUFS, ENOMEM) pauses accepting for 100 ms and logs one line
 *    naming the address and the errno, however many accepts fail in a row (the line is
 *    throttled); then the pending client is accepted and served;
 *  - a failure of the pending connection alone (ECONNABORTED: the client left first) is
 *    skipped in silence, and the next connection taken in the same turn.
 * Out of descriptors (EMFILE, ENFILE) has its own tests (conn_limits_test, fd_limits); here,
 * with send interposed too, the GOAWAY a connection shed so is sent whole though the socket
 * takes it a few bytes at a time (a fault-injection trial's finding: one short send cut it,
 * and the client's connect said "is it an arpc server?" instead of ARPC_EOVERLOADED).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "arpc/arpc.h"
#include "support/interpose.h"
#include "support/log_capture.h"
#include "support/test_util.h"
#include "core/frame.h"
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

static atomic_int short_sends; /* sends of a GOAWAY still to cut to 3 bytes */

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    static _Atomic(void *) next;
    ssize_t (*fn)(int, const void *, size_t, int) =
        (ssize_t(*)(int, const void *, size_t, int))interpose_next("send", &next);
    /* byte 3 of a frame header is its kind (core/frame.h) */
    bool goaway = len > 3 && ((const uint8_t *)buf)[3] == ARPC_FRAME_GOAWAY;
    int left = atomic_load(&short_sends);
    while (goaway && len > 3 && left > 0) {
        if (atomic_compare_exchange_weak(&short_sends, &left, left - 1))
            return fn(fd, buf, 3, flags);
    }
    return fn(fd, buf, len, flags);
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

/* Out of descriptors at an accept: the pending connection is shed with a GOAWAY, which the
 * socket takes 3 bytes at a time here; the client reads it whole: ARPC_EOVERLOADED, said. */
static void test_shed_goaway_sent_whole_through_short_sends(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx);
    atomic_store(&fail_errno, EMFILE);
    atomic_store(&fail_left, 1); /* the listener's accept; the shed's own accept succeeds */
    atomic_store(&short_sends, 1000);
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options co = {.errbuf = why, .errbuf_len = sizeof(why)};
    arpc_client *c = NULL;
    int rc = arpc_client_connect(&c, fx.addr, &co);
    atomic_store(&short_sends, 0);
    if (rc != ARPC_EOVERLOADED || strstr(why, "out of file descriptors") == NULL)
        fail_msg("connect: %s (%s)", arpc_errname(rc), why);
    assert_int_equal(0, atomic_load(&fail_left));
    echo_call_once(fx.addr); /* the next connection is taken */
    arpc_server_destroy(fx.s);
}

int main(void)
{
    log_capture_start(ARPC_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enobufs_pauses_and_says_so),
        cmocka_unit_test(test_enomem_pauses_and_says_so),
        cmocka_unit_test(test_aborted_connection_is_skipped_in_silence),
        cmocka_unit_test(test_shed_goaway_sent_whole_through_short_sends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
