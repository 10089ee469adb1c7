/*
 * arpc_client_close from one thread while other threads are inside arpc_call (client.h:
 * close completes every pending call; only starting one after close began is misuse). Once a
 * caller has handed its call to the loop (or written it itself), the close may end the call
 * and free the client, and the client's own loop, before the caller reaches its wait: from
 * the hand-over on, a caller must not touch the client. Before the fix, arpc_call read the
 * client to choose how to wait, and a caller that wrote its call itself read it and posted to
 * its loop after leaving the gate the close waits for: under TSan the read races the free in
 * nearly every round, under ASan now and then.
 *
 * Each caller makes exactly one call and says so from inside it (the call's block, its first
 * allocation, comes after the client was found live), so no call starts after the close
 * began. Every call ends ARPC_OK or, ended by the close, ARPC_ECANCELLED / ARPC_ESHUTDOWN.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "arpc/alloc.h"
#include "arpc/arpc.h"
#include "async/loop_internal.h"
#include "support/test_util.h"

#define CALLERS 2
#define ROUNDS 30

/* ---- an allocator that tells when a caller thread is inside its call ---- */

static sem_t inside;
static _Thread_local bool tell_next_alloc;
static atomic_int linger_us; /* how long a caller lingers inside after saying so */

static void *tell_malloc(size_t size, void *ctx)
{
    (void)ctx;
    if (tell_next_alloc) {
        tell_next_alloc = false;
        sem_post(&inside);
        if (atomic_load(&linger_us) != 0) /* not a wait for anything: it widens the race */
            usleep((useconds_t)atomic_load(&linger_us));
    }
    return malloc(size);
}
static void *tell_realloc(void *p, size_t size, void *ctx)
{
    (void)ctx;
    return realloc(p, size);
}
static void tell_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}
static const arpc_allocator tell_allocator = {tell_malloc, tell_realloc, tell_free, NULL};

static int group_setup(void **state)
{
    (void)state;
    arpc_set_allocator(&tell_allocator); /* before any other arpc function */
    sem_init(&inside, 0, 0);
    return 0;
}

/* ---- server and callers ---- */

struct caller {
    arpc_client *c;
    int rc;
};

static void *caller_main(void *arg)
{
    struct caller *k = arg;
    void *reply = NULL;
    size_t len = 0;
    tell_next_alloc = true;
    k->rc = arpc_call(k->c, "t.echo", "ping", 4, &reply, &len, 0);
    tell_next_alloc = false;
    arpc_free(reply);
    return NULL;
}

static void close_while_calling(const char *listen, bool caller_driven)
{
    arpc_server *s;
    arpc_server_options so = {.workers = 1};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, listen, addr, sizeof(addr)));
    unsigned ok = 0, ended = 0;
    for (int round = 0; round < ROUNDS; round++) {
        arpc_loop *loop = NULL;
        if (caller_driven)
            assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL)); /* nobody runs it: waits drive it */
        arpc_client_options co = {.loop = loop};
        arpc_client *c;
        assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
        struct caller k[CALLERS];
        pthread_t th[CALLERS];
        for (int i = 0; i < CALLERS; i++) {
            k[i] = (struct caller){.c = c, .rc = -1};
            assert_int_equal(0, pthread_create(&th[i], NULL, caller_main, &k[i]));
        }
        for (int i = 0; i < CALLERS; i++)
            sem_wait(&inside); /* each is past its start's checks: none starts after the close */
        assert_int_equal(ARPC_OK, arpc_client_close(c));
        for (int i = 0; i < CALLERS; i++) {
            pthread_join(th[i], NULL);
            if (k[i].rc == ARPC_OK)
                ok++;
            else if (k[i].rc == ARPC_ECANCELLED || k[i].rc == ARPC_ESHUTDOWN)
                ended++;
            else
                fail_msg("a call ended %s (%d)", arpc_strerror(k[i].rc), k[i].rc);
        }
        if (loop != NULL)
            arpc_loop_destroy(loop);
    }
    print_message("%s, %s loop: %u calls answered, %u ended by the close\n", listen,
                  caller_driven ? "caller-driven" : "own", ok, ended);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_own_loop_inproc(void **state)
{
    (void)state;
    close_while_calling("inproc://close-while-calling", false);
}

static void test_own_loop_tcp(void **state) /* an idle loop: callers write their calls */
{
    (void)state;
    close_while_calling("tcp://127.0.0.1:0", false);
}

/* The application's loop is stopped before the close: the close runs its steps itself and
 * must still wait for a caller between its entry and its hand-over (which the stopped loop
 * refuses: the call ends ARPC_ESHUTDOWN). Before, close gave up waiting on a stopped loop and
 * freed the client under the caller (ASan: use after free in its way out). */
static void test_stopped_user_loop(void **state)
{
    (void)state;
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    atomic_store(&linger_us, 20000);
    for (int round = 0; round < 5; round++) {
        arpc_loop *loop;
        assert_int_equal(ARPC_OK, arpc_loop_create(&loop, NULL));
        assert_int_equal(ARPC_OK, arpc_loop_start(loop));
        arpc_client_options co = {.loop = loop};
        arpc_client *c;
        assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
        arpc_loop_stop(loop);
        assert_true(arpc_loop_wait_not_running(loop)); /* its thread has finished it */
        struct caller k = {.c = c, .rc = -1};
        pthread_t th;
        assert_int_equal(0, pthread_create(&th, NULL, caller_main, &k));
        sem_wait(&inside);
        assert_int_equal(ARPC_OK, arpc_client_close(c));
        pthread_join(th, NULL);
        assert_int_equal(ARPC_ESHUTDOWN, k.rc);
        arpc_loop_destroy(loop);
    }
    atomic_store(&linger_us, 0);
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
}

static void test_caller_driven_tcp(void **state)
{
    (void)state;
    close_while_calling("tcp://127.0.0.1:0", true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_loop_inproc),
        cmocka_unit_test(test_own_loop_tcp),
        cmocka_unit_test(test_caller_driven_tcp),
        cmocka_unit_test(test_stopped_user_loop),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
