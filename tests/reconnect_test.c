/*
 * Calls that survive broken connections and crashed servers (at-most-once, end to end):
 *  - a connection cut under calls held by their handlers: the client reconnects, sends them
 *    again with the same seq, the server attaches them to the running calls: every call ends
 *    OK and every handler ran once;
 *  - a server killed (SIGKILL) and restarted on the same address and reply log, mid-calls,
 *    with pool and actor handlers, over tcp and unix: every call ends OK, once, and the
 *    server's applied set proves no call ran twice;
 *  - reconnect back-off stays bounded by reconnect_max_ms;
 *  - a silently dead server (SIGSTOP: no FIN, no RST) is detected by the heartbeat, so a call
 *    without deadline ends instead of hanging.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "core/frame.h"
#include "support/cut_proxy.h"
#include "support/server_proc.h"
#include "support/test_util.h"
#include "transport/transport.h"

#define CALL_DEADLINE_MS 60000

/* ---- a connection cut under running calls ---- */

static atomic_int held_runs;
static sem_t held_gate;

static void h_held(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&held_runs, 1);
    latch_add();
    sem_wait_secs(&held_gate, 30); /* held until the test has cut the connection */
    size_t len;
    const void *p = arpc_request_data(req, &len);
    arpc_reply(req, p, len);
}

static void test_cut_under_running_calls(void **state)
{
    (void)state;
    enum { N = 8 };
    sem_init(&held_gate, 0, 0);
    atomic_store(&held_runs, 0);
    latch_reset();
    arpc_server *s;
    arpc_server_options so = {.workers = N};
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &so));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.held", h_held, NULL, NULL));
    char saddr[256], paddr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", saddr, sizeof(saddr)));
    struct cut_proxy *proxy = cut_proxy_start(saddr, paddr, sizeof(paddr));
    assert_non_null(proxy);
    arpc_client *c;
    arpc_client_options co = {.reconnect_max_ms = 50};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, paddr, &co));
    arpc_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = arpc_call_async(c, "t.held", &i, sizeof(i), CALL_DEADLINE_MS);
    assert_true(latch_wait(N, TEST_WAIT_MS)); /* every handler runs (and holds) */
    assert_true(cut_proxy_cut(proxy) >= 1);
    /* The client reconnects and sends the same calls again: they attach to the running ones.
     * Wait until it is back (a new connection through the proxy and its HELLO). */
    int64_t until = now_ms() + 10000;
    while (arpc_client_connections(c) < 2 && now_ms() < until)
        sched_yield();
    assert_true(arpc_client_connections(c) >= 2);
    for (int i = 0; i < N; i++)
        sem_post(&held_gate);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ARPC_OK, arpc_future_wait_for(fs[i], 20000));
        size_t len;
        const int *got = arpc_future_data(fs[i], &len);
        assert_int_equal(sizeof(int), len);
        assert_int_equal(i, *got);
        arpc_future_release(fs[i]);
    }
    assert_int_equal(N, atomic_load(&held_runs)); /* none ran twice */
    arpc_client_close(c);
    cut_proxy_stop(proxy);
    arpc_server_destroy(s);
    sem_destroy(&held_gate);
}

/* ---- a server killed and restarted ---- */

static atomic_int kill_done_count;

static void count_done(arpc_future *f, void *arg)
{
    (void)f;
    (void)arg;
    atomic_fetch_add(&kill_done_count, 1);
    latch_add();
}

static void kill_and_restart(const char *listen_addr, int mode)
{
    enum { N = 300, WINDOW = 32, KILL_AFTER = 100 };
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    assert_true(dir[0] != '\0');
    struct server_proc sp;
    assert_true(server_proc_start(&sp, listen_addr, dir, mode));
    arpc_client *c;
    arpc_client_options co = {.reconnect_max_ms = 100, .reconnect_give_up_ms = 30000};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, sp.sp_addr, &co));
    latch_reset();
    atomic_store(&kill_done_count, 0);
    arpc_future *fs[N];
    bool restarted = false;
    for (int i = 0; i < N; i++) {
        /* Keep WINDOW calls in flight; every fifth sleeps on the server, so some are
         * running when it dies. */
        while (i - atomic_load(&kill_done_count) >= WINDOW)
            latch_wait((unsigned)(i - WINDOW + 1), 20000);
        uint8_t req[12];
        uint64_t token = 1000 + (uint64_t)i;
        uint32_t ms = i % 5 == 0 ? 20 : 0;
        memcpy(req, &token, 8);
        memcpy(req + 8, &ms, 4);
        fs[i] = arpc_call_async(c, i % 5 == 0 ? "t.slow" : "t.apply", req, ms ? 12 : 8, CALL_DEADLINE_MS);
        assert_int_equal(ARPC_OK, arpc_future_then(fs[i], count_done, NULL));
        if (i == KILL_AFTER) {
            server_proc_kill(&sp);
            /* Back on the same address and log: tcp on the port it chose, unix on its path. */
            char addr[256];
            snprintf(addr, sizeof(addr), "%s", sp.sp_addr);
            assert_true(server_proc_start(&sp, addr, dir, mode));
            restarted = true;
        }
    }
    assert_true(restarted);
    for (int i = 0; i < N; i++) {
        int st = arpc_future_wait_for(fs[i], CALL_DEADLINE_MS);
        if (st != ARPC_OK)
            fprintf(stderr, "call %d: %s\n", i, arpc_errname(st));
        assert_int_equal(ARPC_OK, st);
        size_t len;
        const uint64_t *r = arpc_future_data(fs[i], &len);
        assert_int_equal(sizeof(uint64_t), len);
        if (*r != 1)
            fprintf(stderr, "call %d: token applied before: it ran twice\n", i);
        assert_int_equal(1, *r); /* the token was new when it was applied: it ran once */
        arpc_future_release(fs[i]);
    }
    assert_true(arpc_client_connections(c) >= 2);
    /* The break was in the way until the reconnect, which cleared it. */
    char why[256];
    assert_int_equal(ARPC_OK, arpc_client_last_error(c, why, sizeof(why)));
    assert_string_equal("", why);
    uint64_t applied, dups;
    assert_true(server_proc_stats(sp.sp_addr, &applied, &dups));
    assert_int_equal(N, applied);
    assert_int_equal(0, dups);
    arpc_client_close(c);
    server_proc_stop(&sp);
    if (strncmp(sp.sp_addr, "unix://", 7) == 0)
        unlink(sp.sp_addr + 7);
    server_proc_rmdir(dir);
}

static void unix_addr(char *addr, size_t len)
{
    snprintf(addr, len, "unix:///tmp/arpc-reconnect-%d.sock", getpid());
}

static void test_kill_restart_tcp_pool(void **state)
{
    (void)state;
    kill_and_restart("tcp://127.0.0.1:0", SERVER_PROC_POOL);
}

static void test_kill_restart_tcp_actor(void **state)
{
    (void)state;
    kill_and_restart("tcp://127.0.0.1:0", SERVER_PROC_ACTOR);
}

static void test_kill_restart_unix_pool(void **state)
{
    (void)state;
    char addr[256];
    unix_addr(addr, sizeof(addr));
    kill_and_restart(addr, SERVER_PROC_POOL);
}

static void test_kill_restart_unix_actor(void **state)
{
    (void)state;
    char addr[256];
    unix_addr(addr, sizeof(addr));
    kill_and_restart(addr, SERVER_PROC_ACTOR);
}

/* Without a reply log a restarted server has forgotten every call: the client can tell (the
 * server's epoch changed), so a call that was sent before the crash ends with ECONNLOST (it
 * may or may not have run) instead of being sent again, and a call started after runs. */
static void test_restart_without_log_is_unknown(void **state)
{
    (void)state;
    struct server_proc sp;
    assert_true(server_proc_start(&sp, "tcp://127.0.0.1:0", "-", SERVER_PROC_POOL));
    arpc_client *c;
    arpc_client_options co = {.reconnect_max_ms = 50, .reconnect_give_up_ms = 30000};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, sp.sp_addr, &co));
    uint8_t req[12];
    uint64_t token = 7;
    uint32_t ms = 60000; /* still running when the server dies */
    memcpy(req, &token, 8);
    memcpy(req + 8, &ms, 4);
    arpc_future *f = arpc_call_async(c, "t.slow", req, sizeof(req), CALL_DEADLINE_MS);
    token = 8; /* the connection is up and the slow call was sent before this one returns */
    assert_int_equal(ARPC_OK, arpc_call(c, "t.apply", &token, sizeof(token), NULL, NULL, 10000));
    char addr[256];
    snprintf(addr, sizeof(addr), "%s", sp.sp_addr);
    server_proc_kill(&sp);
    assert_true(server_proc_start(&sp, addr, "-", SERVER_PROC_POOL));
    assert_int_equal(ARPC_ECONNLOST, arpc_future_wait_for(f, 20000));
    const char *why = arpc_future_data(f, NULL);
    assert_non_null(why);
    assert_non_null(strstr(why, "does not remember the call"));
    assert_non_null(strstr(why, "(connection to ")); /* how it was lost, across the reconnect */
    arpc_future_release(f);
    token = 9;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.apply", &token, sizeof(token), NULL, NULL, 20000));
    arpc_client_close(c);
    server_proc_stop(&sp);
}

/* ---- reconnect back-off is bounded ---- */

/* After the server goes away for good, attempts keep coming at least every reconnect_max_ms
 * (with jitter: between half of it and all of it), not ever more rarely. */
static void test_backoff_bounded(void **state)
{
    (void)state;
    enum { MAX_MS = 100 };
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, NULL));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, NULL));
    char addr[256];
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, sizeof(addr)));
    arpc_client *c;
    arpc_client_options co = {.reconnect_min_ms = 5, .reconnect_max_ms = MAX_MS};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, addr, &co));
    arpc_server_destroy(s);
    /* A listener on the same port that shuts every attempt at once: each one is an accept. */
    struct arpc_listener *l;
    const char *rest = addr + strlen("tcp://");
    int64_t until = now_ms() + 5000;
    while (arpc_transport_tcp.t_listen(rest, &l, NULL, 0) != ARPC_OK && now_ms() < until)
        sched_yield(); /* the port may still be held by the closing server */
    int64_t t[40];
    int n = 0;
    until = now_ms() + 20000;
    while (n < 40 && now_ms() < until) {
        struct pollfd p = {.fd = l->l_fd, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        int fd;
        char peer[256];
        if (l->l_ops->t_accept(l, &fd, peer, sizeof(peer), NULL, 0) == ARPC_OK) {
            t[n++] = now_ms();
            close(fd);
        }
    }
    assert_int_equal(40, n);
    fprintf(stderr, "30 attempts after the first 10 took %lld ms\n", (long long)(t[39] - t[9]));
    /* Past the first doublings, the delays stay at reconnect_max_ms: 30 attempts must take
     * no more than about 30 x MAX_MS (allowing the loaded machine 3x its share). */
    assert_true(t[39] - t[9] <= 3 * 30 * MAX_MS);
    /* ... and the back-off does back off: not a spin. */
    assert_true(t[39] - t[9] >= 30 * MAX_MS / 4);
    l->l_ops->t_unlisten(l);
    arpc_client_close(c);
}

/* A server that answers HELLO and closes at once, ATTEMPTS times, recording when each
 * connection came. */
enum { FLAKY_ATTEMPTS = 10 };
struct flaky_server {
    struct arpc_listener *fs_l;
    pthread_t fs_thread;
    int64_t fs_at[FLAKY_ATTEMPTS];
    int fs_n;
};

static void *flaky_main(void *arg)
{
    struct flaky_server *fs = arg;
    int64_t until = now_ms() + 60000;
    while (fs->fs_n < FLAKY_ATTEMPTS && now_ms() < until) {
        struct pollfd p = {.fd = fs->fs_l->l_fd, .events = POLLIN};
        int fd;
        char peer[256];
        if (poll(&p, 1, 1000) <= 0 || fs->fs_l->l_ops->t_accept(fs->fs_l, &fd, peer, sizeof(peer), NULL, 0) != ARPC_OK)
            continue;
        fs->fs_at[fs->fs_n++] = now_ms();
        uint8_t buf[256];
        struct pollfd r = {.fd = fd, .events = POLLIN};
        if (poll(&r, 1, 10000) == 1 && read(fd, buf, sizeof(buf)) > 0) { /* its HELLO */
            size_t n = arpc_frame_encode_hello(buf, 0xf1a4, 0, 0, 0);
            (void)!write(fd, buf, n);
        }
        close(fd);
    }
    return NULL;
}

/* A server that says HELLO and closes at once is retried ever more slowly: the back-off starts
 * over only for a connection that proved itself (a reply, or a life of reconnect_max_ms). With
 * attempts 5 ms apart at first, 8 doublings take at least ~640 ms (each delay at least half of
 * its step); before, every HELLO started the back-off over and the attempts came ~5 ms apart. */
static void test_hello_then_close_backs_off(void **state)
{
    (void)state;
    struct flaky_server fs = {.fs_n = 0};
    assert_int_equal(ARPC_OK, arpc_transport_tcp.t_listen("127.0.0.1:0", &fs.fs_l, NULL, 0));
    assert_int_equal(0, pthread_create(&fs.fs_thread, NULL, flaky_main, &fs));
    arpc_client *c;
    arpc_client_options co = {.reconnect_min_ms = 5, .reconnect_max_ms = 10000};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, fs.fs_l->l_addr, &co));
    pthread_join(fs.fs_thread, NULL);
    assert_int_equal(FLAKY_ATTEMPTS, fs.fs_n);
    int64_t span = fs.fs_at[FLAKY_ATTEMPTS - 1] - fs.fs_at[1];
    fprintf(stderr, "attempts 2..%d took %lld ms\n", FLAKY_ATTEMPTS, (long long)span);
    assert_true(span >= 300);
    arpc_client_close(c);
    fs.fs_l->l_ops->t_unlisten(fs.fs_l);
}

/* ---- a silently dead server ---- */

static void test_heartbeat_detects_silent_server(void **state)
{
    (void)state;
    char dir[256];
    server_proc_mkdir(dir, sizeof(dir));
    struct server_proc sp;
    assert_true(server_proc_start(&sp, "tcp://127.0.0.1:0", dir, SERVER_PROC_POOL));
    arpc_client *c;
    /* Short enough for a quick test, long enough that a loaded machine's scheduling delays
     * (hundreds of ms) are not taken for a dead server. */
    arpc_client_options co = {.heartbeat_ms = 250,
                              .heartbeat_misses = 3,
                              .connect_timeout_ms = 2000,
                              .reconnect_max_ms = 100,
                              .reconnect_give_up_ms = 2000};
    assert_int_equal(ARPC_OK, arpc_client_connect(&c, sp.sp_addr, &co));
    uint64_t token = 1;
    assert_int_equal(ARPC_OK, arpc_call(c, "t.apply", &token, sizeof(token), NULL, NULL, 10000));
    kill(sp.sp_pid, SIGSTOP); /* alive to the kernel (the socket stays open), silent to us */
    /* kill() only queues the stop: wait until the child has stopped, or a loaded machine can
     * still let it answer the next call (seen once as ARPC_OK below). */
    int wst;
    while (waitpid(sp.sp_pid, &wst, WUNTRACED) < 0 && errno == EINTR)
        ;
    assert_true(WIFSTOPPED(wst));
    token = 2;
    int64_t t0 = now_ms();
    /* No deadline: only the heartbeat (then the give-up) can end it. It was sent, so its
     * outcome is unknown: ECONNLOST. */
    int st = arpc_call(c, "t.apply", &token, sizeof(token), NULL, NULL, ARPC_FOREVER);
    int64_t took = now_ms() - t0;
    /* Read while the server is still stopped: once it runs again, a reconnect clears it. */
    char why[ARPC_ERRBUF_SIZE];
    int last = arpc_client_last_error(c, why, sizeof(why));
    kill(sp.sp_pid, SIGCONT);
    assert_int_equal(ARPC_ECONNLOST, st);
    assert_true(took < 20000);
    assert_int_not_equal(ARPC_OK, last);
    arpc_client_close(c);
    server_proc_kill(&sp);
    server_proc_rmdir(dir);
}

int main(int argc, char **argv)
{
    server_proc_main(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_under_running_calls),
        cmocka_unit_test_teardown(test_kill_restart_tcp_pool, server_proc_teardown),
        cmocka_unit_test_teardown(test_kill_restart_tcp_actor, server_proc_teardown),
        cmocka_unit_test_teardown(test_kill_restart_unix_pool, server_proc_teardown),
        cmocka_unit_test_teardown(test_kill_restart_unix_actor, server_proc_teardown),
        cmocka_unit_test_teardown(test_restart_without_log_is_unknown, server_proc_teardown),
        cmocka_unit_test(test_backoff_bounded),
        cmocka_unit_test(test_hello_then_close_backs_off),
        cmocka_unit_test_teardown(test_heartbeat_detects_silent_server, server_proc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
