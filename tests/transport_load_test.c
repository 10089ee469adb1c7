/*
 * Transport conformance under load, run against tcp, unix and inproc alike: a megabyte each
 * way at once, a hundred connections waiting on one listener, clients connecting from other
 * threads while this one accepts. The rest of the suite is in transport_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "arpc/error.h"
#include "support/transport_fixture.h"

#define BULK (1u << 20)
#define CHUNK (64u * 1024)

static uint8_t pattern(int dir, size_t i) { return (uint8_t)(i * 7 + (i >> 11) + (size_t)dir * 101); }

struct pump {
    int p_fd;
    size_t p_sent;  /* bytes of this side's pattern sent */
    size_t p_recvd; /* bytes of the peer's pattern received and checked */
};

static void pump_step(struct pump *p, int dir, short revents, uint8_t *buf)
{
    assert_false((revents & (POLLERR | POLLNVAL)) != 0);
    if ((revents & POLLOUT) && p->p_sent < BULK) {
        size_t n = BULK - p->p_sent < CHUNK ? BULK - p->p_sent : CHUNK;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(dir, p->p_sent + i);
        ssize_t w = send(p->p_fd, buf, n, MSG_NOSIGNAL);
        assert_true(w > 0 || (w < 0 && errno == EAGAIN));
        if (w > 0)
            p->p_sent += (size_t)w;
    }
    if ((revents & (POLLIN | POLLHUP)) && p->p_recvd < BULK) {
        ssize_t r = recv(p->p_fd, buf, CHUNK, 0);
        assert_true(r > 0 || (r < 0 && errno == EAGAIN)); /* no EOF before the end */
        for (ssize_t i = 0; i < r; i++)
            assert_int_equal(pattern(!dir, p->p_recvd + (size_t)i), buf[i]);
        if (r > 0)
            p->p_recvd += (size_t)r;
    }
}

/* Sends BULK bytes each way at once, so neither side can stall on a full peer buffer. */
static void c_bulk_both_ways(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    int c, s;
    make_pair(l, &c, &s);
    struct pump side[2] = {{c, 0, 0}, {s, 0, 0}};
    uint8_t *buf = malloc(CHUNK);
    assert_non_null(buf);
    while (side[0].p_recvd < BULK || side[1].p_recvd < BULK) {
        struct pollfd p[2];
        for (int i = 0; i < 2; i++) {
            p[i].fd = side[i].p_fd;
            p[i].events = (short)((side[i].p_sent < BULK ? POLLOUT : 0) |
                                  (side[i].p_recvd < BULK ? POLLIN : 0));
            p[i].revents = 0;
        }
        assert_true(poll(p, 2, WAIT_MS) > 0);
        for (int i = 0; i < 2; i++)
            pump_step(&side[i], i, p[i].revents, buf);
    }
    free(buf);
    assert_int_equal(BULK, side[0].p_sent);
    assert_int_equal(BULK, side[1].p_sent);
    close(c);
    close(s);
    lsn_close(l);
}

#define MANY 100

/* Each client sends its index, so every accepted connection is matched to one client. */
static void c_many_connections(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    int client[MANY], server[MANY], seen[MANY] = {0};
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(ARPC_OK, dial(l, &client[i]));
        uint8_t idx = (uint8_t)i;
        send_all(client[i], &idx, 1);
    }
    for (int i = 0; i < MANY; i++) {
        server[i] = accept_wait(l);
        uint8_t idx;
        recv_all(server[i], &idx, 1);
        assert_true(idx < MANY);
        seen[idx]++;
    }
    int extra;
    assert_int_equal(ARPC_EAGAIN, accept_now(l, &extra));
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(1, seen[i]);
        close(client[i]);
        close(server[i]);
    }
    lsn_close(l);
}

#ifdef ARPC_TSAN
#define PER_THREAD 10
#else
#define PER_THREAD 25
#endif
#define THREADS 2

struct dialer {
    const struct arpc_listener *d_lsn;
    int d_base;
    int d_fds[PER_THREAD];
    int d_err;
};

static void *dialer_main(void *arg)
{
    struct dialer *d = arg;
    for (int i = 0; i < PER_THREAD && d->d_err == ARPC_OK; i++) {
        d->d_err = dial(d->d_lsn, &d->d_fds[i]);
        uint8_t idx = (uint8_t)(d->d_base + i);
        if (d->d_err == ARPC_OK && send(d->d_fds[i], &idx, 1, MSG_NOSIGNAL) != 1)
            d->d_err = ARPC_ESYSTEM;
    }
    return NULL;
}

/* Clients on other threads connect while this one accepts: the ops are thread-safe. */
static void c_concurrent_connects(void **state)
{
    struct arpc_listener *l = xport_listen(*state);
    struct dialer d[THREADS];
    pthread_t tid[THREADS];
    for (int t = 0; t < THREADS; t++) {
        d[t] = (struct dialer){.d_lsn = l, .d_base = t * PER_THREAD, .d_err = ARPC_OK};
        assert_int_equal(0, pthread_create(&tid[t], NULL, dialer_main, &d[t]));
    }
    int seen[THREADS * PER_THREAD] = {0};
    for (int i = 0; i < THREADS * PER_THREAD; i++) {
        int s = accept_wait(l);
        uint8_t idx;
        recv_all(s, &idx, 1);
        assert_true(idx < THREADS * PER_THREAD);
        seen[idx]++;
        close(s);
    }
    for (int t = 0; t < THREADS; t++) {
        assert_int_equal(0, pthread_join(tid[t], NULL));
        assert_int_equal(ARPC_OK, d[t].d_err);
        for (int i = 0; i < PER_THREAD; i++)
            close(d[t].d_fds[i]);
    }
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        assert_int_equal(1, seen[i]);
    lsn_close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        CONFORMANCE(c_bulk_both_ways),
        CONFORMANCE(c_many_connections),
        CONFORMANCE(c_concurrent_connects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
