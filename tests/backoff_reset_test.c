/*
 * The reconnect back-off starts over after a connection that lasted reconnect_max_ms, though
 * no reply ever proved it (core/client_conn.c, client_on_close): a server that restarts after
 * a long good run is retried at the shortest delay, not at the longest one its flaky start-up
 * earned. A scripted server (tests/reconnect_test.c has the timing-based ones) drops QUICK
 * connections right after its HELLO, so the back-off climbs; then holds one for longer than
 * reconnect_max_ms and drops it; then holds the next attempt silent while the test reads the
 * back-off's count on the client's loop: one step (the reset, then this attempt's delay), not
 * QUICK + 2. Counts, not clocks: a slow machine only makes the long connection longer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/client_internal.h"
#include "core/frame.h"
#include "support/test_util.h"
#include "transport/transport.h"

enum { QUICK = 3, MAX_MS = 300 };

struct script {
    struct arpc_listener *l;
    pthread_t thread;
    sem_t read_done; /* the test has read the back-off: the last connection may go */
    int accepted;
    arpc_client *_Atomic client; /* set by the test once its connect returned */
};

/* The client's connections opened (HELLO read) so far; 0 before the test has the client. */
static uint64_t opened(struct script *sc)
{
    arpc_client *c = atomic_load(&sc->client);
    arpc_client_stats cs;
    return c != NULL && arpc_client_stats(c, &cs) == ARPC_OK ? cs.connections_opened : 0;
}

/* The next connection within 30 s, or -1. */
static int accept_one(struct script *sc)
{
    int64_t until = now_ms() + 30000;
    while (now_ms() < until) {
        struct pollfd p = {.fd = sc->l->l_fd, .events = POLLIN};
        int fd;
        char peer[256];
        if (poll(&p, 1, 1000) == 1 && sc->l->l_ops->t_accept(sc->l, &fd, peer, sizeof(peer), NULL, 0) == ARPC_OK) {
            sc->accepted++;
            return fd;
        }
    }
    return -1;
}

/* Reads the client's HELLO and answers it: the connection is then open for the client. */
static bool say_hello(int fd)
{
    uint8_t buf[512];
    struct pollfd r = {.fd = fd, .events = POLLIN};
    if (poll(&r, 1, 10000) != 1 || read(fd, buf, sizeof(buf)) <= 0)
        return false;
    size_t n = arpc_frame_encode_hello(buf, 0xb0ff, 0, 0, 0);
    return write(fd, buf, n) == (ssize_t)n;
}

static void *script_main(void *arg)
{
    struct script *sc = arg;
    int fd;
    /* The connect's connection and QUICK reconnects: dropped right after HELLO. */
    for (int i = 0; i < 1 + QUICK; i++) {
        if ((fd = accept_one(sc)) < 0)
            return NULL;
        CHECK(say_hello(fd));
        close(fd);
    }
    /* A connection that lasts: longer than reconnect_max_ms as the client counts it, from its
     * read of the HELLO (a loaded client could read it late, and the close soon after). The
     * earlier HELLOs were all read: the client reconnected after each. */
    if ((fd = accept_one(sc)) < 0)
        return NULL;
    CHECK(WAIT_UNTIL(atomic_load(&sc->client) != NULL));
    uint64_t before = opened(sc);
    CHECK(say_hello(fd));
    CHECK(WAIT_UNTIL(opened(sc) == before + 1));
    sleep_ms(MAX_MS + 200); /* the connection's age is the subject, not a wait */
    close(fd);
    /* The attempt that follows: held without a HELLO while the test looks. */
    if ((fd = accept_one(sc)) < 0)
        return NULL;
    latch_add();
    CHECK(sem_wait_secs(&sc->read_done, 30));
    close(fd);
    return NULL;
}

struct peek {
    arpc_client *c;
    unsigned attempts;
};

static void peek_backoff(arpc_loop *loop, void *arg)
{
    (void)loop;
    struct peek *p = arg;
    p->attempts = p->c->cl_connector.cn_backoff.b_attempt;
}

static void test_backoff_reset_after_lasting_connection(void **state)
{
    (void)state;
    latch_reset();
    atomic_store(&bad_line, 0);
    struct script sc = {.accepted = 0};
    sem_init(&sc.read_done, 0, 0);
    assert_int_equal(ARPC_OK, arpc_transport_tcp.t_listen("127.0.0.1:0", &sc.l, NULL, 0));
    assert_int_equal(0, pthread_create(&sc.thread, NULL, script_main, &sc));
    arpc_client *c;
    /* Delays 1, 2, 4, 8 ms: the quick drops climb fast. The held attempt must not time out
     * while the test looks (that would count a step). */
    arpc_client_options co = {.reconnect_min_ms = 1, .reconnect_max_ms = MAX_MS, .connect_timeout_ms = 60000};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, sc.l->l_addr, &co));
    atomic_store(&sc.client, c);
    assert_true(latch_wait(1, TEST_WAIT_MS)); /* the attempt after the lasting connection came */
    struct peek p = {.c = c};
    assert_int_equal(ARPC_OK, arpc_loop_run_sync(c->cl_loop, peek_backoff, &p));
    sem_post(&sc.read_done);
    assert_int_equal(0, pthread_join(sc.thread, NULL));
    assert_int_equal(0, atomic_load(&bad_line));
    assert_int_equal(1 + QUICK + 2, sc.accepted);
    /* Without the reset it would be QUICK + 2 (one step per drop, the connect's included). */
    assert_int_equal(1, p.attempts);
    arpc_client_close(c);
    sc.l->l_ops->t_unlisten(sc.l);
    sem_destroy(&sc.read_done);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_reset_after_lasting_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
