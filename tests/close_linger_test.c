/*
 * arpc_client_close on a full socket (docs/SEMANTICS.md, "The client closes"): what is queued
 * for a server that is slow to read -- one-way messages arpc_notify accepted, the goodbye --
 * leaves as the server reads it, for close_linger_ms at most; what the linger could not send
 * is said in a WARN line with its count. Before, close wrote what the socket took and closed:
 * the rest vanished without a trace.
 *
 * The server's "sink" runs on an actor whose mailbox holds one job: the first message blocks
 * it until the test lets it go, the second waits in the mailbox, the third is parked and the
 * server stops reading; the client's socket fills and the rest of the messages stay in its
 * queue. The test lets the server go once the close is lingering (its DEBUG line says so) or
 * has returned (a close that does not linger). Every wait is for an event, bounded. Over TLS,
 * with replies coming back, the close must half-close and read to the server's end, or a reset
 * loses what the server had not read. A server that holds the connection's input at 4 calls in
 * flight: the close does not wait for the held calls, unless a one-way message is behind them
 * (then it waits until the server has read it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/cut_proxy.h"
#include "support/transport_fixture.h"
#include "support/test_util.h"
#ifdef ARPC_TEST_WITH_TLS
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/tls_certs.h"
#endif

#define MESSAGES 96
#define MESSAGE_BYTES (256u * 1024u) /* 24 MiB in all: more than loopback's buffers hold */

static atomic_int sink_runs;
static sem_t sink_started, sink_release;
static sem_t close_under_way; /* the close lingers, or returned */
static atomic_long unsent_reported = -1; /* from the close's WARN line */
static atomic_long dropped_closing_reported = -1; /* notifies that came after the close began */
static atomic_long written_maybe_lost = -1; /* written, but the linger ran out first */
static atomic_bool sink_waited_out; /* the first sink was never let go: the test waited on itself */
static char unsent_line[512];        /* the close's WARN line (read once the close returned) */

static void sink(arpc_request *req, void *ctx)
{
    (void)ctx;
    if (atomic_fetch_add(&sink_runs, 1) == 0) {
        sem_post(&sink_started);
        if (!sem_wait_secs(&sink_release, TEST_WAIT_S)) /* bounded: a failing test ends */
            atomic_store(&sink_waited_out, true);
    }
    latch_add();
    arpc_reply(req, NULL, 0); /* finishes a one-way request */
}

static void logger(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    long n;
    const char *of = strstr(line, "of the ");
    if (strstr(line, "waiting up to") != NULL)
        sem_post(&close_under_way);
    else if (strstr(line, "did not end its stream") != NULL && of != NULL && sscanf(of, "of the %ld one-way", &n) == 1)
        atomic_store(&written_maybe_lost, n);
    else if (strstr(line, "accepted as the close began") != NULL && sscanf(line, "closing the client of %*s %ld one-way", &n) == 1)
        atomic_store(&dropped_closing_reported, n);
    else if (sscanf(line, "closing the client of %*s %ld one-way message", &n) == 1) {
        snprintf(unsent_line, sizeof(unsent_line), "%s", line);
        atomic_store(&unsent_reported, n);
    }
}

struct fixture {
    arpc_server *s;
    arpc_actor *actor;
    char addr[256];
};

static int setup_on(void **state, const char *listen, const arpc_server_options *so)
{
    static struct fixture fx;
    atomic_store(&sink_runs, 0);
    atomic_store(&unsent_reported, -1);
    atomic_store(&dropped_closing_reported, -1);
    atomic_store(&written_maybe_lost, -1);
    unsent_line[0] = '\0';
    atomic_store(&sink_waited_out, false);
    latch_reset();
    sem_init(&sink_started, 0, 0);
    sem_init(&sink_release, 0, 0);
    sem_init(&close_under_way, 0, 0);
    arpc_set_logger(logger, NULL, ARPC_LOG_DEBUG);
    arpc_actor_options ao = {.mailbox_size = 1};
    if (arpc_server_create(&fx.s, so) != ARPC_OK || arpc_actor_create(&fx.actor, &ao) != ARPC_OK)
        return -1;
    arpc_method_options one = {.actor = fx.actor};
    if (arpc_server_register(fx.s, "sink", sink, NULL, &one) != ARPC_OK ||
        arpc_server_listen(fx.s, listen, fx.addr, sizeof(fx.addr)) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int setup(void **state) { return setup_on(state, "tcp://127.0.0.1:0", NULL); }

static int teardown(void **state)
{
    struct fixture *fx = *state;
    sem_post(&sink_release);
    arpc_server_destroy(fx->s);
    arpc_actor_destroy(fx->actor);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    sem_destroy(&sink_started);
    sem_destroy(&sink_release);
    sem_destroy(&close_under_way);
    return 0;
}

static void *closer(void *arg)
{
    assert_int_equal(arpc_client_close(arg), ARPC_OK);
    sem_post(&close_under_way);
    return NULL;
}

/* The server's actor blocked, then every message accepted (the socket fills behind them). */
static void fill(arpc_client *c)
{
    static uint8_t payload[MESSAGE_BYTES];
    assert_int_equal(arpc_notify(c, "sink", payload, sizeof(payload)), ARPC_OK);
    assert_true(sem_wait_secs(&sink_started, TEST_WAIT_S));
    for (int i = 1; i < MESSAGES; i++)
        assert_int_equal(arpc_notify(c, "sink", payload, sizeof(payload)), ARPC_OK);
}

/* Closes c on a thread of its own; once the close lingers, lets the server's sink go on, and
 * waits for the close to return. */
static void close_then_let_the_server_go(arpc_client *c)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, closer, c), 0);
    assert_true(sem_wait_secs(&close_under_way, TEST_WAIT_S));
    sem_post(&sink_release);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* The close was let go by the test, not by the sink giving up on it (before, a close
     * whose queue was already written said nothing, and the two waited 30 s on each other). */
    assert_false(atomic_load(&sink_waited_out));
}

/* Closed while the server reads nothing, then the server goes on: every message arrives. */
static void test_close_waits_for_a_slow_server(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, fx->addr, NULL), ARPC_OK);
    fill(c);
    close_then_let_the_server_go(c);
    assert_true(latch_wait(MESSAGES, TEST_WAIT_MS));
    assert_int_equal(atomic_load(&sink_runs), MESSAGES);
    assert_int_equal(atomic_load(&unsent_reported), -1); /* nothing was dropped */
}

/* A server that reads nothing within the linger: close returns after it, and the messages it
 * could not send are counted; every other one arrives once the server goes on. */
static void test_close_reports_what_the_linger_could_not_send(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c;
    arpc_client_options o = {.close_linger_ms = 50};
    assert_int_equal(arpc_client_connect(&c, fx->addr, &o), ARPC_OK);
    fill(c);
    arpc_server_stats st;
    assert_int_equal(arpc_server_stats(fx->s, &st), ARPC_OK);
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    long unsent = atomic_load(&unsent_reported);
    assert_true(unsent > 0 && unsent < MESSAGES);
    sem_post(&sink_release);
    /* The server reads what was written, then the end of stream (a frame cut short is dropped),
     * and runs what it read. */
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, connections_closed), st.connections_closed + 1,
                                    TEST_WAIT_MS));
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
    assert_int_equal(atomic_load(&sink_runs) + unsent, MESSAGES);
}

/* A caller-driven client (its loop runs only inside its calls and its close) whose server has
 * stopped: over unix:// the close's goodbye meets the closed socket (EPIPE), and its WARN line
 * says the connection ended, not that the server did not read within close_linger_ms (it
 * said that, though the close returned at once; found by a new user's review). */
static void test_close_after_the_server_left_says_the_connection_ended(void **state)
{
    (void)state;
    arpc_server *s;
    char listen[128], addr[256];
    make_unix_addr(listen, sizeof(listen));
    assert_int_equal(arpc_server_create(&s, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, listen, addr, sizeof(addr)), ARPC_OK);
    arpc_loop *loop;
    assert_int_equal(arpc_loop_create(&loop, NULL), ARPC_OK);
    arpc_client_options o = {.loop = loop, .close_linger_ms = 60000};
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, addr, &o), ARPC_OK);
    assert_int_equal(arpc_server_stop(s, 0), ARPC_OK);
    assert_int_equal(arpc_client_close(c), ARPC_OK); /* well within the minute's linger */
    arpc_loop_destroy(loop);
    arpc_server_destroy(s);
    assert_true(atomic_load(&unsent_reported) >= 0);
    assert_non_null(strstr(unsent_line, "the connection ended first ("));
    assert_null(strstr(unsent_line, "did not read them within"));
}

/* ---- a server that holds the connection's input ---- */

/* "park" keeps its requests until the test lets them go (or answers at once once told to);
 * "count" counts one-way messages. The server holds a connection's input at 4 calls in
 * flight (max_calls_per_conn), so the calls after the fourth wait in its read buffer. */
#define PARK_MAX 4
static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static arpc_request *parked[64];
static int nparked;
static bool park_open;

static void park(arpc_request *req, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&park_mu);
    bool now = park_open || nparked == (int)(sizeof(parked) / sizeof(parked[0]));
    if (!now)
        parked[nparked++] = req;
    pthread_mutex_unlock(&park_mu);
    if (now)
        arpc_reply(req, NULL, 0);
}

static void count(arpc_request *req, void *ctx)
{
    (void)ctx;
    latch_add();
    arpc_reply(req, NULL, 0);
}

static void unpark_all(void)
{
    pthread_mutex_lock(&park_mu);
    park_open = true;
    int n = nparked;
    nparked = 0;
    pthread_mutex_unlock(&park_mu);
    for (int i = 0; i < n; i++)
        arpc_reply(parked[i], NULL, 0);
}

/* The 2 x PARK_MAX calls a close ended: ARPC_ECANCELLED for the first PARK_MAX, which the
 * server ran; the others either so (sent) or ARPC_ESHUTDOWN (their requests still waited whole
 * in the client's queue and were taken back: under load its loop may not have written them
 * yet). Released. */
static void release_ended_by_close(arpc_future **f)
{
    for (int i = 0; i < 2 * PARK_MAX; i++) {
        int rc = arpc_future_poll(f[i]);
        if (i < PARK_MAX || rc != ARPC_ESHUTDOWN)
            assert_int_equal(ARPC_ECANCELLED, rc);
        arpc_future_release(f[i]);
    }
}

static arpc_server *park_server(char *addr, size_t addrlen)
{
    pthread_mutex_lock(&park_mu);
    park_open = false;
    nparked = 0;
    pthread_mutex_unlock(&park_mu);
    arpc_server_options so = {.max_calls_per_conn = PARK_MAX};
    arpc_server *s;
    assert_int_equal(arpc_server_create(&s, &so), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "park", park, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_register(s, "count", count, NULL, NULL), ARPC_OK);
    assert_int_equal(arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen), ARPC_OK);
    return s;
}

/* A park server and a client (close_linger_ms linger_ms) with 2 x PARK_MAX calls to "park":
 * the first PARK_MAX running, the others held behind the server's hold. */
static arpc_server *held_client(arpc_client **c, arpc_future **f, int64_t linger_ms)
{
    char addr[256];
    arpc_server *s = park_server(addr, sizeof(addr));
    arpc_client_options o = {.close_linger_ms = linger_ms};
    assert_int_equal(arpc_client_connect(c, addr, &o), ARPC_OK);
    for (int i = 0; i < 2 * PARK_MAX; i++)
        assert_non_null(f[i] = arpc_call_async(*c, "park", "x", 1, ARPC_FOREVER));
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), PARK_MAX, TEST_WAIT_MS));
    return s;
}

static sem_t close_returned; /* closer_posting returned */

static void *closer_posting(void *arg)
{
    assert_int_equal(arpc_client_close(arg), ARPC_OK);
    sem_post(&close_returned);
    return NULL;
}

/* 8 calls to "park", 4 of them held behind the server's hold, and nothing else: the goodbye
 * passes the hold, and with only calls waiting behind it the server says at once that it read
 * the client's end, so the close returns without waiting for the held calls' handlers, which
 * the test lets go only after it (before, the close waited all of close_linger_ms, here far
 * longer than the wait: a new user's trial). The calls end ARPC_ECANCELLED, nothing dropped. */
static void test_close_behind_held_calls_does_not_wait_for_them(void **state)
{
    (void)state;
    arpc_client *c;
    arpc_future *f[2 * PARK_MAX];
    arpc_server *s = held_client(&c, f, 4 * TEST_WAIT_MS);
    sem_init(&close_returned, 0, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, closer_posting, c), 0);
    bool returned = sem_wait_secs(&close_returned, TEST_WAIT_S); /* the parked calls still hold the server */
    unpark_all();
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(returned);
    release_ended_by_close(f);
    assert_int_equal(atomic_load(&unsent_reported), -1);
    sem_destroy(&close_returned);
    arpc_server_destroy(s);
}

/* A client with 8 calls to "park", 4 of them held behind the server's hold, and a one-way
 * message sent once the hold is on, closed on a thread of its own: the close returns, every
 * call ended ARPC_ECANCELLED, nothing is said dropped, and the message ran once. (When it
 * runs is not fixed: the close's cancels may answer the parked calls and end the hold before
 * the test lets them go -- under load, 2 runs in 30 -- so the test does not time it.) */
static void test_close_behind_held_calls_waits_for_a_one_way(void **state)
{
    (void)state;
    arpc_client *c;
    arpc_future *f[2 * PARK_MAX];
    arpc_server *s = held_client(&c, f, 4 * TEST_WAIT_MS);
    assert_int_equal(arpc_notify(c, "count", "y", 1), ARPC_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, closer, c), 0);
    assert_true(sem_wait_secs(&close_under_way, TEST_WAIT_S)); /* it lingers (or returned) */
    unpark_all();
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_true(latch_wait(1, TEST_WAIT_MS));
    release_ended_by_close(f);
    assert_int_equal(atomic_load(&unsent_reported), -1);
    arpc_server_destroy(s);
    assert_false(latch_wait(2, 0)); /* once */
}

/* One-way messages behind a hold that outlasts the linger: written whole, and the server
 * never read them. The close cannot know which the server read, but it says that those it had
 * not read are lost (before, nothing was said: a review's stress test). Under load the hold
 * may end before the linger does (the close's cancels of the parked calls, as in the one-way
 * case above): then every message ran and nothing is said, which is checked instead. */
static void test_close_says_what_a_linger_that_ran_out_may_lose(void **state)
{
    (void)state;
    arpc_client *c;
    arpc_future *f[2 * PARK_MAX];
    arpc_server *s = held_client(&c, f, 200);
    for (int i = 0; i < 3; i++)
        assert_int_equal(arpc_notify(c, "count", "y", 1), ARPC_OK);
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, oneways), 3, TEST_WAIT_MS)); /* queued */
    assert_int_equal(arpc_client_close(c), ARPC_OK); /* the hold outlasts the 200 ms, mostly */
    long said = atomic_load(&written_maybe_lost);
    assert_int_equal(atomic_load(&unsent_reported), -1); /* all of it left whole */
    unpark_all();
    release_ended_by_close(f);
    if (said == -1) /* the linger did not run out: the server read them all */
        assert_true(latch_wait(3, TEST_WAIT_MS));
    else
        assert_int_equal(said, 3);
    arpc_server_destroy(s);
}

/* ---- arpc_notify racing arpc_client_close ---- */

/* Another thread's arpc_notify inside as the close begins: its message's job may come to the
 * client's loop after the close's step, and is dropped; the close says so, in a line of its
 * own, once every such caller has left (before, only a stat counted it, which nobody could
 * read once close returned: a review's stress test). Each round: the client's loop (the
 * test's own) is held by a task, a notifier and the closer start together, the notifier
 * returns (its notify accepted or refused ARPC_ESHUTDOWN; the close cannot return meanwhile,
 * its step waiting for the loop), the loop goes on. Every message accepted then ran on the
 * server, or was said dropped. A large body makes the notifier's copy long enough that the
 * close's step often comes first. */
#define RACE_ROUNDS 200
#define RACE_BYTES (256u * 1024u)

static sem_t race_go, race_notified, race_loop_held, race_loop_release;
static arpc_client *race_client;
static char *race_body;
static atomic_int race_rc;

static void race_hold_loop(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
    sem_post(&race_loop_held);
    (void)sem_wait_secs(&race_loop_release, TEST_WAIT_S); /* bounded: a failing test ends */
}

static void *race_notifier(void *arg)
{
    (void)arg;
    assert_int_equal(sem_wait(&race_go), 0);
    atomic_store(&race_rc, arpc_notify(race_client, "count", race_body, RACE_BYTES));
    sem_post(&race_notified);
    return NULL;
}

static void *race_closer(void *arg)
{
    (void)arg;
    assert_int_equal(sem_wait(&race_go), 0);
    assert_int_equal(arpc_client_close(race_client), ARPC_OK);
    return NULL;
}

static void test_notify_racing_close_is_run_or_said(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = park_server(addr, sizeof(addr)); /* its "count": one-way messages, no hold */
    arpc_loop *loop;
    assert_int_equal(arpc_loop_create(&loop, NULL), ARPC_OK);
    assert_int_equal(arpc_loop_start(loop), ARPC_OK);
    race_body = calloc(1, RACE_BYTES);
    assert_non_null(race_body);
    sem_init(&race_go, 0, 0);
    sem_init(&race_notified, 0, 0);
    sem_init(&race_loop_held, 0, 0);
    sem_init(&race_loop_release, 0, 0);
    unsigned ran = 0, accepted_dropped = 0;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        atomic_store(&dropped_closing_reported, -1);
        arpc_client_options o = {.loop = loop, .close_linger_ms = 4 * TEST_WAIT_MS};
        assert_int_equal(arpc_client_connect(&race_client, addr, &o), ARPC_OK);
        assert_int_equal(arpc_loop_submit(loop, race_hold_loop, NULL), ARPC_OK);
        assert_true(sem_wait_secs(&race_loop_held, TEST_WAIT_S));
        pthread_t n, cl;
        assert_int_equal(pthread_create(&n, NULL, race_notifier, NULL), 0);
        assert_int_equal(pthread_create(&cl, NULL, race_closer, NULL), 0);
        sem_post(&race_go);
        sem_post(&race_go);
        assert_true(sem_wait_secs(&race_notified, TEST_WAIT_S)); /* the close is still under way */
        sem_post(&race_loop_release);
        assert_int_equal(pthread_join(cl, NULL), 0);
        assert_int_equal(pthread_join(n, NULL), 0);
        int rc = atomic_load(&race_rc);
        if (rc != ARPC_OK) {
            assert_int_equal(rc, ARPC_ESHUTDOWN); /* started once the close had begun */
            continue;
        }
        long dropped = atomic_load(&dropped_closing_reported);
        assert_true(dropped == -1 || dropped == 1);
        assert_int_equal(atomic_load(&unsent_reported), -1); /* the server reads promptly */
        if (dropped == 1)
            accepted_dropped++;
        else
            assert_true(latch_wait(++ran, TEST_WAIT_MS)); /* it ran */
    }
    print_message("%d rounds: %u messages ran, %u said dropped as the close began\n", RACE_ROUNDS, ran,
                  accepted_dropped);
    assert_int_equal(arpc_server_destroy(s), ARPC_OK);
    assert_false(latch_wait(ran + 1, 0)); /* none ran that was said dropped */
    arpc_loop_destroy(loop);
    free(race_body);
    sem_destroy(&race_go);
    sem_destroy(&race_notified);
    sem_destroy(&race_loop_held);
    sem_destroy(&race_loop_release);
}

static uint64_t oneway_stat(arpc_client *c, bool dropped)
{
    arpc_client_stats cs;
    assert_int_equal(arpc_client_stats(c, &cs), ARPC_OK);
    return dropped ? cs.oneways_dropped : cs.oneways;
}

/* The connection breaks (a network path fails) while one-way messages wait in the client's
 * queue: they are gone, as documented, and counted in oneways_dropped; the client stays open.
 * Then, with no connection (the proxy holds the reconnect), a message is dropped at once and
 * counted. (Before, both were silent while the client stayed open.) */
static void test_one_ways_dropped_at_a_broken_connection_are_counted(void **state)
{
    enum { MORE = 160, SENT = MESSAGES + MORE }; /* 64 MiB: more than the four sockets hold */
    struct fixture *fx = *state;
    char via[128];
    struct cut_proxy *px = cut_proxy_start(fx->addr, via, sizeof(via));
    assert_non_null(px);
    arpc_client *c;
    assert_int_equal(arpc_client_connect(&c, via, NULL), ARPC_OK);
    /* From now on no reconnect gets through (the proxy may give up on the stalled pair by
     * itself, after a second without progress, before the test cuts it): one connection. */
    cut_proxy_hold_new(px, true);
    fill(c);
    static uint8_t payload[MESSAGE_BYTES];
    for (int i = 0; i < MORE; i++) /* the proxy's two sockets hold as much as the server's */
        assert_int_equal(arpc_notify(c, "sink", payload, sizeof(payload)), ARPC_OK);
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, oneways), SENT, TEST_WAIT_MS));
    (void)cut_proxy_cut(px); /* (or the proxy gave up on the server after a second without progress) */
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, connections_closed), 1, TEST_WAIT_MS));
    uint64_t dropped; /* (counted before the close: a poll only for another thread's view) */
    assert_true(WAIT_UNTIL((dropped = oneway_stat(c, true)) != 0));
    assert_true(dropped >= 1); /* 64 MiB sent, ~20 MiB in the sockets here: the rest was queued */
    assert_true(dropped <= SENT);
    sem_post(&sink_release);
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
    assert_true(atomic_load(&sink_runs) + dropped <= SENT); /* the rest ran, or died in the sockets */

    assert_int_equal(arpc_notify(c, "sink", "x", 1), ARPC_OK); /* no connection: dropped at the loop */
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, oneways), SENT + 1, TEST_WAIT_MS));
    assert_true(client_stat_reaches(c, offsetof(arpc_client_stats, oneways_dropped), dropped + 1, TEST_WAIT_MS));
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    cut_proxy_stop(px);
}

#ifdef ARPC_TEST_WITH_TLS
static struct tls_certs certs;
static struct tls_certs_pair pair;

static int setup_tls(void **state)
{
    if (!tls_certs_make(&certs))
        return -1;
    tls_certs_pair(&certs, &pair);
    arpc_server_options so = {.tls = &pair.tp_server};
    return setup_on(state, "tls://127.0.0.1:0", &so);
}

static int teardown_tls(void **state)
{
    int rc = teardown(state);
    tls_certs_remove(&certs);
    return rc;
}

/* Over TLS, calls whose replies come back while the close lingers: once its queue is written
 * the close half-closes (close_notify, then the socket's FIN) and reads to the server's end,
 * so the server reads every request. Before, a TLS close closed the socket as soon as its
 * queue was written; the replies then arriving at a closed socket made the kernel answer with
 * a reset, which threw away the requests the server had not read yet (their calls had ended
 * ARPC_ECANCELLED, "may run": they never did). */
static void test_tls_close_loses_nothing_to_a_reset(void **state)
{
    struct fixture *fx = *state;
    arpc_client *c;
    arpc_client_options o = {.tls = &pair.tp_client, .close_linger_ms = TEST_WAIT_MS};
    assert_int_equal(arpc_client_connect(&c, fx->addr, &o), ARPC_OK);
    static arpc_future *f[MESSAGES];
    static uint8_t payload[MESSAGE_BYTES];
    f[0] = arpc_call_async(c, "sink", payload, sizeof(payload), ARPC_FOREVER);
    assert_non_null(f[0]);
    assert_true(sem_wait_secs(&sink_started, TEST_WAIT_S));
    for (int i = 1; i < MESSAGES; i++) {
        f[i] = arpc_call_async(c, "sink", payload, sizeof(payload), ARPC_FOREVER);
        assert_non_null(f[i]);
    }
    close_then_let_the_server_go(c);
    /* The server read every request that left: it ran them, or (the goodbye cancels a
     * connection's calls not yet run) ended the last ones in the mailbox ARPC_ECANCELLED; none
     * was lost. Those the close took back from the queue never left (ARPC_ESHUTDOWN). */
    assert_true(server_stat_reaches(fx->s, offsetof(arpc_server_stats, connections_closed), 1, TEST_WAIT_MS));
    int left = 0;
    for (int i = 0; i < MESSAGES; i++) {
        int code = arpc_future_poll(f[i]);
        assert_true(code == ARPC_ECANCELLED || code == ARPC_ESHUTDOWN);
        left += code == ARPC_ECANCELLED;
    }
    assert_true(left >= 1); /* the first, whose handler the server was running */
    assert_int_equal(server_requests_read(fx->s), left);
    assert_int_equal(atomic_load(&unsent_reported), -1);
    for (int i = 0; i < MESSAGES; i++)
        arpc_future_release(f[i]);
}

/* Closed while its TLS handshake waits for a server that never speaks: what the close drops
 * is the handshake's own HELLO, nothing the caller gave it, so no WARN line says frames were
 * dropped (a trial saw one at every such close, naming a close_linger_ms it never waited). */
static void test_close_in_a_handshake_drops_nothing_of_the_callers(void **state)
{
    (void)state;
    uint16_t port;
    int lfd = fd_listen_loopback(0, 4, 0, &port); /* the kernel accepts; nobody reads or writes */
    assert_true(lfd >= 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "tls://127.0.0.1:%u", port);
    arpc_client *c;
    arpc_client_options o = {.tls = &pair.tp_client, .connect_in_background = true};
    assert_int_equal(arpc_client_connect(&c, addr, &o), ARPC_OK);
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    assert_int_equal(1, poll(&p, 1, TEST_WAIT_MS)); /* its connection is made */
    int afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    struct pollfd q = {.fd = afd, .events = POLLIN};
    assert_int_equal(1, poll(&q, 1, TEST_WAIT_MS)); /* its ClientHello came: the HELLO waits behind it */
    assert_int_equal(arpc_client_close(c), ARPC_OK);
    assert_int_equal(atomic_load(&unsent_reported), -1);
    close(afd);
    close(lfd);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_close_waits_for_a_slow_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_reports_what_the_linger_could_not_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_ways_dropped_at_a_broken_connection_are_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_after_the_server_left_says_the_connection_ended, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_behind_held_calls_does_not_wait_for_them, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_behind_held_calls_waits_for_a_one_way, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_says_what_a_linger_that_ran_out_may_lose, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_racing_close_is_run_or_said, setup, teardown),
#ifdef ARPC_TEST_WITH_TLS
        cmocka_unit_test_setup_teardown(test_tls_close_loses_nothing_to_a_reset, setup_tls, teardown_tls),
        cmocka_unit_test_setup_teardown(test_close_in_a_handshake_drops_nothing_of_the_callers, setup_tls, teardown_tls),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
