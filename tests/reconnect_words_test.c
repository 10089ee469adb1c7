/*
 * While a reconnect's socket is up and waits for the server's HELLO (a TLS handshake or a
 * server that stalls), a call that ends meanwhile, and arpc_client_last_error, say so before
 * the loss they follow; they said only the loss, long past (review 224: a stalled TLS
 * handshake on a reconnect reported the previous loss's words until the calls' deadlines).
 * A scripted server (raw frames) answers the first connection's HELLO, closes it, then
 * takes the reconnect and reads its HELLO without answering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <semaphore.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/client.h"
#include "arpc/error.h"
#include "core/frame.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

static sem_t hello_read, test_done;

static bool script_run(struct raw_server *srv, void *arg)
{
    (void)arg;
    struct raw_client *r = calloc(2, sizeof(*r));
    if (r == NULL)
        return false;
    bool ok = raw_server_accept_dedup(srv, &r[0]);
    raw_close(&r[0]); /* the client's connection is lost: it reconnects */
    struct raw_frame f;
    if (ok) {
        r[1].rc_fd = accept(srv->rs_listen, NULL, NULL);
        ok = r[1].rc_fd >= 0 && raw_read(&r[1], &f, false) && f.f.f_kind == ARPC_FRAME_HELLO;
    }
    sem_post(&hello_read); /* (a failure too: the test's wait must end) */
    if (ok)
        ok = sem_wait_secs(&test_done, TEST_WAIT_S);
    if (r[1].rc_fd >= 0)
        raw_close(&r[1]);
    free(r);
    return ok;
}

static void test_a_call_ending_during_a_reconnect_says_so(void **state)
{
    (void)state;
    sem_init(&hello_read, 0, 0);
    sem_init(&test_done, 0, 0);
    struct raw_server srv;
    raw_server_start(&srv, script_run, NULL);
    arpc_client_options o = {.reconnect_min_ms = 1, .reconnect_max_ms = 20};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, srv.rs_addr, &o));
    assert_true(sem_wait_secs(&hello_read, TEST_WAIT_S)); /* the reconnect's HELLO was sent */
    void *reply = NULL;
    size_t len = 0;
    assert_int_equal(ARPC_EUNREACHABLE, arpc_call(c, "t.x", "x", 1, &reply, &len, 200));
    assert_non_null(reply);
    if (strstr(reply, "again, waiting for its HELLO (before: connection to ") == NULL)
        fail_msg("the call's words do not say where the reconnect stands: \"%s\"", (char *)reply);
    arpc_free(reply);
    char last[ARPC_ERRBUF_SIZE];
    assert_int_not_equal(ARPC_OK, arpc_client_last_error(c, last, sizeof(last)));
    assert_non_null(strstr(last, "connected to "));
    sem_post(&test_done);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    assert_true(raw_server_join(&srv));
    sem_destroy(&hello_read);
    sem_destroy(&test_done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_call_ending_during_a_reconnect_says_so),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
