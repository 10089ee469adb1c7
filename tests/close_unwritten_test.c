/*
 * A close ends every call at once: ARPC_ECANCELLED for one whose request was sent (it may
 * run), ARPC_ESHUTDOWN for one never sent (it did not run). A request still waiting whole in
 * the client's output queue (a server that does not read) counted as sent, so its call ended
 * "may have run" though the close's log line said the frame was dropped unwritten (a new
 * user's trial). Now the close takes such requests back out of the queue, and their calls end
 * ARPC_ESHUTDOWN; those the socket took (all or part) still end ARPC_ECANCELLED.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "arpc/arpc.h"
#include "support/raw_server.h"
#include "support/test_util.h"

#define CALLS 32
#define PAYLOAD (1024 * 1024) /* 32 MiB in all: more than loopback's socket buffers take */

static sem_t closed;

/* Says HELLO, then reads nothing until the client has closed. */
static bool deaf_server(struct raw_server *s, void *arg)
{
    (void)arg;
    struct raw_client r;
    if (!raw_server_accept_dedup(s, &r))
        return false;
    bool ok = sem_wait_secs(&closed, TEST_WAIT_S);
    raw_close(&r);
    return ok;
}

static atomic_int outcomes[CALLS];

static void record(arpc_future *f, void *arg)
{
    atomic_store(&outcomes[(intptr_t)arg], arpc_future_poll(f));
}

static void test_close_takes_back_requests_never_written(void **state)
{
    (void)state;
    sem_init(&closed, 0, 0);
    struct raw_server srv;
    raw_server_start(&srv, deaf_server, NULL);
    arpc_client *c = NULL;
    arpc_client_options co = {.close_linger_ms = -1}; /* no wait for a server that reads nothing */
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, srv.rs_addr, &co));
    char *payload = calloc(1, PAYLOAD);
    assert_non_null(payload);
    arpc_future *fs[CALLS];
    for (intptr_t i = 0; i < CALLS; i++) {
        atomic_init(&outcomes[i], ARPC_EPENDING);
        fs[i] = arpc_call_async(c, "t.deaf", payload, PAYLOAD, 0);
        assert_non_null(fs[i]);
        assert_int_equal(ARPC_OK, arpc_future_then(fs[i], record, (void *)i));
    }
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    sem_post(&closed);
    int cancelled = 0, shutdown = 0;
    for (int i = 0; i < CALLS; i++) {
        int code = atomic_load(&outcomes[i]);
        if (code == ARPC_ECANCELLED)
            cancelled++;
        else if (code == ARPC_ESHUTDOWN)
            shutdown++;
        else
            fail_msg("call %d ended %s", i, arpc_errname(code));
        arpc_future_release(fs[i]);
    }
    /* The first ones went to the socket (the first at least in part); the rest never left. */
    if (shutdown == 0)
        fail_msg("all %d calls ended ARPC_ECANCELLED (\"may have run\"), though the server read nothing and "
                 "most requests never left the client",
                 CALLS);
    print_message("cancelled %d, shut down %d\n", cancelled, shutdown);
    assert_true(cancelled >= 1);
    assert_true(raw_server_join(&srv));
    free(payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_takes_back_requests_never_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
