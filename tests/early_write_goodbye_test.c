/*
 * A pipelined batch's early write (core/conn.c: arpc_conn_flush_batch) that fails does not cut
 * short the frames already read: they go up as they did when the write waited for the end of
 * the turn. Here the client pipelined inline calls and said goodbye (GOAWAY), then closed its
 * socket before the server read any of it; the server's early write of the calls' replies
 * fails (the peer is gone), and the goodbye behind them must still be heard: it cancels the
 * client's at-most-once long poll, which a lost connection leaves running (docs/SEMANTICS.md,
 * "The client goes away").
 *
 * The server's loop (the test's) is held inside a task (the gate) while the client sends and
 * closes, so what the server reads next is all there and its peer already gone. Unix sockets:
 * a write to a closed peer fails at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/conn.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define WATCHDOG_S 30
#define CLIENT_ID 0xea51ULL
#define CALLS (2 * ARPC_CONN_BATCH_FRAMES + 44) /* two early writes' worth, and more */

static sem_t park_in, cancelled, gate_in, gate_open;

static void park_on_cancel(arpc_request *req, void *arg)
{
    (void)arg;
    arpc_reply_error(req, "cancelled");
    sem_post(&cancelled);
}

/* A long poll: it ends only when cancelled. */
static void park(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_request_on_cancel(req, park_on_cancel, NULL);
    sem_post(&park_in);
}

/* A task on the server's loop: holds it until the test opens the gate. */
static void gate(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
    sem_post(&gate_in);
    sem_wait(&gate_open);
}

static size_t put_request(uint8_t *dst, uint8_t kind, uint64_t xid, uint64_t seq, const char *method)
{
    return arpc_frame_encode_request(dst, kind, xid, seq, 0, 0, method, (uint16_t)strlen(method), "x", 1);
}

static void test_goodbye_behind_a_failed_early_write(void **state)
{
    (void)state;
    sem_init(&park_in, 0, 0);
    sem_init(&cancelled, 0, 0);
    sem_init(&gate_in, 0, 0);
    sem_init(&gate_open, 0, 0);
    arpc_loop *loop;
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
    assert_int_equal(ARPC_OK, arpc_loop_start(loop));
    arpc_server *s;
    arpc_server_options so = {.loop = loop};
    char addr[128], bound[256];
    snprintf(addr, sizeof(addr), "unix:///tmp/arpc-early-goodbye-%d.sock", (int)getpid());
    arpc_method_options on_loop = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "park", park, NULL, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "now", test_echo, NULL, &on_loop));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, addr, bound, sizeof(bound)));

    struct raw_client r;
    assert_true(raw_connect(&r, bound, CLIENT_ID));
    uint8_t one[128];
    assert_true(raw_send(&r, one, put_request(one, ARPC_FRAME_REQUEST, 1, 1, "park"))); /* numbered */
    assert_true(sem_wait_secs(&park_in, WATCHDOG_S));
    assert_int_equal(ARPC_OK, arpc_loop_submit(loop, gate, NULL));
    assert_true(sem_wait_secs(&gate_in, WATCHDOG_S)); /* the loop is held: it reads nothing */

    /* The calls, the goodbye, and the close, all before the server reads a byte of them. */
    size_t each = arpc_frame_request_size(3, 1), size = CALLS * each + sizeof(one);
    uint8_t *batch = malloc(size);
    assert_non_null(batch);
    size_t n = 0;
    for (unsigned i = 0; i < CALLS; i++)
        n += put_request(batch + n, ARPC_FRAME_REQUEST, 2 + i, 0, "now");
    n += arpc_frame_encode_error(batch + n, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, 0, "bye", 3);
    assert_true(raw_send(&r, batch, n));
    free(batch);
    raw_close(&r);
    sem_post(&gate_open);

    assert_true(sem_wait_secs(&cancelled, WATCHDOG_S)); /* the goodbye was heard */
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    arpc_loop_destroy(loop);
    sem_destroy(&park_in);
    sem_destroy(&cancelled);
    sem_destroy(&gate_in);
    sem_destroy(&gate_open);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_goodbye_behind_a_failed_early_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
