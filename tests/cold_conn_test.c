/*
 * Cold fd watchers (async/loop_cold.c) and a server's cold connections (arpc_conn_cool): at
 * most the budget of ready cold fds is served per loop turn, after the loop's other watchers;
 * a connection with calls is served while thousands of others wait; every one is served (and
 * a closed one closed) in the end; stop and destroy with cold connections pending.
 *
 * Everything runs on a pollable loop the test thread drives one step (arpc_loop_run_nowait:
 * one libev turn) at a time, over AF_UNIX sockets, whose readiness is there as soon as the
 * peer's write or close returns: what a turn serves is exact, no wait is timed.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <poll.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "arpc/arpc.h"
#include "async/loop_internal.h"
#include "base/clock.h"
#include "core/frame.h"
#include "core/server_internal.h"
#include "support/test_util.h"

#include <cmocka.h>

/* ---- the loop's cold set alone ---- */

#define COLD_N 40
#define COLD_BUDGET 4u

struct watched {
    ev_io w;
    int fd[2];        /* fd[0] watched, fd[1] the peer that makes it readable */
    unsigned served;  /* callbacks */
    unsigned turn;    /* the turn of the last one */
    struct watched *victim; /* stopped (cold) by this one's callback, if not served yet */
    bool stopped;     /* out of the cold set */
    struct watched *wake; /* made readable by this one's callback */
};

static bool readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static arpc_loop *cur_loop;
static unsigned cur_turn;

static void on_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    struct watched *x = w->data;
    assert_true(revents & EV_READ);
    char b;
    assert_int_equal(1, read(x->fd[0], &b, 1));
    x->served++;
    x->turn = cur_turn;
    if (x->victim != NULL && x->victim->served == 0 && !x->victim->stopped) {
        arpc_loop_cold_stop(cur_loop, &x->victim->w); /* as a close freeing another connection */
        x->victim->stopped = true;
    }
    if (x->wake != NULL)
        assert_int_equal(1, write(x->wake->fd[1], "w", 1));
    if (!x->stopped) /* served once, like a connection read to its end */
        arpc_loop_cold_stop(cur_loop, w);
    x->stopped = true;
}

static void watched_init(struct watched *x)
{
    memset(x, 0, sizeof(*x));
    assert_true(socketpair_nb(x->fd));
    ev_io_init(&x->w, on_ready, x->fd[0], EV_READ);
    x->w.data = x;
    assert_int_equal(1, write(x->fd[1], "x", 1));
}

static void watched_fini(struct watched *x)
{
    close(x->fd[0]);
    close(x->fd[1]);
}

/* One turn; returns how long the loop says its driver may sleep. */
static int step(arpc_loop *loop)
{
    int timeout = -2;
    cur_turn++;
    assert_int_equal(ARPC_OK, arpc_loop_run_nowait(loop, &timeout));
    return timeout;
}

static arpc_loop *pollable_loop(void)
{
    arpc_loop *loop = NULL;
    arpc_loop_options lo = {.pollable = true};
    assert_int_equal(ARPC_OK, arpc_loop_create(&loop, &lo));
    cur_loop = loop;
    cur_turn = 0;
    return loop;
}

/* 40 cold fds and one ordinary one ready at once: the ordinary one in the first turn, the
 * cold ones 4 a turn, the loop's fd readable (its driver does not sleep) until they are all
 * served. */
static void test_budget_per_turn(void **state)
{
    (void)state;
    arpc_loop *loop = pollable_loop();
    assert_int_equal(ARPC_EINVAL, arpc_loop_cold_budget(loop, 0));
    assert_int_equal(ARPC_OK, arpc_loop_cold_budget(loop, COLD_BUDGET));
    static struct watched cold[COLD_N], warm;
    for (int i = 0; i < COLD_N; i++) {
        watched_init(&cold[i]);
        assert_int_equal(ARPC_OK, arpc_loop_cold_start(loop, &cold[i].w));
    }
    watched_init(&warm);
    warm.stopped = true; /* not a cold one: on_ready must not stop it cold */
    arpc_loop_io_start(loop, &warm.w);
    assert_int_equal(COLD_N, arpc_loop_cold_count(loop));
    for (unsigned t = 1; t <= COLD_N / COLD_BUDGET; t++) {
        (void)step(loop);
        unsigned served = 0;
        for (int i = 0; i < COLD_N; i++) {
            assert_true(cold[i].served <= 1);
            served += cold[i].served;
        }
        assert_int_equal(t * COLD_BUDGET, served);
        assert_int_equal(1, warm.served); /* in the first turn, and once */
        assert_int_equal(1, warm.turn);
        if (t < COLD_N / COLD_BUDGET)
            assert_true(readable(arpc_loop_fd(loop))); /* cold fds still ready: step again at once */
    }
    assert_int_equal(0, arpc_loop_cold_count(loop));
    assert_int_equal(-1, step(loop)); /* nothing ready, no deadline: the driver may sleep */
    assert_false(readable(arpc_loop_fd(loop)));
    arpc_loop_io_stop(loop, &warm.w);
    for (int i = 0; i < COLD_N; i++)
        watched_fini(&cold[i]);
    watched_fini(&warm);
    arpc_loop_destroy(loop);
}

/* A callback that stops another watcher of its batch: that one is not invoked (its memory may
 * be gone); an event fed to a cold watcher is dropped by its stop. */
static void test_stop_inside_batch(void **state)
{
    (void)state;
    arpc_loop *loop = pollable_loop();
    static struct watched a, b, c, fed;
    watched_init(&a);
    watched_init(&b);
    watched_init(&c);
    a.victim = &b;
    b.victim = &a; /* whichever the batch invokes first stops the other */
    assert_int_equal(ARPC_OK, arpc_loop_cold_start(loop, &a.w));
    assert_int_equal(ARPC_OK, arpc_loop_cold_start(loop, &b.w));
    assert_int_equal(ARPC_OK, arpc_loop_cold_start(loop, &c.w));
    /* fed: not ready, an event fed to it (a TLS stream's buffered bytes), then stopped. */
    memset(&fed, 0, sizeof(fed));
    assert_true(socketpair_nb(fed.fd));
    ev_io_init(&fed.w, on_ready, fed.fd[0], EV_READ);
    fed.w.data = &fed;
    assert_int_equal(ARPC_OK, arpc_loop_cold_start(loop, &fed.w));
    ev_feed_event(arpc_loop_ev(loop), &fed.w, EV_READ);
    arpc_loop_cold_stop(loop, &fed.w);
    fed.stopped = true;
    (void)step(loop); /* the default budget (4): all three in one batch */
    assert_int_equal(1, a.served + b.served); /* exactly one of the pair ran */
    assert_true(a.stopped && b.stopped);
    assert_int_equal(1, c.served);
    assert_int_equal(0, fed.served);
    assert_int_equal(0, arpc_loop_cold_count(loop));
    watched_fini(&a);
    watched_fini(&b);
    watched_fini(&c);
    watched_fini(&fed);
    arpc_loop_destroy(loop);
}

/* In the application's libev loop (arpc_loop_wrap) a cold watcher keeps its ev_run going, as
 * a watcher of libev's would, and only while there is one: ev_run(ev, 0) goes on to a second
 * turn for y (made ready by x's callback in the first) and returns once both were served and
 * stopped (with the set's own watcher unreferenced for good it would return after the first
 * turn, y unserved; referenced for good it would never return). */
static void test_wrapped_loop_runs_while_cold(void **state)
{
    (void)state;
    struct ev_loop *ev = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(ev);
    arpc_loop *loop = NULL;
    assert_int_equal(ARPC_OK, arpc_loop_wrap(&loop, ev, NULL));
    cur_loop = loop;
    static struct watched x, y;
    watched_init(&x);
    watched_init(&y);
    char b;
    assert_int_equal(1, read(y.fd[0], &b, 1)); /* y not ready until x's callback */
    x.wake = &y;
    assert_int_equal(ARPC_OK, arpc_loop_cold_start(loop, &x.w));
    assert_int_equal(ARPC_OK, arpc_loop_cold_start(loop, &y.w));
    ev_run(ev, 0);
    assert_int_equal(1, x.served);
    assert_int_equal(1, y.served);
    assert_int_equal(0, arpc_loop_cold_count(loop));
    watched_fini(&x);
    watched_fini(&y);
    arpc_loop_destroy(loop);
    ev_loop_destroy(ev);
}

/* ---- a server's cold connections ---- */

#define CONN_N 32
#define CONN_BUDGET 2u

static unsigned fds_open(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    unsigned n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static uint64_t conns_open(arpc_server *s)
{
    arpc_server_stats st;
    assert_int_equal(ARPC_OK, arpc_server_stats(s, &st));
    return st.connections_open;
}

/* Drives the loop until fd has bytes to read; the steps it took (a bound, not a time). */
static unsigned step_until_readable(arpc_loop *loop, int fd)
{
    unsigned steps = 0;
    while (!readable(fd)) {
        assert_true(steps < 100000);
        (void)step(loop);
        steps++;
    }
    return steps;
}

static void drop_input(int fd)
{
    uint8_t buf[4096];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

/* A client socket that said HELLO and has the server's back. */
static int hello_client(arpc_loop *loop, const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(0, connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
    uint8_t hello[ARPC_FRAME_HEADER_SIZE + ARPC_HELLO_BODY_SIZE_EXT];
    size_t n = arpc_frame_encode_hello(hello, 0xc01d, 0, 0, 0);
    assert_int_equal((ssize_t)n, write(fd, hello, n));
    (void)step_until_readable(loop, fd);
    drop_input(fd);
    return fd;
}

static void send_call(int fd, uint64_t xid)
{
    uint8_t buf[128];
    size_t n = arpc_frame_encode_request(buf, ARPC_FRAME_REQUEST, xid, 0, 0, 0, "t.echo", 6, "hi", 2);
    assert_int_equal((ssize_t)n, write(fd, buf, n));
}

struct served {
    arpc_loop *loop;
    arpc_server *s;
    char path[108];
    int good;
};

/* A call of the good client, answered. */
static void good_call(struct served *v, uint64_t xid)
{
    send_call(v->good, xid);
    (void)step_until_readable(v->loop, v->good);
    drop_input(v->good);
}

static void served_start_with(struct served *v, arpc_server_options so)
{
    v->loop = pollable_loop();
    so.loop = v->loop;
    assert_int_equal(ARPC_OK, arpc_server_create(&v->s, &so));
    arpc_method_options mo = {.inline_on_loop = true};
    assert_int_equal(ARPC_OK, arpc_server_register(v->s, "t.echo", test_echo, NULL, &mo));
    snprintf(v->path, sizeof(v->path), "/tmp/arpc-cold-%d.sock", (int)getpid());
    char addr[128];
    snprintf(addr, sizeof(addr), "unix://%s", v->path);
    assert_int_equal(ARPC_OK, arpc_server_listen(v->s, addr, NULL, 0));
    assert_int_equal(ARPC_OK, arpc_loop_cold_budget(v->loop, CONN_BUDGET));
    /* The good client: its first call warms its connection. */
    v->good = hello_client(v->loop, v->path);
    assert_int_equal(1, arpc_loop_cold_count(v->loop));
    good_call(v, 1);
    assert_int_equal(0, arpc_loop_cold_count(v->loop));
}

static void served_start(struct served *v) { served_start_with(v, (arpc_server_options){0}); }

/* The good client's socket closed, the server destroyed, the loop and the socket file gone. */
static void served_stop(struct served *v)
{
    close(v->good);
    assert_int_equal(ARPC_OK, arpc_server_destroy(v->s));
    arpc_loop_destroy(v->loop);
    unlink(v->path);
}

/* 32 connections closed at once while the good client calls: its answer comes before the
 * last of them is let go; then all are, and every descriptor with them. */
static void test_mass_close_good_call_first(void **state)
{
    (void)state;
    struct served v;
    served_start(&v);
    unsigned fds_before = fds_open();
    int fds[CONN_N];
    for (int i = 0; i < CONN_N; i++)
        fds[i] = hello_client(v.loop, v.path);
    assert_int_equal(CONN_N + 1, conns_open(v.s));
    good_call(&v, 2); /* warm, however long the set-up took (a second without a call cools it) */
    assert_int_equal(CONN_N, arpc_loop_cold_count(v.loop));
    for (int i = 0; i < CONN_N; i++)
        close(fds[i]); /* 32 EOFs ready at once */
    send_call(v.good, 3);
    unsigned steps = step_until_readable(v.loop, v.good);
    uint64_t open_then = conns_open(v.s);
    /* Served all at once (the turn libev would make of them) none would be left. */
    assert_true(open_then > 1);
    assert_true(steps <= 2);
    unsigned turns = 0;
    while (conns_open(v.s) > 1) {
        assert_true(turns++ < CONN_N); /* CONN_BUDGET a turn: CONN_N / 2 turns are enough */
        (void)step(v.loop);
    }
    assert_int_equal(0, arpc_loop_cold_count(v.loop));
    assert_int_equal(fds_before, fds_open());
    served_stop(&v);
}

/* A client socket that connects and says nothing. */
static int silent_client(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(0, connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
    return fd;
}

/* Connections closed in one libev iteration, at most, seen from a prepare watcher of the loop's
 * (which runs once an iteration, before the loop would block). */
struct close_watch {
    ev_prepare w;
    arpc_server *s;
    uint64_t open, most;
};

static void close_watch_cb(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)ev, (void)revents;
    struct close_watch *cw = (struct close_watch *)w;
    uint64_t now_open = conns_open(cw->s);
    if (cw->open > now_open && cw->open - now_open > cw->most)
        cw->most = cw->open - now_open;
    cw->open = now_open;
}

/* Connections that time out together (here never saying HELLO within handshake_timeout_ms)
 * are closed SERVER_LIMITS_CLOSES_PER_TURN a loop iteration at most, not all in the sweep's
 * one, and the good client's call sent once they have begun is answered within two steps.
 * (Before, a slice of the sweep closed up to 512 at once: 1,000 slowloris connections timing
 * out together made iterations of 8-16 ms.) */
static void test_mass_timeout_closes_bounded_per_turn(void **state)
{
    (void)state;
    enum { N = 3 * SERVER_LIMITS_CLOSES_PER_TURN + 1 };
    struct served v;
    /* Long enough for the test's own steps to accept all of them before the first times out
     * (a stall of its thread on a loaded machine), short for the test. */
    served_start_with(&v, (arpc_server_options){.handshake_timeout_ms = 500});
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = silent_client(v.path);
    uint64_t give_up = arpc_now_ns() + 15000 * 1000000ull;
    while (conns_open(v.s) < N + 1) { /* accepted: 4 a readiness */
        assert_true(arpc_now_ns() < give_up);
        (void)step(v.loop);
    }
    struct close_watch cw = {.s = v.s, .open = N + 1};
    ev_prepare_init(&cw.w, close_watch_cb);
    ev_prepare_start(arpc_loop_ev(v.loop), &cw.w);
    bool sent = false, answered = false;
    unsigned steps_since = 0;
    while (conns_open(v.s) > 1 || (sent && !answered)) {
        assert_true(arpc_now_ns() < give_up);
        uint64_t before = conns_open(v.s);
        int timeout = step(v.loop);
        uint64_t after = conns_open(v.s);
        if (sent && !answered && (steps_since++, readable(v.good))) {
            drop_input(v.good);
            answered = true;
            assert_true(steps_since <= 2);
        }
        if (!sent && after < before && after > 1) {
            send_call(v.good, 2); /* the closes have begun: a call now waits behind them */
            sent = true;
        }
        if (after == before && !(sent && !answered)) { /* nothing yet: sleep as a driver would */
            struct pollfd p = {.fd = arpc_loop_fd(v.loop), .events = POLLIN};
            (void)poll(&p, 1, timeout < 0 || timeout > 100 ? 100 : timeout);
        }
    }
    ev_prepare_stop(arpc_loop_ev(v.loop), &cw.w);
    close_watch_cb(NULL, &cw.w, 0); /* the last iteration's (a prepare runs before its poll) */
    assert_true(cw.most >= 1);
    assert_true(cw.most <= SERVER_LIMITS_CLOSES_PER_TURN);
    assert_true(sent && answered);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    served_stop(&v);
}

/* A connection's first frame, large and still arriving, is read CONN_COLD_READ_BUDGET
 * (16 KiB) a turn while the connection is cold: 20 peers sending 16 MiB frames made turns of
 * 0.5-1 ms (four cold connections, 64 KiB each), and nearly every call of a good client made
 * during the transfer waited for one (docs/SECURITY.md). Every byte is read in the end and the
 * good client's calls are answered meanwhile. */
static void test_cold_large_frame_read_a_slice_per_turn(void **state)
{
    (void)state;
    enum { SLICE = 16 * 1024, BODY = 1 << 20 };
    struct served v;
    served_start(&v);
    int fd = hello_client(v.loop, v.path);
    uint64_t in0 = SERVER_STAT(v.s, bytes_in);
    static uint8_t buf[256 * 1024];
    (void)arpc_frame_encode_request_head(buf, ARPC_FRAME_REQUEST, 2, 0, 0, 0, "t.echo", 6,
                                                 BODY - ARPC_REQUEST_FIXED_SIZE - 6);
    ssize_t sent = write(fd, buf, sizeof(buf)); /* the head and the first of the body */
    assert_true(sent >= 4 * SLICE);
    unsigned turns = 0;
    uint64_t in = in0;
    while (in < in0 + (uint64_t)sent) {
        assert_true(turns++ < 100000);
        (void)step(v.loop);
        uint64_t now = SERVER_STAT(v.s, bytes_in);
        assert_true(now - in <= SLICE);
        in = now;
        if (turns % 4 == 0) {
            good_call(&v, turns); /* served meanwhile (its steps read the large frame too) */
            in = SERVER_STAT(v.s, bytes_in);
        }
    }
    assert_int_equal(1, arpc_loop_cold_count(v.loop)); /* still cold: no request yet */
    assert_int_equal(2, conns_open(v.s));
    close(fd);
    served_stop(&v);
}

/* Connections that time out together while holding large frames' bytes cost the sweep's turn
 * one close each and one more per MiB held: with 4 MiB each, three close in a turn, not all
 * eight (before: all in one, and 16 connections' 16 MiB bodies took 10-14 ms to free).
 * One attempt with frames timing out after timeout_ms; false when it could not judge: sending
 * and reading the bodies took so long (a loaded machine, a sanitizer) that some frames were
 * due before the others were whole, so they did not time out together. */
static bool mass_timeout_attempt(int timeout_ms)
{
    enum { N = 8, BODY = (16 << 20) - 1, SENT = 4 << 20, CHUNK = 256 << 10 };
    struct served v;
    served_start_with(&v, (arpc_server_options){.frame_timeout_ms = (uint32_t)timeout_ms});
    static uint8_t head[128], zeros[CHUNK];
    size_t head_len = arpc_frame_encode_request_head(head, ARPC_FRAME_REQUEST, 2, 0, 0, 0, "t.echo", 6,
                                                     BODY - ARPC_REQUEST_FIXED_SIZE - 6);
    int fds[N];
    size_t sent[N] = {0};
    for (int i = 0; i < N; i++)
        fds[i] = hello_client(v.loop, v.path);
    uint64_t all_in = SERVER_STAT(v.s, bytes_in) + N * (uint64_t)(head_len + SENT);
    uint64_t t0 = arpc_now_ns();
    for (int i = 0; i < N; i++)
        assert_int_equal((ssize_t)head_len, send(fds[i], head, head_len, MSG_NOSIGNAL));
    uint64_t give_up = arpc_now_ns() + 60000 * 1000000ull;
    bool judged = true;
    for (bool more = true; more && judged;) { /* every connection's SENT bytes of body, the loop reading */
        more = false;
        for (int i = 0; i < N; i++) {
            size_t want = SENT - sent[i] < CHUNK ? SENT - sent[i] : CHUNK;
            ssize_t n = want > 0 ? send(fds[i], zeros, want, MSG_NOSIGNAL) : 0;
            if (n > 0)
                sent[i] += (size_t)n;
            judged &= n >= 0 || errno == EAGAIN; /* EPIPE: closed already, for its timeout */
            more |= sent[i] < SENT;
        }
        assert_true(arpc_now_ns() < give_up);
        (void)step(v.loop);
    }
    while (judged && SERVER_STAT(v.s, bytes_in) < all_in) { /* and read, unless one was closed */
        assert_true(arpc_now_ns() < give_up);
        (void)step(v.loop);
        judged = conns_open(v.s) == N + 1;
    }
    /* Half the timeout spent on the bytes leaves too little margin between the first frame
     * and the last (the loop steps below may see some due before the others). */
    judged &= conns_open(v.s) == N + 1 && arpc_now_ns() - t0 < (uint64_t)timeout_ms * 1000000u / 2;
    if (judged) {
        /* Until every frame has been unfinished for timeout_ms (the loop not stepped: the
         * sweep then finds them all due at once); waiting for a timeout is what is tested. */
        uint64_t due = arpc_now_ns() + (uint64_t)(timeout_ms + 100) * 1000000ull;
        for (uint64_t now; (now = arpc_now_ns()) < due;)
            (void)poll(NULL, 0, (int)((due - now) / 1000000u) + 1);
        struct close_watch cw = {.s = v.s, .open = N + 1};
        ev_prepare_init(&cw.w, close_watch_cb);
        ev_prepare_start(arpc_loop_ev(v.loop), &cw.w);
        while (conns_open(v.s) > 1) {
            assert_true(arpc_now_ns() < give_up);
            (void)step(v.loop);
        }
        ev_prepare_stop(arpc_loop_ev(v.loop), &cw.w);
        close_watch_cb(NULL, &cw.w, 0); /* the last iteration's */
        assert_true(cw.most >= 1);
        assert_true(cw.most <= 3); /* 3 x (1 + 4) of the turn's 16 */
        good_call(&v, 3);          /* the good client's connection stayed */
    }
    for (int i = 0; i < N; i++)
        close(fds[i]);
    served_stop(&v);
    return judged;
}

static void test_mass_timeout_weighs_what_closes_free(void **state)
{
    (void)state;
    int timeout_ms = 5000;
    while (!mass_timeout_attempt(timeout_ms)) {
        print_message("the bodies took over half of %d ms to arrive: again with twice the timeout\n", timeout_ms);
        timeout_ms *= 2;
        assert_true(timeout_ms <= 80000);
    }
}

/* Warm connections (each made a call) streaming large frames at once: a loop turn reads
 * 128 KiB of their bodies in all (and the read that crosses it), not 64 KiB from each ready
 * one (six made turns of 384 KiB; 20 peers streaming 16 MiB frames, turns of milliseconds). */
static void test_bulk_read_per_turn_across_connections(void **state)
{
    (void)state;
    enum { N = 6, BODY = 8 << 20, CHUNK = 256 << 10, TURN = 128 << 10, READ = 64 << 10, STEPS = 40 };
    struct served v;
    served_start(&v);
    static uint8_t head[128], zeros[CHUNK];
    size_t head_len = arpc_frame_encode_request_head(head, ARPC_FRAME_REQUEST, 2, 0, 0, 0, "t.echo", 6,
                                                     BODY - ARPC_REQUEST_FIXED_SIZE - 6);
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = hello_client(v.loop, v.path);
        send_call(fds[i], 1); /* warm: served in the loop proper */
        (void)step_until_readable(v.loop, fds[i]);
        drop_input(fds[i]);
        assert_int_equal((ssize_t)head_len, write(fds[i], head, head_len));
    }
    assert_int_equal(0, arpc_loop_cold_count(v.loop));
    unsigned full_turns = 0;
    for (int step_i = 0; step_i < STEPS; step_i++) {
        bool all_full = true; /* every socket holds more than a readiness reads */
        for (int i = 0; i < N; i++) {
            ssize_t n;
            while ((n = write(fds[i], zeros, sizeof(zeros))) > 0)
                ;
            int queued = 0;
            assert_int_equal(0, ioctl(fds[i], SIOCOUTQ, &queued));
            all_full &= queued > READ;
        }
        uint64_t before = SERVER_STAT(v.s, bytes_in);
        (void)step(v.loop);
        uint64_t read = SERVER_STAT(v.s, bytes_in) - before;
        assert_true(read <= TURN + READ);
        full_turns += all_full && read > 0;
    }
    assert_true(full_turns > 0); /* turns that could have read 6 x 64 KiB did happen */
    good_call(&v, 3); /* the good client is answered meanwhile */
    for (int i = 0; i < N; i++)
        close(fds[i]);
    served_stop(&v);
}

/* Drives the loop, sleeping in poll on its fd as an application would, until the cold set
 * holds n (or the deadline passes: a failure). */
static void run_until_cold(arpc_loop *loop, unsigned n, int deadline_ms)
{
    uint64_t give_up = arpc_now_ns() + (uint64_t)deadline_ms * 1000000u;
    while (arpc_loop_cold_count(loop) < n) {
        assert_true(arpc_now_ns() < give_up);
        int timeout = step(loop);
        struct pollfd p = {.fd = arpc_loop_fd(loop), .events = POLLIN};
        (void)poll(&p, 1, timeout < 0 || timeout > 100 ? 100 : timeout);
    }
}

/* Connections that called once and went quiet are cold again within the limits' sweep: closed
 * at once, they are let go a budget a turn too, and the good client's call is answered first.
 * (Before, a connection stayed warm for ever after its first call, and CONN_N of them closing
 * together were all served in one turn.) A call warms its connection again. */
static void test_idle_connections_cool_again(void **state)
{
    (void)state;
    struct served v;
    served_start(&v);
    int fds[CONN_N];
    for (int i = 0; i < CONN_N; i++) {
        fds[i] = hello_client(v.loop, v.path);
        send_call(fds[i], 1);
        (void)step_until_readable(v.loop, fds[i]);
        drop_input(fds[i]);
    }
    assert_int_equal(0, arpc_loop_cold_count(v.loop)); /* every one has called */
    run_until_cold(v.loop, CONN_N + 1, 15000);       /* the good one too: within ~2 s */
    good_call(&v, 2); /* a call warms its connection again, and is answered */
    assert_int_equal(CONN_N, arpc_loop_cold_count(v.loop));
    for (int i = 0; i < CONN_N; i++)
        close(fds[i]); /* CONN_N EOFs ready at once */
    send_call(v.good, 4);
    unsigned steps = step_until_readable(v.loop, v.good);
    assert_true(steps <= 2);
    assert_true(conns_open(v.s) > 1); /* not all let go in the turns that answered it */
    unsigned turns = 0;
    while (conns_open(v.s) > 1) {
        assert_true(turns++ < CONN_N);
        (void)step(v.loop);
    }
    served_stop(&v);
}

/* Stop and destroy while cold connections wait: some idle, some closed by their peers and not
 * yet served. Every one is let go, with its descriptor. */
static void test_destroy_with_cold_pending(void **state)
{
    (void)state;
    unsigned fds_before = fds_open();
    struct served v;
    served_start(&v);
    int fds[CONN_N];
    for (int i = 0; i < CONN_N; i++)
        fds[i] = hello_client(v.loop, v.path);
    for (int i = 0; i < CONN_N / 2; i++)
        close(fds[i]); /* EOFs waiting in the cold set */
    (void)step(v.loop);  /* one turn: CONN_BUDGET of them served */
    assert_true(conns_open(v.s) > 1 + CONN_N / 2);
    assert_int_equal(ARPC_OK, arpc_server_destroy(v.s));
    assert_int_equal(0, arpc_loop_cold_count(v.loop));
    for (int i = CONN_N / 2; i < CONN_N; i++) {
        assert_true(fd_wait_eof(fds[i], 10000)); /* the server closed it */
        close(fds[i]);
    }
    close(v.good);
    arpc_loop_destroy(v.loop);
    assert_int_equal(fds_before, fds_open()); /* the server's, the loop's and the clients' */
    unlink(v.path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_per_turn),
        cmocka_unit_test(test_stop_inside_batch),
        cmocka_unit_test(test_wrapped_loop_runs_while_cold),
        cmocka_unit_test(test_mass_close_good_call_first),
        cmocka_unit_test(test_idle_connections_cool_again),
        cmocka_unit_test(test_mass_timeout_closes_bounded_per_turn),
        cmocka_unit_test(test_destroy_with_cold_pending),
        cmocka_unit_test(test_cold_large_frame_read_a_slice_per_turn),
        cmocka_unit_test(test_mass_timeout_weighs_what_closes_free),
        cmocka_unit_test(test_bulk_read_per_turn_across_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
