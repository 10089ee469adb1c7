/*
 * Raw-socket baselines. Blocking sockets for ping-pong (the cheapest possible round trip:
 * one write, one read on each side); for the pipelined echo the client side is non-blocking
 * with poll, because a blocking client that writes a full window before reading would
 * deadlock against an echo thread blocked writing back into the client's full receive buffer.
 */
#define _GNU_SOURCE /* accept4 */
#include "baseline.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "progress.h"

#define ECHO_BUF (256 * 1024) /* the echo thread's batch, and the pipelined client's */

struct raw_conn {
    int rc_client; /* the measuring side */
    int rc_server; /* the echo thread's side */
    pthread_t rc_echo;
};

static void nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Listens on lfd (already bound), connects to it and accepts: a connected pair. */
static int connect_pair(int lfd, int domain, const struct sockaddr *sa, socklen_t salen, int fds[2])
{
    if (listen(lfd, 1) != 0)
        return -1;
    fds[0] = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[0] < 0)
        return -1;
    if (connect(fds[0], sa, salen) != 0 || (fds[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
        close(fds[0]);
        return -1;
    }
    return 0;
}

static int tcp_pair(int fds[2])
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return -1;
    int rv = -1;
    if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        getsockname(lfd, (struct sockaddr *)&sin, &len) == 0)
        rv = connect_pair(lfd, AF_INET, (struct sockaddr *)&sin, sizeof(sin), fds);
    close(lfd);
    if (rv == 0) {
        nodelay(fds[0]);
        nodelay(fds[1]);
    }
    return rv;
}

static int unix_pair(int fds[2])
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "/tmp/arpc-bench-%d-raw.sock", (int)getpid());
    unlink(sun.sun_path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return -1;
    int rv = -1;
    if (bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
        rv = connect_pair(lfd, AF_UNIX, (struct sockaddr *)&sun, sizeof(sun), fds);
        unlink(sun.sun_path);
    }
    close(lfd);
    return rv;
}

static void *echo_main(void *arg)
{
    int fd = *(int *)arg;
    char *buf = malloc(ECHO_BUF);
    while (buf != NULL) {
        ssize_t n = read(fd, buf, ECHO_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the client shut its side down: done */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                goto out;
            off += w;
        }
    }
out:
    free(buf);
    return NULL;
}

static int raw_open(const char *transport, struct raw_conn *rc)
{
    int fds[2], rv;
    if (strcmp(transport, "tcp") == 0 || strcmp(transport, "tls") == 0) /* tls: against bare tcp */
        rv = tcp_pair(fds);
    else if (strcmp(transport, "unix") == 0)
        rv = unix_pair(fds);
    else
        rv = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds);
    if (rv != 0) {
        fprintf(stderr, "arpc-bench: baseline %s connection: %s\n", transport, strerror(errno));
        return -1;
    }
    rc->rc_client = fds[0];
    rc->rc_server = fds[1];
    if (pthread_create(&rc->rc_echo, NULL, echo_main, &rc->rc_server) != 0) {
        fprintf(stderr, "arpc-bench: baseline echo thread: cannot start\n");
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    return 0;
}

/* Shutting the client's write side ends the echo thread's read loop. */
static void raw_close(struct raw_conn *rc)
{
    shutdown(rc->rc_client, SHUT_WR);
    pthread_join(rc->rc_echo, NULL);
    close(rc->rc_client);
    close(rc->rc_server);
}

/* ---- ping-pong ---- */

/* Sends tx and reads its echo into rx, len bytes each. The send does not wait for room: a
 * payload larger than the two sockets' buffers together would otherwise leave both sides
 * blocked in send (the echo returning what it read while nobody reads it: a hang a user found
 * at 11 MB and up). Where the socket takes no more, what came back is read first. For a
 * payload that fits, the same calls as a plain send then read. */
static int exchange(int fd, const char *tx, char *rx, size_t len)
{
    size_t sent = 0, got = 0;
    while (got < len) {
        if (sent < len) {
            ssize_t n = send(fd, tx + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                sent += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                return -1;
        }
        ssize_t n = read(fd, rx + got, len - got); /* (the echo owes what was sent) */
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static int pingpong_loop(const struct bench_config *cfg, int fd, char *tx, char *rx,
                         struct bench_run *out)
{
    struct bench_progress prog;
    uint64_t total = cfg->warmup + cfg->calls, t_first = 0, t_last = 0;
    bench_progress_start(&prog, "baseline ping-pong", total, !cfg->quiet);
    for (uint64_t i = 0; i < total; i++) {
        uint64_t t0 = bench_now_ns();
        if (exchange(fd, tx, rx, cfg->payload) != 0) {
            bench_progress_end(&prog);
            fprintf(stderr, "arpc-bench: baseline ping-pong: %s\n", strerror(errno));
            return -1;
        }
        t_last = bench_now_ns();
        if (i == 0 && memcmp(tx, rx, cfg->payload) != 0) {
            bench_progress_end(&prog);
            fprintf(stderr, "arpc-bench: baseline ping-pong: echo differs from request\n");
            return -1;
        }
        if (i == cfg->warmup)
            t_first = t0;
        if (i >= cfg->warmup)
            arpc_hist_record(out->hist, t_last - t0);
        bench_progress_update(&prog, i + 1, t_last);
    }
    bench_progress_end(&prog);
    out->calls = cfg->calls;
    out->elapsed_s = (double)(t_last - t_first) / 1e9;
    return 0;
}

/* Ends a baseline run: on failure drops the histogram, else derives the call rate. */
static int run_finish(struct bench_run *out, int rv)
{
    if (rv != 0) {
        free(out->hist);
        out->hist = NULL;
        return -1;
    }
    out->calls_per_s = out->elapsed_s > 0 ? (double)out->calls / out->elapsed_s : 0;
    return 0;
}

int bench_baseline_pingpong(const struct bench_config *cfg, struct bench_run *out)
{
    memset(out, 0, sizeof(*out));
    struct raw_conn rc;
    char *tx = malloc(cfg->payload), *rx = malloc(cfg->payload);
    out->hist = bench_hist_new();
    int rv = -1;
    if (tx == NULL || rx == NULL || out->hist == NULL) {
        fprintf(stderr, "arpc-bench: out of memory\n");
    } else if (raw_open(cfg->transport, &rc) == 0) {
        bench_fill_pattern(tx, cfg->payload);
        rv = pingpong_loop(cfg, rc.rc_client, tx, rx, out);
        raw_close(&rc);
    }
    free(tx);
    free(rx);
    return run_finish(out, rv);
}

/* ---- pipelined echo ----
 *
 * A message enters the window (is "issued") as soon as the window has room for it, and its
 * latency runs from then to the read that completes its echo, exactly as an arpc call's runs
 * from arpc_call_async to its reply. It may wait in this process before the kernel takes its
 * bytes: with a large window the socket buffers fill and writes return EAGAIN, and that wait
 * is part of its latency, as it is for an arpc call queued in the client. */

struct pipe_state {
    int ps_fd;
    size_t ps_payload;
    uint64_t ps_sent, ps_recvd;  /* bytes */
    uint64_t ps_admitted;        /* messages issued into the window so far */
    uint64_t ps_nmsgs;           /* messages to move in this phase */
    uint64_t *ps_issued_at;      /* per message, indexed modulo the window */
    unsigned ps_window;
    arpc_hist *ps_hist;         /* NULL while warming up */
    char *ps_tx, *ps_rx;
};

/* Issues messages while the window has room (they are written by pipe_send). */
static void pipe_admit(struct pipe_state *ps, uint64_t now)
{
    uint64_t limit = ps->ps_recvd / ps->ps_payload + ps->ps_window;
    if (limit > ps->ps_nmsgs)
        limit = ps->ps_nmsgs;
    for (; ps->ps_admitted < limit; ps->ps_admitted++)
        ps->ps_issued_at[ps->ps_admitted % ps->ps_window] = now;
}

/* Writes what has been issued. Returns 1 on progress, 0 on EAGAIN or nothing to send, -1 on
 * error. */
static int pipe_send(struct pipe_state *ps)
{
    uint64_t left = ps->ps_admitted * ps->ps_payload - ps->ps_sent;
    if (left == 0)
        return 0;
    ssize_t w = send(ps->ps_fd, ps->ps_tx, left < ECHO_BUF ? (size_t)left : ECHO_BUF, MSG_NOSIGNAL);
    if (w < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    ps->ps_sent += (uint64_t)w;
    return 1;
}

/* Reads what has come back, times every message it completes and issues as many new ones.
 * Returns 1 on progress, 0 on EAGAIN, -1 on error or EOF. */
static int pipe_recv(struct pipe_state *ps)
{
    ssize_t r = read(ps->ps_fd, ps->ps_rx, ECHO_BUF);
    if (r < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (r == 0)
        return -1;
    uint64_t now = bench_now_ns();
    uint64_t first = ps->ps_recvd / ps->ps_payload;
    ps->ps_recvd += (uint64_t)r;
    for (uint64_t m = first; ps->ps_hist != NULL && m < ps->ps_recvd / ps->ps_payload; m++)
        arpc_hist_record(ps->ps_hist, now - ps->ps_issued_at[m % ps->ps_window]);
    pipe_admit(ps, now); /* after the loop above: a slot is reused only once it is timed */
    return 1;
}

/* Moves nmsgs messages through the echo. Returns 0 or -1. */
static int pipe_phase(struct pipe_state *ps, uint64_t nmsgs, struct bench_progress *prog)
{
    ps->ps_sent = ps->ps_recvd = ps->ps_admitted = 0;
    ps->ps_nmsgs = nmsgs;
    pipe_admit(ps, bench_now_ns());
    uint64_t target = nmsgs * ps->ps_payload;
    while (ps->ps_recvd < target) {
        int s = pipe_send(ps), r = pipe_recv(ps);
        if (s < 0 || r < 0)
            return -1;
        if (prog != NULL)
            bench_progress_update(prog, ps->ps_recvd / ps->ps_payload, bench_now_ns());
        if (s == 0 && r == 0) {
            bool want_send = ps->ps_sent < ps->ps_admitted * ps->ps_payload;
            struct pollfd pfd = {ps->ps_fd, (short)(POLLIN | (want_send ? POLLOUT : 0)), 0};
            if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                return -1;
        }
    }
    return 0;
}

static int pipelined_run(const struct bench_config *cfg, struct pipe_state *ps, struct bench_run *out)
{
    if (cfg->warmup > 0 && pipe_phase(ps, cfg->warmup, NULL) != 0)
        return -1;
    struct bench_progress prog;
    bench_progress_start(&prog, "baseline pipelined echo", cfg->calls, !cfg->quiet);
    ps->ps_hist = out->hist;
    uint64_t t0 = bench_now_ns(), cpu0 = bench_cpu_ns();
    int rv = pipe_phase(ps, cfg->calls, &prog);
    uint64_t t1 = bench_now_ns(), cpu = bench_cpu_ns() - cpu0;
    bench_progress_end(&prog);
    out->calls = cfg->calls;
    out->cpu_us_per_call = (double)cpu / 1e3 / (double)cfg->calls;
    out->elapsed_s = (double)(t1 - t0) / 1e9;
    return rv;
}

int bench_baseline_pipelined(const struct bench_config *cfg, struct bench_run *out)
{
    memset(out, 0, sizeof(*out));
    struct pipe_state ps = {.ps_payload = cfg->payload, .ps_window = cfg->window};
    ps.ps_issued_at = malloc(cfg->window * sizeof(uint64_t));
    ps.ps_tx = malloc(ECHO_BUF);
    ps.ps_rx = malloc(ECHO_BUF);
    out->hist = bench_hist_new();
    struct raw_conn rc;
    int rv = -1;
    if (ps.ps_issued_at == NULL || ps.ps_tx == NULL || ps.ps_rx == NULL || out->hist == NULL) {
        fprintf(stderr, "arpc-bench: out of memory\n");
    } else if (raw_open(cfg->transport, &rc) == 0) {
        bench_fill_pattern(ps.ps_tx, ECHO_BUF);
        ps.ps_fd = rc.rc_client;
        rv = fcntl(ps.ps_fd, F_SETFL, fcntl(ps.ps_fd, F_GETFL) | O_NONBLOCK) == 0 ? 0 : -1;
        if (rv == 0 && (rv = pipelined_run(cfg, &ps, out)) != 0)
            fprintf(stderr, "arpc-bench: baseline pipelined echo: %s\n", strerror(errno));
        raw_close(&rc);
    }
    free(ps.ps_issued_at);
    free(ps.ps_tx);
    free(ps.ps_rx);
    return run_finish(out, rv);
}
