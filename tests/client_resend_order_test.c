/*
 * Calls waiting for a connection are sent again in the order they were started, whatever the
 * order they began to wait in. The waiting list is kept in the order calls began to wait (so of
 * their give-up times: core/client_give_up.c), which differs from the order they were started
 * when a connection breaks while later calls already wait: the server said GOAWAY (calls
 * started after it wait), then closed with earlier calls still unanswered. Against a scripted
 * server (raw frames): A and B sent, GOAWAY, C and D wait, the connection closes (A and B wait
 * after C and D), the client reconnects and must send A, B, C, D in that order.
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

#include <cmocka.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "arpc/future.h"
#include "core/client_internal.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

struct script {
    sem_t sc_close_now;   /* the test: C and D wait on the client's loop */
    char sc_order[8];     /* the first payload byte of each request on the second connection */
    int sc_norder;
};

static bool accept_hello(struct raw_server *srv, struct raw_client *r)
{
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 7, 0, ARPC_DEFAULT_MAX_FRAME, 0);
    return raw_server_accept(srv, r, hello, n);
}

static bool read_request(struct raw_client *r, uint64_t *xid, char *first)
{
    struct raw_frame f;
    if (!raw_read(r, &f, false) || f.f.f_kind != ARPC_FRAME_REQUEST || f.f.f_payload_len < 1)
        return false;
    *xid = f.f.f_xid;
    *first = (char)f.f.f_payload[0];
    return true;
}

static bool script_run(struct raw_server *srv, void *arg)
{
    struct script *s = arg;
    struct raw_client *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return false;
    bool ok = false;
    uint64_t xid, x_xid = 0;
    char first;
    /* The first connection: A, B and X; GOAWAY, then X's reply (the test knows the client read
     * the GOAWAY when X completes). */
    if (!accept_hello(srv, r))
        goto out;
    for (int i = 0; i < 3; i++) {
        if (!read_request(r, &xid, &first))
            goto out;
        if (first == 'X')
            x_xid = xid;
    }
    uint8_t goaway[256];
    size_t n = arpc_frame_encode_error(goaway, ARPC_FRAME_GOAWAY, 0, ARPC_ESHUTDOWN, 0, "stopping", 8);
    if (x_xid == 0 || !raw_send(r, goaway, n) || !raw_server_reply_byte(r, x_xid, 'r'))
        goto out;
    sem_wait(&s->sc_close_now);
    shutdown(r->rc_fd, SHUT_RDWR);
    raw_close(r);
    /* The second: every waiting call, in the order it comes. */
    if (!accept_hello(srv, r))
        goto out;
    uint64_t xids[4];
    for (int i = 0; i < 4; i++) {
        if (!read_request(r, &xids[i], &s->sc_order[s->sc_norder++]))
            goto out;
    }
    for (int i = 0; i < 4; i++)
        if (!raw_server_reply_byte(r, xids[i], 'r'))
            goto out;
    raw_server_read_to_end(r);
    ok = true;
out:
    raw_close(r);
    free(r);
    return ok;
}

/* A job on the client's loop: posted after C and D from the same thread, it runs after them. */
struct probe {
    struct arpc_loop_job pr_job;
    sem_t pr_ran;
};

static void probe_run(arpc_loop *loop, struct arpc_loop_job *job)
{
    (void)loop;
    sem_post(&((struct probe *)(void *)job)->pr_ran);
}

static void test_resent_in_start_order(void **state)
{
    (void)state;
    struct script s = {0};
    sem_init(&s.sc_close_now, 0, 0);
    struct raw_server srv;
    raw_server_start(&srv, script_run, &s);
    arpc_client_options o = {.semantics = ARPC_AT_LEAST_ONCE, /* sent again whatever the server */
                             .reconnect_min_ms = 10, .reconnect_max_ms = 20};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, srv.rs_addr, &o));
    arpc_future *a = arpc_call_async(c, "t.m", "A", 1, ARPC_FOREVER);
    arpc_future *b = arpc_call_async(c, "t.m", "B", 1, ARPC_FOREVER);
    assert_int_equal(ARPC_OK, arpc_call(c, "t.m", "X", 1, NULL, NULL, 60000)); /* after the GOAWAY */
    arpc_future *cf = arpc_call_async(c, "t.m", "C", 1, ARPC_FOREVER);
    arpc_future *d = arpc_call_async(c, "t.m", "D", 1, ARPC_FOREVER);
    struct probe pr;
    sem_init(&pr.pr_ran, 0, 0);
    arpc_loop_job_init(&pr.pr_job, probe_run);
    assert_int_equal(ARPC_OK, arpc_loop_post(c->cl_loop, &pr.pr_job));
    sem_wait(&pr.pr_ran); /* C and D wait (the client is draining) */
    sem_post(&s.sc_close_now);
    arpc_future *fs[] = {a, b, cf, d};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[i], 60000));
        arpc_future_release(fs[i]);
    }
    arpc_client_close(c);
    assert_true(raw_server_join(&srv));
    assert_int_equal(4, s.sc_norder);
    assert_memory_equal("ABCD", s.sc_order, 4);
    sem_destroy(&s.sc_close_now);
    sem_destroy(&pr.pr_ran);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resent_in_start_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
