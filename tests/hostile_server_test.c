/*
 * A client facing a server that misbehaves on purpose keeps its memory bounded and its calls'
 * outcomes true (a review's trials from the server's side, helper 221):
 *   - a server that floods PINGs and reads nothing: the client stops queueing PONGs once
 *     ARPC_CONN_PONG_BACKLOG_MAX waits unwritten (any frame answers a PING). Before, every
 *     PING queued its PONG: 1.5 GB in 15 s;
 *   - a server that reads nothing while the client sends one-way messages: a message that
 *     finds over 64 MiB waiting unwritten is dropped (counted, as one without a connection).
 *     Before, 1,000 messages of 1 MiB all queued: 1 GB.
 * Each server is a script on a thread of its own (support/raw_server.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <semaphore.h>
#include <string.h>
#include <sys/socket.h>

#include "arpc/arpc.h"
#include "core/conn.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

#define PING_PAYLOAD (64u << 10)
#define PINGS 512 /* 32 MiB of PONGs, were they all queued */

static sem_t looked; /* posted by the test once it has read the client's stats */

/* Reads the call, sends PINGS PINGs of PING_PAYLOAD bytes reading nothing (a small receive
 * buffer: the client's PONGs back up at once), then the call's reply: once the client has it,
 * it has read every PING. */
static bool ping_flood(struct raw_server *s, void *arg)
{
    (void)arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    uint8_t *ping = malloc(ARPC_FRAME_HEADER_SIZE + PING_PAYLOAD);
    bool ok = r != NULL && ping != NULL;
    struct raw_frame f;
    ok = ok && raw_server_accept_call(s, r, &f);
    uint64_t xid = f.f.f_xid;
    int small = 4096;
    ok = ok && setsockopt(r->rc_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0;
    if (ok)
        memset(ping + ARPC_FRAME_HEADER_SIZE, 'p', PING_PAYLOAD);
    for (uint64_t i = 1; ok && i <= PINGS; i++) {
        arpc_frame_encode_header(ping, ARPC_FRAME_PING, i, PING_PAYLOAD);
        ok = raw_send(r, ping, ARPC_FRAME_HEADER_SIZE + PING_PAYLOAD);
    }
    ok = ok && raw_server_reply_byte(r, xid, 'r');
    /* Closed unread once the test has looked (before, a reset could take the reply with it):
     * reading the client's backlog through a 4 KiB window would take minutes. */
    ok = ok && sem_wait_secs(&looked, TEST_WAIT_S);
    if (r != NULL)
        raw_close(r);
    free(r);
    free(ping);
    return ok;
}

static void test_ping_flood_queues_bounded_pongs(void **state)
{
    (void)state;
    assert_int_equal(0, sem_init(&looked, 0, 0));
    struct raw_server s;
    raw_server_start(&s, ping_flood, NULL);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, NULL));
    arpc_future *f = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_OK, arpc_future_wait_for(f, TEST_WAIT_MS));
    arpc_future_release(f);
    /* Every PING read: what waits is at most the bound and one PONG (and its frame header). */
    uint64_t queued = CLIENT_STAT(c, queued_bytes);
    print_message("queued after %d PINGs of %u bytes: %llu bytes\n", PINGS, PING_PAYLOAD, (unsigned long long)queued);
    assert_int_equal(0, sem_post(&looked));
    assert_true(queued <= ARPC_CONN_PONG_BACKLOG_MAX + ARPC_FRAME_HEADER_SIZE + PING_PAYLOAD);
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
    sem_destroy(&looked);
}

#define NOTE_BYTES (512u << 10)
#define NOTES 160 /* 80 MiB, were they all queued */

/* Says HELLO and reads nothing (a small receive buffer) until the test has looked. */
static bool read_nothing(struct raw_server *s, void *arg)
{
    (void)arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    bool ok = r != NULL && raw_server_accept_dedup(s, r);
    int small = 4096;
    ok = ok && setsockopt(r->rc_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0;
    ok = ok && sem_wait_secs(&looked, TEST_WAIT_S);
    if (r != NULL)
        raw_close(r);
    free(r);
    return ok;
}

static void test_oneways_to_a_server_not_reading_are_bounded(void **state)
{
    (void)state;
    assert_int_equal(0, sem_init(&looked, 0, 0));
    struct raw_server s;
    raw_server_start(&s, read_nothing, NULL);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.rs_addr, NULL));
    char *note = calloc(1, NOTE_BYTES);
    assert_non_null(note);
    for (int i = 0; i < NOTES; i++)
        assert_int_equal(ARPC_OK, arpc_notify(c, "t.note", note, NOTE_BYTES));
    free(note);
    assert_true(WAIT_UNTIL(CLIENT_STAT(c, oneways) == NOTES)); /* every one taken up by the loop */
    uint64_t queued = CLIENT_STAT(c, queued_bytes), dropped = CLIENT_STAT(c, oneways_dropped);
    print_message("%d messages of %u bytes: %llu bytes queued, %llu dropped\n", NOTES, NOTE_BYTES,
                  (unsigned long long)queued, (unsigned long long)dropped);
    assert_int_equal(0, sem_post(&looked));
    assert_true(queued <= ((size_t)64 << 20));
    assert_true(dropped > 0);
    arpc_client_close(c);
    assert_true(raw_server_join(&s));
    sem_destroy(&looked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping_flood_queues_bounded_pongs),
        cmocka_unit_test(test_oneways_to_a_server_not_reading_are_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
