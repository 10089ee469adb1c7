/*
 * Every allocation of a call's whole life fails, one at a time (the way SQLite sweeps its
 * malloc failures): a server is created, registers a method and listens, a client connects
 * and makes at-most-once calls (one at a time, or a window of them at once), then both
 * close. Run k makes the k-th allocation fail (whichever thread makes it: the count is
 * shared, so the same k lands on different allocations from run to run, and each sweep is
 * made SWEEP_ROUNDS times), for k from 0 until a run ends without reaching its failure. Each
 * run must show:
 *   - a setup step that fails says ARPC_ENOMEM (a connect: or ARPC_EOVERLOADED, the server
 *     having no memory for the connection; never a peer that "is not an arpc server"), and
 *     what was made is closed;
 *   - no call runs twice; a call answered ARPC_OK ran and got its own bytes back; a call
 *     ended with an outcome client.h says did not run never ran;
 *   - no call reaches its deadline (the tests' hang bound: a message lost for good);
 *   - every call started after the failure succeeds: one failed allocation does not wedge a
 *     connection, a client or a server (the client reconnects if the server closed);
 *   - after close and destroy no block arpc allocated is live.
 * One configuration also answers every other call from a thread of the test's (the requests
 * taken from a completion queue) and sends a one-way message per window: none runs twice.
 * The second kind of sweep takes memory away for good from the k-th allocation on, and gives
 * it back once the first calls ended: they end, close and destroy need no memory, and the
 * calls after memory came back succeed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "support/alloc_sweep.h"
#include "support/log_capture.h"
#include "support/server_proc.h"
#ifdef ARPC_TEST_WITH_TLS
#include "support/tls_certs.h"
#endif
#include "support/test_util.h"

#define CALLS 6
#define SWEEP_ROUNDS 3

static atomic_int runs[CALLS];
static atomic_int notes[CALLS]; /* one-way messages that ran, by their byte */

static struct sweep_runs call_runs = {runs, CALLS, 0}, note_runs = {notes, CALLS, 0};

/* The replier: takes the requests of "t.queued" from the server's completion queue and
 * answers them from its own thread, as the handler of "t.count" does, until the queue shuts down. */
static void *replier_main(void *arg)
{
    arpc_cq *cq = arg;
    arpc_future *f;
    void *tag;
    while (arpc_cq_next(cq, &f, &tag) == ARPC_OK) {
        arpc_future_release(f);
        sweep_count_echo(tag, &call_runs);
    }
    return NULL;
}

struct sweep_config {
    const char *listen;  /* the server's address */
    bool inline_on_loop; /* the handler on the server's loop, else on its pool */
    bool reply_log;      /* the server keeps a reply log (in a fresh directory each run) */
    unsigned window;     /* calls in flight at once: CALLS is a multiple of it */
    bool queued;         /* every other call is answered from a thread of the test's, taken from a
                          * completion queue (arpc_method_options.queue), and each window sends
                          * a one-way message */
    const struct tls_certs_pair *tls; /* a tls:// listener with these certificates */
};

struct run_result {
    int setup; /* ARPC_OK, or the setup step's failure */
    int call[CALLS];
};

/* A setup step's outcome: ARPC_ENOMEM or `also` may stop the run (ARPC_OK: nothing more). */
static bool setup_step(int rc, int also, const char *step, long k, struct run_result *r)
{
    if (rc == ARPC_OK)
        return true;
    if (rc != ARPC_ENOMEM && rc != also)
        fail_msg("k=%ld: %s failed %s", k, step, arpc_errname(rc));
    r->setup = rc;
    return false;
}

/* Waits for call i (its future f) and checks what a caller may conclude from its end. A
 * reply log that had no memory for a record stops the server's at-most-once calls until a
 * restart (ARPC_ESYSTEM, client.h: it fails stop rather than answer calls it could not log). */
static int call_end(arpc_future *f, unsigned char i, bool started_after, const struct sweep_config *cfg, long k)
{
    /* NULL: no memory for the future itself (client.h); nothing was sent */
    int st = f == NULL ? ARPC_ENOMEM : arpc_future_wait_for(f, TEST_WAIT_MS + 5000);
    size_t len = 0;
    const unsigned char *back = f == NULL ? NULL : arpc_future_data(f, &len);
    if (started_after && st != ARPC_OK && !(cfg->reply_log && st == ARPC_ESYSTEM))
        fail_msg("k=%ld: call %u, started after the failure, ended %s: %s", k, (unsigned)i, arpc_errname(st),
                 back != NULL ? (const char *)back : "");
    if (st == ARPC_ETIMEDOUT)
        fail_msg("k=%ld: call %u reached its deadline", k, (unsigned)i);
    if (st == ARPC_OK && (len != 1 || back[0] != i || atomic_load(&runs[i]) != 1))
        fail_msg("k=%ld: call %u answered OK with %zu bytes after %d runs", k, (unsigned)i, len,
                 atomic_load(&runs[i]));
    arpc_future_release(f);
    return st;
}

/* The calls, cfg->window at a time; with memory gone for good, it comes back after the
 * first window. */
static void make_calls(arpc_client *c, const struct sweep_config *cfg, enum alloc_fault f, long k, struct run_result *r)
{
    arpc_call_options o = {.deadline_ms = TEST_WAIT_MS, .semantics = ARPC_AT_MOST_ONCE};
    for (unsigned char first = 0; first < CALLS; first = (unsigned char)(first + cfg->window)) {
        arpc_future *fut[CALLS];
        bool after[CALLS];
        for (unsigned char i = first; i < first + cfg->window; i++) {
            /* one failure: any call started after it; memory gone: once it came back */
            after[i] = f == ALLOC_FAULT_ONCE ? atomic_load(&test_alloc_refused) > 0 : first > 0;
            fut[i] = arpc_call_async_opts(c, cfg->queued && i % 2 != 0 ? "t.queued" : "t.count", &i, 1, &o);
        }
        if (cfg->queued) {
            int rc = arpc_notify(c, "t.note", &first, 1);
            if (rc != ARPC_OK && rc != ARPC_ENOMEM)
                fail_msg("k=%ld: arpc_notify: %s", k, arpc_errname(rc));
        }
        for (unsigned char i = first; i < first + cfg->window; i++)
            r->call[i] = call_end(fut[i], i, after[i], cfg, k);
        if (f == ALLOC_FAULT_FROM_THEN_ON)
            alloc_fault_disarm(); /* memory comes back: the next calls start after the failures */
    }
}

static void run_once(enum alloc_fault f, long k, void *arg, struct alloc_sweep_tally *tally)
{
    const struct sweep_config *cfg = arg;
    struct run_result result, *r = &result;
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < CALLS; i++) {
        atomic_store(&runs[i], 0);
        atomic_store(&notes[i], 0);
    }
    char dir[256] = "";
    if (cfg->reply_log)
        server_proc_mkdir(dir, sizeof(dir)); /* before the count starts: the test's own */
    arpc_server *s = NULL;
    arpc_client *c = NULL;
    arpc_cq *cq = NULL;
    pthread_t replier;
    bool replying = false;
    alloc_fault_arm(f, k);
    arpc_server_options so = {.workers = 1, .log_dir = cfg->reply_log ? dir : NULL,
                              .tls = cfg->tls != NULL ? &cfg->tls->tp_server : NULL};
    if (!setup_step(arpc_server_create(&s, &so), ARPC_OK, "arpc_server_create", k, r))
        goto done;
    arpc_method_options mo = {.inline_on_loop = cfg->inline_on_loop};
    if (!setup_step(arpc_server_register(s, "t.count", sweep_count_echo, &call_runs, &mo), ARPC_OK, "register", k, r))
        goto done;
    if (cfg->queued) {
        if (!setup_step(arpc_cq_create(&cq), ARPC_OK, "arpc_cq_create", k, r))
            goto done;
        arpc_method_options qo = {.queue = cq};
        if (!setup_step(arpc_server_register(s, "t.queued", NULL, NULL, &qo), ARPC_OK, "register", k, r) ||
            !setup_step(arpc_server_register(s, "t.note", sweep_count_echo, &note_runs, &mo), ARPC_OK, "register", k, r))
            goto done;
        assert_int_equal(0, pthread_create(&replier, NULL, replier_main, cq));
        replying = true;
    }
    char addr[256];
    if (!setup_step(arpc_server_listen(s, cfg->listen, addr, sizeof(addr)), ARPC_OK, "listen", k, r))
        goto done;
    char why[ARPC_ERRBUF_SIZE] = "";
    arpc_client_options co = {.reconnect_min_ms = 1, .reconnect_max_ms = 20, .errbuf = why, .errbuf_len = sizeof(why),
                              .tls = cfg->tls != NULL ? &cfg->tls->tp_client : NULL};
    int rc = arpc_client_connect(&c, addr, &co);
    /* A tls:// server with no memory for a connection, or to read its first bytes, can only
     * close it (no GOAWAY passes outside a TLS session): the client's handshake fails
     * (ARPC_ETLS, "the peer closed the connection"), or it finds the close before the HELLO
     * (ARPC_ECONNREFUSED). */
    if (cfg->tls != NULL && (rc == ARPC_ETLS || rc == ARPC_ECONNREFUSED))
        rc = ARPC_EOVERLOADED;
    if (rc != ARPC_OK && rc != ARPC_ENOMEM && rc != ARPC_EOVERLOADED)
        fail_msg("k=%ld: connect: %s", k, why);
    if (!setup_step(rc, ARPC_EOVERLOADED, "connect", k, r))
        goto done;
    make_calls(c, cfg, f, k, r);
done:
    if (c != NULL)
        assert_int_equal(ARPC_OK, arpc_client_close(c));
    if (s != NULL)
        assert_int_equal(ARPC_OK, arpc_server_stop(s, 0)); /* the queue outlives the stop */
    if (cq != NULL)
        arpc_cq_shutdown(cq);
    if (replying)
        pthread_join(replier, NULL);
    if (s != NULL)
        assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    if (cq != NULL)
        arpc_cq_destroy(cq);
    alloc_fault_disarm();
    tally->setup_failed += r->setup != ARPC_OK;
    for (int i = 0; r->setup == ARPC_OK && i < CALLS; i++) { /* every run is over now */
        if (atomic_load(&runs[i]) > 1)
            fail_msg("k=%ld: call %d ran %d times", k, i, atomic_load(&runs[i]));
        if (outcome_did_not_run(r->call[i]) && atomic_load(&runs[i]) != 0)
            fail_msg("k=%ld: call %d ended %s (did not run) and ran", k, i, arpc_errname(r->call[i]));
        if (atomic_load(&notes[i]) > 1)
            fail_msg("k=%ld: one-way message %d ran %d times", k, i, atomic_load(&notes[i]));
        tally->calls_failed += r->call[i] != ARPC_OK;
    }
    if (atomic_load(&test_alloc_live) != 0)
        fail_msg("k=%ld: %ld blocks live after close and destroy", k, atomic_load(&test_alloc_live));
    if (cfg->reply_log)
        server_proc_rmdir(dir);
}

static void sweep(const struct sweep_config *cfg, enum alloc_fault f)
{
    char what[160];
    snprintf(what, sizeof(what), "%s, %s%s, window %u%s", cfg->listen, cfg->inline_on_loop ? "inline" : "pool",
             cfg->reply_log ? ", reply log" : "", cfg->window, cfg->queued ? ", queued, one-way" : "");
    alloc_sweep(what, f, SWEEP_ROUNDS, run_once, (void *)cfg);
}

static const struct sweep_config tcp_pool = {"tcp://127.0.0.1:0", false, false, 1, false, NULL};
static const struct sweep_config tcp_pool_window = {"tcp://127.0.0.1:0", false, false, 3, false, NULL};
static const struct sweep_config tcp_logged_window = {"tcp://127.0.0.1:0", false, true, 3, false, NULL};
static const struct sweep_config tcp_queued = {"tcp://127.0.0.1:0", false, false, 2, true, NULL};
static const struct sweep_config inproc_inline = {"inproc://alloc-sweep", true, false, 1, false, NULL};
static char unix_addr[96];
static const struct sweep_config unix_inline_window = {unix_addr, true, false, 3, false, NULL};
#ifdef ARPC_TEST_WITH_TLS
static struct tls_certs certs;
static struct tls_certs_pair pair;
static const struct sweep_config tls_pool_window = {"tls://127.0.0.1:0", false, false, 2, false, &pair};

static void test_one_failure_tls(void **state)
{
    (void)state;
    sweep(&tls_pool_window, ALLOC_FAULT_ONCE);
}

static void test_memory_gone_tls(void **state)
{
    (void)state;
    sweep(&tls_pool_window, ALLOC_FAULT_FROM_THEN_ON);
}
#endif

static void test_one_failure_tcp_pool(void **state)
{
    (void)state;
    sweep(&tcp_pool, ALLOC_FAULT_ONCE);
}

static void test_one_failure_tcp_pool_window(void **state)
{
    (void)state;
    sweep(&tcp_pool_window, ALLOC_FAULT_ONCE);
}

static void test_one_failure_tcp_reply_log(void **state)
{
    (void)state;
    sweep(&tcp_logged_window, ALLOC_FAULT_ONCE);
}

static void test_one_failure_tcp_queued_and_one_way(void **state)
{
    (void)state;
    sweep(&tcp_queued, ALLOC_FAULT_ONCE);
}

static void test_one_failure_unix_inline(void **state)
{
    (void)state;
    sweep(&unix_inline_window, ALLOC_FAULT_ONCE);
}

static void test_one_failure_inproc(void **state)
{
    (void)state;
    sweep(&inproc_inline, ALLOC_FAULT_ONCE);
}

static void test_memory_gone_tcp_pool(void **state)
{
    (void)state;
    sweep(&tcp_pool_window, ALLOC_FAULT_FROM_THEN_ON);
}

static void test_memory_gone_tcp_queued_and_one_way(void **state)
{
    (void)state;
    sweep(&tcp_queued, ALLOC_FAULT_FROM_THEN_ON);
}

static void test_memory_gone_tcp_reply_log(void **state)
{
    (void)state;
    sweep(&tcp_logged_window, ALLOC_FAULT_FROM_THEN_ON);
}

static void test_memory_gone_unix_inline(void **state)
{
    (void)state;
    sweep(&unix_inline_window, ALLOC_FAULT_FROM_THEN_ON);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* one sweep: e.g. "*gone_tcp*" */
    snprintf(unix_addr, sizeof(unix_addr), "unix:///tmp/arpc-alloc-sweep-%d.sock", (int)getpid());
#ifdef ARPC_TEST_WITH_TLS
    if (!tls_certs_make(&certs)) /* before the counting allocator: OpenSSL's own memory */
        return 1;
    tls_certs_pair(&certs, &pair);
#endif
    test_alloc_install();
    log_capture_start(ARPC_LOG_ERROR); /* thousands of lines saying memory ran out: kept off the output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_failure_tcp_pool),
        cmocka_unit_test(test_one_failure_tcp_pool_window),
        cmocka_unit_test(test_one_failure_tcp_reply_log),
        cmocka_unit_test(test_one_failure_tcp_queued_and_one_way),
        cmocka_unit_test(test_one_failure_unix_inline),
        cmocka_unit_test(test_one_failure_inproc),
        cmocka_unit_test(test_memory_gone_tcp_pool),
        cmocka_unit_test(test_memory_gone_tcp_queued_and_one_way),
        cmocka_unit_test(test_memory_gone_tcp_reply_log),
        cmocka_unit_test(test_memory_gone_unix_inline),
#ifdef ARPC_TEST_WITH_TLS
        cmocka_unit_test(test_one_failure_tls),
        cmocka_unit_test(test_memory_gone_tls),
#endif
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
#ifdef ARPC_TEST_WITH_TLS
    tls_certs_remove(&certs);
#endif
    return failed;
}
