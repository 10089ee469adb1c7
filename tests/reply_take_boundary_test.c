/*
 * A worker's gathered send of its take's replies (core/reply_take.c) that the socket takes
 * exactly up to a reply's end: no frame was cut, so there is no rest to hand to the loop, and
 * the socket must be let go (arpc_conn_writev_frames_direct). On the old code the send counted
 * as a cut: the word kept CW_HANDOFF for a rest that never came, nothing wrote the connection
 * again, and the replies after the cut never arrived (2 of 9 read here).
 *
 * sendmsg is interposed: the first gathered send of more than one iovec is given only its
 * first iovec, as a socket with room for exactly one reply would take it.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include "arpc/arpc.h"
#include "core/frame.h"
#include "core/server_internal.h"
#include "support/raw_client.h"
#include "support/test_util.h"

static atomic_int cut_once = 0;
ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (m->msg_iovlen > 1 && atomic_exchange(&cut_once, 0)) {
        struct msghdr m2 = *m;
        m2.msg_iovlen = 1; /* the socket "took" exactly the first reply */
        return syscall(SYS_sendmsg, fd, &m2, flags);
    }
    return syscall(SYS_sendmsg, fd, m, flags);
}

static sem_t gate_open;
static void h_gate(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    (void)sem_wait_secs(&gate_open, TEST_WAIT_S);
    size_t len;
    const void *data = arpc_request_data(req, &len);
    (void)arpc_reply(req, data, len);
}

#define N 8
/* A take of N replies (the gate holds the worker while they queue), its send cut after the
 * first: every reply arrives. */
static void test_cut_at_boundary(void **state)
{
    (void)state;
    reply_take_hold_ns = UINT64_MAX / 2;
    latch_reset();
    sem_init(&gate_open, 0, 0);
    arpc_server_options o = {.workers = 1};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    arpc_method_options mo = {.reply_bytes_hint = 16};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.gate", h_gate, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, &mo));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    static struct raw_client r;
    assert_true(raw_connect(&r, addr, 0));
    uint8_t one = 1;
    assert_true(raw_request(&r, 1, 0, 0, 0, "t.gate", &one, 1));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    for (unsigned i = 2; i <= N + 1; i++) {
        uint8_t x = (uint8_t)i;
        assert_true(raw_request(&r, i, 0, 0, 0, "t.echo", &x, 1));
    }
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), N + 1, TEST_WAIT_MS));
    atomic_store(&cut_once, 1);
    sem_post(&gate_open);
    unsigned got = 0;
    for (unsigned i = 0; i < N + 1; i++) {
        struct raw_frame f;
        if (!raw_read(&r, &f, false))
            break;
        got++;
    }
    assert_int_equal(N + 1, got);
    raw_close(&r);
    arpc_server_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cut_at_boundary)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
