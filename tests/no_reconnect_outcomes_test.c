/*
 * A client with no_reconnect whose connection breaks tells a call that never left from one
 * that did: a call sent whole ends ARPC_ECONNLOST (it may have run), one still queued behind
 * it, never sent whole, ARPC_EUNREACHABLE (it did not run: the caller may make it again
 * elsewhere), and so does every later call and one-way message, the result saying why.
 * Before, every one of them said ARPC_ECONNLOST ("may have run"), so an at-most-once caller
 * could not safely make again a call that had never left.
 *
 * The server here says HELLO, reads the first call whole, then reads nothing more, so the
 * calls behind it stay in the client's queue; it then resets the connection.
 */
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/test_util.h"

#define CALLS 24
#define PAYLOAD (1u << 20) /* 24 MiB in all: more than loopback's buffers hold */
#define METHOD "t.big"

struct stalling_server {
    int ss_listen;
    int ss_conn;
    size_t ss_read_first; /* bytes to read (HELLO and the first call), then stop */
    sem_t ss_read;        /* posted once they are read */
    char ss_addr[64];
    pthread_t ss_thread;
};

static void *stalling_main(void *p)
{
    struct stalling_server *s = p;
    int fd = accept(s->ss_listen, NULL, NULL);
    if (fd < 0)
        return NULL;
    s->ss_conn = fd;
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 7, 0, ARPC_DEFAULT_MAX_FRAME, 0);
    if (send(fd, hello, n, MSG_NOSIGNAL) != (ssize_t)n)
        return NULL;
    static char sink[64 * 1024];
    size_t got = 0;
    while (got < s->ss_read_first) {
        size_t want = s->ss_read_first - got < sizeof(sink) ? s->ss_read_first - got : sizeof(sink);
        ssize_t r = recv(fd, sink, want, 0);
        if (r <= 0)
            return NULL;
        got += (size_t)r;
    }
    sem_post(&s->ss_read);
    return NULL; /* reads nothing more */
}

static void stalling_start(struct stalling_server *s)
{
    s->ss_conn = -1;
    s->ss_read_first = ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT + arpc_frame_request_size(strlen(METHOD), PAYLOAD);
    assert_int_equal(0, sem_init(&s->ss_read, 0, 0));
    uint16_t port; /* a small receive buffer, inherited by the accepted socket: no autotuning */
    s->ss_listen = fd_listen_loopback(0, 4, 64 * 1024, &port);
    assert_true(s->ss_listen >= 0);
    snprintf(s->ss_addr, sizeof(s->ss_addr), "tcp://127.0.0.1:%u", port);
    assert_int_equal(0, pthread_create(&s->ss_thread, NULL, stalling_main, s));
}

/* Resets the connection (what was queued for the server is gone) and stops listening. */
static void stalling_reset(struct stalling_server *s)
{
    pthread_join(s->ss_thread, NULL);
    close(s->ss_listen);
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(0, setsockopt(s->ss_conn, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)));
    close(s->ss_conn);
    sem_destroy(&s->ss_read);
}

static void test_unsent_calls_did_not_run(void **state)
{
    (void)state;
    struct stalling_server s;
    stalling_start(&s);
    arpc_client *c = NULL;
    arpc_client_options o = {.no_reconnect = true};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, s.ss_addr, &o));
    char *payload = calloc(1, PAYLOAD);
    assert_non_null(payload);
    arpc_future *f[CALLS];
    for (int i = 0; i < CALLS; i++)
        assert_non_null(f[i] = arpc_call_async(c, METHOD, payload, PAYLOAD, ARPC_FOREVER));
    assert_true(sem_wait_secs(&s.ss_read, TEST_WAIT_S)); /* the first call left whole */
    stalling_reset(&s);

    /* The calls left in order: those sent whole may have run, the rest did not. */
    int lost = 0, unsent = 0;
    for (int i = 0; i < CALLS; i++) {
        int st = arpc_future_wait_for(f[i], TEST_WAIT_MS);
        if (st == ARPC_ECONNLOST) {
            assert_int_equal(0, unsent); /* none sent after one that was not */
            const char *why = (const char *)arpc_future_data(f[i], NULL);
            assert_non_null(why); /* which cause, and the loss */
            assert_non_null(strstr(why, "does not reconnect (no_reconnect)"));
            assert_non_null(strstr(why, "(connection to "));
            lost++;
        }
        else {
            assert_int_equal(ARPC_EUNREACHABLE, st);
            const char *why = (const char *)arpc_future_data(f[i], NULL);
            assert_non_null(why); /* why it did not reach the server */
            assert_non_null(strstr(why, "lost"));
            unsent++;
        }
        arpc_future_release(f[i]);
    }
    assert_true(lost >= 1);   /* the first was read whole */
    assert_true(unsent >= 1); /* the last cannot have fit in the buffers */

    /* Later calls and one-way messages do not run either. */
    arpc_future *late = arpc_call_async(c, METHOD, "x", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_EUNREACHABLE, arpc_future_wait_for(late, TEST_WAIT_MS));
    const char *why = (const char *)arpc_future_data(late, NULL);
    assert_non_null(why);
    assert_non_null(strstr(why, s.ss_addr));
    arpc_future_release(late);
    assert_int_equal(ARPC_EUNREACHABLE, arpc_notify(c, METHOD, "x", 1));
    /* The client's own state still says what happened to it. */
    assert_int_equal(ARPC_ECONNLOST, arpc_client_last_error(c, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    free(payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsent_calls_did_not_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
