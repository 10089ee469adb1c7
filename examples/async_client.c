/*
 * The same kind of call made the three asynchronous ways, against an embedded server:
 *   1. a future with a `then` callback (runs on the client's loop thread, or at once if the
 *      reply is already in),
 *   2. a completion queue whose fd sits in the application's own poll() loop (Go's Client.Go),
 *   3. one-way notifications (no reply at all).
 * usage: async_client [ADDR]    (where the embedded server listens; default
 *                                unix:///tmp/arpc-async-<pid>.sock; e.g. tcp://127.0.0.1:0)
 * Exits 0 when every call came back right and every one-way message was handled, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L /* sem_timedwait, clock_gettime, with -std=c11 */
#include <inttypes.h>
#include <poll.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arpc/arpc.h"

static atomic_int events_logged;
static sem_t events_done;   /* posted by each one-way message handled */
static atomic_int failures; /* calls that did not come back right */

static void square(arpc_request *req, void *ctx)
{
    (void)ctx;
    int64_t x;
    size_t len;
    const void *d = arpc_request_data(req, &len);
    if (len != sizeof(x)) {
        arpc_reply_error(req, "want one int64");
        return;
    }
    memcpy(&x, d, sizeof(x));
    x *= x;
    arpc_reply(req, &x, sizeof(x));
}

static void log_event(arpc_request *req, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&events_logged, 1);
    arpc_reply(req, NULL, 0); /* one-way: frees the request, sends nothing */
    sem_post(&events_done);
}

static int64_t result_of(arpc_future *f)
{
    int64_t v = 0;
    size_t len;
    const void *d = arpc_future_data(f, &len);
    if (d != NULL && len == sizeof(v))
        memcpy(&v, d, sizeof(v));
    return v;
}

static sem_t then_done; /* posted by each callback */

/* Runs on the client's loop thread (or on main, inside arpc_future_then, when the reply was
 * in before the callback was registered): must not block. */
static void on_square(arpc_future *f, void *arg)
{
    int64_t x = (int64_t)(intptr_t)arg;
    int st = arpc_future_poll(f);
    if (st == ARPC_OK && result_of(f) == x * x) {
        printf("  then:  square(%" PRId64 ") = %" PRId64 "\n", x, result_of(f));
    } else {
        printf("  then:  square(%" PRId64 ") failed: %s\n", x, arpc_errname(st));
        atomic_fetch_add(&failures, 1);
    }
    sem_post(&then_done);
}

int main(int argc, char **argv)
{
    char addr[256], want[256];
    if (argc > 2 || (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))) {
        fprintf(argc > 2 ? stderr : stdout, "usage: async_client [ADDR]   (where the embedded server listens; "
                "default unix:///tmp/arpc-async-PID.sock; e.g. tcp://127.0.0.1:0)\n");
        return argc > 2 ? 2 : 0;
    }
    if (argc > 1)
        snprintf(want, sizeof(want), "%s", argv[1]);
    else
        snprintf(want, sizeof(want), "unix:///tmp/arpc-async-%d.sock", (int)getpid());
    sem_init(&events_done, 0, 0);
    arpc_server *server;
    int rc = arpc_server_create(&server, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "math.square", square, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_register(server, "log.event", log_event, NULL, NULL);
    if (rc == ARPC_OK)
        rc = arpc_server_listen(server, want, addr, sizeof(addr));
    if (rc != ARPC_OK) {
        fprintf(stderr, "async_client: server on %s: %s\n", want, arpc_strerror(rc));
        return 1;
    }
    printf("embedded server on %s\n", addr);
    arpc_client *c;
    rc = arpc_client_connect(&c, addr, NULL);
    if (rc != ARPC_OK) {
        fprintf(stderr, "async_client: connect %s: %s\n", addr, arpc_strerror(rc));
        return 1;
    }

    printf("1. futures with then-callbacks:\n");
    sem_init(&then_done, 0, 0);
    for (int64_t x = 1; x <= 3; x++) {
        arpc_future *f = arpc_call_async(c, "math.square", &x, sizeof(x), 2000);
        arpc_future_then(f, on_square, (void *)(intptr_t)x);
        arpc_future_release(f); /* the callback still runs: the call holds its own reference */
    }
    for (int i = 0; i < 3; i++) /* each call ends by its reply or its 2 s deadline */
        sem_wait(&then_done);

    printf("2. completion queue in a poll() loop:\n");
    arpc_cq *cq;
    arpc_cq_create(&cq);
    for (int64_t x = 10; x <= 14; x++)
        arpc_go(c, "math.square", &x, sizeof(x), 2000, cq, (void *)(intptr_t)x);
    int got = 0, wakeups = 0;
    while (got < 5) {
        struct pollfd pfd = {.fd = arpc_cq_fd(cq), .events = POLLIN};
        if (poll(&pfd, 1, 2000) <= 0) {
            fprintf(stderr, "async_client: completion queue timed out\n");
            return 1;
        }
        wakeups++;
        arpc_future *f;
        void *tag;
        while (arpc_cq_trynext(cq, &f, &tag) == ARPC_OK) {
            int64_t x = (int64_t)(intptr_t)tag;
            int st = arpc_future_poll(f);
            if (st == ARPC_OK && result_of(f) == x * x) {
                printf("  cq:    square(%" PRId64 ") = %" PRId64 "\n", x, result_of(f));
            } else {
                printf("  cq:    square(%" PRId64 ") failed: %s\n", x, arpc_errname(st));
                atomic_fetch_add(&failures, 1);
            }
            arpc_future_release(f);
            got++;
        }
    }
    printf("  %d completions in %d poll wake-ups\n", got, wakeups);
    arpc_cq_destroy(cq);

    printf("3. one-way notifications:\n");
    for (int i = 0; i < 5; i++)
        arpc_notify(c, "log.event", "started", 7);
    printf("  sent 5 one-way messages; calls pending on the client: %zu (none wait for a reply)\n",
           arpc_client_pending(c));
    /* Nothing comes back for them: the handler counts them (10 s for each is only a bound). */
    for (int i = 0; i < 5; i++) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        if (sem_timedwait(&events_done, &until) != 0)
            break;
    }
    int events = atomic_load(&events_logged);
    printf("  server handled %d one-way messages\n", events);
    arpc_client_close(c);
    arpc_server_destroy(server);
    return atomic_load(&failures) == 0 && events == 5 ? 0 : 1;
}
