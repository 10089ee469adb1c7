/*
 * libev_loop: arpc on the application's own libev loop, on one thread, with no arpc thread.
 *
 * The program owns a struct ev_loop and an ev_timer of its own. Each timer tick starts a
 * batch of calls (then-callbacks, many outstanding at once) to a server on the same ev that
 * answers inline. arpc_loop_wrap (arpc/loop.h) puts arpc's sockets and timers on our ev, so
 * our ev_run carries everything: our timer, arpc's I/O, the handler and the callbacks.
 *
 *     libev_loop [--ticks N]     (default 10 ticks of 5 ms, 16 calls each)
 *
 * Prints what happened; exits 0 when every call came back right, 1 otherwise.
 */
#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arpc/arpc.h"

#define CALLS_PER_TICK 16
#define TICK_S 0.005

struct app {
    struct ev_loop *ev;
    ev_timer tick;
    arpc_client *client;
    unsigned ticks_left;
    unsigned started, ok, failed;
};

/* Inline handler: runs inside our ev_run, on our thread. It must not block. */
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

static void maybe_finish(struct app *a)
{
    /* arpc's open connection and listener keep ev_run going: leave it ourselves. */
    if (a->ticks_left == 0 && a->ok + a->failed == a->started)
        ev_break(a->ev, EVBREAK_ALL);
}

/* Then-callback: also runs inside our ev_run, on our thread, so it needs no lock. */
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
    maybe_finish(a);
}

/* Our own timer: each tick starts a batch of calls, sent by arpc within this ev_run. */
static void on_tick(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    struct app *a = w->data;
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
    if (--a->ticks_left == 0) {
        ev_timer_stop(a->ev, w);
        maybe_finish(a);
    }
}

int main(int argc, char **argv)
{
    struct app a = {.ticks_left = 10};
    if (argc == 3 && strcmp(argv[1], "--ticks") == 0)
        a.ticks_left = (unsigned)strtoul(argv[2], NULL, 10);
    else if (argc != 1) {
        fprintf(stderr, "usage: libev_loop [--ticks N]\n");
        return 2;
    }
    a.ev = ev_loop_new(EVFLAG_AUTO);

    /* arpc on our ev: this thread owns it; arpc's callbacks run inside our ev_run. */
    arpc_loop *loop = NULL;
    arpc_server *server = NULL;
    char addr[256];
    arpc_method_options inline_method = {.inline_on_loop = true};
    int rc = a.ev != NULL ? arpc_loop_wrap(&loop, a.ev, NULL) : ARPC_ENOMEM;
    arpc_server_options so = {.loop = loop};
    arpc_client_options co = {.loop = loop};
    if (rc == ARPC_OK)
        rc = arpc_server_create(&server, &so);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "demo.double", h_double, NULL, &inline_method);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof(addr));
    /* Blocking calls (connect, close, destroy) are fine from the owner thread outside ev_run:
     * they run ev themselves until done. Inside ev_run they are refused (ARPC_EBUSY). */
    if (rc == ARPC_OK)
        rc = arpc_client_connect(&a.client, addr, &co);
    if (rc != ARPC_OK) {
        fprintf(stderr, "setup: %s\n", arpc_strerror(rc));
        return 1;
    }

    if (a.ticks_left > 0) {
        ev_timer_init(&a.tick, on_tick, TICK_S, TICK_S);
        a.tick.data = &a;
        ev_timer_start(a.ev, &a.tick);
        ev_run(a.ev, 0); /* the application's loop, as it always ran it */
    }

    printf("libev_loop: %u calls, %u ok, %u failed, all on one thread\n", a.started, a.ok, a.failed);
    arpc_client_close(a.client);
    arpc_server_destroy(server);
    arpc_loop_destroy(loop); /* arpc's watchers go; ev stays the application's */
    ev_loop_destroy(a.ev);
    return a.failed == 0 && a.ok == a.started ? 0 : 1;
}
