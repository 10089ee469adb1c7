/*
 * The client's call deadlines on its timing wheel (core/client_deadlines.c), against a server
 * that answers HELLO and then nothing, so only the client's own deadlines end the calls:
 * calls with deadlines spread over several of the wheel's blocks end ARPC_ETIMEDOUT, each
 * never before its deadline; a call re-armed for its give-up time (connection lost) ends
 * ARPC_ECONNLOST; closing the client ends calls still in every level of the wheel (and
 * calls without a deadline) at once with ARPC_ESHUTDOWN; a call's deadline still ends it when
 * the call before it left the loop's deadlines without room and memory (out of memory).
 */
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "async/loop_impl.h"
#include "core/client_internal.h"
#include "core/client_resend.h"
#include "core/frame.h"
#include "support/test_util.h"

/* ---- a server that says HELLO, then reads and never answers ---- */

struct silent_server {
    int ss_listen;
    atomic_int ss_conn;    /* the accepted connection (set before HELLO leaves), or -1 */
    char ss_addr[64];
    pthread_t ss_thread;
};

static void *silent_main(void *p)
{
    struct silent_server *s = p;
    int fd = accept(s->ss_listen, NULL, NULL);
    if (fd < 0)
        return NULL;
    atomic_store(&s->ss_conn, fd);
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 7, 0, ARPC_DEFAULT_MAX_FRAME, 0);
    if (send(fd, hello, n, MSG_NOSIGNAL) != (ssize_t)n)
        return NULL;
    char sink[4096];
    while (recv(fd, sink, sizeof(sink), 0) > 0) /* until the client or silent_cut closes it */
        ;
    return NULL;
}

static void silent_start(struct silent_server *s)
{
    atomic_init(&s->ss_conn, -1);
    uint16_t port;
    s->ss_listen = fd_listen_loopback(0, 4, 0, &port);
    assert_true(s->ss_listen >= 0);
    snprintf(s->ss_addr, sizeof(s->ss_addr), "tcp://127.0.0.1:%u", port);
    assert_int_equal(0, pthread_create(&s->ss_thread, NULL, silent_main, s));
}

/* The connection breaks, and no server listens there any more: the client cannot reconnect. */
static void silent_cut(struct silent_server *s)
{
    close(s->ss_listen);
    s->ss_listen = -1;
    shutdown(atomic_load(&s->ss_conn), SHUT_RDWR);
}

static void silent_stop(struct silent_server *s)
{
    if (s->ss_listen >= 0)
        shutdown(s->ss_listen, SHUT_RDWR); /* an accept still waiting returns */
    if (atomic_load(&s->ss_conn) >= 0)
        shutdown(atomic_load(&s->ss_conn), SHUT_RDWR);
    pthread_join(s->ss_thread, NULL);
    if (s->ss_listen >= 0)
        close(s->ss_listen);
    if (atomic_load(&s->ss_conn) >= 0)
        close(atomic_load(&s->ss_conn));
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- cases ---- */

struct ended {
    uint64_t at_ns; /* when its then() ran */
};

static void on_end(arpc_future *f, void *arg)
{
    (void)f;
    ((struct ended *)arg)->at_ns = mono_ns();
    latch_add(); /* a waiter may see the future done before its callbacks ran */
}

static void test_deadlines_never_early(void **state)
{
    (void)state;
    enum { N = 240 };
    struct silent_server s;
    silent_start(&s);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.ss_addr, NULL));
    arpc_future *fs[N];
    struct ended e[N] = {{0}};
    uint64_t start[N];
    int64_t deadline[N];
    uint64_t seed = 0x853c49e6748fea9bull;
    latch_reset();
    for (int i = 0; i < N; i++) {
        /* 100 ms to ~1.3 s, in no order: near and mid slots of the wheel, several blocks. */
        deadline[i] = 100 + (int64_t)(rng_next(&seed) % 1200);
        start[i] = mono_ns();
        fs[i] = arpc_call_async(c, "t.silent", "q", 1, deadline[i]);
        assert_non_null(fs[i]);
        assert_int_equal(ARPC_OK, arpc_future_then(fs[i], on_end, &e[i]));
    }
    assert_true(latch_wait(N, 60000));
    for (int i = 0; i < N; i++) {
        /* ARPC_EUNREACHABLE: the loop took it up after its deadline (a loaded machine); not
         * early either. */
        int rc = arpc_future_poll(fs[i]);
        assert_true(rc == ARPC_ETIMEDOUT || rc == ARPC_EUNREACHABLE);
        assert_true(e[i].at_ns >= start[i] + (uint64_t)deadline[i] * 1000000u); /* never early */
        arpc_future_release(fs[i]);
    }
    assert_int_equal(0, arpc_client_pending(c));
    arpc_client_close(c);
    silent_stop(&s);
}

static sem_t loop_held, loop_go_on;

static void block_loop(arpc_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
    sem_post(&loop_held);
    sem_wait(&loop_go_on);
}

/* A call whose deadline passes before the client's loop takes it up was never sent, though the
 * client is connected: it ends ARPC_EUNREACHABLE ("did not run"), not ARPC_ETIMEDOUT ("may
 * have run", which it was before). The loop is kept busy by a task meanwhile, so the caller
 * does not write the call itself either. */
static void test_deadline_before_sent_did_not_run(void **state)
{
    (void)state;
    struct silent_server s;
    silent_start(&s);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.ss_addr, NULL));
    sem_init(&loop_held, 0, 0);
    sem_init(&loop_go_on, 0, 0);
    assert_int_equal(ARPC_OK, arpc_loop_submit(c->cl_loop, block_loop, NULL));
    assert_true(sem_wait_secs(&loop_held, 10));
    uint64_t start = mono_ns();
    arpc_future *f = arpc_call_async(c, "t.silent", "q", 1, 1);
    assert_non_null(f);
    while (mono_ns() < start + 5u * 1000000u) /* its 1 ms deadline passes, the loop still busy */
        ;
    sem_post(&loop_go_on);
    assert_int_equal(ARPC_EUNREACHABLE, arpc_future_wait_for(f, 60000));
    size_t len;
    const char *why = arpc_future_data(f, &len); /* (it said nothing before) */
    assert_non_null(why);
    assert_non_null(strstr(why, "before the client's loop could send it"));
    arpc_future_release(f);
    arpc_client_close(c);
    silent_stop(&s);
    sem_destroy(&loop_held);
    sem_destroy(&loop_go_on);
}

/* A call in flight goes back to waiting when its connection breaks: its give-up time
 * (core/client_give_up.c) ends it (it was sent: ARPC_ECONNLOST), well before its deadline,
 * whose wheel node stays armed an hour away; and a call without a deadline the same way. */
static void test_give_up_rearms(void **state)
{
    (void)state;
    struct silent_server s;
    silent_start(&s);
    arpc_client_options o = {.reconnect_give_up_ms = 600, .reconnect_min_ms = 10, .reconnect_max_ms = 20};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.ss_addr, &o));
    arpc_future *f = arpc_call_async(c, "t.silent", "q", 1, 3600 * 1000); /* far: an hour */
    arpc_future *g = arpc_call_async(c, "t.silent", "q", 1, ARPC_FOREVER);
    /* Both were sent: a call made after them is answered by nobody either, but its deadline
     * ends it once they are on the wire (calls leave in order). */
    assert_int_equal(ARPC_ETIMEDOUT, call_until_sent(c, "t.silent", "q", 1, NULL, NULL, 50));
    uint64_t cut = mono_ns();
    silent_cut(&s);
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(f, 60000));
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(g, 60000));
    assert_true(mono_ns() >= cut + 600u * 1000000u); /* not before its give-up time */
    arpc_future_release(f);
    arpc_future_release(g);
    arpc_client_close(c);
    silent_stop(&s);
}

/* A call whose deadline the client's own timer ends (the server never answers) says so in
 * its result, as the server's answer at the deadline does: before, it came without words. */
static void test_own_deadline_says_why(void **state)
{
    (void)state;
    struct silent_server s;
    silent_start(&s);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.ss_addr, NULL));
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_ETIMEDOUT, call_until_sent(c, "t.silent", "q", 1, &reply, &len, 30));
    assert_non_null(reply);
    assert_int_equal(strlen(CALL_TIMED_OUT), len);
    assert_memory_equal(CALL_TIMED_OUT, reply, len);
    arpc_free(reply);
    arpc_client_close(c);
    silent_stop(&s);
}

/* Close ends the calls wherever they are in the wheel: near, mid, far, and not in it. */
static void test_close_with_calls_in_every_level(void **state)
{
    (void)state;
    struct silent_server s;
    silent_start(&s);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.ss_addr, NULL));
    const int64_t deadlines[] = {200000, 30000, 300000, 86400000, ARPC_FOREVER, 120000};
    enum { K = sizeof(deadlines) / sizeof(deadlines[0]) };
    arpc_future *fs[K];
    for (int i = 0; i < K; i++)
        assert_non_null(fs[i] = arpc_call_async(c, "t.silent", "q", 1, deadlines[i]));
    assert_int_equal(ARPC_ETIMEDOUT, call_until_sent(c, "t.silent", "q", 1, NULL, NULL, 20)); /* near */
    arpc_client_close(c);
    for (int i = 0; i < K; i++) {
        assert_int_equal(ARPC_ECANCELLED, arpc_future_wait_for(fs[i], 60000)); /* sent: may run */
        arpc_future_release(fs[i]);
    }
    silent_stop(&s);
}

/* The first call's end (on the loop thread, from the wheel's loop deadline) takes the room
 * that deadline left in the loop's heap, and then no memory is left to grow it: the wheel's
 * loop deadline must still be armed for the second call. Static: the loop's heap points at
 * the deadlines until the second call's end lets them go. */
enum { FILL_MAX = 4096 };
static struct {
    arpc_loop *hf_loop;
    struct arpc_deadline hf_d[FILL_MAX];
    size_t hf_n;
    int hf_arm_rc;      /* the first failure to arm one, or ARPC_OK */
    uint64_t hf_ended_ns; /* when the second call ended */
} fill;

static void never_fires(struct arpc_deadline *d, void *arg)
{
    (void)d;
    (void)arg;
}

static void on_first_end_fill_heap(arpc_future *f, void *arg)
{
    (void)f;
    (void)arg;
    struct arpc_deadline_heap *h = &fill.hf_loop->l_deadlines;
    while (h->h_len < h->h_cap && fill.hf_n < FILL_MAX && fill.hf_arm_rc == ARPC_OK) {
        struct arpc_deadline *d = &fill.hf_d[fill.hf_n++];
        arpc_deadline_init(d, never_fires, NULL);
        fill.hf_arm_rc = arpc_deadline_arm(fill.hf_loop, d, UINT64_MAX - 1);
    }
    atomic_store(&test_alloc_budget, 0); /* the heap cannot grow now */
    latch_add();
}

static void on_second_end_free_heap(arpc_future *f, void *arg)
{
    (void)f;
    (void)arg;
    fill.hf_ended_ns = mono_ns();
    atomic_store(&test_alloc_budget, -1);
    for (size_t i = 0; i < fill.hf_n; i++)
        arpc_deadline_cancel(fill.hf_loop, &fill.hf_d[i]);
    latch_add();
}

static void test_deadline_kept_when_heap_cannot_grow(void **state)
{
    (void)state;
    test_alloc_install(); /* budget unlimited until the first call ends */
    struct silent_server s;
    silent_start(&s);
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.ss_addr, NULL));
    fill.hf_loop = c->cl_loop;
    fill.hf_n = 0;
    fill.hf_arm_rc = ARPC_OK;
    latch_reset();
    /* An idle loop: the caller writes the first call itself, so it is sent (else a loop that
     * took it up after its 50 ms would end it ARPC_EUNREACHABLE, never sent). */
    (void)loop_idle_within(c->cl_loop, TEST_WAIT_MS);
    uint64_t start = mono_ns();
    arpc_future *first = arpc_call_async(c, "t.silent", "q", 1, 50);
    arpc_future *second = arpc_call_async(c, "t.silent", "q", 1, 1000);
    assert_non_null(first);
    assert_non_null(second);
    assert_int_equal(ARPC_OK, arpc_future_then(first, on_first_end_fill_heap, NULL));
    assert_int_equal(ARPC_OK, arpc_future_then(second, on_second_end_free_heap, NULL));
    /* Before the fix the second call waited for a loop deadline nobody armed: for ever. */
    assert_true(latch_wait(2, 20000));
    assert_int_equal(ARPC_OK, fill.hf_arm_rc);
    assert_int_equal(ARPC_ETIMEDOUT, arpc_future_poll(first));
    assert_int_equal(ARPC_ETIMEDOUT, arpc_future_poll(second));
    assert_true(fill.hf_ended_ns >= start + 1000u * 1000000u); /* its own deadline, not early */
    arpc_future_release(first);
    arpc_future_release(second);
    arpc_client_close(c);
    silent_stop(&s);
}

/* Calls that begin to wait at different times give up each at its own time, never before:
 * one deadline for the waiting list must wait again for the next call's time, not end the
 * list; and when the first waiting call leaves early (cancelled), the deadline, armed for it,
 * still comes and waits on for the others. No server at all: never sent, ARPC_EUNREACHABLE. */
static void test_give_up_each_in_turn(void **state)
{
    (void)state;
    enum { GIVE_UP_MS = 300, GAP_MS = 150, N = 4 };
    struct silent_server s;
    silent_start(&s);
    arpc_client_options o = {.reconnect_give_up_ms = GIVE_UP_MS, .reconnect_min_ms = 10, .reconnect_max_ms = 20};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.ss_addr, &o));
    silent_cut(&s);
    /* Wait for the client to find the connection broken: a call made before that would be
     * sent, and end ARPC_ECONNLOST. (A call ending ARPC_EUNREACHABLE is no sign: a loop that
     * took it up after its deadline ends it so on a connection still up.) */
    assert_true(WAIT_UNTIL(atomic_load(&c->cl_state) != CL_READY));
    arpc_future *fs[N];
    struct ended e[N] = {{0}};
    uint64_t start[N];
    latch_reset();
    arpc_client_stats st;
    assert_int_equal(ARPC_OK, arpc_client_stats(c, &st));
    uint64_t arrived = st.calls.started; /* counted as each call reaches the loop */
    for (int i = 0; i < N; i++) {
        if (i == 2) /* the last two begin to wait later: their times come later */
            nanosleep(&(struct timespec){0, GAP_MS * 1000000L}, NULL); /* spacing, not a wait for an event */
        start[i] = mono_ns();
        fs[i] = arpc_call_async(c, "t.silent", "q", 1, i == 1 ? 3600 * 1000 : ARPC_FOREVER);
        assert_non_null(fs[i]);
        assert_int_equal(ARPC_OK, arpc_future_then(fs[i], on_end, &e[i]));
        /* The first waiting call leaves, long before its give-up time, once both wait (a
         * call cancelled before it reached the loop would never wait: no deadline would be
         * armed for it). */
        if (i == 1) {
            assert_true(WAIT_UNTIL(arpc_client_stats(c, &st) == ARPC_OK && st.calls.started >= arrived + 2));
            assert_true(arpc_future_cancel(fs[0]));
        }
    }
    assert_true(latch_wait(N, 60000));
    assert_int_equal(ARPC_ECANCELLED, arpc_future_poll(fs[0]));
    for (int i = 1; i < N; i++) {
        assert_int_equal(ARPC_EUNREACHABLE, arpc_future_poll(fs[i]));
        assert_true(e[i].at_ns >= start[i] + GIVE_UP_MS * 1000000ull); /* never early */
    }
    for (int i = 0; i < N; i++)
        arpc_future_release(fs[i]);
    assert_int_equal(0, arpc_client_pending(c));
    arpc_client_close(c);
    silent_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadlines_never_early),
        cmocka_unit_test(test_deadline_before_sent_did_not_run),
        cmocka_unit_test(test_give_up_rearms),
        cmocka_unit_test(test_give_up_each_in_turn),
        cmocka_unit_test(test_close_with_calls_in_every_level),
        cmocka_unit_test(test_own_deadline_says_why),
        cmocka_unit_test(test_deadline_kept_when_heap_cannot_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
