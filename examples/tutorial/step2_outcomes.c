/*
 * Tutorial step 2 (docs/TUTORIAL.md): deadlines, and the outcomes a caller acts on.
 * Three calls fail three ways, each on purpose and every time:
 *   ARPC_ETIMEDOUT     the deadline passed after the call was sent (the handler never answers);
 *   ARPC_ECONNLOST     the connection broke while the handler had the call (a relay, relay.c,
 *                      cuts it), and the call was ARPC_NO_RETRY, so it cannot be settled;
 *   ARPC_EUNREACHABLE  nobody listens at the address: the call was never sent.
 * Exits 0 when each call ended as shown, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <semaphore.h>
#include <stdio.h>
#include <string.h>

#include <arpc/arpc.h>

#include "relay.h"

static sem_t held; /* posted by slow.Hold once it has its call */

/* The server calls this when nobody waits for the call any more (its deadline passed, or its
 * caller went away): the reply goes nowhere, but it finishes the request. */
static void give_up(arpc_request *req, void *arg)
{
    (void)arg;
    arpc_reply_error(req, "given up");
}

/* Never answers by itself: returns at once, leaving the request to give_up. */
static void forever(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_request_on_cancel(req, give_up, NULL);
}

static void hold(arpc_request *req, void *ctx)
{
    (void)ctx;
    arpc_request_on_cancel(req, give_up, NULL);
    sem_post(&held);
}

/* What a caller may conclude from an outcome about "did it run?" (docs/SEMANTICS.md). */
static const char *did_it_run(int status)
{
    switch (status) {
    case ARPC_OK:
    case ARPC_EHANDLER:
        return "it ran, once";
    case ARPC_EUNREACHABLE:
    case ARPC_ENOMETHOD:
    case ARPC_EREJECTED:
    case ARPC_EEXPIRED:
    case ARPC_EOVERLOADED:
    case ARPC_ESHUTDOWN:
        return "it did not run";
    default: /* ARPC_ETIMEDOUT, ARPC_ECONNLOST, ARPC_EABANDONED, ARPC_ECANCELLED, ... */
        return "it may have run";
    }
}

/* Waits for the call, prints its outcome and the words its result holds, if any. */
static int report(const char *what, arpc_future *f)
{
    int status = arpc_future_wait(f);
    size_t len;
    const char *words = arpc_future_data(f, &len); /* lent until the release below */
    printf("%s: %s (%s)\n", what, arpc_errname(status), did_it_run(status));
    if (status != ARPC_OK && words != NULL)
        printf("    %s\n", words); /* an error's words end with a NUL */
    arpc_future_release(f);
    return status;
}

int main(void)
{
    sem_init(&held, 0, 0);
    arpc_server *server;
    char addr[256], via[256];
    relay *net;
    int rc = arpc_server_create(&server, NULL);
    /* forever returns at once: it may run on the server's loop, so the call is never left
     * waiting for a busy worker (that would end it ARPC_EEXPIRED, "did not run"). */
    arpc_method_options on_loop = {.inline_on_loop = true};
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "slow.Forever", forever, NULL, &on_loop);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "slow.Hold", hold, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof addr);
    if (rc != ARPC_OK || relay_start(&net, addr, via, sizeof via) != 0) {
        fprintf(stderr, "server: %s\n", arpc_strerror(rc));
        return 1;
    }
    arpc_client *client;
    rc = arpc_client_connect(&client, via, NULL); /* through the relay */
    if (rc != ARPC_OK) {
        fprintf(stderr, "connect: %s\n", arpc_strerror(rc));
        return 1;
    }
    int ok = 1;

    /* 1. A deadline: the call ends by then, whatever the server does. */
    arpc_future *f = arpc_call_async(client, "slow.Forever", NULL, 0, 300 /* ms */);
    ok &= report("deadline 300 ms, no answer", f) == ARPC_ETIMEDOUT;

    /* 2. The connection breaks while the handler has the call. */
    arpc_call_options once = {.deadline_ms = 10000, .semantics = ARPC_NO_RETRY};
    f = arpc_call_async_opts(client, "slow.Hold", NULL, 0, &once);
    sem_wait(&held); /* the server has the call */
    relay_cut(net);
    ok &= report("connection cut, ARPC_NO_RETRY", f) == ARPC_ECONNLOST;

    arpc_client_close(client);
    arpc_server_destroy(server);
    relay_stop(net);

    /* 3. Nobody listens: connect_in_background lets calls wait for a connection. */
    arpc_client_options bg = {.connect_in_background = true};
    rc = arpc_client_connect(&client, addr, &bg);
    if (rc != ARPC_OK) {
        fprintf(stderr, "connect: %s\n", arpc_strerror(rc));
        return 1;
    }
    f = arpc_call_async(client, "slow.Forever", NULL, 0, 300);
    ok &= report("server gone", f) == ARPC_EUNREACHABLE;
    arpc_client_close(client);
    sem_destroy(&held);
    return ok ? 0 : 1;
}
