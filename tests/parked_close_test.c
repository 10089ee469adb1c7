/*
 * A request parked on its connection (its actor's mailbox was full: docs/ARCHITECTURE.md,
 * "Flow control on the server") when that connection is lost without a goodbye. What a lost
 * connection does not cancel must not die parked either (docs/SEMANTICS.md, "The client goes
 * away"): a one-way message runs whatever became of its connection, and a numbered call runs
 * for the re-send that waits for it. Before, both were refused ARPC_ESHUTDOWN at the close: the
 * one-way message was lost, and a copy of the numbered call already attached to it (the client
 * reconnected before the server saw the old connection go) got ARPC_ESHUTDOWN from a server
 * that was not stopping.
 *
 * The method "block" runs on an actor whose mailbox holds one job: the first call runs (held
 * until the test lets it go), the second waits in the mailbox, the third is parked. A PING
 * answered after the third proves it was read and parked (a PING passes the hold). The lost
 * connection is a reset. Every wait is for an event, bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/block_server.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define CLIENT_ID 0x9a4cULL
#define INCARNATION 0x1ca7ULL

static int setup(void **state)
{
    static struct block_server bs;
    if (block_server_setup(&bs, 1) != 0 || block_server_listen(&bs) != 0)
        return -1;
    *state = &bs;
    return 0;
}

static int teardown(void **state)
{
    block_server_teardown(*state);
    return 0;
}

/* A PING on r answered: everything r sent before it was read (the PING passes a hold). */
static void sync_ping(struct raw_client *r, uint64_t xid)
{
    uint8_t ping[ARPC_FRAME_HEADER_SIZE];
    arpc_frame_encode_header(ping, ARPC_FRAME_PING, xid, 0);
    assert_true(raw_send(r, ping, sizeof(ping)));
    struct raw_frame f;
    assert_true(raw_read(r, &f, true));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_PONG);
}

/* seq 1 runs, seq 2 waits in the mailbox; what the caller sends next is parked. */
static void fill_the_actor(struct raw_client *a)
{
    assert_true(raw_request(a, 1, 1, 0, 0, "block", "1", 1));
    assert_true(block_wait_started());
    assert_true(raw_request(a, 2, 2, 0, 0, "block", "2", 1));
}

/* a is lost without a goodbye (a reset), and the server has seen it go. */
static void reset(struct block_server *fx, struct raw_client *a)
{
    arpc_server_stats st;
    assert_int_equal(arpc_server_stats(fx->bs_server, &st), ARPC_OK);
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(a->rc_fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)), 0);
    raw_close(a);
    assert_true(server_stat_reaches(fx->bs_server, offsetof(arpc_server_stats, connections_closed),
                                    st.connections_closed + 1, TEST_WAIT_MS));
}

static bool runs_reach(int want)
{
    (void)WAIT_UNTIL(block_runs() >= want);
    return block_runs() == want;
}

/* A one-way message parked when its connection is lost still runs. */
static void test_parked_one_way_runs_after_the_loss(void **state)
{
    struct block_server *fx = *state;
    struct raw_client a;
    assert_true(raw_connect_with(&a, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
    fill_the_actor(&a);
    uint8_t oneway[256];
    size_t n = arpc_frame_encode_request(oneway, ARPC_FRAME_ONEWAY, 0, 0, 0, 0, "block", 5, "3", 1);
    assert_true(raw_send(&a, oneway, n));
    sync_ping(&a, 90);
    reset(fx, &a);
    block_release(3);
    assert_true(runs_reach(3)); /* 1, 2, and the one-way message */
}

/* A numbered call parked when its connection is lost, with a copy already attached on the
 * client's next connection: the copy gets the call's result when it runs, once. */
static void test_parked_numbered_call_answers_its_copy(void **state)
{
    struct block_server *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect_with(&a, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
    fill_the_actor(&a);
    assert_true(raw_request(&a, 3, 3, 0, 0, "block", "3", 1));
    sync_ping(&a, 90);
    assert_true(raw_connect_with(&b, fx->bs_addr, CLIENT_ID, NULL, INCARNATION)); /* the client is back */
    assert_true(raw_request(&b, 30, 3, 0, 0, "block", "3", 1)); /* its copy attaches */
    assert_true(raw_request(&b, 31, 0, 0, 0, "echo", "e", 1));
    struct raw_frame f;
    assert_true(raw_read(&b, &f, false)); /* read after the copy: the copy was read */
    assert_int_equal(f.f.f_xid, 31);
    reset(fx, &a);
    block_release(3);
    assert_true(raw_read(&b, &f, false));
    assert_int_equal(f.f.f_xid, 30);
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY); /* not ERROR ARPC_ESHUTDOWN */
    assert_true(runs_reach(3));
    raw_close(&b);
}

/* After a goodbye, a parked numbered call dies with its connection, as the running ones are
 * cancelled: refused, it never runs (its client re-sends nothing). */
static void test_parked_numbered_call_dies_with_a_goodbye(void **state)
{
    struct block_server *fx = *state;
    struct raw_client a;
    assert_true(raw_connect_with(&a, fx->bs_addr, CLIENT_ID, NULL, INCARNATION));
    fill_the_actor(&a);
    assert_true(raw_request(&a, 3, 3, 0, 0, "block", "3", 1));
    sync_ping(&a, 90);
    assert_true(raw_goodbye(&a)); /* acted on in the hold's look-through */
    struct raw_frame probe; /* with only calls behind the hold: "read up to here" (PROTOCOL.md) */
    assert_true(raw_read(&a, &probe, true));
    assert_int_equal(probe.f.f_kind, ARPC_FRAME_PING);
    sync_ping(&a, 91);
    reset(fx, &a); /* its end of stream would wait behind the hold */
    block_release(3);
    assert_true(server_stat_reaches(fx->bs_server, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
    assert_int_equal(block_runs(), 1); /* the one running; 2 and 3 never run */
    /* The goodbye was never read in order (the reset dropped it with the buffer): the client's
     * kept replies go all the same once its running call is settled, not at its expiry. */
    assert_true(server_stat_reaches(fx->bs_server, offsetof(arpc_server_stats, reply_cache_clients), 0, TEST_WAIT_MS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parked_one_way_runs_after_the_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parked_numbered_call_answers_its_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parked_numbered_call_dies_with_a_goodbye, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
