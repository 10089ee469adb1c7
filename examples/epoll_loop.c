/*
 * epoll_loop: arpc inside the application's own epoll loop, on one thread, with no arpc thread.
 *
 * The program owns an epoll set and a timerfd of its own. Each timer tick starts a batch of
 * calls (then-callbacks, many outstanding at once) to a server that lives in the same loop
 * and answers inline. arpc is driven by a pollable loop (arpc/loop.h): its fd sits in our
 * epoll set, and arpc_loop_run_nowait runs one non-blocking step and says how long we may sleep.
 *
 *     epoll_loop [--ticks N] [--edge-triggered]     (default 10 ticks of 5 ms, 16 calls each;
 *                                                    arpc's fd level-triggered)
 *
 * Prints what happened; exits 0 when every call came back right, 1 otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "arpc/arpc.h"

#define CALLS_PER_TICK 16
#define TICK_MS 5

struct app {
    arpc_loop *loop;
    arpc_client *client;
    unsigned ticks_left;
    unsigned started, ok, failed;
};

/* Inline handler: runs inside arpc_loop_run_nowait, on our thread. It must not block. */
static void h_double(arpc_request *req, void *ctx)
{
    (void)ctx;
    size_t len;
    const void *d = arpc_request_data(req, &len);
    uint32_t n[2]; /* the reply: the number and its double */
    if (len != sizeof(n[0])) {
        arpc_reply_error(req, "want a 4-byte number");
        return;
    }
    memcpy(&n[0], d, sizeof(n[0]));
    n[1] = 2 * n[0];
    arpc_reply(req, n, sizeof(n));
}

/* Then-callback: also runs inside a step on our thread, so it needs no lock (this program
 * cancels nothing from other threads: a cancel runs the callback on the cancelling thread). */
static void on_reply(arpc_future *f, void *arg)
{
    struct app *a = arg;
    uint32_t got[2] = {0, 1};
    size_t len = 0;
    const void *d = arpc_future_data(f, &len);
    if (len == sizeof(got))
        memcpy(got, d, len);
    if (arpc_future_poll(f) == ARPC_OK && got[1] == 2 * got[0]) {
        a->ok++;
    } else {
        a->failed++;
        fprintf(stderr, "a call failed: %s\n", arpc_errname(arpc_future_poll(f)));
    }
    arpc_future_release(f);
}

static void start_batch(struct app *a)
{
    for (int i = 0; i < CALLS_PER_TICK; i++) {
        uint32_t n = a->started++;
        arpc_future *f = arpc_call_async(a->client, "demo.double", &n, sizeof(n), 5000);
        if (f == NULL) { /* only when memory for a future cannot be had */
            a->failed++;
            continue;
        }
        /* Every outcome, failures included, reaches on_reply. */
        if (arpc_future_then(f, on_reply, a) != ARPC_OK) {
            a->failed++;
            arpc_future_release(f);
        }
    }
}

/* True when fd polls readable right now (a zero timeout). */
static bool readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

int main(int argc, char **argv)
{
    struct app a = {.ticks_left = 10};
    bool edge = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ticks") == 0 && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*argv[i] == '\0' || *end != '\0' || n < 0 || n > 1000000) {
                fprintf(stderr, "epoll_loop: --ticks takes a number from 0 to 1000000, not \"%s\"\n", argv[i]);
                return 2;
            }
            a.ticks_left = (unsigned)n;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: epoll_loop [--ticks N] [--edge-triggered]\n");
            return 0;
        } else if (strcmp(argv[i], "--edge-triggered") == 0) {
            edge = true;
        } else {
            fprintf(stderr, "usage: epoll_loop [--ticks N] [--edge-triggered]\n");
            return 2;
        }
    }

    /* A pollable loop: never started; we run it, step by step, from our epoll loop. */
    arpc_loop_options lo = {.pollable = true};
    arpc_server *server = NULL;
    char addr[256];
    arpc_server_options so = {.loop = NULL};
    arpc_method_options inline_method = {.inline_on_loop = true};
    arpc_client_options co = {.loop = NULL};
    int rc = arpc_loop_create(&a.loop, &lo);
    so.loop = co.loop = a.loop;
    if (rc == ARPC_OK)
        rc = arpc_server_create(&server, &so);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "demo.double", h_double, NULL, &inline_method);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof(addr));
    /* Blocking calls (connect, close, destroy) are fine from the owner thread between steps:
     * they run the loop themselves until done. (For a remote server that may be slow or not up
     * yet, set co.connect_in_background: connect then returns at once and our steps connect.) */
    if (rc == ARPC_OK)
        rc = arpc_client_connect(&a.client, addr, &co);
    if (rc != ARPC_OK) {
        fprintf(stderr, "setup: %s\n", arpc_strerror(rc));
        return 1;
    }

    /* Our epoll set: arpc's fd and our own timerfd. arpc's fd is best registered
     * level-triggered (plain EPOLLIN), as arpc/loop.h recommends. Edge-triggered (EPOLLET,
     * --edge-triggered here) also works if, after each wake-up, you call arpc_loop_run_nowait
     * until the fd no longer polls readable (poll with a zero timeout), since an edge is
     * signalled only for new readiness: readiness left over from a step raises no new edge. */
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec every = {.it_interval.tv_nsec = TICK_MS * 1000000L, .it_value.tv_nsec = TICK_MS * 1000000L};
    struct epoll_event arpc_ev = {.events = EPOLLIN | (edge ? EPOLLET : 0u), .data.fd = arpc_loop_fd(a.loop)};
    struct epoll_event timer_ev = {.events = EPOLLIN, .data.fd = tfd};
    if (epfd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &every, NULL) != 0 ||
        epoll_ctl(epfd, EPOLL_CTL_ADD, arpc_ev.data.fd, &arpc_ev) != 0 ||
        epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &timer_ev) != 0) {
        perror("epoll/timerfd");
        return 1;
    }

    /* The application's loop: until the last tick, and then until every reply is in. */
    for (;;) {
        int timeout = -1;
        /* Runs what is ready (socket I/O, handlers, callbacks, arpc's timers) without blocking,
         * and says how long we may sleep: -1 until its fd is readable, else ms to its next timer. */
        rc = arpc_loop_run_nowait(a.loop, &timeout);
        if (rc != ARPC_OK) {
            fprintf(stderr, "arpc_loop_run_nowait: %s\n", arpc_strerror(rc));
            break;
        }
        if (a.ticks_left == 0 && a.ok + a.failed == a.started)
            break; /* the step ran the last callbacks: do not sleep first */
        if (edge && readable_now(arpc_ev.data.fd))
            timeout = 0; /* still readable: no new edge will come, so step again at once */
        struct epoll_event evs[8];
        int n = epoll_wait(epfd, evs, 8, timeout);
        for (int i = 0; i < n; i++) {
            uint64_t expirations;
            /* arpc's fd needs nothing here: the next arpc_loop_run_nowait serves it. */
            if (evs[i].data.fd != tfd || read(tfd, &expirations, sizeof(expirations)) != sizeof(expirations))
                continue;
            for (; expirations > 0 && a.ticks_left > 0; expirations--, a.ticks_left--)
                start_batch(&a); /* picked up by the next step */
            if (a.ticks_left == 0)
                timerfd_settime(tfd, 0, &(struct itimerspec){0}, NULL); /* disarm */
        }
    }

    printf("epoll_loop: %u calls, %u ok, %u failed, all on one thread\n", a.started, a.ok, a.failed);
    arpc_client_close(a.client);
    arpc_server_destroy(server);
    arpc_loop_destroy(a.loop);
    close(tfd);
    close(epfd);
    return rc == ARPC_OK && a.failed == 0 && a.ok == a.started ? 0 : 1;
}
