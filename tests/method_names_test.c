/*
 * A client's method names kept once (core/method_names.c), and the calls that keep only a
 * byte for them (core/client_call.c):
 *  - a name has one index for good, another name another, and the index reads the name back;
 *    a name over METHOD_NAME_SHORT bytes is not kept, one of exactly that many is;
 *  - a full table (or a name whose probes are all taken) keeps no more: those names give -1,
 *    the ones kept still read back;
 *  - without memory a name is not kept (and is, later, with memory); nothing leaks;
 *  - threads adding the same names at once agree on every index (TSan: the slots' hand-off);
 *  - over a live connection: calls of 200 methods (more than the table holds), of names too
 *    long to keep (25 and 255 bytes), of requests too large for the call's block (which keep
 *    their names with them), each reach the method they named with their payload whole, written by their
 *    callers or by the loop, and again after the connection was lost (a re-send makes the
 *    head again, the name in it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"
#include "core/client_internal.h"
#include "core/method_names.h"
#include "support/raw_client.h"
#include "support/raw_server.h"
#include "support/test_util.h"

static void assert_name_at(struct method_names *t, int index, const char *name)
{
    assert_true(index >= 0 && index < (int)METHOD_NAMES_SLOTS);
    const struct method_name *n = method_names_at(t, (unsigned)index);
    assert_non_null(n);
    assert_int_equal(strlen(name), n->mn_len);
    assert_memory_equal(name, n->mn_bytes, n->mn_len);
}

static int kept(struct method_names *t, const char *name) { return method_names_index(t, name, strlen(name)); }

static void test_index_is_stable(void **state)
{
    (void)state;
    test_alloc_install();
    struct method_names t = {0};
    int a = kept(&t, "kv.get"), b = kept(&t, "kv.put");
    assert_true(a >= 0 && b >= 0 && a != b);
    assert_int_equal(a, kept(&t, "kv.get"));
    assert_int_equal(b, kept(&t, "kv.put"));
    assert_int_equal(a, method_names_index(&t, "kv.getX", 6)); /* by length, not to a NUL */
    assert_name_at(&t, a, "kv.get");
    assert_name_at(&t, b, "kv.put");
    char longest[METHOD_NAME_SHORT + 2];
    memset(longest, 'n', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    assert_int_equal(-1, kept(&t, longest)); /* one byte over */
    longest[METHOD_NAME_SHORT] = '\0';
    int c = kept(&t, longest);
    assert_true(c >= 0);
    assert_name_at(&t, c, longest);
    assert_true(kept(&t, "") >= 0); /* an empty name (the server refuses it, not the table) */
    method_names_fini(&t);
}

static void test_full_table_keeps_no_more(void **state)
{
    (void)state;
    test_alloc_install();
    struct method_names t = {0};
    enum { NAMES = 3 * METHOD_NAMES_SLOTS };
    int index[NAMES];
    char name[32];
    unsigned nkept = 0;
    for (unsigned i = 0; i < NAMES; i++) {
        snprintf(name, sizeof(name), "m.%u", i);
        index[i] = kept(&t, name);
        nkept += index[i] >= 0;
    }
    /* A name is refused once the METHOD_NAMES_PROBES slots from its hash are taken, which may
     * be before the table is full: at least half of it fills here, and never more than all. */
    assert_true(nkept <= METHOD_NAMES_SLOTS);
    assert_true(nkept >= METHOD_NAMES_SLOTS / 2);
    for (unsigned i = 0; i < NAMES; i++) {
        snprintf(name, sizeof(name), "m.%u", i);
        assert_int_equal(index[i], kept(&t, name)); /* kept or not, the same answer again */
        if (index[i] >= 0)
            assert_name_at(&t, index[i], name);
        for (unsigned j = 0; j < i; j++)
            assert_true(index[i] < 0 || index[i] != index[j]);
    }
    assert_int_equal(nkept, test_alloc_live);
    method_names_fini(&t);
    assert_int_equal(0, test_alloc_live);
}

static void test_no_memory_keeps_nothing(void **state)
{
    (void)state;
    test_alloc_install();
    struct method_names t = {0};
    atomic_store(&test_alloc_budget, 0);
    assert_int_equal(-1, kept(&t, "kv.get"));
    atomic_store(&test_alloc_budget, -1);
    assert_int_equal(0, test_alloc_live);
    int a = kept(&t, "kv.get");
    assert_true(a >= 0);
    assert_name_at(&t, a, "kv.get");
    method_names_fini(&t);
}

/* ---- threads adding the same names at once ---- */

enum { RACE_THREADS = 4, RACE_NAMES = 64, RACE_ROUNDS = 50 };

struct race {
    struct method_names *r_table;
    pthread_barrier_t *r_start;
    unsigned r_seed;
    int r_index[RACE_NAMES];
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    char name[32];
    pthread_barrier_wait(r->r_start);
    for (unsigned k = 0; k < RACE_NAMES; k++) {
        unsigned i = (k * 37u + r->r_seed) % RACE_NAMES; /* each thread its own order */
        snprintf(name, sizeof(name), "race.%u", i);
        r->r_index[i] = kept(r->r_table, name);
        const struct method_name *n = r->r_index[i] >= 0 ? method_names_at(r->r_table, (unsigned)r->r_index[i]) : NULL;
        if (n == NULL || n->mn_len != strlen(name) || memcmp(n->mn_bytes, name, n->mn_len) != 0)
            r->r_index[i] = -2; /* read back wrong: checked on the main thread */
    }
    return NULL;
}

static void test_threads_agree(void **state)
{
    (void)state;
    test_alloc_install();
    for (unsigned round = 0; round < RACE_ROUNDS; round++) {
        struct method_names t = {0};
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, RACE_THREADS);
        struct race races[RACE_THREADS];
        pthread_t threads[RACE_THREADS];
        for (unsigned i = 0; i < RACE_THREADS; i++) {
            races[i] = (struct race){.r_table = &t, .r_start = &start, .r_seed = i * 11u + round};
            assert_int_equal(0, pthread_create(&threads[i], NULL, race_thread, &races[i]));
        }
        for (unsigned i = 0; i < RACE_THREADS; i++)
            assert_int_equal(0, pthread_join(threads[i], NULL));
        pthread_barrier_destroy(&start);
        for (unsigned k = 0; k < RACE_NAMES; k++) {
            assert_true(races[0].r_index[k] >= 0); /* 64 names fit a table of 128 */
            for (unsigned i = 1; i < RACE_THREADS; i++)
                assert_int_equal(races[0].r_index[k], races[i].r_index[k]);
        }
        assert_int_equal(RACE_NAMES, test_alloc_live); /* the losers' copies freed */
        method_names_fini(&t);
        assert_int_equal(0, test_alloc_live);
    }
}

/* ---- calls over a live connection ---- */

/* Replies with the method's name as the server read it (the handler's ctx is the name it was
 * registered under: they must agree), then the payload. */
static void h_named(arpc_request *req, void *ctx)
{
    const char *name = arpc_request_method(req);
    size_t len, nlen = strlen(name);
    const void *payload = arpc_request_data(req, &len);
    uint8_t *reply = malloc(nlen + len + 1);
    if (strcmp(name, ctx) == 0)
        memcpy(reply, name, nlen);
    else
        memset(reply, '?', nlen);
    if (len > 0)
        memcpy(reply + nlen, payload, len);
    arpc_reply(req, reply, nlen + len);
    free(reply);
}

enum { METHODS = 200, BULK = 4096 };

struct names_fixture {
    arpc_server *s;
    arpc_client *c;
    char addr[256];
    char *names[METHODS + 2]; /* m.0xx .. m.199xx (8 to 24 bytes), then a 25-byte and a 255-byte one */
};

static int names_setup(void **state)
{
    test_alloc_install();
    static struct names_fixture fx;
    memset(&fx, 0, sizeof(fx));
    if (arpc_server_create(&fx.s, NULL) != ARPC_OK)
        return -1;
    for (unsigned i = 0; i < METHODS + 2; i++) {
        /* Every length a name is kept at, from one word to the head's whole room; then two too
         * long to keep. */
        size_t len = i < METHODS ? 8 + i % (METHOD_NAME_SHORT - 7) : i == METHODS ? METHOD_NAME_SHORT + 1 : ARPC_METHOD_MAX;
        fx.names[i] = calloc(1, len + 1);
        int n = snprintf(fx.names[i], len + 1, "m.%u", i);
        memset(fx.names[i] + n, 'x', len - (size_t)n); /* exactly len bytes */
        /* Half on the loop, half on the workers: either way the server reads the name the
         * client's head carried. */
        arpc_method_options mo = {.inline_on_loop = i % 2 == 0};
        if (arpc_server_register(fx.s, fx.names[i], h_named, fx.names[i], &mo) != ARPC_OK)
            return -1;
    }
    if (arpc_server_listen(fx.s, "tcp://127.0.0.1:0", fx.addr, sizeof(fx.addr)) != ARPC_OK ||
        arpc_client_connect(&fx.c, fx.addr, NULL) != ARPC_OK)
        return -1;
    *state = &fx;
    return 0;
}

static int names_teardown(void **state)
{
    struct names_fixture *fx = *state;
    arpc_client_close(fx->c);
    arpc_server_destroy(fx->s);
    for (unsigned i = 0; i < METHODS + 2; i++)
        free(fx->names[i]);
    return test_alloc_check_no_leak(state);
}

/* The reply of a call of method i with size bytes of payload (pattern from i): its name, then
 * the payload. */
static void check_reply(struct names_fixture *fx, unsigned i, size_t size, arpc_future *f)
{
    assert_int_equal(ARPC_OK, arpc_future_wait(f));
    size_t len, nlen = strlen(fx->names[i]);
    const uint8_t *data = arpc_future_data(f, &len);
    assert_int_equal(nlen + size, len);
    assert_memory_equal(fx->names[i], data, nlen);
    for (size_t k = 0; k < size; k++)
        assert_int_equal(pattern_byte(i + k), data[nlen + k]);
    arpc_future_release(f);
}

/* Starts a call of every method at once (pipelined: some written by this thread, some by
 * the loop), small payloads and, every seventh, one too large for the call's block. */
static void call_every_method(struct names_fixture *fx)
{
    static uint8_t req[BULK];
    arpc_future *fs[METHODS + 2];
    size_t sizes[METHODS + 2];
    for (unsigned i = 0; i < METHODS + 2; i++) {
        sizes[i] = i % 7 == 3 ? BULK : i % 5;
        fill_pattern(req, i, sizes[i]);
        fs[i] = arpc_call_async(fx->c, fx->names[i], req, sizes[i], 30000);
        assert_non_null(fs[i]);
    }
    for (unsigned i = 0; i < METHODS + 2; i++)
        check_reply(fx, i, sizes[i], fs[i]);
}

static void test_calls_reach_their_methods(void **state)
{
    struct names_fixture *fx = *state;
    call_every_method(fx);
    /* More names than the table holds: at least half of it was filled by these (the rest of
     * the names went out whole, from their calls). */
    unsigned nkept = 0;
    for (unsigned i = 0; i < METHOD_NAMES_SLOTS; i++)
        nkept += method_names_at(&fx->c->cl_names, i) != NULL;
    assert_true(nkept >= METHOD_NAMES_SLOTS / 2);
    call_every_method(fx); /* again: now every call finds its name kept, or not, at once */
}

/* ---- a re-send makes the head again, with the name ---- */

#define RESENT 2 /* a kept name, then one too long to keep */
static const char *const resent_names[RESENT] = {"t.kept", "t.name.far.too.long.to.keep"};

struct resend_script {
    unsigned rs_seen[2][RESENT]; /* by connection, by call: its frames read with the right name */
    uint64_t rs_xid[RESENT];     /* on the second connection */
};

/* Reads the two requests of a connection: each must carry its call's name and payload (the
 * call's index as a letter: 'a', 'b'). */
static bool read_named(struct raw_client *r, void *arg, int conn)
{
    struct resend_script *s = arg;
    for (int i = 0; i < RESENT; i++) {
        struct raw_frame f;
        if (!raw_read(r, &f, false) || f.f.f_kind != ARPC_FRAME_REQUEST || f.f.f_payload_len != 1)
            return false;
        int k = f.f.f_payload[0] - 'a';
        if (k < 0 || k >= RESENT || f.f.f_method_len != strlen(resent_names[k]) ||
            memcmp(f.f.f_method, resent_names[k], f.f.f_method_len) != 0)
            return false;
        s->rs_seen[conn][k]++;
        s->rs_xid[k] = f.f.f_xid;
    }
    return true;
}

static bool resend_script_run(struct raw_server *srv, void *arg)
{
    struct resend_script *s = arg;
    struct raw_client *r = malloc(sizeof(*r));
    if (r == NULL)
        return false;
    bool ok = raw_server_read_twice(srv, r, read_named, s); /* the first connection unanswered */
    for (int i = 0; ok && i < RESENT; i++)
        ok = raw_server_reply_byte(r, s->rs_xid[i], 'r');
    if (ok)
        raw_server_read_to_end(r);
    raw_close(r);
    free(r);
    return ok;
}

static void test_resent_calls_carry_their_names(void **state)
{
    (void)state;
    struct resend_script s = {0};
    struct raw_server srv;
    raw_server_start(&srv, resend_script_run, &s);
    arpc_client_options o = {.reconnect_min_ms = 10, .reconnect_max_ms = 20};
    arpc_client *c = NULL;
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, srv.rs_addr, &o));
    arpc_future *fs[RESENT];
    for (int i = 0; i < RESENT; i++)
        fs[i] = arpc_call_async(c, resent_names[i], (const char[]){(char)('a' + i)}, 1, ARPC_FOREVER);
    for (int i = 0; i < RESENT; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[i], TEST_WAIT_MS));
        arpc_future_release(fs[i]);
    }
    arpc_client_close(c);
    assert_true(raw_server_join(&srv));
    for (int i = 0; i < RESENT; i++) {
        assert_int_equal(1, s.rs_seen[0][i]);
        assert_int_equal(1, s.rs_seen[1][i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_index_is_stable),
        cmocka_unit_test_no_leak(test_full_table_keeps_no_more),
        cmocka_unit_test_no_leak(test_no_memory_keeps_nothing),
        cmocka_unit_test_no_leak(test_threads_agree),
        cmocka_unit_test_setup_teardown(test_calls_reach_their_methods, names_setup, names_teardown),
        cmocka_unit_test(test_resent_calls_carry_their_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
