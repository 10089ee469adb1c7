/*
 * Tutorial step 3 (docs/TUTORIAL.md): futures. Eight calls outstanding on one connection at
 * once, a `then` callback on each, and one wait for them all.
 * Exits 0 when every call came back right, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <arpc/arpc.h>

enum { CALLS = 8 };

static void square(arpc_request *req, void *ctx)
{
    (void)ctx;
    int64_t x;
    size_t len;
    const void *in = arpc_request_data(req, &len);
    if (len != sizeof x) {
        arpc_reply_error(req, "square takes one int64");
        return;
    }
    memcpy(&x, in, sizeof x);
    x *= x;
    arpc_reply(req, &x, sizeof x);
}

/* The reply's int64, or 0 for a failed call or one of another size. */
static int64_t int64_of(const arpc_future *f)
{
    int64_t v = 0;
    size_t len;
    const void *data = arpc_future_data(f, &len);
    if (arpc_future_poll(f) == ARPC_OK && len == sizeof v)
        memcpy(&v, data, sizeof v);
    return v;
}

static atomic_int_fast64_t callback_sum;
static sem_t callbacks_done;

/* Runs on the client's loop thread when the reply is in (or at once, inside arpc_future_then,
 * if it already was): it must not block. f is lent for the callback's duration. */
static void on_square(arpc_future *f, void *arg)
{
    (void)arg;
    atomic_fetch_add(&callback_sum, int64_of(f));
    sem_post(&callbacks_done);
}

int main(void)
{
    sem_init(&callbacks_done, 0, 0);
    arpc_server *server;
    char addr[256];
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "math.Square", square, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, "tcp://127.0.0.1:0", addr, sizeof addr);
    arpc_client *client;
    if (rc == ARPC_OK)
        rc = arpc_client_connect(&client, addr, NULL);
    if (rc != ARPC_OK) {
        fprintf(stderr, "setup: %s\n", arpc_strerror(rc));
        return 1;
    }

    arpc_future *calls[CALLS];
    for (int64_t i = 0; i < CALLS; i++) {
        int64_t x = i + 1;
        calls[i] = arpc_call_async(client, "math.Square", &x, sizeof x, 2000);
        if (calls[i] == NULL) /* only when there is no memory for the future itself */
            return 1;
        if (arpc_future_then(calls[i], on_square, NULL) != ARPC_OK)
            return 1; /* ARPC_ENOMEM: the callback will not run */
    }
    printf("%d calls outstanding\n", CALLS);

    /* Every call ends by its deadline, so this wait ends too; ARPC_FOREVER would do. */
    rc = arpc_future_wait_all(calls, CALLS, 5000);
    int ok = rc == ARPC_OK;
    for (int i = 0; i < CALLS; i++) {
        int64_t x = i + 1, got = int64_of(calls[i]);
        printf("square(%" PRId64 ") = %" PRId64 "\n", x, got);
        ok &= arpc_future_poll(calls[i]) == ARPC_OK && got == x * x;
        arpc_future_release(calls[i]); /* the reply's bytes go with the last reference */
    }

    /* A future is complete before its callbacks have all returned: count them in. */
    for (int i = 0; i < CALLS; i++)
        sem_wait(&callbacks_done);
    int64_t sum = atomic_load(&callback_sum);
    printf("the callbacks saw a sum of %" PRId64 "\n", sum);
    ok &= sum == 204; /* 1 + 4 + 9 + ... + 64 */

    arpc_client_close(client);
    arpc_server_destroy(server);
    sem_destroy(&callbacks_done);
    return ok ? 0 : 1;
}
