/*
 * A pool worker's replies of one take (core/reply_take.c): written together by the worker, in
 * one gathered send, not handed one by one to the loop; never kept waiting on a handler that
 * replies and then waits for its client to have read that reply (the loop takes the batch
 * over); every reply exactly once, whole.
 *
 * A take of many requests is made by a first call whose handler waits for the test: the
 * requests sent meanwhile pile up in the worker's mailbox (a pool of one), and the worker
 * takes them all at once when the first handler returns. The server's handlers_in_flight says
 * when all of them were dispatched, and a fence on the loop then that they were posted (the
 * loop posts a read's requests together, after counting them). The first call comes on a
 * connection of its own: its reply, handed to the loop whenever the loop is awake, would have
 * the loop writing the take's socket just as the worker comes to write the take, which then
 * goes the loop's way (by design: core/conn_write.h), and the take's path would be the luck of
 * the schedule.
 *
 * sendmsg is interposed for one case (cut_once): the worker's first gathered send of more than
 * one iovec is given only its first, as a socket with room for exactly one reply would take it.
 * The loop's own gathered sends are left whole: cutting one would say nothing of the worker's.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "async/loop_internal.h"
#include "core/frame.h"
#include "core/server_internal.h"
#include "support/raw_client.h"
#include "support/test_util.h"

#define N 32 /* requests in the take: under TAKE_MAX */

static atomic_int cut_once = 0;
static _Atomic pid_t worker_tid; /* the pool's one worker: h_gate runs on it */
ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    if (m->msg_iovlen > 1 && (pid_t)syscall(SYS_gettid) == atomic_load(&worker_tid) && atomic_exchange(&cut_once, 0)) {
        struct msghdr m2 = *m;
        m2.msg_iovlen = 1; /* the socket "took" exactly the first reply */
        return syscall(SYS_sendmsg, fd, &m2, flags);
    }
    return syscall(SYS_sendmsg, fd, m, flags);
}

static sem_t gate_open, read_one;
static atomic_uint waits_in_vain; /* h_reply_then_wait's waits that ran out */

/* Waits for the test, then echoes. */
static void h_gate(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_store(&worker_tid, (pid_t)syscall(SYS_gettid));
    latch_add();
    (void)sem_wait_secs(&gate_open, TEST_WAIT_S);
    size_t len;
    const void *data = arpc_request_data(req, &len);
    (void)arpc_reply(req, data, len);
}

/* Replies, then waits until the test has read that reply. */
static void h_reply_then_wait(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *data = arpc_request_data(req, &len);
    (void)arpc_reply(req, data, len);
    if (!sem_wait_secs(&read_one, TEST_WAIT_S))
        atomic_fetch_add(&waits_in_vain, 1);
}

#define BIG 30000 /* under 32 KiB: held; four fill a batch's 128 KiB */

/* A reply of BIG bytes of the call's own pattern (its xid is its payload's one byte). */
static void h_big(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const uint8_t *data = arpc_request_data(req, &len);
    static _Thread_local uint8_t out[BIG];
    fill_pattern(out, len == 1 ? data[0] : 0, BIG);
    (void)arpc_reply(req, out, BIG);
    latch_add();
}

/* reply_take_hold_ns as the library sets it (read in main): each test starts from it, so one
 * that failed with the hold raised does not pass it on to the next. */
static uint64_t hold_default;

/* The test's server; worker_flushes: a batch is given all the time it needs (the loop never
 * takes one over), so every batch leaves from its worker. */
static arpc_server *make_server(char *addr, size_t addrlen, bool worker_flushes)
{
    reply_take_hold_ns = worker_flushes ? UINT64_MAX / 2 : hold_default;
    latch_reset();
    atomic_store(&waits_in_vain, 0);
    test_alloc_install();
    assert_int_equal(0, sem_init(&gate_open, 0, 0));
    assert_int_equal(0, sem_init(&read_one, 0, 0));
    arpc_server_options o = {.workers = 1};
    arpc_server *s;
    assert_int_equal(ARPC_OK, arpc_server_create(&s, &o));
    arpc_method_options mo = {.reply_bytes_hint = 16};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.gate", h_gate, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.echo", test_echo, NULL, &mo));
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.reply_wait", h_reply_then_wait, NULL, &mo));
    arpc_method_options big = {.reply_bytes_hint = BIG};
    assert_int_equal(ARPC_OK, arpc_server_register(s, "t.big", h_big, NULL, &big));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, "tcp://127.0.0.1:0", addr, addrlen));
    return s;
}

static void destroy_server(arpc_server *s)
{
    assert_int_equal(ARPC_OK, arpc_server_destroy(s));
    sem_destroy(&gate_open);
    sem_destroy(&read_one);
    reply_take_hold_ns = hold_default;
}

/* The gate's call (xid 1) on g, then n calls of method on r (xids 2..n+1, payload: the xid),
 * all in the worker's mailbox while the gate waits. */
static void pile_up(arpc_server *s, struct raw_client *g, struct raw_client *r, const char *method, unsigned n)
{
    uint8_t one = 1;
    assert_true(raw_request(g, 1, 0, 0, 0, "t.gate", &one, 1));
    assert_true(latch_wait(1, TEST_WAIT_MS));
    for (unsigned i = 2; i <= n + 1; i++) {
        uint8_t x = (uint8_t)i;
        assert_true(raw_request(r, i, 0, 0, 0, method, &x, 1));
    }
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), n + 1, TEST_WAIT_MS));
    /* Counted as the loop read them; posted together at the end of that read. Else the worker
     * could take some of them only, and one left alone in its take goes the loop's way. */
    assert_int_equal(ARPC_OK, arpc_loop_fence(s->sv_loop));
}

/* Reads a reply to one of xids 1..max not seen yet, its payload its xid. */
static void read_reply(struct raw_client *r, bool *seen, unsigned max)
{
    struct raw_frame f;
    assert_true(raw_read(r, &f, false));
    assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
    assert_true(f.f.f_xid >= 1 && f.f.f_xid <= max);
    assert_false(seen[f.f.f_xid]);
    seen[f.f.f_xid] = true;
    assert_int_equal(1, f.body_len);
    assert_int_equal((uint8_t)f.f.f_xid, f.body[0]);
}

/* Reads the gate's reply (xid 1) on g, then the replies to xids 2..n+1 on r (n <= N), each once. */
static void read_replies(struct raw_client *g, struct raw_client *r, unsigned n)
{
    bool seen[N + 2] = {0};
    assert_true(n <= N);
    read_reply(g, seen, 1);
    for (unsigned i = 0; i < n; i++)
        read_reply(r, seen, n + 1);
}

/* The take's N replies leave from the worker (counted as direct replies), each once. Before
 * reply_take.c, only a reply that found the loop asleep with nothing posted left from its
 * worker: one of the take's at most (its bookkeeping's lazy job then counts as posted). The
 * batch is given all the time it needs here (the loop never takes it over). */
static void test_a_take_leaves_from_its_worker(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), true);
    static struct raw_client g, r;
    assert_true(raw_connect(&g, addr, 0));
    assert_true(raw_connect(&r, addr, 0));
    pile_up(s, &g, &r, "t.echo", N);
    assert_int_equal(0, sem_post(&gate_open));
    read_replies(&g, &r, N);
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 10000)); /* every reply's job has run */
    assert_true(arpc_stat_get(&s->sv_direct_replies) >= N);
    raw_close(&r);
    raw_close(&g);
    destroy_server(s);
}

/* Each handler of the take replies and then waits for the test to read that reply: the reply
 * must leave while its handler still runs (the loop takes the held batch over), or the test
 * and the worker wait for each other. */
static void test_a_reply_never_waits_on_its_handler(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), false);
    static struct raw_client g, r;
    assert_true(raw_connect(&g, addr, 0));
    assert_true(raw_connect(&r, addr, 0));
    enum { K = 4 };
    pile_up(s, &g, &r, "t.reply_wait", K);
    assert_int_equal(0, sem_post(&gate_open));
    bool seen[K + 2] = {0};
    read_reply(&g, seen, 1); /* the gate's */
    for (unsigned i = 0; i < K; i++) {
        read_reply(&r, seen, K + 1);
        assert_int_equal(0, sem_post(&read_one));
    }
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
    assert_int_equal(0, atomic_load(&waits_in_vain)); /* each reply came while its handler waited */
    raw_close(&r);
    raw_close(&g);
    destroy_server(s);
}

/* A take's replies larger than the socket takes while the client reads nothing: the worker's
 * gathered send is cut (its rest, and the replies after it, go the loop's way, in order), and
 * the next batches find the socket full or the loop writing (theirs go the loop's way too); the
 * client gets each reply once and whole. */
static void test_a_take_cut_short(void **state)
{
    (void)state;
    char addr[256], unix_addr[256], path[108];
    arpc_server *s = make_server(addr, sizeof(addr), true);
    /* A Unix socket: its buffers take a few hundred KB, where loopback TCP's grow to take it all. */
    snprintf(path, sizeof(path), "unix:///tmp/arpc-reply-take-%d.sock", (int)getpid());
    unlink(path + strlen("unix://"));
    assert_int_equal(ARPC_OK, arpc_server_listen(s, path, unix_addr, sizeof(unix_addr)));
    static struct raw_client g, r;
    assert_true(raw_connect(&g, addr, 0));
    assert_true(raw_connect(&r, unix_addr, 0));
    enum { M = 48 }; /* 1.4 MB: twelve batches */
    pile_up(s, &g, &r, "t.big", M);
    assert_int_equal(0, sem_post(&gate_open));
    assert_true(latch_wait(1 + M, TEST_WAIT_MS)); /* every reply made before anything is read */
    bool seen[M + 2] = {0};
    read_reply(&g, seen, 1); /* the gate's echo */
    for (unsigned i = 0; i < M; i++) {
        struct raw_frame f;
        assert_true(raw_read(&r, &f, false));
        assert_int_equal(ARPC_FRAME_REPLY, f.f.f_kind);
        assert_true(f.f.f_xid >= 2 && f.f.f_xid <= M + 1);
        assert_false(seen[f.f.f_xid]);
        seen[f.f.f_xid] = true;
        assert_int_equal(BIG, f.body_len);
        for (size_t j = 0; j < BIG; j++)
            if (f.body[j] != pattern_byte(f.f.f_xid + j))
                fail_msg("reply %u: byte %zu is not its own", (unsigned)f.f.f_xid, j);
    }
    assert_int_equal(ARPC_OK, arpc_server_stop(s, 10000));
    assert_true(arpc_stat_get(&s->sv_direct_replies) > 0);
    raw_close(&r);
    raw_close(&g);
    destroy_server(s);
    unlink(path + strlen("unix://"));
}

/* A take's gathered send that the socket takes exactly up to a reply's end: no frame was cut,
 * so there is no rest to hand to the loop, and the socket must be let go
 * (arpc_conn_writev_frames_direct). On the old code the send counted as a cut: the word kept
 * CW_HANDOFF for a rest that never came, nothing wrote the connection again, and the replies
 * after the cut never arrived (2 of 9 read). */
static void test_a_take_cut_at_a_reply_boundary(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), true);
    static struct raw_client g, r;
    assert_true(raw_connect(&g, addr, 0));
    assert_true(raw_connect(&r, addr, 0));
    enum { M = 8 };
    pile_up(s, &g, &r, "t.echo", M);
    atomic_store(&cut_once, 1);
    assert_int_equal(0, sem_post(&gate_open));
    read_replies(&g, &r, M);
    assert_int_equal(0, atomic_load(&cut_once)); /* the cut happened */
    raw_close(&r);
    raw_close(&g);
    destroy_server(s);
}

/* No memory for a take's batch (reply_take_batch_size: its stack, its count, its anchor, the
 * array of the replies after it): the reply that would have opened it goes the ordinary way
 * (the loop's lane), the next one opens the batch, and every reply arrives once. */
static void test_a_take_without_memory_for_its_batch(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), true);
    test_alloc_sized_install(); /* both allocators are malloc's: blocks may cross */
    static struct raw_client g, r;
    assert_true(raw_connect(&g, addr, 0));
    assert_true(raw_connect(&r, addr, 0));
    pile_up(s, &g, &r, "t.echo", N);
    /* the take's first reply would open its batch (the gate is a take alone) */
    test_alloc_fail_next(reply_take_batch_size, reply_take_batch_size + 1);
    assert_int_equal(0, sem_post(&gate_open));
    read_replies(&g, &r, N);
    assert_int_equal(1, test_alloc_sized_failed());
    raw_close(&r);
    raw_close(&g);
    destroy_server(s);
    test_alloc_install();
}

/* The client goes away while the worker holds and writes its take's replies: each is dropped
 * or written, exactly once, and nothing leaks (the counting allocator, ASan). */
static void test_peer_leaves_during_a_take(void **state)
{
    (void)state;
    char addr[256];
    arpc_server *s = make_server(addr, sizeof(addr), false);
    static struct raw_client g, r;
    assert_true(raw_connect(&g, addr, 0));
    assert_true(raw_connect(&r, addr, 0));
    pile_up(s, &g, &r, "t.echo", N);
    raw_close(&r);
    raw_close(&g);
    assert_int_equal(0, sem_post(&gate_open));
    assert_true(server_stat_reaches(s, offsetof(arpc_server_stats, handlers_in_flight), 0, TEST_WAIT_MS));
    destroy_server(s);
}

int main(void)
{
    hold_default = reply_take_hold_ns;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_no_leak(test_a_take_leaves_from_its_worker),
        cmocka_unit_test_no_leak(test_a_reply_never_waits_on_its_handler),
        cmocka_unit_test_no_leak(test_a_take_cut_short),
        cmocka_unit_test_no_leak(test_a_take_cut_at_a_reply_boundary),
        cmocka_unit_test_no_leak(test_peer_leaves_during_a_take),
        cmocka_unit_test(test_a_take_without_memory_for_its_batch), /* last: it swaps allocators */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
