/*
 * A server that moved is found again: when reconnects to the addresses a name resolved to
 * keep failing, the client looks the name up again, off its loop (core/client_lookup.c).
 * The test stands in for DNS by interposing getaddrinfo: MOVING resolves to whichever
 * loopback address the test says (127.0.0.1, then 127.0.0.2, or nothing), every other name
 * as the C library answers it.
 *  - the server moves from 127.0.0.1:P to 127.0.0.2:P: a call made once the old one is gone
 *    reaches the new one, and the client counts the lookup;
 *  - a lookup that fails keeps the addresses there were: the server back there is reached;
 *  - re_resolve_ms negative, or longer than the client has lived: no lookup after connect's,
 *    however many attempts fail (a call the moved server would answer ends by its deadline);
 *  - a client closed while its lookup blocks in the resolver is not held by it;
 *  - a lookup still under way when the old address answers again is dropped (its answer,
 *    taken at some later failure, would replace addresses that had just worked): the next
 *    failure asks again, and that answer is taken;
 *  - at most 4 lookups run in the process at once: clients whose lookups all block in the
 *    resolver do not start a thread each (a trial made 300 threads so); the others ask
 *    again once one ends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <netdb.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "support/interpose.h"
#include "support/test_util.h"

#define MOVING "moving.arpc.test"

/* ---- the stand-in for DNS ---- */

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static const char *_Atomic moving_to; /* MOVING's address now; NULL: it does not resolve */
static atomic_int lookups;            /* of MOVING, connect's among them */
static atomic_int lookups_done;       /* of those, the ones that returned */
static atomic_bool hold_lookups;      /* a lookup waits for lookup_gate */
static sem_t lookup_held, lookup_gate;

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    static _Atomic(void *) real;
    getaddrinfo_fn next = (getaddrinfo_fn)interpose_next("getaddrinfo", &real);
    if (node != NULL && strcmp(node, MOVING) == 0) {
        atomic_fetch_add(&lookups, 1);
        latch_add();
        if (atomic_load(&hold_lookups)) {
            sem_post(&lookup_held);
            sem_wait_secs(&lookup_gate, TEST_WAIT_S);
        }
        node = atomic_load(&moving_to);
        int rc = node == NULL ? EAI_NONAME : next(node, service, hints, res);
        atomic_fetch_add(&lookups_done, 1);
        return rc;
    }
    return next(node, service, hints, res);
}

/* ---- servers that say who they are ---- */

static void h_where(arpc_request *req, void *ctx)
{
    arpc_reply(req, ctx, strlen(ctx));
}

/* A server answering "where" with its name, listening on host:port (port 0: any). */
static arpc_server *server_at(const char *name, const char *host, unsigned port, unsigned *port_out)
{
    arpc_server *s;
    if (arpc_server_create(&s, NULL) != ARPC_OK)
        return NULL;
    char addr[64], bound[256];
    snprintf(addr, sizeof(addr), "tcp://%s:%u", host, port);
    if (arpc_server_register(s, "where", h_where, (void *)name, NULL) != ARPC_OK ||
        arpc_server_listen(s, addr, bound, sizeof(bound)) != ARPC_OK) {
        arpc_server_destroy(s);
        return NULL;
    }
    if (port_out != NULL)
        *port_out = (unsigned)atoi(strrchr(bound, ':') + 1);
    return s;
}

/* Two servers on one port: "old" on 127.0.0.1, "new" on 127.0.0.2. */
static void server_pair(arpc_server **old_s, arpc_server **new_s, unsigned *port)
{
    for (int tries = 0; tries < 8; tries++) { /* a port taken on 127.0.0.2: another one */
        *old_s = server_at("old", "127.0.0.1", 0, port);
        assert_non_null(*old_s);
        *new_s = server_at("new", "127.0.0.2", *port, NULL);
        if (*new_s != NULL)
            return;
        arpc_server_destroy(*old_s);
    }
    fail_msg("no port free on both 127.0.0.1 and 127.0.0.2");
}

static arpc_client *connect_moving(unsigned port, int64_t re_resolve_ms)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "tcp://" MOVING ":%u", port);
    arpc_client *c = NULL;
    arpc_client_options co = {.reconnect_min_ms = 1, .reconnect_max_ms = 20, .re_resolve_ms = re_resolve_ms};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    return c;
}

/* The answer of "where" within deadline_ms: who answered, or the error's name. */
static void where(arpc_client *c, int64_t deadline_ms, char *out, size_t outlen)
{
    void *rep = NULL;
    size_t len = 0;
    int rc = arpc_call(c, "where", "", 0, &rep, &len, deadline_ms);
    if (rc == ARPC_OK)
        snprintf(out, outlen, "%.*s", (int)len, (const char *)rep);
    else
        snprintf(out, outlen, "%s", arpc_strerror(rc));
    arpc_free(rep);
}

/* ---- the DEBUG line of a lookup not started: all are busy ---- */

static atomic_int busy_said;
static sem_t busy_sem;

static void on_log(void *ctx, enum arpc_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    if (strstr(line, "name lookups are under way in this process already") != NULL &&
        atomic_fetch_add(&busy_said, 1) == 0)
        sem_post(&busy_sem);
}

static uint64_t name_lookups(arpc_client *c)
{
    arpc_client_stats st;
    assert_int_equal(ARPC_OK, arpc_client_stats(c, &st));
    return st.name_lookups;
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&moving_to, "127.0.0.1");
    atomic_store(&lookups, 0);
    atomic_store(&lookups_done, 0);
    atomic_store(&hold_lookups, false);
    sem_init(&lookup_held, 0, 0);
    sem_init(&lookup_gate, 0, 0);
    latch_reset();
    return 0;
}

/* ---- the cases ---- */

static void test_a_moved_server_is_found(void **state)
{
    (void)state;
    arpc_server *old_s, *new_s;
    unsigned port;
    server_pair(&old_s, &new_s, &port);
    arpc_client *c = connect_moving(port, 1);
    char who[64];
    where(c, TEST_WAIT_MS, who, sizeof(who));
    assert_string_equal("old", who);
    assert_int_equal(1, atomic_load(&lookups));
    assert_int_equal(0, name_lookups(c));

    atomic_store(&moving_to, "127.0.0.2");
    arpc_server_destroy(old_s); /* gone from 127.0.0.1: every reconnect there is refused */
    where(c, TEST_WAIT_MS, who, sizeof(who));
    assert_string_equal("new", who);
    assert_true(atomic_load(&lookups) >= 2);
    assert_true(name_lookups(c) >= 1);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_server_destroy(new_s);
}

static void test_a_failed_lookup_keeps_the_addresses(void **state)
{
    (void)state;
    unsigned port;
    arpc_server *s = server_at("first", "127.0.0.1", 0, &port);
    assert_non_null(s);
    arpc_client *c = connect_moving(port, 1);
    char who[64];
    where(c, TEST_WAIT_MS, who, sizeof(who));
    assert_string_equal("first", who);

    atomic_store(&moving_to, NULL); /* the resolver knows the name no more */
    arpc_server_destroy(s);
    assert_true(latch_wait(2, TEST_WAIT_MS)); /* a reconnect failed and a lookup came back empty */
    s = server_at("back", "127.0.0.1", port, NULL);
    assert_non_null(s);
    where(c, TEST_WAIT_MS, who, sizeof(who));
    assert_string_equal("back", who);
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_server_destroy(s);
}

/* A call the moved server would answer must end by its deadline instead: the addresses are
 * the connect's for the client's life (re_resolve_ms < 0), or for longer than the call's
 * deadline (a minute). */
static void no_lookup_with(int64_t re_resolve_ms)
{
    arpc_server *old_s, *new_s;
    unsigned port;
    server_pair(&old_s, &new_s, &port);
    arpc_client *c = connect_moving(port, re_resolve_ms);
    atomic_store(&moving_to, "127.0.0.2");
    arpc_server_destroy(old_s);
    char who[64];
    where(c, 300, who, sizeof(who)); /* dozens of attempts at the old address meanwhile */
    assert_string_not_equal("new", who);
    assert_int_equal(1, atomic_load(&lookups));
    assert_int_equal(0, name_lookups(c));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_server_destroy(new_s);
}

static void test_never_looked_up_again(void **state)
{
    (void)state;
    no_lookup_with(-1);
}

static void test_not_before_the_interval(void **state)
{
    (void)state;
    no_lookup_with(60000);
}

static void close_client(void *arg)
{
    assert_int_equal(ARPC_OK, arpc_client_close(arg));
}

static void test_close_does_not_wait_for_a_lookup(void **state)
{
    (void)state;
    unsigned port;
    arpc_server *s = server_at("first", "127.0.0.1", 0, &port);
    assert_non_null(s);
    arpc_client *c = connect_moving(port, 1);
    atomic_store(&hold_lookups, true);
    arpc_server_destroy(s);
    assert_true(sem_wait_secs(&lookup_held, TEST_WAIT_S)); /* a lookup blocks in the resolver */
    assert_true(thread_ends_within(close_client, c, TEST_WAIT_S));
    atomic_store(&hold_lookups, false);
    sem_post(&lookup_gate); /* its thread ends, and frees what it shared with the client */
}

static void test_a_lookup_under_way_at_a_connection_is_dropped(void **state)
{
    (void)state;
    arpc_server *old_s, *new_s;
    unsigned port;
    server_pair(&old_s, &new_s, &port);
    arpc_client *c = connect_moving(port, 1);
    atomic_store(&hold_lookups, true);
    arpc_server_destroy(old_s);
    assert_true(sem_wait_secs(&lookup_held, TEST_WAIT_S)); /* the first lookup blocks */
    old_s = server_at("old again", "127.0.0.1", port, NULL);
    assert_non_null(old_s);
    char who[64];
    where(c, TEST_WAIT_MS, who, sizeof(who)); /* reconnected to the old address */
    assert_string_equal("old again", who);
    atomic_store(&moving_to, "127.0.0.2");
    arpc_server_destroy(old_s);
    /* Its lookup was let go at the connection, so this failure starts another (one still
     * counted as under way would have kept it from starting). */
    assert_true(sem_wait_secs(&lookup_held, TEST_WAIT_S));
    atomic_store(&hold_lookups, false);
    sem_post(&lookup_gate);
    sem_post(&lookup_gate);
    where(c, TEST_WAIT_MS, who, sizeof(who));
    assert_string_equal("new", who);
    assert_int_equal(2, name_lookups(c));
    assert_int_equal(ARPC_OK, arpc_client_close(c));
    arpc_server_destroy(new_s);
}

static void test_lookups_at_once_are_bounded(void **state)
{
    (void)state;
    enum { CLIENTS = 6, AT_ONCE = 4 }; /* AT_ONCE: CLIENT_LOOKUPS_MAX, core/client_lookup.c */
    atomic_store(&busy_said, 0);
    sem_init(&busy_sem, 0, 0);
    arpc_set_logger(on_log, NULL, ARPC_LOG_DEBUG);
    unsigned port;
    arpc_server *s = server_at("first", "127.0.0.1", 0, &port);
    assert_non_null(s);
    arpc_client *c[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        c[i] = connect_moving(port, 1);
    assert_int_equal(CLIENTS, atomic_load(&lookups)); /* connect's */
    atomic_store(&hold_lookups, true);
    arpc_server_destroy(s); /* every client's attempts fail, and each asks for a lookup */
    for (int i = 0; i < AT_ONCE; i++)
        assert_true(sem_wait_secs(&lookup_held, TEST_WAIT_S));
    assert_true(sem_wait_secs(&busy_sem, TEST_WAIT_S)); /* a fifth found them all busy */
    assert_int_equal(CLIENTS + AT_ONCE, atomic_load(&lookups)); /* and started none */
    atomic_store(&hold_lookups, false);
    for (int i = 0; i < AT_ONCE; i++)
        sem_post(&lookup_gate);
    /* The held ones end (nothing listens at the address they give): every client looks up. */
    for (int i = 0; i < CLIENTS; i++)
        assert_true(WAIT_UNTIL(name_lookups(c[i]) >= 1));
    /* The server back: no attempt fails, so no lookup starts; those started end (their
     * threads outlive a close, and the next case counts lookups from 0). */
    s = server_at("back", "127.0.0.1", port, NULL);
    assert_non_null(s);
    int started = CLIENTS;
    for (int i = 0; i < CLIENTS; i++) {
        char who[64];
        where(c[i], TEST_WAIT_MS, who, sizeof(who));
        assert_string_equal("back", who);
        started += (int)name_lookups(c[i]);
    }
    assert_true(WAIT_UNTIL(atomic_load(&lookups_done) == started));
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(ARPC_OK, arpc_client_close(c[i]));
    arpc_server_destroy(s);
    arpc_set_logger(NULL, NULL, ARPC_LOG_INFO);
    sem_destroy(&busy_sem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* first: a lookup another case let go may still be ending, and hold a place */
        cmocka_unit_test_setup(test_lookups_at_once_are_bounded, setup),
        cmocka_unit_test_setup(test_a_moved_server_is_found, setup),
        cmocka_unit_test_setup(test_a_failed_lookup_keeps_the_addresses, setup),
        cmocka_unit_test_setup(test_never_looked_up_again, setup),
        cmocka_unit_test_setup(test_not_before_the_interval, setup),
        cmocka_unit_test_setup(test_a_lookup_under_way_at_a_connection_is_dropped, setup),
        cmocka_unit_test_setup(test_close_does_not_wait_for_a_lookup, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
