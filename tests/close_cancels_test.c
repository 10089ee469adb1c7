/*
 * A closed connection's calls nobody can get the answer to are cancelled on the server
 * (docs/SEMANTICS.md, "The client goes away"): a long poll, which ends only when its caller
 * cancels it, must hear that its caller is gone, or it holds the request (and its client's
 * share of the flow limits) until the event comes or the server stops.
 *
 * - A goodbye (GOAWAY: arpc_client_close says it) cancels every call of the connection,
 *   numbered or not, and every numbered call of the client's still running (the originals
 *   its copies wait for, and those begun on a connection lost before, sent again or not).
 * - A lost connection (no goodbye) cancels its unnumbered calls only: a numbered one may be
 *   re-sent, and the copy waits for the run and gets its result.
 * - A one-way message is never cancelled. A JSON-RPC connection's calls are unnumbered.
 *
 * The handler is a long poll: it parks its request in a slot (its payload's first digit) and
 * replies only from its cancel callback, or when the test replies for it. Every wait is for
 * an event (a semaphore, a frame, a server counter), bounded. "Not cancelled" is read after a
 * round trip on another connection, which the loop serves after the close it handled.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define WATCHDOG_S 30
#define CLIENT_ID 0xc105eULL
#define INCARNATION 0x1ca7ULL /* one client object's (arpc's client sends one) */
#define NSLOTS 10
#define NHOLD 16 /* long polls that hold a connection's input with default options */

static arpc_request *slots[NSLOTS];
static atomic_uint cancelled_bits; /* slot i's callback ran: bit i */
static atomic_int park_runs, park_cancelled;
static sem_t start_sem, cancel_sem;

static void park_on_cancel(arpc_request *req, void *arg)
{
    atomic_fetch_or(&cancelled_bits, 1u << (uintptr_t)arg);
    atomic_fetch_add(&park_cancelled, 1);
    arpc_reply_error(req, "cancelled");
    sem_post(&cancel_sem);
}

/* The slot a payload names: its first digit (a JSON-RPC call's params are "[\"3\"]"). */
static uintptr_t slot_of(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] >= '0' && p[i] <= '9')
            return (uintptr_t)(p[i] - '0');
    return 0;
}

/* A long poll: replies only when cancelled (or the test replies for it). */
static void park(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len = 0;
    const char *p = arpc_request_data(req, &len);
    uintptr_t slot = slot_of(p, len);
    slots[slot] = req;
    atomic_fetch_add(&park_runs, 1);
    arpc_request_on_cancel(req, park_on_cancel, (void *)slot);
    sem_post(&start_sem);
}

struct fixture {
    arpc_server *s;
    char addr[256];
};

static int setup(void **state)
{
    static struct fixture fx;
    memset(slots, 0, sizeof(slots));
    atomic_store(&cancelled_bits, 0);
    atomic_store(&park_runs, 0);
    atomic_store(&park_cancelled, 0);
    sem_init(&start_sem, 0, 0);
    sem_init(&cancel_sem, 0, 0);
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK || /* default options */
        arpc_server_register(fx.s, "park", park, NULL, NULL) != ARPC_OK ||
        arpc_server_register(fx.s, "echo", test_echo, NULL, NULL) != ARPC_OK ||
        arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    arpc_server_destroy(fx->s); /* a park left running is answered and cancelled by the stop */
    sem_destroy(&start_sem);
    sem_destroy(&cancel_sem);
    return 0;
}

static void wait_starts(int n)
{
    for (int i = 0; i < n; i++)
        assert_true(sem_wait_secs(&start_sem, WATCHDOG_S));
}

static void wait_cancels(int n)
{
    for (int i = 0; i < n; i++)
        assert_true(sem_wait_secs(&cancel_sem, WATCHDOG_S));
}

/* A round trip on a connection of its own: the loop handled everything before it, a close's
 * cancels included. */
static void round_trip(struct fixture *fx)
{
    struct raw_client r;
    assert_true(raw_connect(&r, fx->addr, CLIENT_ID + 1));
    assert_true(raw_request(&r, 1, 0, 0, 0, "echo", "e", 1));
    struct raw_frame f;
    assert_true(raw_read(&r, &f, false));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
    raw_close(&r);
}

static void assert_no_handler_left(struct fixture *fx)
{
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, handlers_in_flight), 0, WATCHDOG_S * 1000));
}

static bool send_oneway(struct raw_client *r, const char *method, const char *payload)
{
    uint8_t frame[256];
    size_t n = arpc_frame_encode_request(frame, ARPC_FRAME_ONEWAY, 0, 0, 0, 0, method, (uint16_t)strlen(method),
                                         payload, (uint32_t)strlen(payload));
    return raw_send(r, frame, n);
}

/* The defect as found: arpc_client_close with long polls outstanding (at-most-once, the
 * default, and one at-least-once). The client's calls end ARPC_ECANCELLED; on the server
 * every handler's cancel callback runs. */
static void test_client_close_cancels_its_long_polls(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c = NULL;
    assert_int_equal(arpc_client_connect(&c, fx->addr, NULL), ARPC_OK);
    arpc_future *f[4];
    for (int i = 0; i < 3; i++)
        assert_non_null(f[i] = arpc_call_async(c, "park", (char[]){(char)('0' + i)}, 1, ARPC_FOREVER));
    arpc_call_options once = {.deadline_ms = ARPC_FOREVER, .semantics = ARPC_AT_LEAST_ONCE};
    assert_non_null(f[3] = arpc_call_async_opts(c, "park", "3", 1, &once));
    wait_starts(4);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(arpc_future_wait_for(f[i], WATCHDOG_S * 1000), ARPC_ECANCELLED);
        arpc_future_release(f[i]);
    }
    wait_cancels(4);
    assert_int_equal(atomic_load(&cancelled_bits), 0xfu);
    assert_no_handler_left(fx);
}

/* A raw client's goodbye, then its close: every call cancelled, numbered or not; a one-way
 * message is not (nobody waits for its answer; it runs on). */
static void test_goodbye_cancels_every_call(void **state)
{
    struct fixture *fx = *state;
    struct raw_client a;
    assert_true(raw_connect(&a, fx->addr, CLIENT_ID));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "0", 1)); /* numbered */
    assert_true(raw_request(&a, 2, 0, 0, 0, "park", "1", 1)); /* unnumbered */
    assert_true(send_oneway(&a, "park", "2"));
    wait_starts(3);
    assert_true(raw_goodbye(&a));
    raw_close(&a);
    wait_cancels(2);
    round_trip(fx);
    assert_int_equal(atomic_load(&cancelled_bits), 0x3u);
    assert_false(arpc_request_cancelled(slots[2]));
    arpc_reply(slots[2], NULL, 0); /* the one-way message's handler finishes */
    assert_no_handler_left(fx);
}

/* A connection lost without a goodbye: its unnumbered call is cancelled; its numbered one
 * runs on, and the client's re-send on its next connection attaches to it and gets its
 * result. */
static void test_lost_connection_cancels_only_unnumbered_calls(void **state)
{
    struct fixture *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect(&a, fx->addr, CLIENT_ID));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "0", 1)); /* numbered */
    assert_true(raw_request(&a, 2, 0, 0, 0, "park", "1", 1)); /* unnumbered */
    wait_starts(2);
    raw_close(&a);
    wait_cancels(1);
    assert_true(raw_connect(&b, fx->addr, CLIENT_ID));
    assert_true(raw_request(&b, 7, 1, 0, 0, "park", "0", 1)); /* the re-send: same seq */
    assert_true(raw_request(&b, 8, 0, 0, 0, "echo", "e", 1));
    struct raw_frame f;
    assert_true(raw_read(&b, &f, false)); /* read after the copy: it is attached */
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
    assert_int_equal(f.f.f_xid, 8);
    assert_int_equal(atomic_load(&cancelled_bits), 0x2u);
    assert_false(arpc_request_cancelled(slots[0]));
    assert_int_equal(arpc_reply(slots[0], "result", 6), ARPC_OK);
    assert_true(raw_read(&b, &f, false));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
    assert_int_equal(f.f.f_xid, 7);
    assert_int_equal(f.body_len, 6);
    assert_memory_equal(f.body, "result", 6);
    assert_int_equal(atomic_load(&park_runs), 2);
    assert_int_equal(atomic_load(&park_cancelled), 1);
    assert_no_handler_left(fx);
    raw_close(&b);
}

/* The original's connection was lost (it runs on); the client re-sent the call on its next
 * connection, then said goodbye there: the original is cancelled, as the copy's CANCEL would. */
/* A long poll of CLIENT_ID (seq 1, slot 0) whose connection was then lost: it runs on. The
 * client object's incarnation (0: an older client, which has none). */
static void lose_a_long_poll(struct fixture *fx, uint64_t incarnation)
{
    struct raw_client a;
    assert_true(raw_connect_with(&a, fx->addr, CLIENT_ID, NULL, incarnation));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "0", 1));
    wait_starts(1);
    raw_close(&a);
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, connections_closed), 1, WATCHDOG_S * 1000));
}

/* The client says goodbye on b: the lost long poll (slot 0), which ran once, is cancelled. */
static void goodbye_cancels_the_lost_call(struct fixture *fx, struct raw_client *b)
{
    assert_true(raw_goodbye(b));
    raw_close(b);
    wait_cancels(1);
    assert_int_equal(atomic_load(&cancelled_bits), 0x1u);
    assert_int_equal(atomic_load(&park_runs), 1);
    assert_no_handler_left(fx);
}

static void test_goodbye_cancels_the_original_of_a_copy(void **state)
{
    struct fixture *fx = *state;
    struct raw_client b;
    lose_a_long_poll(fx, 0); /* an older client's: only the originals of its copies go */
    assert_true(raw_connect(&b, fx->addr, CLIENT_ID));
    assert_true(raw_request(&b, 7, 1, 0, 0, "park", "0", 1)); /* the copy */
    assert_true(raw_request(&b, 8, 0, 0, 0, "echo", "e", 1));
    struct raw_frame f;
    assert_true(raw_read(&b, &f, false)); /* the copy is attached */
    assert_int_equal(f.f.f_xid, 8);
    assert_int_equal(atomic_load(&park_cancelled), 0); /* a lost numbered call runs on */
    goodbye_cancels_the_lost_call(fx, &b);
}

/* The original's connection was lost (it runs on), and the client said goodbye on its next
 * connection before sending it again (arpc_client_close while the call waited to be re-sent:
 * its caller was told ARPC_ECANCELLED): the goodbye cancels it too, as it cancels every call
 * of the client's still running. Before, only the originals of copies read on the goodbye's
 * connection were cancelled: this one ran on until the server's stop. */
static void test_goodbye_cancels_a_lost_call_not_sent_again(void **state)
{
    struct fixture *fx = *state;
    struct raw_client b;
    lose_a_long_poll(fx, INCARNATION);
    round_trip(fx);
    assert_int_equal(atomic_load(&park_cancelled), 0); /* a lost numbered call runs on */
    assert_true(raw_connect_with(&b, fx->addr, CLIENT_ID, NULL, INCARNATION));
    goodbye_cancels_the_lost_call(fx, &b);
}

/* Two client objects of an older kind (no incarnation) with one chosen id share a key on the
 * server: one's goodbye cancels its own calls and the originals its copies wait for, never the
 * other's running call (a review: the goodbye's first version cancelled every call of the key). */
static void test_goodbye_spares_a_namesakes_call(void **state)
{
    struct fixture *fx = *state;
    struct raw_client a, b;
    assert_true(raw_connect(&a, fx->addr, CLIENT_ID));
    assert_true(raw_request(&a, 1, 1, 0, 0, "park", "0", 1)); /* A's long poll; A stays */
    wait_starts(1);
    assert_true(raw_connect(&b, fx->addr, CLIENT_ID));
    assert_true(raw_goodbye(&b));
    raw_close(&b);
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, connections_closed), 1, WATCHDOG_S * 1000));
    round_trip(fx);
    assert_int_equal(atomic_load(&park_cancelled), 0);
    assert_int_equal(arpc_reply(slots[0], "result", 6), ARPC_OK);
    struct raw_frame f;
    assert_true(raw_read(&a, &f, false));
    assert_int_equal(f.f.f_kind, ARPC_FRAME_REPLY);
    assert_int_equal(f.f.f_xid, 1);
    raw_close(&a);
}

/* A connection held by its long polls (NHOLD of them: its input is held) reads its client's
 * goodbye behind the hold: all are cancelled when it closes. */
static void test_goodbye_to_a_held_connection(void **state)
{
    struct fixture *fx = *state;
    struct raw_client a;
    assert_true(raw_connect(&a, fx->addr, CLIENT_ID));
    for (uint64_t i = 0; i < NHOLD; i++)
        assert_true(raw_request(&a, 1 + i, 1 + i, 0, 0, "park", "0", 1)); /* numbered */
    wait_starts(NHOLD);
    assert_true(raw_goodbye(&a));
    raw_close(&a);
    wait_cancels(NHOLD);
    assert_int_equal(atomic_load(&park_cancelled), NHOLD);
    assert_no_handler_left(fx);
}

/* A JSON-RPC connection closed under its call: nobody can get the answer (JSON-RPC calls are
 * never re-sent), so the call is cancelled. */
static void test_jsonrpc_close_cancels_its_call(void **state)
{
    struct fixture *fx = *state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(fd_connect_loopback(fd, fx->addr), 0);
    static const char call[] = "{\"method\":\"park\",\"params\":[\"4\"],\"id\":1}\n";
    assert_int_equal(write(fd, call, sizeof(call) - 1), (ssize_t)(sizeof(call) - 1));
    wait_starts(1);
    close(fd);
    wait_cancels(1);
    assert_int_equal(atomic_load(&cancelled_bits), 1u << 4);
    assert_no_handler_left(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_client_close_cancels_its_long_polls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goodbye_cancels_every_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_connection_cancels_only_unnumbered_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goodbye_cancels_the_original_of_a_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goodbye_cancels_a_lost_call_not_sent_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goodbye_spares_a_namesakes_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goodbye_to_a_held_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonrpc_close_cancels_its_call, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
